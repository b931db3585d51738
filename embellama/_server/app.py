# SPDX-License-Identifier: Apache-2.0
"""The ASGI application: the routes, and around each handler the API key, draining, error answers and metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from embellama._engine import EmbeddingEngine
from embellama._server import llamacpp, ollama, routes, tei
from embellama._server.errors import ClientGone, ErrorShape, HTTPError, internal_error, not_found, openai_error
from embellama._server.schemas import ServerLimits
from embellama._server.state import ServerState, server_state

__all__ = ["create_app"]

logger = logging.getLogger("embellama.server")

Handler = Callable[[Request], Awaitable[Response]]

UNDRAINED_PATH = "/health"
"""The path still answered while the server drains (with 503 and ``{"status": "draining"}``)."""


def guarded(handler: Handler, label: str, *, auth: bool = True, shape: ErrorShape = openai_error) -> Handler:
    """``handler`` behind the API key (when ``auth``) and the draining check; its errors written by ``shape``
    (OpenAI's, TEI's or Ollama's error shape), each request counted and timed in the metrics under ``label`` (the
    route's path, so that paths with parameters make one series)."""

    async def endpoint(request: Request) -> Response:
        state = server_state(request)
        metrics = state.metrics
        started = time.perf_counter()
        metrics.in_flight += 1
        try:
            if auth:
                state.check_key(request)
            if request.app.state.draining and request.url.path != UNDRAINED_PATH:
                raise HTTPError(
                    503,
                    "the server is shutting down",
                    kind="server_error",
                    code="shutting_down",
                    headers={"Retry-After": str(state.limits.retry_after), "Connection": "close"},
                )
            response = await handler(request)
        except HTTPError as exc:
            response = (exc.shape or shape)(exc)
        except ClientGone:
            response = Response(status_code=499)
        except Exception as exc:  # never a bare 500 page: the API's error shape, and the log
            logger.exception("request %s %s failed", request.method, request.url.path)
            response = shape(internal_error(exc))
        finally:
            metrics.in_flight -= 1
        metrics.observe(label, response.status_code, time.perf_counter() - started)
        return response

    return endpoint


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
    state = ServerState(engine, api_key=api_key, limits=limits or ServerLimits())
    app_routes = [
        Route("/v1/embeddings", guarded(routes.embeddings, "/v1/embeddings"), methods=["POST"]),
        Route("/embeddings", guarded(routes.embeddings, "/embeddings"), methods=["POST"]),
        Route("/v1/rerank", guarded(routes.rerank, "/v1/rerank"), methods=["POST"]),
        Route("/v1/models", guarded(routes.models, "/v1/models"), methods=["GET"]),
        Route("/v1/models/{name:path}", guarded(routes.one_model, "/v1/models/{name}"), methods=["GET"]),
        Route("/health", guarded(routes.health, "/health", auth=False), methods=["GET"]),
        Route("/metrics", guarded(routes.metrics_page, "/metrics", auth=False), methods=["GET"]),
    ]
    # TEI's routes (its /rerank takes TEI's body; Jina's and Cohere's shape stays on /v1/rerank), Ollama's under
    # /api, llama-server's /tokenize (told from TEI's by the body) and /detokenize
    for path, handler, methods, shape in (*tei.ROUTES, *ollama.ROUTES, *llamacpp.ROUTES):
        app_routes.append(Route(path, guarded(handler, path, shape=shape), methods=methods))
    app = Starlette(routes=app_routes, exception_handlers={404: not_found, 405: not_found})
    app.state.draining = False
    app.state.server = state
    app.state.served = state.served
    return app
