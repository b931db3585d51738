# SPDX-License-Identifier: Apache-2.0
"""A model's copies and where a request goes: routing to the least busy copy, and admission (``max_pending``)."""

from __future__ import annotations

import concurrent.futures
import itertools
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar

from embellama._config import ModelConfig
from embellama._engine.worker import EMBEDDING, Batching, Worker, fail
from embellama._exceptions import EngineBusyError

if TYPE_CHECKING:  # asyncio is imported on first async use: it would add ~25 ms to every start-up
    import asyncio

T = TypeVar("T")

_generations = itertools.count()


class Replicas:
    """The copies of one registered model: one worker each; a request goes to the least busy.

    If any copy fails to load, the model fails: every request sent to it, queued on any
    copy or sent later, gets that load error, and the other copies stop.
    """

    def __init__(
        self, config: ModelConfig, copies: int, batching: Batching | None = None, kind: str = EMBEDDING
    ) -> None:
        self.config = config
        self.kind = kind
        self.generation = next(_generations)  # tells this load apart from a later one of the same name
        names = [f"embellama:{config.name}"] if copies == 1 else [f"embellama:{config.name}#{i}" for i in range(copies)]
        self._lock = threading.Lock()
        self._pending = [0] * copies  # guarded by _lock
        self._turn = 0  # guarded by _lock; breaks ties between equally busy copies
        self._failure: BaseException | None = None  # guarded by _lock
        self.workers: list[Worker] = []
        try:
            for name in names:
                self.workers.append(Worker(config, name, batching, kind))
        except BaseException:
            self.stop(join=False)
            raise
        for worker in self.workers:
            worker.ready.add_done_callback(self._loaded)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def alive(self) -> bool:
        """Whether any copy's thread still runs."""
        return any(w.thread.is_alive() for w in self.workers)

    def stats(self) -> tuple[int, int, int]:
        """Requests pending on the copies, dynamic batching's joined calls, and the requests in them."""
        with self._lock:
            pending = sum(self._pending)
        return pending, sum(w.joined_calls for w in self.workers), sum(w.joined_requests for w in self.workers)

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
                fail(future, self._failure)
                return future
            n = len(self._pending)
            if n == 1:
                index = 0
            else:
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


class Admission:
    """Counts pending requests against ``max_pending`` (0: no limit), and sends admitted ones to a model's copies.

    A request takes its room with :meth:`acquire` (or :meth:`acquire_async`) and is sent with
    :meth:`send` or :meth:`send_parts`, which give the room back when it ends.
    """

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

    def send(self, replicas: Replicas, fn: Callable[[Any], T]) -> Future[T]:
        """Send an admitted ``fn`` to a copy of the model; its room is given back when it resolves."""
        if not self.limit:  # nothing to give back
            return replicas.submit(fn)
        try:
            future = replicas.submit(fn)
        except BaseException:
            self.release()
            raise
        future.add_done_callback(lambda _: self.release())
        return future

    def send_parts(self, replicas: Replicas, parts: list[Callable[[Any], Any]]) -> Future[list[Any]]:
        """Send each part of one admitted request to the least busy copy of the model; one future for them all.

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
            self.release()
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


def awaitable(future: Future[T]) -> asyncio.Future[T]:
    """``future`` for the running event loop."""
    import asyncio

    return asyncio.wrap_future(future)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
