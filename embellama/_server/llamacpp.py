# SPDX-License-Identifier: Apache-2.0
"""llama-server's token routes on the one engine's vocabularies: ``POST /tokenize`` (``content``, ``add_special``,
``parse_special``, ``with_pieces``) and ``POST /detokenize`` (``tokens``), errors in OpenAI's shape as llama-server's.

``/tokenize`` is shared with TEI's (:mod:`embellama._server.tei` routes it): a body with ``content`` is
llama-server's. A request may name a served model with ``"model"``; without it the default model answers.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from embellama._exceptions import InvalidInputError
from embellama._server.errors import ErrorShape, HTTPError, openai_error
from embellama._server.schemas import ServedModel, read_object
from embellama._server.state import ServerState, server_state

__all__ = ["ROUTES", "tokenize_body"]


def _model(state: ServerState, body: dict[str, Any]) -> ServedModel:
    """The model a body names (any kind), else the default model."""
    name = body.get("model")
    if name is None:
        name = state.engine.default_model or next(iter(state.served))
    if not isinstance(name, str):
        raise HTTPError(400, "'model' must be a string", param="model")
    model = state.served.get(name)
    if model is None:
        raise HTTPError(
            404,
            f"The model '{name}' does not exist; models: {sorted(state.served)}",
            param="model",
            code="model_not_found",
        )
    return model


def _flag(body: dict[str, Any], field: str, default: bool) -> bool:
    value = body.get(field)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise HTTPError(400, f"'{field}' must be true or false, got {value!r:.40}", param=field)
    return value


def _piece(model: ServedModel, token: int) -> str:
    """The text of one token as llama-server's ``with_pieces`` gives it (invalid UTF-8 replaced)."""
    return model.vocab.detokenize([token])


async def tokenize_body(request: Request, body: dict[str, Any]) -> Response:
    """llama-server's ``POST /tokenize``: ``{"tokens": [id, ...]}``, or with ``with_pieces``
    ``{"tokens": [{"id", "piece"}, ...]}``; ``add_special`` defaults to false as there."""
    state = server_state(request)
    model = _model(state, body)
    content = body.get("content")
    if not isinstance(content, str):
        raise HTTPError(400, f"'content' must be a string, got {type(content).__name__}", param="content")
    add_special = _flag(body, "add_special", False)
    parse_special = _flag(body, "parse_special", True)
    with_pieces = _flag(body, "with_pieces", False)
    try:
        ids = model.vocab.tokenize(content, add_special=add_special, parse_special=parse_special).tolist()
    except InvalidInputError as exc:
        raise HTTPError(400, f"content: {exc.reason}", param="content", code="invalid_input") from None
    if with_pieces:
        return JSONResponse({"tokens": [{"id": t, "piece": _piece(model, t)} for t in ids]})
    return JSONResponse({"tokens": ids})


async def detokenize(request: Request) -> Response:
    """llama-server's ``POST /detokenize``: ``{"tokens": [id, ...]}`` answered ``{"content": text}``."""
    state = server_state(request)
    body = await read_object(request, state.limits)
    model = _model(state, body)
    tokens = body.get("tokens")
    if not isinstance(tokens, list):
        raise HTTPError(400, "'tokens' must be a list of token ids", param="tokens")
    if not tokens:
        return JSONResponse({"content": ""})
    try:
        ids = model.checked_ids(tokens, None)
    except InvalidInputError as exc:
        raise HTTPError(400, f"tokens: {exc.reason}", param="tokens", code="invalid_input") from None
    return JSONResponse({"content": model.vocab.detokenize(ids)})


ROUTES: list[tuple[str, Any, list[str], ErrorShape]] = [
    ("/detokenize", detokenize, ["POST"], openai_error),
]
"""llama-server's routes besides /tokenize (shared with TEI's): (path, handler, methods, error shape)."""
