# SPDX-License-Identifier: Apache-2.0
"""Prompts in files: a sentence-transformers folder's, and written into a GGUF's metadata."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from embellama._compute.prompts import DEFAULT_PROMPT_KEY, PROMPTS_KEY, check_prompts, effective_prompts
from embellama._exceptions import ConfigurationError, ModelNotFoundError
from embellama._gguf import reader as _gguf
from embellama._gguf.reader import require_gguf

__all__ = ["hf_prompts", "write_prompts"]


def hf_prompts(hf_dir: str | os.PathLike[str]) -> tuple[dict[str, str], str | None]:
    """The prompts and default prompt name of a sentence-transformers folder
    (``config_sentence_transformers.json``; none when the file or its keys are absent)."""
    path = Path(hf_dir) / "config_sentence_transformers.json"
    if not path.is_file():
        return {}, None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigurationError(f"{path} is not JSON: {exc}") from None
    prompts = check_prompts(data.get("prompts") or {}, str(path)) or {}
    default = data.get("default_prompt_name")
    if default is not None and not isinstance(default, str):
        raise ConfigurationError(f"{path}: default_prompt_name must be a str or null, got {default!r}")
    return prompts, default


def write_prompts(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    prompts: Mapping[str, str],
    default_prompt_name: str | None = None,
) -> Path:
    """Copy the GGUF ``source`` to ``destination`` with the prompts in its metadata (needs the ``gguf`` package).

    Every other key and every tensor is copied unchanged; earlier prompt keys are replaced.
    ``destination`` is written atomically and may be ``source`` itself.
    """
    gguf = require_gguf("prompts")
    src, dst = Path(source), Path(destination)
    if not src.is_file():
        raise ModelNotFoundError(str(src))
    checked = check_prompts(prompts, str(src)) or {}
    if default_prompt_name is not None and default_prompt_name not in effective_prompts(checked, None):
        raise ConfigurationError(
            f"{src}: default_prompt_name {default_prompt_name!r} is not among the prompts {sorted(checked)}"
        )
    keys: dict[str, tuple[Any, Any]] = {
        PROMPTS_KEY: (json.dumps(checked, ensure_ascii=False), gguf.GGUFValueType.STRING)
    }
    if default_prompt_name is not None:
        keys[DEFAULT_PROMPT_KEY] = (default_prompt_name, gguf.GGUFValueType.STRING)
    return _gguf.rewrite(src, dst, why="prompts", set_keys=keys, drop_keys=(PROMPTS_KEY, DEFAULT_PROMPT_KEY))
