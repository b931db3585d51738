# SPDX-License-Identifier: Apache-2.0
"""EmbeddingEngine: several named models, each owned by worker threads of its own.

llama.cpp contexts are not thread-safe, so nothing is shared: every copy of a model lives
in one worker thread that loads it, runs every request sent to it and frees it. Callers
from any thread (or an asyncio event loop) send requests as messages and wait on a
:class:`concurrent.futures.Future`.

Every future resolves: with the result, with the request's own exception, with the
model's load error when the load fails, or with :class:`ResourceClosedError` when the
model is removed or the engine closed before the request ran.

A worker holds an :class:`EmbeddingModel`, or a :class:`Reranker` when the GGUF is a
cross-encoder; a reranker's requests are split among its copies instead of joined.

Dynamic batching: when a worker is free and several embedding requests of the same kind
wait for it, it joins them into one packed llama.cpp call (at most the model's
``n_seq_max`` texts and micro-batch of tokens, and ``EngineConfig.max_batch_texts``) and
hands each request its own rows. Each request's texts are checked before it joins; one
that fails runs on its own and gets its own error, and when the joined call fails every
request is run again on its own, so no request gets another's result or exception.
"""

from __future__ import annotations

import atexit
import collections
import concurrent.futures
import dataclasses
import functools
import itertools
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence, Sized
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt

from embellama._compute import output as _output
from embellama._compute import packing as _batch
from embellama._compute import prompts as _prompts
from embellama._compute.packing import ProgressCallback
from embellama._compute.pooling import NormalizeSpec, parse_normalization
from embellama._config import EngineConfig, ModelConfig
from embellama._exceptions import ConfigurationError, EngineBusyError, InvalidInputError, ResourceClosedError
from embellama._models.embedding import EmbeddingModel, LlamaModel
from embellama._models.reranker import Reranker, check_activation, is_pair, is_reranker, rank_results

if TYPE_CHECKING:  # asyncio is imported on first async use: it would add ~25 ms to every start-up
    import asyncio

__all__ = ["CacheInfo", "EmbeddingEngine"]

logger = logging.getLogger("embellama")
T = TypeVar("T")
_STOP = object()

EMBEDDING, RERANKER = "embedding", "reranker"
"""The kinds of model an engine serves (``info()["kind"]``): an EmbeddingModel or a Reranker per worker."""

_SPLIT_MIN = 16  # fewest pairs a copy of a reranker gets when a request is split among the copies


class CacheInfo(NamedTuple):
    """Statistics of the engine's embedding cache, as ``functools.lru_cache`` reports them."""

    hits: int
    misses: int
    maxsize: int
    currsize: int


def _fail(future: Future[Any], exc: BaseException) -> None:
    """Resolve ``future`` with ``exc`` unless its caller already cancelled it."""
    if future.set_running_or_notify_cancel():
        future.set_exception(exc)


class _Batching(NamedTuple):
    """Dynamic batching settings of a worker (from EngineConfig)."""

    max_texts: int  # 0: one call's worth; 1: off
    wait: float  # seconds a free worker waits for more requests to join


class _Worker:
    """One thread that owns one model (an EmbeddingModel, or a Reranker) and serves requests for it in order.

    ``submit`` and ``stop`` take the worker's lock, and the thread drains its inbox only
    after marking itself closed under that lock, so no request can slip in unanswered.
    """

    def __init__(
        self, config: ModelConfig, thread_name: str, batching: _Batching | None = None, kind: str = EMBEDDING
    ) -> None:
        self.config = config
        self.kind = kind
        self.batching = batching or _Batching(0, 0.0)
        self.ready: Future[dict[str, Any]] = Future()
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._stopping = False
        self._stop_error: BaseException | None = None  # what queued requests fail with once stopped
        self._failure: BaseException | None = None
        self.joined_calls = self.joined_requests = 0  # dynamic batching's shared calls and the requests in them
        self.thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self.thread.start()

    @property
    def name(self) -> str:
        return self.config.name

    def submit(self, fn: Callable[[Any], T]) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._failure is not None and not self._stopping:
                _fail(future, self._failure)  # the load failed: the request gets that error
                return future
            if self._stopping and self._stop_error is not None:
                _fail(future, self._stop_error)  # a sibling copy failed to load: the model's load error
                return future
            if self._stopping:
                raise ResourceClosedError(f"model {self.name!r} was removed or its engine closed")
            self._inbox.put((fn, future))
        return future

    def stop(self, *, join: bool = True, timeout: float | None = None, error: BaseException | None = None) -> None:
        """Refuse new requests, fail the queued ones, let the running one finish, free the model.

        Queued requests fail with ``error`` (default: :class:`ResourceClosedError`).
        """
        with self._lock:
            if not self._stopping:
                self._stopping = True
                self._stop_error = error
                self._inbox.put(_STOP)
        if join and threading.current_thread() is not self.thread:
            self.thread.join(timeout)

    def _run(self) -> None:
        model: Any = None
        try:
            model = Reranker(self.config) if self.kind == RERANKER else EmbeddingModel(self.config)
            model.load()
        except BaseException as exc:  # delivered to every caller waiting for this model
            with self._lock:
                self._failure = exc
            self._drain(exc)
            self.ready.set_exception(exc)
            return
        self.ready.set_result(_describe(model))
        closed = ResourceClosedError(f"model {self.name!r} was removed or its engine closed before the request ran")
        held: Any = None  # a message taken from the inbox that did not join the last batch: the next one
        try:
            while True:
                item, held = (self._inbox.get() if held is None else held), None
                if item is _STOP:
                    break
                fn, future = item
                if self._stopping:
                    _fail(future, self._stop_error or closed)
                    continue
                if self._joinable(fn, model) and (self.batching.wait > 0 or not self._inbox.empty()):
                    held = self._run_joined(model, fn, future)
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
                if held is not None and held is not _STOP:
                    _fail(held[1], self._stop_error or closed)
                self._drain(self._stop_error or closed)

    # -- dynamic batching ---------------------------------------------------------------

    def _limits(self, model: EmbeddingModel) -> tuple[int, int]:
        """Most texts and tokens of one joined call: one llama.cpp call's worth, and ``max_batch_texts``."""
        n_seq_max = model.context.n_seq_max
        texts = min(self.batching.max_texts, n_seq_max) if self.batching.max_texts else n_seq_max
        return texts, model._budget

    def _joinable(self, fn: Any, model: EmbeddingModel, key: Hashable | None = None) -> bool:
        """Whether ``fn`` is an embedding request that may share a call (with requests of ``key``)."""
        if not isinstance(fn, _Job) or fn.key is None or self.batching.max_texts == 1:
            return False
        return (key is None or fn.key == key) and len(fn.texts) <= self._limits(model)[0]

    def _run_joined(self, model: EmbeddingModel, first: _Job, future: Future[Any]) -> Any:
        """Join ``first`` and the requests of its kind waiting behind it into one call; answer each.

        Returns the message taken from the inbox that did not join (the next to run), or None.
        """
        max_texts, max_tokens = self._limits(model)
        deadline = time.monotonic() + self.batching.wait
        group: list[tuple[_Job, Future[Any]]] = []
        alone: list[tuple[_Job, Future[Any]]] = []  # a text failed its check: runs on its own, for its own error
        texts = tokens = 0
        held: Any = None
        job, fut = first, future
        try:
            while True:
                size = None if fut.cancelled() else job.measure(model)
                if size is not None and group and (texts + len(job.texts) > max_texts or tokens + size > max_tokens):
                    held = (job, fut)  # does not fit: it starts the next call
                    break
                if fut.set_running_or_notify_cancel():
                    if size is None:
                        alone.append((job, fut))
                    else:
                        group.append((job, fut))
                        texts, tokens = texts + len(job.texts), tokens + size
                if texts >= max_texts:
                    break
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        item = self._inbox.get(timeout=remaining)
                    except queue.Empty:
                        break
                if item is _STOP or self._stopping or not self._joinable(item[0], model, first.key):
                    held = item
                    break
                job, fut = item
            if len(group) == 1:
                alone += group
            elif group:
                self._answer_joined(model, group)
            for job, fut in alone:
                self._answer(model, job, fut)
        except BaseException as exc:  # never leave a taken request unanswered
            for _, fut in group + alone:
                if not fut.done():
                    fut.set_exception(exc)
            if held is not None and held is not _STOP:
                _fail(held[1], exc)
            raise
        return held

    @staticmethod
    def _answer(model: EmbeddingModel, job: _Job, future: Future[Any]) -> None:
        """Run one (already running) request on its own."""
        try:
            future.set_result(job(model))
        except BaseException as exc:
            future.set_exception(exc)

    def _answer_joined(self, model: EmbeddingModel, group: list[tuple[_Job, Future[Any]]]) -> None:
        joined = [text for job, _ in group for text in job.texts]
        try:
            rows = group[0][0].compute(model, joined, None)
        except Exception:  # whose text? each request runs again on its own and gets its own answer
            logger.debug(
                "model %r: a joined call of %d requests failed; running them one by one", self.name, len(group)
            )
            for job, fut in group:
                self._answer(model, job, fut)
            return
        self.joined_calls += 1
        self.joined_requests += len(group)
        start = 0
        for job, fut in group:
            part = rows[start : start + len(job.texts)]
            start += len(job.texts)
            try:
                fut.set_result(job.finish(part if isinstance(part, list) else part.copy(), False))
            except BaseException as exc:
                fut.set_exception(exc)

    def _drain(self, exc: BaseException) -> None:
        """Fail every queued request (called once the lock has closed the inbox)."""
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP:
                _fail(item[1], exc)


def _describe(model: LlamaModel) -> dict[str, Any]:
    """What ``EmbeddingEngine.info`` tells of a loaded model; ``kind`` says which class serves it."""
    info: dict[str, Any] = {
        "name": model.name,
        "kind": RERANKER if isinstance(model, Reranker) else EMBEDDING,
        "path": str(model.config.model_path),
        "max_sequence_length": model.max_sequence_length,
        "model_size": model.model_size,
        "pooling": model.pooling.value,
        "architecture": model.model.architecture,
    }
    if isinstance(model, Reranker):
        info.update(
            num_labels=model.num_labels,
            labels=list(model.labels),
            activation=model.activation,
            exact_token_types=model.exact_token_types,
        )
    elif isinstance(model, EmbeddingModel):
        info.update(
            embedding_dimensions=model.embedding_dimensions,
            prompts=model.prompts,
            default_prompt_name=model.default_prompt_name,
        )
    return info


_generations = itertools.count()


class _Replicas:
    """The copies of one registered model: one worker each; a request goes to the least busy.

    If any copy fails to load, the model fails: every request sent to it, queued on any
    copy or sent later, gets that load error, and the other copies stop.
    """

    def __init__(
        self, config: ModelConfig, copies: int, batching: _Batching | None = None, kind: str = EMBEDDING
    ) -> None:
        self.config = config
        self.kind = kind
        self.generation = next(_generations)  # tells this load apart from a later one of the same name
        names = [f"embellama:{config.name}"] if copies == 1 else [f"embellama:{config.name}#{i}" for i in range(copies)]
        self._lock = threading.Lock()
        self._pending = [0] * copies  # guarded by _lock
        self._turn = 0  # guarded by _lock; breaks ties between equally busy copies
        self._failure: BaseException | None = None  # guarded by _lock
        self.workers: list[_Worker] = []
        try:
            for name in names:
                self.workers.append(_Worker(config, name, batching, kind))
        except BaseException:
            self.stop(join=False)
            raise
        for worker in self.workers:
            worker.ready.add_done_callback(self._loaded)

    @property
    def name(self) -> str:
        return self.config.name

    def _loaded(self, ready: Future[dict[str, Any]]) -> None:
        exc = ready.exception()
        if exc is not None:
            self.fail(exc)

    def fail(self, exc: BaseException) -> None:
        """One copy failed to load: the model fails with that error; stop the other copies."""
        with self._lock:
            if self._failure is not None:
                return
            self._failure = exc
        for worker in self.workers:
            worker.stop(join=False, error=exc)

    @property
    def failure(self) -> BaseException | None:
        with self._lock:
            return self._failure

    def submit(self, fn: Callable[[Any], T]) -> Future[T]:
        with self._lock:
            if self._failure is not None:
                future: Future[T] = Future()
                _fail(future, self._failure)
                return future
            n = len(self._pending)
            order = [(self._turn + k) % n for k in range(n)]
            self._turn = (self._turn + 1) % n
            index = min(order, key=self._pending.__getitem__)
            self._pending[index] += 1
        try:
            future = self.workers[index].submit(fn)
        except BaseException:
            self._finished(index)
            raise
        future.add_done_callback(lambda _: self._finished(index))
        return future

    def _finished(self, index: int) -> None:
        with self._lock:
            self._pending[index] -= 1

    def wait_loaded(self, timeout: float | None) -> dict[str, Any]:
        """Wait until every copy has loaded; raise the first load error, or TimeoutError."""
        readies = [w.ready for w in self.workers]
        done, not_done = concurrent.futures.wait(readies, timeout, return_when=concurrent.futures.FIRST_EXCEPTION)
        for ready in done:
            exc = ready.exception()
            if exc is not None:
                self.fail(exc)
        failure = self.failure
        if failure is not None:
            raise failure
        if not_done:
            raise TimeoutError(f"model {self.name!r} did not load within {timeout} s")
        return {**readies[0].result(), "workers": len(readies)}

    def stop(self, *, join: bool = True, timeout: float | None = None) -> None:
        for worker in self.workers:
            worker.stop(join=False)
        if join:
            for worker in self.workers:
                worker.stop(timeout=timeout)


class _Slots:
    """Counts pending requests against ``max_pending`` (0: no limit)."""

    def __init__(self, limit: int, timeout: float) -> None:
        self.limit = limit
        self.timeout = timeout
        self._used = 0  # guarded by _cond
        self._cond = threading.Condition()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []  # async callers

    def _busy(self) -> EngineBusyError:
        waited = f" (waited {self.timeout:g} s)" if self.timeout else ""
        return EngineBusyError(f"the engine has {self.limit} requests pending, its max_pending{waited}")

    def acquire(self) -> None:
        """Take room for one request, waiting up to ``timeout`` seconds; else EngineBusyError."""
        if not self.limit:
            return
        with self._cond:
            if not self._cond.wait_for(lambda: self._used < self.limit, self.timeout):
                raise self._busy()
            self._used += 1

    async def acquire_async(self) -> None:
        """:meth:`acquire` for coroutines: waits on the event loop, never blocking it."""
        if not self.limit:
            return
        import asyncio

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while True:
            with self._cond:
                if self._used < self.limit:
                    self._used += 1
                    return
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise self._busy()
                entry = (loop, loop.create_future())
                self._waiters.append(entry)
            try:
                await asyncio.wait([entry[1]], timeout=remaining)
            finally:
                with self._cond:
                    if entry in self._waiters:
                        self._waiters.remove(entry)

    def release(self) -> None:
        if not self.limit:
            return
        with self._cond:
            self._used -= 1
            self._cond.notify()
            waiters = list(self._waiters)
        for loop, waiter in waiters:  # each retries; who loses waits again
            try:
                loop.call_soon_threadsafe(_wake, waiter)
            except RuntimeError:  # its loop is closed
                pass


def _awaitable(future: Future[T]) -> asyncio.Future[T]:
    """``future`` for the running event loop."""
    import asyncio

    return asyncio.wrap_future(future)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _Cache:
    """A thread-safe LRU of one text's embedding per (model load, text, normalization)."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._data: collections.OrderedDict[Hashable, npt.NDArray[np.float32]] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._hits = self._misses = 0  # guarded by _lock

    def get(self, key: Hashable) -> npt.NDArray[np.float32] | None:
        """A copy of the cached vector (the caller may change it), or None."""
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self._misses += 1
                return None
            self._data.move_to_end(key)
            self._hits += 1
        return value.copy()

    def put(self, key: Hashable, value: npt.NDArray[np.float32]) -> None:
        stored = np.array(value, dtype=value.dtype, copy=True)
        stored.flags.writeable = False
        with self._lock:
            self._data[key] = stored
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def forget(self, generation: int) -> None:
        """Drop the entries of one model load (it was removed)."""
        with self._lock:
            for key in [k for k in self._data if k[0] == generation]:  # type: ignore[index]
                del self._data[key]

    def info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(self._hits, self._misses, self.maxsize, len(self._data))

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._hits = self._misses = 0


class _Job:
    """A worker's part of an embedding request: called with the model it runs alone, or it joins others.

    ``texts`` are the texts to compute (the cache's misses); ``compute(model, texts, progress)``
    embeds them; ``finish(rows, exact)`` turns their rows into the request's answer (``exact``:
    they were computed alone, so the cache may keep them); requests of one ``key`` may share
    a llama.cpp call (None: never).
    """

    def __init__(
        self,
        texts: list[Any],
        compute: Callable[[EmbeddingModel, list[Any], ProgressCallback | None], Any],
        progress: ProgressCallback | None,
        finish: Callable[[Any, bool], Any],
        places: list[int] | None,
        key: Hashable | None,
    ) -> None:
        self.texts = texts
        self.compute = compute
        self.progress = progress
        self.finish = finish
        self.places = places  # the caller's index of each text, when it differs from its place in ``texts``
        self.key = key
        self._tokens: int | None = None

    def __call__(self, model: EmbeddingModel) -> Any:
        try:
            rows = self.compute(model, self.texts, self.progress)
        except InvalidInputError as exc:  # name the text by its place in the caller's list
            if self.places is None or exc.index is None:
                raise
            raise InvalidInputError(exc.reason, exc.model_name, self.places[exc.index]) from None
        return self.finish(rows, True)

    def measure(self, model: EmbeddingModel) -> int | None:
        """Tokens of the texts, or None when a text fails its check (it then runs alone, for its own error)."""
        if self._tokens is None:
            try:
                self._tokens = sum(len(model.tokenize(text)) for text in self.texts)
            except Exception:
                self._tokens = -1
        return None if self._tokens < 0 else self._tokens


class _Request:
    """A batch request, split into what the cache answers and what a worker must compute.

    ``result`` is the whole answer when the cache held everything; otherwise ``run`` is the
    :class:`_Job` for the worker, which computes the misses, stores them and returns the whole
    answer in input order. Rows computed in a call shared with other requests are stored only
    with ``cache_shared`` (``EngineConfig.cache_batches``): the cache otherwise keeps only
    vectors computed alone, bit-identical to an uncached ``embed``.
    """

    def __init__(
        self,
        texts: list[Any],
        keys: list[Hashable | None],
        cache: _Cache | None,
        compute: Callable[[EmbeddingModel, list[Any], ProgressCallback | None], Any],
        progress: ProgressCallback | None,
        join_key: Hashable | None = None,
        cache_shared: bool = False,
    ) -> None:
        self.result: Any = None
        self.run: _Job | None = None
        n = len(texts)
        if cache is None or not keys:
            self.run = _Job(texts, compute, progress, lambda rows, exact: rows, None, join_key)
            return
        found: dict[int, npt.NDArray[np.float32]] = {}
        for i, key in enumerate(keys):
            hit = cache.get(key)
            if hit is not None:
                found[i] = hit
        if len(found) == n:
            self.result = _assemble([found[i] for i in range(n)])
            if progress is not None:
                progress(n, n)
            return
        wanted: dict[Hashable, list[int]] = {}  # each missing text once, in order
        for i, key in enumerate(keys):
            if i not in found:
                wanted.setdefault(key, []).append(i)
        firsts = [places[0] for places in wanted.values()]
        base = len(found)

        def report(done: int, total: int | None) -> None:
            assert progress is not None
            progress(n if total is not None and done >= total else base + done, n)

        def finish(computed: Any, exact: bool) -> Any:
            parts = dict(found)
            for places, key, vector in zip(wanted.values(), wanted, computed, strict=True):
                if exact or cache_shared:
                    cache.put(key, vector)
                for i in places:
                    parts[i] = vector
            return _assemble([parts[i] for i in range(n)])

        misses = [texts[i] for i in firsts]
        self.run = _Job(misses, compute, None if progress is None else report, finish, firsts, join_key)


def _wrong_kind(name: str, kind: str) -> ConfigurationError:
    """The error of a request that the model ``name`` (a ``kind`` model) cannot serve."""
    if kind == RERANKER:
        return ConfigurationError(
            f"model {name!r} is a reranker: it scores (query, document) pairs with rerank() or predict(); it does "
            "not embed text"
        )
    return ConfigurationError(
        f"model {name!r} is an embedding model, not a reranker: it has no classification head to score (query, "
        "document) pairs; use embed() or embed_batch(), or load a cross-encoder GGUF for rerank() and predict()"
    )


def _score_pairs(
    model: Reranker,
    *,
    pairs: list[Any],
    offset: int,
    batch_size: int | None,
    activation: str | None,
    rank: bool,
    progress: ProgressCallback | None,
) -> npt.NDArray[np.float32]:
    """On the worker: :meth:`Reranker.predict`'s scores of ``pairs``, the caller's ``offset``-th on (errors name
    the pair by its place in the caller's list)."""
    if rank and model.num_labels != 1:
        raise ConfigurationError(
            f"model {model.name!r} has {model.num_labels} outputs per pair; rerank needs one score (use predict)"
        )
    llama_model, _, _ = model._require()
    model._check_batch_size(batch_size)
    tracker = _batch.Progress(len(pairs), model.name, False, progress)
    scores = model._score(llama_model, pairs, offset, batch_size, activation or model.activation, tracker)
    tracker.close()
    return scores


class _Tally:
    """One ``progress(done, total)`` fed by the parts of a split request, from their worker threads."""

    def __init__(self, total: int, callback: ProgressCallback, parts: int) -> None:
        self.total = total
        self.callback = callback
        self.done = [0] * parts  # guarded by _lock
        self._lock = threading.Lock()

    def part(self, index: int) -> ProgressCallback:
        def report(done: int, total: int | None) -> None:
            with self._lock:
                self.done[index] = done
                self.callback(sum(self.done), self.total)

        return report


def _engine_stats(engine: EmbeddingEngine) -> dict[str, int]:
    """Requests pending on the engine's workers, and dynamic batching's shared calls and the requests in them."""
    with engine._lock:
        replicas = list(engine._workers.values())
    stats = {"pending": 0, "joined_calls": 0, "joined_requests": 0}
    for r in replicas:
        with r._lock:
            stats["pending"] += sum(r._pending)
        for w in r.workers:
            stats["joined_calls"] += w.joined_calls
            stats["joined_requests"] += w.joined_requests
    return stats


def _concat(parts: list[npt.NDArray[np.float32]]) -> npt.NDArray[np.float32]:
    """The scores of a request's parts, in order, in one array."""
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _assemble(parts: list[npt.NDArray[np.float32]]) -> Any:
    """The rows of a batch answer in one array; a list of per-token arrays with pooling NONE."""
    return parts if parts[0].ndim != 1 else np.stack(parts)


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
    """Serve several named embedding models and rerankers; safe to call from any number of threads and from asyncio.

    >>> with EmbeddingEngine([ModelConfig(model_path="minilm.gguf")]) as engine:  # doctest: +SKIP
    ...     engine.embed("hello", model="minilm").shape
    (384,)
    >>> engine = EmbeddingEngine(EngineConfig(workers_per_model=2, cache_size=10_000),  # doctest: +SKIP
    ...                          models=[ModelConfig(model_path="minilm.gguf")])

    Each copy of a model (``EngineConfig.workers_per_model``) is loaded and used by its own
    worker thread; a request goes to the copy with the fewest pending requests. Requests to
    one copy run one after another; copies and models run in parallel. The constructor's
    models load in parallel; if one fails, the others are stopped and the error is raised.
    ``EmbeddingEngine(configs, default_model=...)`` works too.

    A model whose GGUF is a cross-encoder (:func:`embellama._models.reranker.is_reranker`) is served by a
    :class:`Reranker` on each worker: :meth:`rerank` and :meth:`predict` score with it, and
    embedding calls on it raise :class:`ConfigurationError` (as :meth:`rerank` does on an
    embedding model); :meth:`info` says which ``kind`` a model is.

    With ``EngineConfig.max_pending`` set, a request that finds that many requests pending
    waits up to ``submit_timeout`` seconds for room, then raises :class:`EngineBusyError`
    (at once with the default timeout of 0); async calls wait without blocking the loop.

    Dynamic batching: embedding requests that wait for the same copy of a model are joined
    into one packed llama.cpp call, as :meth:`EmbeddingModel.embed_batch` packs a list
    (``EngineConfig.max_batch_texts``, ``max_batch_wait_ms``), so many concurrent one-text
    callers run at batch speed. Each gets its own rows or its own exception; a text's vector
    then equals its ``embed_batch`` vector to float rounding (llama.cpp's output moves in the
    last bits with the texts sharing its call). A request that finds its copy free runs
    alone at once. ``embed_iter``'s chunks, requests with ``batch_size``, ``progress`` or a
    progress bar, and :meth:`submit` always run on their own.

    The cache (``EngineConfig.cache_size``) keeps results bit-identical to uncached ones:
    llama.cpp's vector for a text moves in the last bits with the other texts of its call,
    so by default the cache only stores and serves texts embedded alone (``embed``,
    ``aembed``, one-text batches, when they did not share a call); batches of several texts
    go to the worker whole.
    ``cache_batches=True`` also serves and fills it from such batches (only the misses are
    computed), equal to uncached results to float rounding.

    Parameters
    ----------
    config : EngineConfig, ModelConfig or iterable of ModelConfig, optional
        The engine's settings; for brevity a model's config or a list of them may stand here
        instead, with default settings.
    models : iterable of ModelConfig, optional
        Models to load now (in parallel, each on its own worker threads).
    default_model : str, optional
        The model used when a call names none; default: ``config.default_model``, else the first model.

    Raises
    ------
    ConfigurationError
        Invalid settings, two models of one name, or an unknown ``default_model``.
    ModelNotFoundError, ModelLoadError
        A model could not be loaded (the others are stopped first).
    """

    def __init__(
        self,
        config: EngineConfig | ModelConfig | Iterable[ModelConfig] | None = None,
        *,
        models: Iterable[ModelConfig] = (),
        default_model: str | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._workers: dict[str, _Replicas] = {}  # guarded by _lock
        self._started: list[_Replicas] = []  # every model ever started, stopped by close(); guarded by _lock
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
        self._cache = _Cache(config.cache_size) if config.cache_size else None
        self._slots = _Slots(config.max_pending, config.submit_timeout)
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
        self, config: ModelConfig, *, workers: int | None = None, timeout: float | None = None
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

        Returns
        -------
        dict
            The model's info, as :meth:`info` returns it.

        Raises
        ------
        ConfigurationError
            Not a ModelConfig, a bad ``workers``, or a model of that name is already registered.
        ModelNotFoundError, ModelLoadError
            The model could not be loaded.
        ResourceClosedError
            The engine is closed, or was closed (or the model removed) while it loaded.
        TimeoutError
            The load took longer than ``timeout``.
        """
        return self._await(self._start(config, workers), timeout)

    def _start(self, config: ModelConfig, workers: int | None) -> _Replicas:
        if not isinstance(config, ModelConfig):
            raise ConfigurationError(f"expected a ModelConfig, got {type(config).__name__}")
        copies = self._config.workers_per_model if workers is None else workers
        if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
            raise ConfigurationError(f"model {config.name!r}: workers must be a positive int, got {copies!r}")
        kind = RERANKER if is_reranker(config) else EMBEDDING  # reads the GGUF's header: not under the lock
        with self._lock:
            self._check_open()
            if config.name in self._workers:
                raise ConfigurationError(f"a model named {config.name!r} is already registered")
            batching = _Batching(self._config.max_batch_texts, self._config.max_batch_wait_ms / 1000)
            replicas = _Replicas(config, copies, batching, kind)
            self._workers[config.name] = replicas
            self._started = [r for r in self._started if any(w.thread.is_alive() for w in r.workers)]
            self._started.append(replicas)
            if self._default is None:
                self._default = config.name
            return replicas

    def _await(self, replicas: _Replicas, timeout: float | None) -> dict[str, Any]:
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

    def _forget(self, replicas: _Replicas) -> None:
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
            ``name``, ``kind`` ("embedding" or "reranker"), ``max_sequence_length``, ``model_size``,
            ``pooling``, ``workers`` and more: ``embedding_dimensions`` and ``prompts`` for an embedding
            model; ``num_labels``, ``labels`` and ``activation`` for a reranker.

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
            The model's name; default: the default model.

        Returns
        -------
        ModelConfig
            The configuration given to :meth:`load_model` (or the constructor).

        Raises
        ------
        ConfigurationError
            No such model (or none at all).
        ResourceClosedError
            The engine is closed.
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
        return _engine_stats(self)

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
        self._slots.acquire()
        return self._dispatch(replicas, fn)

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
        await self._slots.acquire_async()
        return await _awaitable(self._dispatch(replicas, fn))

    def _dispatch(self, replicas: _Replicas, fn: Callable[[Any], T]) -> Future[T]:
        """Send ``fn`` to a copy of the model; the request's room is given back when it resolves."""
        try:
            future = replicas.submit(fn)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        return future

    def _dispatch_parts(self, replicas: _Replicas, parts: list[Callable[[Any], Any]]) -> Future[list[Any]]:
        """Send each part of one request to the least busy copy of the model; one future for them all.

        The request holds one place among ``max_pending`` until its last part has ended. The future
        resolves with the parts' results in their order, or with the error of the first part (in that
        order) that failed; cancelling it cancels the parts not yet begun.
        """
        whole: Future[list[Any]] = Future()
        futures: list[Future[Any]] = []
        lock = threading.Lock()
        left = [len(parts)]  # guarded by lock

        def settle(_: object = None) -> None:
            with lock:
                left[0] -= 1
                if left[0]:
                    return
            self._slots.release()
            if whole.set_running_or_notify_cancel():
                try:
                    whole.set_result([f.result() for f in futures])
                except BaseException as exc:  # a part's error (the first in order), or its cancellation
                    whole.set_exception(exc)

        try:
            for part in parts:
                futures.append(replicas.submit(part))
        except BaseException:
            whole.cancel()
            for future in futures:
                future.cancel()
                future.add_done_callback(settle)
            for _ in range(len(parts) - len(futures)):
                settle()
            raise
        for future in futures:
            future.add_done_callback(settle)
        whole.add_done_callback(lambda w: [f.cancel() for f in futures] if w.cancelled() else None)
        return whole

    def _run_parts(self, replicas: _Replicas, parts: list[Callable[[Any], Any]]) -> list[Any]:
        self._slots.acquire()
        return self._dispatch_parts(replicas, parts).result()

    async def _arun_parts(self, replicas: _Replicas, parts: list[Callable[[Any], Any]]) -> list[Any]:
        await self._slots.acquire_async()
        return await _awaitable(self._dispatch_parts(replicas, parts))

    def _key(
        self, replicas: _Replicas, text: Any, normalize: NormalizeSpec | None, options: dict[str, Any] | None = None
    ) -> Hashable | None:
        """The cache key of one text, or None when the text cannot be cached (the worker reports why)."""
        if not isinstance(text, str) or not text:
            return None
        try:
            norm = parse_normalization(replicas.config.normalize if normalize is None else normalize)
        except ConfigurationError:
            return None
        extra = tuple(sorted((options or {}).items()))  # prompt, truncate_dim, precision as the call gave them
        return (replicas.generation, text, replicas.config.pooling, norm, *extra)

    def _batch_request(
        self,
        replicas: _Replicas,
        texts: Sequence[str],
        *,
        batch_size: int | None,
        normalize: NormalizeSpec | None,
        show_progress_bar: bool | None,
        progress: ProgressCallback | None,
        options: dict[str, Any] | None = None,
        join: bool = True,
    ) -> _Request:
        items = list(texts) if not isinstance(texts, (str, bytes)) else texts
        keys: list[Hashable | None] = []
        cache = self._cache
        options = options or {}
        # int8/uint8 are calibrated on the texts computed together: never assembled from cached pieces
        calibrated = (options.get("precision") or replicas.config.precision) in _output.CALIBRATED
        if (
            cache is not None
            and isinstance(items, list)
            and (len(items) == 1 or self._config.cache_batches)
            and not calibrated
        ):
            keys = [self._key(replicas, t, normalize, options) for t in items]
            if None in keys:
                keys = []  # an invalid text: the worker raises for it, as without the cache

        # Every argument of embed_batch but the texts and the progress callback: requests of equal
        # settings (prompt, truncate_dim and precision included) may share a llama.cpp call
        # (dynamic batching; see _Worker._run_joined).
        settings: dict[str, Any] = {
            "batch_size": batch_size,
            "normalize": normalize,
            "show_progress_bar": show_progress_bar,
            **(options or {}),
        }
        if calibrated:  # int8/uint8 take their ranges from one request's own texts: never shared
            join = False

        def compute(m: EmbeddingModel, chunk: Any, report: ProgressCallback | None) -> Any:
            return m.embed_batch(chunk, progress=report, **settings)

        join_key: Hashable | None = None
        joinable = join and isinstance(items, list) and len(items) > 0 and progress is None
        if joinable and batch_size is None and show_progress_bar is not True:  # no cap per call, nothing to report
            join_key = ("embed_batch", tuple(sorted((k, v) for k, v in settings.items() if k != "show_progress_bar")))
            try:
                hash(join_key)
            except TypeError:
                join_key = None
        return _Request(
            items,  # type: ignore[arg-type]
            keys,
            cache,
            compute,
            progress,
            join_key=join_key,
            cache_shared=self._config.cache_batches,
        )

    # -- embeddings --------------------------------------------------------------------

    def embed(
        self,
        text: str,
        *,
        model: str | None = None,
        normalize: NormalizeSpec | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        truncate_dim: int | None = None,
        precision: str | None = None,
    ) -> npt.NDArray[Any]:
        """Embedding of one text with the named (or default) model (from the cache when it holds it).

        Parameters
        ----------
        text : str
            The text.
        model : str, optional
            The model's name; default: the default model.
        normalize : bool, str or float, optional
            Normalization instead of the model's ``ModelConfig.normalize``.
        prompt_name, prompt, truncate_dim, precision
            As for :meth:`EmbeddingModel.embed_batch`.

        Returns
        -------
        numpy.ndarray
            float32, shape ``(dim,)`` (``truncate_dim``, ``precision`` as asked).

        Raises
        ------
        InvalidInputError
            The text is empty, not a str, or too long with ``truncate=False``.
        ConfigurationError, ResourceClosedError, EngineBusyError
            No such model, the engine is closed, or no room for the request.
        EmbeddingError
            llama.cpp failed.
        """
        replicas = self._model(model, EMBEDDING)
        request = self._batch_request(
            replicas,
            [text],
            batch_size=None,
            normalize=normalize,
            show_progress_bar=False,
            progress=None,
            options=dict(prompt_name=prompt_name, prompt=prompt, truncate_dim=truncate_dim, precision=precision),
        )
        if request.run is None:
            return request.result[0]  # type: ignore[no-any-return]
        self._slots.acquire()
        return self._dispatch(replicas, request.run).result()[0]  # type: ignore[no-any-return]

    def embed_batch(
        self,
        texts: Sequence[str],
        *,
        model: str | None = None,
        batch_size: int | None = None,
        normalize: NormalizeSpec | None = None,
        show_progress_bar: bool | None = None,
        progress: ProgressCallback | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        truncate_dim: int | None = None,
        precision: str | None = None,
    ) -> npt.NDArray[Any]:
        """Embeddings of several texts with the named (or default) model.

        ``progress(done, total)`` is called as texts complete, last with ``(total, total)``;
        it runs on the model's worker thread (on the caller's when the cache held every text).

        Parameters
        ----------
        texts : sequence of str
            The texts; all are checked before any is embedded.
        model : str, optional
            The model's name; default: the default model.
        batch_size, normalize, show_progress_bar, progress, prompt_name, prompt, truncate_dim, precision
            As for :meth:`EmbeddingModel.embed_batch`.

        Returns
        -------
        numpy.ndarray
            float32 (or ``precision``'s type), shape ``(len(texts), dim)``, in input order.

        Raises
        ------
        InvalidInputError
            A text is invalid (the message gives its index).
        ConfigurationError, ResourceClosedError, EngineBusyError, EmbeddingError
            As for :meth:`embed`.
        """
        replicas = self._model(model, EMBEDDING)
        request = self._batch_request(
            replicas,
            texts,
            batch_size=batch_size,
            normalize=normalize,
            show_progress_bar=show_progress_bar,
            progress=progress,
            options=dict(prompt_name=prompt_name, prompt=prompt, truncate_dim=truncate_dim, precision=precision),
        )
        if request.run is None:
            return request.result  # type: ignore[no-any-return]
        self._slots.acquire()
        return self._dispatch(replicas, request.run).result()  # type: ignore[no-any-return]

    async def aembed(
        self,
        text: str,
        *,
        model: str | None = None,
        normalize: NormalizeSpec | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        truncate_dim: int | None = None,
        precision: str | None = None,
    ) -> npt.NDArray[Any]:
        """:meth:`embed` for coroutines: the work runs on the worker; the event loop never blocks.

        Parameters
        ----------
        text, model, normalize, prompt_name, prompt, truncate_dim, precision
            As for :meth:`embed`.

        Returns
        -------
        numpy.ndarray
            The vector :meth:`embed` returns; it was computed on the worker thread while the loop ran on.

        Raises
        ------
        InvalidInputError, ConfigurationError, ResourceClosedError, EngineBusyError, EmbeddingError
            As for :meth:`embed`; a cancelled task cancels the request if it has not started.
        """
        replicas = self._model(model, EMBEDDING)
        request = self._batch_request(
            replicas,
            [text],
            batch_size=None,
            normalize=normalize,
            show_progress_bar=False,
            progress=None,
            options=dict(prompt_name=prompt_name, prompt=prompt, truncate_dim=truncate_dim, precision=precision),
        )
        if request.run is None:
            return request.result[0]  # type: ignore[no-any-return]
        await self._slots.acquire_async()
        result = await _awaitable(self._dispatch(replicas, request.run))
        return result[0]  # type: ignore[no-any-return]

    async def aembed_batch(
        self,
        texts: Sequence[str],
        *,
        model: str | None = None,
        batch_size: int | None = None,
        normalize: NormalizeSpec | None = None,
        progress: ProgressCallback | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        truncate_dim: int | None = None,
        precision: str | None = None,
    ) -> npt.NDArray[Any]:
        """:meth:`embed_batch` for coroutines; ``progress`` runs on the worker thread, not the loop.

        Parameters
        ----------
        texts, model, batch_size, normalize, progress, prompt_name, prompt, truncate_dim, precision
            As for :meth:`embed_batch`.

        Returns
        -------
        numpy.ndarray
            float32, shape ``(len(texts), dim)``.

        Raises
        ------
        InvalidInputError, ConfigurationError, ResourceClosedError, EngineBusyError, EmbeddingError
            As for :meth:`embed_batch`.
        """
        replicas = self._model(model, EMBEDDING)
        request = self._batch_request(
            replicas,
            texts,
            batch_size=batch_size,
            normalize=normalize,
            show_progress_bar=False,
            progress=progress,
            options=dict(prompt_name=prompt_name, prompt=prompt, truncate_dim=truncate_dim, precision=precision),
        )
        if request.run is None:
            return request.result  # type: ignore[no-any-return]
        await self._slots.acquire_async()
        return await _awaitable(self._dispatch(replicas, request.run))  # type: ignore[no-any-return]

    def embed_iter(
        self,
        texts: Iterable[str],
        *,
        model: str | None = None,
        chunk_size: int = 1024,
        batch_size: int | None = None,
        normalize: NormalizeSpec | None = None,
        show_progress_bar: bool | None = None,
        progress: ProgressCallback | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        truncate_dim: int | None = None,
        precision: str | None = None,
    ) -> Iterator[npt.NDArray[Any]]:
        """Embed a stream of texts in chunks: yields one ``(len(chunk), dim)`` array per chunk, in input order.

        ``texts`` is read lazily, ``chunk_size`` texts at a time, and each chunk is a request
        to the model's workers; while the caller handles one chunk, the next ones (one per
        copy of the model, plus one) are computed. Like :meth:`EmbeddingModel.embed_iter`,
        ``progress(done, total)`` gets ``total=None`` while the stream's length is unknown
        and ends with ``(total, total)``; here it runs on the caller's thread, as each chunk
        is yielded. A bad text raises :class:`InvalidInputError` with its index in the whole
        stream. Stopping the iteration early cancels the chunks not yet begun.

        Parameters
        ----------
        texts : iterable of str
            Any iterable, read lazily (a generator over a file's lines, say).
        model : str, optional
            The model's name; default: the default model.
        chunk_size : int, optional
            Texts per chunk (per request and per yielded array).
        batch_size, normalize, show_progress_bar, progress, prompt_name, prompt, truncate_dim, precision
            As for :meth:`EmbeddingModel.embed_iter` (which refuses int8/uint8).

        Yields
        ------
        numpy.ndarray
            float32, shape ``(len(chunk), dim)``, chunk after chunk in input order.

        Raises
        ------
        ConfigurationError
            A bad ``chunk_size``, or no such model.
        InvalidInputError
            ``texts`` is a str itself, or a text is invalid (its index in the stream).
        ResourceClosedError, EngineBusyError, EmbeddingError
            As for :meth:`embed`.
        """
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ConfigurationError(f"chunk_size must be a positive int, got {chunk_size!r}")
        if isinstance(texts, (str, bytes)):
            raise InvalidInputError(f"embed_iter expects an iterable of str, got {type(texts).__name__}")
        replicas = self._model(model, EMBEDDING)
        if (precision or replicas.config.precision) in _output.CALIBRATED:
            raise ConfigurationError(
                f"model {replicas.name!r}: embed_iter cannot give {precision or replicas.config.precision}: each "
                "chunk would be calibrated on its own ranges; embed float32, then quantize_embeddings(ranges=...)"
            )
        total = len(texts) if isinstance(texts, Sized) else None
        tracker = _batch.Progress(total, replicas.name, show_progress_bar, progress)
        options = dict(prompt_name=prompt_name, prompt=prompt, truncate_dim=truncate_dim, precision=precision)
        return self._stream(replicas, iter(texts), chunk_size, batch_size, normalize, tracker, options)

    def _stream(
        self,
        replicas: _Replicas,
        source: Iterator[str],
        chunk_size: int,
        batch_size: int | None,
        normalize: NormalizeSpec | None,
        tracker: _batch.Progress,
        options: dict[str, Any] | None = None,
    ) -> Iterator[npt.NDArray[Any]]:
        depth = len(replicas.workers) + 1
        if self._slots.limit:
            depth = min(depth, self._slots.limit)
        in_flight: collections.deque[tuple[int, int, Future[Any]]] = collections.deque()  # (start, size, future)
        read = 0

        def fill() -> None:  # keep the workers busy while the caller handles a chunk
            nonlocal read
            while len(in_flight) < depth:
                chunk = list(itertools.islice(source, chunk_size))
                if not chunk:
                    return
                request = self._batch_request(
                    replicas,
                    chunk,
                    batch_size=batch_size,
                    normalize=normalize,
                    show_progress_bar=False,
                    progress=None,
                    options=options,
                    join=False,  # the stream's own chunks: each is one request, as the caller sized it
                )
                if request.run is None:
                    future: Future[Any] = Future()
                    future.set_result(request.result)
                else:
                    self._slots.acquire()
                    future = self._dispatch(replicas, request.run)
                in_flight.append((read, len(chunk), future))
                read += len(chunk)

        try:
            fill()
            while in_flight:
                start, size, future = in_flight.popleft()
                try:
                    vectors = future.result()
                except InvalidInputError as exc:  # name the text by its place in the whole stream
                    if exc.index is None:
                        raise
                    raise InvalidInputError(exc.reason, exc.model_name, start + exc.index) from None
                fill()
                tracker.advance(size)
                if not in_flight:
                    tracker.close()
                yield vectors
            if read == 0:
                tracker.close()
        finally:
            for _, _, future in in_flight:
                future.cancel()

    def encode_query(
        self,
        sentences: str | Sequence[str],
        *,
        model: str | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        **kwargs: Any,
    ) -> npt.NDArray[Any]:
        """:meth:`EmbeddingModel.encode_query` through the engine: the ``query`` prompt unless the call names one.

        Parameters
        ----------
        sentences : str or sequence of str
            One query (gives ``(dim,)``) or several (``(n, dim)``).
        model : str, optional
            The model's name; default: the default model.
        prompt_name, prompt : str, optional
            Another prompt, as for :meth:`EmbeddingModel.encode`.
        **kwargs
            ``normalize``, ``truncate_dim``, ``precision`` (and, for several texts, the other arguments of
            :meth:`embed_batch`).

        Returns
        -------
        numpy.ndarray
            As :meth:`embed` or :meth:`embed_batch` returns.

        Raises
        ------
        InvalidInputError, ConfigurationError, ResourceClosedError, EngineBusyError, EmbeddingError
            As for :meth:`embed_batch`.
        """
        if prompt_name is None and prompt is None and "query" in self._prompts(model):
            prompt_name = "query"
        return self._encode(sentences, model, prompt_name, prompt, kwargs)

    def encode_document(
        self,
        sentences: str | Sequence[str],
        *,
        model: str | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        **kwargs: Any,
    ) -> npt.NDArray[Any]:
        """:meth:`EmbeddingModel.encode_document` through the engine: the first of the ``document``, ``passage``
        and ``corpus`` prompts unless the call names one.

        Parameters
        ----------
        sentences : str or sequence of str
            One document (gives ``(dim,)``) or several (``(n, dim)``).
        model : str, optional
            The model's name; default: the default model.
        prompt_name, prompt : str, optional
            Another prompt, as for :meth:`EmbeddingModel.encode`.
        **kwargs
            As for :meth:`encode_query`.

        Returns
        -------
        numpy.ndarray
            As :meth:`embed` or :meth:`embed_batch` returns.

        Raises
        ------
        InvalidInputError, ConfigurationError, ResourceClosedError, EngineBusyError, EmbeddingError
            As for :meth:`embed_batch`.
        """
        if prompt_name is None and prompt is None:
            prompt_name = _prompts.document_prompt_name(self._prompts(model))
        return self._encode(sentences, model, prompt_name, prompt, kwargs)

    def _prompts(self, model: str | None) -> dict[str, str]:
        return self._model(model, EMBEDDING).wait_loaded(None)["prompts"]  # type: ignore[no-any-return]

    def _encode(
        self,
        sentences: str | Sequence[str],
        model: str | None,
        prompt_name: str | None,
        prompt: str | None,
        kwargs: dict[str, Any],
    ) -> npt.NDArray[Any]:
        if isinstance(sentences, str):
            return self.embed(sentences, model=model, prompt_name=prompt_name, prompt=prompt, **kwargs)
        return self.embed_batch(sentences, model=model, prompt_name=prompt_name, prompt=prompt, **kwargs)

    # -- reranking -----------------------------------------------------------------------

    def _pair_parts(
        self,
        replicas: _Replicas,
        pairs: Any,
        activation: str | None,
        batch_size: int | None,
        progress: ProgressCallback | None,
        rank: bool = False,
    ) -> tuple[bool, list[Callable[[Any], Any]]]:
        """Whether ``pairs`` is one pair given alone, and the worker parts that score them.

        Valid pairs (2-tuples of non-empty str) are split among the model's copies, at least
        ``_SPLIT_MIN`` a copy; with an invalid pair the request goes whole to one copy, which
        names the first bad pair as :meth:`Reranker.predict` does.
        """
        single = is_pair(pairs)
        batch = [pairs] if single else pairs
        if isinstance(batch, (str, bytes)) or not isinstance(batch, Sequence):
            raise InvalidInputError(
                f"predict expects a sequence of (query, document) pairs, got {type(pairs).__name__}", replicas.name
            )
        items = list(batch)
        kind = check_activation(activation, f"model {replicas.name!r}")
        n = len(items)
        count = 1
        if len(replicas.workers) > 1 and all(is_pair(p) and p[0] and p[1] for p in items):
            count = max(1, min(len(replicas.workers), n // _SPLIT_MIN))
        bounds = [n * i // count for i in range(count + 1)]
        tally = _Tally(n, progress, count) if progress is not None and count > 1 else None
        parts: list[Callable[[Any], Any]] = [
            functools.partial(
                _score_pairs,
                pairs=items[start:end],
                offset=start,
                batch_size=batch_size,
                activation=kind,
                rank=rank,
                progress=progress if tally is None else tally.part(i),
            )
            for i, (start, end) in enumerate(itertools.pairwise(bounds))
        ]
        return single, parts

    def _rank_parts(
        self,
        replicas: _Replicas,
        query: str,
        documents: Sequence[str],
        top_k: int | None,
        activation: str | None,
        batch_size: int | None,
    ) -> tuple[list[str], list[Callable[[Any], Any]]]:
        """The documents (a list) and the worker parts that score them against ``query``."""
        if isinstance(documents, (str, bytes)) or not isinstance(documents, Sequence):
            raise InvalidInputError(
                f"rerank expects a sequence of documents, got {type(documents).__name__}", replicas.name
            )
        if not documents:
            raise InvalidInputError("rerank got no documents", replicas.name)
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ConfigurationError(f"model {replicas.name!r}: top_k must be a positive int, got {top_k!r}")
        docs = list(documents)
        _, parts = self._pair_parts(replicas, [(query, d) for d in docs], activation, batch_size, None, rank=True)
        return docs, parts

    def predict(
        self,
        pairs: Sequence[tuple[str, str]] | tuple[str, str],
        *,
        model: str | None = None,
        activation: str | None = None,
        batch_size: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> Any:
        """Scores of (query, document) pairs with the named (or default) reranker, in input order.

        The scores are :meth:`Reranker.predict`'s. With several copies of the model
        (``workers_per_model``), a request of valid pairs is split among them (at least 16 pairs a
        copy) and each part packed into llama.cpp calls by length; the scores then equal those of
        one ``Reranker.predict`` call to float rounding (bit-identical with one copy). Scores are
        never cached, and pair requests are not joined by dynamic batching.

        Parameters
        ----------
        pairs : sequence of (str, str), or one (str, str)
            The pairs; all are checked before any is scored.
        model : str, optional
            The reranker's name; default: the default model.
        activation : str, optional
            "sigmoid", "identity" (raw logits) or "softmax" instead of the model's (:attr:`Reranker.activation`).
        batch_size : int, optional
            Most pairs per llama.cpp call; default: as many as fit.
        progress : callable, optional
            ``progress(done, total)`` as pairs complete, last with ``(total, total)``; it runs on the
            model's worker threads (one at a time).

        Returns
        -------
        numpy.ndarray
            float32: shape ``(n,)`` for a one-output head, ``(n, num_labels)`` otherwise; for one pair
            given alone, a float32 scalar (or a ``(num_labels,)`` row).

        Raises
        ------
        InvalidInputError
            ``pairs`` is not a sequence of 2-tuples, or a text is not a str, is empty, or the pair is too
            long with ``truncate=False`` (the message names the model and the pair's index).
        ConfigurationError
            No such model, the model is an embedding model, or a bad ``activation`` or ``batch_size``.
        ResourceClosedError, EngineBusyError, EmbeddingError
            As for :meth:`embed`.
        """
        replicas = self._model(model, RERANKER)
        single, parts = self._pair_parts(replicas, pairs, activation, batch_size, progress)
        scores = _concat(self._run_parts(replicas, parts))
        return scores[0] if single else scores

    async def apredict(
        self,
        pairs: Sequence[tuple[str, str]] | tuple[str, str],
        *,
        model: str | None = None,
        activation: str | None = None,
        batch_size: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> Any:
        """:meth:`predict` for coroutines: the work runs on the workers; the event loop never blocks.

        Parameters
        ----------
        pairs, model, activation, batch_size, progress
            As for :meth:`predict`.

        Returns
        -------
        numpy.ndarray
            As :meth:`predict` returns.

        Raises
        ------
        InvalidInputError, ConfigurationError, ResourceClosedError, EngineBusyError, EmbeddingError
            As for :meth:`predict`; a cancelled task cancels the parts of the request not yet begun.
        """
        replicas = self._model(model, RERANKER)
        single, parts = self._pair_parts(replicas, pairs, activation, batch_size, progress)
        scores = _concat(await self._arun_parts(replicas, parts))
        return scores[0] if single else scores

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        model: str | None = None,
        top_k: int | None = None,
        return_documents: bool = False,
        activation: str | None = None,
        batch_size: int | None = None,
    ) -> list[dict[str, Any]]:
        """The documents sorted by their score for ``query`` with the named (or default) reranker, best first.

        :meth:`Reranker.rank` through the engine: the scores are :meth:`predict`'s for the pairs
        ``(query, document)``.

        Parameters
        ----------
        query : str
            The query.
        documents : sequence of str
            The candidates (at least one).
        model : str, optional
            The reranker's name; default: the default model.
        top_k : int, optional
            Return only the best ``top_k``; default all.
        return_documents : bool, optional
            Include each document's text under ``"text"``.
        activation, batch_size
            As for :meth:`predict`.

        Returns
        -------
        list of dict
            ``{"corpus_id": index in documents, "score": float}`` (and ``"text"``), by descending score;
            equal scores keep input order.

        Raises
        ------
        InvalidInputError
            ``documents`` is empty or not a sequence, or a text is invalid (the index is the document's).
        ConfigurationError
            No such model, the model is an embedding model or has several outputs per pair, or a bad
            ``top_k``, ``activation`` or ``batch_size``.
        ResourceClosedError, EngineBusyError, EmbeddingError
            As for :meth:`embed`.
        """
        replicas = self._model(model, RERANKER)
        docs, parts = self._rank_parts(replicas, query, documents, top_k, activation, batch_size)
        return rank_results(_concat(self._run_parts(replicas, parts)), docs, top_k, return_documents)

    async def arerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        model: str | None = None,
        top_k: int | None = None,
        return_documents: bool = False,
        activation: str | None = None,
        batch_size: int | None = None,
    ) -> list[dict[str, Any]]:
        """:meth:`rerank` for coroutines: the work runs on the workers; the event loop never blocks.

        Parameters
        ----------
        query, documents, model, top_k, return_documents, activation, batch_size
            As for :meth:`rerank`.

        Returns
        -------
        list of dict
            As :meth:`rerank` returns.

        Raises
        ------
        InvalidInputError, ConfigurationError, ResourceClosedError, EngineBusyError, EmbeddingError
            As for :meth:`rerank`; a cancelled task cancels the parts of the request not yet begun.
        """
        replicas = self._model(model, RERANKER)
        docs, parts = self._rank_parts(replicas, query, documents, top_k, activation, batch_size)
        return rank_results(_concat(await self._arun_parts(replicas, parts)), docs, top_k, return_documents)

    # -- cache -------------------------------------------------------------------------

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

    def __enter__(self) -> EmbeddingEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ResourceClosedError("the EmbeddingEngine is closed")

    def _model(self, name: str | None, kind: str | None = None) -> _Replicas:
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
            raise _wrong_kind(replicas.name, replicas.kind)
        return replicas

    def __repr__(self) -> str:
        return f"<EmbeddingEngine models={self.models}>"
