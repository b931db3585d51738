# SPDX-License-Identifier: Apache-2.0
"""LangChain: its InMemoryVectorStore, fed by EmbellamaEmbeddings, finds numpy's top-k over ``embed_batch``
vectors (sync and async); EmbellamaReranker orders documents as ``Reranker.rank``."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from embellama import ConfigurationError, EmbeddingEngine, EngineConfig, InvalidInputError, ResourceClosedError
from tests.integrations.conftest import K, assert_rank_order, assert_same_top_k, assert_same_vectors, differs, top_k

langchain_core = pytest.importorskip("langchain_core")
from langchain_core.documents import Document  # noqa: E402
from langchain_core.vectorstores import InMemoryVectorStore  # noqa: E402

from embellama.integrations.langchain import EmbellamaEmbeddings, EmbellamaReranker  # noqa: E402


@pytest.fixture(scope="module")
def embeddings(engine):
    return EmbellamaEmbeddings(engine=engine, model_name="minilm")


def test_vectors_have_the_query_and_document_prompts(embeddings, texts, reference):
    docs, queries = texts
    assert_same_vectors(embeddings.embed_documents(docs[:20]), reference["docs"][:20])
    assert_same_vectors(embeddings.embed_query(queries[0]), reference["queries"][0])
    assert_same_vectors(asyncio.run(embeddings.aembed_query(queries[1])), reference["queries"][1])
    assert_same_vectors(asyncio.run(embeddings.aembed_documents(docs[:3])), reference["docs"][:3])
    assert differs(reference["docs"][:20], reference["plain"])  # the prompt shows in the vectors
    assert embeddings.embed_documents([]) == []


def test_in_memory_vector_store_finds_numpys_top_k(embeddings, texts, reference):
    docs, queries = texts
    store = InMemoryVectorStore(embedding=embeddings)
    store.add_texts(docs, ids=[str(i) for i in range(len(docs))])
    for q, query in enumerate(queries):
        found = [int(d.id) for d in store.similarity_search(query, k=K)]
        assert_same_top_k(found, top_k(reference, q))


def test_async_store_finds_the_same(embeddings, texts, reference):
    docs, queries = texts

    async def search() -> list[list[int]]:
        store = InMemoryVectorStore(embedding=embeddings)
        await store.aadd_texts(docs, ids=[str(i) for i in range(len(docs))])
        hits = await asyncio.gather(*(store.asimilarity_search(query, k=K) for query in queries))
        return [[int(d.id) for d in row] for row in hits]

    for q, found in enumerate(asyncio.run(search())):
        assert_same_top_k(found, top_k(reference, q))


def test_concurrent_async_queries_are_joined_by_the_engines_dynamic_batching(embedder_config, texts, reference):
    _, queries = texts
    config = EngineConfig(max_batch_texts=64, max_batch_wait_ms=20)
    with EmbeddingEngine(config, models=[embedder_config]) as engine:
        embeddings = EmbellamaEmbeddings(engine=engine)

        async def ask() -> list[list[float]]:
            return await asyncio.gather(*(embeddings.aembed_query(q) for q in queries * 4))

        vectors = asyncio.run(ask())
        assert engine.stats()["joined_calls"] >= 1  # several queries shared a llama.cpp call
    assert_same_vectors(vectors, np.tile(reference["queries"], (4, 1)))


def test_an_embeddings_of_its_own_from_a_path(embedder_config, texts, reference):
    docs, queries = texts
    with EmbellamaEmbeddings(
        str(embedder_config.model_path),
        model_kwargs={"prompts": embedder_config.prompts, "n_threads": 1, "compute_type": "off"},
    ) as own:
        assert_same_vectors(own.embed_documents(docs[:8]), reference["docs"][:8])
        assert_same_vectors(own.embed_query(queries[2]), reference["queries"][2])
    with pytest.raises(ResourceClosedError, match="closed"):
        own.embed_query("x")


def test_reranker_orders_as_reranker_rank(engine, reranker, rerank_cases):
    compressor = EmbellamaReranker(engine=engine, model_name="bert", top_n=5)
    for query, docs in rerank_cases:
        documents = [Document(page_content=d, metadata={"i": i}) for i, d in enumerate(docs)]
        expected = reranker.rank(query, docs, top_k=5)
        for got in (
            compressor.compress_documents(documents, query),
            asyncio.run(compressor.acompress_documents(documents, query)),
        ):
            texts = [d.page_content for d in got]
            assert_rank_order(texts, [d.metadata["relevance_score"] for d in got], expected, docs)
            assert [d.metadata["i"] for d in got] == [row["corpus_id"] for row in expected]
    assert (
        len(EmbellamaReranker(engine=engine, model_name="bert", top_n=None).compress_documents(documents, query)) == 20
    )
    assert compressor.compress_documents([], "q") == []
    assert "relevance_score" not in documents[0].metadata  # the input is left alone


def test_bad_settings_and_inputs_raise_specific_errors(engine, embedder_config):
    with pytest.raises(ConfigurationError, match="not both"):
        EmbellamaEmbeddings(embedder_config, engine=engine)
    with pytest.raises(ConfigurationError, match="not both"):
        EmbellamaEmbeddings()
    with pytest.raises(ConfigurationError, match="needs an embedding model; model 'bert' is a reranker"):
        EmbellamaEmbeddings(engine=engine, model_name="bert")
    with pytest.raises(ConfigurationError, match="needs a reranker .*'minilm' is an embedding model"):
        EmbellamaReranker(engine=engine, model_name="minilm")
    with pytest.raises(ConfigurationError, match="no model 'nope'"):
        EmbellamaEmbeddings(engine=engine, model_name="nope")
    with pytest.raises(ConfigurationError, match="not colour"):
        EmbellamaEmbeddings(embedder_config, model_kwargs={"colour": 1})
    with pytest.raises(ConfigurationError, match="top_n"):
        EmbellamaReranker(engine=engine, model_name="bert", top_n=0)
    with pytest.raises(InvalidInputError, match="empty"):
        EmbellamaEmbeddings(engine=engine, model_name="minilm").embed_documents(["fine", ""])
