# SPDX-License-Identifier: Apache-2.0
"""The texts of a TEI or Ollama embedding request as the engine runs them: the prompt, the token count, and where a
text over the model's limit is cut (right by the engine; left, or against the model's settings, here as token ids)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from starlette.requests import Request

from embellama._compute.pooling import Normalization
from embellama._compute.pooling import normalize as normalize_rows
from embellama._exceptions import InvalidInputError
from embellama._models import truncate_tokens
from embellama._server.errors import HTTPError
from embellama._server.routes import answer
from embellama._server.schemas import ServedModel
from embellama._server.state import ServerState

__all__ = ["Prepared", "check_dimensions", "cut_dimensions", "cut_left", "prepare_texts", "prompt_text", "run_vectors"]


@dataclasses.dataclass
class Prepared:
    """A request's texts ready for the engine."""

    texts: list[str]  # as sent
    arrays: list[npt.NDArray[np.int32]] | None  # token ids to run instead (None: the engine tokenizes ``texts``)
    prompt_name: str | None  # the prompt the engine prepends to ``texts`` (None: the model's default)
    usage: int  # tokens the model sees, all texts together


def prompt_text(model: ServedModel, prompt_name: Any) -> str | None:
    """The text of the prompt ``prompt_name`` (None: the model's default prompt, if any); 400 for an unknown one."""
    if prompt_name is None:
        return model.prompts.get(model.default_prompt_name or "")
    if not isinstance(prompt_name, str) or prompt_name not in model.prompts:
        raise HTTPError(
            400,
            f"'prompt_name' must be one of the model's prompts {sorted(model.prompts)}, got {prompt_name!r:.60}",
            param="prompt_name",
        )
    return model.prompts[prompt_name]


def cut_left(ids: npt.NDArray[np.int32], limit: int, keep: int, suffix: int) -> npt.NDArray[np.int32]:
    """``ids`` cut to ``limit`` tokens from the left: the first ``keep`` (special tokens, the prompt) and the last
    ``suffix`` (special tokens) stay, the text's start goes."""
    body = limit - keep - suffix
    if len(ids) <= limit or body < 1:
        return ids if len(ids) <= limit else ids[:limit]
    end = len(ids) - suffix
    return np.concatenate([ids[:keep], ids[end - body : end], ids[end:]])


def prepare_texts(
    model: ServedModel,
    texts: list[Any],
    *,
    truncate: bool,
    left: bool = False,
    prompt_name: Any = None,
    as_tokens: bool = False,
) -> Prepared:
    """``texts`` checked and counted for ``model``; over-long ones cut when ``truncate`` (from the left with
    ``left``), else refused.

    The engine takes the texts themselves when it can (so that the request joins dynamic batching): when none is
    over the limit, or the model cuts from the right itself. Otherwise, and with ``as_tokens``, the texts are
    tokenized here (the prompt first, as the engine does) and cut as asked.

    Raises
    ------
    InvalidInputError
        A text is not a str, is empty, or is over the limit and ``truncate`` is false.
    HTTPError
        An unknown ``prompt_name`` (400).
    """
    prompt = prompt_text(model, prompt_name)
    limit, vocab, config = model.max_tokens, model.vocab, model.config
    counts = []
    for i, text in enumerate(texts):
        n = model.count(text, i)  # the text's own checks (a str, not empty) first
        if prompt:
            n = model.count(prompt + text, i)
        if n > limit and not truncate:
            raise InvalidInputError(f"text has {n} tokens; the limit is {limit}", model.name, i)
        counts.append(n)
    over = any(n > limit for n in counts)
    name = prompt_name if isinstance(prompt_name, str) else None
    if not as_tokens and not (over and (left or not config.truncate)):
        return Prepared(texts, None, name, sum(min(n, limit) for n in counts))
    special = vocab.special_tokens
    keep = len(special.prefix) + (len(vocab.tokenize(prompt, add_special=False)) if prompt else 0)
    arrays = []
    for text in texts:
        ids = vocab.tokenize((prompt or "") + text, add_special=True, parse_special=config.parse_special)
        if len(ids) > limit:
            ids = (
                cut_left(ids, limit, keep, len(special.suffix)) if left else truncate_tokens(ids, limit, special.suffix)
            )
        arrays.append(ids)
    return Prepared(texts, arrays, name, sum(len(a) for a in arrays))


def cut_dimensions(vectors: npt.NDArray[np.float32], model: ServedModel, dimensions: int | None, norm: Any) -> Any:
    """``vectors`` cut to their first ``dimensions`` (sentence-transformers' truncate_dim), normalized again with
    ``norm`` as the model normalized them."""
    if dimensions is None or dimensions >= vectors.shape[1]:
        return vectors
    vectors = np.ascontiguousarray(vectors[:, :dimensions])
    if norm is not Normalization.NONE:
        vectors = normalize_rows(vectors, norm)
    return vectors


def check_dimensions(value: Any, model: ServedModel, field: str = "dimensions") -> int | None:
    """A request's ``dimensions``: None, or an int in [1, the model's dimensions] (400 otherwise)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= model.dimensions:
        raise HTTPError(400, f"'{field}' must be an int in [1, {model.dimensions}], got {value!r:.40}", param=field)
    return value


async def run_vectors(
    state: ServerState,
    request: Request,
    name: str,
    prepared: Prepared,
    normalize: bool | None,
    invalid: Callable[[InvalidInputError], HTTPError],
) -> npt.NDArray[np.float32]:
    """One vector per text of ``prepared`` from the engine (``normalize`` None: the model's normalization); a client
    that disconnects cancels it, the engine's errors become HTTP errors (``invalid`` for unusable input)."""
    if prepared.arrays is None:
        call = state.engine.aembed_batch(
            prepared.texts, model=name, normalize=normalize, prompt_name=prepared.prompt_name
        )
    else:
        if normalize is not None:
            raise HTTPError(
                400,
                "'normalize' other than the model's own needs texts the model cuts itself: send texts within the "
                "limit, or truncation_direction 'right'",
                param="normalize",
            )
        arrays = prepared.arrays

        def run_tokens(m: Any) -> Any:
            return m.embed_token_ids(arrays)

        call = state.engine.asubmit(run_tokens, model=name)
    vectors = await answer(state, request, call, len(prepared.texts), invalid)
    if isinstance(vectors, list):
        raise HTTPError(500, "the model's pooling is 'none': no single vector per input", kind="server_error")
    return np.asarray(vectors, dtype=np.float32)
