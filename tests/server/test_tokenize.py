# SPDX-License-Identifier: Apache-2.0
"""The token routes of ``embellama serve`` (issue 30): TEI's /tokenize and /decode and llama-server's /tokenize and
/detokenize give the model's token ids, checked against the Hugging Face tokenizer of MiniLM (``tokenizers``) and
``Model.tokenize``; drawn bodies on each get an answer or a 4xx in their API's shape.

One server for the module: MiniLM.
"""

from __future__ import annotations

import json

import httpx
import pytest
import tokenizers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embellama import EmbeddingModel, ModelConfig
from tests.server.test_serve import _JSON, KEY, TEXTS, WAIT, Server
from tests.support import make_model

# punctuation, accents, digits split into word pieces, an emoji (unknown to the vocabulary), a long text
SAMPLES = [
    "Hello, world! Unbelievable 🙂",
    "Ünïcödé çafé naïve",
    "e-mail: a.b@c.com (2024)",
    "tokenization of uncommonly segmented vocabulary",
    *TEXTS[:6],
    " ".join(TEXTS[:12]),
]


@pytest.fixture(scope="module")
def server(minilm_f16):
    srv = Server(str(minilm_f16), "--model-name", "minilm", "--api-key", KEY, "--max-inputs", "32")
    yield srv
    assert srv.stop() == 0, "".join(srv.stderr)[-3000:]


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=WAIT) as c:
        yield c


@pytest.fixture(scope="module")
def hf():
    """MiniLM's Hugging Face tokenizer, as sentence-transformers loads it (without its padding and truncation)."""
    tokenizer = tokenizers.Tokenizer.from_file(str(make_model.hf_model_dir() / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def test_tei_tokenize_gives_the_hugging_face_tokens(http, hf, minilm_f16):
    got = http.post("/tokenize", json={"inputs": SAMPLES}).json()
    with EmbeddingModel(ModelConfig(model_path=minilm_f16)) as model:
        ours = [model.tokenize(text).tolist() for text in SAMPLES]
    for text, tokens, own in zip(SAMPLES, got, ours, strict=True):
        expected = hf.encode(text)
        assert [t["id"] for t in tokens] == expected.ids == own, text
        assert [t["text"] for t in tokens] == expected.tokens, text  # "##" pieces as Hugging Face writes them
        assert [t["special"] for t in tokens] == [tok in ("[CLS]", "[SEP]") for tok in expected.tokens]
    bare = http.post("/tokenize", json={"inputs": SAMPLES[0], "add_special_tokens": False}).json()
    assert [t["id"] for t in bare[0]] == hf.encode(SAMPLES[0], add_special_tokens=False).ids
    prompted = http.post("/tokenize", json={"inputs": SAMPLES[0], "prompt_name": "query"}).json()
    assert prompted == got[:1]  # MiniLM's query prompt is empty


def test_tei_decode_gives_the_hugging_face_text(http, hf):
    texts = [t for t in SAMPLES if "'" not in t]  # llama.cpp joins "isn ' t" back to "isn't"; Hugging Face does not
    ids = [hf.encode(t).ids for t in texts]
    got = http.post("/decode", json={"ids": ids}).json()
    assert got == [hf.decode(i) for i in ids]
    with_special = http.post("/decode", json={"ids": ids[:3], "skip_special_tokens": False}).json()
    assert with_special == [hf.decode(i, skip_special_tokens=False) for i in ids[:3]]  # "[CLS] ... [UNK] [SEP]"


def test_llama_server_tokenize_and_detokenize(http, hf):
    for text in SAMPLES:
        plain = http.post("/tokenize", json={"content": text}).json()  # add_special defaults to false there
        assert plain == {"tokens": hf.encode(text, add_special_tokens=False).ids}
        special = http.post("/tokenize", json={"content": text, "add_special": True}).json()
        assert special == {"tokens": hf.encode(text).ids}
        pieces = http.post("/tokenize", json={"content": text, "with_pieces": True}).json()["tokens"]
        assert [p["id"] for p in pieces] == plain["tokens"] and all(isinstance(p["piece"], str) for p in pieces)
        back = http.post("/detokenize", json={"tokens": plain["tokens"]}).json()["content"]
        assert back.strip() == hf.decode(plain["tokens"]) or "'" in text
    assert http.post("/detokenize", json={"tokens": []}).json() == {"content": ""}


@pytest.mark.parametrize(
    ("body", "status", "keys", "fragment"),
    [
        ({"content": 3}, 400, "openai", "'content' must be a string"),
        ({"content": "a", "with_pieces": "yes"}, 400, "openai", "'with_pieces' must be true or false"),
        ({"content": "a", "model": "nope"}, 404, "openai", "does not exist"),
        ({"inputs": 3}, 422, "tei", "'inputs' must be"),
        ({"inputs": ["a", ""]}, 422, "tei", "inputs[1]: text is empty"),
        ({"inputs": "a", "prompt_name": "nope"}, 422, "tei", "prompt_name"),
        ({}, 422, "tei", "'inputs' is required"),
    ],
)
def test_bad_tokenize_bodies_get_the_shape_of_the_api_they_speak(http, body, status, keys, fragment):
    response = http.post("/tokenize", json=body)
    assert response.status_code == status, response.text
    if keys == "tei":
        assert set(response.json()) == {"error", "error_type"} and fragment in response.json()["error"]
    else:
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
        assert fragment in response.json()["error"]["message"]


_IDS = st.lists(st.integers(-5, 40000), max_size=6)
_BODIES = {
    "/tokenize": st.fixed_dictionaries(
        {},
        optional={
            "inputs": st.text(max_size=30) | st.lists(st.text(max_size=20), max_size=4) | _JSON,
            "add_special_tokens": st.booleans() | _JSON,
            "prompt_name": st.sampled_from(["query", "document"]) | _JSON,
        },
    )
    | st.fixed_dictionaries(
        {"content": st.text(max_size=30) | _JSON},
        optional={"add_special": st.booleans() | _JSON, "with_pieces": st.booleans() | _JSON},
    ),
    "/decode": st.fixed_dictionaries(
        {}, optional={"ids": _IDS | st.lists(_IDS, max_size=3) | _JSON, "skip_special_tokens": _JSON}
    ),
    "/detokenize": st.fixed_dictionaries({}, optional={"tokens": _IDS | _JSON, "model": _JSON}),
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), path=st.sampled_from(sorted(_BODIES)))
def test_any_body_on_a_token_route_gets_an_answer_or_a_4xx(http, data, path):
    body = data.draw(_BODIES[path] | _JSON)
    response = http.post(path, content=json.dumps(body).encode())
    llama_server = path == "/detokenize" or (isinstance(body, dict) and "content" in body and "inputs" not in body)
    if llama_server:
        assert response.status_code in (200, 400, 404, 413), response.text
        if response.status_code != 200:
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    else:
        assert response.status_code in (200, 413, 422), response.text
        if response.status_code != 200:
            assert set(response.json()) == {"error", "error_type"}
    assert http.get("/health").status_code == 200
