# SPDX-License-Identifier: Apache-2.0
"""Spans of long texts in numpy: token windows with a stride, word and sentence spans of a text, the tokens a
character span covers, and pooling over windows and token spans (no per-token Python loops)."""

from __future__ import annotations

import re

import numpy as np
import numpy.typing as npt

__all__ = [
    "char_to_token_spans",
    "pool_windows",
    "sentence_spans",
    "span_means",
    "windows",
    "word_spans",
]

_WORD = re.compile(r"\S+")
# A sentence: from a non-space character to the first run of terminal punctuation (with closing quotes or
# brackets) followed by white space, to a blank line, or to the end of the text.
_SENTENCE = re.compile(r"\S.*?(?:[.!?\u2026\u3002\uff01\uff1f]+[\"'\u201d\u2019)\]]*(?=\s|\Z)|(?=\n[ \t]*\n)|\Z)", re.S)

IntArray = npt.NDArray[np.int64]


def windows(n: int, width: int, stride: int) -> tuple[IntArray, IntArray]:
    """Start and end (exclusive) of the windows of ``width`` tokens, ``stride`` apart, that cover ``n`` tokens.

    The last window ends at ``n``; a text of at most ``width`` tokens (also none) is one window.
    """
    count = 1 + max(0, -(-(n - width) // stride))
    starts = np.arange(count, dtype=np.int64) * stride
    return starts, np.minimum(starts + width, n)


def pool_windows(
    vectors: npt.NDArray[np.float32], counts: IntArray, weights: npt.NDArray[np.float64]
) -> npt.NDArray[np.float32]:
    """The weighted mean of consecutive rows of ``vectors``: ``counts[i]`` rows (at least one) for output row i."""
    first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.intp)
    sums = np.add.reduceat(vectors.astype(np.float64) * weights[:, None], first, axis=0)
    return (sums / np.add.reduceat(weights, first)[:, None]).astype(np.float32)


def word_spans(text: str) -> tuple[IntArray, IntArray]:
    """Character start and end of each run of non-space characters in ``text``."""
    bounds = np.array([m.span() for m in _WORD.finditer(text)], dtype=np.int64).reshape(-1, 2)
    return bounds[:, 0], bounds[:, 1]


def sentence_spans(text: str) -> npt.NDArray[np.int64]:
    """``(k, 2)`` character spans of the sentences of ``text`` (trailing white space left out)."""
    spans = []
    for m in _SENTENCE.finditer(text):
        start = m.start()
        spans.append((start, start + len(m.group().rstrip())))
    return np.array(spans, dtype=np.int64).reshape(-1, 2)


def char_to_token_spans(
    token_starts: IntArray, token_ends: IntArray, span_starts: IntArray, span_ends: IntArray
) -> tuple[IntArray, IntArray]:
    """For character spans, the first token and one past the last token that overlap each (tokens in text order).

    A span that overlaps no token gets an empty range (start >= end).
    """
    first = np.searchsorted(token_ends, span_starts, side="right")
    last = np.searchsorted(token_starts, span_ends, side="left")
    return first.astype(np.int64), last.astype(np.int64)


def span_means(tokens: npt.NDArray[np.float32], starts: IntArray, ends: IntArray) -> npt.NDArray[np.float32]:
    """The mean of ``tokens[s:e]`` for each (s, e), through one cumulative sum (every range non-empty)."""
    total = np.zeros((len(tokens) + 1, tokens.shape[1]), dtype=np.float64)
    np.cumsum(tokens, axis=0, dtype=np.float64, out=total[1:])
    return ((total[ends] - total[starts]) / (ends - starts)[:, None]).astype(np.float32)
