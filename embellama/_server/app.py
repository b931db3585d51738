# SPDX-License-Identifier: Apache-2.0
"""``embellama serve``: an OpenAI-compatible embeddings server over an :class:`EmbeddingEngine`.

Starlette and uvicorn come with the optional extra ``embellama[server]``; ``import embellama``
never imports this module. Endpoints:

- ``POST /v1/embeddings``: OpenAI's request and response (``input`` as a string, a list of
  strings, a token array or a list of token arrays; ``model``; ``encoding_format`` float or
  base64; ``dimensions``), errors in OpenAI's error shape;
- ``POST /v1/rerank`` (and ``/rerank``) for reranker (cross-encoder) models, in Jina's and Cohere's shape:
  ``{"model", "query", "documents": [str, ...], "top_n", "return_documents"}`` answered with
  ``{"model", "object": "list", "results": [{"index", "relevance_score"[, "document": {"text"}]}, ...],
  "usage"}``, best first; the score is the model's default activation (sigmoid for one output);
- ``GET /v1/models`` and ``GET /v1/models/{id}`` (each model's ``kind``: "embedding" or "reranker");
  ``GET /health``; ``GET /metrics`` (Prometheus text).

Concurrent requests meet in the engine's dynamic batching: requests waiting for the same
copy of a model share one llama.cpp call. A client that disconnects cancels its request if
it has not started. SIGTERM (and SIGINT) drain: the listening socket closes, requests
already received finish, new ones get 503, then the models are freed and the process exits 0.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hmac
import json
import logging
import math
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from embellama._compute.pooling import Normalization, parse_normalization
from embellama._compute.pooling import normalize as _normalize
from embellama._config import EngineConfig, ModelConfig
from embellama._engine.engine import EMBEDDING, RERANKER, EmbeddingEngine
from embellama._exceptions import (
    ConfigurationError,
    EmbeddingError,
    EngineBusyError,
    InvalidInputError,
    ResourceClosedError,
)
from embellama._models.embedding import EmbeddingModel, truncate_tokens
from embellama.llama import Model

__all__ = ["ServerLimits", "create_app", "serve"]

logger = logging.getLogger("embellama.server")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Upper bounds (seconds) of the request latency histogram on /metrics."""


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


class _HTTPError(Exception):
    """An error response in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param
        self.code = code
        self.headers = headers

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


@dataclasses.dataclass
class _Served:
    """One model as the server sees it: its vocabulary (for checks and usage) and its settings."""

    name: str
    config: ModelConfig
    vocab: Model
    dimensions: int  # 0 for a reranker
    max_tokens: int
    norm: Normalization | float
    created: int
    kind: str = EMBEDDING
    num_labels: int = 0  # a reranker's outputs per pair
    pair_overhead: int = 0  # a reranker's special tokens around a pair's two texts

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

    def _limit(self, n: int, what: str, index: int | None) -> int:
        if n > self.max_tokens:
            if not self.config.truncate:
                raise InvalidInputError(f"{what} has {n} tokens; the limit is {self.max_tokens}", self.name, index)
            n = self.max_tokens
        return n

    def tokens(self, text: str, index: int | None) -> int:
        """Tokens the model will see for ``text`` (after truncation); InvalidInputError if unusable."""
        return self._limit(self.count(text, index), "text", index)

    def pair_tokens(self, query: int, document: Any, index: int) -> int:
        """Tokens a reranker sees for a query of ``query`` tokens and ``document`` (after truncation)."""
        n = self.pair_overhead + query + self.count(document, index, add_special=False)
        return self._limit(n, "the pair", index)

    def token_ids(self, ids: Sequence[Any], index: int | None) -> npt.NDArray[np.int32]:
        """A token array as the model runs it: checked, wrapped in the vocabulary's special tokens, truncated."""
        if not ids:
            raise InvalidInputError("token array is empty", self.name, index)
        n_vocab = self.vocab.n_vocab
        for t in ids:
            if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < n_vocab:
                raise InvalidInputError(f"token ids must be ints in [0, {n_vocab}), got {t!r}", self.name, index)
        special = self.vocab.special_tokens
        prefix, suffix = list(special.prefix), list(special.suffix)
        body = list(ids)
        if prefix and body[: len(prefix)] != prefix:
            body = prefix + body
        if suffix and body[-len(suffix) :] != suffix:
            body = body + suffix
        array = np.asarray(body, dtype=np.int32)
        if len(array) > self.max_tokens:
            if not self.config.truncate:
                raise InvalidInputError(
                    f"token array has {len(array)} tokens; the limit is {self.max_tokens}", self.name, index
                )
            array = truncate_tokens(array, self.max_tokens, special.suffix)
        return array


class _Metrics:
    """Counters and a latency histogram in Prometheus' text format (no dependency)."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.inputs = 0
        self.tokens = 0
        self.in_flight = 0
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.latency_count = 0

    def observe(self, path: str, status: int, seconds: float) -> None:
        self.requests[(path, status)] = self.requests.get((path, status), 0) + 1
        if path == "/v1/embeddings":
            for i, bound in enumerate(LATENCY_BUCKETS):
                if seconds <= bound:
                    self.buckets[i] += 1
                    break
            else:
                self.buckets[-1] += 1
            self.latency_sum += seconds
            self.latency_count += 1

    def render(self, engine: EmbeddingEngine) -> str:
        stats = engine.stats()
        lines = ["# TYPE embellama_requests_total counter"]
        for (path, status), n in sorted(self.requests.items()):
            lines.append(f'embellama_requests_total{{path="{path}",status="{status}"}} {n}')
        lines += [
            "# TYPE embellama_inputs_total counter",
            f"embellama_inputs_total {self.inputs}",
            "# TYPE embellama_tokens_total counter",
            f"embellama_tokens_total {self.tokens}",
            "# TYPE embellama_requests_in_flight gauge",
            f"embellama_requests_in_flight {self.in_flight}",
            "# TYPE embellama_engine_pending gauge",
            f"embellama_engine_pending {stats['pending']}",
            "# TYPE embellama_engine_joined_calls_total counter",
            f"embellama_engine_joined_calls_total {stats['joined_calls']}",
            "# TYPE embellama_engine_joined_requests_total counter",
            f"embellama_engine_joined_requests_total {stats['joined_requests']}",
            "# TYPE embellama_request_duration_seconds histogram",
        ]
        cumulative = 0
        for bound, n in zip((*LATENCY_BUCKETS, math.inf), self.buckets, strict=True):
            cumulative += n
            le = "+Inf" if bound == math.inf else f"{bound:g}"
            lines.append(f'embellama_request_duration_seconds_bucket{{le="{le}"}} {cumulative}')
        lines.append(f"embellama_request_duration_seconds_sum {self.latency_sum:.6f}")
        lines.append(f"embellama_request_duration_seconds_count {self.latency_count}")
        return "\n".join(lines) + "\n"


_PAIR = ("a", "b")


def _pair_length(reranker: Any) -> int:
    """Tokens of the pair ``_PAIR`` as the worker's Reranker joins it."""
    return len(reranker.tokenize_pair(*_PAIR))


def _describe(engine: EmbeddingEngine, config: ModelConfig, created: int) -> _Served:
    info = engine.info(config.name)
    vocab = Model(config.model_path, vocab_only=True, n_gpu_layers=0, name=config.name)
    served = _Served(
        name=config.name,
        config=config,
        vocab=vocab,
        dimensions=int(info.get("embedding_dimensions", 0)),
        max_tokens=int(info["max_sequence_length"]),
        norm=parse_normalization(config.normalize),
        created=created,
        kind=info["kind"],
        num_labels=int(info.get("num_labels", 0)),
    )
    if served.kind == RERANKER:  # the special tokens the reranker puts around a pair, measured on one pair
        joined = engine.submit(_pair_length, model=config.name).result()
        served.pair_overhead = joined - sum(served.count(t, None, add_special=False) for t in _PAIR)
    return served


def _check_count(items: list[Any], field: str, limits: ServerLimits) -> None:
    """413 when a request's ``field`` holds more items than ``limits.max_inputs``."""
    if len(items) > limits.max_inputs:
        raise _HTTPError(
            413,
            f"'{field}' has {len(items)} items; the limit is {limits.max_inputs} per request",
            param=field,
            code="too_many_inputs",
        )


def _parse_input(value: Any, limits: ServerLimits) -> tuple[str, list[Any]]:
    """("text", [str, ...]) or ("tokens", [[int, ...], ...]) from OpenAI's ``input`` field."""
    if isinstance(value, str):
        return "text", [value]
    if not isinstance(value, list):
        raise _HTTPError(
            400,
            f"'input' must be a string, a list of strings, a token array or a list of token arrays; "
            f"got {type(value).__name__}",
            param="input",
        )
    if not value:
        raise _HTTPError(400, "'input' must not be empty", param="input")
    if all(isinstance(x, int) and not isinstance(x, bool) for x in value):
        return "tokens", [value]
    _check_count(value, "input", limits)
    if all(isinstance(x, list) for x in value):
        return "tokens", value
    for i, x in enumerate(value):
        if not isinstance(x, str):
            raise _HTTPError(
                400,
                f"input[{i}] is {type(x).__name__}; 'input' must be all strings or all token arrays",
                param=f"input[{i}]",
            )
    return "text", value


def _invalid(exc: InvalidInputError, where: str) -> _HTTPError:
    item = f"input[{exc.index}]" if exc.index is not None and where == "list" else "input"
    return _HTTPError(400, f"{item}: {exc.reason}", param=item, code="invalid_input")


class _ClientGone(Exception):
    """The client disconnected before its request ran: answered 499 (nobody reads it)."""


async def _watch_disconnect(request: Request) -> None:
    """Returns when the client goes away (the request body has been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def create_app(
    engine: EmbeddingEngine,
    *,
    api_key: str | None = None,
    limits: ServerLimits | None = None,
) -> Starlette:
    """The ASGI application serving ``engine``'s models (which must be loaded).

    Parameters
    ----------
    engine : EmbeddingEngine
        The engine; the app does not close it (:func:`serve` does, on shutdown).
    api_key : str, optional
        When set, ``/v1/*`` requires ``Authorization: Bearer <api_key>`` (401 otherwise).
    limits : ServerLimits, optional
        Request size limits.

    Returns
    -------
    starlette.applications.Starlette
        The app; ``app.state.draining = True`` makes it refuse new work with 503.
    """
    limits = limits or ServerLimits()
    created = int(time.time())
    served = {name: _describe(engine, engine.model_config(name), created) for name in engine.models}
    metrics = _Metrics()
    expected = f"Bearer {api_key}".encode() if api_key else None

    def check_key(request: Request) -> None:
        if expected is None:
            return
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise _HTTPError(
                401,
                "Incorrect or missing API key: send 'Authorization: Bearer <key>'",
                kind="authentication_error",
                code="invalid_api_key",
            )

    def guarded(
        handler: Callable[[Request], Awaitable[Response]], *, auth: bool = True
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            metrics.in_flight += 1
            try:
                if auth:
                    check_key(request)
                if app.state.draining and request.url.path != "/health":
                    raise _HTTPError(
                        503,
                        "the server is shutting down",
                        kind="server_error",
                        code="shutting_down",
                        headers={"Retry-After": str(limits.retry_after), "Connection": "close"},
                    )
                response = await handler(request)
            except _HTTPError as exc:
                response = exc.response()
            except _ClientGone:
                response = Response(status_code=499)
            except Exception as exc:  # never a bare 500 page: OpenAI's error shape, and the log
                logger.exception("request %s %s failed", request.method, request.url.path)
                response = _HTTPError(500, f"internal error: {type(exc).__name__}", kind="server_error").response()
            finally:
                metrics.in_flight -= 1
            metrics.observe(request.url.path, response.status_code, time.perf_counter() - started)
            return response

        return endpoint

    async def read_json(request: Request) -> Any:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limits.max_body_bytes:
            raise _HTTPError(413, f"request body over {limits.max_body_bytes} bytes", code="body_too_large")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_body_bytes:
                raise _HTTPError(413, f"request body over {limits.max_body_bytes} bytes", code="body_too_large")
            chunks.append(chunk)
        try:
            return json.loads(b"".join(chunks))
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: nested too deep
            raise _HTTPError(400, f"the body is not valid JSON: {exc}", code="invalid_json") from None

    async def read_object(request: Request) -> dict[str, Any]:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise _HTTPError(400, f"the body must be a JSON object, got {type(body).__name__}")
        return body

    def pick(body: dict[str, Any], kind: str) -> tuple[str, _Served]:
        """The model a request names (default: the default model, else the first of ``kind``), of ``kind``."""
        name = body.get("model")
        if name is None:
            default = served.get(engine.default_model or "")
            if default is not None and default.kind == kind:
                name = default.name
            else:
                name = next((m.name for m in served.values() if m.kind == kind), None)
            if name is None:
                raise _HTTPError(400, f"the server serves no {kind} model", param="model", code="model_not_found")
        if not isinstance(name, str):
            raise _HTTPError(400, "'model' must be a string", param="model")
        model = served.get(name)
        if model is None:
            raise _HTTPError(
                404,
                f"The model '{name}' does not exist; models: {sorted(served)}",
                param="model",
                code="model_not_found",
            )
        if model.kind != kind:
            where = "/v1/rerank" if model.kind == RERANKER else "/v1/embeddings"
            what = "a reranker" if model.kind == RERANKER else "an embedding model, not a reranker"
            raise _HTTPError(
                400,
                f"The model '{name}' is {what}: send its requests to {where}",
                param="model",
                code="wrong_model_kind",
            )
        return name, model

    async def run(
        request: Request, call: Awaitable[Any], count: int, invalid: Callable[[InvalidInputError], _HTTPError]
    ) -> Any:
        """The engine's answer to ``call``, cancelled if the client goes away first; errors as HTTP errors."""
        work = asyncio.ensure_future(call)
        watcher = asyncio.ensure_future(_watch_disconnect(request))
        try:
            await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
        if not work.done():  # the client left: its request is cancelled unless it already runs
            work.cancel()
            logger.info("client disconnected; request for %d inputs cancelled", count)
            raise _ClientGone
        try:
            return work.result()
        except EngineBusyError as exc:
            raise _HTTPError(
                503, str(exc), kind="server_error", code="overloaded", headers={"Retry-After": str(limits.retry_after)}
            ) from None
        except InvalidInputError as exc:
            raise invalid(exc) from None
        except ResourceClosedError as exc:
            raise _HTTPError(
                503,
                str(exc),
                kind="server_error",
                code="shutting_down",
                headers={"Retry-After": str(limits.retry_after)},
            ) from None
        except (EmbeddingError, ConfigurationError) as exc:
            raise _HTTPError(500, str(exc), kind="server_error") from None

    async def embeddings(request: Request) -> Response:
        body = await read_object(request)
        if "input" not in body:
            raise _HTTPError(400, "'input' is required", param="input")
        name, model = pick(body, EMBEDDING)
        encoding = body.get("encoding_format", "float")
        if encoding is None:
            encoding = "float"
        if encoding not in ("float", "base64"):
            raise _HTTPError(400, "'encoding_format' must be 'float' or 'base64'", param="encoding_format")
        dimensions = body.get("dimensions")
        if dimensions is not None and (
            isinstance(dimensions, bool) or not isinstance(dimensions, int) or not 1 <= dimensions <= model.dimensions
        ):
            raise _HTTPError(
                400, f"'dimensions' must be an int in [1, {model.dimensions}], got {dimensions!r}", param="dimensions"
            )
        kind, items = _parse_input(body["input"], limits)
        where = "list" if isinstance(body["input"], list) and items is body["input"] else "one"
        token_arrays: list[npt.NDArray[np.int32]] = []
        try:
            if kind == "text":
                usage = sum(model.tokens(text, i) for i, text in enumerate(items))
            else:
                token_arrays = [model.token_ids(ids, i) for i, ids in enumerate(items)]
                usage = sum(len(a) for a in token_arrays)
        except InvalidInputError as exc:
            raise _invalid(exc, where) from None
        except TypeError:  # a token array holding something else than ints
            raise _HTTPError(400, "token arrays must be lists of ints", param="input") from None

        call: Awaitable[Any]
        if kind == "text":
            call = engine.aembed_batch(items, model=name)
        else:

            def run_tokens(m: EmbeddingModel) -> Any:
                return m.embed_token_ids(token_arrays)

            call = engine.asubmit(run_tokens, model=name)
        vectors = await run(request, call, len(items), lambda exc: _invalid(exc, where))
        if isinstance(vectors, list):
            raise _HTTPError(500, "the model's pooling is 'none': no single vector per input", kind="server_error")
        vectors = np.asarray(vectors, dtype=np.float32)
        if dimensions is not None and dimensions < vectors.shape[1]:
            # sentence-transformers' truncate_dim: keep the first dimensions, then normalize again as the model does
            vectors = np.ascontiguousarray(vectors[:, :dimensions])
            if model.norm is not Normalization.NONE:
                vectors = _normalize(vectors, model.norm)
        metrics.inputs += len(items)
        metrics.tokens += usage
        data = []
        for i, row in enumerate(vectors):
            embedding: Any
            if encoding == "base64":
                embedding = base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
            else:
                embedding = row.tolist()
            data.append({"object": "embedding", "index": i, "embedding": embedding})
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": name,
                "usage": {"prompt_tokens": usage, "total_tokens": usage},
            }
        )

    async def rerank(request: Request) -> Response:
        body = await read_object(request)
        name, model = pick(body, RERANKER)
        if model.num_labels != 1:
            raise _HTTPError(
                400,
                f"The model '{name}' has {model.num_labels} outputs per pair; reranking needs one score",
                param="model",
                code="wrong_model_kind",
            )
        query, documents = body.get("query"), body.get("documents")
        if not isinstance(query, str) or not query:
            raise _HTTPError(400, f"'query' must be a non-empty string, got {query!r:.40}", param="query")
        if not isinstance(documents, list) or not documents:
            raise _HTTPError(400, "'documents' must be a non-empty list of strings", param="documents")
        _check_count(documents, "documents", limits)
        top_n = body.get("top_n")
        if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
            raise _HTTPError(400, f"'top_n' must be a positive int, got {top_n!r}", param="top_n")
        return_documents = body.get("return_documents")
        if return_documents is not None and not isinstance(return_documents, bool):
            raise _HTTPError(400, "'return_documents' must be true or false", param="return_documents")

        def invalid(exc: InvalidInputError) -> _HTTPError:
            item = "query" if exc.index is None or exc.reason.startswith("query") else f"documents[{exc.index}]"
            return _HTTPError(400, f"{item}: {exc.reason}", param=item, code="invalid_input")

        try:
            query_tokens = model.count(query, None, add_special=False)
            usage = sum(model.pair_tokens(query_tokens, doc, i) for i, doc in enumerate(documents))
        except InvalidInputError as exc:
            raise invalid(exc) from None
        ranked = await run(request, engine.arerank(query, documents, model=name, top_k=top_n), len(documents), invalid)
        metrics.inputs += len(documents)
        metrics.tokens += usage
        results = []
        for item in ranked:
            result: dict[str, Any] = {"index": item["corpus_id"], "relevance_score": item["score"]}
            if return_documents:
                result["document"] = {"text": documents[item["corpus_id"]]}
            results.append(result)
        return JSONResponse(
            {
                "model": name,
                "object": "list",
                "results": results,
                "usage": {"prompt_tokens": usage, "total_tokens": usage},
            }
        )

    def model_card(m: _Served) -> dict[str, Any]:
        card = {"id": m.name, "object": "model", "created": m.created, "owned_by": "embellama", "kind": m.kind}
        if m.kind == RERANKER:
            card["num_labels"] = m.num_labels
        else:
            card["dimensions"] = m.dimensions
        card["max_input_tokens"] = m.max_tokens
        return card

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [model_card(m) for m in served.values()]})

    async def one_model(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in served:
            raise _HTTPError(404, f"The model '{name}' does not exist", param="model", code="model_not_found")
        return JSONResponse(model_card(served[name]))

    async def health(request: Request) -> Response:
        if app.state.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        return JSONResponse({"status": "ok", "models": sorted(served)})

    async def metrics_page(request: Request) -> Response:
        return PlainTextResponse(metrics.render(engine), media_type="text/plain; version=0.0.4")

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        return _HTTPError(
            status, f"{request.method} {request.url.path}: {getattr(exc, 'detail', 'not found')}"
        ).response()

    routes = [
        Route("/v1/embeddings", guarded(embeddings), methods=["POST"]),
        Route("/embeddings", guarded(embeddings), methods=["POST"]),
        Route("/v1/rerank", guarded(rerank), methods=["POST"]),
        Route("/rerank", guarded(rerank), methods=["POST"]),
        Route("/v1/models", guarded(models), methods=["GET"]),
        Route("/v1/models/{name:path}", guarded(one_model), methods=["GET"]),
        Route("/health", guarded(health, auth=False), methods=["GET"]),
        Route("/metrics", guarded(metrics_page, auth=False), methods=["GET"]),
    ]
    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
    app.state.draining = False
    app.state.served = served
    return app


class _Server(uvicorn.Server):  # type: ignore[misc]
    """uvicorn's server; a signal also tells the app to refuse new work while it drains."""

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: Any) -> None:
        if not self._app.state.draining:
            logger.warning("received signal %d: finishing the requests received, refusing new ones", sig)
        self._app.state.draining = True
        super().handle_exit(sig, frame)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say so (else Nagle's algorithm
    # and delayed ACKs add ~40 ms to every response)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(
    models: Sequence[ModelConfig],
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    api_key: str | None = None,
    engine_config: EngineConfig | None = None,
    limits: ServerLimits | None = None,
    graceful_timeout: float = 30.0,
    keep_alive: int = 75,
    ready: Callable[[str], None] | None = None,
) -> int:
    """Load the models, serve them until SIGTERM or SIGINT, then drain and free them.

    Parameters
    ----------
    models : sequence of ModelConfig
        The models; the first is the default for requests that name none.
    host, port : str, int
        Where to listen (port 0: a free port, reported to ``ready``).
    api_key : str, optional
        Required as ``Authorization: Bearer <key>`` on ``/v1/*`` when set.
    engine_config : EngineConfig, optional
        The engine's settings (``max_pending``, copies, dynamic batching).
    limits : ServerLimits, optional
        Request size limits.
    graceful_timeout : float, optional
        Seconds the requests received may take to finish once a signal came.
    keep_alive : int, optional
        Seconds an idle keep-alive connection stays open (nginx's upstream default is 60 s: keep it longer).
    ready : callable, optional
        Called with the server's URL once it listens.

    Returns
    -------
    int
        0 after a clean shutdown (also on SIGTERM).

    Raises
    ------
    ConfigurationError, ModelNotFoundError, ModelLoadError
        A model could not be loaded.
    OSError
        The address could not be bound.
    """
    config = engine_config or EngineConfig()
    engine = EmbeddingEngine(config, models=list(models))
    terminated: list[int] = []
    previous = None
    served: dict[str, _Served] = {}
    try:
        app = create_app(engine, api_key=api_key, limits=limits)
        served = app.state.served
        sock = _bind(host, port)
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{bound}"
        uv_config = uvicorn.Config(
            app,
            log_config=None,
            lifespan="off",
            timeout_graceful_shutdown=max(1, math.ceil(graceful_timeout)),
            # uvicorn's 5 s closes idle keep-alive connections that a busy client (or a proxy's pool) is about
            # to reuse; a request sent as the server closes one fails on the client
            timeout_keep_alive=keep_alive,
            access_log=logger.isEnabledFor(logging.INFO),
            server_header=False,
        )
        server = _Server(uv_config, app)
        if threading.current_thread() is threading.main_thread():
            # uvicorn raises the signal again once it has drained; this handler takes it, so SIGTERM exits 0
            previous = signal.signal(signal.SIGTERM, lambda sig, frame: terminated.append(sig))
        logger.info("serving %s on %s", ", ".join(engine.models), url)
        if ready is not None:
            ready(url)
        server.run(sockets=[sock])
    finally:
        engine.close()
        for model in served.values():
            model.vocab.close()
        if previous is not None:  # after the models are freed: a second SIGTERM meanwhile is taken too
            signal.signal(signal.SIGTERM, previous)
    logger.info("server stopped%s", " (SIGTERM)" if terminated else "")
    return 0
