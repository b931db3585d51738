# SPDX-License-Identifier: Apache-2.0
"""Which kind of model a GGUF is: a reranker (rank pooling, or a classification head) or an embedder, and the
pooling an embedder uses."""

from __future__ import annotations

import logging

from embellama._compute.pooling import PoolingStrategy
from embellama._config import ModelConfig
from embellama._exceptions import ConfigurationError, EmbellamaError
from embellama._gguf import reader as _gguf
from embellama._models.pretrained import model_file
from embellama.llama import Model

__all__ = ["embedding_pooling", "is_reranker"]

logger = logging.getLogger("embellama")

_RANK_CODE = 4  # enum llama_pooling_type: LLAMA_POOLING_TYPE_RANK


def _labels_key(architecture: str) -> str:
    """A classification head's labels (an array: llama.cpp's metadata API omits arrays, the header reader has them)."""
    return f"{architecture}.classifier.output_labels"


def is_reranker(config: ModelConfig) -> bool:
    """Whether ``config`` names a reranker: ``pooling="rank"``, or with pooling unset a GGUF whose pooling type is
    rank, or that has a classification head's labels and names no pooling (how llama.cpp's converter writes
    BERT and XLM-RoBERTa cross-encoders). Reads the GGUF header only; an unreadable file, or an ``hf://``
    reference that does not resolve, says False (loading it then raises the real error)."""
    if config.pooling is not None:
        return config.pooling is PoolingStrategy.RANK
    try:
        header = _gguf.read_header(model_file(config)[0])  # an hf:// reference: its cached file
    except (OSError, EmbellamaError):
        return False
    pooling = header.arch_value("pooling_type")
    if pooling is not None:
        return int(pooling) == _RANK_CODE
    return header.array_length(_labels_key(header.architecture)) is not None


def embedding_pooling(config: ModelConfig, model: Model) -> PoolingStrategy:
    """The pooling an EmbeddingModel of ``config`` uses on the loaded ``model``: the config's, else the GGUF's,
    else mean (last for a causal model), with a warning.

    Raises
    ------
    ConfigurationError
        The config asks for rank pooling, or the GGUF is a reranker and the config names no pooling.
    """
    who = f"model {config.name!r}"
    if config.pooling is PoolingStrategy.RANK:
        raise ConfigurationError(f"{who}: pooling 'rank' gives a cross-encoder's scores, not embeddings; use Reranker")
    if config.pooling is not None:
        return PoolingStrategy.parse(config.pooling)
    named = model.pooling_type
    if named in ("mean", "cls", "last"):
        return PoolingStrategy.parse(named)
    if named == "rank":
        raise ConfigurationError(
            f"{who} is a reranker (pooling 'rank'): score pairs with Reranker, or pass "
            "pooling= explicitly to embed with its hidden states anyway"
        )
    if _gguf.read_header(model.path).array_length(_labels_key(model.architecture)) is not None:
        raise ConfigurationError(
            f"{who} is a reranker (it has a classification head's labels): score pairs with "
            "Reranker, or pass pooling= explicitly to embed with its hidden states anyway"
        )
    fallback = PoolingStrategy.LAST if model.is_causal else PoolingStrategy.MEAN
    logger.warning("model %r names no pooling in its metadata; using %s", config.name, fallback.value)
    return fallback
