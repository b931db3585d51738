"""EmbeddingEngine: several named models, each owned by its own worker thread.

llama.cpp contexts are not thread-safe, so nothing is shared: every model lives in one
worker thread that loads it, runs every request for it and frees it. Callers from any
thread send requests as messages and wait on a :class:`concurrent.futures.Future`.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from ._config import ModelConfig, NormalizeSpec
from ._exceptions import ConfigurationError, ResourceClosedError
from ._model import EmbeddingModel

__all__ = ["EmbeddingEngine"]

logger = logging.getLogger("embellama")
T = TypeVar("T")
_STOP = object()


class _Worker:
    """One thread that owns one EmbeddingModel and serves requests for it in order."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.inbox: queue.Queue[Any] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name=f"embellama:{config.name}", daemon=True)
        self.ready: Future[dict[str, Any]] = Future()
        self.thread.start()

    def _run(self) -> None:
        model = EmbeddingModel(self.config)
        try:
            model.load()
            self.ready.set_result(_describe(model))
        except BaseException as exc:  # delivered to the thread that asked for the model
            self.ready.set_exception(exc)
            return
        try:
            while True:
                item = self.inbox.get()
                if item is _STOP:
                    break
                fn, future = item
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    future.set_result(fn(model))
                except BaseException as exc:
                    future.set_exception(exc)
        finally:
            model.unload()
            self._fail_pending()

    def _fail_pending(self) -> None:
        while True:
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP:
                item[1].set_exception(ResourceClosedError(f"model {self.config.name!r} was removed"))

    def submit(self, fn: Callable[[EmbeddingModel], T]) -> Future[T]:
        future: Future[T] = Future()
        self.inbox.put((fn, future))
        return future

    def stop(self, timeout: float | None = None) -> None:
        self.inbox.put(_STOP)
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout)


def _describe(model: EmbeddingModel) -> dict[str, Any]:
    return {
        "name": model.name,
        "path": str(model.config.model_path),
        "embedding_dimensions": model.embedding_dimensions,
        "max_sequence_length": model.max_sequence_length,
        "model_size": model.model_size,
        "pooling": model.pooling.value,
        "architecture": model.model.architecture,
    }


class EmbeddingEngine:
    """Serve several named embedding models; safe to call from any number of threads.

    >>> with EmbeddingEngine([ModelConfig(model_path="minilm.gguf")]) as engine:  # doctest: +SKIP
    ...     engine.embed("hello", model="minilm").shape
    (384,)

    Each model is loaded and used by its own worker thread. Requests for one model run
    one after another; different models run in parallel.
    """

    def __init__(self, configs: Iterable[ModelConfig] = (), *, default_model: str | None = None) -> None:
        self._workers: dict[str, _Worker] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._default = default_model
        for config in configs:
            self.add_model(config)
        if default_model is not None and default_model not in self._workers:
            raise ConfigurationError(f"default_model {default_model!r} is not among the models {self.models}")

    # -- models ----------------------------------------------------------------------

    def add_model(self, config: ModelConfig, *, timeout: float | None = None) -> dict[str, Any]:
        """Start a worker for ``config`` and load the model there; returns its description.

        Loading errors (missing file, bad config) are raised here, in the caller's thread.
        """
        if not isinstance(config, ModelConfig):
            raise ConfigurationError(f"expected a ModelConfig, got {type(config).__name__}")
        with self._lock:
            self._check_open()
            if config.name in self._workers:
                raise ConfigurationError(f"a model named {config.name!r} is already registered")
            worker = _Worker(config)
            self._workers[config.name] = worker
        try:
            info = worker.ready.result(timeout)
        except BaseException:
            with self._lock:
                self._workers.pop(config.name, None)
            raise
        if self._default is None:
            self._default = config.name
        return info

    def remove_model(self, name: str) -> None:
        """Stop the model's worker and free the model; pending requests fail."""
        with self._lock:
            worker = self._workers.pop(name, None)
            if worker is None:
                raise ConfigurationError(f"no model named {name!r}; models: {sorted(self._workers)}")
            if self._default == name:
                self._default = next(iter(self._workers), None)
        worker.stop()

    @property
    def models(self) -> list[str]:
        """Names of the registered models."""
        return list(self._workers)

    @property
    def default_model(self) -> str | None:
        """The model used when a call names none (the first added, unless set)."""
        return self._default

    def info(self, model: str | None = None) -> dict[str, Any]:
        """Dimensions, token limit, size and pooling of a model."""
        return self._worker(model).ready.result()

    # -- embeddings --------------------------------------------------------------------

    def submit(self, fn: Callable[[EmbeddingModel], T], *, model: str | None = None) -> Future[T]:
        """Run ``fn(embedding_model)`` on the model's worker thread; returns a Future."""
        return self._worker(model).submit(fn)

    def embed(
        self, text: str, *, model: str | None = None, normalize: NormalizeSpec | None = None
    ) -> npt.NDArray[np.float32]:
        """Embedding of one text with the named (or default) model."""
        return self.submit(lambda m: m.embed(text, normalize=normalize), model=model).result()

    def embed_batch(
        self,
        texts: Sequence[str],
        *,
        model: str | None = None,
        batch_size: int | None = None,
        normalize: NormalizeSpec | None = None,
        show_progress_bar: bool | None = None,
    ) -> npt.NDArray[np.float32]:
        """Embeddings of several texts with the named (or default) model, shape ``(n, dim)``."""
        texts = list(texts) if not isinstance(texts, (str, bytes)) else texts
        return self.submit(
            lambda m: m.embed_batch(
                texts, batch_size=batch_size, normalize=normalize, show_progress_bar=show_progress_bar
            ),
            model=model,
        ).result()

    # -- lifetime ----------------------------------------------------------------------

    def close(self) -> None:
        """Stop every worker and free every model. Idempotent."""
        with self._lock:
            self._closed = True
            workers = list(self._workers.values())
            self._workers.clear()
        for worker in workers:
            worker.stop()

    def __enter__(self) -> EmbeddingEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ResourceClosedError("the EmbeddingEngine is closed")

    def _worker(self, name: str | None) -> _Worker:
        with self._lock:
            self._check_open()
            key = name if name is not None else self._default
            if key is None:
                raise ConfigurationError("the engine has no models; add one with add_model()")
            worker = self._workers.get(key)
            if worker is None:
                raise ConfigurationError(f"no model named {key!r}; models: {sorted(self._workers)}")
            return worker

    def __repr__(self) -> str:
        return f"<EmbeddingEngine models={self.models}>"
