# SPDX-License-Identifier: Apache-2.0
"""The worker thread that owns one copy of a model, and dynamic batching: joining waiting requests into one call.

llama.cpp contexts are not thread-safe, so nothing is shared: every copy of a model lives
in one worker thread that loads it, runs every request sent to it and frees it. Callers
from any thread (or an asyncio event loop) send requests as messages and wait on a
:class:`concurrent.futures.Future`.

Every future resolves: with the result, with the request's own exception, with the
model's load error when the load fails, or with :class:`ResourceClosedError` when the
model is removed or the engine closed before the request ran.

A worker holds an :class:`EmbeddingModel`, a :class:`Reranker` when the GGUF is a cross-encoder (its
requests are split among its copies instead of joined), or, by the model's kind, a :class:`Classifier`, a
:class:`SparseEncoder` or a :class:`MultiVectorEncoder` (whose requests are joined like embeddings).

Dynamic batching: when a worker is free and several embedding requests of the same kind
wait for it, it joins them into one packed llama.cpp call (at most the model's
``n_seq_max`` texts and one call of short texts' tokens, and ``EngineConfig.max_batch_texts``) and
hands each request its own rows. Each request's texts are checked before it joins; one
that fails runs on its own and gets its own error, and when the joined call fails every
request is run again on its own, so no request gets another's result or exception.

When the requests waiting fill the next joined call, the answers of a joined call are handed out only when
its first llama.cpp call starts (after the worker has taken, measured and tokenized its requests): handing
them out wakes their callers, whose Python then runs while llama.cpp computes with the GIL released, instead
of holding the GIL while the worker prepares the next batch. When they do not, the answers go out at once and
the worker waits a moment for their callers' next requests (:meth:`Worker._wake_callers`), so that callers
asking one text after another join one call together.

A joined call fills whole llama.cpp calls: requests that would end it in a nearly empty call wait for the next
joined call, ahead of later ones (:meth:`Worker._fill_calls`). Each request is tokenized once, as it joins; the
joined call reuses those tokens.
"""

from __future__ import annotations

import collections
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any, NamedTuple, TypeVar

import numpy as np

from embellama._compute.packing import ProgressCallback
from embellama._config import ModelConfig
from embellama._exceptions import InvalidInputError, ResourceClosedError
from embellama._models import Classifier, EmbeddingModel, Reranker
from embellama._models.multivector import MultiVectorEncoder
from embellama._models.sparse import SparseEncoder

logger = logging.getLogger("embellama")
T = TypeVar("T")
_STOP = object()

FILL = 0.75
"""A joined call's llama.cpp call fuller than this runs as it is; an emptier one waits for more (see
Worker._fill_calls)."""

SETTLE_GAP = 0.0005
"""Seconds a worker that has just answered a joined call waits for the next request (see Worker._wake_callers)."""
SETTLE_MAX = 0.002
"""And at most this long in all."""

EMBEDDING, RERANKER = "embedding", "reranker"
CLASSIFIER, SPARSE, MULTI_VECTOR = "classifier", "sparse", "multi_vector"
KINDS = (EMBEDDING, RERANKER, CLASSIFIER, SPARSE, MULTI_VECTOR)
"""The kinds of model an engine serves (``info()["kind"]``): an EmbeddingModel, a Reranker, a Classifier, a
SparseEncoder or a MultiVectorEncoder per worker."""


def model_classes() -> dict[str, Any]:
    """The class a worker loads for each kind (looked up when called, so that tests may replace one)."""
    return {
        EMBEDDING: EmbeddingModel,
        RERANKER: Reranker,
        CLASSIFIER: Classifier,
        SPARSE: SparseEncoder,
        MULTI_VECTOR: MultiVectorEncoder,
    }


Compute = Callable[[EmbeddingModel, list[Any], "ProgressCallback | None"], Any]
"""``compute(model, texts, progress)``: the rows of ``texts``, computed on the worker."""


def fail(future: Future[Any], exc: BaseException) -> None:
    """Resolve ``future`` with ``exc`` unless its caller already cancelled it."""
    if future.set_running_or_notify_cancel():
        future.set_exception(exc)


def _settle(future: Future[Any], fn: Callable[[Any], Any], arg: Any) -> None:
    """Resolve an already running ``future`` with ``fn(arg)``, or with what it raised."""
    try:
        future.set_result(fn(arg))
    except BaseException as exc:
        future.set_exception(exc)


class Batching(NamedTuple):
    """Dynamic batching settings of a worker (from EngineConfig)."""

    max_texts: int  # 0: one call's worth; 1: off
    wait: float  # seconds a free worker waits for more requests to join


class Job:
    """A worker's part of an embedding request: called with the model it runs alone, or it joins others.

    ``texts`` are the texts to compute (the cache's misses); ``compute(model, texts, progress)``
    embeds them; ``finish(rows, exact)`` turns their rows into the request's answer (``exact``:
    they were computed alone, so the cache may keep them); requests of one ``key`` may share
    a llama.cpp call (None: never).
    """

    def __init__(
        self,
        texts: list[Any],
        compute: Compute,
        progress: ProgressCallback | None,
        finish: Callable[[Any, bool], Any],
        places: list[int] | None,
        key: Hashable | None,
        count: Callable[[Any, Any], int] | None = None,
    ) -> None:
        self.texts = texts
        self.compute = compute
        self.progress = progress
        self.finish = finish
        self.places = places  # the caller's index of each text, when it differs from its place in ``texts``
        self.key = key
        self.count = count  # ``count(model, text)``: the text's tokens (default: ``model.tokenize``), raising if bad
        self.lengths: list[int] = []  # each text's tokens, once measured
        self.tokens: list[Any] | None = None  # and the tokens themselves, when counted by ``model.tokenize``
        self.deferred = False  # it was left for the next joined call once, and never will be again
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
                if self.count is None:
                    self.tokens = [model.tokenize(text) for text in self.texts]
                    self.lengths = [len(ids) for ids in self.tokens]
                else:
                    self.lengths = [self.count(model, text) for text in self.texts]
                self._tokens = sum(self.lengths)
            except Exception:
                self._tokens = -1
        return None if self._tokens < 0 else self._tokens


def batching_model(model: Any) -> Any:
    """The llama.cpp model whose call limits a joined call keeps: the encoder's pooling-NONE EmbeddingModel for a
    sparse or multi-vector encoder, else the model itself."""
    return model.model if isinstance(model, SparseEncoder | MultiVectorEncoder) else model


def free(model: Any) -> None:
    """Free a worker's model (an encoder closes its EmbeddingModel)."""
    if isinstance(model, SparseEncoder | MultiVectorEncoder):
        model.close()
    else:
        model.unload()


class Worker:
    """One thread that owns one model (an EmbeddingModel, or a Reranker) and serves requests for it in order.

    ``submit`` and ``stop`` take the worker's lock, and the thread drains its inbox only
    after marking itself closed under that lock, so no request can slip in unanswered.
    """

    def __init__(
        self, config: ModelConfig, thread_name: str, batching: Batching | None = None, kind: str = EMBEDDING
    ) -> None:
        self.config = config
        self.kind = kind
        self.batching = batching or Batching(0, 0.0)
        self.ready: Future[dict[str, Any]] = Future()
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._stopping = False
        self._stop_error: BaseException | None = None  # what queued requests fail with once stopped
        self._failure: BaseException | None = None
        self.joined_calls = self.joined_requests = 0  # dynamic batching's shared calls and the requests in them
        self._answers: list[tuple[Future[Any], Callable[[Any], Any], Any]] = []  # a joined call's, not yet handed out
        self._limits_of: tuple[int, int] | None = None  # see _limits
        # Messages taken from the inbox and put back, to run first: the one that did not fit the last joined call,
        # and the requests left for the next one (see _fill_calls).
        self._pending: collections.deque[Any] = collections.deque()
        self.thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self.thread.start()

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def stopping(self) -> bool:
        """True once the worker refuses new requests (it was stopped, or its thread ended)."""
        with self._lock:
            return self._stopping

    def submit(self, fn: Callable[[Any], T]) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._failure is not None and not self._stopping:
                fail(future, self._failure)  # the load failed: the request gets that error
                return future
            if self._stopping and self._stop_error is not None:
                fail(future, self._stop_error)  # a sibling copy failed to load: the model's load error
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
            model = model_classes()[self.kind](self.config)
            model.load()
        except BaseException as exc:  # delivered to every caller waiting for this model
            with self._lock:
                self._failure = exc
            self._drain(exc)
            self.ready.set_exception(exc)
            return
        batching_model(model).before_llama_calls(self._hand_out)
        self.ready.set_result(describe(model))
        closed = ResourceClosedError(f"model {self.name!r} was removed or its engine closed before the request ran")
        try:
            while True:
                item = self._take(model)
                if item is _STOP:
                    break
                fn, future = item
                if self._stopping:
                    fail(future, self._stop_error or closed)
                elif self._joinable(fn, model) and (
                    self.batching.wait > 0 or bool(self._pending) or not self._inbox.empty()
                ):
                    self._run_joined(model, fn, future)
                elif future.set_running_or_notify_cancel():
                    if not isinstance(fn, Job):  # it may make no llama.cpp call, or run long before one
                        self._hand_out()
                    _settle(future, fn, model)
                    self._hand_out()  # if it made no llama.cpp call
        finally:
            try:
                self._hand_out()
                free(model)
            finally:
                with self._lock:
                    self._stopping = True
                pending, self._pending = list(self._pending), collections.deque()
                for item in pending:
                    if item is not _STOP:
                        fail(item[1], self._stop_error or closed)
                self._drain(self._stop_error or closed)

    # -- dynamic batching ---------------------------------------------------------------

    def _limits(self, model: EmbeddingModel) -> tuple[int, int]:
        """Most texts and tokens of one joined call: one llama.cpp call of short texts (256 tokens on the CPU,
        the micro-batch elsewhere), and ``max_batch_texts`` (asked of the worker's model once: they hold while
        it is loaded).

        One call, not the micro-batch's two on the CPU: its answers come a call sooner (p99 158-166 against
        201-203 ms at 64 clients, benchmarks/bench_serve.py), at the same throughput.
        """
        if self._limits_of is None:
            base = batching_model(model)
            n_seq_max = base.context.n_seq_max
            texts = min(self.batching.max_texts, n_seq_max) if self.batching.max_texts else n_seq_max
            self._limits_of = (texts, base.call_tokens)
        return self._limits_of

    def _joinable(self, fn: Any, model: EmbeddingModel, key: Hashable | None = None) -> bool:
        """Whether ``fn`` is an embedding request that may share a call (with requests of ``key``)."""
        if not isinstance(fn, Job) or fn.key is None or self.batching.max_texts == 1:
            return False
        return (key is None or fn.key == key) and len(fn.texts) <= self._limits(model)[0]

    def _take(self, model: Any) -> Any:
        """The next message (the ones taken back come first), waiting for one (the last call's answers are handed
        out first)."""
        if self._answers:
            self._wake_callers(model)
        if self._pending:
            return self._pending.popleft()
        try:
            return self._inbox.get_nowait()
        except queue.Empty:
            self._hand_out()
            return self._inbox.get()

    def _wake_callers(self, model: Any) -> None:
        """When the requests waiting do not fill a joined call, hand out the last one's answers and give their callers
        a moment to send their next requests.

        The worker then waits until as many new requests as it answered have come or the waiting ones fill a call,
        ``SETTLE_GAP`` seconds pass without a request, or ``SETTLE_MAX`` seconds in all. Callers that ask again at
        once (a loop of requests per thread) then join the next call together instead of one by one (8 threads:
        189 llama.cpp calls for 1,500 texts, against 340). When the waiting requests fill a call, the answers go out
        as it starts, so that their callers' Python runs while llama.cpp computes without the GIL.
        """
        while True:  # the requests already waiting
            try:
                self._pending.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        if self._fills(model):  # the answers go out as the next call starts, while llama.cpp computes
            return
        woken = len(self._answers)
        self._hand_out()
        deadline = time.monotonic() + SETTLE_MAX
        arrived = 0
        while arrived < woken and not self._fills(model):
            remaining = min(SETTLE_GAP, deadline - time.monotonic())
            if remaining <= 0:
                return
            try:
                self._pending.append(self._inbox.get(timeout=remaining))
            except queue.Empty:
                return
            arrived += 1

    def _fills(self, model: Any) -> bool:
        """Whether the requests waiting fill a joined call (or end it: a message that does not join it).

        A lone request is not measured: it joins the requests that come, and is measured then (or runs alone).
        """
        if not self._pending:
            return False
        first = self._pending[0]
        if first is _STOP or not self._joinable(first[0], model):
            return True
        if len(self._pending) == 1:
            return False
        max_texts, max_tokens = self._limits(model)
        texts = tokens = 0
        for item in self._pending:
            if item is _STOP or not self._joinable(item[0], model, first[0].key):  # the call ends before it
                return True
            job, future = item
            size = None if future.cancelled() else job.measure(model)
            if size is not None:
                texts, tokens = texts + len(job.texts), tokens + size
                if texts >= max_texts or tokens >= max_tokens:
                    return True
        return False

    def _hand_out(self) -> None:
        """Resolve the futures of the last joined call (kept until the next call starts or the worker waits)."""
        answers, self._answers = self._answers, []
        for future, fn, arg in answers:
            _settle(future, fn, arg)

    def _next(self, deadline: float) -> Any:
        """The next message, waiting until ``deadline`` at most; None when none came."""
        if self._pending:
            return self._pending.popleft()
        try:
            return self._inbox.get_nowait()
        except queue.Empty:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._hand_out()
            try:
                return self._inbox.get(timeout=remaining)
            except queue.Empty:
                return None

    def _run_joined(self, model: EmbeddingModel, first: Job, future: Future[Any]) -> None:
        """Join ``first`` and the requests of its kind waiting behind it into one call; answer each.

        The message that did not join, and the requests left for the next call (see :meth:`_fill_calls`), are put
        back to run first.
        """
        max_texts, max_tokens = self._limits(model)
        deadline = time.monotonic() + self.batching.wait
        group: list[tuple[Job, Future[Any]]] = []
        alone: list[tuple[Job, Future[Any]]] = []  # a text failed its check: runs on its own, for its own error
        back: list[Any] = []
        texts = tokens = 0
        job, fut = first, future
        try:
            while True:
                size = None if fut.cancelled() else job.measure(model)
                if size is not None and group and (texts + len(job.texts) > max_texts or tokens + size > max_tokens):
                    back.append((job, fut))  # does not fit: it starts the next call
                    break
                if fut.cancelled():
                    fut.set_running_or_notify_cancel()  # tells concurrent.futures.wait() and as_completed()
                elif size is None:
                    alone.append((job, fut))
                else:
                    group.append((job, fut))
                    texts, tokens = texts + len(job.texts), tokens + size
                if texts >= max_texts:
                    break
                item = self._next(deadline)
                if item is None:
                    break
                if item is _STOP or self._stopping or not self._joinable(item[0], model, first.key):
                    back.append(item)
                    break
                job, fut = item
            if len(group) > 1:
                group, later = self._fill_calls(model, group)
                back[:0] = later
            self._pending.extendleft(reversed(back))
            back = []
            group = [(job, fut) for job, fut in group if fut.set_running_or_notify_cancel()]
            alone = [(job, fut) for job, fut in alone if fut.set_running_or_notify_cancel()]
            if len(group) == 1:
                alone += group
            elif group:
                self._answer_joined(model, group)
            for job, fut in alone:
                _settle(fut, job, model)
                self._hand_out()
        except BaseException as exc:  # never leave a taken request unanswered
            self._hand_out()
            for _, fut in group + alone:
                if not fut.done():
                    fut.set_exception(exc)
            back += self._pending
            self._pending.clear()
            for item in back:
                if item is not _STOP:
                    fail(item[1], exc)
            raise

    def _fill_calls(
        self, model: EmbeddingModel, group: list[tuple[Job, Future[Any]]]
    ) -> tuple[list[tuple[Job, Future[Any]]], list[tuple[Job, Future[Any]]]]:
        """Split a joined group into the oldest requests, that fill whole llama.cpp calls, and the newest, left for
        the next joined call.

        When the group's texts make more than one call and the emptiest is under ``FILL`` full, the newest requests,
        as many tokens as that call holds, wait for the next joined call (each at most once, so none waits twice):
        the requests that arrive meanwhile join them, instead of a call running nearly empty (each call streams all
        the weights: MiniLM's cost about 2.5 ms a call besides 136 us a token). Those wait one joined call more; the
        rest no longer wait for the nearly empty call, since a joined call's answers all come when its last ends.
        """
        lengths = [n for job, _ in group for n in job.lengths]
        plan = batching_model(model).call_plan(lengths)
        if len(plan) < 2:
            return group, []
        emptiest, fill = min(plan, key=lambda call: call[1])
        if fill >= FILL:
            return group, []
        extra = int(np.asarray(lengths)[emptiest].sum())
        keep, dropped = len(group), 0
        while dropped < extra and keep > 1 and not group[keep - 1][0].deferred:
            keep -= 1
            dropped += sum(group[keep][0].lengths)
        later = group[keep:]
        for job, _ in later:
            job.deferred = True
        return group[:keep], later

    def _answer_joined(self, model: EmbeddingModel, group: list[tuple[Job, Future[Any]]]) -> None:
        joined = [text for job, _ in group for text in job.texts]
        reuse = isinstance(model, EmbeddingModel) and all(job.tokens is not None for job, _ in group)
        if reuse:  # the tokens counted as the requests joined: not tokenized twice
            model.reuse_tokens({t: ids for job, _ in group for t, ids in zip(job.texts, job.tokens or (), strict=True)})
        try:
            try:
                rows = group[0][0].compute(model, joined, None)  # hands out the last call's answers as it starts
            finally:
                if reuse:
                    model.reuse_tokens(None)
        except Exception:  # whose text? each request runs again on its own and gets its own answer
            self._hand_out()
            logger.debug(
                "model %r: a joined call of %d requests failed; running them one by one", self.name, len(group)
            )
            for job, fut in group:
                _settle(fut, job, model)
            return
        self._hand_out()  # if it made no llama.cpp call
        self.joined_calls += 1
        self.joined_requests += len(group)
        start = 0
        for job, fut in group:
            part = rows[start : start + len(job.texts)]
            start += len(job.texts)
            rows_of_job = part if isinstance(part, list) else part.copy()
            self._answers.append((fut, functools.partial(job.finish, rows_of_job), False))

    def _drain(self, exc: BaseException) -> None:
        """Fail every queued request (called once the lock has closed the inbox)."""
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP:
                fail(item[1], exc)


def describe(model: Any) -> dict[str, Any]:
    """What ``EmbeddingEngine.info`` tells of a loaded model; ``kind`` says which class serves it."""
    kind = next((k for k, cls in model_classes().items() if isinstance(model, cls)), EMBEDDING)
    base = batching_model(model)
    info: dict[str, Any] = {
        "name": model.name,
        "kind": kind,
        "path": str(base.config.model_path),
        "max_sequence_length": base.max_sequence_length,
        "model_size": base.model_size,
        "pooling": base.pooling.value,
        "architecture": base.model.architecture,
    }
    if isinstance(model, Reranker):
        info.update(
            num_labels=model.num_labels,
            labels=list(model.labels),
            activation=model.activation,
            exact_token_types=model.exact_token_types,
        )
    elif isinstance(model, Classifier):
        info.update(num_labels=model.num_labels, labels=list(model.labels), activation=model.activation)
    elif isinstance(model, SparseEncoder | MultiVectorEncoder):
        info.update(embedding_dimensions=model.dimension, prompts=base.prompts)
        info["default_prompt_name"] = base.default_prompt_name
        if isinstance(model, SparseEncoder):
            info.update(sparse_kind=model.kind, max_active_dims=model.max_active_dims)
        else:
            info.update(style=model.style, score=model.score_reduce)
    else:
        info.update(
            embedding_dimensions=model.embedding_dimensions,
            prompts=model.prompts,
            default_prompt_name=model.default_prompt_name,
            similarity_fn_name=model.similarity_fn_name,
            tasks=model.tasks,
        )
    return info
