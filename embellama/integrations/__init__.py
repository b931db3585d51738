# SPDX-License-Identifier: Apache-2.0
"""Adapters for the frameworks users reach embellama through (LangChain, LlamaIndex, Haystack, Chroma).

Each lives in a module of its own, imported only when used, and needs its framework's extra:
:mod:`~embellama.integrations.langchain` (``EmbellamaEmbeddings``, ``EmbellamaReranker``; extra ``langchain``),
:mod:`~embellama.integrations.llama_index` (``EmbellamaEmbedding``, ``EmbellamaRerank``; ``llama-index``),
:mod:`~embellama.integrations.haystack` (``EmbellamaTextEmbedder``, ``EmbellamaDocumentEmbedder``,
``EmbellamaRanker``; ``haystack``) and :mod:`~embellama.integrations.chroma` (``EmbellamaEmbeddingFunction``;
``chroma``). Each takes a model (a GGUF path, an ``hf://`` reference or a ModelConfig) in an engine of its own,
or ``engine=`` and ``model_name=`` to share a running :class:`~embellama.EmbeddingEngine`; what they share is in
:mod:`~embellama.integrations._shared`.
"""
