# SPDX-License-Identifier: Apache-2.0
"""Ollama's API on ``embellama serve`` (issue 30) with the ``ollama`` client, and one running server answering the
``ollama``, ``openai`` and ``huggingface_hub`` clients with the vectors of ``embed_batch``, their requests joined by
the one engine's dynamic batching.

One server for the module: MiniLM (the default model) and a BERT cross-encoder.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import ollama
import openai
import pytest
from huggingface_hub import InferenceClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embellama import EmbeddingModel, ModelConfig
from tests.server.test_serve import _JSON, KEY, TEXTS, WAIT, Server, _metric, _reranker_config


@pytest.fixture(scope="module")
def server(minilm_f16, tmp_path_factory):
    config = tmp_path_factory.mktemp("ollama") / "models.json"
    config.write_text(json.dumps({"models": [_reranker_config("bert")]}))
    options = ["--api-key", KEY, "--max-inputs", "32", "--max-batch-wait-ms", "2", "--threads", "1"]
    srv = Server(str(minilm_f16), "--model-name", "minilm", "--config", str(config), *options)
    yield srv
    assert srv.stop() == 0, "".join(srv.stderr)[-3000:]


@pytest.fixture(scope="module")
def client(server):
    return ollama.Client(host=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=WAIT)


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=WAIT) as c:
        yield c


@pytest.fixture(scope="module")
def reference(minilm_f16):
    with EmbeddingModel(ModelConfig(model_path=minilm_f16)) as model:
        return model.embed_batch(TEXTS)


def test_ollama_client_embed_equals_embed_batch(client, reference):
    result = client.embed(model="minilm", input=TEXTS[:8])
    got = np.asarray(result.embeddings, dtype=np.float32)
    assert got.shape == (8, 384) and float(np.min(np.sum(got * reference[:8], axis=1))) >= 0.9999
    assert result.model == "minilm" and result.prompt_eval_count > 8
    one = client.embed(model="minilm:latest", input=TEXTS[3])  # Ollama's default tag names the same model
    assert float(np.asarray(one.embeddings[0]) @ reference[3]) >= 0.9999
    short = client.embed(model="minilm", input=TEXTS[:4], dimensions=32)
    short = np.asarray(short.embeddings, dtype=np.float32)
    cut = reference[:4, :32] / np.linalg.norm(reference[:4, :32], axis=1, keepdims=True)  # truncate_dim
    np.testing.assert_allclose(np.linalg.norm(short, axis=1), 1, rtol=1e-5)
    assert float(np.min(np.sum(short * cut, axis=1))) >= 0.999
    legacy = client.embeddings(model="minilm", prompt=TEXTS[5])  # the legacy /api/embeddings
    assert float(np.asarray(legacy.embedding) @ reference[5]) >= 0.9999
    assert client.embeddings(model="minilm", prompt="").embedding == []  # Ollama's answer to an empty prompt


def test_ollama_client_errors(server, client):
    with pytest.raises(ollama.ResponseError) as info:
        client.embed(model="nope", input="x")
    assert info.value.status_code == 404 and "not found" in info.value.error
    with pytest.raises(ollama.ResponseError) as info:
        client.embed(model="bert", input="x")
    assert info.value.status_code == 400 and "does not support embeddings" in info.value.error
    with pytest.raises(ollama.ResponseError) as info:
        client.embed(model="minilm", input=" ".join(TEXTS * 3), truncate=False)
    assert info.value.status_code == 400 and "the limit is 512" in info.value.error
    long = client.embed(model="minilm", input=" ".join(TEXTS * 3))  # truncate defaults to true
    assert len(long.embeddings[0]) == 384
    with pytest.raises(ollama.ResponseError) as info:
        ollama.Client(host=server.url, timeout=WAIT).embed(model="minilm", input="x")  # no key
    assert info.value.status_code == 401


def test_ollama_client_lists_and_shows_the_models(client, http):
    listed = client.list()
    assert [m.model for m in listed.models] == ["minilm:latest", "bert:latest"]
    assert listed.models[0].details.family == "bert" and listed.models[0].details.format == "gguf"
    assert listed.models[0].size > 10_000_000 and listed.models[0].details.quantization_level == "F16"
    shown = client.show("minilm")
    assert shown.capabilities == ["embedding"]
    assert shown.modelinfo["bert.embedding_length"] == 384 and shown.modelinfo["bert.context_length"] == 512
    assert client.show("bert").capabilities == ["rerank"]
    assert http.get("/api/version").json()["version"]
    assert http.get("/").text == "Ollama is running"


def test_three_clients_one_server_the_vectors_of_embed_batch(server, client, reference):
    """The ollama, openai and huggingface_hub clients, from threads at once: each gets embed_batch's vectors, and
    the engine joins requests of different APIs into shared llama.cpp calls."""
    oa = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=WAIT)
    hf = InferenceClient(base_url=server.url, api_key=KEY, timeout=WAIT)
    calls = {
        "ollama": lambda i: client.embed(model="minilm", input=TEXTS[i]).embeddings[0],
        "openai": lambda i: oa.embeddings.create(model="minilm", input=TEXTS[i]).data[0].embedding,
        "tei": lambda i: hf.feature_extraction(TEXTS[i])[0],
    }
    with httpx.Client(base_url=server.url, timeout=WAIT) as anonymous:
        joined_before = _metric(anonymous, "embellama_engine_joined_requests_total")
    barrier = threading.Barrier(12)

    def one(k):
        api, i = sorted(calls)[k % 3], k % len(TEXTS)
        barrier.wait(WAIT)
        return api, i, np.asarray(calls[api](i), dtype=np.float32)

    with ThreadPoolExecutor(12) as pool:
        results = [f.result(WAIT) for f in [pool.submit(one, k) for k in range(48)]]
    for api, i, vector in results:
        assert float(vector @ reference[i]) >= 0.9999, (api, i)
    assert {api for api, _, _ in results} == set(calls)
    with httpx.Client(base_url=server.url, timeout=WAIT) as anonymous:
        assert _metric(anonymous, "embellama_engine_joined_requests_total") > joined_before


_BODIES = {
    "/api/embed": {
        "model": st.sampled_from(["minilm", "minilm:latest", "bert", "nope"]) | _JSON,
        "input": st.text(max_size=30) | st.lists(st.text(max_size=20), max_size=4) | _JSON,
        "truncate": st.booleans() | _JSON,
        "dimensions": st.integers(-1, 400) | _JSON,
        "keep_alive": _JSON,
        "options": _JSON,
    },
    "/api/embeddings": {"model": st.sampled_from(["minilm", "bert"]) | _JSON, "prompt": st.text(max_size=30) | _JSON},
    "/api/show": {"model": st.sampled_from(["minilm", "bert", "nope"]) | _JSON, "name": _JSON},
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), path=st.sampled_from(sorted(_BODIES)))
def test_any_body_on_an_ollama_route_gets_an_answer_or_an_ollama_4xx(http, data, path):
    body = data.draw(st.fixed_dictionaries({}, optional=_BODIES[path]) | _JSON)
    response = http.post(path, content=json.dumps(body).encode())
    assert response.status_code in (200, 400, 404, 413), response.text
    if response.status_code != 200:
        assert set(response.json()) == {"error"} and isinstance(response.json()["error"], str)
    elif path == "/api/embed":
        inputs = body["input"]
        assert len(response.json()["embeddings"]) == (1 if isinstance(inputs, str) else len(inputs))
    assert http.get("/health").status_code == 200


def test_guide_apis_example(server):
    """The guide's example (docs/guide/apis.md), pointed at this test's server."""
    from tests.docs import examples

    code = examples.section(examples.DOCS / "guide/apis.md", "TEI's, Ollama's and llama-server's APIs")
    code = code.replace("http://127.0.0.1:8080", server.url).replace("sk-my-key", KEY)
    assert examples.run(code, "docs/guide/apis.md").split("\n")[:2] == ["1 384", "(1, 384)"]
