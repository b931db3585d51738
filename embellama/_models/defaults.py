# SPDX-License-Identifier: Apache-2.0
"""A loaded model's defaults from the known-model table (embellama._gguf.known): which entry it is, the rope
settings its context gets, and its similarity function. ModelConfig wins over the GGUF, the GGUF over the table."""

from __future__ import annotations

import logging
from typing import Any

from embellama._compute.similarity import check_similarity_fn_name
from embellama._config import ModelConfig
from embellama._gguf import known as _known
from embellama._gguf.known import KnownModel
from embellama.llama import Model

__all__ = ["SIMILARITY_KEY", "known_entry", "rope_settings", "similarity_fn_name", "source_text"]

logger = logging.getLogger("embellama")

SIMILARITY_KEY = "embellama.similarity_fn_name"
"""GGUF metadata key of the model's similarity function (as sentence-transformers' ``similarity_fn_name``)."""

_ROPE_FIELDS = (
    "rope_scaling",
    "rope_freq_base",
    "rope_freq_scale",
    "yarn_orig_ctx",
    "yarn_ext_factor",
    "yarn_attn_factor",
    "yarn_beta_fast",
    "yarn_beta_slow",
)


def source_text(source: Any) -> str | None:
    """``org/repo/file`` of a model loaded by name (its ``source``), else None."""
    repo, filename = getattr(source, "repo_id", None), getattr(source, "filename", None)
    if not repo:
        return None
    return f"{repo}/{filename}" if filename else str(repo)


def known_entry(model: Model, config: ModelConfig, source: Any = None, kind: str = "embedding") -> KnownModel | None:
    """The known-model entry the loaded ``model`` matches (None when none does, or ``use_known_defaults`` is off).

    Raises
    ------
    ConfigurationError
        A user table (``known_models``, ``$EMBELLAMA_KNOWN_MODELS``) cannot be read or is malformed.
    """
    if not config.use_known_defaults:
        return None
    extra = [config.known_models] if config.known_models is not None else []
    entry = _known.match(
        model.metadata(),
        source_text(source),
        entries=_known.table(extra),
        kind=kind,
        tokenizer_hash=lambda: _known.tokenizer_sha256(model.path),
    )
    if entry is not None:
        logger.info("model %r is the known model %s", config.name, entry.describe())
    return entry


def rope_settings(config: ModelConfig, model: Model, n_ctx: int, known: KnownModel | None) -> dict[str, Any]:
    """The rope and YaRN fields of the context: the config's; with none set and ``n_ctx`` beyond the training
    context, the known entry's (nomic-embed-text's YaRN); else none (llama.cpp takes the model's)."""
    settings = {key: getattr(config, key) for key in _ROPE_FIELDS if getattr(config, key) is not None}
    if not settings and known is not None and known.rope and model.n_ctx_train and n_ctx > model.n_ctx_train:
        settings = dict(known.rope)
        logger.info(
            "model %r: n_ctx %d is beyond its %d training tokens; rope settings of the known model %s: %s",
            config.name,
            n_ctx,
            model.n_ctx_train,
            known.id,
            settings,
        )
    return settings


def similarity_fn_name(config: ModelConfig, model: Model, known: KnownModel | None) -> str:
    """``ModelConfig.similarity_fn_name``, else the GGUF's (``embellama.similarity_fn_name``), else the known
    entry's, else "cosine".

    Raises
    ------
    ConfigurationError
        The GGUF names an unknown similarity function.
    """
    if config.similarity_fn_name is not None:
        return config.similarity_fn_name
    saved = model.metadata_value(SIMILARITY_KEY)
    if saved is not None:
        return check_similarity_fn_name(saved, f"model {config.name!r}: GGUF key {SIMILARITY_KEY}")
    if known is not None and known.similarity_fn_name:
        return known.similarity_fn_name
    return "cosine"
