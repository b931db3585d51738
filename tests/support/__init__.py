# SPDX-License-Identifier: Apache-2.0
"""What the tests, ``noxfile.py`` and ``benchmarks/`` share; no test module imports another.

- :mod:`~tests.support.make_model`: the MiniLM test model (F16 and Q8_0 GGUF), made once and cached
  (``python tests/support/make_model.py`` prints its paths);
- :mod:`~tests.support.reference`: sentence-transformers' outputs for given texts, computed in a child
  process and cached, and the STS Benchmark sentences;
- :mod:`~tests.support.texts`: the varied and the generated test texts, and the ones whose tokens
  legitimately differ from Hugging Face's;
- :mod:`~tests.support.vocabs`: llama.cpp's vocabulary test files;
- :mod:`~tests.support.child`: embellama calls in a child process that may die.

Tests import them as ``from tests.support import make_model``: pytest puts the repository root on
``sys.path`` (``pythonpath`` in ``pyproject.toml``).
"""
