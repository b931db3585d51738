# SPDX-License-Identifier: Apache-2.0
"""What every request handler shares: the engine, the served models, the limits, the API key and the metrics."""

from __future__ import annotations

import hmac
import time
from typing import Any

from starlette.requests import Request

from embellama._engine import CLASSIFIER, EMBEDDING, MULTI_VECTOR, RERANKER, SPARSE, EmbeddingEngine
from embellama._server.errors import HTTPError
from embellama._server.metrics import Metrics
from embellama._server.schemas import ServedModel, ServerLimits

__all__ = ["KIND_NAMES", "KIND_ROUTES", "ServerState", "server_state"]

KIND_NAMES = {
    EMBEDDING: "an embedding model",
    RERANKER: "a reranker",
    CLASSIFIER: "a classifier",
    SPARSE: "a sparse embedding model",
    MULTI_VECTOR: "a multi-vector (ColBERT) model",
}
"""What each kind of served model is called in errors."""

KIND_ROUTES = {
    EMBEDDING: "/v1/embeddings",
    RERANKER: "/v1/rerank",
    CLASSIFIER: "/predict",
    SPARSE: "/embed_sparse",
    MULTI_VECTOR: "/embed_multi",
}
"""The route that serves each kind of model."""


class ServerState:
    """The server's shared state, kept on ``app.state.server``.

    Parameters
    ----------
    engine : EmbeddingEngine
        The engine, with its models loaded.
    api_key : str, optional
        When set, requests must send ``Authorization: Bearer <api_key>``.
    limits : ServerLimits
        Request size limits.
    """

    def __init__(self, engine: EmbeddingEngine, *, api_key: str | None, limits: ServerLimits) -> None:
        self.engine = engine
        self.limits = limits
        self.metrics = Metrics()
        created = int(time.time())
        self.served = {name: ServedModel.describe(engine, name, created) for name in engine.models}
        self._expected = f"Bearer {api_key}".encode() if api_key else None

    def check_key(self, request: Request) -> None:
        """401 unless the request carries the API key (when there is one)."""
        if self._expected is None:
            return
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, self._expected):
            raise HTTPError(
                401,
                "Incorrect or missing API key: send 'Authorization: Bearer <key>'",
                kind="authentication_error",
                code="invalid_api_key",
            )

    def pick(self, body: dict[str, Any], kind: str) -> tuple[str, ServedModel]:
        """The model a request names (default: the default model, else the first of ``kind``), of ``kind``."""
        served = self.served
        name = body.get("model")
        if name is None:
            default = served.get(self.engine.default_model or "")
            if default is not None and default.kind == kind:
                name = default.name
            else:
                name = next((m.name for m in served.values() if m.kind == kind), None)
            if name is None:
                raise HTTPError(400, f"the server serves no {kind} model", param="model", code="model_not_found")
        if not isinstance(name, str):
            raise HTTPError(400, "'model' must be a string", param="model")
        model = served.get(name)
        if model is None:
            raise HTTPError(
                404,
                f"The model '{name}' does not exist; models: {sorted(served)}",
                param="model",
                code="model_not_found",
            )
        if model.kind != kind:
            raise HTTPError(
                400,
                f"The model '{name}' is {KIND_NAMES[model.kind]}, not {KIND_NAMES[kind]}: send its requests to "
                f"{KIND_ROUTES[model.kind]}",
                param="model",
                code="wrong_model_kind",
            )
        return name, model

    def close(self) -> None:
        """Free the served models' vocabularies (the engine is its owner's to close)."""
        for model in self.served.values():
            model.vocab.close()


def server_state(request: Request) -> ServerState:
    """The :class:`ServerState` of the app serving ``request``."""
    state: ServerState = request.app.state.server
    return state
