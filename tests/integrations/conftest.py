# SPDX-License-Identifier: Apache-2.0
"""The framework adapters' fixtures: 200 STS sentences and a few queries, MiniLM with a query and a document
prompt (so that using the wrong one shows), the tiny BERT cross-encoder, one engine serving both, and the
references: numpy over ``EmbeddingModel.embed_batch`` vectors and ``Reranker.rank``."""

from __future__ import annotations

import numpy as np
import pytest

from embellama import EmbeddingEngine, EmbeddingModel, ModelConfig, Reranker

N_DOCS, N_QUERIES, K = 200, 6, 5
PROMPTS = {"query": "query: ", "document": "passage: "}


@pytest.fixture(scope="package")
def texts(sts) -> tuple[list[str], list[str]]:
    """200 distinct first sentences of the pairs (the documents) and the second sentences of a few (the queries)."""
    s1, s2, _ = sts
    docs, seen, partners = [], set(), []
    for i, sentence in enumerate(s1):
        if sentence not in seen:
            seen.add(sentence)
            docs.append(sentence)
            partners.append(s2[i])
        if len(docs) == N_DOCS:
            break
    return docs, partners[:: N_DOCS // N_QUERIES][:N_QUERIES]


@pytest.fixture(scope="package")
def embedder_config(minilm_f16) -> ModelConfig:
    return ModelConfig(model_path=minilm_f16, model_name="minilm", prompts=PROMPTS, n_threads=1, compute_type="off")


@pytest.fixture(scope="package")
def reranker_config() -> ModelConfig:
    from tests.support import rerank_models

    # the F32 file as it is, one thread: the server tests' settings
    path = rerank_models.ensure("bert").gguf("f32")
    return ModelConfig(model_path=path, model_name="bert", compute_type="off", n_threads=1)


@pytest.fixture(scope="package")
def engine(embedder_config, reranker_config):
    with EmbeddingEngine([embedder_config, reranker_config]) as engine:
        yield engine


@pytest.fixture(scope="package")
def reference(texts, embedder_config) -> dict[str, np.ndarray]:
    """``embed_batch`` vectors of the documents (document prompt) and the queries (query prompt), and the
    first 20 documents' vectors without a prompt (to show the prompts matter)."""
    docs, queries = texts
    with EmbeddingModel(embedder_config) as model:
        return {
            "docs": model.embed_batch(docs, prompt_name="document"),
            "queries": model.embed_batch(queries, prompt_name="query"),
            "plain": model.embed_batch(docs[:20], prompt=""),
        }


@pytest.fixture(scope="package")
def reranker(reranker_config):
    with Reranker(reranker_config) as model:
        yield model


@pytest.fixture(scope="package")
def rerank_cases() -> list[tuple[str, list[str]]]:
    """Three queries, each with its 20 candidate documents."""
    from tests.support import rerank_models

    queries, chosen, docs = rerank_models.pairs()
    return [(queries[q], [docs[j] for j in chosen[q]]) for q in (0, 7, 19)]


def top_k(reference: dict[str, np.ndarray], q: int, k: int = K) -> np.ndarray:
    """The numpy search: cosine scores of query ``q`` against every document (the vectors are L2-normalized)."""
    return reference["docs"] @ reference["queries"][q]


def assert_same_top_k(found: list[int], scores: np.ndarray, k: int = K) -> None:
    """``found`` (document indices, best first) is numpy's top-k: the same documents in the same order, where a
    swap is allowed only between documents whose numpy scores tie to 1e-4 (llama.cpp's vector of a text moves in
    the last bits with the texts sharing its call)."""
    order = np.argsort(-scores, kind="stable")[:k]
    assert len(found) == len(set(found)) == k, found
    np.testing.assert_allclose(scores[found], scores[order], atol=1e-4, err_msg=f"{found} vs numpy's {order.tolist()}")


def assert_same_vectors(got: object, expected: np.ndarray) -> None:
    """Row by row the same unit vectors to float rounding (cosine >= 0.99999): llama.cpp's F16 kernels round a
    text's vector differently with the texts sharing its call."""
    rows = np.atleast_2d(np.asarray(got, dtype=np.float64))
    want = np.atleast_2d(expected.astype(np.float64))
    assert rows.shape == want.shape, (rows.shape, want.shape)
    assert float(np.min(np.sum(rows * want, axis=1))) >= 0.99999


def differs(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two sets of unit vectors differ by more than rounding (some cosine under 0.999)."""
    return float(np.min(np.sum(a * b, axis=1))) < 0.999


def assert_rank_order(found: list[str], scores: list[float], expected: list[dict], docs: list[str]) -> None:
    """The reranked texts and scores are ``Reranker.rank``'s rows (texts by their index), to float rounding."""
    assert found == [docs[row["corpus_id"]] for row in expected]
    np.testing.assert_allclose(scores, [row["score"] for row in expected], atol=1e-6)
