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

__all__ = ["check_runnable", "check_scoring_config", "embedding_pooling", "is_reranker"]

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


def check_scoring_config(config: ModelConfig, kind: str, verb: str) -> None:
    """Refuse what a scoring head (a Reranker's, a Classifier's) cannot honour: another pooling than
    'rank', or an option that applies to embeddings only. ``kind`` and ``verb`` name the class in the
    message ("a Reranker scores with pooling 'rank'")."""
    who = f"model {config.name!r}"
    if config.pooling is not None and config.pooling is not PoolingStrategy.RANK:
        raise ConfigurationError(
            f"{who}: a {kind} {verb} with pooling 'rank', not {PoolingStrategy.parse(config.pooling).value!r}"
        )
    for field, unset in (("prompts", None), ("truncate_dim", None), ("precision", "float32")):
        if getattr(config, field) != unset:
            raise ConfigurationError(f"{who}: {field} applies to embeddings, not to a {kind}")


# Architectures whose llama.cpp loader gives a sliding-window pattern by default (load_swa_pattern(ml, n)): in
# every n layers the last is full attention, the others sliding-window; the GGUF's
# <arch>.attention.sliding_window_pattern (a count, or one flag per layer) overrides it.
SWA_PATTERNS = {"gemma-embedding": 6, "gemma3": 6, "gemma2": 2, "gemma3n": 5}


def _all_sliding_window(model: Model) -> str | None:
    """Why every layer of a non-causal model uses sliding-window attention, or None."""
    arch = model.architecture
    if arch not in SWA_PATTERNS or model.is_causal:
        return None
    if arch == "gemma3" and model.metadata_value(f"{arch}.attention.sliding_window") in (None, "0"):
        return None
    key = f"{arch}.attention.sliding_window_pattern"
    value = _gguf.read_header(model.path, arrays=(key,)).metadata.get(key)
    n_layer = model.n_layer
    if isinstance(value, list):
        if len(value) >= n_layer and all(bool(flag) for flag in value[:n_layer]):
            return f"{key} marks every one of its {n_layer} layers sliding-window"
        return None
    n = SWA_PATTERNS[arch] if value is None else int(value)
    if n == 0:
        return f"{key} is 0: every layer sliding-window"
    if n_layer < n:
        return f"it has {n_layer} layers, fewer than its sliding-window pattern's {n}: every layer sliding-window"
    return None


def check_runnable(model: Model, name: str) -> None:
    """Refuse a model llama.cpp would abort the process on, before any context is made.

    An encoder whose every layer uses sliding-window attention (a Gemma3 embedding model of fewer
    than 6 layers, say): llama.cpp never allocates the full-attention mask its encoder still sets,
    and aborts at the first decode (``GGML_ASSERT(buffer)`` in ``ggml_backend_buffer_get_type``).
    """
    why = _all_sliding_window(model)
    if why is not None:
        raise ConfigurationError(
            f"model {name!r} ({model.architecture}) cannot run: {why}, and llama.cpp aborts the process on an "
            "encoder without one full-attention layer"
        )
