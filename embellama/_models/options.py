# SPDX-License-Identifier: Apache-2.0
"""What an EmbeddingModel call asks for, checked: its prompt, truncate_dim and precision, its other arguments,
its texts and token ids. Functions over their arguments; the model passes in what it has loaded."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from embellama._compute import output as _output
from embellama._compute import prompts as _prompts
from embellama._compute.pooling import Normalization, NormalizeSpec
from embellama._config import ModelConfig
from embellama._exceptions import ConfigurationError, InvalidInputError
from embellama._gguf.known import KnownModel
from embellama._models.base import truncate_tokens
from embellama.llama import Model

__all__ = [
    "PLAIN",
    "Options",
    "Prompts",
    "check_streamable",
    "check_token_ids",
    "encode_options",
    "text_preview",
    "text_tokens",
]


class Options(NamedTuple):
    """What one call asks beyond the texts: the prompt text, truncate_dim and precision in effect, and the task
    whose LoRA adapter it runs with (None: no task)."""

    prompt: str | None
    truncate_dim: int | None
    precision: str
    task: str | None = None

    @property
    def plain(self) -> bool:
        """Whether the vectors leave as they are pooled and normalized (no cut, float32)."""
        return self.truncate_dim is None and self.precision == "float32"


PLAIN = Options(None, None, "float32")


class Prompts:
    """The prompts of one loaded model (name to text), its default prompt's name, and each used prompt's length.

    Parameters
    ----------
    texts : dict of str to str, optional
        The prompts in effect.
    default : str, optional
        The prompt applied when a call names none.
    """

    def __init__(self, texts: dict[str, str] | None = None, default: str | None = None) -> None:
        self.texts: dict[str, str] = dict(texts or {})
        self.default = default
        self._counts: dict[str, int] = {}  # prompt text: its tokens with the special tokens

    @classmethod
    def read(cls, model: Model, config: ModelConfig, known: KnownModel | None = None) -> Prompts:
        """The prompts in effect and the default prompt name: the GGUF's (else the ``known`` model's, when the GGUF
        carries none), overridden by the config's.

        Raises
        ------
        ConfigurationError
            A malformed saved prompt table, or a default prompt name that is not among the prompts.
        """
        who = f"model {config.name!r}"
        saved_default = model.metadata_value(_prompts.DEFAULT_PROMPT_KEY)
        saved_json = model.metadata_value(_prompts.PROMPTS_KEY)
        saved = _prompts.parse_saved_prompts(saved_json, who)
        if saved_json is None and saved_default is None and known is not None:
            saved, saved_default = dict(known.prompts), known.default_prompt_name  # a GGUF's own prompts win
        texts = _prompts.effective_prompts(saved, config.prompts)
        default = config.default_prompt_name if config.default_prompt_name is not None else saved_default
        if default is not None and default not in texts:
            raise ConfigurationError(f"{who}: default_prompt_name {default!r} is not among its prompts {sorted(texts)}")
        return cls(texts, default)

    def options(
        self,
        model: Model,
        config: ModelConfig,
        max_tokens: int,
        prompt_name: str | None,
        prompt: str | None,
        truncate_dim: int | None,
        precision: str | None,
    ) -> Options:
        """A call's prompt text, truncate_dim and precision: its own, else the config's.

        Raises
        ------
        ConfigurationError
            An unknown prompt name, a prompt that leaves no room for text, a bad truncate_dim or precision.
        """
        who = f"model {config.name!r}"
        text = _prompts.resolve_prompt(self.texts, self.default, prompt, prompt_name, who)
        if text:
            self._check_room(model, config, max_tokens, text)
        dim = model.n_embd
        cut = _output.check_truncate_dim(config.truncate_dim if truncate_dim is None else truncate_dim, who, dim)
        kind = _output.check_precision(config.precision if precision is None else precision, who)
        return Options(text or None, None if cut == dim else cut, kind)

    def _check_room(self, model: Model, config: ModelConfig, max_tokens: int, prompt: str) -> None:
        """A prompt must leave room for text within max_tokens: truncation never cuts into it."""
        count = self._counts.get(prompt)
        if count is None:
            count = len(model.tokenize(prompt, add_special=True, parse_special=config.parse_special))
            self._counts[prompt] = count
        if count >= max_tokens:
            raise ConfigurationError(
                f"model {config.name!r}: the prompt {prompt[:40]!r} takes {count} tokens with the special tokens, "
                f"leaving no room for text within max_tokens ({max_tokens})"
            )


def text_tokens(
    model: Model,
    text: Any,
    index: int | None,
    *,
    truncate: bool,
    limit: int,
    parse_special: bool,
    name: str,
    prompt: str | None = None,
    cuts: dict[int, int] | None = None,
) -> npt.NDArray[np.int32]:
    """One text checked and tokenized with the special tokens (``prompt`` first), cut to ``limit`` tokens when
    ``truncate``; errors name the model ``name`` and the text's ``index``. A cut text's lost tokens go into
    ``cuts[index]`` (``index`` 0 when None).

    Raises
    ------
    InvalidInputError
        The text is not a str, is empty or not valid Unicode, or is too long and ``truncate`` is false.
    """
    if not isinstance(text, str):
        raise InvalidInputError(f"expected str, got {type(text).__name__}", name, index)
    if not text:
        raise InvalidInputError("text is empty", name, index)
    if prompt:
        text = prompt + text  # as sentence-transformers: the prompt is part of the text, cut last
    try:
        ids = model.tokenize(text, add_special=True, parse_special=parse_special)
    except InvalidInputError as exc:
        raise InvalidInputError(exc.reason, name, index) from None
    if len(ids) > limit:
        if not truncate:
            raise InvalidInputError(
                f"text has {len(ids)} tokens; the limit is {limit}: {text_preview(text)} (set truncate=True to cut "
                "it, or embed it in chunks with overflow='chunk')",
                name,
                index,
            )
        if cuts is not None:
            cuts[index or 0] = len(ids) - limit
        ids = truncate_tokens(ids, limit, model.special_tokens.suffix)
    return ids


def text_preview(text: str, width: int = 40) -> str:
    """The start of ``text`` for a message: repr of at most ``width`` characters, with an ellipsis if longer."""
    return repr(text[:width] + "...") if len(text) > width else repr(text)


def check_token_ids(token_ids: Iterable[Any], n_vocab: int, limit: int, name: str) -> list[npt.NDArray[np.int32]]:
    """Texts given as token ids, as int32 arrays: each non-empty, 1-D, within ``[0, n_vocab)`` and ``limit`` long.

    Raises
    ------
    InvalidInputError
        An array breaks one of those rules (naming the model ``name`` and the array's index).
    """
    arrays = []
    for i, ids in enumerate(token_ids):
        array = np.asarray(ids)
        if array.ndim != 1 or array.size == 0 or not np.issubdtype(array.dtype, np.integer):
            raise InvalidInputError("token ids must be a non-empty 1-D array of ints", name, i)
        if int(array.min()) < 0 or int(array.max()) >= n_vocab:
            raise InvalidInputError(f"token ids must be in [0, {n_vocab})", name, i)
        if array.size > limit:
            raise InvalidInputError(f"token array has {array.size} tokens; the limit is {limit}", name, i)
        arrays.append(array.astype(np.int32))
    return arrays


def encode_options(
    normalize_embeddings: Any,
    prompt_name: str | None,
    prompt: str | None,
    truncate_dim: int | None,
    precision: str | None,
    name: str,
    task: str | None = None,
) -> dict[str, Any]:
    """``encode``'s arguments as ``embed``/``embed_batch`` keywords (``normalize_embeddings`` becomes L2).

    Raises
    ------
    ConfigurationError
        ``normalize_embeddings`` is not a bool.
    """
    if not isinstance(normalize_embeddings, bool):
        raise ConfigurationError(f"model {name!r}: normalize_embeddings must be a bool, got {normalize_embeddings!r}")
    norm: NormalizeSpec | None = Normalization.L2 if normalize_embeddings else None
    return {
        "normalize": norm,
        "prompt_name": prompt_name,
        "prompt": prompt,
        "truncate_dim": truncate_dim,
        "precision": precision,
        "task": task,
    }


def check_streamable(options: Options, name: str) -> None:
    """``embed_iter``'s options: no calibrated precision.

    Raises
    ------
    ConfigurationError
        int8/uint8 precision (each chunk would be calibrated on its own ranges).
    """
    if options.precision in _output.CALIBRATED:
        raise ConfigurationError(
            f"model {name!r}: embed_iter cannot give {options.precision}: each chunk would be calibrated on "
            "its own ranges; embed float32 and use quantize_embeddings(..., ranges=...), or embed_batch"
        )
