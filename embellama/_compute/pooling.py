# SPDX-License-Identifier: Apache-2.0
"""Pooling over token-level output and vector normalization, in numpy."""

from __future__ import annotations

import enum
import math

import numpy as np
import numpy.typing as npt

from embellama._exceptions import ConfigurationError

__all__ = [
    "Normalization",
    "NormalizeSpec",
    "PoolingStrategy",
    "normalize",
    "parse_normalization",
    "pool_tokens",
]


class PoolingStrategy(str, enum.Enum):
    """How token vectors become one vector per text.

    MEAN, CLS and LAST run inside llama.cpp; MAX and MEAN_SQRT are computed with numpy
    from the token-level output; NONE returns the token-level vectors themselves.
    """

    MEAN = "mean"
    """Average of the token vectors."""
    CLS = "cls"
    """The first token's vector (BERT's [CLS])."""
    MAX = "max"
    """Element-wise maximum over tokens."""
    MEAN_SQRT = "mean_sqrt"
    """Sum over tokens divided by sqrt(token count) (sentence-transformers' mean_sqrt_len_tokens)."""
    LAST = "last"
    """The last token's vector (decoder models)."""
    NONE = "none"
    """No pooling: one vector per token."""
    RANK = "rank"
    """A cross-encoder's classification head on the pooled pair: scores, not embeddings (:class:`Reranker`)."""

    @classmethod
    def parse(cls, value: PoolingStrategy | str) -> PoolingStrategy:
        """The strategy an enum member or its name/value names, case-insensitively.

        Parameters
        ----------
        value : PoolingStrategy or str
            A member, or a value such as ``"mean"``, ``"CLS"``, ``"mean-sqrt"``; sentence-transformers'
            ``"mean_sqrt_len_tokens"`` and ``"lasttoken"`` are accepted too.

        Returns
        -------
        PoolingStrategy
            The member.

        Raises
        ------
        ConfigurationError
            ``value`` names no strategy (the message lists the valid ones).
        """
        if isinstance(value, PoolingStrategy):
            return value
        if isinstance(value, str):
            key = value.strip().lower().replace("-", "_")
            aliases = {"mean_sqrt_len_tokens": "mean_sqrt", "lasttoken": "last", "last_token": "last"}
            key = aliases.get(key, key)
            for member in cls:
                if member.value == key:
                    return member
        valid = ", ".join(m.value for m in cls)
        raise ConfigurationError(f"unknown pooling {value!r}; expected one of: {valid}")

    @property
    def native(self) -> str:
        """The llama.cpp pooling that computes it ("none" for the numpy strategies)."""
        return {"mean": "mean", "cls": "cls", "last": "last", "rank": "rank"}.get(self.value, "none")


class Normalization(str, enum.Enum):
    """Vector normalization; a float ``p`` in ModelConfig.normalize means the p-norm."""

    NONE = "none"
    L2 = "l2"
    L1 = "l1"
    MAX_ABS = "max_abs"
    """Divide by the largest absolute component (values in [-1, 1])."""


NormalizeSpec = bool | str | float | Normalization


def parse_normalization(value: NormalizeSpec) -> Normalization | float:
    """``True`` → L2, ``False`` → NONE, a name, or a number p > 0 for the p-norm."""
    if isinstance(value, bool):
        return Normalization.L2 if value else Normalization.NONE
    if isinstance(value, Normalization):
        return value
    if isinstance(value, str):
        for member in Normalization:
            if member.value == value.strip().lower():
                return member
    elif isinstance(value, (int, float)) and math.isfinite(value) and value > 0:
        p = float(value)
        return {1.0: Normalization.L1, 2.0: Normalization.L2}.get(p, p)
    valid = ", ".join(m.value for m in Normalization)
    raise ConfigurationError(f"unknown normalization {value!r}; expected True/False, {valid} or a p > 0")


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
