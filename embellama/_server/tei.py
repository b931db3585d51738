# SPDX-License-Identifier: Apache-2.0
"""Hugging Face text-embeddings-inference's (TEI's) API on the one engine: /embed, /embed_all, /rerank (TEI's body),
/tokenize (TEI's body), /decode, /info, /predict (a classifier's single texts, a reranker's pairs), /embed_sparse (a
sparse model), embellama's /embed_multi (a multi-vector model's token vectors) and ``POST /`` (and /invocations) by
model kind.

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
from embellama._engine import CLASSIFIER, EMBEDDING, MULTI_VECTOR, RERANKER, SPARSE
from embellama._exceptions import InvalidInputError
from embellama._models import EmbeddingModel, context_params
from embellama._server import llamacpp
from embellama._server.errors import ErrorShape, HTTPError, openai_error, tei_error
from embellama._server.routes import answer, rerank_body
from embellama._server.schemas import ServedModel, check_count, read_object
from embellama._server.state import KIND_NAMES, ServerState, server_state
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


_NOT_SERVED = {
    CLASSIFIER: "model is not a classifier model: the server serves no classifier (a *ForSequenceClassification GGUF "
    "served with kind 'classifier'); score (query, text) pairs with POST /rerank",
    SPARSE: "model is not a sparse (SPLADE) embedding model: the server serves no sparse model (a GGUF with a SPLADE "
    "or bge-m3 sparse head in its .heads.npz); use POST /embed",
    MULTI_VECTOR: "model is not a multi-vector (ColBERT) model: the server serves no model with a ColBERT projection "
    "in its .heads.npz; use POST /embed_all for raw token vectors",
}


def _pick_output(state: ServerState, body: dict[str, Any], kind: str) -> tuple[str, ServedModel]:
    """The model a body for ``kind``'s route names (default: the default model, else the first of ``kind``); 424 when
    no model of ``kind`` is served, or the one named is of another kind."""
    if body.get("model") is None and not any(m.kind == kind for m in state.served.values()):
        raise HTTPError(424, _NOT_SERVED[kind], code="not_supported")
    return state.pick(body, kind)


def _output_texts(body: dict[str, Any], state: ServerState, model: ServedModel) -> tuple[list[str], int]:
    """The texts of a /predict, /embed_sparse or /embed_multi body and the tokens the model sees of them.

    A text over the model's limit is cut from the right by the model when it is served with truncation (TEI's
    auto-truncate, whatever ``truncate`` says), else refused (413); ``truncation_direction`` 'Left' is refused for
    such a text (these outputs are computed from the texts, which the model cuts from the right).
    """
    _, texts = _inputs(body, state, tokens=False)
    _flag(body, "truncate", False)  # checked: a model served with truncation cuts long texts
    left = _direction(body)
    prompt = prompt_text(model, body.get("prompt_name")) if model.prompts or body.get("prompt_name") else None
    usage = 0
    for i, text in enumerate(texts):
        try:
            n = model.count(text, i)
            if prompt:
                n = model.count(prompt + text, i)
            if n > model.max_tokens and left:
                raise HTTPError(
                    400,
                    f"inputs[{i}] has {n} tokens, over the limit of {model.max_tokens}: {KIND_NAMES[model.kind]} cuts "
                    "long texts from the right only (truncation_direction 'Right')",
                    param="truncation_direction",
                )
            usage += model.limit(n, "text", i)
        except InvalidInputError as exc:
            raise tei_input_error(exc) from None
    return texts, usage


def _pairs(value: Any) -> list[tuple[str, str]] | None:
    """TEI's pair inputs: one ``[a, b]`` (a list of two strings) or a list of them; None when ``value`` is neither."""
    if isinstance(value, list) and len(value) == 2 and all(isinstance(x, str) for x in value):
        return [(value[0], value[1])]
    if isinstance(value, list) and value and all(isinstance(x, list) for x in value):
        if all(len(x) == 2 and all(isinstance(t, str) for t in x) for x in value):
            return [(x[0], x[1]) for x in value]
        raise HTTPError(400, "'inputs' as pairs must be [text, text] lists of two strings", param="inputs")
    return None


def _predict_model(state: ServerState, body: dict[str, Any]) -> tuple[str, ServedModel]:
    """The model of a /predict body: the one named; else, for ``[text, text]`` pairs, the default model when it is a
    reranker, else the first reranker; for texts, the default model when it is a classifier, else the first
    classifier; 424 when none is served."""
    if body.get("model") is not None:
        name = body["model"]
        chosen = state.served.get(name) if isinstance(name, str) else None
        return state.pick(body, RERANKER if chosen is not None and chosen.kind == RERANKER else CLASSIFIER)
    value = body["inputs"]
    pairs = isinstance(value, list) and bool(value) and all(isinstance(x, list) for x in value)
    pairs = pairs or (isinstance(value, list) and len(value) == 2 and all(isinstance(x, str) for x in value))
    kind = RERANKER if pairs and any(m.kind == RERANKER for m in state.served.values()) else CLASSIFIER
    if not any(m.kind == kind for m in state.served.values()):
        raise HTTPError(424, _NOT_SERVED[CLASSIFIER], code="not_supported")
    return state.pick(body, kind)


def _ranked_labels(scores: npt.NDArray[np.float32], labels: list[str], top_k: int | None) -> list[Any]:
    """Each row of ``scores`` as ``[{"label", "score"}, ...]``, the best first (``top_k`` of them)."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
    values = np.take_along_axis(scores, order, axis=1).tolist()
    return [
        [{"label": labels[j], "score": float(v)} for j, v in zip(row, vals, strict=True)]
        for row, vals in zip(order.tolist(), values, strict=True)
    ]


_FUNCTIONS = {"softmax": "softmax", "sigmoid": "sigmoid", "none": "identity"}
"""A Hugging Face pipeline's ``function_to_apply`` as :meth:`Classifier.predict`'s activation."""


def _pipeline_parameters(body: dict[str, Any]) -> tuple[int | None, str | None]:
    """``top_k`` and the activation of a text-classification pipeline body's ``parameters``."""
    parameters = body.get("parameters")
    if parameters is None:
        return None, None
    if not isinstance(parameters, dict):
        raise HTTPError(400, "'parameters' must be an object", param="parameters")
    top_k, function = parameters.get("top_k"), parameters.get("function_to_apply")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise HTTPError(400, f"'parameters.top_k' must be a positive int, got {top_k!r:.40}", param="parameters")
    if function is not None and (not isinstance(function, str) or function.lower() not in _FUNCTIONS):
        raise HTTPError(
            400, f"'parameters.function_to_apply' must be softmax, sigmoid or none, got {function!r:.40}",
            param="parameters",
        )  # fmt: skip
    return top_k, _FUNCTIONS[function.lower()] if function is not None else None


async def predict_body(request: Request, body: dict[str, Any], pipeline: bool = False) -> Response:
    """TEI's ``POST /predict``: each input's labels ``[{"label", "score"}]``, the best first (one list for one input,
    a list per input for a list); a classifier scores single texts, a reranker (cross-encoder) ``[text, text]``
    pairs. ``raw_scores``: logits. ``pipeline``: a Hugging Face pipeline body (``POST /`` with ``parameters``, as
    ``InferenceClient.text_classification`` sends): always a list per input, ``parameters.top_k`` and
    ``function_to_apply`` honoured."""
    state = server_state(request)
    if "inputs" not in body:
        raise HTTPError(400, "'inputs' is required", param="inputs")
    name, model = _predict_model(state, body)
    raw = _flag(body, "raw_scores", False)
    top_k, activation = _pipeline_parameters(body) if pipeline else (None, None)
    if raw:
        activation = "identity"
    value = body["inputs"]
    call: Any
    if model.kind == RERANKER:
        pairs = _pairs(value)
        if pairs is None:
            raise HTTPError(
                400,
                f"The model '{name}' is a reranker: 'inputs' must be a [text, text] pair or a list of them",
                param="inputs",
            )
        check_count(pairs, "inputs", state.limits)
        _flag(body, "truncate", False)
        _direction(body)

        def invalid(exc: InvalidInputError) -> HTTPError:
            return tei_input_error(exc)

        try:
            usage = sum(model.pair_tokens(model.count(q, i, add_special=False), d, i) for i, (q, d) in
                        enumerate(pairs))  # fmt: skip
        except InvalidInputError as exc:
            raise invalid(exc) from None
        count = len(pairs)
        call = state.engine.apredict(pairs, model=name, activation=activation)
        single = len(pairs) == 1 and not (isinstance(value, list) and isinstance(value[0], list))
    else:
        if isinstance(value, list) and value and all(isinstance(x, list) for x in value):
            raise HTTPError(
                424, f"The model '{name}' is a classifier: it scores single texts, not pairs; send pairs to a "
                "reranker", code="wrong_model_kind",
            )  # fmt: skip
        texts, usage = _output_texts(body, state, model)
        count = len(texts)
        single = isinstance(value, str)
        call = state.engine.aclassify(texts, model=name, raw=activation == "identity", activation=activation)
    scores = await answer(state, request, call, count, tei_input_error)
    scores = np.asarray(scores, dtype=np.float32).reshape(count, -1)
    state.metrics.served(count, usage)
    ranked = _ranked_labels(scores, model.output_labels, top_k)
    return JSONResponse(ranked if pipeline or not single else ranked[0])


async def predict(request: Request) -> Response:
    """``POST /predict``."""
    return await predict_body(request, await read_object(request, server_state(request).limits))


async def embed_sparse_body(request: Request, body: dict[str, Any]) -> Response:
    """``POST /embed_sparse``: TEI's sparse embeddings, ``[{"index", "value"}, ...]`` per input (the non-zero
    weights, by index), from a served sparse model (SPLADE, bge-m3's sparse head)."""
    state = server_state(request)
    name, model = _pick_output(state, body, SPARSE)
    texts, usage = _output_texts(body, state, model)
    call = state.engine.aembed_sparse(texts, model=name, prompt_name=body.get("prompt_name"))
    vectors = await answer(state, request, call, len(texts), tei_input_error)
    state.metrics.served(len(texts), usage)
    return JSONResponse(
        [
            [{"index": i, "value": v} for i, v in zip(e.indices.tolist(), e.values.tolist(), strict=True)]
            for e in vectors
        ]
    )


async def embed_sparse(request: Request) -> Response:
    """``POST /embed_sparse``."""
    return await embed_sparse_body(request, await read_object(request, server_state(request).limits))


async def embed_multi_body(request: Request, body: dict[str, Any]) -> Response:
    """``POST /embed_multi`` (embellama's, in TEI's style): a multi-vector (ColBERT) model's token vectors, one list
    of vectors per input; ``is_query`` encodes queries (the query marker and ``[MASK]`` augmentation where the model
    has them), else documents."""
    state = server_state(request)
    name, model = _pick_output(state, body, MULTI_VECTOR)
    texts, usage = _output_texts(body, state, model)
    is_query = _flag(body, "is_query", False)
    call = state.engine.aembed_multi(texts, model=name, is_query=is_query, prompt_name=body.get("prompt_name"))
    matrices = await answer(state, request, call, len(texts), tei_input_error)
    state.metrics.served(len(texts), usage)
    return JSONResponse([m.tolist() for m in matrices])


async def embed_multi(request: Request) -> Response:
    """``POST /embed_multi``."""
    return await embed_multi_body(request, await read_object(request, server_state(request).limits))


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
    if model.kind in (RERANKER, CLASSIFIER):
        labels = model.output_labels
        return {
            model.kind: {
                "id2label": {str(i): label for i, label in enumerate(labels)},
                "label2id": {label: i for i, label in enumerate(labels)},
            }
        }
    return {"embedding": {"pooling": "splade" if model.kind == SPARSE else model.pooling}}


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
    ``inputs`` is a ``source_sentence`` and its ``sentences``), /rerank for a reranker, /predict for a classifier
    (a body with ``parameters``, as ``InferenceClient.text_classification`` sends, answered in the pipeline's
    shape), /embed_sparse for a sparse model, /embed_multi for a multi-vector model.

    A body with ``parameters`` for an embedding model is a text-classification request: 424, as /predict.
    """
    state = server_state(request)
    body = await read_object(request, state.limits)
    kind = _kind_of(state, body)
    if kind == RERANKER:
        return await tei_rerank_body(request, body)
    if kind == CLASSIFIER:
        return await predict_body(request, body, pipeline="parameters" in body)
    if kind == SPARSE:
        return await embed_sparse_body(request, body)
    if kind == MULTI_VECTOR:
        return await embed_multi_body(request, body)
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
    ("/embed_multi", embed_multi, ["POST"], tei_error),
    ("/rerank", rerank, ["POST"], openai_error),
    ("/predict", predict, ["POST"], tei_error),
    ("/tokenize", tokenize, ["POST"], tei_error),
    ("/decode", decode, ["POST"], tei_error),
    ("/info", info, ["GET"], tei_error),
    ("/", root, ["POST"], tei_error),
    ("/invocations", root, ["POST"], tei_error),
]
"""TEI's routes: (path, handler, methods, error shape)."""
