# SPDX-License-Identifier: Apache-2.0
"""nomic-embed-text v1.5's Matryoshka recipe: a layer norm (no affine, over the full vector) before ``truncate_dim``'s
cut, then L2. The MiniLM GGUF renamed ``nomic-embed-text-v1.5`` matches the table's entry; its vectors are compared
with torch's ``F.layer_norm`` and numpy on the raw pooled vectors of the same weights (the unrenamed GGUF)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from embellama import EmbeddingModel, ModelConfig
from embellama._compute import output as _output
from tests.models.test_known_defaults import renamed

TEXTS = ["What is TSNE?", "Who is Laurens van der Maaten?", "A cat sat on the mat.", "Stocks fell sharply today."]


def _config(path: Path, **kw: object) -> ModelConfig:
    return ModelConfig(model_path=path, n_threads=1, n_gpu_layers=0, compute_type="off", **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def nomic_gguf(minilm_f16, tmp_path_factory) -> Path:
    return renamed(minilm_f16, tmp_path_factory.mktemp("ln") / "named-nomic.gguf", "nomic-embed-text-v1.5")


@pytest.fixture(scope="module")
def raw(minilm_f16) -> np.ndarray:
    """The pooled vectors before any normalization, from the same weights under their own name."""
    with EmbeddingModel(_config(minilm_f16, normalize=False)) as model:
        assert model.known_model is None
        return np.asarray(model.embed_batch(TEXTS), dtype=np.float32)


def _torch_recipe(raw: np.ndarray, dim: int) -> np.ndarray:
    """The model card's code: F.layer_norm over the full vector, cut, F.normalize."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(raw.astype(np.float64))
    x = F.layer_norm(x, normalized_shape=(x.shape[1],))
    return F.normalize(x[:, :dim], p=2, dim=1).numpy()


@pytest.mark.parametrize("dim", [256, 128, 64])
def test_a_cut_follows_a_layer_norm_as_the_model_card_does(nomic_gguf, raw, dim):
    with EmbeddingModel(_config(nomic_gguf)) as model:
        assert model.known_model is not None and model.known_model.normalization == "layer_norm_before_truncate"
        batch = model.embed_batch(TEXTS, prompt="", truncate_dim=dim)
        one = model.embed(TEXTS[1], prompt="", truncate_dim=dim)
        encoded = model.encode(TEXTS, prompt="", truncate_dim=dim)
        chunked = model.embed_chunked(TEXTS, prompt="", truncate_dim=dim)
        full = model.embed_batch(TEXTS, prompt="")
    want = _torch_recipe(raw, dim)
    for got in (batch, encoded, chunked):
        assert got.shape == (len(TEXTS), dim)
        np.testing.assert_allclose(got, want, atol=2e-6)
    np.testing.assert_allclose(one, want[1], atol=2e-6)
    # the layer norm changes the cut vectors: a plain cut and L2 is measurably different
    plain_cut = raw[:, :dim] / np.linalg.norm(raw[:, :dim], axis=1, keepdims=True)
    assert float(np.abs(plain_cut - want).max()) > 1e-3
    # without a cut nothing is layer-normed: the model's own L2-normalized vectors
    np.testing.assert_allclose(full, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=2e-6)


def test_without_the_table_a_cut_is_plain(nomic_gguf, raw):
    with EmbeddingModel(_config(nomic_gguf, use_known_defaults=False, truncate_dim=128)) as model:
        got = model.embed_batch(TEXTS)
    cut = raw[:, :128]
    np.testing.assert_allclose(got, cut / np.linalg.norm(cut, axis=1, keepdims=True), atol=2e-6)


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 5), st.integers(2, 64)),
        elements=st.floats(-1e3, 1e3, width=32, allow_subnormal=False),
    )
)
def test_layer_norm_equals_torch(vectors):
    import torch
    import torch.nn.functional as F

    want = F.layer_norm(torch.from_numpy(vectors.astype(np.float64)), (vectors.shape[1],)).numpy()
    np.testing.assert_allclose(_output.layer_norm(vectors), want, rtol=1e-5, atol=1e-5)
