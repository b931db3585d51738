# SPDX-License-Identifier: Apache-2.0
"""MultiVectorEncoder against FlagEmbedding's ColBERT rule (bge-m3: colbert_linear on every token but CLS,
normalized) computed by torch on transformers' hidden states of a tiny random XLM-R: per-token cos >= 0.9999 and
the same MaxSim rankings; the ColBERT style (markers, [MASK] query augmentation, the skiplist) on a heads file
written for the same model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from embellama import ModelConfig, MultiVectorEncoder
from embellama._compute.heads import maxsim_matrix
from embellama._exceptions import ConfigurationError
from tests.support import sparse_models


@pytest.fixture(scope="module")
def bge():
    folder = sparse_models.ensure("bge-m3")
    with MultiVectorEncoder(ModelConfig(model_path=folder / "model.F32.gguf", compute_type="off")) as enc:
        yield enc


@pytest.fixture(scope="module")
def reference():
    ref = sparse_models.reference("bge-m3")
    bounds = np.concatenate([[0], np.cumsum(ref["colbert_lengths"])])
    return [ref["colbert"][bounds[i] : bounds[i + 1]] for i in range(len(bounds) - 1)]


def test_token_vectors_match_flagembedding(bge, reference):
    got = bge.encode(sparse_models.texts())
    assert bge.style == "bge-m3" and bge.dimension == reference[0].shape[1]
    for mine, ref in zip(got, reference, strict=True):
        assert mine.shape == ref.shape
        cos = np.sum(mine * ref, axis=1) / np.linalg.norm(mine, axis=1) / np.linalg.norm(ref, axis=1)
        assert cos.min() >= 0.9999
        np.testing.assert_allclose(np.linalg.norm(mine, axis=1), 1.0, rtol=1e-5)


def test_maxsim_rankings_match(bge, reference):
    texts = sparse_models.texts()
    queries = bge.encode_query(texts[:10])
    docs = bge.encode_document(texts)
    scores = bge.maxsim(queries, docs)
    want = maxsim_matrix(reference[:10], reference, reduce="mean")  # FlagEmbedding's colbert_score: the mean
    np.testing.assert_allclose(scores, want, atol=1e-3)
    np.testing.assert_array_equal(np.argsort(-scores, axis=1)[:, :10], np.argsort(-want, axis=1)[:, :10])
    apart = np.abs(want[:, :, None] - want[:, None, :]) > 1e-3  # every pair of documents not within rounding
    same = np.sign(scores[:, :, None] - scores[:, None, :]) == np.sign(want[:, :, None] - want[:, None, :])
    assert same[apart].all()
    ranked = bge.rank(texts[3], texts, top_k=5)
    assert [r["corpus_id"] for r in ranked] == np.argsort(-want[3])[:5].tolist()
    assert ranked[0]["score"] >= ranked[-1]["score"]


def test_colbert_style_markers_expansion_and_skiplist(bge, tmp_path):
    folder = sparse_models.ensure("bge-m3")
    shutil.copy(folder / "model.F32.gguf", tmp_path / "colbert.gguf")
    with np.load(folder / "model.F32.heads.npz") as data:
        arrays = {k: data[k] for k in data.files if k != "meta"}
    meta = {"format": 1, "heads": ["colbert"], "colbert": {
        "style": "colbert", "skip_first": False, "normalize": True, "score": "sum", "query_prefix": "the",
        "document_prefix": "a", "query_length": 16, "document_length": 12, "do_query_expansion": True,
        "skiplist_words": [",", "!", "?", "("]}}  # fmt: skip
    np.savez(tmp_path / "colbert.heads.npz", meta=np.array(json.dumps(meta)), **arrays)
    with MultiVectorEncoder(ModelConfig(model_path=tmp_path / "colbert.gguf", compute_type="off")) as enc:
        llama = enc.model.model
        mask = int(llama.metadata_value("tokenizer.ggml.mask_token_id"))
        text = "Hello, world!"
        plain = enc.model.tokenize(text)
        assert len(plain) + len(llama.tokenize("the", add_special=False)) < 16
        marker = llama.tokenize("the", add_special=False)
        query_ids = np.concatenate([plain[:1], marker, plain[1:]])
        query_ids = np.concatenate([query_ids, np.full(16 - len(query_ids), mask)])
        want = enc.model.embed_token_ids([query_ids])[0] @ arrays["colbert.weight"].T + arrays["colbert.bias"]
        query = enc.encode_query(text)
        assert query.shape == (16, enc.dimension)  # padded with [MASK] to query_length
        np.testing.assert_allclose(query, want / np.linalg.norm(want, axis=1, keepdims=True), atol=1e-5)
        text = "Hello, world! (yes) -- ok?"
        plain = enc.model.tokenize(text)
        doc = enc.encode_document(text)
        skip = {int(llama.tokenize(w, add_special=False)[0]) for w in meta["colbert"]["skiplist_words"]}
        doc_ids = np.concatenate([plain[:1], llama.tokenize("a", add_special=False), plain[1:]])
        doc_ids = np.concatenate([doc_ids[:11], doc_ids[-1:]])  # cut to document_length, the last token kept
        assert len(doc) == int((~np.isin(doc_ids, list(skip))).sum()) < len(doc_ids)
        assert enc.maxsim(query, [doc])[0] == pytest.approx(float((query @ doc.T).max(axis=1).sum()), rel=1e-5)


def test_errors(tmp_path):
    folder = sparse_models.ensure("splade")
    shutil.copy(folder / "model.F32.gguf", tmp_path / "m.gguf")
    shutil.copy(folder / "model.F32.heads.npz", tmp_path / "m.heads.npz")
    with pytest.raises(ConfigurationError, match="ColBERT projection"):
        MultiVectorEncoder(ModelConfig(model_path=tmp_path / "m.gguf"))
    meta = {"format": 1, "heads": ["colbert"], "colbert": {"style": "colbert", "activation": "torch.nn.GELU"}}
    arrays = {"colbert.weight": np.eye(4, dtype=np.float32), "colbert.bias": np.zeros(4, np.float32)}
    np.savez(tmp_path / "m.heads.npz", meta=np.array(json.dumps(meta)), **arrays)
    with pytest.raises(ConfigurationError, match="activation 'gelu' is not supported"):
        MultiVectorEncoder(ModelConfig(model_path=tmp_path / "m.gguf"))
