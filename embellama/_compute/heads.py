# SPDX-License-Identifier: Apache-2.0
"""Output heads on token vectors, in vectorized numpy: the MLM transform and SPLADE pooling, bge-m3's sparse
weights (max per token id), ColBERT projections and MaxSim.

Texts arrive concatenated: ``hidden`` is ``(total_tokens, hidden)`` and ``starts`` the first row of each text.
No function loops over tokens in Python; SPLADE's logits are computed a block of whole texts at a time so that
``(block_tokens, vocab)`` stays bounded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = [
    "activation",
    "layer_norm",
    "max_per_token_id",
    "maxsim",
    "maxsim_matrix",
    "project",
    "splade_pool",
    "top_k_prune",
]

F32 = npt.NDArray[np.float32]

_SQRT_HALF = np.float64(np.sqrt(0.5))


def _erf(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """erf to 1.2e-7 (Numerical Recipes' erfc Chebyshev fit), vectorized, without scipy."""
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (
        0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))))  # fmt: skip
    erfc = t * np.exp(poly)
    return np.where(x >= 0, 1.0 - erfc, erfc - 1.0)


def activation(x: F32, name: str) -> F32:
    """transformers' activation ``name`` (``gelu`` as erf, ``gelu_new``/``gelu_pytorch_tanh`` as tanh, ``relu``)."""
    if name == "gelu":
        x64 = x.astype(np.float64)
        return (0.5 * x64 * (1.0 + _erf(x64 * _SQRT_HALF))).astype(np.float32)
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        return (0.5 * x * (1.0 + np.tanh(0.7978845608 * (x + 0.044715 * x**3)))).astype(np.float32)
    if name == "relu":
        return np.maximum(x, 0)
    if name in ("identity", "linear"):
        return x
    raise ValueError(f"unknown activation {name!r}")


def layer_norm(x: F32, weight: F32, bias: F32, eps: float) -> F32:
    """LayerNorm over the last axis."""
    mean = x.mean(axis=-1, keepdims=True)
    var = np.square(x - mean).mean(axis=-1, keepdims=True)
    return ((x - mean) / np.sqrt(var + eps) * weight + bias).astype(np.float32)


def project(x: F32, weight: F32, bias: F32 | None) -> F32:
    """``x @ weight.T + bias`` (a torch Linear)."""
    out = x @ weight.T
    return out + bias if bias is not None else out


def _blocks(lengths: npt.NDArray[np.int64], budget: int) -> list[tuple[int, int]]:
    """Runs of whole texts ``[i, j)`` with at most ``budget`` tokens together (a longer text alone)."""
    out: list[tuple[int, int]] = []
    i, n = 0, len(lengths)
    cum = np.concatenate([[0], np.cumsum(lengths)])
    while i < n:
        j = int(np.searchsorted(cum, cum[i] + budget, side="right")) - 1
        j = max(j, i + 1)
        out.append((i, j))
        i = j
    return out


def splade_pool(
    hidden: F32,
    lengths: npt.NDArray[np.int64],
    *,
    dense_w: F32,
    dense_b: F32,
    norm_w: F32,
    norm_b: F32,
    decoder_w: F32,
    decoder_b: F32,
    act: str,
    eps: float,
    pooling: str = "max",
    activation_function: str = "relu",
    block_tokens: int = 512,
) -> F32:
    """SPLADE vectors ``(n_texts, vocab)`` from token vectors: the MLM head, then sentence-transformers'
    ``SpladePooling``: log(1 + ReLU(logits)) (once more log1p for ``log1p_relu``), max or sum over each text's
    tokens. For ``max`` the activation is monotonic, so it is applied after the max (on n_texts rows, not tokens).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    out = np.empty((len(lengths), decoder_w.shape[0]), dtype=np.float32)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    transform = layer_norm(activation(project(hidden, dense_w, dense_b), act), norm_w, norm_b, eps)
    for i, j in _blocks(lengths, block_tokens):
        logits = project(transform[starts[i] : starts[j]], decoder_w, decoder_b)
        offsets = starts[i:j] - starts[i]
        if pooling == "max":
            out[i:j] = np.log1p(np.maximum(np.maximum.reduceat(logits, offsets, axis=0), 0))
        else:
            out[i:j] = np.add.reduceat(np.log1p(np.maximum(logits, 0)), offsets, axis=0)
    if activation_function == "log1p_relu":
        if pooling == "max":
            np.log1p(out, out=out)
        else:
            raise ValueError("log1p_relu with sum pooling needs the activation before the sum")
    return out


def max_per_token_id(
    ids: npt.NDArray[np.int32], weights: F32, lengths: npt.NDArray[np.int64], dropped: Sequence[int]
) -> list[tuple[npt.NDArray[np.int32], F32]]:
    """bge-m3's sparse rule: per text, the largest weight of each token id, ids in ``dropped`` (its special
    tokens) and weights <= 0 left out; ``(ids ascending, weights)`` per text."""
    lengths = np.asarray(lengths, dtype=np.int64)
    text = np.repeat(np.arange(len(lengths)), lengths)
    keep = (weights > 0) & ~np.isin(ids, np.asarray(list(dropped), dtype=np.int64))
    text, tid, w = text[keep], ids[keep].astype(np.int64), weights[keep]
    order = np.lexsort((-w, tid, text))  # per (text, id): the largest weight first
    text, tid, w = text[order], tid[order], w[order]
    first = np.ones(len(tid), dtype=bool)
    first[1:] = (tid[1:] != tid[:-1]) | (text[1:] != text[:-1])
    text, tid, w = text[first], tid[first], w[first]
    bounds = np.searchsorted(text, np.arange(len(lengths) + 1))
    return [
        (tid[bounds[k] : bounds[k + 1]].astype(np.int32), w[bounds[k] : bounds[k + 1]].astype(np.float32))
        for k in range(len(lengths))
    ]


def top_k_prune(vectors: F32, k: int | None) -> F32:
    """Keep the ``k`` largest values of each row (sentence-transformers' ``max_active_dims``), zero the rest."""
    if k is None or k >= vectors.shape[1]:
        return vectors
    cut = np.argpartition(-vectors, k - 1, axis=1)[:, k:]
    out = vectors.copy()
    np.put_along_axis(out, cut, 0.0, axis=1)
    return out


def maxsim(query: F32, doc: F32, *, reduce: str = "sum") -> float:
    """ColBERT's late interaction: for each query vector the best dot product with any document vector, summed
    (``reduce="sum"``, ColBERT and PyLate) or averaged over the query vectors (``"mean"``, bge-m3)."""
    best = (query @ doc.T).max(axis=1)
    return float(best.sum() if reduce == "sum" else best.mean())


def maxsim_matrix(queries: Sequence[F32], docs: Sequence[F32], *, reduce: str = "sum") -> F32:
    """MaxSim of every query with every document, ``(n_queries, n_docs)``: one matmul over all documents'
    vectors per query, maxima per document by ``np.maximum.reduceat``."""
    out = np.zeros((len(queries), len(docs)), dtype=np.float32)
    if not docs or not queries:
        return out
    stacked = np.concatenate(docs, axis=0)
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])[:-1]])
    for qi, q in enumerate(queries):
        best = np.maximum.reduceat(q @ stacked.T, offsets, axis=1)  # (q_tokens, n_docs)
        out[qi] = best.sum(axis=0) if reduce == "sum" else best.mean(axis=0)
    return out
