# SPDX-License-Identifier: Apache-2.0
"""Chroma: a collection embedded by EmbellamaEmbeddingFunction finds numpy's top-k over ``embed_batch`` vectors,
and a persistent one reopened by a new client rebuilds the function from its stored config and finds the same."""

from __future__ import annotations

import pytest

from embellama import ConfigurationError
from tests.integrations.conftest import K, assert_same_top_k, assert_same_vectors, top_k

chromadb = pytest.importorskip("chromadb")
from chromadb.api.client import SharedSystemClient  # noqa: E402

from embellama.integrations.chroma import EmbellamaEmbeddingFunction  # noqa: E402

# HNSW searches approximately: a wide search makes it exact on 200 vectors
HNSW = {"hnsw": {"ef_construction": 200, "ef_search": 200}}


def _search(collection, queries: list[str]) -> list[list[int]]:
    hits = collection.query(query_texts=queries, n_results=K)
    return [[int(i) for i in row] for row in hits["ids"]]


def test_vectors_have_the_query_and_document_prompts(engine, texts, reference):
    docs, queries = texts
    ef = EmbellamaEmbeddingFunction(engine=engine, model_name="minilm")
    assert_same_vectors(ef(docs[:10]), reference["docs"][:10])
    assert_same_vectors(ef.embed_query(queries[:2]), reference["queries"][:2])
    assert ef.name() == "embellama" and ef.default_space() == "cosine"
    assert not ef.is_legacy()


def test_ephemeral_collection_finds_numpys_top_k(engine, texts, reference):
    docs, queries = texts
    client = chromadb.EphemeralClient()
    ef = EmbellamaEmbeddingFunction(engine=engine, model_name="minilm")
    collection = client.create_collection("sts-ephemeral", embedding_function=ef, configuration=HNSW)
    collection.add(ids=[str(i) for i in range(len(docs))], documents=docs)
    for q, found in enumerate(_search(collection, queries)):
        assert_same_top_k(found, top_k(reference, q))
    client.delete_collection("sts-ephemeral")


def test_persistent_collection_reopened_rebuilds_the_function(embedder_config, texts, reference, tmp_path):
    docs, queries = texts
    ef = EmbellamaEmbeddingFunction(embedder_config)
    client = chromadb.PersistentClient(path=str(tmp_path))
    collection = client.create_collection("sts", embedding_function=ef, configuration=HNSW)
    collection.add(ids=[str(i) for i in range(len(docs))], documents=docs)
    before = _search(collection, queries)
    ef.close()
    del client, collection
    SharedSystemClient.clear_system_cache()  # a new client reads the collection from disk

    reopened = chromadb.PersistentClient(path=str(tmp_path)).get_collection("sts")  # no embedding function given
    rebuilt = reopened.configuration["embedding_function"]
    assert isinstance(rebuilt, EmbellamaEmbeddingFunction) and rebuilt is not ef
    assert (
        rebuilt.get_config()
        == ef.get_config()
        == {
            "model": str(embedder_config.model_path),
            "model_name": "minilm",
            "model_kwargs": {"n_threads": 1, "compute_type": "off", "prompts": embedder_config.prompts},
        }
    )
    for q, found in enumerate(_search(reopened, queries)):  # the same as before, near-ties aside
        assert_same_top_k(found, top_k(reference, q))
        assert_same_top_k(before[q], top_k(reference, q))
    rebuilt.close()
    SharedSystemClient.clear_system_cache()


def test_a_stored_config_is_checked(engine):
    with pytest.raises(ConfigurationError, match="needs a model path"):
        EmbellamaEmbeddingFunction.build_from_config({"model_name": "x"})
    with pytest.raises(ConfigurationError, match="unknown keys"):
        EmbellamaEmbeddingFunction.build_from_config({"model": "m.gguf", "colour": "red"})
    ef = EmbellamaEmbeddingFunction(engine=engine, model_name="minilm")
    other = dict(ef.get_config(), model_name="other")
    with pytest.raises(ConfigurationError, match="would not match"):
        ef.validate_config_update(ef.get_config(), other)
    ef.validate_config_update(ef.get_config(), ef.get_config())
