# SPDX-License-Identifier: Apache-2.0
"""The models users hold: the shared llama.cpp model base, EmbeddingModel and Reranker.

The modules: :mod:`~embellama._models.base` (:class:`LlamaModel`: loading, the owning thread, the token
budget, the llama.cpp call both kinds make), :mod:`~embellama._models.kinds` (reranker or embedder, and an
embedder's pooling), :mod:`~embellama._models.options` (an embedding call's options, prompts, texts and token
ids, checked), :mod:`~embellama._models.streaming` (``embed_iter``'s driver), :mod:`~embellama._models.encode`
(the sentence-transformers names), :mod:`~embellama._models.pretrained` (models by name: ``from_pretrained``,
``hf://`` paths), :mod:`~embellama._models.embedding` and :mod:`~embellama._models.reranker`.
:mod:`~embellama._models.classifier` gives single texts' labels, :mod:`~embellama._models.overflow` handles long
texts (truncation counts, chunks, late chunking). The layers above import the names below from here.
"""

from embellama._models.base import DEFAULT_CTX_CAP, LlamaModel, context_params, truncate_tokens
from embellama._models.classifier import Classifier
from embellama._models.embedding import EmbeddingModel
from embellama._models.kinds import is_reranker
from embellama._models.pretrained import HubFile, resolve_config
from embellama._models.reranker import ACTIVATIONS, Reranker, check_activation, is_pair, rank_results

__all__ = [
    "ACTIVATIONS",
    "DEFAULT_CTX_CAP",
    "Classifier",
    "EmbeddingModel",
    "HubFile",
    "LlamaModel",
    "Reranker",
    "check_activation",
    "context_params",
    "is_pair",
    "is_reranker",
    "rank_results",
    "resolve_config",
    "truncate_tokens",
]
