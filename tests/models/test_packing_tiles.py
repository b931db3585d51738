# SPDX-License-Identifier: Apache-2.0
"""Calls laid out by attention tiles on the CPU: the tile is the loaded libllama's, and results do not change.

The unit tests (tests/unit/test_packing_tiles.py) check the layout itself; here it runs through llama.cpp,
pads and all, against the plain length packing and a text embedded alone.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import pytest

from embellama import EmbeddingModel, ModelConfig, PoolingStrategy, get_library
from embellama._compute.packing import TileLayout, pack_tiles
from embellama._models.base import SHORT_CALL_TOKENS
from tests.support.texts import generated


def test_the_tile_is_the_one_the_loaded_librarys_kernel_uses(library):
    source = Path(get_library().manifest["source"]["directory"])  # the llama.cpp this libllama was built from
    common = (source / "ggml" / "src" / "ggml-cpu" / "common.h").read_text(encoding="utf-8")
    sizes = dict(re.findall(r"#define GGML_FA_TILE_(Q|KV)\s+(\d+)", common))
    tile = get_library().caps.cpu_attention_tile
    assert sizes == {"Q": str(tile), "KV": str(tile)}
    ops = (source / "ggml" / "src" / "ggml-cpu" / "ops.cpp").read_text(encoding="utf-8")
    assert "ggml_compute_forward_flash_attn_ext_tiled" in ops and "can_skip" in ops  # whole masked tiles skipped


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """Texts of 3 to about 250 tokens, and a few longer ones that go one per call."""
    rng = random.Random(7)
    short = generated(150, seed=21)
    long = [" ".join(generated(rng.randint(4, 8), seed=100 + i)) for i in range(6)]
    mixed = short + long
    rng.shuffle(mixed)
    return mixed


@pytest.fixture(scope="module")
def model(minilm_f16):
    # The file's F16 weights (compute_type "off"), the same on every CPU. (compute_type "bf16" would turn the
    # last-bit differences of another attention tile order into ~1e-5 of cosine, through its 8-bit mantissa.)
    with EmbeddingModel(ModelConfig(model_path=minilm_f16, n_threads=2, compute_type="off")) as m:
        yield m


def _embed(model: EmbeddingModel, texts: list[str], layout: TileLayout | None, **kw) -> object:
    saved = model._layout
    model._layout = layout
    try:
        return model.embed_batch(texts, **kw)
    finally:
        model._layout = saved


def test_the_cpu_lays_out_by_tiles_and_flash_attention_off_does_not(model, minilm_f16):
    assert model._layout == TileLayout(get_library().caps.cpu_attention_tile, SHORT_CALL_TOKENS)
    with EmbeddingModel(ModelConfig(model_path=minilm_f16, n_threads=2, flash_attn=False, compute_type="off")) as dense:
        assert dense._layout is None


def test_the_layout_pads_and_the_vectors_do_not_change(model, texts):
    lengths = np.array([len(model.tokenize(t)) for t in texts])
    calls = pack_tiles(lengths, model._layout, model.context.n_seq_max)
    assert any((c < 0).any() for c in calls)  # the corpus does need pads between bins
    tiled = _embed(model, texts, model._layout)
    plain = _embed(model, texts, None)
    assert (tiled * plain).sum(1).min() >= 0.99999
    alone = np.stack([model.embed(t) for t in texts[:30]])  # no neighbours, no pads
    assert (tiled[:30] * alone).sum(1).min() >= 0.99999


@pytest.mark.parametrize("pooling", ["max", "none"])  # mean_sqrt shares max's path (numpy over the tokens)
def test_poolings_numpy_does_skip_the_pads(minilm_f16, texts, pooling):
    with EmbeddingModel(ModelConfig(model_path=minilm_f16, n_threads=2, pooling=pooling, compute_type="off")) as m:
        tiled = _embed(m, texts, m._layout)
        plain = _embed(m, texts, None)
    if PoolingStrategy(pooling) is PoolingStrategy.NONE:
        assert [t.shape for t in tiled] == [p.shape for p in plain]
        rows = np.concatenate([(t * p).sum(1) for t, p in zip(tiled, plain, strict=True)])
        assert rows.min() >= 0.9999
    else:
        assert (tiled * plain).sum(1).min() >= 0.99999
