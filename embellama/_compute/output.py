# SPDX-License-Identifier: Apache-2.0
"""Output types: ``truncate_dim`` and ``precision``, with sentence-transformers' rules.

- **truncate_dim** keeps the first dimensions of the pooled vector, before normalization.
- **precision** quantizes the normalized vectors exactly as sentence-transformers'
  ``quantize_embeddings`` does.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt

from embellama._compute.pooling import normalize
from embellama._exceptions import ConfigurationError, InvalidInputError

__all__ = [
    "PRECISIONS",
    "check_precision",
    "check_truncate_dim",
    "finish",
    "layer_norm",
    "output_width",
    "quantize_embeddings",
]

logger = logging.getLogger("embellama")

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
"""Output types: float32 (4 bytes a dimension), int8/uint8 (1 byte), binary/ubinary (1 bit, packed)."""

CALIBRATED = ("int8", "uint8")
"""Precisions whose per-dimension ranges come from the embeddings quantized together (or ``ranges``)."""


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


def output_width(dim: int, truncate_dim: int | None, precision: str) -> int:
    """Components per output vector: ``truncate_dim or dim``, packed 8 to a byte for binary/ubinary."""
    width = truncate_dim or dim
    return -(-width // 8) if precision in ("binary", "ubinary") else width


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


LAYER_NORM_BEFORE_TRUNCATE = "layer_norm_before_truncate"
"""The known-model table's ``normalization`` of a model whose Matryoshka cut follows a layer norm (nomic v1.5)."""
LAYER_NORM_EPS = 1e-5
"""The epsilon of the layer norm before a Matryoshka cut (torch's ``F.layer_norm`` default, nomic's recipe)."""


def layer_norm(vectors: npt.NDArray[np.float32], eps: float = LAYER_NORM_EPS) -> npt.NDArray[np.float32]:
    """Layer norm without affine parameters over the last axis: ``(x - mean) / sqrt(var + eps)`` (biased variance),
    as ``torch.nn.functional.layer_norm(x, (dim,))``; computed in float64, returned as float32."""
    x = np.asarray(vectors, dtype=np.float64)
    centered = x - x.mean(axis=-1, keepdims=True)
    var = (centered * centered).mean(axis=-1, keepdims=True)
    return (centered / np.sqrt(var + eps)).astype(np.float32)


def finish(
    vectors: npt.NDArray[np.float32],
    truncate_dim: int | None,
    norm: Any,
    precision: str,
    model_name: str,
    layer_norm_first: bool = False,
) -> npt.NDArray[Any]:
    """Un-normalized pooled ``(n, dim)`` vectors cut to ``truncate_dim``, normalized, then quantized.

    ``layer_norm_first``: a cut vector is first layer-normed over all its dimensions (:func:`layer_norm`), the
    Matryoshka recipe of nomic-embed-text v1.5 (the known-model table's ``layer_norm_before_truncate``)."""
    dim = vectors.shape[-1]
    check_truncate_dim(truncate_dim, f"model {model_name!r}", dim)
    if truncate_dim is not None and truncate_dim < dim:
        if layer_norm_first:
            vectors = layer_norm(vectors)
        vectors = np.ascontiguousarray(vectors[..., :truncate_dim])
    vectors = normalize(vectors, norm)
    if precision == "float32":
        return vectors
    try:
        return quantize_embeddings(vectors, precision)
    except InvalidInputError as exc:
        raise InvalidInputError(exc.reason, model_name) from None
