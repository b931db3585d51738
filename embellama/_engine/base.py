# SPDX-License-Identifier: Apache-2.0
"""What every :class:`EmbeddingEngine` call stands on: the models by name, their lifetime, admission and the cache.

:class:`EngineBase` holds an engine's state and the public methods about it (loading and
unloading models, their info, statistics, the cache, closing); :class:`EmbeddingEngine`
adds the requests (embedding and reranking in their sync, async and iterator forms), as
httpx's clients share one base.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import threading
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any, TypeVar

import numpy as np

from embellama._config import EngineConfig, ModelConfig
from embellama._engine.cache import Cache, CacheInfo
from embellama._engine.replicas import Admission, Replicas, awaitable
from embellama._engine.worker import CLASSIFIER, EMBEDDING, KINDS, MULTI_VECTOR, RERANKER, SPARSE, Batching
from embellama._exceptions import ConfigurationError, EmbellamaError, ResourceClosedError
from embellama._gguf.heads import heads_path
from embellama._models import EmbeddingModel, is_reranker
from embellama._models.pretrained import model_file

T = TypeVar("T")
E = TypeVar("E", bound="EngineBase")


_IS = {
    EMBEDDING: "an embedding model",
    RERANKER: "a reranker",
    CLASSIFIER: "a classifier",
    SPARSE: "a sparse encoder",
    MULTI_VECTOR: "a multi-vector (ColBERT) encoder",
}
_DOES = {
    EMBEDDING: "it gives one dense vector per text with embed() and embed_batch()",
    RERANKER: "it scores (query, document) pairs with rerank() and predict()",
    CLASSIFIER: "it gives single texts' label scores with classify()",
    SPARSE: "it gives sparse vectors with embed_sparse()",
    MULTI_VECTOR: "it gives token vectors with embed_multi()",
}
_NEEDS = {
    EMBEDDING: "a GGUF without a classification head",
    RERANKER: "a cross-encoder GGUF: rank pooling or a classification head's labels",
    CLASSIFIER: "a *ForSequenceClassification GGUF loaded with kind='classifier'",
    SPARSE: "a GGUF with a SPLADE or bge-m3 sparse head in its .heads.npz, kind 'sparse'",
    MULTI_VECTOR: "a GGUF with a ColBERT projection in its .heads.npz, kind 'multi_vector'",
}


def _wrong_kind(name: str, kind: str, wanted: str) -> ConfigurationError:
    """The error of a request that the model ``name`` (a ``kind`` model) cannot serve: it needs a ``wanted`` one."""
    return ConfigurationError(
        f"model {name!r} is {_IS[kind]}, not {_IS[wanted]}: {_DOES[kind]}; this call needs {_IS[wanted]} "
        f"({_NEEDS[wanted]})"
    )


def model_kind(config: ModelConfig, kind: str | None = None) -> str:
    """The kind an engine serves ``config`` as: ``kind`` when given, else ``config.extra["kind"]``, else found
    from the files: a cross-encoder GGUF is a reranker; a heads file (``<model>.heads.npz``) with a SPLADE MLM
    head makes a sparse encoder, one with a ColBERT projection and no bge-m3 sparse head a multi-vector encoder;
    anything else an embedding model (bge-m3's dense vector: load it again with kind 'sparse' or 'multi_vector'
    for its other outputs).

    Raises
    ------
    ConfigurationError
        An unknown kind.
    """
    if kind is None:
        kind = config.extra.get("kind")  # type: ignore[assignment]
    if kind is not None:
        if kind not in KINDS:
            raise ConfigurationError(
                f"model {config.name!r}: unknown kind {kind!r}; expected one of: {', '.join(KINDS)}"
            )
        return kind
    if is_reranker(config):  # reads the GGUF's header
        return RERANKER
    heads = _head_names(config)
    if "mlm" in heads:
        return SPARSE
    if "colbert" in heads and "sparse" not in heads:
        return MULTI_VECTOR
    return EMBEDDING


def _head_names(config: ModelConfig) -> list[str]:
    """The heads named in the model's heads file (its small ``meta`` entry only), none when it has none."""
    try:
        path = heads_path(model_file(config)[0])
        if not path.is_file():
            return []
        with np.load(path, allow_pickle=False) as data:
            return list(json.loads(str(data["meta"])).get("heads", []))
    except (OSError, ValueError, KeyError, EmbellamaError):
        return []  # loading it then says what is wrong


_LIVE_ENGINES: weakref.WeakSet[EngineBase] = weakref.WeakSet()


@atexit.register
def _close_live_engines() -> None:
    """At interpreter exit, stop the workers of engines nobody closed (before C teardown)."""
    for engine in list(_LIVE_ENGINES):
        try:
            engine.close()
        except Exception:  # pragma: no cover - exit must not fail
            pass


class EngineBase:
    """An engine's models by name, admission, cache and lifetime; :class:`EmbeddingEngine` adds the requests.

    The arguments are :class:`EmbeddingEngine`'s.
    """

    def __init__(
        self,
        config: EngineConfig | ModelConfig | Iterable[ModelConfig] | None = None,
        *,
        models: Iterable[ModelConfig] = (),
        default_model: str | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._workers: dict[str, Replicas] = {}  # guarded by _lock
        self._started: list[Replicas] = []  # every model ever started, stopped by close(); guarded by _lock
        self._closed = False  # guarded by _lock
        configs = list(models)
        if isinstance(config, ModelConfig):
            configs.insert(0, config)
            config = None
        elif config is not None and not isinstance(config, EngineConfig):
            if configs:
                raise ConfigurationError("give the models either as the first argument or as models=, not both")
            configs = list(config)
            config = None
        if config is None:
            config = EngineConfig(default_model=default_model)
        elif default_model is not None and default_model != config.default_model:
            if config.default_model is not None:
                raise ConfigurationError(
                    f"default_model {default_model!r} differs from EngineConfig.default_model {config.default_model!r}"
                )
            config = dataclasses.replace(config, default_model=default_model)
        self._config = config
        self._default = config.default_model  # guarded by _lock
        self._cache = Cache(config.cache_size) if config.cache_size else None
        self._admission = Admission(config.max_pending, config.submit_timeout)
        _LIVE_ENGINES.add(self)
        try:
            started = [self._start(c, None) for c in configs]
            for replicas in started:
                self._await(replicas, None)
            with self._lock:
                if self._default is not None and self._default not in self._workers:
                    raise ConfigurationError(
                        f"default_model {self._default!r} is not among the models {sorted(self._workers)}"
                    )
        except BaseException:
            self.close()
            raise

    @property
    def config(self) -> EngineConfig:
        """The engine's settings."""
        return self._config

    # -- models ----------------------------------------------------------------------

    def load_model(
        self,
        config: ModelConfig,
        *,
        workers: int | None = None,
        timeout: float | None = None,
        kind: str | None = None,
    ) -> dict[str, Any]:
        """Start copies of a model, each on its own worker thread, and wait until they are loaded.

        Loading errors (missing file, bad config) are raised here, in the caller's thread,
        and fail every request other threads sent for the model meanwhile; one copy that
        fails stops the others.

        Parameters
        ----------
        config : ModelConfig
            The model; its ``name`` is how requests address it.
        workers : int, optional
            How many copies; default ``EngineConfig.workers_per_model``.
        timeout : float, optional
            Seconds to wait for the load; then it is abandoned and the workers stopped. Default: no limit.
        kind : str, optional
            What the model serves: "embedding", "reranker", "classifier" (single texts' labels, :meth:`classify`),
            "sparse" (:meth:`embed_sparse`) or "multi_vector" (:meth:`embed_multi`). Default:
            ``config.extra["kind"]`` when set, else found from the files (:func:`model_kind`).

        Returns
        -------
        dict
            The model's info, as :meth:`info` returns it.

        Raises
        ------
        ConfigurationError
            Not a ModelConfig, a bad ``workers``, an unknown ``kind``, or a model of that name is already registered.
        ModelNotFoundError, ModelLoadError
            The model could not be loaded.
        ResourceClosedError
            The engine is closed, or was closed (or the model removed) while it loaded.
        TimeoutError
            The load took longer than ``timeout``.
        """
        return self._await(self._start(config, workers, kind), timeout)

    def _start(self, config: ModelConfig, workers: int | None, kind: str | None = None) -> Replicas:
        if not isinstance(config, ModelConfig):
            raise ConfigurationError(f"expected a ModelConfig, got {type(config).__name__}")
        copies = self._config.workers_per_model if workers is None else workers
        if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
            raise ConfigurationError(f"model {config.name!r}: workers must be a positive int, got {copies!r}")
        kind = model_kind(config, kind)  # reads the GGUF's header: not under the lock
        with self._lock:
            self._check_open()
            if config.name in self._workers:
                raise ConfigurationError(f"a model named {config.name!r} is already registered")
            batching = Batching(self._config.max_batch_texts, self._config.max_batch_wait_ms / 1000)
            replicas = Replicas(config, copies, batching, kind)
            self._workers[config.name] = replicas
            self._started = [r for r in self._started if r.alive]
            self._started.append(replicas)
            if self._default is None:
                self._default = config.name
            return replicas

    def _await(self, replicas: Replicas, timeout: float | None) -> dict[str, Any]:
        try:
            info = replicas.wait_loaded(timeout)
        except BaseException:
            self._forget(replicas)
            replicas.stop(join=False)
            raise
        with self._lock:
            if self._workers.get(replicas.name) is not replicas:
                raise ResourceClosedError(f"model {replicas.name!r} was removed or the engine closed while it loaded")
        return info

    def _forget(self, replicas: Replicas) -> None:
        with self._lock:
            if self._workers.get(replicas.name) is replicas:
                del self._workers[replicas.name]
                if self._default == replicas.name:
                    self._default = next(iter(self._workers), None)
        if self._cache is not None:
            self._cache.forget(replicas.generation)

    def unload_model(self, name: str, *, timeout: float | None = None) -> None:
        """Stop every worker of a model and free it; its queued requests fail with ResourceClosedError.

        Parameters
        ----------
        name : str
            The model's name.
        timeout : float, optional
            Seconds to wait for each worker thread to end; default: as long as it takes.

        Raises
        ------
        ConfigurationError
            No model of that name.
        ResourceClosedError
            The engine is closed.
        """
        with self._lock:
            self._check_open()
            replicas = self._workers.get(name)
            if replicas is None:
                raise ConfigurationError(f"no model named {name!r}; models: {sorted(self._workers)}")
        self._forget(replicas)
        replicas.stop(timeout=timeout)

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
        """Kind, token limit, size, pooling, worker count and dimensions or labels of a model (waits for its load).

        Parameters
        ----------
        model : str, optional
            The model's name; default: the default model.

        Returns
        -------
        dict
            ``name``, ``kind`` ("embedding", "reranker", "classifier", "sparse" or "multi_vector"),
            ``max_sequence_length``, ``model_size``, ``pooling``, ``workers`` and more: ``embedding_dimensions``,
            ``prompts`` and ``similarity_fn_name`` for an embedding model; ``num_labels``, ``labels`` and
            ``activation`` for a reranker or a classifier; ``embedding_dimensions`` (the vocabulary, or a token
            vector's width) and ``prompts`` for a sparse or multi-vector model.

        Raises
        ------
        ConfigurationError
            No such model (or none at all).
        ResourceClosedError
            The engine is closed.
        """
        return self._model(model).wait_loaded(None)

    def model_config(self, model: str | None = None) -> ModelConfig:
        """The :class:`ModelConfig` a model was added with (without waiting for its load).

        Parameters
        ----------
        model : str, optional
            As for :meth:`info`.

        Returns
        -------
        ModelConfig
            The configuration given to :meth:`load_model` (or the constructor).

        Raises
        ------
        ConfigurationError, ResourceClosedError
            As for :meth:`info`.
        """
        return self._model(model).config

    def stats(self) -> dict[str, int]:
        """Requests pending on the workers, and dynamic batching's joined calls and the requests in them.

        Returns
        -------
        dict
            ``pending`` (requests admitted and not yet finished, all models), ``joined_calls`` (llama.cpp
            calls that served more than one request) and ``joined_requests`` (the requests in them).
        """
        with self._lock:
            models = list(self._workers.values())
        rows = [replicas.stats() for replicas in models]
        return {
            key: sum(row[i] for row in rows) for i, key in enumerate(("pending", "joined_calls", "joined_requests"))
        }

    # -- requests ----------------------------------------------------------------------

    def submit(self, fn: Callable[[EmbeddingModel], T], *, model: str | None = None) -> Future[T]:
        """Run ``fn(embedding_model)`` on a worker thread of the model.

        With ``max_pending`` requests pending, waits up to ``submit_timeout`` seconds for
        room, then raises :class:`EngineBusyError` (see :class:`EngineConfig`).

        Parameters
        ----------
        fn : callable
            Called with the worker's :class:`EmbeddingModel` (its :class:`Reranker` for a reranker), on that
            worker's thread.
        model : str, optional
            The model's name; default: the default model.

        Returns
        -------
        concurrent.futures.Future
            Resolves to ``fn``'s result or exception; every future resolves, also when the engine closes.

        Raises
        ------
        ConfigurationError
            No such model.
        ResourceClosedError
            The engine is closed.
        EngineBusyError
            No room among ``max_pending`` requests in time.
        """
        replicas = self._model(model)
        self._admission.acquire()
        return self._admission.send(replicas, fn)

    async def asubmit(self, fn: Callable[[EmbeddingModel], T], *, model: str | None = None) -> T:
        """:meth:`submit` for coroutines: awaits the result without blocking the event loop.

        Cancelling the awaiting task cancels the request if it has not started.

        Parameters
        ----------
        fn, model
            As for :meth:`submit`.

        Returns
        -------
        object
            What ``fn`` returned.

        Raises
        ------
        ConfigurationError, ResourceClosedError, EngineBusyError
            As for :meth:`submit`; and whatever ``fn`` raised.
        """
        replicas = self._model(model)
        await self._admission.acquire_async()
        return await awaitable(self._admission.send(replicas, fn))

    def cache_info(self) -> CacheInfo:
        """Hits, misses, capacity and size of the embedding cache.

        Returns
        -------
        CacheInfo
            A named tuple ``(hits, misses, maxsize, currsize)``, all 0 when the cache is off.
        """
        return self._cache.info() if self._cache is not None else CacheInfo(0, 0, 0, 0)

    def cache_clear(self) -> None:
        """Empty the embedding cache and reset its statistics."""
        if self._cache is not None:
            self._cache.clear()

    # -- lifetime ----------------------------------------------------------------------

    def close(self, timeout: float | None = None) -> None:
        """Stop every worker and free every model; queued requests fail. Idempotent.

        Returns when every worker thread has ended (or after ``timeout`` seconds each).

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait for each worker thread; default: as long as it takes.
        """
        with self._lock:
            self._closed = True
            self._workers.clear()
            self._default = None
            started = list(self._started)  # all of them, also when another thread is closing too
        for replicas in started:
            replicas.stop(join=False)
        for replicas in started:
            replicas.stop(timeout=timeout)
        if self._cache is not None:
            self._cache.clear()
        _LIVE_ENGINES.discard(self)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        with self._lock:
            return self._closed

    def __enter__(self: E) -> E:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ResourceClosedError("the EmbeddingEngine is closed")

    def _model(self, name: str | None, kind: str | None = None) -> Replicas:
        """The model ``name`` (default: the default model); with ``kind``, it must be of that kind."""
        with self._lock:
            self._check_open()
            key = name if name is not None else self._default
            if key is None:
                raise ConfigurationError("the engine has no models; add one with load_model()")
            replicas = self._workers.get(key)
            if replicas is None:
                raise ConfigurationError(f"no model named {key!r}; models: {sorted(self._workers)}")
        if kind is not None and replicas.kind != kind:
            raise _wrong_kind(replicas.name, replicas.kind, kind)
        return replicas

    def __repr__(self) -> str:
        return f"<EmbeddingEngine models={self.models}>"
