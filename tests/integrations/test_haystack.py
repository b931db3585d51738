# SPDX-License-Identifier: Apache-2.0
"""Haystack: an InMemoryDocumentStore filled by EmbellamaDocumentEmbedder and searched by its
InMemoryEmbeddingRetriever after EmbellamaTextEmbedder finds numpy's top-k over ``embed_batch`` vectors;
EmbellamaRanker orders documents as ``Reranker.rank``; every component survives to_dict/from_dict."""

from __future__ import annotations

import asyncio

import pytest

from embellama import ConfigurationError
from tests.integrations.conftest import K, assert_rank_order, assert_same_top_k, assert_same_vectors, top_k

pytest.importorskip("haystack")
from haystack import Document, Pipeline
from haystack.components.retrievers.in_memory import InMemoryEmbeddingRetriever
from haystack.document_stores.in_memory import InMemoryDocumentStore

from embellama.integrations.haystack import (
    EmbellamaDocumentEmbedder,
    EmbellamaRanker,
    EmbellamaTextEmbedder,
)

MODULE = "embellama.integrations.haystack"


@pytest.fixture(scope="module")
def store(engine, texts):
    docs, _ = texts
    embedder = EmbellamaDocumentEmbedder(engine=engine, model_name="minilm", progress_bar=False, batch_size=64)
    embedded = embedder.run([Document(id=str(i), content=d) for i, d in enumerate(docs)])["documents"]
    store = InMemoryDocumentStore(embedding_similarity_function="cosine")
    store.write_documents(embedded)
    return store


def _pipeline(text_embedder: EmbellamaTextEmbedder, store: InMemoryDocumentStore) -> Pipeline:
    pipeline = Pipeline()
    pipeline.add_component("embedder", text_embedder)
    pipeline.add_component("retriever", InMemoryEmbeddingRetriever(store, top_k=K))
    pipeline.connect("embedder.embedding", "retriever.query_embedding")
    return pipeline


def test_the_retriever_finds_numpys_top_k(engine, store, texts, reference):
    _, queries = texts
    pipeline = _pipeline(EmbellamaTextEmbedder(engine=engine, model_name="minilm"), store)
    for q, query in enumerate(queries):
        hits = pipeline.run({"embedder": {"text": query}})["retriever"]["documents"]
        assert_same_top_k([int(d.id) for d in hits], top_k(reference, q))


def test_the_pipeline_serialized_and_loaded_again_finds_the_same(engine, store, texts, reference):
    _, queries = texts
    text = _pipeline(EmbellamaTextEmbedder(engine=engine, model_name="minilm"), store).dumps()
    assert "engine" not in text and "minilm" in text
    loaded = Pipeline.loads(text, allowed_modules=[MODULE])  # its embedder loads the model into an engine of its own
    embedder = loaded.get_component("embedder")
    assert embedder.to_dict() == EmbellamaTextEmbedder(engine=engine, model_name="minilm").to_dict()
    assert_same_vectors(embedder.run(queries[3])["embedding"], reference["queries"][3])
    embedder.close()


def test_vectors_and_meta_fields(engine, texts, reference, capfd):
    docs, queries = texts
    text_embedder = EmbellamaTextEmbedder(engine=engine, model_name="minilm")
    result = text_embedder.run(queries[0])
    assert result["meta"] == {"model": "minilm"}
    assert_same_vectors(result["embedding"], reference["queries"][0])
    assert_same_vectors(asyncio.run(text_embedder.run_async(queries[1]))["embedding"], reference["queries"][1])
    with pytest.raises(TypeError, match="EmbellamaDocumentEmbedder"):
        text_embedder.run([Document(content="x")])

    embedder = EmbellamaDocumentEmbedder(
        engine=engine, model_name="minilm", meta_fields_to_embed=["title", "year"], embedding_separator=" | "
    )
    inputs = [Document(content=docs[0], meta={"title": "Cats", "year": 2024}), Document(content=docs[1], meta={})]
    out = embedder.run(inputs)["documents"]
    assert "2/2" in capfd.readouterr().err  # progress_bar (the default): a tqdm bar on stderr
    expected = engine.encode_document([f"Cats | 2024 | {docs[0]}", docs[1]], model="minilm")
    assert_same_vectors([d.embedding for d in out], expected)
    assert [d.meta for d in out] == [d.meta for d in inputs] and inputs[0].embedding is None  # copies
    again = asyncio.run(embedder.run_async(inputs))["documents"]
    assert_same_vectors([d.embedding for d in again], expected)
    with pytest.raises(TypeError, match="EmbellamaTextEmbedder"):
        embedder.run("a string")


def test_components_round_trip_through_to_dict(engine, embedder_config, texts, reference):
    docs, _ = texts
    embedder = EmbellamaDocumentEmbedder(
        embedder_config, batch_size=7, progress_bar=False, meta_fields_to_embed=["title"], prefix=""
    )
    data = embedder.to_dict()
    assert data["type"] == f"{MODULE}.EmbellamaDocumentEmbedder"
    params = data["init_parameters"]
    assert params["model"] == str(embedder_config.model_path) and params["model_name"] == "minilm"
    assert params["model_kwargs"] == {"n_threads": 1, "compute_type": "off", "prompts": embedder_config.prompts}
    assert params["batch_size"] == 7 and params["meta_fields_to_embed"] == ["title"]
    rebuilt = EmbellamaDocumentEmbedder.from_dict(data)
    assert rebuilt.to_dict() == data
    rebuilt.warm_up()
    vectors = [d.embedding for d in rebuilt.run([Document(content=t) for t in docs[:5]])["documents"]]
    assert_same_vectors(vectors, reference["docs"][:5])
    rebuilt.close()

    ranker = EmbellamaRanker(engine=engine, model_name="bert", top_k=3, score_threshold=0.1)
    assert EmbellamaRanker.from_dict(ranker.to_dict()).to_dict() == ranker.to_dict()
    assert ranker.to_dict()["init_parameters"]["model_kwargs"] == {"n_threads": 1, "compute_type": "off"}


def test_ranker_orders_as_reranker_rank(engine, reranker, rerank_cases):
    ranker = EmbellamaRanker(engine=engine, model_name="bert", top_k=6)
    for query, docs in rerank_cases:
        documents = [Document(id=str(i), content=d) for i, d in enumerate(docs)]
        expected = reranker.rank(query, docs, top_k=6)
        for got in (
            ranker.run(query, documents)["documents"],
            asyncio.run(ranker.run_async(query, documents))["documents"],
        ):
            assert_rank_order([d.content for d in got], [d.score for d in got], expected, docs)
            assert [int(d.id) for d in got] == [row["corpus_id"] for row in expected]
    assert documents[0].score is None  # copies
    assert len(ranker.run(query, documents, top_k=2)["documents"]) == 2
    cut = reranker.rank(query, docs)[3]["score"]
    kept = ranker.run(query, documents, top_k=20, score_threshold=cut)["documents"]
    assert len(kept) >= 4 and all(d.score >= cut for d in kept)
    assert ranker.run(query, [])["documents"] == []
    with pytest.raises(ConfigurationError, match="top_k"):
        ranker.run(query, documents, top_k=0)
    with pytest.raises(ConfigurationError, match="needs a reranker"):
        EmbellamaRanker(engine=engine, model_name="minilm")
