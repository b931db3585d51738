"""EmbeddingEngine: several named models, each owned by its own worker thread.

llama.cpp contexts are not thread-safe, so nothing is shared: every model lives in one
worker thread that loads it, runs every request for it and frees it. Callers from any
thread send requests as messages and wait on a :class:`concurrent.futures.Future`.

Every future resolves: with the result, with the request's own exception, with the
model's load error when the load fails, or with :class:`ResourceClosedError` when the
model is removed or the engine closed before the request ran.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import weakref
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


def _fail(future: Future[Any], exc: BaseException) -> None:
    """Resolve ``future`` with ``exc`` unless its caller already cancelled it."""
    if future.set_running_or_notify_cancel():
        future.set_exception(exc)


class _Worker:
    """One thread that owns one EmbeddingModel and serves requests for it in order.

    ``submit`` and ``stop`` take the worker's lock, and the thread drains its inbox only
    after marking itself closed under that lock, so no request can slip in unanswered.
    """

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.ready: Future[dict[str, Any]] = Future()
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._stopping = False
        self._failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"embellama:{config.name}", daemon=True)
        self.thread.start()

    @property
    def name(self) -> str:
        return self.config.name

    def submit(self, fn: Callable[[EmbeddingModel], T]) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._failure is not None and not self._stopping:
                _fail(future, self._failure)  # the load failed: the request gets that error
                return future
            if self._stopping:
                raise ResourceClosedError(f"model {self.name!r} was removed or its engine closed")
            self._inbox.put((fn, future))
        return future

    def stop(self, *, join: bool = True, timeout: float | None = None) -> None:
        """Refuse new requests, fail the queued ones, let the running one finish, free the model."""
        with self._lock:
            if not self._stopping:
                self._stopping = True
                self._inbox.put(_STOP)
        if join and threading.current_thread() is not self.thread:
            self.thread.join(timeout)

    def _run(self) -> None:
        model = EmbeddingModel(self.config)
        try:
            model.load()
        except BaseException as exc:  # delivered to every caller waiting for this model
            with self._lock:
                self._failure = exc
            self._drain(exc)
            self.ready.set_exception(exc)
            return
        self.ready.set_result(_describe(model))
        closed = ResourceClosedError(f"model {self.name!r} was removed or its engine closed before the request ran")
        try:
            while True:
                item = self._inbox.get()
                if item is _STOP:
                    break
                fn, future = item
                if self._stopping:
                    _fail(future, closed)
                    continue
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    future.set_result(fn(model))
                except BaseException as exc:
                    future.set_exception(exc)
        finally:
            try:
                model.unload()
            finally:
                with self._lock:
                    self._stopping = True
                self._drain(closed)

    def _drain(self, exc: BaseException) -> None:
        """Fail every queued request (called once the lock has closed the inbox)."""
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP:
                _fail(item[1], exc)


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


_LIVE_ENGINES: weakref.WeakSet[EmbeddingEngine] = weakref.WeakSet()


@atexit.register
def _close_live_engines() -> None:
    """At interpreter exit, stop the workers of engines nobody closed (before C teardown)."""
    for engine in list(_LIVE_ENGINES):
        try:
            engine.close()
        except Exception:  # pragma: no cover - exit must not fail
            pass


class EmbeddingEngine:
    """Serve several named embedding models; safe to call from any number of threads.

    >>> with EmbeddingEngine([ModelConfig(model_path="minilm.gguf")]) as engine:  # doctest: +SKIP
    ...     engine.embed("hello", model="minilm").shape
    (384,)

    Each model is loaded and used by its own worker thread. Requests for one model run
    one after another; different models run in parallel. The models of the constructor
    load in parallel; if one fails, the others are stopped and the error is raised.
    """

    def __init__(self, configs: Iterable[ModelConfig] = (), *, default_model: str | None = None) -> None:
        self._lock = threading.Lock()
        self._workers: dict[str, _Worker] = {}  # guarded by _lock
        self._started: list[_Worker] = []  # every worker ever started, joined by close(); guarded by _lock
        self._closed = False  # guarded by _lock
        self._default = default_model  # guarded by _lock
        _LIVE_ENGINES.add(self)
        try:
            workers = [self._start(config) for config in configs]
            for worker in workers:
                self._await(worker, None)
            with self._lock:
                if default_model is not None and default_model not in self._workers:
                    raise ConfigurationError(
                        f"default_model {default_model!r} is not among the models {sorted(self._workers)}"
                    )
        except BaseException:
            self.close()
            raise

    # -- models ----------------------------------------------------------------------

    def add_model(self, config: ModelConfig, *, timeout: float | None = None) -> dict[str, Any]:
        """Start a worker for ``config`` and load the model there; returns its description.

        Loading errors (missing file, bad config) are raised here, in the caller's thread,
        and fail every request other threads sent for the model meanwhile. After
        ``timeout`` seconds the load is abandoned (``TimeoutError``) and the worker stopped.
        """
        return self._await(self._start(config), timeout)

    def _start(self, config: ModelConfig) -> _Worker:
        if not isinstance(config, ModelConfig):
            raise ConfigurationError(f"expected a ModelConfig, got {type(config).__name__}")
        with self._lock:
            self._check_open()
            if config.name in self._workers:
                raise ConfigurationError(f"a model named {config.name!r} is already registered")
            worker = _Worker(config)
            self._workers[config.name] = worker
            self._started = [w for w in self._started if w.thread.is_alive()]
            self._started.append(worker)
            if self._default is None:
                self._default = config.name
            return worker

    def _await(self, worker: _Worker, timeout: float | None) -> dict[str, Any]:
        try:
            info = worker.ready.result(timeout)
        except BaseException:
            self._forget(worker)
            worker.stop(join=False)
            raise
        with self._lock:
            if self._workers.get(worker.name) is not worker:
                raise ResourceClosedError(f"model {worker.name!r} was removed or the engine closed while it loaded")
        return info

    def _forget(self, worker: _Worker) -> None:
        with self._lock:
            if self._workers.get(worker.name) is worker:
                del self._workers[worker.name]
                if self._default == worker.name:
                    self._default = next(iter(self._workers), None)

    def remove_model(self, name: str, *, timeout: float | None = None) -> None:
        """Stop the model's worker and free the model; its queued requests fail with ResourceClosedError."""
        with self._lock:
            self._check_open()
            worker = self._workers.get(name)
            if worker is None:
                raise ConfigurationError(f"no model named {name!r}; models: {sorted(self._workers)}")
        self._forget(worker)
        worker.stop(timeout=timeout)

    @property
    def models(self) -> list[str]:
        """Names of the registered models."""
        with self._lock:
            return list(self._workers)

    @property
    def default_model(self) -> str | None:
        """The model used when a call names none (the first added, unless set)."""
        with self._lock:
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

    def close(self, timeout: float | None = None) -> None:
        """Stop every worker and free every model; queued requests fail. Idempotent.

        Returns when every worker thread has ended (or after ``timeout`` seconds each).
        """
        with self._lock:
            self._closed = True
            self._workers.clear()
            self._default = None
            started, self._started = self._started, []
        for worker in started:
            worker.stop(join=False)
        for worker in started:
            worker.stop(timeout=timeout)
        _LIVE_ENGINES.discard(self)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        with self._lock:
            return self._closed

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
