# SPDX-License-Identifier: Apache-2.0
"""Ollama's embedding API on the one engine: ``POST /api/embed`` (and the legacy ``/api/embeddings``),
``GET /api/tags``, ``POST /api/show``, ``GET /api/version``, and ``GET /`` ("Ollama is running").

Errors come in Ollama's shape ``{"error": "..."}``. A model is named as served, with or without Ollama's ``:latest``
tag. The vectors are the model's own (normalized as it is configured: L2 by default, as Ollama's /api/embed);
``keep_alive`` and ``options`` are accepted and ignored (the models stay loaded).
"""

from __future__ import annotations

import datetime
import hashlib
import os
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from embellama._engine import EMBEDDING
from embellama._exceptions import InvalidInputError
from embellama._server.errors import ErrorShape, HTTPError, input_error, ollama_error
from embellama._server.schemas import ServedModel, check_count, read_object
from embellama._server.state import ServerState, server_state
from embellama._server.texts import check_dimensions, cut_dimensions, prepare_texts, run_vectors
from embellama._version import __version__

__all__ = ["ROUTES"]

TAG = ":latest"
"""Ollama's default tag: ``minilm:latest`` names the served model ``minilm``."""


def _model(state: ServerState, body: dict[str, Any], embedding: bool = True) -> ServedModel:
    """The served model a body names in ``model`` (or ``name``), with or without ``:latest``; default: the default
    model. 404 for an unknown one, 400 when ``embedding`` and it is a reranker."""
    name = body.get("model", body.get("name"))
    if name is None:
        name = state.engine.default_model or next(iter(state.served))
    if not isinstance(name, str):
        raise HTTPError(400, "'model' must be a string", param="model")
    model = state.served.get(name) or (state.served.get(name[: -len(TAG)]) if name.endswith(TAG) else None)
    if model is None:
        raise HTTPError(404, f'model "{name}" not found; models: {sorted(state.served)}', code="model_not_found")
    if embedding and model.kind != EMBEDDING:
        raise HTTPError(400, f'"{name}" does not support embeddings: it is a reranker', code="wrong_model_kind")
    return model


def _texts(value: Any, state: ServerState, field: str) -> list[Any]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise HTTPError(400, f"'{field}' must be a string or a list of strings, got {type(value).__name__}")
    check_count(value, field, state.limits)
    return value


async def embed(request: Request) -> Response:
    """``POST /api/embed``: ``{"model", "input": str | [str], "truncate", "dimensions"}`` answered
    ``{"model", "embeddings", "total_duration", "load_duration", "prompt_eval_count"}``."""
    started = time.perf_counter_ns()
    state = server_state(request)
    body = await read_object(request, state.limits)
    model = _model(state, body)
    if "input" not in body:
        raise HTTPError(400, "'input' is required", param="input")
    texts = _texts(body["input"], state, "input")
    dimensions = check_dimensions(body.get("dimensions"), model)
    truncate = body.get("truncate", True)
    if not isinstance(truncate, bool):
        raise HTTPError(400, "'truncate' must be true or false", param="truncate")
    if not texts:
        return JSONResponse({"model": model.name, "embeddings": [], "total_duration": 0, "prompt_eval_count": 0})
    try:
        prepared = prepare_texts(model, texts, truncate=truncate)
    except InvalidInputError as exc:
        raise input_error(exc, "list") from None
    vectors = await run_vectors(state, request, model.name, prepared, None, lambda exc: input_error(exc, "list"))
    vectors = cut_dimensions(vectors, model, dimensions, model.norm)
    state.metrics.served(len(texts), prepared.usage)
    return JSONResponse(
        {
            "model": model.name,
            "embeddings": vectors.tolist(),
            "total_duration": time.perf_counter_ns() - started,
            "load_duration": 0,
            "prompt_eval_count": prepared.usage,
        }
    )


async def embeddings(request: Request) -> Response:
    """``POST /api/embeddings`` (Ollama's legacy route): ``{"model", "prompt"}`` answered ``{"embedding"}``; an
    empty prompt gets an empty vector, as Ollama's."""
    state = server_state(request)
    body = await read_object(request, state.limits)
    model = _model(state, body)
    prompt = body.get("prompt", "")
    if not isinstance(prompt, str):
        raise HTTPError(400, f"'prompt' must be a string, got {type(prompt).__name__}", param="prompt")
    if not prompt:
        return JSONResponse({"embedding": []})
    try:
        prepared = prepare_texts(model, [prompt], truncate=model.config.truncate)
    except InvalidInputError as exc:
        raise input_error(exc, "one") from None
    vectors = await run_vectors(state, request, model.name, prepared, None, lambda exc: input_error(exc, "one"))
    state.metrics.served(1, prepared.usage)
    return JSONResponse({"embedding": vectors[0].tolist()})


_QUANT = {0: "F32", 1: "F16", 7: "Q8_0", 32: "BF16", 2: "Q4_0", 15: "Q4_K_M", 17: "Q5_K_M", 18: "Q6_K"}
"""Ollama's ``quantization_level`` of llama.cpp's commoner weight types (``enum llama_ftype``)."""


def _file(model: ServedModel) -> tuple[str, int, str]:
    """The model file's modification time (ISO 8601), size and a digest of its path, size and time (not its bytes)."""
    path = os.fspath(model.config.model_path)
    try:
        st = os.stat(path)
        size, mtime = st.st_size, st.st_mtime
    except OSError:
        size, mtime = 0, 0.0
    modified = datetime.datetime.fromtimestamp(mtime, datetime.timezone.utc).isoformat().replace("+00:00", "Z")
    digest = hashlib.sha256(f"{path}\0{size}\0{mtime}".encode()).hexdigest()
    return modified, size, digest


def _details(model: ServedModel) -> dict[str, Any]:
    vocab = model.vocab
    params = vocab.n_params
    return {
        "parent_model": "",
        "format": "gguf",
        "family": vocab.architecture,
        "families": [vocab.architecture],
        "parameter_size": f"{params / 1e6:.1f}M" if params else "",
        "quantization_level": _QUANT.get(model.file_type, str(model.file_type)),
    }


async def tags(request: Request) -> Response:
    """``GET /api/tags``: the served models as Ollama lists its local ones."""
    state = server_state(request)
    models = []
    for model in state.served.values():
        modified, size, digest = _file(model)
        models.append(
            {
                "name": model.name + TAG,
                "model": model.name + TAG,
                "modified_at": modified,
                "size": size,
                "digest": digest,
                "details": _details(model),
            }
        )
    return JSONResponse({"models": models})


async def show(request: Request) -> Response:
    """``POST /api/show``: one model's details, ``model_info`` and ``capabilities``."""
    state = server_state(request)
    body = await read_object(request, state.limits)
    model = _model(state, body, embedding=False)
    modified, _, _ = _file(model)
    arch = model.vocab.architecture
    info: dict[str, Any] = {
        "general.architecture": arch,
        "general.parameter_count": model.vocab.n_params,
        f"{arch}.context_length": model.max_tokens,
    }
    if model.kind == EMBEDDING:
        info[f"{arch}.embedding_length"] = model.dimensions
        info[f"{arch}.pooling_type"] = model.pooling
    return JSONResponse(
        {
            "license": "",
            "modelfile": f"FROM {os.fspath(model.config.model_path)}\n",
            "parameters": "",
            "template": "",
            "details": _details(model),
            "model_info": info,
            "capabilities": ["embedding"] if model.kind == EMBEDDING else ["rerank"],
            "modified_at": modified,
        }
    )


async def version(request: Request) -> Response:
    """``GET /api/version``: embellama's version."""
    return JSONResponse({"version": __version__})


async def running(request: Request) -> Response:
    """``GET /``: Ollama's liveness answer."""
    return PlainTextResponse("Ollama is running")


ROUTES: list[tuple[str, Any, list[str], ErrorShape]] = [
    ("/api/embed", embed, ["POST"], ollama_error),
    ("/api/embeddings", embeddings, ["POST"], ollama_error),
    ("/api/tags", tags, ["GET"], ollama_error),
    ("/api/show", show, ["POST"], ollama_error),
    ("/api/version", version, ["GET"], ollama_error),
    ("/", running, ["GET"], ollama_error),
]
"""Ollama's routes: (path, handler, methods, error shape)."""
