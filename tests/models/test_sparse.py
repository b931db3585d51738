# SPDX-License-Identifier: Apache-2.0
"""SparseEncoder against sentence-transformers' SparseEncoder (a tiny random BertForMaskedLM SPLADE) and
FlagEmbedding's bge-m3 sparse rule (a tiny random XLM-R with a random sparse_linear), the sparse type's exports.

Two comparisons each: the heads alone, on the token vectors llama.cpp computed (numpy's heads against torch's
BertLMPredictionHead + SpladePooling's rule, and torch's ReLU(sparse_linear) with a max per
token id: the same non-zero set, values within 1e-4 relative), and end to end against the references computed
on transformers' own hidden states (llama.cpp's graph differs from torch's in the last bits of each layer: the
same non-zero set but for weights within 1e-2 of zero, values within 2e-2 absolute).
"""

from __future__ import annotations

import numpy as np
import pytest

from embellama import ModelConfig, SparseEmbedding, SparseEncoder
from embellama._exceptions import ConfigurationError, InvalidInputError
from embellama._models.sparse import sparse_to_coo
from tests.support import sparse_models

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def splade():
    folder = sparse_models.ensure("splade")
    with SparseEncoder(ModelConfig(model_path=folder / "model.F32.gguf", compute_type="off")) as enc:
        yield enc, folder


@pytest.fixture(scope="module")
def bge():
    folder = sparse_models.ensure("bge-m3")
    with SparseEncoder(ModelConfig(model_path=folder / "model.F32.gguf", compute_type="off")) as enc:
        yield enc, folder


def _hidden(enc, texts):
    ids = [enc.model.tokenize(t) for t in texts]
    return ids, enc.model.embed_token_ids(ids)


def test_splade_head_matches_torch(splade):
    from safetensors.torch import load_file

    enc, folder = splade
    texts = sparse_models.texts()
    _, hidden = _hidden(enc, texts)
    w = load_file(folder / "hf" / "model.safetensors")
    p = "cls.predictions."
    decoder = w.get(f"{p}decoder.weight", w["bert.embeddings.word_embeddings.weight"])

    def mlm_head(h):  # transformers' BertLMPredictionHead: dense, GELU (erf), LayerNorm, tied decoder
        x = torch.nn.functional.linear(h, w[f"{p}transform.dense.weight"], w[f"{p}transform.dense.bias"])
        x = torch.nn.functional.gelu(x)
        x = torch.nn.functional.layer_norm(
            x, x.shape[-1:], w[f"{p}transform.LayerNorm.weight"], w[f"{p}transform.LayerNorm.bias"], 1e-12
        )
        return torch.nn.functional.linear(x, decoder, w[f"{p}bias"])

    got = np.stack([e.to_dense() for e in enc.encode(texts)])
    with torch.no_grad():
        for i, h in enumerate(hidden):
            logits = mlm_head(torch.from_numpy(h))
            ref = torch.log1p(torch.relu(logits)).amax(dim=0).numpy()  # SpladePooling("max", "relu")
            np.testing.assert_array_equal(np.nonzero(ref > 1e-6)[0], np.nonzero(got[i] > 1e-6)[0])
            np.testing.assert_allclose(got[i], ref, rtol=1e-4, atol=1e-5)


def test_splade_end_to_end_matches_sentence_transformers(splade):
    enc, _ = splade
    ref = sparse_models.reference("splade")["dense"]
    got = np.stack([e.to_dense() for e in enc.encode(sparse_models.texts())])
    clear = (ref > 1e-2) | (got > 1e-2)
    np.testing.assert_array_equal(ref[clear] > 0, got[clear] > 0)
    np.testing.assert_allclose(got, ref, atol=2e-2)
    assert ((ref > 0) != (got > 0)).sum() <= 1e-3 * (ref > 0).sum()


def test_bge_m3_head_matches_flagembedding_rule(bge):
    enc, folder = bge
    texts = sparse_models.texts()
    ids, hidden = _hidden(enc, texts)
    state = torch.load(folder / "hf" / "sparse_linear.pt", weights_only=True)
    linear = torch.nn.Linear(state["weight"].shape[1], 1)
    linear.load_state_dict(state)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder / "hf")
    unused = {tok.cls_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id}
    for e, row, h in zip(enc.encode(texts), ids, hidden, strict=True):
        with torch.no_grad():
            weights = torch.relu(linear(torch.from_numpy(h)))[:, 0].tolist()
        best: dict[int, float] = {}
        for t, w in zip(row.tolist(), weights, strict=True):
            if t not in unused and w > 0:
                best[t] = max(best.get(t, 0.0), w)
        assert e.indices.tolist() == sorted(best)
        np.testing.assert_allclose(e.values, [best[k] for k in sorted(best)], rtol=1e-4)


def test_bge_m3_end_to_end_matches_reference(bge):
    enc, _ = bge
    ref = sparse_models.reference("bge-m3")
    bounds = np.concatenate([[0], np.cumsum(ref["lengths"])])
    for i, e in enumerate(enc.encode(sparse_models.texts())):
        np.testing.assert_array_equal(e.indices, ref["ids"][bounds[i] : bounds[i + 1]])
        np.testing.assert_allclose(e.values, ref["weights"][bounds[i] : bounds[i + 1]], atol=2e-3)


def test_sparse_type_exports(splade):
    enc, _ = splade
    texts = sparse_models.texts()[:6]
    embs = enc.encode(texts)
    one = enc.encode(texts[0])
    assert isinstance(one, SparseEmbedding)
    np.testing.assert_array_equal(one.indices, embs[0].indices)
    dense = np.stack([e.to_dense() for e in embs])
    np.testing.assert_allclose(enc.similarity(embs, embs), dense @ dense.T, rtol=1e-5)
    assert abs(embs[0].dot(embs[1]) - float(dense[0] @ dense[1])) < 1e-3
    rows, cols, values, shape = sparse_to_coo(embs)
    rebuilt = np.zeros(shape, np.float32)
    rebuilt[rows, cols] = values
    np.testing.assert_array_equal(rebuilt, dense)
    scipy_sparse = pytest.importorskip("scipy.sparse")
    matrix = embs[0].to_scipy()
    assert isinstance(matrix, scipy_sparse.csr_array) and matrix.shape == (1, enc.dimension)
    words = one.to_dict()
    assert len(words) == len(one) and all(not w.startswith("\u2581") for w in words)
    top = enc.decode(one, top_k=3)
    assert [w for w, _ in top] == [enc.vocabulary[i] for i in one.indices[np.argsort(-one.values)[:3]]]
    pruned = enc.encode(texts, max_active_dims=16)
    for full, cut in zip(embs, pruned, strict=True):
        assert len(cut) == 16
        np.testing.assert_allclose(np.sort(cut.values), np.sort(full.values)[-16:])


def test_bge_m3_drops_special_tokens(bge):
    enc, _ = bge
    special = enc.special_ids()
    assert special and all(not set(e.indices.tolist()) & special for e in enc.encode(sparse_models.texts()))


def test_errors(splade, bge, tmp_path):
    enc, _ = splade
    with pytest.raises(InvalidInputError, match="index 1|1"):
        enc.encode(["ok", ""])
    with pytest.raises(ConfigurationError, match="heads"):
        SparseEncoder(ModelConfig(model_path=tmp_path / "none.gguf"))
    with pytest.raises(ConfigurationError, match="mlm"):
        SparseEncoder(bge[0].config, kind="splade")
    with pytest.raises(ConfigurationError, match="max_active_dims"):
        SparseEncoder(enc.config, max_active_dims=0)


def test_long_texts_are_cut_with_a_count_or_refused(splade):
    import dataclasses

    from embellama import TruncationWarning

    enc, _ = splade
    long_text = "cat " * 700
    with pytest.warns(TruncationWarning, match=r"1 of 2 text\(s\) exceeded max_tokens \(512\)") as caught:
        cut = enc.encode(["short text", long_text])
    warning = caught[0].message
    assert isinstance(warning, TruncationWarning) and (warning.texts, warning.tokens) == (1, 702 - 512)
    assert len(cut) == 2 and len(cut[1]) > 0
    strict = SparseEncoder(dataclasses.replace(enc.config, truncate=False))
    with strict, pytest.raises(InvalidInputError, match="702 tokens; the limit is 512"):
        strict.encode(["short text", long_text])
