# SPDX-License-Identifier: Apache-2.0
"""EmbeddingEngine serving sparse, multi-vector and classifier models (issue 31 item 5): embed_sparse, embed_multi
and classify (and their async forms) equal SparseEncoder, MultiVectorEncoder and Classifier on the same files (the
model classes are checked against sentence-transformers, FlagEmbedding and transformers in tests/models/), dynamic
batching joins one-text requests of one output and never another output's, the kind of a model is found from its
files or given, and a call of the wrong kind names the model.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from embellama import (
    Classifier,
    ConfigurationError,
    EmbeddingEngine,
    EngineConfig,
    InvalidInputError,
    ModelConfig,
    MultiVectorEncoder,
    SparseEmbedding,
    SparseEncoder,
)
from embellama._engine.base import model_kind
from embellama._engine.calls import output_call
from tests.support import classify_models, sparse_models

TEXTS = sparse_models.texts()[:12]


def _config(path, name, **kwargs) -> ModelConfig:
    # compute_type "off": the F32 files as they are, as the model classes' tests run them; one thread (shared CPU)
    return ModelConfig(model_path=path, model_name=name, compute_type="off", n_threads=1, **kwargs)


@pytest.fixture(scope="module")
def files(library):
    return {
        "splade": sparse_models.ensure("splade") / "model.F32.gguf",
        "bge": sparse_models.ensure("bge-m3") / "model.F32.gguf",
        "bert3": classify_models.ensure("bert3").gguf,
    }


@pytest.fixture(scope="module")
def engine(files):
    config = EngineConfig(max_batch_wait_ms=30)
    models = [
        _config(files["splade"], "splade"),  # a heads file with an MLM head: a sparse encoder by itself
        _config(files["bge"], "bge"),  # bge-m3: dense by default
        _config(files["bge"], "bge-sparse", extra={"kind": "sparse"}),
    ]
    with EmbeddingEngine(config, models=models) as engine:
        engine.load_model(_config(files["bge"], "bge-colbert"), kind="multi_vector")
        engine.load_model(_config(files["bert3"], "bert3"), kind="classifier")
        yield engine


def _same_sparse(got: list[SparseEmbedding], want: list[SparseEmbedding], atol: float = 0.0) -> None:
    """The same vectors: bit for bit computed in the same llama.cpp calls (``atol`` 0), else within ``atol`` (a
    text's hidden states move in the last bits with the texts sharing its call; a weight within ``atol`` of zero
    may then be in one set and not the other)."""
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert isinstance(a, SparseEmbedding) and len(a) > 0 and a.dim == b.dim
        if atol == 0:
            np.testing.assert_array_equal(a.indices, b.indices)
            np.testing.assert_array_equal(a.values, b.values)
        else:
            np.testing.assert_allclose(a.to_dense(), b.to_dense(), rtol=0, atol=atol)
            assert set(a.indices[a.values > atol].tolist()) <= set(b.indices.tolist())


def test_kinds_found_from_files_or_given(engine, files):
    kinds = {name: engine.info(name)["kind"] for name in engine.models}
    assert kinds == {
        "splade": "sparse",
        "bge": "embedding",
        "bge-sparse": "sparse",
        "bge-colbert": "multi_vector",
        "bert3": "classifier",
    }
    assert model_kind(ModelConfig(model_path=files["bert3"])) == "reranker"  # a cross-encoder file, no kind given
    info = engine.info("bert3")
    assert info["labels"] == ["negative", "neutral", "positive"] and info["num_labels"] == 3
    assert engine.info("splade")["sparse_kind"] == "splade" and engine.info("bge-sparse")["sparse_kind"] == "bge-m3"
    assert engine.info("bge-colbert")["embedding_dimensions"] == 64
    with pytest.raises(ConfigurationError, match="unknown kind 'dense'.*expected one of"):
        model_kind(ModelConfig(model_path=files["bge"]), "dense")


@pytest.mark.parametrize("name", ["splade", "bge-sparse"])
def test_embed_sparse_equals_sparse_encoder(engine, files, name):
    path = files["splade" if name == "splade" else "bge"]
    with SparseEncoder(_config(path, name)) as enc:
        want = enc.encode(TEXTS)
        want_one = enc.encode(TEXTS[:1])  # llama.cpp's vectors move with the texts sharing a call: the same calls
        want_query = enc.encode_query(TEXTS[:3])
        want_pruned = enc.encode(TEXTS[:3], max_active_dims=5)
    _same_sparse(engine.embed_sparse(TEXTS, model=name), want)
    one = engine.embed_sparse(TEXTS[0], model=name)
    _same_sparse([one], want_one)
    _same_sparse(engine.embed_sparse(TEXTS[:3], model=name, is_query=True), want_query)
    pruned = engine.embed_sparse(TEXTS[:3], model=name, max_active_dims=5)
    _same_sparse(pruned, want_pruned)
    assert all(len(e) <= 5 for e in pruned) and any(len(e) > 5 for e in want[:3])
    assert list(one.to_dict()) == list(want_one[0].to_dict())


def test_embed_multi_equals_multivector_encoder(engine, files):
    with MultiVectorEncoder(_config(files["bge"], "bge-colbert")) as enc:
        docs = enc.encode_document(TEXTS)
        queries = enc.encode_query(TEXTS[:4])
        ranked = enc.rank(TEXTS[0], TEXTS)
    got = engine.embed_multi(TEXTS, model="bge-colbert")
    got_queries = engine.embed_multi(TEXTS[:4], model="bge-colbert", is_query=True)
    for a, b in zip([*got, *got_queries], [*docs, *queries], strict=True):
        assert a.shape == b.shape and a.dtype == np.float32
        cos = np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert float(cos.min()) >= 0.9999
    scores = enc.maxsim(engine.embed_multi(TEXTS[0], model="bge-colbert", is_query=True), got)
    assert [int(i) for i in np.argsort(-scores, kind="stable")] == [r["corpus_id"] for r in ranked]


def test_classify_equals_classifier_and_transformers(engine, files):
    texts = classify_models.texts()[:40]
    with Classifier(_config(files["bert3"], "bert3")) as model:
        probs = model.predict(texts)
        top = model.predict(texts, top_k=2)
    logits = engine.classify(texts, model="bert3", raw=True)
    reference = classify_models.ensure("bert3").logits()[:40]  # transformers' logits on the same weights
    assert logits.shape == (40, 3) and float(np.abs(logits - reference).max()) <= 1e-3
    np.testing.assert_allclose(engine.classify(texts, model="bert3"), probs, rtol=1e-5, atol=1e-6)
    got_top = engine.classify(texts, model="bert3", top_k=2)
    assert [[d["label"] for d in row] for row in got_top] == [[d["label"] for d in row] for row in top]
    one = engine.classify(texts[0], model="bert3", top_k=1)  # alone in its call: within llama.cpp's rounding
    assert one[0]["label"] == top[0][0]["label"] and one[0]["score"] == pytest.approx(top[0][0]["score"], abs=1e-3)


def test_concurrent_requests_join_one_output_only(engine, files):
    with SparseEncoder(_config(files["bge"], "x")) as enc:
        want = enc.encode(TEXTS)
    with Classifier(_config(files["bert3"], "y")) as model:
        probs = model.predict(TEXTS)
    before = engine.stats()

    async def run():
        sparse = [engine.aembed_sparse(t, model="bge-sparse") for t in TEXTS]
        labels = [engine.aclassify(t, model="bert3") for t in TEXTS]
        multi = [engine.aembed_multi(t, model="bge-colbert") for t in TEXTS]
        return await asyncio.gather(*sparse, *labels, *multi)

    out = asyncio.run(run())
    n = len(TEXTS)
    _same_sparse(out[:n], want, atol=1e-3)
    np.testing.assert_allclose(np.stack(out[n : 2 * n]), probs, rtol=1e-4, atol=1e-6)
    assert all(isinstance(m, np.ndarray) and m.ndim == 2 for m in out[2 * n :])
    after = engine.stats()
    assert after["joined_calls"] > before["joined_calls"] and after["pending"] == 0
    replicas = engine._model("bge-sparse")
    keys = {output_call(replicas, o, ["a"], {"x": 1}).parts[0].key[0] for o in ("embed_sparse", "embed_multi")}
    assert keys == {"embed_sparse", "embed_multi"}  # the join key starts with the output: never mixed


def test_wrong_kind_and_bad_input_name_the_model(engine):
    with pytest.raises(
        ConfigurationError, match="model 'bge' is an embedding model, not a sparse encoder: it gives one dense"
    ):
        engine.embed_sparse(TEXTS, model="bge")
    with pytest.raises(
        ConfigurationError, match="model 'bge-sparse' is a sparse encoder, not a classifier.*kind='classifier'"
    ):
        engine.classify(TEXTS, model="bge-sparse")
    with pytest.raises(
        ConfigurationError, match="model 'bert3' is a classifier, not an embedding model: it gives single texts' label"
    ):
        engine.embed_batch(TEXTS, model="bert3")
    with pytest.raises(
        ConfigurationError, match=r"model 'bge-colbert' is a multi-vector \(ColBERT\) encoder, not a reranker"
    ):
        engine.rerank("q", ["d"], model="bge-colbert")
    with pytest.raises(InvalidInputError, match=r"model 'bge-sparse'.*non-empty str.*#1"):
        engine.embed_sparse(["a", ""], model="bge-sparse")
    with pytest.raises(InvalidInputError, match="model 'bert3'.*no texts"):
        engine.classify([], model="bert3")
    with pytest.raises(ConfigurationError, match="top_k must be a positive int"):
        engine.classify(TEXTS, model="bert3", top_k=0)
    with pytest.raises(ConfigurationError, match="max_active_dims must be a positive int"):
        engine.embed_sparse(TEXTS, model="splade", max_active_dims=-1)
