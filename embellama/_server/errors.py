# SPDX-License-Identifier: Apache-2.0
"""The server's HTTP errors, how embellama's exceptions map onto them, and each API's error shape.

An :class:`HTTPError` is written in OpenAI's shape by default; :func:`tei_error` and :func:`ollama_error` write the
same error in TEI's (``{"error", "error_type"}``, TEI's status codes) and Ollama's (``{"error"}``) shape.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from embellama._exceptions import (
    ConfigurationError,
    EmbeddingError,
    EngineBusyError,
    InvalidInputError,
    ResourceClosedError,
)

__all__ = [
    "ENGINE_ERRORS",
    "ClientGone",
    "ErrorShape",
    "HTTPError",
    "engine_error",
    "input_error",
    "internal_error",
    "not_found",
    "ollama_error",
    "openai_error",
    "rerank_input_error",
    "tei_error",
]

ENGINE_ERRORS = (EngineBusyError, InvalidInputError, ResourceClosedError, EmbeddingError, ConfigurationError)
"""The exceptions of an engine call that :func:`engine_error` answers (anything else is a 500 "internal error")."""


class HTTPError(Exception):
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
        self.shape: Callable[[HTTPError], Response] | None = None  # set: written so, whatever the route's shape

    def response(self) -> JSONResponse:
        """The JSON response carrying this error."""
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


class ClientGone(Exception):
    """The client disconnected before its request ran: answered 499 (nobody reads it)."""


def input_error(exc: InvalidInputError, where: str) -> HTTPError:
    """400 for an unusable ``input`` item; ``where`` is "list" when ``input`` was a list of items."""
    item = f"input[{exc.index}]" if exc.index is not None and where == "list" else "input"
    return HTTPError(400, f"{item}: {exc.reason}", param=item, code="invalid_input")


def rerank_input_error(exc: InvalidInputError) -> HTTPError:
    """400 for an unusable rerank query or document."""
    item = "query" if exc.index is None or exc.reason.startswith("query") else f"documents[{exc.index}]"
    return HTTPError(400, f"{item}: {exc.reason}", param=item, code="invalid_input")


def engine_error(
    exc: BaseException, *, retry_after: int, invalid: Callable[[InvalidInputError], HTTPError]
) -> HTTPError:
    """The HTTP error for one of :data:`ENGINE_ERRORS` raised by an engine call.

    A full engine is 503 ``overloaded`` and a closed one 503 ``shutting_down`` (both with ``Retry-After``),
    unusable input is ``invalid(exc)``, a failed computation or configuration is 500.
    """
    if isinstance(exc, EngineBusyError):
        return HTTPError(
            503, str(exc), kind="server_error", code="overloaded", headers={"Retry-After": str(retry_after)}
        )
    if isinstance(exc, InvalidInputError):
        return invalid(exc)
    if isinstance(exc, ResourceClosedError):
        return HTTPError(
            503, str(exc), kind="server_error", code="shutting_down", headers={"Retry-After": str(retry_after)}
        )
    if isinstance(exc, EmbeddingError | ConfigurationError):
        return HTTPError(500, str(exc), kind="server_error")
    raise TypeError(f"not an engine error: {type(exc).__name__}") from exc


def internal_error(exc: Exception) -> HTTPError:
    """500 for an unexpected exception: OpenAI's error shape rather than a bare error page."""
    return HTTPError(500, f"internal error: {type(exc).__name__}", kind="server_error", code="internal_error")


ErrorShape = Callable[[HTTPError], Response]
"""How an API writes an :class:`HTTPError`: :func:`openai_error`, :func:`tei_error` or :func:`ollama_error`."""


def openai_error(exc: HTTPError) -> Response:
    """``exc`` in OpenAI's shape ``{"error": {"message", "type", "param", "code"}}`` (``/v1/*``, llama-server's)."""
    return exc.response()


_TEI_BACKEND = frozenset({"wrong_model_kind", "not_supported"})
"""Codes TEI answers 424 (its "backend" error: the model cannot do what the route asks)."""


def tei_status(exc: HTTPError) -> tuple[int, str]:
    """The status and ``error_type`` TEI gives ``exc``: 413 validation (too large: a body, a list, a text with
    ``truncate`` false), 422 tokenizer (an unusable field or text), 424 backend (the model cannot, or llama.cpp
    failed), 429 overloaded (the engine's queue is full), 503 unhealthy (draining), 401 unauthorized."""
    if exc.status == 401:
        return 401, "unauthorized"
    if exc.code == "overloaded":
        return 429, "overloaded"
    if exc.status == 503:
        return 503, "unhealthy"
    if exc.status == 413:
        return 413, "validation"
    if exc.code in _TEI_BACKEND or (exc.status == 500 and exc.code != "internal_error"):
        return 424, "backend"
    if exc.status == 500:
        return 500, "backend"
    return 422, "tokenizer" if exc.code == "invalid_input" else "validation"


def tei_error(exc: HTTPError) -> Response:
    """``exc`` in TEI's shape ``{"error": message, "error_type": ...}`` with TEI's status code."""
    status, error_type = tei_status(exc)
    return JSONResponse({"error": exc.message, "error_type": error_type}, status_code=status, headers=exc.headers)


def ollama_error(exc: HTTPError) -> Response:
    """``exc`` in Ollama's shape ``{"error": message}``, the status as it is (400, 401, 404, 413, 500, 503)."""
    return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)


async def not_found(request: Request, exc: Exception) -> Response:
    """Starlette's 404 and 405 (no such route, or not that method) in OpenAI's error shape."""
    status = getattr(exc, "status_code", 404)
    return HTTPError(status, f"{request.method} {request.url.path}: {getattr(exc, 'detail', 'not found')}").response()
