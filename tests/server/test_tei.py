# SPDX-License-Identifier: Apache-2.0
"""TEI's API on ``embellama serve`` (issue 30): ``huggingface_hub``'s ``InferenceClient(base_url=...)`` and a
framework's TEI client (Chroma's ``HuggingFaceEmbeddingServer``) against the real server, /embed_all against sentence-transformers' token embeddings, TEI's /rerank against ``Reranker.rank``,
TEI's error shape and status codes, and drawn bodies on every TEI route.

One server for the module: MiniLM (the default model) and a BERT cross-encoder.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from huggingface_hub import InferenceClient
from huggingface_hub.errors import HfHubHTTPError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embellama import EmbeddingModel, ModelConfig
from tests.server.test_serve import _JSON, KEY, TEXTS, WAIT, Server, _metric, _reranker_config
from tests.support.reference import reference_outputs

TEI_ERROR = {"error", "error_type"}


@pytest.fixture(scope="module")
def server(minilm_f16, tmp_path_factory):
    config = tmp_path_factory.mktemp("tei") / "models.json"
    config.write_text(json.dumps({"models": [_reranker_config("bert")]}))
    options = ["--api-key", KEY, "--max-inputs", "32", "--max-body-bytes", "100000", "--max-pending", "2"]
    srv = Server(str(minilm_f16), "--model-name", "minilm", "--config", str(config), "--threads", "1", *options)
    yield srv
    assert srv.stop() == 0, "".join(srv.stderr)[-3000:]


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=WAIT) as c:
        yield c


@pytest.fixture(scope="module")
def minilm(minilm_f16):
    with EmbeddingModel(ModelConfig(model_path=minilm_f16)) as model:
        yield model


@pytest.fixture(scope="module")
def reranker():
    from embellama import Reranker

    model = Reranker(ModelConfig(**_reranker_config("bert"))).load()
    yield model
    model.unload()


def _cosines(a, b):
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_inference_client_feature_extraction_equals_embed_batch(server, minilm):
    client = InferenceClient(base_url=server.url, api_key=KEY, timeout=WAIT)
    reference = minilm.embed_batch(TEXTS[:8])
    one = client.feature_extraction(TEXTS[0])  # posts {"inputs": ...} to POST /: TEI's route by model kind
    assert one.shape == (1, 384) and one.dtype == np.float32
    assert float(one[0] @ reference[0]) >= 0.9999
    many = client.feature_extraction(TEXTS[:8])
    assert many.shape == (8, 384) and float(np.min(np.sum(many * reference, axis=1))) >= 0.9999
    raw = client.feature_extraction(TEXTS[:8], normalize=False)  # the same directions, not unit length
    norms = np.linalg.norm(raw, axis=1)
    assert float(np.min(np.abs(norms - 1))) > 0.01 and float(np.min(_cosines(raw, reference))) >= 0.9999
    cut = client.feature_extraction(TEXTS[:8], dimensions=64)  # sentence-transformers' truncate_dim
    expected = reference[:, :64] / np.linalg.norm(reference[:, :64], axis=1, keepdims=True)
    np.testing.assert_allclose(cut, expected, atol=2e-4)
    query = client.feature_extraction(TEXTS[0], prompt_name="query")  # MiniLM's prompts are empty
    assert float(query[0] @ reference[0]) >= 0.9999
    with pytest.raises(HfHubHTTPError) as info:
        client.feature_extraction(TEXTS[0], prompt_name="nope")
    assert info.value.response.status_code == 422 and "prompt_name" in info.value.response.json()["error"]


def test_sentence_similarity_scores_with_the_models_own_function(server, http, minilm):
    """InferenceClient.sentence_similarity posts {"inputs": {"source_sentence", "sentences"}} to POST /; TEI's
    /similarity takes the same body. The scores are the model's similarity (cosine for MiniLM) of its vectors."""
    client = InferenceClient(base_url=server.url, api_key=KEY, timeout=WAIT)
    others = TEXTS[1:7]
    vectors = minilm.embed_batch([TEXTS[0], *others])
    expected = _cosines(np.repeat(vectors[:1], len(others), axis=0), vectors[1:])
    np.testing.assert_allclose(client.sentence_similarity(TEXTS[0], other_sentences=others), expected, atol=1e-4)
    direct = http.post("/similarity", json={"inputs": {"source_sentence": TEXTS[0], "sentences": others}})
    assert direct.status_code == 200
    np.testing.assert_allclose(direct.json(), expected, atol=1e-4)
    for bad in (
        {"inputs": "a text"},
        {"inputs": {"source_sentence": "a"}},
        {"inputs": {"source_sentence": "a", "sentences": []}},
        {"inputs": {"source_sentence": "a", "sentences": ["b", 3]}},
    ):
        answer = http.post("/similarity", json=bad)
        assert answer.status_code == 422 and "source_sentence" in answer.json()["error"], bad
    too_many = http.post("/similarity", json={"inputs": {"source_sentence": "a", "sentences": ["b"] * 33}})
    assert too_many.status_code == 413  # the server's --max-inputs 32


def test_chromas_tei_embedding_function_equals_embed_batch(server, minilm, monkeypatch):
    """A framework's TEI client: Chroma's HuggingFaceEmbeddingServer posts {"inputs": [...]} to /embed."""
    from chromadb.utils.embedding_functions.huggingface_embedding_function import HuggingFaceEmbeddingServer

    monkeypatch.delenv("HUGGINGFACE_API_KEY", raising=False)
    monkeypatch.setenv("EMBELLAMA_TEST_TEI_KEY", KEY)
    function = HuggingFaceEmbeddingServer(url=server.url + "/embed", api_key_env_var="EMBELLAMA_TEST_TEI_KEY")
    got = np.asarray(function(TEXTS[:6]), dtype=np.float32)
    assert got.shape == (6, 384)
    assert float(np.min(np.sum(got * minilm.embed_batch(TEXTS[:6]), axis=1))) >= 0.9999


def test_haystacks_tei_embedders_equal_embed_batch(server, minilm):
    """A framework's TEI client: Haystack's HuggingFaceAPITextEmbedder and HuggingFaceAPIDocumentEmbedder
    (api_type text_embeddings_inference) post to POST / and /embed through huggingface_hub's InferenceClient."""
    from haystack import Document
    from haystack.utils import Secret
    from haystack_integrations.components.embedders.huggingface_api import (
        HuggingFaceAPIDocumentEmbedder,
        HuggingFaceAPITextEmbedder,
    )

    params = {
        "api_type": "text_embeddings_inference",
        "api_params": {"url": server.url},
        "token": Secret.from_token(KEY),
    }
    reference = minilm.embed_batch(TEXTS[:6])
    text = HuggingFaceAPITextEmbedder(**params).run(TEXTS[0])["embedding"]
    assert len(text) == 384 and float(np.asarray(text, dtype=np.float32) @ reference[0]) >= 0.9999
    documents = [Document(content=t) for t in TEXTS[:6]]
    embedded = HuggingFaceAPIDocumentEmbedder(**params, batch_size=4, normalize=True).run(documents)["documents"]
    got = np.asarray([d.embedding for d in embedded], dtype=np.float32)
    assert got.shape == (6, 384) and float(np.min(np.sum(got * reference, axis=1))) >= 0.9999


def test_long_texts_are_cut_right_or_left_as_asked(http, minilm):
    text = " ".join(TEXTS * 3)  # ~700 tokens: over MiniLM's 512
    ids = minilm.model.tokenize(text)
    assert len(ids) > 600
    right = np.asarray([*ids[:511].tolist(), ids[-1]], dtype=np.int32)
    left = np.asarray([ids[0], *ids[len(ids) - 511 :].tolist()], dtype=np.int32)
    expected = minilm.embed_token_ids([right, left])
    for direction, row in (("Right", 0), ("left", 1)):
        body = {"inputs": [text], "truncate": True, "truncation_direction": direction}
        got = np.asarray(http.post("/embed", json=body).json(), dtype=np.float32)
        assert float(got[0] @ expected[row]) >= 0.9999, direction
    assert float(expected[0] @ expected[1]) < 0.99  # the two cuts differ


def test_text_classification_gets_424_not_a_classifier(server, http):
    client = InferenceClient(base_url=server.url, api_key=KEY, timeout=WAIT)
    with pytest.raises(HfHubHTTPError) as info:
        client.text_classification("I like it")
    assert info.value.response.status_code == 424
    assert info.value.response.json()["error_type"] == "backend"
    assert "not a classifier" in info.value.response.json()["error"]
    for path, body in (
        ("/predict", {"inputs": "I like it"}),
        ("/embed_sparse", {"inputs": "I like it"}),
        ("/embed_multi", {"inputs": "I like it"}),
    ):
        response = http.post(path, json=body)
        assert response.status_code == 424 and set(response.json()) == TEI_ERROR, response.text


def test_embed_all_equals_sentence_transformers_token_embeddings(http):
    texts = [*TEXTS[:4], "A much longer sentence, with punctuation; and several clauses (of different kinds)."]
    reference = reference_outputs(texts, "tei-embed-all", modes="mean")
    lengths = reference["ids_len"].tolist()
    got = http.post("/embed_all", json={"inputs": texts}).json()
    assert [len(m) for m in got] == lengths  # one vector per token, [CLS] and [SEP] included
    means = np.array([np.mean(np.asarray(m, dtype=np.float32), axis=0) for m in got])
    # mean pooling over the token vectors is sentence-transformers' un-normalized mean embedding
    assert float(np.min(_cosines(means, reference["emb_mean"]))) >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(means, axis=1), np.linalg.norm(reference["emb_mean"], axis=1), rtol=1e-2)
    one = http.post("/embed_all", json={"inputs": texts[0]}).json()
    np.testing.assert_allclose(np.asarray(one[0]), np.asarray(got[0]), atol=1e-4)


def test_tei_rerank_equals_reranker_rank(http, reranker):
    from tests.support import rerank_models

    queries, chosen, docs = rerank_models.pairs()
    for q in (0, 77):
        texts = [docs[j] for j in chosen[q]]
        body = {"model": "bert", "query": queries[q], "texts": texts}
        got = http.post("/rerank", json=body).json()
        expected = reranker.rank(queries[q], texts)
        assert [(r["index"], r["score"]) for r in got] == [(e["corpus_id"], e["score"]) for e in expected]
        raw = http.post("/rerank", json={**body, "raw_scores": True, "return_text": True}).json()
        logits = reranker.rank(queries[q], texts, activation="identity")
        assert [(r["index"], r["score"]) for r in raw] == [(e["corpus_id"], e["score"]) for e in logits]
        assert all(r["text"] == texts[r["index"]] for r in raw)
    # POST / with a reranker named: TEI's rerank
    via_root = http.post("/", json={"model": "bert", "query": queries[0], "texts": [docs[j] for j in chosen[0]]})
    assert via_root.status_code == 200 and len(via_root.json()) == len(chosen[0])
    # Jina's and Cohere's body still works on /rerank, in its own shape
    jina = http.post("/rerank", json={"model": "bert", "query": "q", "documents": ["a", "b"]}).json()
    assert jina["object"] == "list" and len(jina["results"]) == 2


def test_info_describes_the_model(http):
    info = http.get("/info").json()
    assert info["model_id"] == "minilm" and info["model_type"] == {"embedding": {"pooling": "mean"}}
    assert info["max_input_length"] == 512 and info["max_client_batch_size"] == 32 and info["auto_truncate"] is True
    bert = http.get("/info", params={"model": "bert"}).json()
    assert list(bert["model_type"]) == ["reranker"]


@pytest.mark.parametrize(
    ("path", "body", "status", "error_type", "fragment"),
    [
        ("/embed", b"{not json", 422, "validation", "not valid JSON"),
        ("/embed", {"input": "a"}, 422, "validation", "'inputs' is required"),
        ("/embed", {"inputs": 5}, 422, "validation", "'inputs' must be"),
        ("/embed", {"inputs": []}, 422, "validation", "'inputs' must be"),
        ("/embed", {"inputs": ["a", ""]}, 422, "tokenizer", "inputs[1]: text is empty"),
        ("/embed", {"inputs": ["a", 3]}, 422, "validation", "inputs[1] is int"),
        ("/embed", {"inputs": "a", "normalize": "yes"}, 422, "validation", "'normalize'"),
        ("/embed", {"inputs": "a", "dimensions": 0}, 422, "validation", "[1, 384]"),
        ("/embed", {"inputs": "a", "truncation_direction": "up"}, 422, "validation", "'Left' or 'Right'"),
        ("/embed", {"inputs": [1, 10**9]}, 422, "tokenizer", "token ids"),
        ("/embed", {"inputs": ["a"] * 33}, 413, "validation", "limit is 32"),
        ("/embed", {"inputs": "word " * 30_000}, 413, "validation", "over 100000 bytes"),
        ("/embed", {"inputs": "a", "model": "bert"}, 424, "backend", "is a reranker"),
        ("/embed", {"inputs": "a", "model": "nope"}, 422, "validation", "does not exist"),
        ("/embed_all", {"inputs": [""]}, 422, "tokenizer", "text is empty"),
        ("/rerank", {"query": "q", "texts": []}, 422, "validation", "'texts' must be"),
        ("/rerank", {"query": "q", "texts": ["a", ""]}, 422, "tokenizer", "texts[1]: text is empty"),
        ("/rerank", {"query": "q", "texts": ["a"], "raw_scores": 1}, 422, "validation", "'raw_scores'"),
        ("/rerank", {"query": "q", "texts": ["a"] * 33}, 413, "validation", "limit is 32"),
        ("/rerank", {"query": "q", "texts": ["a"], "model": "minilm"}, 424, "backend", "not a reranker"),
        ("/tokenize", {"inputs": 3}, 422, "validation", "'inputs' must be"),
        ("/decode", {"ids": "x"}, 422, "validation", "'ids' must be"),
        ("/decode", {"ids": [[1, -1]]}, 422, "tokenizer", "ids[0]"),
        ("/", {"inputs": ""}, 422, "tokenizer", "text is empty"),
    ],
)
def test_bad_bodies_get_tei_errors_with_tei_status_codes(http, path, body, status, error_type, fragment):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = http.post(path, content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert set(response.json()) == TEI_ERROR
    assert response.json()["error_type"] == error_type, response.text
    assert fragment in response.json()["error"], response.text


def test_tei_routes_need_the_key_and_count_in_the_metrics(server):
    with httpx.Client(base_url=server.url, timeout=WAIT) as anonymous:
        response = anonymous.post("/embed", json={"inputs": "a"})
        assert response.status_code == 401 and response.json()["error_type"] == "unauthorized"
        metrics = anonymous.get("/metrics").text
    assert 'embellama_requests_total{path="/embed",status="401"}' in metrics
    assert 'embellama_request_duration_seconds_count{path="/embed"}' in metrics


def test_a_full_engine_answers_429_with_retry_after(http):
    """max_pending 2: two heavy requests fill the engine; TEI's /embed then gets 429 (TEI's overloaded) and
    Ollama's /api/embed its 503, both with Retry-After."""
    long_texts = [f"text {i} " + "a long sentence with many words in it " * 60 for i in range(6)]
    refused = {}
    with ThreadPoolExecutor(2) as pool:
        for _ in range(3):
            heavy = [pool.submit(http.post, "/v1/embeddings", json={"input": long_texts}) for _ in range(2)]
            deadline = time.monotonic() + WAIT
            while _metric(http, "embellama_engine_pending") < 2 and not any(h.done() for h in heavy):
                assert time.monotonic() < deadline
                time.sleep(0.01)
            tei = http.post("/embed", json={"inputs": "q"})
            ollama = http.post("/api/embed", json={"input": "q"})
            if not any(h.done() for h in heavy):  # the engine stayed full while both were refused
                refused = {"tei": tei, "ollama": ollama}
            assert all(h.result(WAIT).status_code == 200 for h in heavy)
            if refused:
                break
    assert refused, "the heavy requests never kept the engine full"
    tei, ollama = refused["tei"], refused["ollama"]
    assert tei.status_code == 429 and tei.headers["retry-after"] == "1", tei.text
    assert tei.json()["error_type"] == "overloaded"
    assert ollama.status_code == 503 and ollama.headers["retry-after"] == "1" and set(ollama.json()) == {"error"}
    assert http.post("/embed", json={"inputs": "q"}).status_code == 200


def _answer_in_kind(response, tei=True):
    """A 2xx, or a 4xx in TEI's shape with one of TEI's status codes (else OpenAI's): never a 5xx, never a
    dropped connection."""
    if tei:
        assert response.status_code in (200, 413, 422, 424), response.text
        if response.status_code != 200:
            assert set(response.json()) == TEI_ERROR
    else:
        assert response.status_code in (200, 400, 404, 413), response.text
        if response.status_code != 200:
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    return response


_TEXTS = st.text(max_size=30) | st.lists(st.text(max_size=20), max_size=4)
_BODIES = {
    "/embed": {
        "inputs": _TEXTS | st.lists(st.integers(-5, 40000), max_size=5) | _JSON,
        "normalize": st.booleans() | _JSON,
        "truncate": st.booleans() | _JSON,
        "truncation_direction": st.sampled_from(["Left", "Right", "left"]) | _JSON,
        "prompt_name": _JSON,
        "dimensions": st.integers(-1, 400) | _JSON,
        "model": st.sampled_from(["minilm", "bert"]) | _JSON,
    },
    "/embed_all": {"inputs": _TEXTS | _JSON, "truncate": st.booleans() | _JSON},
    "/rerank": {
        "query": st.text(max_size=20) | _JSON,
        "texts": st.lists(st.text(max_size=20), max_size=4) | _JSON,
        "raw_scores": st.booleans() | _JSON,
        "return_text": st.booleans() | _JSON,
        "model": st.just("bert") | _JSON,
    },
    "/tokenize": {"inputs": _TEXTS | _JSON, "add_special_tokens": st.booleans() | _JSON},
    "/decode": {"ids": st.lists(st.integers(-5, 40000), max_size=5) | _JSON, "skip_special_tokens": _JSON},
    "/": {"inputs": _TEXTS | _JSON, "parameters": _JSON, "model": st.sampled_from(["minilm", "bert"]) | _JSON},
    "/predict": {"inputs": _TEXTS | _JSON},
    "/embed_sparse": {"inputs": _TEXTS | _JSON, "model": st.sampled_from(["minilm", "bert"]) | _JSON},
    "/embed_multi": {"inputs": _TEXTS | _JSON, "is_query": st.booleans() | _JSON},
    "/similarity": {
        "inputs": st.fixed_dictionaries({}, optional={"source_sentence": _TEXTS | _JSON, "sentences": _TEXTS | _JSON})
        | _JSON,
        "prompt_name": _JSON,
    },
}


@settings(max_examples=90, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), path=st.sampled_from(sorted(_BODIES)))
def test_any_body_on_a_tei_route_gets_an_answer_or_a_tei_4xx(http, data, path):
    body = data.draw(st.fixed_dictionaries({}, optional=_BODIES[path]) | _JSON)
    tei = True  # the shared routes: /rerank is TEI's for a body with texts, /tokenize llama-server's with content
    if path == "/rerank":
        tei = isinstance(body, dict) and "texts" in body and "documents" not in body
    if path == "/tokenize":
        tei = not (isinstance(body, dict) and "content" in body and "inputs" not in body)
    response = _answer_in_kind(http.post(path, content=json.dumps(body).encode()), tei)
    if response.status_code == 200 and path == "/embed":
        inputs = body["inputs"]
        count = 1 if isinstance(inputs, str) or isinstance(inputs[0], int) else len(inputs)
        assert len(response.json()) == count
    assert http.get("/health").status_code == 200


def test_clients_that_hang_up_cancel_their_queued_requests_on_every_api(server, http):
    """One thread, a heavy request running: TEI's and Ollama's requests queued behind it are cancelled when their
    clients give up (499 in the metrics, never embedded)."""
    long_texts = [f"text {i} " + "a long sentence with many words in it " * 60 for i in range(12)]
    inputs_before = _metric(http, "embellama_inputs_total")
    with ThreadPoolExecutor(1) as pool:
        heavy = pool.submit(http.post, "/v1/embeddings", json={"input": long_texts})
        deadline = time.monotonic() + WAIT
        while _metric(http, "embellama_engine_pending") < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        for path, body in (
            ("/embed", {"inputs": "quick"}),
            ("/embed_all", {"inputs": "quick"}),
            ("/api/embed", {"input": "quick"}),
        ):
            auth = {"Authorization": f"Bearer {KEY}"}
            with httpx.Client(base_url=server.url, headers=auth) as quick, pytest.raises(httpx.TimeoutException):
                quick.post(path, json=body, timeout=0.2)
            while _metric(http, "embellama_engine_pending") > 1:  # cancelled: no longer pending (max_pending 2)
                assert time.monotonic() < deadline
                time.sleep(0.01)
        assert heavy.result(WAIT).status_code == 200
    paths = ("/embed", "/embed_all", "/api/embed")
    while any(_metric(http, f'embellama_requests_total{{path="{p}",status="499"}}') < 1 for p in paths):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert _metric(http, "embellama_inputs_total") == inputs_before + len(long_texts)  # the quick ones never ran
