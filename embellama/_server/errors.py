# SPDX-License-Identifier: Apache-2.0
"""The server's HTTP errors in OpenAI's shape, and how embellama's exceptions map onto them."""

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
    "HTTPError",
    "engine_error",
    "input_error",
    "internal_error",
    "not_found",
    "rerank_input_error",
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
    return HTTPError(500, f"internal error: {type(exc).__name__}", kind="server_error")


async def not_found(request: Request, exc: Exception) -> Response:
    """Starlette's 404 and 405 (no such route, or not that method) in OpenAI's error shape."""
    status = getattr(exc, "status_code", 404)
    return HTTPError(status, f"{request.method} {request.url.path}: {getattr(exc, 'detail', 'not found')}").response()
