# SPDX-License-Identifier: Apache-2.0
"""LlamaIndex: a VectorStoreIndex (its default in-memory store), fed by EmbellamaEmbedding, retrieves numpy's
top-k over ``embed_batch`` vectors (sync and async); EmbellamaRerank orders nodes as ``Reranker.rank``."""

from __future__ import annotations

import asyncio

import pytest

from embellama import ConfigurationError, InvalidInputError
from tests.integrations.conftest import K, assert_rank_order, assert_same_top_k, assert_same_vectors, top_k

pytest.importorskip("llama_index.core")
from llama_index.core import VectorStoreIndex
from llama_index.core.schema import NodeWithScore, TextNode

from embellama.integrations.llama_index import EmbellamaEmbedding, EmbellamaRerank


@pytest.fixture(scope="module")
def embed_model(engine):
    return EmbellamaEmbedding(engine=engine, model_name="minilm")


@pytest.fixture(scope="module")
def index(embed_model, texts):
    docs, _ = texts
    return VectorStoreIndex(nodes=[TextNode(text=d, id_=str(i)) for i, d in enumerate(docs)], embed_model=embed_model)


def test_vectors_have_the_query_and_text_prompts(embed_model, texts, reference):
    docs, queries = texts
    assert_same_vectors(embed_model.get_text_embedding_batch(docs[:12]), reference["docs"][:12])
    assert_same_vectors(embed_model.get_text_embedding(docs[3]), reference["docs"][3])
    assert_same_vectors(embed_model.get_query_embedding(queries[0]), reference["queries"][0])
    assert_same_vectors(asyncio.run(embed_model.aget_query_embedding(queries[1])), reference["queries"][1])
    assert_same_vectors(asyncio.run(embed_model.aget_text_embedding(docs[5])), reference["docs"][5])
    assert_same_vectors(asyncio.run(embed_model.aget_text_embedding_batch(docs[:4])), reference["docs"][:4])
    assert embed_model.model_name == "minilm" and embed_model.class_name() == "EmbellamaEmbedding"


def test_vector_store_index_retrieves_numpys_top_k(index, texts, reference):
    _, queries = texts
    retriever = index.as_retriever(similarity_top_k=K)
    for q, query in enumerate(queries):
        assert_same_top_k([int(hit.node.node_id) for hit in retriever.retrieve(query)], top_k(reference, q))


def test_async_retrieval_and_an_index_built_async(embed_model, texts, reference):
    docs, queries = texts

    async def search() -> list[list[int]]:
        nodes = [TextNode(text=d, id_=str(i)) for i, d in enumerate(docs)]
        index = VectorStoreIndex(nodes=nodes, embed_model=embed_model, use_async=True)
        retriever = index.as_retriever(similarity_top_k=K)
        hits = await asyncio.gather(*(retriever.aretrieve(query) for query in queries))
        return [[int(hit.node.node_id) for hit in row] for row in hits]

    for q, found in enumerate(asyncio.run(search())):
        assert_same_top_k(found, top_k(reference, q))


def test_an_embedding_of_its_own_from_a_model_config(embedder_config, texts, reference):
    docs, queries = texts
    own = EmbellamaEmbedding(embedder_config)
    assert_same_vectors(own.get_text_embedding_batch(docs[:6]), reference["docs"][:6])
    assert_same_vectors(own.get_query_embedding(queries[4]), reference["queries"][4])
    own.close()


def test_rerank_orders_as_reranker_rank(engine, reranker, rerank_cases):
    post = EmbellamaRerank(engine=engine, model_name="bert", top_n=4)
    for query, docs in rerank_cases:
        nodes = [NodeWithScore(node=TextNode(text=d, id_=str(i)), score=0.5) for i, d in enumerate(docs)]
        expected = reranker.rank(query, docs, top_k=4)
        for got in (
            post.postprocess_nodes(nodes, query_str=query),
            asyncio.run(post.apostprocess_nodes(nodes, query_str=query)),
        ):
            assert_rank_order([n.node.get_content() for n in got], [n.score for n in got], expected, docs)
            assert [int(n.node.node_id) for n in got] == [row["corpus_id"] for row in expected]
    assert nodes[0].score == 0.5  # the input is left alone
    assert post.postprocess_nodes([], query_str="q") == []
    with pytest.raises(InvalidInputError, match="no query"):
        post.postprocess_nodes(nodes)
    with pytest.raises(ConfigurationError, match="needs a reranker"):
        EmbellamaRerank(engine=engine, model_name="minilm")
