# SPDX-License-Identifier: Apache-2.0
"""``embellama serve`` as clients use it: the real server on 127.0.0.1, the official ``openai`` client,
bad requests, a bounded load test and SIGTERM under load (issue 20).

Every server here is started by the test and stopped by it; every loop is bounded in count and time.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embellama import EmbeddingModel, ModelConfig

REPO = Path(__file__).resolve().parents[2]
KEY = "sk-test-embellama"
START = 120  # seconds for a server to load its models and listen
WAIT = 60  # seconds: far beyond any request here

TEXTS = [
    f"sentence {i}: a person talks about {topic}"
    for i, topic in enumerate(
        [
            "music",
            "cooking",
            "the weather",
            "football",
            "stocks",
            "a new phone",
            "the ocean",
            "mountains",
            "a cat",
            "a dog",
            "physics",
            "history",
            "a train",
            "coffee",
            "gardening",
            "the moon",
        ]
        * 4
    )
]


class Server:
    """``python -m embellama serve ARGS --port 0`` in a child process; ``url`` once it listens."""

    def __init__(self, *args: str) -> None:
        cmd = [sys.executable, "-m", "embellama", "serve", *args, "--host", "127.0.0.1", "--port", "0"]
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ)
        )
        self.terminated = 0.0  # when SIGTERM was sent
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, args=(self.proc.stdout, self.lines.put), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr.append), daemon=True).start()
        deadline = time.monotonic() + START
        self.url = ""
        while not self.url:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = ""
            if "listening on " in line:
                self.url = line.split("listening on ", 1)[1].split()[0]
            elif self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"the server did not start: {self.proc.returncode}\n{''.join(self.stderr)[-3000:]}")

    @staticmethod
    def _read(stream, sink):
        for line in stream:
            sink(line)

    def terminate(self) -> None:
        """Send SIGTERM (once)."""
        if not self.terminated and self.proc.poll() is None:
            self.terminated = time.monotonic()
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = WAIT) -> int:
        """SIGTERM, and the exit status (killed after ``timeout`` seconds: then the test fails)."""
        self.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            pytest.fail(f"the server did not stop within {timeout} s of SIGTERM")


def _auth():
    return {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def references(minilm_f16, minilm_q8):
    """Each text's vector by embed_batch, for the F16 and Q8_0 models."""
    out = {}
    for name, path in (("minilm", minilm_f16), ("q8", minilm_q8)):
        with EmbeddingModel(ModelConfig(model_path=path)) as model:
            out[name] = model.embed_batch(TEXTS)
    return out


@pytest.fixture(scope="module")
def server(minilm_f16, minilm_q8, tmp_path_factory):
    """One server of two models: the F16 file on the command line, the Q8_0 one from a config file."""
    config = tmp_path_factory.mktemp("serve") / "models.json"
    config.write_text(json.dumps({"models": [{"model_path": str(minilm_q8), "model_name": "q8"}]}))
    srv = Server(
        str(minilm_f16),
        "--model-name",
        "minilm",
        "--config",
        str(config),
        "--api-key",
        KEY,
        "--max-pending",
        "16",
        "--max-inputs",
        "64",
        "--max-body-bytes",
        "200000",
    )
    yield srv
    assert srv.stop() == 0, "".join(srv.stderr)[-3000:]


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, headers=_auth(), timeout=WAIT) as c:
        yield c


def test_a_plain_import_loads_no_server_stack():
    code = "import sys, embellama, embellama._cli.main; print(sorted(m for m in ('starlette', 'uvicorn') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=WAIT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# -- the official openai client ----------------------------------------------------------------


def test_openai_client_gets_the_vectors_of_embed_batch(server, references):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=WAIT)
    texts = TEXTS[:10]
    result = client.embeddings.create(model="minilm", input=texts)  # the client asks for base64 by default
    got = np.array([d.embedding for d in result.data], dtype=np.float32)
    assert [d.index for d in result.data] == list(range(10))
    # llama.cpp's vectors move in the last bits with the texts sharing a call (more with BF16 weights)
    assert float(np.min(np.sum(got * references["minilm"][:10], axis=1))) >= 0.9999
    assert result.model == "minilm" and result.usage.prompt_tokens == result.usage.total_tokens > 10
    floats = client.embeddings.create(model="minilm", input=texts, encoding_format="float")
    np.testing.assert_array_equal(np.array([d.embedding for d in floats.data], dtype=np.float32), got)
    one = client.embeddings.create(model="q8", input=TEXTS[3])
    # Q8_0 quantizes activations per llama.cpp call: alone and in a batch of 64 differ a little more
    assert float(np.array(one.data[0].embedding, dtype=np.float32) @ references["q8"][3]) >= 0.999
    short = client.embeddings.create(model="minilm", input=texts, dimensions=64)
    cut = got[:, :64] / np.linalg.norm(got[:, :64], axis=1, keepdims=True)  # truncate_dim, normalized again
    np.testing.assert_allclose(np.array([d.embedding for d in short.data]), cut, atol=1e-6)
    assert [m.id for m in client.models.list().data] == ["minilm", "q8"]
    assert client.models.retrieve("q8").id == "q8"


def test_openai_client_sees_openai_errors(server):
    good = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=WAIT)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0).embeddings.create(
            model="minilm", input="x"
        )
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        good.embeddings.create(model="nope", input="x")
    with pytest.raises(openai.BadRequestError, match=r"input\[1\]: text is empty"):
        good.embeddings.create(model="minilm", input=["fine", ""])


def test_token_arrays_embed_like_their_text(client, server):
    vocab = client.post("/v1/embeddings", json={"model": "minilm", "input": TEXTS[0]}).json()
    with EmbeddingModel(ModelConfig(model_path=_model_path(server))) as model:
        ids = model.tokenize(TEXTS[0]).tolist()
        bare = model.model.tokenize(TEXTS[0], add_special=False).tolist()
    for payload in (ids, bare, [ids, bare]):
        body = client.post("/v1/embeddings", json={"model": "minilm", "input": payload}).json()
        for item in body["data"]:
            assert float(np.dot(item["embedding"], vocab["data"][0]["embedding"])) > 0.9999
        assert body["usage"]["prompt_tokens"] == len(ids) * len(body["data"])
    response = client.post("/v1/embeddings", json={"model": "minilm", "input": [1, 10**9]})
    assert response.status_code == 400 and "token ids" in response.json()["error"]["message"]


def _model_path(server):
    args = server.proc.args
    return args[args.index("serve") + 1]


# -- bad requests ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "param", "fragment"),
    [
        (b"{not json", 400, None, "not valid JSON"),
        (b"[1, 2]", 400, None, "must be a JSON object"),
        (b"[" * 50_000 + b"]" * 50_000, 400, None, "not valid JSON"),
        (b'{"model": "minilm"}', 400, "input", "'input' is required"),
        (b'{"input": 5}', 400, "input", "got int"),
        (b'{"input": []}', 400, "input", "must not be empty"),
        (b'{"input": ""}', 400, "input", "text is empty"),
        (b'{"input": ["a", 3]}', 400, "input[1]", "input[1] is int"),
        (b'{"input": ["a", ""]}', 400, "input[1]", "input[1]: text is empty"),
        (b'{"input": [[1, 2], "a"]}', 400, "input[0]", "all strings or all token arrays"),
        (b'{"input": "a", "model": 3}', 400, "model", "'model' must be a string"),
        (b'{"input": "a", "model": "nope"}', 404, "model", "does not exist"),
        (b'{"input": "a", "encoding_format": "int8"}', 400, "encoding_format", "'float' or 'base64'"),
        (b'{"input": "a", "dimensions": 0}', 400, "dimensions", "[1, 384]"),
        (b'{"input": "a", "dimensions": 385}', 400, "dimensions", "[1, 384]"),
        (b'{"input": "a", "dimensions": true}', 400, "dimensions", "[1, 384]"),
        (json.dumps({"input": ["a"] * 65}).encode(), 413, "input", "limit is 64"),
        (json.dumps({"input": "word " * 50_000}).encode(), 413, None, "over 200000 bytes"),
    ],
)
def test_bad_requests_get_openai_errors_with_the_right_status(client, body, status, param, fragment):
    response = client.post("/v1/embeddings", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert fragment in error["message"]
    assert error["param"] == param


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
_TOKENS = st.lists(st.integers(-(2**40), 2**40), max_size=8)
_INPUT = (
    _JSON | st.text(max_size=60) | st.lists(st.text(max_size=30), max_size=5) | _TOKENS | st.lists(_TOKENS, max_size=4)
)
_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "input": _INPUT,
        "model": st.sampled_from(["minilm", "q8", "nope"]) | _JSON,
        "encoding_format": st.sampled_from(["float", "base64"]) | _JSON,
        "dimensions": st.integers(-2, 400) | _JSON,
        "user": _JSON,
    },
)


def _post_json(client, path, body):
    """``body`` as Python's json writes it: NaN and Infinity included, which Python's json.loads reads back."""
    return client.post(path, content=json.dumps(body).encode(), headers={"Content-Type": "application/json"})


def _answered_in_kind(response):
    """A 2xx with data, or a 4xx in OpenAI's error shape: never a 5xx, never a dropped connection."""
    assert response.status_code in (200, 400, 404, 413, 422), response.text
    if response.status_code != 200:
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    return response


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_FIELDS | _JSON)
def test_any_json_body_gets_an_answer_or_a_4xx_and_the_server_keeps_serving(client, body):
    """Bodies drawn from the whole JSON space, with the fields' own kinds mixed in (token ids far outside the
    vocabulary among them): each gets vectors or an OpenAI error, and the next request is served."""
    response = _answered_in_kind(_post_json(client, "/v1/embeddings", body))
    if response.status_code == 200:
        inputs = body["input"]
        count = 1 if isinstance(inputs, str) or (inputs and isinstance(inputs[0], int)) else len(inputs)
        assert len(response.json()["data"]) == count
    assert client.get("/health").status_code == 200


def test_keys_paths_and_methods(server):
    with httpx.Client(base_url=server.url, timeout=WAIT) as anonymous:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
            response = anonymous.post("/v1/embeddings", json={"input": "a"}, headers=headers)
            assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
        assert anonymous.get("/v1/models").status_code == 401
        assert anonymous.get("/health").json() == {"status": "ok", "models": ["minilm", "q8"]}  # no key needed
        metrics = anonymous.get("/metrics").text
        assert 'embellama_requests_total{path="/v1/embeddings",status="401"}' in metrics
        assert "embellama_request_duration_seconds_bucket" in metrics
        assert anonymous.get("/nowhere", headers=_auth()).status_code == 404
        assert anonymous.get("/v1/embeddings", headers=_auth()).status_code == 405
        assert anonymous.get("/v1/models/nope", headers=_auth()).status_code == 404


def test_base64_is_little_endian_float32(client, references):
    body = client.post("/v1/embeddings", json={"input": TEXTS[:2], "encoding_format": "base64"}).json()
    vectors = np.array([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in body["data"]])
    floats = client.post("/v1/embeddings", json={"input": TEXTS[:2]}).json()
    np.testing.assert_array_equal(vectors, np.array([d["embedding"] for d in floats["data"]], dtype=np.float32))
    assert float(np.min(np.sum(vectors * references["minilm"][:2], axis=1))) >= 0.9999


# -- load ------------------------------------------------------------------------------------


def _load(url, clients, seconds, references, max_requests=2000, signalled=None):
    """``clients`` threads send requests of 1-3 texts for ``seconds``; each answer checked against its own texts.

    Returns the count of each outcome: 200, 503 (with Retry-After), or the exception's name (prefixed
    "early " when it came before ``signalled`` was set).
    """
    deadline = time.monotonic() + seconds
    sent = [0]
    lock = threading.Lock()
    outcomes: dict[str, int] = {}

    def note(key):
        with lock:
            outcomes[key] = outcomes.get(key, 0) + 1

    def client(c):
        with httpx.Client(base_url=url, headers=_auth(), timeout=WAIT) as http:
            k = 0
            while time.monotonic() < deadline:
                with lock:
                    if sent[0] >= max_requests:
                        return
                    sent[0] += 1
                picks = [(c * 7 + k * 3 + j) % len(TEXTS) for j in range(1 + (c + k) % 3)]
                k += 1
                payload = {"model": "minilm", "input": [TEXTS[i] for i in picks] if len(picks) > 1 else TEXTS[picks[0]]}
                try:
                    response = http.post("/v1/embeddings", json=payload)
                except httpx.HTTPError as exc:
                    early = signalled is None or not signalled.is_set()
                    note(("early " if early else "") + type(exc).__name__)
                    time.sleep(0.05)  # the server is going away: no tight loop of refused connections
                    continue
                if response.status_code == 503:
                    assert response.headers.get("retry-after") == "1"
                    assert response.json()["error"]["code"] in ("overloaded", "shutting_down")
                    note("503")
                    continue
                assert response.status_code == 200, response.text
                data = response.json()["data"]
                assert [d["index"] for d in data] == list(range(len(picks)))
                for i, d in zip(picks, data, strict=True):  # each answer is its own text's vector
                    assert float(np.dot(d["embedding"], references["minilm"][i])) >= 0.9999
                note("200")

    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client, c) for c in range(clients)]:
            future.result(seconds + WAIT)  # re-raises a failed check
    assert sum(outcomes.values()) == sent[0]  # every request answered (none hung past the deadline)
    return outcomes


def test_load_every_request_answered_and_none_mixed_up(server, references):
    within = _load(server.url, clients=12, seconds=3, references=references)
    assert set(within) == {"200"}, within  # 12 clients, max_pending 16: never refused
    over = _load(server.url, clients=40, seconds=3, references=references)
    assert set(over) <= {"200", "503"} and over.get("200", 0) > 0, over  # 503 + Retry-After only when over
    with httpx.Client(base_url=server.url, timeout=WAIT) as http:
        metrics = http.get("/metrics").text
    joined = next(line for line in metrics.splitlines() if line.startswith("embellama_engine_joined_requests_total"))
    assert int(joined.split()[-1]) > 0  # concurrent requests shared llama.cpp calls
    print(f"load: 12 clients {within}; 40 clients {over}")


def _metric(http, name):
    """The value of a line of /metrics (0 while it is absent)."""
    for line in http.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def test_a_client_that_disconnects_cancels_its_queued_request(minilm_f16):
    srv = Server(str(minilm_f16), "--model-name", "minilm", "--api-key", KEY, "--threads", "1")
    try:
        long_texts = [f"text {i} " + "a long sentence with many words in it " * 60 for i in range(16)]
        with httpx.Client(base_url=srv.url, headers=_auth(), timeout=WAIT) as http, ThreadPoolExecutor(1) as pool:
            heavy = pool.submit(http.post, "/v1/embeddings", json={"input": long_texts})  # seconds of work
            deadline = time.monotonic() + WAIT
            while _metric(http, "embellama_engine_pending") < 1:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            quick = [httpx.Client(base_url=srv.url, headers=_auth()) for _ in range(5)]
            for i, c in enumerate(quick):  # they queue behind it, give up after 0.2 s and hang up
                with pytest.raises(httpx.TimeoutException):
                    c.post("/v1/embeddings", json={"input": f"quick {i}"}, timeout=0.2)
                c.close()
            while _metric(http, "embellama_engine_pending") > 1:  # cancelled while queued: no longer pending
                assert time.monotonic() < deadline
                time.sleep(0.01)
            assert not heavy.done()  # ... while the heavy request still runs
            assert heavy.result(WAIT).status_code == 200
            assert _metric(http, "embellama_inputs_total") == len(long_texts)  # the quick ones were never embedded
            while _metric(http, 'embellama_requests_total{path="/v1/embeddings",status="499"}') < 5:
                assert time.monotonic() < deadline
                time.sleep(0.01)
    finally:
        assert srv.stop() == 0


def test_sigterm_under_load_finishes_running_requests_and_exits_0(minilm_f16, references):
    srv = Server(str(minilm_f16), "--model-name", "minilm", "--api-key", KEY, "--max-pending", "64")
    outcomes: dict[str, int] = {}
    signalled = threading.Event()

    def terminate():
        time.sleep(1.5)
        signalled.set()
        srv.terminate()

    killer = threading.Thread(target=terminate)
    killer.start()
    try:
        outcomes = _load(srv.url, clients=16, seconds=4, references=references, signalled=signalled)
    finally:
        killer.join(WAIT)
        status = srv.stop()
        took = time.monotonic() - srv.terminated
    assert status == 0, "".join(srv.stderr)[-3000:]
    assert took < 30
    assert outcomes.get("200", 0) > 0
    # after SIGTERM: the listener is closed (new connections refused), in-flight requests got their 200,
    # and requests on open connections got 503 or a closed connection; never a wrong or missing answer
    assert set(outcomes) <= {"200", "503", "ConnectError", "RemoteProtocolError", "ReadError"}, outcomes
    assert "received signal 15" in "".join(srv.stderr)
    print(f"sigterm under load: {outcomes}; exit 0 {took:.1f} s after SIGTERM")


def test_guide_openai_example(server):
    """The guide's openai example (docs/guide/serve.md), pointed at this test's server."""
    import contextlib
    import io
    import re

    text = (REPO / "docs/guide/serve.md").read_text(encoding="utf-8")
    section = text[text.index("# Serve over HTTP: `embellama serve`") :]
    block = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    block = block.replace("http://127.0.0.1:8080", server.url).replace("sk-my-key", KEY)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "docs/guide/serve.md:Serve over HTTP", "exec"), {})
    lines = out.getvalue().split("\n")
    assert lines[0].startswith("2 384 ") and lines[1] == "64"


# -- /v1/rerank (issue 22) ---------------------------------------------------------------------

RERANKERS = {"bert": "bert", "xlm": "xlm-roberta", "bert3": "bert3"}  # served name: tests.support.rerank_models recipe


def _reranker_config(name):
    from tests.support import rerank_models

    # compute_type "off": the F32 file as it is, as the references were computed; one thread, as the server's copy
    path = rerank_models.ensure(RERANKERS[name]).gguf("f32")
    return {"model_path": str(path), "model_name": name, "compute_type": "off", "n_threads": 1}


@pytest.fixture(scope="module")
def rerank_server(minilm_f16, tmp_path_factory):
    """An embedding model (the default) and three rerankers; max_pending 2, 64 inputs per request at most."""
    config = tmp_path_factory.mktemp("rerank") / "models.json"
    config.write_text(json.dumps({"models": [_reranker_config(name) for name in RERANKERS]}))
    options = ["--config", str(config), "--api-key", KEY, "--threads", "1", "--max-pending", "2", "--max-inputs", "64"]
    srv = Server(str(minilm_f16), "--model-name", "minilm", *options)
    yield srv
    assert srv.stop() == 0, "".join(srv.stderr)[-3000:]


@pytest.fixture
def rerank_client(rerank_server):
    with httpx.Client(base_url=rerank_server.url, headers=_auth(), timeout=WAIT) as c:
        yield c


@pytest.fixture(scope="module")
def rerankers():
    """The served rerankers, loaded here from the same files and settings."""
    from embellama import Reranker

    models = {name: Reranker(ModelConfig(**_reranker_config(name))).load() for name in ("bert", "xlm")}
    yield models
    for model in models.values():
        model.unload()


@pytest.mark.parametrize("name", ["bert", "xlm"])
def test_rerank_over_http_equals_reranker_rank_and_cross_encoder(rerank_client, rerankers, name):
    from tests.support import rerank_models

    queries, chosen, docs = rerank_models.pairs()
    reference = rerank_models.ensure(RERANKERS[name]).reference()["scores"]
    for q in (0, 42, 199):
        documents = [docs[j] for j in chosen[q]]
        response = rerank_client.post("/v1/rerank", json={"model": name, "query": queries[q], "documents": documents})
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"model", "object", "results", "usage"}
        assert body["model"] == name and body["object"] == "list"
        expected = rerankers[name].rank(queries[q], documents)
        # the same scores, in the same order, as Reranker.rank on the same file (JSON keeps a float's every bit)
        assert [(r["index"], r["relevance_score"]) for r in body["results"]] == [
            (e["corpus_id"], e["score"]) for e in expected
        ]
        for r in body["results"]:  # and CrossEncoder's default-activation score of that document
            assert set(r) == {"index", "relevance_score"}
            assert abs(r["relevance_score"] - reference[q * rerank_models.N_DOCS + r["index"]]) < 1e-3
        tokens = sum(len(rerankers[name].tokenize_pair(queries[q], d)) for d in documents)
        assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
        top = rerank_client.post(
            "/rerank",
            json={"model": name, "query": queries[q], "documents": documents, "top_n": 3, "return_documents": True},
        ).json()
        assert [r["index"] for r in top["results"]] == [e["corpus_id"] for e in expected[:3]]
        assert [r["document"] for r in top["results"]] == [{"text": documents[r["index"]]} for r in top["results"]]


def test_rerank_and_embeddings_pick_a_model_of_their_kind(rerank_client):
    ranked = rerank_client.post("/v1/rerank", json={"query": "a cat", "documents": ["a dog", "a cat sits"]}).json()
    assert ranked["model"] == "bert" and sorted(r["index"] for r in ranked["results"]) == [0, 1]  # the first reranker
    embedded = rerank_client.post("/v1/embeddings", json={"input": "a cat"}).json()
    assert embedded["model"] == "minilm" and len(embedded["data"][0]["embedding"]) == 384
    for path, model, fragment in (
        ("/v1/embeddings", "bert", "'bert' is a reranker, not an embedding model: send its requests to /v1/rerank"),
        ("/v1/rerank", "minilm", "'minilm' is an embedding model, not a reranker"),
        ("/v1/rerank", "bert3", "'bert3' has 3 outputs per pair"),
    ):
        response = rerank_client.post(path, json={"model": model, "input": "x", "query": "x", "documents": ["y"]})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert fragment in error["message"] and error["param"] == "model" and error["code"] == "wrong_model_kind"


def test_models_list_says_which_kind(rerank_client, rerank_server):
    cards = {m["id"]: m for m in rerank_client.get("/v1/models").json()["data"]}
    assert list(cards) == ["minilm", "bert", "xlm", "bert3"]
    assert {name: card["kind"] for name, card in cards.items()} == {
        "minilm": "embedding",
        "bert": "reranker",
        "xlm": "reranker",
        "bert3": "reranker",
    }
    assert cards["minilm"]["dimensions"] == 384 and "num_labels" not in cards["minilm"]
    assert cards["bert"]["num_labels"] == 1 and cards["bert3"]["num_labels"] == 3 and "dimensions" not in cards["bert"]
    assert rerank_client.get("/v1/models/xlm").json() == cards["xlm"]
    with httpx.Client(base_url=rerank_server.url, timeout=WAIT) as anonymous:
        assert anonymous.get("/health").json()["models"] == ["bert", "bert3", "minilm", "xlm"]
        response = anonymous.post("/v1/rerank", json={"query": "q", "documents": ["d"]}, headers={"Authorization": "x"})
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
        assert 'embellama_requests_total{path="/v1/rerank",status="401"}' in anonymous.get("/metrics").text


@pytest.mark.parametrize(
    ("body", "status", "param", "fragment"),
    [
        ({"documents": ["d"]}, 400, "query", "'query' must be a non-empty string"),
        ({"query": "", "documents": ["d"]}, 400, "query", "'query' must be a non-empty string"),
        ({"query": ["q"], "documents": ["d"]}, 400, "query", "'query' must be a non-empty string"),
        ({"query": "q"}, 400, "documents", "'documents' must be a non-empty list"),
        ({"query": "q", "documents": []}, 400, "documents", "'documents' must be a non-empty list"),
        ({"query": "q", "documents": "d"}, 400, "documents", "'documents' must be a non-empty list"),
        ({"query": "q", "documents": ["a", 3]}, 400, "documents[1]", "documents[1]: expected str, got int"),
        ({"query": "q", "documents": ["a", {"text": "b"}]}, 400, "documents[1]", "expected str, got dict"),
        ({"query": "q", "documents": ["a", "b", ""]}, 400, "documents[2]", "documents[2]: text is empty"),
        ({"query": "q", "documents": ["d"], "top_n": 0}, 400, "top_n", "'top_n' must be a positive int, got 0"),
        ({"query": "q", "documents": ["d"], "top_n": "2"}, 400, "top_n", "'top_n' must be a positive int"),
        ({"query": "q", "documents": ["d"], "top_n": True}, 400, "top_n", "'top_n' must be a positive int"),
        ({"query": "q", "documents": ["d"], "top_n": 1.5}, 400, "top_n", "'top_n' must be a positive int"),
        ({"query": "q", "documents": ["d"], "return_documents": "yes"}, 400, "return_documents", "true or false"),
        ({"query": "q", "documents": ["d"], "model": "nope"}, 404, "model", "The model 'nope' does not exist"),
        ({"query": "q", "documents": ["d"], "model": 3}, 400, "model", "'model' must be a string"),
        ({"query": "q", "documents": ["d"] * 65}, 413, "documents", "'documents' has 65 items; the limit is 64"),
        (["q", "d"], 400, None, "must be a JSON object"),
    ],
)
def test_bad_rerank_requests_get_openai_errors_with_the_right_status(rerank_client, body, status, param, fragment):
    response = rerank_client.post("/v1/rerank", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert fragment in error["message"], error
    assert error["param"] == param


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.fixed_dictionaries(
        {},
        optional={
            "query": st.text(max_size=40) | _JSON,
            "documents": st.lists(st.text(max_size=30), max_size=5) | _JSON,
            "top_n": st.integers(-2, 8) | _JSON,
            "return_documents": st.booleans() | _JSON,
            "model": _JSON,
        },
    )
    | _JSON
)
def test_any_rerank_body_gets_results_or_a_4xx_and_the_server_keeps_serving(rerank_client, body):
    response = _answered_in_kind(_post_json(rerank_client, "/v1/rerank", body))
    if response.status_code == 200:
        results = response.json()["results"]
        indices, scores = [r["index"] for r in results], [r["relevance_score"] for r in results]
        assert len(set(indices)) == len(indices) and all(0 <= i < len(body["documents"]) for i in indices)
        assert scores == sorted(scores, reverse=True)
        assert len(results) == min(len(body["documents"]), body.get("top_n") or len(body["documents"]))
    assert rerank_client.get("/health").status_code == 200


def test_rerank_on_a_full_engine_gets_503_with_retry_after(rerank_server, rerank_client):
    long_texts = [f"text {i} " + "a long sentence with many words in it " * 60 for i in range(16)]
    refused = None
    with ThreadPoolExecutor(2) as pool:
        for _ in range(3):  # two heavy requests fill max_pending (2); each takes seconds on one thread
            heavy = [pool.submit(rerank_client.post, "/v1/embeddings", json={"input": long_texts}) for _ in range(2)]
            deadline = time.monotonic() + WAIT
            while _metric(rerank_client, "embellama_engine_pending") < 2 and not any(h.done() for h in heavy):
                assert time.monotonic() < deadline
                time.sleep(0.01)
            response = rerank_client.post("/v1/rerank", json={"query": "q", "documents": ["d"]})
            if not any(h.done() for h in heavy):  # still full while it was refused
                refused = response
            assert all(h.result(WAIT).status_code == 200 for h in heavy)
            if refused is not None:
                break
    assert refused is not None, "the heavy requests never kept the engine full"
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == "1" and refused.json()["error"]["code"] == "overloaded"
    assert rerank_client.post("/v1/rerank", json={"query": "q", "documents": ["d"]}).status_code == 200
