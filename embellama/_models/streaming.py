# SPDX-License-Identifier: Apache-2.0
"""The driver of a streamed embedding (``EmbeddingModel.embed_iter``): chunks read lazily, each tokenized
(ahead, on a second thread, while a GPU computes) and run in order."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["stream_chunks"]

Tokens = list[npt.NDArray[np.int32]]


class _Inline:
    """The part of an executor :func:`stream_chunks` uses, running each call at once on the calling thread."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True) -> None:
        pass


def stream_chunks(
    source: Iterator[Any],
    chunk_size: int,
    tokenize: Callable[[list[Any], int], Tokens],
    infer: Callable[[Tokens], Any],
    *,
    ahead: bool,
) -> Iterator[Any]:
    """``infer``'s result for each ``chunk_size`` items of ``source``, in order.

    Parameters
    ----------
    source : iterator
        The items, read one chunk at a time.
    chunk_size : int
        Items per chunk.
    tokenize : callable
        ``tokenize(chunk, offset)``: the chunk's tokens (``offset`` is the index of its first item in the stream,
        for errors); it may run on another thread.
    infer : callable
        ``infer(tokens)``: the chunk's result; runs on the calling thread.
    ahead : bool
        Tokenize chunk k+1 on a second thread while chunk k runs (always finished before chunk k is yielded:
        nothing runs while the caller holds the stream). Otherwise one thread does both.

    Yields
    ------
    Any
        ``infer``'s result per chunk. A bad item raises from ``tokenize`` when its chunk is reached, and an error
        of ``source`` once the chunks read before it are out.
    """
    pool: Any = ThreadPoolExecutor(1, thread_name_prefix="embellama-tokenize") if ahead else _Inline()
    try:
        chunk = list(itertools.islice(source, chunk_size))
        pending = pool.submit(tokenize, chunk, 0) if chunk else None
        offset = 0
        while pending is not None:
            tokens = pending.result()  # a bad text raises here, once the chunks before it are out
            offset += len(tokens)
            source_error: BaseException | None = None
            try:
                chunk = list(itertools.islice(source, chunk_size))
            except Exception as exc:  # the caller's iterable failed: first hand out what is done
                source_error, chunk = exc, []
            pending = pool.submit(tokenize, chunk, offset) if chunk else None
            try:
                result = infer(tokens)
            finally:
                if pending is not None:
                    wait([pending])
            yield result
            if source_error is not None:
                raise source_error
    finally:
        pool.shutdown(wait=True)
