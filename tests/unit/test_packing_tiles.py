# SPDX-License-Identifier: Apache-2.0
"""Packing by attention tiles (embellama._compute.packing.pack_tiles): every text once, none across a tile."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embellama._compute.packing import TileLayout, pack_tiles, plan_calls


def _layout_of(call: np.ndarray, lengths: np.ndarray) -> list[tuple[int, int, int]]:
    """(slot, start, length) of each slot of a call, in token order."""
    sizes = np.where(call >= 0, lengths[np.maximum(call, 0)], -call)
    starts = np.cumsum(sizes) - sizes
    return list(zip(call.tolist(), starts.tolist(), sizes.tolist(), strict=True))


@given(
    lengths=st.lists(st.integers(1, 700), max_size=300),
    tile=st.sampled_from([16, 32, 64]),
    tiles_per_call=st.integers(1, 8),
    extra_tiles=st.integers(0, 8),
    max_seqs=st.integers(1, 300),
)
@settings(max_examples=400, deadline=None)
def test_every_text_once_and_none_across_a_tile_boundary(lengths, tile, tiles_per_call, extra_tiles, max_seqs):
    arr = np.array(lengths, dtype=np.int64)
    layout = TileLayout(tile, tile * tiles_per_call)
    budget = tile * (tiles_per_call + extra_tiles)
    calls = pack_tiles(arr, layout, max_seqs, budget)
    texts = np.concatenate([c[c >= 0] for c in calls]) if calls else np.array([], dtype=np.intp)
    assert sorted(texts.tolist()) == list(range(len(lengths)))
    for call in calls:
        slots = _layout_of(call, arr)
        real = [s for s in slots if s[0] >= 0]
        assert real and slots[-1][0] >= 0  # a pad only ever separates texts
        longest = max(s[2] for s in real)
        if longest > budget:
            assert len(slots) == 1  # a text over the budget goes alone
            continue
        total = sum(s[2] for s in slots)
        # a call of short texts stays small; one led by a text over half of it may grow to the budget
        assert total <= (layout.call_tokens if longest <= tile * (tiles_per_call // 2) else budget)
        assert len(slots) <= max_seqs
        for slot, start, size in slots:
            if slot < 0:
                assert 0 < size < tile and (start + size) % tile == 0  # up to the boundary, no further
            elif size <= tile:
                assert start // tile == (start + size - 1) // tile, (slot, start, size)
            else:
                assert start % tile == 0  # a text over one tile starts on a boundary


def test_long_texts_share_a_call_where_two_fit():
    arr = np.array([250, 240, 300, 200])  # 4, 4, 5 and 4 tiles of 64
    calls = pack_tiles(arr, TileLayout(64, 256), 256, budget=512)
    assert sorted(len(c[c >= 0]) for c in calls) == [1, 1, 2]  # 4 + 4 tiles together; 5 with nothing of 4


def test_short_texts_fill_tiles_tightly():
    # 600 texts of 5-30 tokens: best-fit decreasing leaves little room unused in the bins.
    rng = np.random.default_rng(0)
    arr = rng.integers(5, 31, size=600)
    calls = pack_tiles(arr, TileLayout(64, 256), 256)
    pads = sum(int(-c[c < 0].sum()) for c in calls)
    assert pads < 0.02 * arr.sum()
    assert len(calls) <= int(np.ceil(arr.sum() / 256 * 1.05))


def test_a_layout_must_be_whole_tiles():
    with pytest.raises(ValueError, match="multiple of tile"):
        TileLayout(64, 100)


@given(lengths=st.lists(st.integers(1, 512), min_size=1, max_size=200), max_seqs=st.integers(1, 64))
@settings(max_examples=200, deadline=None)
def test_a_batchs_text_longer_than_a_short_call_gets_a_call_of_its_own(lengths, max_seqs):
    arr = np.array(lengths, dtype=np.int64)
    layout = TileLayout(64, 256)
    calls = plan_calls(arr, 512, max_seqs, layout)
    assert sorted(int(i) for call in calls for i in call if i >= 0) == list(range(len(lengths)))
    for call in calls:
        texts = call[call >= 0]
        if arr[texts].max() > layout.call_tokens:
            assert len(call) == 1  # alone: no second text, no pad
        else:
            assert arr[texts].sum() + (-call[call < 0]).sum() <= layout.call_tokens
