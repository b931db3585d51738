# SPDX-License-Identifier: Apache-2.0
"""The server's request checks and error mapping, in process, over a stand-in vocabulary (no model, no socket)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from embellama._exceptions import (
    ConfigurationError,
    EmbeddingError,
    EngineBusyError,
    InvalidInputError,
    ResourceClosedError,
)
from embellama._server.errors import HTTPError, engine_error, input_error, rerank_input_error
from embellama._server.schemas import EmbeddingsRequest, ServedModel, ServerLimits, parse_input

CLS, SEP = 101, 102


class FakeVocab:
    """What ServedModel asks of a vocabulary: its size, its special tokens and a tokenizer (one token a word)."""

    n_vocab = 1000
    special_tokens = SimpleNamespace(prefix=(CLS,), suffix=(SEP,))

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = False) -> list[int]:
        words = [7] * len(text.split())
        return [CLS, *words, SEP] if add_special else words


def served(max_tokens: int = 8, truncate: bool = True) -> ServedModel:
    config = SimpleNamespace(truncate=truncate, parse_special=False)
    return ServedModel(
        name="m", config=config, vocab=FakeVocab(), dimensions=4, max_tokens=max_tokens, norm=2.0, created=0
    )  # type: ignore[arg-type]


class Int(int):
    """An int subclass: accepted, like ints (only bool is refused)."""


@pytest.mark.parametrize(
    ("ids", "want"),
    [
        ([5, 6], [CLS, 5, 6, SEP]),
        ([CLS, 5, 6, SEP], [CLS, 5, 6, SEP]),
        ([CLS, 5], [CLS, 5, SEP]),
        ([5, SEP], [CLS, 5, SEP]),
        ([Int(5), 6], [CLS, 5, 6, SEP]),
        ([1, 2, 3, 4, 5, 6, 7, 8, 9], [CLS, 1, 2, 3, 4, 5, 6, SEP]),  # cut to 8, the suffix kept
    ],
)
def test_token_ids_are_wrapped_in_the_special_tokens_and_cut(ids, want):
    array = served().token_ids(ids, 0)
    assert array.dtype == np.int32
    assert array.tolist() == want


@pytest.mark.parametrize(
    ("ids", "bad"),
    [
        ([5, True], "True"),
        ([5, 1000], "1000"),
        ([-1, 5], "-1"),
        ([5, 2**70, -3], str(2**70)),
        ([5, 1.0], "1.0"),
        ([5, "6"], "'6'"),
        ([5, [6]], "[6]"),
        ([5, None, 2000], "None"),
    ],
)
def test_a_bad_token_id_is_named_first_come(ids, bad):
    with pytest.raises(InvalidInputError) as info:
        served().token_ids(ids, 3)
    assert info.value.reason == f"token ids must be ints in [0, 1000), got {bad}"
    assert info.value.index == 3


def test_too_many_tokens_without_truncation_is_an_error():
    with pytest.raises(InvalidInputError, match="token array has 9 tokens; the limit is 8"):
        served(truncate=False).token_ids(list(range(1, 8)), None)
    with pytest.raises(InvalidInputError, match="text has 9 tokens; the limit is 8"):
        served(truncate=False).tokens("a b c d e f g", None)
    assert served().tokens("a b c d e f g", None) == 8


def test_parse_input_kinds_and_limits():
    limits = ServerLimits(max_inputs=2)
    assert parse_input("a", limits) == ("text", ["a"])
    assert parse_input([1, 2], limits) == ("tokens", [[1, 2]])
    assert parse_input([[1], [2]], limits) == ("tokens", [[1], [2]])
    with pytest.raises(HTTPError) as info:
        parse_input(["a", "b", "c"], limits)
    assert (info.value.status, info.value.code, info.value.param) == (413, "too_many_inputs", "input")
    with pytest.raises(HTTPError) as info:
        parse_input([True, 1], limits)
    assert (info.value.status, info.value.param) == (400, "input[0]")


def test_embeddings_request_counts_usage_and_names_the_bad_item():
    model = served()
    req = EmbeddingsRequest.parse({"input": ["a b", "c"]}, model, ServerLimits())
    assert (req.kind, req.where, req.encoding, req.usage) == ("text", "list", "float", 4 + 3)
    req = EmbeddingsRequest.parse({"input": [5, 6], "encoding_format": None}, model, ServerLimits())
    assert (req.kind, req.where, req.usage) == ("tokens", "one", 4)
    with pytest.raises(HTTPError) as info:
        EmbeddingsRequest.parse({"input": ["a", ""]}, model, ServerLimits())
    assert (info.value.status, info.value.param, info.value.message) == (400, "input[1]", "input[1]: text is empty")
    with pytest.raises(HTTPError) as info:
        EmbeddingsRequest.parse({"input": "a", "dimensions": 5}, model, ServerLimits())
    assert info.value.param == "dimensions" and "[1, 4]" in info.value.message


def test_engine_errors_map_to_openai_errors():
    def invalid(exc):
        return input_error(exc, "list")

    busy = engine_error(EngineBusyError("full"), retry_after=3, invalid=invalid)
    assert (busy.status, busy.code, busy.headers) == (503, "overloaded", {"Retry-After": "3"})
    closed = engine_error(ResourceClosedError("closed"), retry_after=1, invalid=invalid)
    assert (closed.status, closed.code, closed.kind) == (503, "shutting_down", "server_error")
    bad = engine_error(InvalidInputError("text is empty", "m", 2), retry_after=1, invalid=invalid)
    assert (bad.status, bad.param, bad.code) == (400, "input[2]", "invalid_input")
    for exc in (EmbeddingError("boom"), ConfigurationError("no")):
        failed = engine_error(exc, retry_after=1, invalid=invalid)
        assert (failed.status, failed.kind) == (500, "server_error")
    with pytest.raises(TypeError):
        engine_error(RuntimeError("other"), retry_after=1, invalid=invalid)
    doc = rerank_input_error(InvalidInputError("text is empty", "m", 4))
    assert (doc.param, doc.message) == ("documents[4]", "documents[4]: text is empty")
    assert rerank_input_error(InvalidInputError("text is empty", "m", None)).param == "query"
    body = busy.response().body
    assert b'"error"' in body and b'"code":"overloaded"' in body
