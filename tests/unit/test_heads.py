# SPDX-License-Identifier: Apache-2.0
"""embellama._compute.heads against plain numpy and Python references (no libllama, no torch): bge-m3's max per
token id, SPLADE pooling over blocks of texts, top-k pruning, MaxSim, the erf GELU; and the heads sidecar's
reading and writing (embellama._gguf.heads)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embellama._compute import heads
from embellama._exceptions import ConfigurationError
from embellama._gguf import heads as gguf_heads

lengths_st = st.lists(st.integers(1, 12), min_size=1, max_size=6)


@given(lengths_st, st.integers(0, 2**31 - 1))
@settings(max_examples=60, deadline=None)
def test_max_per_token_id_matches_a_dict(lengths, seed):
    rng = np.random.default_rng(seed)
    total = sum(lengths)
    ids = rng.integers(0, 8, total).astype(np.int32)
    weights = rng.normal(size=total).astype(np.float32)
    dropped = [0, 3]
    got = heads.max_per_token_id(ids, weights, np.array(lengths), dropped)
    start = 0
    for n, (gi, gv) in zip(lengths, got, strict=True):
        best: dict[int, float] = {}
        for t, w in zip(ids[start : start + n].tolist(), weights[start : start + n].tolist(), strict=True):
            if t not in dropped and w > 0:
                best[t] = max(best.get(t, 0.0), w)
        start += n
        assert gi.tolist() == sorted(best)
        np.testing.assert_allclose(gv, [best[k] for k in sorted(best)])


@given(lengths_st, st.integers(1, 30), st.sampled_from(["max", "sum"]), st.integers(0, 2**31 - 1))
@settings(max_examples=40, deadline=None)
def test_splade_pool_matches_per_text_numpy(lengths, block, pooling, seed):
    rng = np.random.default_rng(seed)
    h, v = 6, 20
    hidden = rng.normal(size=(sum(lengths), h)).astype(np.float32)
    args = dict(
        dense_w=rng.normal(size=(h, h)).astype(np.float32),
        dense_b=rng.normal(size=h).astype(np.float32),
        norm_w=rng.normal(size=h).astype(np.float32),
        norm_b=rng.normal(size=h).astype(np.float32),
        decoder_w=rng.normal(size=(v, h)).astype(np.float32),
        decoder_b=rng.normal(size=v).astype(np.float32) - 1,
    )
    got = heads.splade_pool(hidden, np.array(lengths), act="gelu", eps=1e-12, pooling=pooling, block_tokens=block,
                            **args)  # fmt: skip
    x = hidden @ args["dense_w"].T + args["dense_b"]
    x = 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
    x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-12) * args["norm_w"] + args["norm_b"]
    act = np.log1p(np.maximum(x @ args["decoder_w"].T + args["decoder_b"], 0))
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    for i in range(len(lengths)):
        part = act[bounds[i] : bounds[i + 1]]
        np.testing.assert_allclose(got[i], part.max(0) if pooling == "max" else part.sum(0), rtol=1e-5, atol=1e-5)


def test_gelu_erf_accuracy():
    x = np.linspace(-8, 8, 20001).astype(np.float32)
    ref = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(np.float64)])
    assert np.max(np.abs(heads.activation(x, "gelu") - ref)) < 1e-6


@given(st.integers(1, 10), st.integers(0, 2**31 - 1))
@settings(max_examples=30, deadline=None)
def test_top_k_prune_keeps_the_largest(k, seed):
    vectors = np.random.default_rng(seed).random((3, 12)).astype(np.float32)
    got = heads.top_k_prune(vectors, k)
    for row, out in zip(vectors, got, strict=True):
        keep = np.argsort(-row)[:k]
        assert set(np.nonzero(out)[0]) == set(keep.tolist())
        np.testing.assert_array_equal(out[keep], row[keep])


@given(st.lists(st.integers(1, 9), min_size=1, max_size=4), st.lists(st.integers(1, 9), min_size=1, max_size=5),
       st.sampled_from(["sum", "mean"]), st.integers(0, 2**31 - 1))  # fmt: skip
@settings(max_examples=40, deadline=None)
def test_maxsim_matrix_matches_pairwise(q_lens, d_lens, reduce, seed):
    rng = np.random.default_rng(seed)
    queries = [rng.normal(size=(n, 5)).astype(np.float32) for n in q_lens]
    docs = [rng.normal(size=(n, 5)).astype(np.float32) for n in d_lens]
    got = heads.maxsim_matrix(queries, docs, reduce=reduce)
    for i, q in enumerate(queries):
        for j, d in enumerate(docs):
            best = [max(float(qv @ dv) for dv in d) for qv in q]
            want = sum(best) if reduce == "sum" else sum(best) / len(best)
            assert got[i, j] == pytest.approx(want, rel=1e-4, abs=1e-4)
            assert heads.maxsim(q, d, reduce=reduce) == pytest.approx(want, rel=1e-4, abs=1e-4)


def _safetensors(path, tensors):
    """A safetensors file written by hand (F32), as torch's safetensors writes it."""
    header, blobs, offset = {}, [], 0
    for name, values in tensors.items():
        blob = np.ascontiguousarray(values, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(np.shape(values)), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + b"".join(blobs))


def test_heads_sidecar_round_trip(tmp_path):
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"architectures": ["XLMRobertaModel"]}))
    _safetensors(hf / "sparse_linear.safetensors", {"weight": np.ones((1, 4)), "bias": np.zeros(1)})
    _safetensors(hf / "colbert_linear.safetensors", {"weight": np.eye(4), "bias": np.zeros(4)})
    model = tmp_path / "m.F32.gguf"
    written = gguf_heads.write_heads(hf, model)
    assert written == tmp_path / "m.F32.heads.npz"
    loaded = gguf_heads.load_heads(model, who="m")
    assert loaded.names == ["sparse", "colbert"] and loaded.meta["colbert"]["style"] == "bge-m3"
    np.testing.assert_array_equal(loaded.arrays["colbert.weight"], np.eye(4))
    assert gguf_heads.write_heads(tmp_path, tmp_path / "x.gguf") is None  # no config, no heads
    with pytest.raises(ConfigurationError, match="no heads file"):
        gguf_heads.load_heads(tmp_path / "x.gguf", who="x")
    (tmp_path / "bad.heads.npz").write_bytes(b"not a zip")
    with pytest.raises(ConfigurationError, match="not a heads file"):
        gguf_heads.load_heads(tmp_path / "bad.gguf", who="bad")


def test_reads_a_masked_lm_head_with_its_tied_decoder(tmp_path):
    rng = np.random.default_rng(1)
    h, v = 4, 9
    tensors = {
        "bert.embeddings.word_embeddings.weight": rng.normal(size=(v, h)),
        "cls.predictions.transform.dense.weight": rng.normal(size=(h, h)),
        "cls.predictions.transform.dense.bias": rng.normal(size=h),
        "cls.predictions.transform.LayerNorm.weight": rng.normal(size=h),
        "cls.predictions.transform.LayerNorm.bias": rng.normal(size=h),
        "cls.predictions.bias": rng.normal(size=v),
    }
    _safetensors(tmp_path / "model.safetensors", tensors)
    config = {"architectures": ["BertForMaskedLM"], "hidden_act": "gelu", "layer_norm_eps": 1e-12}
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "1_SpladePooling").mkdir()
    (tmp_path / "1_SpladePooling" / "config.json").write_text(
        json.dumps({"pooling_strategy": "sum", "activation_function": "log1p_relu"})
    )
    found = gguf_heads.read_checkpoint_heads(tmp_path)
    assert found is not None and found.names == ["mlm"]
    assert found.meta["mlm"] == {"activation": "gelu", "eps": 1e-12, "tied": True}
    assert found.meta["splade"] == {"pooling_strategy": "sum", "activation_function": "log1p_relu"}
    np.testing.assert_allclose(found.arrays["mlm.decoder.weight"], tensors["bert.embeddings.word_embeddings.weight"])
    np.testing.assert_allclose(found.arrays["mlm.decoder.bias"], tensors["cls.predictions.bias"], rtol=1e-6)


def test_reads_a_colbert_dense_module_and_its_settings(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"},
    ]
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    (tmp_path / "1_Dense").mkdir()
    weight = np.arange(12.0).reshape(3, 4)
    _safetensors(tmp_path / "1_Dense" / "model.safetensors", {"linear.weight": weight})
    (tmp_path / "1_Dense" / "config.json").write_text(json.dumps({"in_features": 4, "out_features": 3}))
    settings = {"query_prefix": "[unused0]", "document_prefix": "[unused1]", "query_length": 32,
                "document_length": 180, "attend_to_expansion_tokens": False, "skiplist_words": ["!", ","]}  # fmt: skip
    (tmp_path / "config_sentence_transformers.json").write_text(json.dumps(settings))
    found = gguf_heads.read_checkpoint_heads(tmp_path)
    assert found is not None and found.names == ["colbert"]
    colbert = found.meta["colbert"]
    assert colbert["style"] == "colbert" and colbert["score"] == "sum"
    assert {k: colbert[k] for k in settings} == settings
    np.testing.assert_array_equal(found.arrays["colbert.weight"], weight)
    np.testing.assert_array_equal(found.arrays["colbert.bias"], np.zeros(3))
