# SPDX-License-Identifier: Apache-2.0
"""embellama._compute.spans against plain Python loops over drawn sizes: windows, pooling over windows and token
spans, character spans to tokens, word and sentence spans."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from embellama._compute import spans


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 3000), width=st.integers(1, 512), overlap=st.integers(0, 511))
def test_windows_cover_every_token_with_the_stride(n, width, overlap):
    overlap = min(overlap, width - 1)
    stride = width - overlap
    starts, ends = spans.windows(n, width, stride)
    want_starts = [0]
    while want_starts[-1] + width < n:
        want_starts.append(want_starts[-1] + stride)
    assert starts.tolist() == want_starts
    assert ends.tolist() == [min(s + width, n) for s in want_starts]
    assert ends[-1] == n and (ends - starts <= width).all()


@settings(max_examples=50, deadline=None)
@given(counts=st.lists(st.integers(1, 5), min_size=1, max_size=8), seed=st.integers(0, 2**16))
def test_pool_windows_is_the_weighted_mean_of_each_texts_rows(counts, seed):
    rng = np.random.default_rng(seed)
    rows = sum(counts)
    vectors = rng.normal(size=(rows, 6)).astype(np.float32)
    weights = rng.integers(1, 50, size=rows).astype(np.float64)
    pooled = spans.pool_windows(vectors, np.array(counts), weights)
    at = 0
    for i, c in enumerate(counts):
        want = (vectors[at : at + c] * weights[at : at + c, None]).sum(0) / weights[at : at + c].sum()
        np.testing.assert_allclose(pooled[i], want, rtol=1e-5, atol=1e-6)
        at += c


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_char_spans_to_tokens_and_span_means(data):
    widths = data.draw(st.lists(st.integers(1, 6), min_size=1, max_size=30))
    gaps = data.draw(st.lists(st.integers(0, 3), min_size=len(widths), max_size=len(widths)))
    starts, ends, at = [], [], 0
    for w, g in zip(widths, gaps, strict=True):
        at += g
        starts.append(at)
        at += w
        ends.append(at)
    s = data.draw(st.integers(0, at - 1))
    e = data.draw(st.integers(s + 1, at))
    first, last = spans.char_to_token_spans(np.array(starts), np.array(ends), np.array([s]), np.array([e]))
    overlapping = [i for i in range(len(starts)) if starts[i] < e and ends[i] > s]
    if overlapping:
        assert (first[0], last[0]) == (overlapping[0], overlapping[-1] + 1)
    else:
        assert first[0] >= last[0]
    tokens = np.arange(len(starts) * 3, dtype=np.float32).reshape(-1, 3) ** 1.5
    a = data.draw(st.integers(0, len(starts) - 1))
    b = data.draw(st.integers(a + 1, len(starts)))
    np.testing.assert_allclose(
        spans.span_means(tokens, np.array([a]), np.array([b]))[0], tokens[a:b].mean(0), rtol=1e-5
    )


def test_word_and_sentence_spans():
    text = 'Hello there.  Is it? Yes!\n\nNew paragraph without a stop\n\n  Last one... "Quoted." end'
    ws, we = spans.word_spans(text)
    assert [text[s:e] for s, e in zip(ws, we, strict=True)] == text.split()
    found = [text[s:e] for s, e in spans.sentence_spans(text).tolist()]
    assert found == [
        "Hello there.",
        "Is it?",
        "Yes!",
        "New paragraph without a stop",
        "Last one...",
        '"Quoted."',
        "end",
    ]
    assert spans.sentence_spans("").shape == (0, 2)
    assert spans.word_spans("   ")[0].shape == (0,)
