# SPDX-License-Identifier: Apache-2.0
"""What the framework adapters share: the model behind an adapter (an engine of its own, loaded on first use, or a
running :class:`EmbeddingEngine` shared by name), its query and document prompts, and its settings as JSON."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from embellama._compute import prompts as _prompts
from embellama._config import ModelConfig
from embellama._engine import EmbeddingEngine
from embellama._exceptions import ConfigurationError, ResourceClosedError

__all__ = ["EMBEDDING", "RERANKER", "Backend", "ModelSource", "missing_extra"]

EMBEDDING, RERANKER = "embedding", "reranker"
QUERY, DOCUMENT = "query", "document"

ModelSource = str | os.PathLike[str] | ModelConfig
_FIELDS = {f.name: f for f in dataclasses.fields(ModelConfig)}


def missing_extra(extra: str, package: str, who: str) -> ImportError:
    """The error of an adapter whose framework is not installed, naming the extra that installs it."""
    return ImportError(f"{who} needs {package} (not installed): pip install 'embellama[{extra}]'")


def _as_config(model: object, model_name: str | None, model_kwargs: Mapping[str, Any] | None, who: str) -> ModelConfig:
    kwargs = dict(model_kwargs or {})
    unknown = sorted(set(kwargs) - (set(_FIELDS) - {"model_path", "model_name"}))
    if unknown:
        raise ConfigurationError(
            f"{who}: model_kwargs may set ModelConfig's fields other than its path and name, not {', '.join(unknown)}"
        )
    if model_name is not None:
        kwargs["model_name"] = model_name
    if isinstance(model, ModelConfig):
        return dataclasses.replace(model, **kwargs) if kwargs else model
    if isinstance(model, (str, os.PathLike)):
        return ModelConfig(model_path=model, **kwargs)
    raise ConfigurationError(
        f"{who}: model must be a path, an hf:// reference or a ModelConfig, got {type(model).__name__}"
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    return value


def config_kwargs(config: ModelConfig) -> dict[str, Any]:
    """The fields of ``config`` that differ from ModelConfig's defaults, as JSON values (not its path or name)."""
    out: dict[str, Any] = {}
    for name, f in _FIELDS.items():
        if name in ("model_path", "model_name"):
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        value = getattr(config, name)
        if value != default:
            out[name] = _jsonable(value)
    return out


class Backend:
    """The model behind an adapter: an engine of its own (started on first use, closed by :meth:`close`) or a
    running engine and the name of one of its models (never closed here).

    Parameters
    ----------
    model : str, os.PathLike or ModelConfig, optional
        A GGUF path, an ``hf://`` reference or a ModelConfig; the adapter then owns an engine for it.
    engine : EmbeddingEngine, optional
        A running engine to share instead.
    model_name : str, optional
        With ``engine``: which of its models (default: its default model). With ``model``: the model's name.
    model_kwargs : mapping, optional
        More ModelConfig fields for ``model`` (``n_threads``, ``prompts``, ...).
    kind : str
        ``"embedding"`` or ``"reranker"``: what the adapter needs the model to be.
    who : str
        The adapter's name, for messages.
    """

    def __init__(
        self,
        model: ModelSource | None,
        *,
        engine: EmbeddingEngine | None,
        model_name: str | None,
        model_kwargs: Mapping[str, Any] | None,
        kind: str,
        who: str,
    ) -> None:
        self.kind = kind
        self.who = who
        self._lock = threading.Lock()
        self._closed = False
        self._prompts: tuple[str | None, str | None] | None = None
        if (model is None) == (engine is None):
            raise ConfigurationError(
                f"{who}: give either a model (a path, an hf:// reference or a ModelConfig) or engine= "
                "(a running EmbeddingEngine), not both"
            )
        if engine is not None:
            if not isinstance(engine, EmbeddingEngine):
                raise ConfigurationError(f"{who}: engine must be an EmbeddingEngine, got {type(engine).__name__}")
            if model_kwargs:
                raise ConfigurationError(
                    f"{who}: model_kwargs configure a model the adapter loads, not one of a shared engine"
                )
            name = engine.default_model if model_name is None else model_name
            if name is None or name not in engine.models:
                raise ConfigurationError(f"{who}: the engine has no model {name!r}; it has {engine.models}")
            self.config = engine.model_config(name)
            self.source = str(self.config.model_path)
            self._engine: EmbeddingEngine | None = engine
            self.owned = False
            self._check_kind(engine)
        else:
            self.config = _as_config(model, model_name, model_kwargs, who)
            self.source = os.fspath(model) if isinstance(model, (str, os.PathLike)) else str(self.config.model_path)
            self._engine = None
            self.owned = True

    @property
    def name(self) -> str:
        """The model's name in its engine."""
        return self.config.name

    @property
    def loaded(self) -> bool:
        """Whether the engine runs (a shared one always does; an own one after first use)."""
        return self._engine is not None

    def settings(self) -> dict[str, Any]:
        """``model``, ``model_name`` and ``model_kwargs`` as JSON values, which rebuild this model in an engine of
        its own (a shared engine's model too: its file and settings)."""
        return {"model": self.source, "model_name": self.name, "model_kwargs": config_kwargs(self.config)}

    @property
    def engine(self) -> EmbeddingEngine:
        """The engine, started (and the model loaded) on first use.

        Raises
        ------
        ResourceClosedError
            The adapter was closed.
        ModelNotFoundError, ModelLoadError, ConfigurationError
            The model could not be loaded, or is not of the kind the adapter needs.
        """
        with self._lock:
            if self._closed:
                raise ResourceClosedError(f"{self.who} for model {self.name!r} is closed")
            if self._engine is None:
                engine = EmbeddingEngine(self.config)
                try:
                    self._check_kind(engine)
                except BaseException:
                    engine.close()
                    raise
                self._engine = engine
            return self._engine

    async def aengine(self) -> EmbeddingEngine:
        """:attr:`engine` for coroutines: a first load runs on a thread, not on the event loop."""
        if self._engine is not None and not self._closed:
            return self._engine
        return await asyncio.to_thread(lambda: self.engine)

    def _check_kind(self, engine: EmbeddingEngine) -> None:
        kind = engine.info(self.name)["kind"]
        if kind != self.kind:
            kinds = {EMBEDDING: "an embedding model", RERANKER: "a reranker (cross-encoder)"}
            raise ConfigurationError(f"{self.who} needs {kinds[self.kind]}; model {self.name!r} is {kinds[kind]}")

    # -- embeddings ---------------------------------------------------------------------

    def prompt_name(self, engine: EmbeddingEngine, role: str) -> str | None:
        """The prompt a query or a document gets: ``encode_query``'s and ``encode_document``'s rules."""
        if self._prompts is None:
            prompts = engine.info(self.name)["prompts"]
            self._prompts = ("query" if "query" in prompts else None, _prompts.document_prompt_name(prompts))
        return self._prompts[0] if role == QUERY else self._prompts[1]

    def embed(
        self, texts: Sequence[str], role: str, *, batch_size: int | None = None, progress_bar: bool = False
    ) -> npt.NDArray[np.float32]:
        """``(len(texts), dim)`` float32 vectors of queries or documents (``role``), with their prompt."""
        engine = self.engine
        prompt_name = self.prompt_name(engine, role)
        return engine.embed_batch(
            list(texts), model=self.name, prompt_name=prompt_name, batch_size=batch_size, show_progress_bar=progress_bar
        )

    def embed_one(self, text: str, role: str) -> npt.NDArray[np.float32]:
        """The ``(dim,)`` vector of one query or document (joined with concurrent requests by dynamic batching)."""
        engine = self.engine
        return engine.embed(text, model=self.name, prompt_name=self.prompt_name(engine, role))

    async def aembed(self, texts: Sequence[str], role: str, *, batch_size: int | None = None) -> npt.NDArray[Any]:
        """:meth:`embed` for coroutines, through the engine's async calls."""
        engine = await self.aengine()
        prompt_name = self.prompt_name(engine, role)
        return await engine.aembed_batch(list(texts), model=self.name, prompt_name=prompt_name, batch_size=batch_size)

    async def aembed_one(self, text: str, role: str) -> npt.NDArray[Any]:
        """:meth:`embed_one` for coroutines."""
        engine = await self.aengine()
        return await engine.aembed(text, model=self.name, prompt_name=self.prompt_name(engine, role))

    # -- reranking ----------------------------------------------------------------------

    def rerank(self, query: str, documents: Sequence[str], top_k: int | None = None) -> list[dict[str, Any]]:
        """``Reranker.rank``'s rows (``corpus_id``, ``score``), best first; none for no documents."""
        if not documents:
            return []
        return self.engine.rerank(query, list(documents), model=self.name, top_k=top_k)

    async def arerank(self, query: str, documents: Sequence[str], top_k: int | None = None) -> list[dict[str, Any]]:
        """:meth:`rerank` for coroutines."""
        if not documents:
            return []
        engine = await self.aengine()
        return await engine.arerank(query, list(documents), model=self.name, top_k=top_k)

    def close(self) -> None:
        """Stop an engine of the adapter's own (a shared engine is left running); later calls raise."""
        with self._lock:
            self._closed = True
            engine, self._engine = self._engine, None
        if engine is not None and self.owned:
            engine.close()

    def __repr__(self) -> str:
        where = "own engine" if self.owned else "shared engine"
        return f"{self.who}(model={self.name!r}, {where})"
