# SPDX-License-Identifier: Apache-2.0
"""What the tests, ``noxfile.py`` and ``benchmarks/`` share; no test module imports another.

- :mod:`~tests.support.make_model`: the MiniLM test model (F16 and Q8_0 GGUF), made once and cached
  (``python tests/support/make_model.py`` prints its paths);
- :mod:`~tests.support.reference`: sentence-transformers' outputs for given texts, computed in a child
  process and cached;
- :mod:`~tests.support.corpus`: the sentence pairs every checkout has (Python's own documentation and
  generated captions), the stand-in for the STS Benchmark sentences and the test models' training text;
- :mod:`~tests.support.sts`: the STS Benchmark file where there is one, and the switches
  (``EMBELLAMA_HIDE_SHARED``, ``EMBELLAMA_STS_FILE``, ``EMBELLAMA_REQUIRE_STS``, ``EMBELLAMA_STRICT_SKIPS``);
- :mod:`~tests.support.skips`: the pytest plugin that skips the ``sts_gold`` tests without the file and
  fails a strict run on any other skip;
- :mod:`~tests.support.arch_models`, :mod:`~tests.support.rerank_models`: tiny random-weight models of each
  architecture and reranker kind, built from the corpus and cached;
- :mod:`~tests.support.texts`: the varied and the generated test texts, and the ones whose tokens
  legitimately differ from Hugging Face's;
- :mod:`~tests.support.vocabs`: llama.cpp's vocabulary test files;
- :mod:`~tests.support.child`: embellama calls in a child process that may die.

Tests import them as ``from tests.support import make_model``: pytest puts the repository root on
``sys.path`` (``pythonpath`` in ``pyproject.toml``).
"""
