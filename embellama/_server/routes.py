# SPDX-License-Identifier: Apache-2.0
"""The server's request handlers: embeddings, rerank, models, health and metrics, over the shared ServerState."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from embellama._compute.pooling import Normalization
from embellama._compute.pooling import normalize as normalize_rows
from embellama._engine import EMBEDDING, RERANKER
from embellama._exceptions import InvalidInputError
from embellama._models import EmbeddingModel
from embellama._server.errors import (
    ENGINE_ERRORS,
    ClientGone,
    HTTPError,
    engine_error,
    input_error,
    rerank_input_error,
)
from embellama._server.schemas import EmbeddingsRequest, RerankRequest, read_object, require
from embellama._server.state import ServerState, server_state

__all__ = ["answer", "embeddings", "health", "metrics_page", "models", "one_model", "rerank", "rerank_body"]

logger = logging.getLogger("embellama.server")


async def _watch_disconnect(request: Request) -> None:
    """Returns when the client goes away (the request body has been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def answer(
    state: ServerState,
    request: Request,
    call: Awaitable[Any],
    count: int,
    invalid: Callable[[InvalidInputError], HTTPError],
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
        raise ClientGone
    try:
        return work.result()
    except ENGINE_ERRORS as exc:
        raise engine_error(exc, retry_after=state.limits.retry_after, invalid=invalid) from None


async def embeddings(request: Request) -> Response:
    """``POST /v1/embeddings``: OpenAI's embeddings request and response."""
    state = server_state(request)
    body = await read_object(request, state.limits)
    require(body, "input")
    name, model = state.pick(body, EMBEDDING)
    req = EmbeddingsRequest.parse(body, model, state.limits)

    call: Awaitable[Any]
    if req.kind == "text":
        call = state.engine.aembed_batch(req.items, model=name, task=req.task)
    else:
        token_arrays = req.token_arrays

        def run_tokens(m: EmbeddingModel) -> Any:
            return m.embed_token_ids(token_arrays)

        call = state.engine.asubmit(run_tokens, model=name)
    vectors = await answer(state, request, call, len(req.items), lambda exc: input_error(exc, req.where))
    if isinstance(vectors, list):
        raise HTTPError(500, "the model's pooling is 'none': no single vector per input", kind="server_error")
    vectors = np.asarray(vectors, dtype=np.float32)
    if req.dimensions is not None and req.dimensions < vectors.shape[1]:
        # sentence-transformers' truncate_dim: keep the first dimensions, then normalize again as the model does
        vectors = np.ascontiguousarray(vectors[:, : req.dimensions])
        if model.norm is not Normalization.NONE:
            vectors = normalize_rows(vectors, model.norm)
    state.metrics.served(len(req.items), req.usage)
    data = []
    for i, row in enumerate(vectors):
        embedding: Any
        if req.encoding == "base64":
            embedding = base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
        else:
            embedding = row.tolist()
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "model": name,
            "usage": {"prompt_tokens": req.usage, "total_tokens": req.usage, "truncated_tokens": req.truncated},
        }
    )


async def rerank(request: Request) -> Response:
    """``POST /v1/rerank``: Jina's and Cohere's rerank request and response, best first."""
    return await rerank_body(request, await read_object(request, server_state(request).limits))


async def rerank_body(request: Request, body: dict[str, Any]) -> Response:
    """:func:`rerank` of a body already read (``POST /rerank`` tells Jina's body from TEI's)."""
    state = server_state(request)
    name, model = state.pick(body, RERANKER)
    req = RerankRequest.parse(body, model, state.limits)
    call = state.engine.arerank(req.query, req.documents, model=name, top_k=req.top_n)
    ranked = await answer(state, request, call, len(req.documents), rerank_input_error)
    state.metrics.served(len(req.documents), req.usage)
    results = []
    for item in ranked:
        result: dict[str, Any] = {"index": item["corpus_id"], "relevance_score": item["score"]}
        if req.return_documents:
            result["document"] = {"text": req.documents[item["corpus_id"]]}
        results.append(result)
    return JSONResponse(
        {
            "model": name,
            "object": "list",
            "results": results,
            "usage": {"prompt_tokens": req.usage, "total_tokens": req.usage},
        }
    )


async def models(request: Request) -> Response:
    """``GET /v1/models``: every served model's card."""
    state = server_state(request)
    return JSONResponse({"object": "list", "data": [m.card() for m in state.served.values()]})


async def one_model(request: Request) -> Response:
    """``GET /v1/models/{name}``: one model's card."""
    state = server_state(request)
    name = request.path_params["name"]
    if name not in state.served:
        raise HTTPError(404, f"The model '{name}' does not exist", param="model", code="model_not_found")
    return JSONResponse(state.served[name].card())


async def health(request: Request) -> Response:
    """``GET /health``: 200 with the models while serving, 503 while draining."""
    if request.app.state.draining:
        return JSONResponse({"status": "draining"}, status_code=503)
    return JSONResponse({"status": "ok", "models": sorted(server_state(request).served)})


async def metrics_page(request: Request) -> Response:
    """``GET /metrics``: Prometheus' text format."""
    state = server_state(request)
    return PlainTextResponse(state.metrics.render(state.engine), media_type="text/plain; version=0.0.4")
