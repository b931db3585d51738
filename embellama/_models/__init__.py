# SPDX-License-Identifier: Apache-2.0
"""The models users hold: the shared llama.cpp model base, EmbeddingModel and Reranker.

The layers above import from here: ``from embellama._models import EmbeddingModel, Reranker, ...``.
"""

from embellama._models.base import DEFAULT_CTX_CAP, LlamaModel, context_params, truncate_tokens
from embellama._models.embedding import EmbeddingModel
from embellama._models.kinds import is_reranker
from embellama._models.reranker import ACTIVATIONS, Reranker, check_activation, is_pair, rank_results

__all__ = [
    "ACTIVATIONS",
    "DEFAULT_CTX_CAP",
    "EmbeddingModel",
    "LlamaModel",
    "Reranker",
    "check_activation",
    "context_params",
    "is_pair",
    "is_reranker",
    "rank_results",
    "truncate_tokens",
]
