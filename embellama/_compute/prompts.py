# SPDX-License-Identifier: Apache-2.0
"""Prompts, with sentence-transformers' rules.

Prompts are prepended to the text as strings before tokenization (so they count toward
``max_tokens``; truncation cuts the text's end, never the prompt). The prompts in effect are
``{"query": "", "document": ""}``, updated by the GGUF's own (metadata key ``embellama.prompts``,
a JSON object), updated by ``ModelConfig.prompts``; ``default_prompt_name`` comes from the config,
else from the GGUF (``embellama.default_prompt_name``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from embellama._exceptions import ConfigurationError

__all__ = [
    "DEFAULT_PROMPT_KEY",
    "PROMPTS_KEY",
    "check_prompts",
    "document_prompt_name",
    "effective_prompts",
    "parse_saved_prompts",
    "resolve_prompt",
]

logger = logging.getLogger("embellama")

PROMPTS_KEY = "embellama.prompts"
"""GGUF metadata key of the model's prompts: a JSON object of prompt name to prompt text."""

DEFAULT_PROMPT_KEY = "embellama.default_prompt_name"
"""GGUF metadata key of the prompt applied when a call names none (a string)."""

_BUILTIN_PROMPTS = {"query": "", "document": ""}  # sentence-transformers' SentenceTransformer defaults
DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")
"""Where ``encode_document`` looks for its prompt, in order (as sentence-transformers does)."""


def check_prompts(prompts: object, who: str) -> dict[str, str] | None:
    """A copy of ``prompts`` (a mapping of str to str, or None), else ConfigurationError naming ``who``."""
    if prompts is None:
        return None
    if not isinstance(prompts, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()
    ):
        raise ConfigurationError(
            f"{who}: prompts must be a mapping of prompt name to prompt text (str), got {prompts!r}"
        )
    return dict(prompts)


def effective_prompts(saved: Mapping[str, str], configured: Mapping[str, str] | None) -> dict[str, str]:
    """The prompts in effect: the built-in empty query/document prompts, the model's, then the config's."""
    return {**_BUILTIN_PROMPTS, **saved, **(configured or {})}


def resolve_prompt(
    prompts: Mapping[str, str], default_name: str | None, prompt: str | None, prompt_name: str | None, who: str
) -> str | None:
    """The prompt text a call uses (sentence-transformers' rule): ``prompt``, else ``prompts[prompt_name]``,
    else the default prompt's text, else None.

    Raises ConfigurationError for an unknown ``prompt_name`` (naming ``who`` and the known names) and
    for a ``prompt``/``prompt_name`` of the wrong type.
    """
    if prompt is not None and not isinstance(prompt, str):
        raise ConfigurationError(f"{who}: prompt must be a str or None, got {type(prompt).__name__}")
    if prompt_name is not None and not isinstance(prompt_name, str):
        raise ConfigurationError(f"{who}: prompt_name must be a str or None, got {type(prompt_name).__name__}")
    if prompt is not None:
        if prompt_name is not None:
            logger.warning("%s: both prompt and prompt_name given; using prompt, ignoring prompt_name", who)
        return prompt
    if prompt_name is not None:
        if prompt_name not in prompts:
            raise ConfigurationError(
                f"{who}: unknown prompt_name {prompt_name!r}; the model's prompts: {sorted(prompts)}"
            )
        return prompts[prompt_name]
    if default_name is not None:
        return prompts.get(default_name)
    return None


def document_prompt_name(prompts: Mapping[str, str]) -> str | None:
    """The prompt ``encode_document`` uses when the call names none."""
    return next((name for name in DOCUMENT_PROMPT_NAMES if name in prompts), None)


def parse_saved_prompts(prompts_json: str | None, who: str) -> dict[str, str]:
    """The prompts a GGUF carries (``embellama.prompts``); a malformed value raises ConfigurationError."""
    if prompts_json is None:
        return {}
    try:
        saved = json.loads(prompts_json)
    except ValueError as exc:
        raise ConfigurationError(f"{who}: GGUF key {PROMPTS_KEY} is not JSON: {exc}") from None
    checked = check_prompts(saved, f"{who}: GGUF key {PROMPTS_KEY}")
    return checked or {}
