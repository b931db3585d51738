# SPDX-License-Identifier: Apache-2.0
"""Similarity of embeddings in numpy, as sentence-transformers defines it, and a top-k search over a corpus.

The four functions are sentence-transformers' (``SimilarityFunction``): ``cosine``, ``dot``, and ``euclidean`` and
``manhattan`` as *negative* distances, so that a larger score is always more similar. Quantized outputs work too:
int8/uint8 vectors are compared as the numbers they hold, binary/ubinary ones (8 dimensions packed into a byte, as
:func:`embellama.quantize_embeddings` gives them) are unpacked into +1/-1 vectors first, so that ``dot`` of two
binary vectors is ``width - 2 * hamming_distance`` (``width``: the dimensions rounded up to a multiple of 8, the
padding bits being equal in both).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from embellama._exceptions import ConfigurationError, InvalidInputError

__all__ = [
    "SIMILARITY_FUNCTIONS",
    "check_similarity_fn_name",
    "pairwise_similarity",
    "semantic_search",
    "similarity",
]

SIMILARITY_FUNCTIONS = ("cosine", "dot", "euclidean", "manhattan")
"""sentence-transformers' similarity function names (``SimilarityFunction`` values)."""

_ALIASES = {"cos_sim": "cosine", "dot_score": "dot", "dot_product": "dot"}
_PACKED = ("binary", "ubinary")
_Array = npt.NDArray[Any]


def check_similarity_fn_name(value: object, who: str) -> str:
    """``value`` as one of :data:`SIMILARITY_FUNCTIONS` (also "cos_sim", "dot_score"), else ConfigurationError."""
    if isinstance(value, str):
        name = _ALIASES.get(value, value)
        if name in SIMILARITY_FUNCTIONS:
            return name
    raise ConfigurationError(
        f"{who}: unknown similarity_fn_name {value!r}; expected one of: {', '.join(SIMILARITY_FUNCTIONS)}"
    )


def _matrix(value: Any, precision: str | None, what: str) -> npt.NDArray[np.float64]:
    """``value`` as a 2-D float64 array (a 1-D vector becomes one row; packed bits become +1/-1)."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{what} must be an array of embeddings: {exc}") from None
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] == 0:
        raise InvalidInputError(f"{what} must be a vector or a (n, dim) matrix, got shape {array.shape}")
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise InvalidInputError(f"{what} must hold numbers, got dtype {array.dtype}")
    if precision in _PACKED:
        want = np.int8 if precision == "binary" else np.uint8
        if array.dtype != want:
            raise InvalidInputError(
                f"{what}: {precision} embeddings are packed bits of dtype {np.dtype(want).name}, got {array.dtype}"
            )
        # quantize_embeddings' binary is the packed byte less 128 (int8); ubinary the packed byte itself
        packed = (array.astype(np.int16) + 128).astype(np.uint8) if precision == "binary" else array
        return np.unpackbits(packed, axis=1).astype(np.float64) * 2.0 - 1.0
    out = array.astype(np.float64)
    if not np.isfinite(out).all():
        raise InvalidInputError(f"{what} holds NaN or infinite values")
    return out


def _pair(a: Any, b: Any, precision: str | None) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    if precision is not None and precision not in ("float32", "int8", "uint8", *_PACKED):
        raise ConfigurationError(f"unknown precision {precision!r} for similarity")
    left, right = _matrix(a, precision, "a"), _matrix(b, precision, "b")
    if left.shape[1] != right.shape[1]:
        raise InvalidInputError(f"a has {left.shape[1]} dimensions and b {right.shape[1]}: they must be equal")
    return left, right


def _unit(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)  # torch.nn.functional.normalize's eps


def _cdist(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64], p: int) -> npt.NDArray[np.float64]:
    if p == 2:
        # |a|^2 + |b|^2 - 2ab, clipped at 0 against rounding: one matrix product, no (n, m, dim) temporary
        sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
        return np.sqrt(np.maximum(sq, 0.0))
    out = np.empty((len(a), len(b)))
    step = max(1, 2**22 // max(1, len(b) * a.shape[1]))  # bound the (rows, m, dim) temporary to ~32 MiB
    for i in range(0, len(a), step):
        out[i : i + step] = np.abs(a[i : i + step, None, :] - b[None, :, :]).sum(-1)
    return out


def similarity(a: Any, b: Any, fn: str = "cosine", *, precision: str | None = None) -> npt.NDArray[np.float32]:
    """Scores of every row of ``a`` against every row of ``b``: shape ``(len(a), len(b))``.

    Parameters
    ----------
    a, b : array_like
        Embeddings, one per row (a single vector counts as one row), of the same dimension.
    fn : str, optional
        "cosine", "dot", "euclidean" (negative L2 distance) or "manhattan" (negative L1 distance).
    precision : str, optional
        "binary" or "ubinary" for packed bits (unpacked into +1/-1 first); otherwise the values are used as
        numbers, whatever their dtype.

    Returns
    -------
    numpy.ndarray
        float32 scores; larger is more similar.

    Raises
    ------
    ConfigurationError
        An unknown ``fn`` or ``precision``.
    InvalidInputError
        The inputs are not numeric matrices of one dimension, or hold NaN or infinities.
    """
    name = check_similarity_fn_name(fn, "similarity")
    left, right = _pair(a, b, precision)
    if name == "cosine":
        scores = _unit(left) @ _unit(right).T
    elif name == "dot":
        scores = left @ right.T
    else:
        scores = -_cdist(left, right, 2 if name == "euclidean" else 1)
    return scores.astype(np.float32)


def pairwise_similarity(a: Any, b: Any, fn: str = "cosine", *, precision: str | None = None) -> npt.NDArray[np.float32]:
    """Scores of ``a[i]`` against ``b[i]``: shape ``(n,)``.

    Parameters
    ----------
    a, b : array_like
        Embeddings of shape ``(n, dim)`` each.
    fn : str, optional
        As for :func:`similarity`.
    precision : str, optional
        As for :func:`similarity`.

    Returns
    -------
    numpy.ndarray
        float32, shape ``(n,)``.

    Raises
    ------
    ConfigurationError, InvalidInputError
        As for :func:`similarity`, and when ``a`` and ``b`` have different numbers of rows.
    """
    name = check_similarity_fn_name(fn, "similarity_pairwise")
    left, right = _pair(a, b, precision)
    if len(left) != len(right):
        raise InvalidInputError(f"a has {len(left)} rows and b {len(right)}: pairwise needs as many of each")
    if name == "cosine":
        scores = (_unit(left) * _unit(right)).sum(1)
    elif name == "dot":
        scores = (left * right).sum(1)
    elif name == "euclidean":
        scores = -np.sqrt(((left - right) ** 2).sum(1))
    else:
        scores = -np.abs(left - right).sum(1)
    return scores.astype(np.float32)


def semantic_search(
    query_embeddings: Any,
    corpus_embeddings: Any,
    *,
    top_k: int = 10,
    score_function: str | Callable[[Any, Any], Any] = "cosine",
    query_chunk_size: int = 100,
    corpus_chunk_size: int = 500_000,
    precision: str | None = None,
) -> list[list[dict[str, int | float]]]:
    """The ``top_k`` corpus rows most similar to each query, as sentence-transformers' ``util.semantic_search``.

    Parameters
    ----------
    query_embeddings : array_like
        One query per row (a single vector is one query).
    corpus_embeddings : array_like
        The corpus matrix, one document per row.
    top_k : int, optional
        Results per query (fewer when the corpus is smaller).
    score_function : str or callable, optional
        A similarity name ("cosine", "dot", "euclidean", "manhattan") or a function of two matrices that returns
        their ``(n, m)`` score matrix.
    query_chunk_size, corpus_chunk_size : int, optional
        Queries and corpus rows scored at once (memory against speed).
    precision : str, optional
        As for :func:`similarity` ("binary"/"ubinary": packed bits).

    Returns
    -------
    list of list of dict
        Per query, ``{"corpus_id": int, "score": float}`` dicts by decreasing score.

    Raises
    ------
    ConfigurationError
        A bad ``top_k``, chunk size, ``score_function`` or ``precision``.
    InvalidInputError
        As for :func:`similarity`, or a score function that returns the wrong shape.
    """
    for key, value in (
        ("top_k", top_k),
        ("query_chunk_size", query_chunk_size),
        ("corpus_chunk_size", corpus_chunk_size),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigurationError(f"semantic_search: {key} must be a positive int, got {value!r}")
    queries, corpus = _pair(query_embeddings, corpus_embeddings, precision)
    if callable(score_function):
        scorer: Callable[[Any, Any], Any] = score_function
    else:
        name = check_similarity_fn_name(score_function, "semantic_search")
        if name == "cosine":  # normalize once, not per chunk pair
            queries, corpus, name = _unit(queries), _unit(corpus), "dot"

        def scorer(q: Any, c: Any) -> Any:
            return similarity(q, c, name)

    if len(corpus) == 0:
        return [[] for _ in range(len(queries))]
    k = min(top_k, len(corpus))
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float64)
    best_ids = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(corpus), corpus_chunk_size):
        chunk = corpus[start : start + corpus_chunk_size]
        rows_scores, rows_ids = [], []
        for q in range(0, len(queries), query_chunk_size):
            scores = np.asarray(scorer(queries[q : q + query_chunk_size], chunk), dtype=np.float64)
            expected = (min(query_chunk_size, len(queries) - q), len(chunk))
            if scores.shape != expected:
                raise InvalidInputError(f"score_function returned shape {scores.shape}, expected {expected}")
            rows_scores.append(scores)
            rows_ids.append(np.broadcast_to(np.arange(start, start + len(chunk)), expected))
        merged_scores = np.concatenate([best_scores, np.concatenate(rows_scores)], axis=1)
        merged_ids = np.concatenate([best_ids, np.concatenate(rows_ids)], axis=1)
        keep = min(k, merged_scores.shape[1])
        part = np.argpartition(-merged_scores, keep - 1, axis=1)[:, :keep]
        best_scores = np.take_along_axis(merged_scores, part, axis=1)
        best_ids = np.take_along_axis(merged_ids, part, axis=1)
    order = np.lexsort((best_ids, -best_scores), axis=1)  # by score, ties by corpus position
    best_scores = np.take_along_axis(best_scores, order, axis=1)
    best_ids = np.take_along_axis(best_ids, order, axis=1)
    return [
        [{"corpus_id": int(i), "score": float(s)} for i, s in zip(ids, scores, strict=True)]
        for ids, scores in zip(best_ids, best_scores, strict=True)
    ]
