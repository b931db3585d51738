# SPDX-License-Identifier: Apache-2.0
"""Pooling over token-level output and vector normalization, in numpy."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ._config import Normalization, NormalizeSpec, PoolingStrategy, parse_normalization

__all__ = ["normalize", "pool_tokens"]


def pool_tokens(
    tokens: npt.NDArray[np.float32], lengths: npt.NDArray[np.int64], strategy: PoolingStrategy
) -> npt.NDArray[np.float32]:
    """Pool a flat ``(sum(lengths), dim)`` token matrix into ``(len(lengths), dim)``.

    Sequences lie one after another in ``tokens``; reductions use ``reduceat``, so there
    is no Python loop over tokens or sequences.
    """
    starts = np.cumsum(lengths) - lengths
    if strategy is PoolingStrategy.MAX:
        return np.maximum.reduceat(tokens, starts, axis=0)
    sums = np.add.reduceat(tokens.astype(np.float64), starts, axis=0)
    counts = lengths.astype(np.float64)[:, None]
    if strategy is PoolingStrategy.MEAN:
        return (sums / counts).astype(np.float32)
    if strategy is PoolingStrategy.MEAN_SQRT:
        return (sums / np.sqrt(counts)).astype(np.float32)
    if strategy is PoolingStrategy.CLS:
        return tokens[starts]
    if strategy is PoolingStrategy.LAST:
        return tokens[starts + lengths - 1]
    raise ValueError(f"pool_tokens cannot pool with {strategy}")


def normalize(vectors: npt.NDArray[np.float32], mode: NormalizeSpec = True) -> npt.NDArray[np.float32]:
    """Normalize the rows of ``vectors`` in place and return them; zero rows stay zero.

    Parameters
    ----------
    vectors : numpy.ndarray
        float32 array; each row (the last axis) is normalized.
    mode : bool, str, float or Normalization, optional
        What ``ModelConfig.normalize`` takes: ``True`` (L2, the default), ``False``, ``"l2"``,
        ``"l1"``, ``"max_abs"``, a :class:`Normalization` or a p > 0 for the p-norm.

    Returns
    -------
    numpy.ndarray
        ``vectors`` itself, normalized.

    Raises
    ------
    ConfigurationError
        ``mode`` is none of those.
    """
    mode = parse_normalization(mode)
    if mode is Normalization.NONE:
        return vectors
    if mode is Normalization.L2:
        norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    elif mode is Normalization.L1:
        norms = np.abs(vectors).sum(axis=-1, keepdims=True)
    elif mode is Normalization.MAX_ABS:
        norms = np.abs(vectors).max(axis=-1, keepdims=True)
    else:
        p = float(mode)
        norms = (np.abs(vectors.astype(np.float64)) ** p).sum(axis=-1, keepdims=True) ** (1.0 / p)
    np.divide(vectors, norms, out=vectors, where=norms > 0)
    return vectors
