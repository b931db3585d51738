# SPDX-License-Identifier: Apache-2.0
"""Hugging Face text-embeddings-inference's (TEI's) API on the one engine: /embed, /embed_all, /rerank (TEI's body),
/tokenize (TEI's body), /decode, /info, /predict, /embed_sparse and ``POST /`` (and /invocations) by model kind.

Errors come in TEI's shape ``{"error": ..., "error_type": ...}`` with its status codes (413, 422, 424, 429; see
:func:`embellama._server.errors.tei_status`). A request may name a served model with ``"model"`` (TEI serves one);
without it the default model (or the first of the kind the route needs) answers. ``/rerank`` and ``/tokenize`` are
shared: a body with ``texts`` is TEI's rerank (else Jina's and Cohere's, in OpenAI's error shape), a body with
``content`` is llama-server's tokenize (else TEI's).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import numpy.typing as npt
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from embellama._compute import similarity as _similarity
from embellama._compute.pooling import Normalization, PoolingStrategy
from embellama._engine import EMBEDDING, RERANKER
from embellama._exceptions import InvalidInputError
from embellama._models import EmbeddingModel, context_params
from embellama._server import llamacpp
from embellama._server.errors import ErrorShape, HTTPError, openai_error, tei_error
from embellama._server.routes import answer, rerank_body
from embellama._server.schemas import ServedModel, check_count, read_object
from embellama._server.state import ServerState, server_state
from embellama._server.texts import Prepared, check_dimensions, cut_dimensions, prepare_texts, prompt_text, run_vectors
from embellama._version import __version__
from embellama.llama import Batch, Context

__all__ = ["ROUTES"]


def tei_input_error(exc: InvalidInputError) -> HTTPError:
    """413 for a text over the limit (TEI's validation error), else 422 (its tokenizer error)."""
    item = f"inputs[{exc.index}]" if exc.index is not None else "inputs"
    if "; the limit is" in exc.reason:
        return HTTPError(413, f"{item}: {exc.reason} (send truncate: true to cut it)", param=item, code="too_long")
    return HTTPError(400, f"{item}: {exc.reason}", param=item, code="invalid_input")


def _flag(body: dict[str, Any], field: str, default: bool) -> bool:
    value = body.get(field)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise HTTPError(400, f"'{field}' must be true or false, got {value!r:.40}", param=field)
    return value


def _direction(body: dict[str, Any]) -> bool:
    """Whether ``truncation_direction`` asks to cut from the left ("Left"/"left"; default "Right")."""
    value = body.get("truncation_direction")
    if value is None:
        return False
    if not isinstance(value, str) or value.lower() not in ("left", "right"):
        raise HTTPError(400, f"'truncation_direction' must be 'Left' or 'Right', got {value!r:.40}", param="inputs")
    return value.lower() == "left"


def _inputs(body: dict[str, Any], state: ServerState, tokens: bool = True) -> tuple[str, list[Any]]:
    """("text", [str, ...]) or ("tokens", [[int, ...], ...]) from TEI's ``inputs``."""
    if "inputs" not in body:
        raise HTTPError(400, "'inputs' is required", param="inputs")
    value = body["inputs"]
    if isinstance(value, str):
        return "text", [value]
    what = "a string, a list of strings" + (", token ids or a list of token ids" if tokens else "")
    if not isinstance(value, list) or not value:
        raise HTTPError(400, f"'inputs' must be {what} (not empty), got {type(value).__name__}", param="inputs")
    if tokens and all(isinstance(x, int) and not isinstance(x, bool) for x in value):
        return "tokens", [value]
    check_count(value, "inputs", state.limits)
    if tokens and all(isinstance(x, list) for x in value):
        return "tokens", value
    for i, x in enumerate(value):
        if not isinstance(x, str):
            raise HTTPError(400, f"inputs[{i}] is {type(x).__name__}; 'inputs' must be {what}", param=f"inputs[{i}]")
    return "text", value


def _token_arrays(model: ServedModel, items: list[Any]) -> Prepared:
    """Token-id inputs checked, wrapped in the special tokens and cut as the model runs them."""
    try:
        arrays = [model.token_ids(ids, i) for i, ids in enumerate(items)]
    except TypeError:
        raise HTTPError(400, "token arrays must be lists of ints", param="inputs") from None
    return Prepared(items, arrays, None, sum(len(a) for a in arrays))


def _prepare(body: dict[str, Any], state: ServerState, model: ServedModel, as_tokens: bool = False) -> Prepared:
    """The texts (or token ids) of an /embed or /embed_all body, cut as ``truncate`` and ``truncation_direction``
    say (a model served with truncation cuts whatever ``truncate`` says: TEI's auto-truncate)."""
    kind, items = _inputs(body, state)
    truncate = _flag(body, "truncate", False) or model.config.truncate
    left = _direction(body)
    try:
        if kind == "tokens":
            return _token_arrays(model, items)
        return prepare_texts(
            model, items, truncate=truncate, left=left, prompt_name=body.get("prompt_name"), as_tokens=as_tokens
        )
    except InvalidInputError as exc:
        raise tei_input_error(exc) from None


async def embed_body(request: Request, body: dict[str, Any]) -> Response:
    """``POST /embed``: TEI's embeddings, one list of floats per input."""
    state = server_state(request)
    name, model = state.pick(body, EMBEDDING)
    prepared = _prepare(body, state, model)
    wanted = Normalization.L2 if _flag(body, "normalize", True) else Normalization.NONE
    dimensions = check_dimensions(body.get("dimensions"), model)
    normalize = None if wanted == model.norm else wanted is Normalization.L2
    vectors = await run_vectors(state, request, name, prepared, normalize, tei_input_error)
    vectors = cut_dimensions(vectors, model, dimensions, wanted)
    state.metrics.served(len(prepared.texts), prepared.usage)
    return JSONResponse(vectors.tolist())


async def embed(request: Request) -> Response:
    """``POST /embed``."""
    return await embed_body(request, await read_object(request, server_state(request).limits))


def _similarity_inputs(body: dict[str, Any], state: ServerState) -> list[str]:
    """[source_sentence, *sentences] from TEI's sentence-similarity body."""
    value = body.get("inputs")
    shape = '\'inputs\' must be {"source_sentence": str, "sentences": [str, ...]}'
    if not isinstance(value, dict):
        raise HTTPError(400, shape, param="inputs")
    source, sentences = value.get("source_sentence"), value.get("sentences")
    if not isinstance(source, str) or not isinstance(sentences, list) or not sentences:
        raise HTTPError(400, shape + " (sentences not empty)", param="inputs")
    check_count(sentences, "inputs.sentences", state.limits)
    for i, x in enumerate(sentences):
        if not isinstance(x, str):
            raise HTTPError(400, f"inputs.sentences[{i}] is {type(x).__name__}; {shape}", param=f"sentences[{i}]")
    return [source, *sentences]


async def similarity_body(request: Request, body: dict[str, Any]) -> Response:
    """``POST /similarity``: TEI's sentence similarity, the source sentence against each of the others, scored
    with the model's own similarity function (``similarity_fn_name``: cosine unless the model says otherwise)."""
    state = server_state(request)
    name, model = state.pick(body, EMBEDDING)
    texts = _similarity_inputs(body, state)
    try:
        truncate = _flag(body, "truncate", False) or model.config.truncate
        prepared = prepare_texts(model, texts, truncate=truncate, prompt_name=body.get("prompt_name"))
    except InvalidInputError as exc:
        raise tei_input_error(exc) from None
    vectors = await run_vectors(state, request, name, prepared, None, tei_input_error)
    scores = _similarity.similarity(vectors[:1], vectors[1:], model.similarity_fn_name)[0]
    state.metrics.served(len(prepared.texts), prepared.usage)
    return JSONResponse([float(x) for x in scores])


async def similarity(request: Request) -> Response:
    """``POST /similarity``."""
    return await similarity_body(request, await read_object(request, server_state(request).limits))


def _token_vectors(arrays: list[npt.NDArray[np.int32]]) -> Any:
    """A worker's function: each token's vector (the last hidden state, neither pooled nor normalized) per array, from
    a context with pooling "none" made on the worker's thread for this request and freed after it."""

    def run(m: EmbeddingModel) -> list[npt.NDArray[np.float32]]:
        model = m.model
        params = dataclasses.replace(context_params(m.config, model, PoolingStrategy.NONE), n_seq_max=1)
        out = []
        with Context(model, params) as context:
            batch = Batch(params.n_batch, 1)
            for ids in arrays:
                batch.set_sequences(ids, [len(ids)])
                context.process(batch)
                out.append(context.token_embeddings(len(ids)))
        return out

    return run


async def embed_all(request: Request) -> Response:
    """``POST /embed_all``: every token's vector (the last hidden state), one list of vectors per input."""
    state = server_state(request)
    body = await read_object(request, state.limits)
    name, model = state.pick(body, EMBEDDING)
    prepared = _prepare(body, state, model, as_tokens=True)
    assert prepared.arrays is not None
    call = state.engine.asubmit(_token_vectors(prepared.arrays), model=name)
    matrices = await answer(state, request, call, len(prepared.texts), tei_input_error)
    state.metrics.served(len(prepared.texts), prepared.usage)
    return JSONResponse([m.tolist() for m in matrices])


async def tei_rerank_body(request: Request, body: dict[str, Any]) -> Response:
    """TEI's ``POST /rerank``: ``query`` and ``texts`` answered ``[{"index", "score"[, "text"]}]``, best first."""
    state = server_state(request)
    name, model = state.pick(body, RERANKER)
    if model.num_labels != 1:
        raise HTTPError(
            400,
            f"The model '{name}' has {model.num_labels} outputs per pair; reranking needs one score",
            param="model",
            code="wrong_model_kind",
        )
    query, texts = body.get("query"), body.get("texts")
    if not isinstance(query, str) or not query:
        raise HTTPError(400, f"'query' must be a non-empty string, got {query!r:.40}", param="query")
    if not isinstance(texts, list) or not texts:
        raise HTTPError(400, "'texts' must be a non-empty list of strings", param="texts")
    check_count(texts, "texts", state.limits)
    raw = _flag(body, "raw_scores", False)
    return_text = _flag(body, "return_text", False)
    _flag(body, "truncate", False)  # checked; a model served with truncation cuts long pairs (TEI's auto-truncate)

    def invalid(exc: InvalidInputError) -> HTTPError:
        item = "query" if exc.index is None or exc.reason.startswith("query") else f"texts[{exc.index}]"
        status = 413 if "; the limit is" in exc.reason else 400
        return HTTPError(status, f"{item}: {exc.reason}", param=item, code="invalid_input")

    try:
        query_tokens = model.count(query, None, add_special=False)
        usage = sum(model.pair_tokens(query_tokens, doc, i) for i, doc in enumerate(texts))
    except InvalidInputError as exc:
        raise invalid(exc) from None
    call = state.engine.arerank(query, texts, model=name, activation="identity" if raw else None)
    ranked = await answer(state, request, call, len(texts), invalid)
    state.metrics.served(len(texts), usage)
    results = []
    for item in ranked:
        result: dict[str, Any] = {"index": item["corpus_id"], "score": item["score"]}
        if return_text:
            result["text"] = texts[item["corpus_id"]]
        results.append(result)
    return JSONResponse(results)


async def rerank(request: Request) -> Response:
    """``POST /rerank``: TEI's body (``texts``) or Jina's and Cohere's (``documents``, in OpenAI's error shape)."""
    body = await read_object(request, server_state(request).limits)
    if "texts" in body and "documents" not in body:
        try:
            return await tei_rerank_body(request, body)
        except HTTPError as exc:
            exc.shape = tei_error
            raise
    return await rerank_body(request, body)


async def predict(request: Request) -> Response:
    """``POST /predict``: TEI's sequence classification; no classifier model is served (424)."""
    await read_object(request, server_state(request).limits)
    raise HTTPError(
        424,
        "model is not a classifier model: embellama serves embedding models and rerankers; score (query, text) "
        "pairs with POST /rerank",
        code="not_supported",
    )


async def embed_sparse(request: Request) -> Response:
    """``POST /embed_sparse``: TEI's sparse (SPLADE) embeddings; not available (424)."""
    await read_object(request, server_state(request).limits)
    raise HTTPError(
        424,
        "model is not a sparse (SPLADE) embedding model: embellama gives dense vectors; use POST /embed",
        code="not_supported",
    )


def _special_ids(model: ServedModel) -> set[int]:
    special = model.vocab.special_tokens
    return {*special.prefix, *special.suffix}


def _token_texts(model: ServedModel, ids: list[int], special: set[int]) -> list[str]:
    """The tokens' texts as the Hugging Face tokenizer writes them: llama.cpp keeps a WordPiece vocabulary with
    "\u2581" before a word's first piece and nothing before the rest; Hugging Face's has nothing before the first
    and "##" before the rest."""
    texts = [model.vocab.token_text(t) for t in ids]
    if model.vocab.vocab_type != "wpm":
        return texts
    return [
        t if i in special or (t.startswith("[") and t.endswith("]")) else t[1:] if t.startswith("\u2581") else "##" + t
        for i, t in zip(ids, texts, strict=True)
    ]


async def tokenize_body(request: Request, body: dict[str, Any]) -> Response:
    """TEI's ``POST /tokenize``: each input's tokens ``{"id", "text", "special", "start", "stop"}`` (the
    vocabulary's token text; no character offsets: ``start`` and ``stop`` are null)."""
    state = server_state(request)
    name, model = state.pick(body, _kind_of(state, body))
    _, texts = _inputs(body, state, tokens=False)
    add_special = _flag(body, "add_special_tokens", True)
    prompt = prompt_text(model, body.get("prompt_name")) if model.kind == EMBEDDING else None
    special = _special_ids(model)
    out = []
    for i, text in enumerate(texts):
        try:
            model.count(text, i)
            ids = model.vocab.tokenize(
                (prompt or "") + text, add_special=add_special, parse_special=model.config.parse_special
            )
        except InvalidInputError as exc:
            raise tei_input_error(InvalidInputError(exc.reason, name, i)) from None
        tokens = ids.tolist()
        out.append(
            [
                {"id": t, "text": piece, "special": t in special, "start": None, "stop": None}
                for t, piece in zip(tokens, _token_texts(model, tokens, special), strict=True)
            ]
        )
    return JSONResponse(out)


async def tokenize(request: Request) -> Response:
    """``POST /tokenize``: llama-server's body (``content``, in OpenAI's error shape) or TEI's (``inputs``)."""
    body = await read_object(request, server_state(request).limits)
    if "content" in body and "inputs" not in body:
        try:
            return await llamacpp.tokenize_body(request, body)
        except HTTPError as exc:
            exc.shape = openai_error
            raise
    return await tokenize_body(request, body)


def _decode(model: ServedModel, ids: list[int], skip_special: bool) -> str:
    """The text of ``ids`` as the Hugging Face tokenizer decodes it: llama.cpp's text (without its space before a
    WordPiece vocabulary's first word); unless ``skip_special``, the special tokens written out between the words
    (llama.cpp leaves them out)."""
    vocab = model.vocab
    wpm = vocab.vocab_type == "wpm"
    if skip_special:
        text = vocab.detokenize(ids, remove_special=True)
        return text[1:] if wpm and text.startswith(" ") else text
    special = _special_ids(model)
    parts: list[str] = []
    run: list[int] = []
    for t in [*ids, -1]:
        text = vocab.token_text(t) if t >= 0 else ""
        if t >= 0 and t not in special and not (wpm and text.startswith("[") and text.endswith("]")):
            run.append(t)
            continue
        if run:
            parts.append(vocab.detokenize(run).strip() if wpm else vocab.detokenize(run))
            run = []
        if t >= 0:
            parts.append(text)
    return (" " if wpm else "").join(parts)


async def decode(request: Request) -> Response:
    """``POST /decode``: ``ids`` (a list, or a list of lists) back to text, one string per list."""
    state = server_state(request)
    body = await read_object(request, state.limits)
    _, model = state.pick(body, _kind_of(state, body))
    ids = body.get("ids")
    if isinstance(ids, list) and ids and all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
        ids = [ids]
    if not isinstance(ids, list) or not ids or not all(isinstance(x, list) for x in ids):
        raise HTTPError(400, "'ids' must be a list of token ids or a list of lists of them", param="ids")
    check_count(ids, "ids", state.limits)
    skip = _flag(body, "skip_special_tokens", True)
    texts = []
    for i, row in enumerate(ids):
        try:
            array = model.checked_ids(row, i) if row else np.zeros(0, dtype=np.int32)
        except InvalidInputError as exc:
            raise HTTPError(400, f"ids[{i}]: {exc.reason}", param=f"ids[{i}]", code="invalid_input") from None
        texts.append(_decode(model, array.tolist(), skip))
    return JSONResponse(texts)


def _kind_of(state: ServerState, body: dict[str, Any]) -> str:
    """The kind of the model a body names (default: the default model's)."""
    name = body.get("model")
    chosen = state.served.get(name if isinstance(name, str) else state.engine.default_model or "")
    if chosen is None:
        chosen = next(iter(state.served.values()))
    return chosen.kind


_DTYPES = {0: "float32", 1: "float16", 7: "q8_0", 32: "bfloat16"}
"""TEI's ``model_dtype`` of llama.cpp's commonest weight types (``enum llama_ftype``)."""


def model_type(model: ServedModel) -> dict[str, Any]:
    """TEI's ``model_type`` of a served model."""
    if model.kind == RERANKER:
        labels = model.labels or [f"LABEL_{i}" for i in range(model.num_labels)]
        return {
            "reranker": {
                "id2label": {str(i): label for i, label in enumerate(labels)},
                "label2id": {label: i for i, label in enumerate(labels)},
            }
        }
    return {"embedding": {"pooling": model.pooling}}


async def info(request: Request) -> Response:
    """``GET /info``: TEI's description of the (default) model and the server's limits."""
    state = server_state(request)
    name = request.query_params.get("model") or state.engine.default_model or next(iter(state.served))
    model = state.served.get(name)
    if model is None:
        raise HTTPError(404, f"The model '{name}' does not exist; models: {sorted(state.served)}", param="model")
    engine = state.engine.config
    return JSONResponse(
        {
            "model_id": name,
            "model_sha": None,
            "model_dtype": _DTYPES.get(model.file_type, f"gguf file type {model.file_type}"),
            "model_type": model_type(model),
            "max_concurrent_requests": engine.max_pending or 0,
            "max_input_length": model.max_tokens,
            "max_batch_tokens": model.max_tokens,
            "max_batch_requests": engine.max_batch_texts or None,
            "max_client_batch_size": state.limits.max_inputs,
            "auto_truncate": bool(model.config.truncate),
            "tokenization_workers": 1,
            "version": __version__,
            "sha": None,
            "docker_label": None,
            "prompts": model.prompts or None,
            "models": sorted(state.served),
        }
    )


async def root(request: Request) -> Response:
    """``POST /`` (and ``/invocations``): TEI's route by the model's kind, which ``huggingface_hub``'s
    ``InferenceClient(base_url=...)`` posts to: /embed for an embedding model (/similarity for a body whose
    ``inputs`` is a ``source_sentence`` and its ``sentences``), /rerank for a reranker.

    A body with ``parameters`` is a Hugging Face pipeline request (text classification): 424, as /predict.
    """
    state = server_state(request)
    body = await read_object(request, state.limits)
    if _kind_of(state, body) == RERANKER:
        return await tei_rerank_body(request, body)
    if isinstance(body.get("inputs"), dict):  # InferenceClient.sentence_similarity's body
        return await similarity_body(request, body)
    if "parameters" in body:
        raise HTTPError(
            424,
            "model is not a classifier model: POST / of an embedding model takes TEI's /embed body "
            '({"inputs": ...}), not a text-classification request',
            code="not_supported",
        )
    return await embed_body(request, body)


ROUTES: list[tuple[str, Any, list[str], ErrorShape]] = [
    ("/embed", embed, ["POST"], tei_error),
    ("/embed_all", embed_all, ["POST"], tei_error),
    ("/similarity", similarity, ["POST"], tei_error),
    ("/embed_sparse", embed_sparse, ["POST"], tei_error),
    ("/rerank", rerank, ["POST"], openai_error),
    ("/predict", predict, ["POST"], tei_error),
    ("/tokenize", tokenize, ["POST"], tei_error),
    ("/decode", decode, ["POST"], tei_error),
    ("/info", info, ["GET"], tei_error),
    ("/", root, ["POST"], tei_error),
    ("/invocations", root, ["POST"], tei_error),
]
"""TEI's routes: (path, handler, methods, error shape)."""
