# SPDX-License-Identifier: Apache-2.0
"""Models by name: ``from_pretrained``'s body, and an ``hf://`` model path resolved to its cached file when a
model loads (:mod:`embellama._hub`: the cache first, the network only for a missing file)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, TypeVar

from embellama._config import ModelConfig
from embellama._exceptions import ConfigurationError
from embellama._hub.reference import HubFile, is_reference
from embellama._hub.resolve import resolve, resolve_path

__all__ = ["HubFile", "from_pretrained", "model_file", "resolve_config"]

_T = TypeVar("_T")


def model_file(config: ModelConfig) -> tuple[Path, HubFile | None]:
    """The GGUF file ``config`` names: its ``model_path``, or an ``hf://`` reference's cached (or downloaded)
    file with where it came from."""
    return resolve_path(config.model_path)


def resolve_config(config: ModelConfig) -> ModelConfig:
    """``config`` with an ``hf://`` model_path replaced by the cached file; others as they are.

    An explicit ``model_name`` is kept; the default one (the reference's stem, ``*Q8_0`` for a glob) becomes
    the file's stem, as for a model given by path.
    """
    if not is_reference(config.model_path):
        return config
    path, _ = model_file(config)
    defaulted = config.name == Path(config.model_path).stem
    return dataclasses.replace(config, model_path=path, model_name=path.stem if defaulted else config.name)


def from_pretrained(
    cls: type[_T],
    repo_id: str,
    filename: str | None,
    *,
    revision: str | None,
    cache_dir: str | os.PathLike[str] | None,
    config: dict[str, Any],
) -> _T:
    """A model of class ``cls`` for ``repo_id``'s ``filename`` (see ``LlamaModel.from_pretrained``)."""
    if "model_path" in config:
        raise ConfigurationError(f"from_pretrained({repo_id!r}): model_path comes from the repository; do not pass it")
    found = resolve(repo_id, filename, revision=revision, cache_dir=cache_dir)
    model = cls(ModelConfig(model_path=found.path, **config))  # type: ignore[call-arg]
    model._source = found  # type: ignore[attr-defined]
    return model
