# SPDX-License-Identifier: Apache-2.0
"""Every Python example of the guide (docs/**/*.md) runs, with MODEL set to the test model, and prints what it says."""

from __future__ import annotations

import re

import pytest

from tests.docs import examples

EXAMPLES = {key: code for page in examples.guide_pages() for key, code in examples.examples(page).items()}

EXPECTED = {
    "index.md:embellama": ["(2, 384)"],
    "guide/embedding.md:One text, a few texts": ["(384,) (3, 384) 384 512"],
    "guide/embedding.md:Embed many texts: packing, progress, streaming": [
        "(1000, 384) (1000, 1000)",
        "[1000, 1000, 500]",
    ],
    "guide/embedding.md:Configure": ["PoolingStrategy.CLS (384,)"],
    "guide/embedding.md:Handle errors": [
        "model 'minilm': text is empty",
        "model 'minilm': expected str, got NoneType",
        "model 'minilm': text has 1002 tokens; the limit is 512",
        "model 'missing': model file not found: missing.gguf",
    ],
    "guide/engine.md:The engine: several models, many threads, asyncio": [
        "['minilm'] 384 3",
        "CacheInfo(hits=1, misses=1, maxsize=10000, currsize=1) True",
        "((384,), (2, 384))",
        "[(100, 384), (100, 384), (50, 384)]",
        "['minilm', 'cls'] cls 2",
    ],
    "guide/lowlevel.md:Tokens and the low-level classes": ["bert 384 30522 mean (101,)", "(2, 384)"],
    "guide/rerank.md:Rerank: cross-encoders": ["(3,) 1 sigmoid 2 ['corpus_id', 'score', 'text']"],
    "guide/long-documents.md:Truncation is counted": [
        "(2, 384) [  0 226] [  0 226]",
        "model 'minilm': 1 of 2 text(s) exceeded max_tokens (256) and were cut, losing 226 token(s) (text #1 lost 226)",
        "InvalidInputError model 'minilm': text has 482 tokens; the limit is 256",
    ],
    "guide/long-documents.md:Chunks: every token embedded": ["(1, 384) (10, 384) [128 128 128] [  0 581]"],
    "guide/long-documents.md:Late chunking: one pass, a vector per sentence": [
        "(3, 384) [[0, 33], [34, 60], [61, 95]]",
        "(2, 384) (3, 2)",
    ],
    "guide/sparse.md:Sparse vectors": ["splade 30522 SparseEmbedding int32 float32\n(1, 2)\n3 True\n[32, 32]"],
    "guide/sparse.md:Multi-vector: ColBERT and MaxSim": ["bge-m3 True 3\n(3,)\n['corpus_id', 'score']"],
    "guide/sparse.md:Serving: the engine, `embellama serve` and Ray": ["sparse multi_vector 2 2\n3 SparseEmbedding"],
    "guide/classify.md:Classify texts: sequence-classification heads": [
        "(3, 3) ('negative', 'neutral', 'positive') softmax 3 2 ['label', 'score']"
    ],
    "guide/embedding.md:Similarity and search": [
        "cosine (1, 3) [[0.6 0.  0.6]]\n(2,)\n['Kittens nap in the sun.', 'A cat sleeps on the sofa.']"
    ],
    "guide/lora.md:Tasks per call": ["['retrieval.passage', 'retrieval.query']", "(64,) (1, 64) True"],
    "guide/known-models.md:Which model a GGUF is": [
        "None {'query': '', 'document': ''}",
        "me/minilm-retrieval (by general.name 'minilm-l6-h384-uncased') from ",
        "query:  dot",
    ],
    "guide/prompts.md:Prompts and output types": [
        "{'query': 'query: ', 'document': '', 'passage': 'passage: '}",
        "(3, 128) [1. 1. 1.] uint8 (3, 48) int8",
    ],
    "guide/integrations/langchain.md:LangChain": [
        "['A cat sits on the mat.', 'Kittens sleep most of the day.']",
        "1 ['relevance_score']",
    ],
    "guide/integrations/llama_index.md:LlamaIndex": ["['A cat sits on the mat.', 'Kittens sleep most of the day.']\n1"],
    "guide/integrations/haystack.md:Haystack": [
        "['A cat sits on the mat.', 'Kittens sleep most of the day.'] 1",
        "EmbellamaTextEmbedder 1",
    ],
    "guide/integrations/chroma.md:Chroma": ["[['cat', 'kittens']]\nEmbellamaEmbeddingFunction\n[['cat']]"],
}

# Examples that need more than a model run where their fixtures are (a Ray cluster, a running server).
ELSEWHERE = {
    "guide/ray.md:Many machines: Ray Data": "tests/ray/test_ray.py::test_guide_ray_example",
    "guide/serve.md:Serve over HTTP: `embellama serve`": "tests/server/test_serve.py::test_guide_openai_example",
    "guide/hub.md:Load by name": "tests/hub/test_hub.py::test_guide_hub_example",
    "guide/apis.md:TEI's, Ollama's and llama-server's APIs": "tests/server/test_ollama.py::test_guide_apis_example",
}


def test_the_guide_has_its_examples():
    assert len(examples.guide_pages()) >= 10
    assert len(EXAMPLES) >= 10


def test_every_example_is_checked():
    assert sorted(EXAMPLES) == sorted([*EXPECTED, *ELSEWHERE])


@pytest.mark.parametrize("key", sorted(ELSEWHERE))
def test_the_examples_run_elsewhere_have_their_test(key):
    path, name = ELSEWHERE[key].split("::")
    source = (examples.REPO / path).read_text(encoding="utf-8")
    assert re.search(rf"^def {name}\(", source, re.M), f"{key}: {ELSEWHERE[key]} is missing"
    page, heading = key.split(":", 1)
    assert page in source and heading in source, f"{ELSEWHERE[key]} does not read {page}'s example {heading!r}"


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_guide_example(key, minilm_f16):
    names = {"MODEL": str(minilm_f16)}
    if "RERANKER" in EXAMPLES[key]:
        from tests.support import rerank_models

        names["RERANKER"] = str(rerank_models.ensure("bert").gguf("f16"))
    if "CLASSIFIER" in EXAMPLES[key]:
        from tests.support import classify_models

        names["CLASSIFIER"] = str(classify_models.ensure("bert3").gguf)
    if "SPLADE" in EXAMPLES[key] or "BGE_M3" in EXAMPLES[key]:
        from tests.support import sparse_models

        names["SPLADE"] = str(sparse_models.ensure("splade") / "model.F32.gguf")
        names["BGE_M3"] = str(sparse_models.ensure("bge-m3") / "model.F32.gguf")
    if "LORA_DIR" in EXAMPLES[key]:
        from tests.support import lora_models

        names["LORA_DIR"] = str(lora_models.ensure())
    printed = examples.run(EXAMPLES[key], f"docs/{key}", **names)
    for expected in EXPECTED[key]:
        assert expected in printed, f"{key}: {expected!r} not in {printed!r}"
