# SPDX-License-Identifier: Apache-2.0
"""TEI's /predict and /embed_sparse, and embellama's /embed_multi, on ``embellama serve`` (issues 30 and 31):
``huggingface_hub``'s ``InferenceClient(base_url=...).text_classification`` and /predict against
:class:`Classifier` on the same file (itself checked against transformers in tests/models/), pairs on /predict
against :class:`Reranker`, /embed_sparse (httpx and Haystack's TEI sparse embedder) against
:class:`SparseEncoder`, /embed_multi against :class:`MultiVectorEncoder`; TEI's errors and status codes, the key,
limits, backpressure, disconnect cancellation and metrics of every route; drawn bodies on each.

One server for the module (``--config``): a 3-label BERT classifier (the default model, served with kind
"classifier"), the tiny SPLADE (a sparse model by its heads file), the tiny bge-m3 served as a multi-vector model,
and a BERT cross-encoder.

A text's numbers move in the last bits with the texts sharing its llama.cpp call; each request here runs its texts
in one call, as the reference runs them, so they agree to float32 rounding.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from huggingface_hub import InferenceClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embellama import Classifier, ModelConfig, MultiVectorEncoder, Reranker, SparseEncoder
from tests.server.test_serve import _JSON, KEY, WAIT, Server, _metric, _reranker_config
from tests.server.test_tei import TEI_ERROR, _answer_in_kind
from tests.server.test_tei import http as http  # the key's client, on this module's server
from tests.support import classify_models, sparse_models

TEXTS = sparse_models.texts()[:10]
LONG = "a long sentence with many words in it, " * 80  # ~640 tokens: over the models' 512


def _entry(path, name, kind=None) -> dict:
    entry = {"model_path": str(path), "model_name": name, "compute_type": "off", "n_threads": 1}
    if kind is not None:
        entry["extra"] = {"kind": kind}
    return entry


@pytest.fixture(scope="module")
def files(library):
    return {
        "bert3": classify_models.ensure("bert3").gguf,
        "splade": sparse_models.ensure("splade") / "model.F32.gguf",
        "bge": sparse_models.ensure("bge-m3") / "model.F32.gguf",
    }


@pytest.fixture(scope="module")
def server(files, tmp_path_factory):
    config = tmp_path_factory.mktemp("outputs") / "models.json"
    models = [
        _entry(files["bert3"], "bert3", "classifier"),
        _entry(files["splade"], "splade"),
        _entry(files["bge"], "colbert", "multi_vector"),
        _reranker_config("bert"),
    ]
    config.write_text(json.dumps({"models": models}))
    options = ["--api-key", KEY, "--max-inputs", "32", "--max-body-bytes", "100000", "--max-pending", "2"]
    srv = Server("--config", str(config), *options)
    yield srv
    assert srv.stop() == 0, "".join(srv.stderr)[-3000:]


def _config(path, name) -> ModelConfig:
    return ModelConfig(model_path=path, model_name=name, compute_type="off", n_threads=1)


@pytest.fixture(scope="module")
def classifier(files):
    with Classifier(_config(files["bert3"], "bert3")) as model:
        yield model


@pytest.fixture(scope="module")
def splade(files):
    with SparseEncoder(_config(files["splade"], "splade")) as enc:
        yield enc


def _labels(row):
    return [d["label"] for d in row]


def test_inference_client_text_classification_equals_classifier(server, classifier):
    client = InferenceClient(base_url=server.url, api_key=KEY, timeout=WAIT)
    for text in TEXTS[:3]:
        want = classifier.predict(text, top_k=3)
        got = client.text_classification(text)  # POST / with {"inputs", "parameters"}: the classifier's labels
        assert [g.label for g in got] == _labels(want)
        np.testing.assert_allclose([g.score for g in got], [w["score"] for w in want], rtol=1e-5, atol=1e-7)
    top = client.text_classification(TEXTS[0], top_k=1)
    assert len(top) == 1 and top[0].label == classifier.predict(TEXTS[0], top_k=1)[0]["label"]
    logits = client.text_classification(TEXTS[0], function_to_apply="none")
    want_logits = classifier.predict(TEXTS[0], raw=True)
    assert sorted(g.score for g in logits) == pytest.approx(sorted(want_logits.tolist()), rel=1e-5, abs=1e-6)
    assert classifier.labels == ("negative", "neutral", "positive")


def test_predict_gives_teis_shapes_and_the_classifiers_scores(http, classifier):
    want = classifier.predict(TEXTS[:6])
    got = http.post("/predict", json={"inputs": TEXTS[:6]})
    assert got.status_code == 200, got.text
    rows = got.json()
    assert len(rows) == 6 and all(len(row) == 3 for row in rows)
    for row, probs in zip(rows, want, strict=True):
        assert [d["score"] for d in row] == sorted((d["score"] for d in row), reverse=True)  # the best first
        by_label = {d["label"]: d["score"] for d in row}
        np.testing.assert_allclose([by_label[label] for label in classifier.labels], probs, rtol=1e-5, atol=1e-7)
    one = http.post("/predict", json={"inputs": TEXTS[0]}).json()  # one text: one flat list
    assert isinstance(one[0], dict) and _labels(one) == _labels(classifier.predict(TEXTS[0], top_k=3))
    raw = http.post("/predict", json={"inputs": TEXTS[:6], "raw_scores": True}).json()
    logits = classifier.predict(TEXTS[:6], raw=True)
    for row, want_row in zip(raw, logits, strict=True):
        by_label = {d["label"]: d["score"] for d in row}
        np.testing.assert_allclose([by_label[label] for label in classifier.labels], want_row, rtol=1e-5, atol=1e-6)
    long = http.post("/predict", json={"inputs": [LONG], "truncate": True})  # served with truncation: cut right
    assert long.status_code == 200 and len(long.json()) == 1


def test_predict_scores_pairs_with_a_reranker(http):
    pairs = [(TEXTS[0], TEXTS[1]), (TEXTS[2], TEXTS[3]), (TEXTS[4], TEXTS[4])]
    with Reranker(ModelConfig(**_reranker_config("bert"))) as reranker:
        want = reranker.predict(pairs)
        labels = list(reranker.labels) or ["LABEL_0"]
    got = http.post("/predict", json={"inputs": [list(p) for p in pairs], "model": "bert"}).json()
    assert [[d["label"] for d in row] for row in got] == [labels] * 3
    np.testing.assert_allclose([row[0]["score"] for row in got], want, rtol=1e-5, atol=1e-7)
    single = http.post("/predict", json={"inputs": list(pairs[0]), "model": "bert"}).json()
    assert single[0]["score"] == pytest.approx(float(want[0]), abs=1e-3)  # alone in its call


def test_embed_sparse_equals_sparse_encoder_over_httpx_and_haystack(server, http, splade):
    from haystack.utils import Secret
    from haystack_integrations.components.embedders.huggingface_api import HuggingFaceTEISparseTextEmbedder

    want = splade.encode(TEXTS)
    got = http.post("/embed_sparse", json={"inputs": TEXTS, "model": "splade"})
    assert got.status_code == 200, got.text
    for items, vector in zip(got.json(), want, strict=True):
        indices = [item["index"] for item in items]
        assert indices == sorted(indices) and len(indices) == len(vector) > 0
        np.testing.assert_array_equal(indices, vector.indices)
        np.testing.assert_array_equal(np.asarray([item["value"] for item in items], np.float32), vector.values)
    alone = splade.encode(TEXTS[0])
    root = http.post("/", json={"inputs": TEXTS[0], "model": "splade"}).json()  # POST / by kind: /embed_sparse
    assert [item["index"] for item in root[0]] == alone.indices.tolist()
    embedder = HuggingFaceTEISparseTextEmbedder(api_base_url=server.url, token=Secret.from_token(KEY))
    sparse = embedder.run(TEXTS[0])["sparse_embedding"]  # a framework's TEI client: no model named, the sparse one
    assert sparse.indices == alone.indices.tolist()
    np.testing.assert_array_equal(np.asarray(sparse.values, np.float32), alone.values)


def test_embed_multi_equals_multivector_encoder(http, files):
    with MultiVectorEncoder(_config(files["bge"], "colbert")) as enc:
        docs = enc.encode_document(TEXTS[:5])
        queries = enc.encode_query(TEXTS[:2])
    for body, want in (({"inputs": TEXTS[:5]}, docs), ({"inputs": TEXTS[:2], "is_query": True}, queries)):
        got = http.post("/embed_multi", json={**body, "model": "colbert"})
        assert got.status_code == 200, got.text
        for matrix, reference in zip(got.json(), want, strict=True):
            matrix = np.asarray(matrix, dtype=np.float32)
            assert matrix.shape == reference.shape
            cos = (
                np.sum(matrix * reference, axis=1) / np.linalg.norm(matrix, axis=1) / np.linalg.norm(reference, axis=1)
            )
            assert float(cos.min()) >= 0.9999


@pytest.mark.parametrize(
    ("path", "body", "status", "error_type", "fragment"),
    [
        ("/predict", {"inputs": ""}, 422, "tokenizer", "inputs[0]: text is empty"),
        ("/predict", {"inputs": ["a", 3]}, 422, "validation", "inputs[1] is int"),
        ("/predict", {"inputs": [["a", "b"], ["c", "d"]], "model": "bert3"}, 424, "backend", "scores single texts, not pairs"),
        ("/predict", {"inputs": "a", "model": "bert"}, 422, "validation", "must be a [text, text] pair"),
        ("/predict", {"inputs": "a", "model": "splade"}, 424, "backend", "is a sparse embedding model, not a"),
        ("/predict", {"inputs": ["a"] * 33}, 413, "validation", "limit is 32"),
        ("/predict", {"inputs": "a", "raw_scores": "yes"}, 422, "validation", "'raw_scores'"),
        ("/predict", {"input": "a"}, 422, "validation", "'inputs' is required"),
        ("/embed_sparse", {"inputs": "a", "model": "bert3"}, 424, "backend", "is a classifier, not a sparse"),
        ("/embed_sparse", {"inputs": [LONG], "model": "splade", "truncation_direction": "Left"}, 422, "validation",
         "from the right only"),
        ("/embed_sparse", {"inputs": "a", "model": "splade", "prompt_name": "nope"}, 422, "validation",
         "'prompt_name'"),
        ("/embed_multi", {"inputs": "a", "model": "splade"}, 424, "backend", "not a multi-vector"),
        ("/embed_multi", {"inputs": "a", "model": "colbert", "is_query": 1}, 422, "validation", "'is_query'"),
        ("/", {"inputs": "a", "parameters": {"top_k": 0}}, 422, "validation", "'parameters.top_k'"),
        ("/", {"inputs": "a", "parameters": {"function_to_apply": "relu"}}, 422, "validation", "function_to_apply"),
        ("/embed", {"inputs": "a", "model": "bert3"}, 424, "backend", "is a classifier, not an embedding model"),
    ],
)  # fmt: skip
def test_bad_bodies_get_tei_errors_with_tei_status_codes(http, path, body, status, error_type, fragment):
    response = http.post(path, json=body)
    assert response.status_code == status, response.text[:500]
    assert set(response.json()) == TEI_ERROR
    assert response.json()["error_type"] == error_type, response.text
    assert fragment in response.json()["error"], response.text


def test_routes_need_the_key_count_in_the_metrics_and_describe_the_models(server, http):
    with httpx.Client(base_url=server.url, timeout=WAIT) as anonymous:
        for path in ("/predict", "/embed_sparse", "/embed_multi"):
            response = anonymous.post(path, json={"inputs": "a"})
            assert response.status_code == 401 and response.json()["error_type"] == "unauthorized"
        metrics = anonymous.get("/metrics").text
    for path in ("/predict", "/embed_sparse", "/embed_multi"):
        assert f'embellama_requests_total{{path="{path}",status="401"}}' in metrics
        assert f'embellama_request_duration_seconds_count{{path="{path}"}}' in metrics
    info = http.get("/info").json()
    assert info["model_type"] == {
        "classifier": {
            "id2label": {"0": "negative", "1": "neutral", "2": "positive"},
            "label2id": {"negative": 0, "neutral": 1, "positive": 2},
        }
    }
    assert http.get("/info", params={"model": "splade"}).json()["model_type"] == {"embedding": {"pooling": "splade"}}
    cards = {card["id"]: card for card in http.get("/v1/models").json()["data"]}
    assert cards["bert3"]["kind"] == "classifier" and cards["bert3"]["labels"] == ["negative", "neutral", "positive"]
    assert cards["splade"]["kind"] == "sparse" and cards["splade"]["dimensions"] == 30522
    assert cards["colbert"]["kind"] == "multi_vector" and cards["colbert"]["dimensions"] == 64


def test_a_full_engine_answers_429_and_hung_up_clients_are_cancelled(server, http):
    """max_pending 2: two heavy sparse requests fill the engine; /predict, /embed_sparse and /embed_multi then get
    429 with Retry-After. With one heavy request running, a sparse request whose client hangs up is cancelled."""
    heavy_body = {"inputs": [f"text {i} " + LONG for i in range(16)], "model": "splade"}
    refused = {}
    with ThreadPoolExecutor(2) as pool:
        for _ in range(3):
            heavy = [pool.submit(http.post, "/embed_sparse", json=heavy_body) for _ in range(2)]
            deadline = time.monotonic() + WAIT
            while _metric(http, "embellama_engine_pending") < 2 and not any(h.done() for h in heavy):
                assert time.monotonic() < deadline
                time.sleep(0.01)
            answers = {
                path: http.post(path, json={"inputs": "q", "model": model})
                for path, model in (("/predict", "bert3"), ("/embed_sparse", "splade"), ("/embed_multi", "colbert"))
            }
            if not any(h.done() for h in heavy):
                refused = answers
            assert all(h.result(WAIT).status_code == 200 for h in heavy)
            if refused:
                break
    assert refused, "the heavy requests never kept the engine full"
    for path, response in refused.items():
        assert response.status_code == 429 and response.headers["retry-after"] == "1", (path, response.text)
        assert response.json()["error_type"] == "overloaded"
    before = _metric(http, 'embellama_requests_total{path="/embed_sparse",status="499"}')
    inputs_before = _metric(http, "embellama_inputs_total")
    with ThreadPoolExecutor(1) as pool:
        heavy = pool.submit(http.post, "/embed_sparse", json=heavy_body)
        deadline = time.monotonic() + WAIT
        while _metric(http, "embellama_engine_pending") < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        auth = {"Authorization": f"Bearer {KEY}"}
        with httpx.Client(base_url=server.url, headers=auth) as quick, pytest.raises(httpx.TimeoutException):
            quick.post("/embed_sparse", json={"inputs": "quick", "model": "splade"}, timeout=0.2)
        assert heavy.result(WAIT).status_code == 200
    while _metric(http, 'embellama_requests_total{path="/embed_sparse",status="499"}') < before + 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert _metric(http, "embellama_inputs_total") == inputs_before + 16  # the quick one never ran


_TEXTS = st.text(max_size=30) | st.lists(st.text(max_size=20), max_size=4)
_PAIRS = st.lists(st.lists(st.text(max_size=12), min_size=2, max_size=2), max_size=3)
_MODELS = st.sampled_from(["bert3", "splade", "colbert", "bert"]) | _JSON
_BODIES = {
    "/predict": {
        "inputs": _TEXTS | _PAIRS | _JSON,
        "raw_scores": st.booleans() | _JSON,
        "truncate": st.booleans() | _JSON,
        "truncation_direction": st.sampled_from(["Left", "Right"]) | _JSON,
        "model": _MODELS,
    },
    "/embed_sparse": {
        "inputs": _TEXTS | _JSON,
        "truncate": st.booleans() | _JSON,
        "prompt_name": _JSON,
        "model": _MODELS,
    },
    "/embed_multi": {"inputs": _TEXTS | _JSON, "is_query": st.booleans() | _JSON, "model": _MODELS},
    "/": {
        "inputs": _TEXTS | _PAIRS | _JSON,
        "parameters": st.fixed_dictionaries(
            {}, optional={"top_k": st.integers(-1, 4) | _JSON, "function_to_apply": st.sampled_from(["none"]) | _JSON}
        )
        | _JSON,
        "model": _MODELS,
    },
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), path=st.sampled_from(sorted(_BODIES)))
def test_any_body_on_the_output_routes_gets_an_answer_or_a_tei_4xx(http, data, path):
    body = data.draw(st.fixed_dictionaries({}, optional=_BODIES[path]) | _JSON)
    response = _answer_in_kind(http.post(path, content=json.dumps(body).encode()))
    if response.status_code == 200 and path in ("/embed_sparse", "/embed_multi"):
        inputs = body["inputs"]
        assert len(response.json()) == (1 if isinstance(inputs, str) else len(inputs))
    assert http.get("/health").status_code == 200
