# SPDX-License-Identifier: Apache-2.0
"""What a request may say and how the server reads it: limits, the served models' views, bodies and their fields.

Every check here raises :class:`~embellama._server.errors.HTTPError` with the status, ``param`` and ``code``
that the answer carries.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from starlette.requests import Request

from embellama._compute.pooling import Normalization, parse_normalization
from embellama._config import ModelConfig
from embellama._engine import CLASSIFIER, EMBEDDING, RERANKER, EmbeddingEngine
from embellama._exceptions import InvalidInputError
from embellama._models import resolve_config, truncate_tokens
from embellama._server.errors import HTTPError, input_error, rerank_input_error
from embellama.llama import Model

__all__ = [
    "EmbeddingsRequest",
    "RerankRequest",
    "ServedModel",
    "ServerLimits",
    "check_count",
    "check_task",
    "parse_input",
    "read_object",
    "require",
]


@dataclasses.dataclass(frozen=True)
class ServerLimits:
    """What one request may ask of the server.

    Parameters
    ----------
    max_body_bytes : int
        Largest request body; larger ones get 413.
    max_inputs : int
        Most inputs (texts or token arrays) in one request; more get 413 (OpenAI's limit is 2048).
    retry_after : int
        Seconds sent in ``Retry-After`` with a 503 when the engine's ``max_pending`` is full.
    """

    max_body_bytes: int = 16 * 2**20
    max_inputs: int = 2048
    retry_after: int = 1


_PAIR = ("a", "b")
"""The pair on which a reranker's special tokens around a query and a document are counted."""


def _pair_length(reranker: Any) -> int:
    """Tokens of the pair ``_PAIR`` as the worker's Reranker joins it."""
    return len(reranker.tokenize_pair(*_PAIR))


@dataclasses.dataclass
class ServedModel:
    """One model as the server sees it: its vocabulary (for checks and usage) and its settings."""

    name: str
    config: ModelConfig
    vocab: Model
    dimensions: int  # 0 for a reranker or a classifier (a sparse model's: its vocabulary; multi-vector: per token)
    max_tokens: int
    norm: Normalization | float
    created: int
    kind: str = EMBEDDING
    num_labels: int = 0  # a reranker's outputs per pair, a classifier's per text
    pair_overhead: int = 0  # a reranker's special tokens around a pair's two texts
    pooling: str = ""
    prompts: dict[str, str] = dataclasses.field(default_factory=dict)  # an embedding model's prompts by name
    default_prompt_name: str | None = None
    labels: list[str] = dataclasses.field(default_factory=list)  # a reranker's or a classifier's output labels
    similarity_fn_name: str = "cosine"  # an embedding model's own similarity function
    tasks: list[str] = dataclasses.field(default_factory=list)  # the tasks of its LoRA adapters (a call's task=)

    @classmethod
    def describe(cls, engine: EmbeddingEngine, name: str, created: int) -> ServedModel:
        """The view of ``engine``'s (loaded) model ``name``, with its own vocabulary-only copy of the GGUF."""
        config = engine.model_config(name)
        info = engine.info(name)
        path = resolve_config(config).model_path  # an hf:// reference: the file the engine loaded from the cache
        vocab = Model(path, vocab_only=True, n_gpu_layers=0, name=config.name)
        served = cls(
            name=config.name,
            config=config,
            vocab=vocab,
            dimensions=int(info.get("embedding_dimensions", 0)),
            max_tokens=int(info["max_sequence_length"]),
            norm=parse_normalization(config.normalize),
            created=created,
            kind=info["kind"],
            num_labels=int(info.get("num_labels", 0)),
            pooling=str(info.get("pooling", "")),
            prompts=dict(info.get("prompts") or {}),
            default_prompt_name=info.get("default_prompt_name"),
            labels=list(info.get("labels") or []),
            similarity_fn_name=str(info.get("similarity_fn_name") or "cosine"),
            tasks=list(info.get("tasks") or []),
        )
        if served.kind == RERANKER:  # the special tokens the reranker puts around a pair, measured on one pair
            joined = engine.submit(_pair_length, model=name).result()
            served.pair_overhead = joined - sum(served.count(t, None, add_special=False) for t in _PAIR)
        return served

    @property
    def output_labels(self) -> list[str]:
        """The head's labels in output order (``LABEL_<i>`` where the GGUF names none)."""
        return self.labels or [f"LABEL_{i}" for i in range(self.num_labels)]

    @property
    def file_type(self) -> int:
        """The weights' type (llama.cpp's ``enum llama_ftype``: 0 F32, 1 F16, 7 Q8_0, 32 BF16 …) as the GGUF's
        ``general.file_type`` says (the vocabulary-only copy has no weights to ask); -1 when it says nothing."""
        value = self.vocab.metadata_value("general.file_type")
        return int(value) if value is not None and value.isdigit() else -1

    def card(self) -> dict[str, Any]:
        """The model's entry in ``/v1/models``."""
        card: dict[str, Any] = {
            "id": self.name,
            "object": "model",
            "created": self.created,
            "owned_by": "embellama",
            "kind": self.kind,
        }
        if self.kind in (RERANKER, CLASSIFIER):
            card["num_labels"] = self.num_labels
            card["labels"] = self.output_labels
        else:
            card["dimensions"] = self.dimensions
        card["max_input_tokens"] = self.max_tokens
        return card

    def count(self, text: Any, index: int | None, *, add_special: bool = True) -> int:
        """Tokens of ``text`` alone (before truncation); InvalidInputError if unusable."""
        if not isinstance(text, str):
            raise InvalidInputError(f"expected str, got {type(text).__name__}", self.name, index)
        if not text:
            raise InvalidInputError("text is empty", self.name, index)
        try:
            return len(self.vocab.tokenize(text, add_special=add_special, parse_special=self.config.parse_special))
        except InvalidInputError as exc:
            raise InvalidInputError(exc.reason, self.name, index) from None

    def limit(self, n: int, what: str, index: int | None) -> int:
        """``n`` tokens cut to the model's limit, or InvalidInputError when the model does not truncate."""
        if n > self.max_tokens:
            if not self.config.truncate:
                raise InvalidInputError(f"{what} has {n} tokens; the limit is {self.max_tokens}", self.name, index)
            n = self.max_tokens
        return n

    def tokens(self, text: str, index: int | None) -> int:
        """Tokens the model will see for ``text`` (after truncation); InvalidInputError if unusable."""
        return self.limit(self.count(text, index), "text", index)

    def pair_tokens(self, query: int, document: Any, index: int) -> int:
        """Tokens a reranker sees for a query of ``query`` tokens and ``document`` (after truncation)."""
        n = self.pair_overhead + query + self.count(document, index, add_special=False)
        return self.limit(n, "the pair", index)

    def token_ids(self, ids: Sequence[Any], index: int | None) -> npt.NDArray[np.int32]:
        """A token array as the model runs it: checked, wrapped in the vocabulary's special tokens, truncated."""
        if not ids:
            raise InvalidInputError("token array is empty", self.name, index)
        array = self.checked_ids(ids, index)
        special = self.vocab.special_tokens
        prefix, suffix = list(special.prefix), list(special.suffix)
        parts = [array]
        if prefix and not np.array_equal(array[: len(prefix)], prefix):
            parts.insert(0, np.asarray(prefix, dtype=np.int32))
        if suffix and not np.array_equal(array[-len(suffix) :], suffix):
            parts.append(np.asarray(suffix, dtype=np.int32))
        if len(parts) > 1:
            array = np.concatenate(parts)
        if len(array) > self.max_tokens:
            if not self.config.truncate:
                raise InvalidInputError(
                    f"token array has {len(array)} tokens; the limit is {self.max_tokens}", self.name, index
                )
            array = truncate_tokens(array, self.max_tokens, special.suffix)
        return array

    def checked_ids(self, ids: Sequence[Any], index: int | None) -> npt.NDArray[np.int32]:
        """``ids`` as int32 when each is an int in the vocabulary; InvalidInputError naming the first that is not."""
        n_vocab = self.vocab.n_vocab
        if set(map(type, ids)) == {int}:  # the common case, checked without a Python loop over the tokens
            try:
                wide = np.asarray(ids, dtype=np.int64)
            except OverflowError:
                pass
            else:
                if wide.min() >= 0 and wide.max() < n_vocab:
                    return wide.astype(np.int32)
        for t in ids:  # a bad id (or an int subclass): find the first bad one
            if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < n_vocab:
                raise InvalidInputError(f"token ids must be ints in [0, {n_vocab}), got {t!r}", self.name, index)
        return np.asarray(ids, dtype=np.int32)


async def read_object(request: Request, limits: ServerLimits) -> dict[str, Any]:
    """The request's body, a JSON object of at most ``limits.max_body_bytes`` (413 over, 400 if not JSON)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limits.max_body_bytes:
        raise HTTPError(413, f"request body over {limits.max_body_bytes} bytes", code="body_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.max_body_bytes:
            raise HTTPError(413, f"request body over {limits.max_body_bytes} bytes", code="body_too_large")
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: nested too deep
        raise HTTPError(400, f"the body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise HTTPError(400, f"the body must be a JSON object, got {type(body).__name__}")
    return body


def require(body: dict[str, Any], field: str) -> None:
    """400 when ``body`` lacks ``field``."""
    if field not in body:
        raise HTTPError(400, f"'{field}' is required", param=field)


def check_count(items: list[Any], field: str, limits: ServerLimits) -> None:
    """413 when a request's ``field`` holds more items than ``limits.max_inputs``."""
    if len(items) > limits.max_inputs:
        raise HTTPError(
            413,
            f"'{field}' has {len(items)} items; the limit is {limits.max_inputs} per request",
            param=field,
            code="too_many_inputs",
        )


def parse_input(value: Any, limits: ServerLimits) -> tuple[str, list[Any]]:
    """("text", [str, ...]) or ("tokens", [[int, ...], ...]) from OpenAI's ``input`` field."""
    if isinstance(value, str):
        return "text", [value]
    if not isinstance(value, list):
        raise HTTPError(
            400,
            f"'input' must be a string, a list of strings, a token array or a list of token arrays; "
            f"got {type(value).__name__}",
            param="input",
        )
    if not value:
        raise HTTPError(400, "'input' must not be empty", param="input")
    if all(isinstance(x, int) and not isinstance(x, bool) for x in value):
        return "tokens", [value]
    check_count(value, "input", limits)
    if all(isinstance(x, list) for x in value):
        return "tokens", value
    for i, x in enumerate(value):
        if not isinstance(x, str):
            raise HTTPError(
                400,
                f"input[{i}] is {type(x).__name__}; 'input' must be all strings or all token arrays",
                param=f"input[{i}]",
            )
    return "text", value


@dataclasses.dataclass
class EmbeddingsRequest:
    """A checked ``/v1/embeddings`` request for one embedding model."""

    kind: str  # "text" or "tokens"
    items: list[Any]  # the texts, or the token arrays as sent
    where: str  # "list" when ``input`` was a list of items, else "one" (for the errors' ``param``)
    encoding: str  # "float" or "base64"
    dimensions: int | None
    usage: int  # tokens the model sees
    token_arrays: list[npt.NDArray[np.int32]]  # for "tokens": the arrays the model runs
    truncated: int = 0  # tokens cut from the texts over the model's limit (usage.truncated_tokens)
    task: str | None = None  # the LoRA task the texts run with (its adapter and prompt)

    @classmethod
    def parse(cls, body: dict[str, Any], model: ServedModel, limits: ServerLimits) -> EmbeddingsRequest:
        """The request in ``body`` (which has an ``input``) for ``model``; HTTPError when it is unusable."""
        encoding = body.get("encoding_format", "float")
        if encoding is None:
            encoding = "float"
        if encoding not in ("float", "base64"):
            raise HTTPError(400, "'encoding_format' must be 'float' or 'base64'", param="encoding_format")
        dimensions = body.get("dimensions")
        if dimensions is not None and (
            isinstance(dimensions, bool) or not isinstance(dimensions, int) or not 1 <= dimensions <= model.dimensions
        ):
            raise HTTPError(
                400, f"'dimensions' must be an int in [1, {model.dimensions}], got {dimensions!r}", param="dimensions"
            )
        kind, items = parse_input(body["input"], limits)
        where = "list" if isinstance(body["input"], list) and items is body["input"] else "one"
        task = check_task(body.get("task"), model)
        if task is not None and kind != "text":
            raise HTTPError(400, "'task' needs texts: token arrays run without an adapter's prompt", param="task")
        token_arrays: list[npt.NDArray[np.int32]] = []
        try:
            truncated = 0
            if kind == "text":
                counts = [model.count(text, i) for i, text in enumerate(items)]
                usage = sum(model.limit(n, "text", i) for i, n in enumerate(counts))
                truncated = sum(max(n - model.max_tokens, 0) for n in counts)
            else:
                token_arrays = [model.token_ids(ids, i) for i, ids in enumerate(items)]
                usage = sum(len(a) for a in token_arrays)
        except InvalidInputError as exc:
            raise input_error(exc, where) from None
        except TypeError:  # a token array holding something else than ints
            raise HTTPError(400, "token arrays must be lists of ints", param="input") from None
        return cls(kind, items, where, encoding, dimensions, usage, token_arrays, truncated, task)


def check_task(value: Any, model: ServedModel) -> str | None:
    """A request's ``task``: None, or one of the tasks of the model's LoRA adapters (400 otherwise)."""
    if value is None:
        return None
    if not isinstance(value, str) or value not in model.tasks:
        tasks = f"one of the model's tasks {model.tasks}" if model.tasks else "absent: the model has no LoRA tasks"
        raise HTTPError(400, f"'task' must be {tasks}, got {value!r:.60}", param="task")
    return value


@dataclasses.dataclass
class RerankRequest:
    """A checked ``/v1/rerank`` request for one reranker."""

    query: str
    documents: list[str]
    top_n: int | None
    return_documents: bool
    usage: int  # tokens the model sees, all pairs together

    @classmethod
    def parse(cls, body: dict[str, Any], model: ServedModel, limits: ServerLimits) -> RerankRequest:
        """The request in ``body`` for the reranker ``model``; HTTPError when it is unusable."""
        if model.num_labels != 1:
            raise HTTPError(
                400,
                f"The model '{model.name}' has {model.num_labels} outputs per pair; reranking needs one score",
                param="model",
                code="wrong_model_kind",
            )
        query, documents = body.get("query"), body.get("documents")
        if not isinstance(query, str) or not query:
            raise HTTPError(400, f"'query' must be a non-empty string, got {query!r:.40}", param="query")
        if not isinstance(documents, list) or not documents:
            raise HTTPError(400, "'documents' must be a non-empty list of strings", param="documents")
        check_count(documents, "documents", limits)
        top_n = body.get("top_n")
        if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
            raise HTTPError(400, f"'top_n' must be a positive int, got {top_n!r}", param="top_n")
        return_documents = body.get("return_documents")
        if return_documents is not None and not isinstance(return_documents, bool):
            raise HTTPError(400, "'return_documents' must be true or false", param="return_documents")
        try:
            query_tokens = model.count(query, None, add_special=False)
            usage = sum(model.pair_tokens(query_tokens, doc, i) for i, doc in enumerate(documents))
        except InvalidInputError as exc:
            raise rerank_input_error(exc) from None
        return cls(query, documents, top_n, bool(return_documents), usage)
