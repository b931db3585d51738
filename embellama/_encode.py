# SPDX-License-Identifier: Apache-2.0
"""Prompts, ``truncate_dim`` and ``precision``, with sentence-transformers' rules.

- **Prompts** are prepended to the text as strings before tokenization (so they count toward
  ``max_tokens``; truncation cuts the text's end, never the prompt). The prompts in effect are
  ``{"query": "", "document": ""}``, updated by the GGUF's own (metadata key ``embellama.prompts``,
  a JSON object), updated by ``ModelConfig.prompts``; ``default_prompt_name`` comes from the config,
  else from the GGUF (``embellama.default_prompt_name``).
- **truncate_dim** keeps the first dimensions of the pooled vector, before normalization.
- **precision** quantizes the normalized vectors exactly as sentence-transformers'
  ``quantize_embeddings`` does.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _gguf
from ._exceptions import ConfigurationError, InvalidInputError, ModelNotFoundError
from ._gguf import require_gguf

__all__ = [
    "DEFAULT_PROMPT_KEY",
    "PRECISIONS",
    "PROMPTS_KEY",
    "check_precision",
    "check_truncate_dim",
    "effective_prompts",
    "output_width",
    "quantize_embeddings",
    "resolve_prompt",
]

logger = logging.getLogger("embellama")

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
"""Output types: float32 (4 bytes a dimension), int8/uint8 (1 byte), binary/ubinary (1 bit, packed)."""

CALIBRATED = ("int8", "uint8")
"""Precisions whose per-dimension ranges come from the embeddings quantized together (or ``ranges``)."""

PROMPTS_KEY = "embellama.prompts"
"""GGUF metadata key of the model's prompts: a JSON object of prompt name to prompt text."""

DEFAULT_PROMPT_KEY = "embellama.default_prompt_name"
"""GGUF metadata key of the prompt applied when a call names none (a string)."""

_BUILTIN_PROMPTS = {"query": "", "document": ""}  # sentence-transformers' SentenceTransformer defaults
DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")
"""Where ``encode_document`` looks for its prompt, in order (as sentence-transformers does)."""


def check_precision(value: object, who: str) -> str:
    """``value`` if it is one of :data:`PRECISIONS`, else ConfigurationError naming ``who``."""
    if not isinstance(value, str) or value not in PRECISIONS:
        raise ConfigurationError(f"{who}: unknown precision {value!r}; expected one of: {', '.join(PRECISIONS)}")
    return value


def check_truncate_dim(value: object, who: str, dim: int | None = None) -> int | None:
    """``value`` if None or a positive int (at most ``dim`` when given), else ConfigurationError."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{who}: truncate_dim must be a positive int or None, got {value!r}")
    if dim is not None and value > dim:
        raise ConfigurationError(f"{who}: truncate_dim ({value}) is larger than the model's {dim} dimensions")
    return value


def check_prompts(prompts: object, who: str) -> dict[str, str] | None:
    """A copy of ``prompts`` (a mapping of str to str, or None), else ConfigurationError naming ``who``."""
    if prompts is None:
        return None
    if not isinstance(prompts, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()
    ):
        raise ConfigurationError(
            f"{who}: prompts must be a mapping of prompt name to prompt text (str), got {prompts!r}"
        )
    return dict(prompts)


def output_width(dim: int, truncate_dim: int | None, precision: str) -> int:
    """Components per output vector: ``truncate_dim or dim``, packed 8 to a byte for binary/ubinary."""
    width = truncate_dim or dim
    return -(-width // 8) if precision in ("binary", "ubinary") else width


def effective_prompts(saved: Mapping[str, str], configured: Mapping[str, str] | None) -> dict[str, str]:
    """The prompts in effect: the built-in empty query/document prompts, the model's, then the config's."""
    return {**_BUILTIN_PROMPTS, **saved, **(configured or {})}


def resolve_prompt(
    prompts: Mapping[str, str], default_name: str | None, prompt: str | None, prompt_name: str | None, who: str
) -> str | None:
    """The prompt text a call uses (sentence-transformers' rule): ``prompt``, else ``prompts[prompt_name]``,
    else the default prompt's text, else None.

    Raises ConfigurationError for an unknown ``prompt_name`` (naming ``who`` and the known names) and
    for a ``prompt``/``prompt_name`` of the wrong type.
    """
    if prompt is not None and not isinstance(prompt, str):
        raise ConfigurationError(f"{who}: prompt must be a str or None, got {type(prompt).__name__}")
    if prompt_name is not None and not isinstance(prompt_name, str):
        raise ConfigurationError(f"{who}: prompt_name must be a str or None, got {type(prompt_name).__name__}")
    if prompt is not None:
        if prompt_name is not None:
            logger.warning("%s: both prompt and prompt_name given; using prompt, ignoring prompt_name", who)
        return prompt
    if prompt_name is not None:
        if prompt_name not in prompts:
            raise ConfigurationError(
                f"{who}: unknown prompt_name {prompt_name!r}; the model's prompts: {sorted(prompts)}"
            )
        return prompts[prompt_name]
    if default_name is not None:
        return prompts.get(default_name)
    return None


def document_prompt_name(prompts: Mapping[str, str]) -> str | None:
    """The prompt ``encode_document`` uses when the call names none."""
    return next((name for name in DOCUMENT_PROMPT_NAMES if name in prompts), None)


# -- quantization -------------------------------------------------------------------------------


def quantize_embeddings(
    embeddings: npt.ArrayLike,
    precision: str,
    *,
    ranges: npt.ArrayLike | None = None,
    calibration_embeddings: npt.ArrayLike | None = None,
) -> npt.NDArray[Any]:
    """Quantize float embeddings, bit for bit as sentence-transformers' ``quantize_embeddings``.

    - ``int8``/``uint8``: each dimension's range [min, max] is cut into 255 steps; a value becomes
      ``floor((x - min) / step)`` clipped to [0, 255] (minus 128 for int8). The ranges come from
      ``ranges`` (shape ``(2, dim)``: minima, maxima), else from ``calibration_embeddings``, else from
      ``embeddings`` themselves (so they depend on what is quantized together; a single vector has no range).
    - ``binary``/``ubinary``: one bit per dimension (``x > 0``), packed 8 to a byte (``numpy.packbits``,
      first dimension in the high bit), as uint8, or as int8 minus 128 for ``binary``.

    Parameters
    ----------
    embeddings : array_like
        Float vectors, shape ``(n, dim)`` (or ``(dim,)`` for binary/ubinary/float32).
    precision : str
        ``"float32"``, ``"int8"``, ``"uint8"``, ``"binary"`` or ``"ubinary"``.
    ranges : array_like, optional
        int8/uint8 only: per-dimension minima and maxima, shape ``(2, dim)``.
    calibration_embeddings : array_like, optional
        int8/uint8 only: vectors to take the ranges from when ``ranges`` is not given.

    Returns
    -------
    numpy.ndarray
        float32, int8 (int8, binary) or uint8 (uint8, ubinary); binary kinds have ``ceil(dim / 8)`` columns.

    Raises
    ------
    ConfigurationError
        An unknown ``precision``.
    InvalidInputError
        Integer embeddings, or int8/uint8 ranges that would have to come from a single vector.
    """
    precision = check_precision(precision, "quantize_embeddings")
    array = np.asarray(embeddings)
    if array.dtype in (np.uint8, np.int8):
        raise InvalidInputError("embeddings to quantize must be float, not int8 or uint8")
    if precision == "float32":
        return array.astype(np.float32)
    if precision in CALIBRATED:
        dim = array.shape[-1]
        if array.ndim == 2 and array.shape[0] == 0:
            return np.zeros((0, dim), dtype=np.int8 if precision == "int8" else np.uint8)
        if ranges is None:
            source = array if calibration_embeddings is None else np.asarray(calibration_embeddings)
            if calibration_embeddings is None and (array.ndim == 1 or array.shape[0] == 1):
                raise InvalidInputError(
                    f"cannot compute {precision} ranges from a single embedding: quantize several together, or "
                    "pass ranges= or calibration_embeddings= from a representative set"
                )
            ranges = np.vstack((np.min(source, axis=0), np.max(source, axis=0)))
        bounds = np.asarray(ranges).astype(np.float32, copy=False)
        starts = bounds[0, :]
        steps = (bounds[1, :] - starts) / 255
        steps = np.where(steps == 0, 1, steps)
        values = np.clip(np.floor((array - starts) / steps), 0, 255)
        return values.astype(np.uint8) if precision == "uint8" else (values - 128).astype(np.int8)
    packed = np.packbits(array > 0, axis=-1)
    return (packed - 128).astype(np.int8) if precision == "binary" else packed


def finish(
    vectors: npt.NDArray[np.float32], truncate_dim: int | None, norm: Any, precision: str, model_name: str
) -> npt.NDArray[Any]:
    """Un-normalized pooled ``(n, dim)`` vectors cut to ``truncate_dim``, normalized, then quantized."""
    from ._pooling import normalize

    dim = vectors.shape[-1]
    check_truncate_dim(truncate_dim, f"model {model_name!r}", dim)
    if truncate_dim is not None and truncate_dim < dim:
        vectors = np.ascontiguousarray(vectors[..., :truncate_dim])
    vectors = normalize(vectors, norm)
    if precision == "float32":
        return vectors
    try:
        return quantize_embeddings(vectors, precision)
    except InvalidInputError as exc:
        raise InvalidInputError(exc.reason, model_name) from None


# -- prompts in GGUF metadata -------------------------------------------------------------------


def parse_saved_prompts(prompts_json: str | None, who: str) -> dict[str, str]:
    """The prompts a GGUF carries (``embellama.prompts``); a malformed value raises ConfigurationError."""
    if prompts_json is None:
        return {}
    try:
        saved = json.loads(prompts_json)
    except ValueError as exc:
        raise ConfigurationError(f"{who}: GGUF key {PROMPTS_KEY} is not JSON: {exc}") from None
    checked = check_prompts(saved, f"{who}: GGUF key {PROMPTS_KEY}")
    return checked or {}


def hf_prompts(hf_dir: str | os.PathLike[str]) -> tuple[dict[str, str], str | None]:
    """The prompts and default prompt name of a sentence-transformers folder
    (``config_sentence_transformers.json``; none when the file or its keys are absent)."""
    path = Path(hf_dir) / "config_sentence_transformers.json"
    if not path.is_file():
        return {}, None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigurationError(f"{path} is not JSON: {exc}") from None
    prompts = check_prompts(data.get("prompts") or {}, str(path)) or {}
    default = data.get("default_prompt_name")
    if default is not None and not isinstance(default, str):
        raise ConfigurationError(f"{path}: default_prompt_name must be a str or null, got {default!r}")
    return prompts, default


def write_prompts(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    prompts: Mapping[str, str],
    default_prompt_name: str | None = None,
) -> Path:
    """Copy the GGUF ``source`` to ``destination`` with the prompts in its metadata (needs the ``gguf`` package).

    Every other key and every tensor is copied unchanged; earlier prompt keys are replaced.
    ``destination`` is written atomically and may be ``source`` itself.
    """
    gguf = require_gguf("prompts")
    src, dst = Path(source), Path(destination)
    if not src.is_file():
        raise ModelNotFoundError(str(src))
    checked = check_prompts(prompts, str(src)) or {}
    if default_prompt_name is not None and default_prompt_name not in effective_prompts(checked, None):
        raise ConfigurationError(
            f"{src}: default_prompt_name {default_prompt_name!r} is not among the prompts {sorted(checked)}"
        )
    keys: dict[str, tuple[Any, Any]] = {
        PROMPTS_KEY: (json.dumps(checked, ensure_ascii=False), gguf.GGUFValueType.STRING)
    }
    if default_prompt_name is not None:
        keys[DEFAULT_PROMPT_KEY] = (default_prompt_name, gguf.GGUFValueType.STRING)
    return _gguf.rewrite(src, dst, why="prompts", set_keys=keys, drop_keys=(PROMPTS_KEY, DEFAULT_PROMPT_KEY))
