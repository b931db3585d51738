# SPDX-License-Identifier: Apache-2.0
"""Requests prepared for the workers: argument checks and one :class:`Call` that the sync, async and iterator forms run.

Each public request of :class:`EmbeddingEngine` checks its arguments and builds a :class:`Call`
here (the cache's answer, or the parts to send to a model's copies and how to finish their
results); ``Call.run`` and ``Call.arun`` are then the only difference between a method and
its coroutine form, and :func:`stream` runs a sequence of calls for ``embed_iter``.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import threading
from collections.abc import Callable, Hashable, Iterator, Sequence, Sized
from concurrent.futures import Future
from typing import Any

import numpy as np
import numpy.typing as npt

from embellama._compute import output as _output
from embellama._compute import packing as _batch
from embellama._compute.packing import ProgressCallback
from embellama._compute.pooling import NormalizeSpec
from embellama._config import EngineConfig
from embellama._engine.cache import Cache, Lookup, cache_key
from embellama._engine.replicas import Admission, Replicas, awaitable
from embellama._engine.worker import Job
from embellama._exceptions import ConfigurationError, InvalidInputError
from embellama._models import Classifier, EmbeddingModel, Reranker, check_activation, is_pair, rank_results
from embellama._models.multivector import MultiVectorEncoder
from embellama._models.sparse import SparseEncoder

SPLIT_MIN = 16
"""Fewest pairs a copy of a reranker gets when a request is split among the copies."""

Part = Callable[[Any], Any]
"""A piece of a request, called on a worker thread with that worker's model."""


class Call:
    """One request, checked and prepared: the ``parts`` to send to a model's copies, and ``finish`` of their results.

    ``finish(results)`` turns the parts' results, in their order, into the request's answer. A
    call with no parts was answered when it was prepared (the cache held every text): ``answer``.
    """

    def __init__(
        self, replicas: Replicas, parts: list[Part], finish: Callable[[list[Any]], Any], answer: Any = None
    ) -> None:
        self.replicas = replicas
        self.parts = parts
        self.finish = finish
        self.answer = answer

    def send(self, admission: Admission) -> Future[Any]:
        """Send the parts of an admitted call; a future of their results (of the one part's result, for one)."""
        if len(self.parts) == 1:  # the usual request: its part's own future, no second one to settle
            return admission.send(self.replicas, self.parts[0])
        return admission.send_parts(self.replicas, self.parts)

    def results(self, value: Any) -> list[Any]:
        """The parts' results, in order, from what :meth:`send`'s future resolved with."""
        return [value] if len(self.parts) == 1 else value

    def run(self, admission: Admission) -> Any:
        """The answer, computed on the workers while this thread waits (after waiting for room, as admission says)."""
        if not self.parts:
            return self.answer
        admission.acquire()
        return self.finish(self.results(self.send(admission).result()))

    async def arun(self, admission: Admission) -> Any:
        """:meth:`run` for coroutines: waits for room and for the workers on the event loop, never blocking it."""
        if not self.parts:
            return self.answer
        await admission.acquire_async()
        return self.finish(self.results(await awaitable(self.send(admission))))


# -- embeddings ----------------------------------------------------------------------------


def _embed(model: EmbeddingModel, texts: list[Any], progress: ProgressCallback | None, settings: dict[str, Any]) -> Any:
    return model.embed_batch(texts, progress=progress, **settings)


def _join_key(settings: dict[str, Any]) -> Hashable | None:
    """What requests must share to share a call: ``settings``, every argument of ``embed_batch`` but the texts and
    progress."""
    key = ("embed_batch", *sorted(settings.items()))  # keys differ: the values are never compared
    try:
        hash(key)
    except TypeError:  # an unhashable argument: the request runs alone
        return None
    return key


def _as_computed(rows: Any, exact: bool) -> Any:
    return rows


def _first_row(results: list[Any]) -> Any:
    return results[0][0]


def _rows(results: list[Any]) -> Any:
    return results[0]


def embed_call(
    replicas: Replicas,
    texts: Any,
    cache: Cache | None,
    config: EngineConfig,
    options: dict[str, Any],
    batch_size: int | None = None,
    normalize: NormalizeSpec | None = None,
    show_progress_bar: bool | None = None,
    progress: ProgressCallback | None = None,
    *,
    single: bool = False,
    join: bool = True,
) -> Call:
    """An embedding request of ``texts`` (``single``: one text, answered by its row).

    The cache answers the texts it holds (``EngineConfig.cache_batches`` for batches of
    several); the misses go to one worker as a :class:`Job`. Requests of the same settings
    (``options``: prompt, truncate_dim and precision included) may share a llama.cpp call
    (dynamic batching; see :class:`Worker`) unless ``join`` is false.
    """
    items: Any = list(texts) if not isinstance(texts, (str, bytes)) else texts  # a str: the worker refuses it
    # int8/uint8 are calibrated on the texts computed together: never assembled from cached pieces, never shared
    calibrated = (options.get("precision") or replicas.config.precision) in _output.CALIBRATED
    joined = {"batch_size": batch_size, "normalize": normalize, **options}  # what requests must share to join
    settings = {**joined, "show_progress_bar": show_progress_bar}
    compute = functools.partial(_embed, settings=settings)
    finish = _first_row if single else _rows
    join_key: Hashable | None = None
    # no cap per call and nothing to report: the request may share a call
    if join and not calibrated and isinstance(items, list) and items and progress is None and batch_size is None:
        join_key = _join_key(joined) if show_progress_bar is not True else None
    keys: list[Hashable | None] = []
    if cache is not None and isinstance(items, list) and (len(items) == 1 or config.cache_batches) and not calibrated:
        keys = [cache_key(replicas.generation, replicas.config, t, normalize, options) for t in items]
    if cache is None or not keys or None in keys:  # None: an invalid text; the worker raises for it
        return Call(replicas, [Job(items, compute, progress, _as_computed, None, join_key)], finish)
    lookup = Lookup(cache, keys, config.cache_batches)
    if lookup.complete:
        return Call(replicas, [], finish, answer=finish([lookup.answer(progress)]))
    job = Job(lookup.misses(items), compute, lookup.progress(progress), lookup.finish, lookup.places, join_key)
    return Call(replicas, [job], finish)


def check_stream(texts: Any, chunk_size: Any) -> None:
    """The checks of ``embed_iter``'s arguments, made before the stream is read."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ConfigurationError(f"chunk_size must be a positive int, got {chunk_size!r}")
    if isinstance(texts, (str, bytes)):
        raise InvalidInputError(f"embed_iter expects an iterable of str, got {type(texts).__name__}")


def check_calibration(replicas: Replicas, precision: str | None) -> None:
    """``embed_iter`` gives no int8/uint8: each chunk would be calibrated on its own ranges."""
    if (precision or replicas.config.precision) in _output.CALIBRATED:
        raise ConfigurationError(
            f"model {replicas.name!r}: embed_iter cannot give {precision or replicas.config.precision}: each "
            "chunk would be calibrated on its own ranges; embed float32, then quantize_embeddings(ranges=...)"
        )


def stream(
    admission: Admission,
    replicas: Replicas,
    source: Iterator[Any],
    chunk_size: int,
    tracker: _batch.Progress,
    prepare: Callable[[list[Any]], Call],
) -> Iterator[Any]:
    """Run ``prepare(chunk)``'s call for each chunk read from ``source``; yield their answers in order.

    While the caller handles one chunk, the next ones (one per copy of the model, plus one)
    are computed; a bad text's error names its index in the whole stream; stopping early
    cancels the chunks not yet begun.
    """
    depth = len(replicas.workers) + 1
    if admission.limit:
        depth = min(depth, admission.limit)
    in_flight: collections.deque[tuple[int, int, Call, Future[list[Any]] | None]] = collections.deque()
    read = 0

    def fill() -> None:  # keep the workers busy while the caller handles a chunk
        nonlocal read
        while len(in_flight) < depth:
            chunk = list(itertools.islice(source, chunk_size))
            if not chunk:
                return
            call = prepare(chunk)
            future = None
            if call.parts:
                admission.acquire()
                future = call.send(admission)
            in_flight.append((read, len(chunk), call, future))
            read += len(chunk)

    try:
        fill()
        while in_flight:
            start, size, call, future = in_flight.popleft()
            try:
                vectors = call.answer if future is None else call.finish(call.results(future.result()))
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
        for _, _, _, future in in_flight:
            if future is not None:
                future.cancel()


def stream_tracker(replicas: Replicas, texts: Any, show_progress_bar: bool | None, progress: Any) -> _batch.Progress:
    """The progress of a stream: its total when ``texts`` knows its length, else None until it ends."""
    total = len(texts) if isinstance(texts, Sized) else None
    return _batch.Progress(total, replicas.name, show_progress_bar, progress)


# -- reranking ------------------------------------------------------------------------------


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
    return model.score_pairs(pairs, offset=offset, batch_size=batch_size, activation=activation, progress=progress)


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


def concat(parts: list[npt.NDArray[np.float32]]) -> npt.NDArray[np.float32]:
    """The scores of a request's parts, in order, in one array."""
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _pair_parts(
    replicas: Replicas,
    items: list[Any],
    activation: str | None,
    batch_size: int | None,
    progress: ProgressCallback | None,
    rank: bool,
) -> list[Part]:
    """The worker parts that score ``items``.

    Valid pairs (2-tuples of non-empty str) are split among the model's copies, at least
    ``SPLIT_MIN`` a copy; with an invalid pair the request goes whole to one copy, which
    names the first bad pair as :meth:`Reranker.predict` does.
    """
    kind = check_activation(activation, f"model {replicas.name!r}")
    n = len(items)
    count = 1
    if len(replicas.workers) > 1 and all(is_pair(p) and p[0] and p[1] for p in items):
        count = max(1, min(len(replicas.workers), n // SPLIT_MIN))
    bounds = [n * i // count for i in range(count + 1)]
    tally = _Tally(n, progress, count) if progress is not None and count > 1 else None
    return [
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


def _one_score(results: list[Any]) -> Any:
    return concat(results)[0]


def predict_call(
    replicas: Replicas,
    pairs: Any,
    activation: str | None,
    batch_size: int | None,
    progress: ProgressCallback | None,
) -> Call:
    """A request for the scores of ``pairs``, or of one pair given alone (answered by its score)."""
    single = is_pair(pairs)
    batch = [pairs] if single else pairs
    if isinstance(batch, (str, bytes)) or not isinstance(batch, Sequence):
        raise InvalidInputError(
            f"predict expects a sequence of (query, document) pairs, got {type(pairs).__name__}", replicas.name
        )
    parts = _pair_parts(replicas, list(batch), activation, batch_size, progress, rank=False)
    return Call(replicas, parts, _one_score if single else concat)


def rerank_call(
    replicas: Replicas,
    query: str,
    documents: Any,
    top_k: int | None,
    return_documents: bool,
    activation: str | None,
    batch_size: int | None,
) -> Call:
    """A request for ``documents`` ranked by their score for ``query``."""
    if isinstance(documents, (str, bytes)) or not isinstance(documents, Sequence):
        raise InvalidInputError(
            f"rerank expects a sequence of documents, got {type(documents).__name__}", replicas.name
        )
    if not documents:
        raise InvalidInputError("rerank got no documents", replicas.name)
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ConfigurationError(f"model {replicas.name!r}: top_k must be a positive int, got {top_k!r}")
    docs = list(documents)
    parts = _pair_parts(replicas, [(query, d) for d in docs], activation, batch_size, None, rank=True)
    return Call(replicas, parts, lambda results: rank_results(concat(results), docs, top_k, return_documents))


# -- sparse, multi-vector and classifier outputs ----------------------------------------------------


def _encoder_tokens(model: Any, text: Any) -> int:
    """Tokens of ``text`` for a sparse or multi-vector encoder (its pooling-NONE EmbeddingModel's), raising if bad."""
    return len(model.model.tokenize(text))


def _classifier_tokens(model: Classifier, text: Any) -> int:
    """Tokens of ``text`` for a classifier (the text with its special tokens), raising if bad."""
    if not isinstance(text, str) or not text:
        raise InvalidInputError("each text must be a non-empty str", model.name)
    return len(model.model.tokenize(text, add_special=True, parse_special=model.config.parse_special))


def _sparse(model: SparseEncoder, texts: list[Any], progress: Any, settings: dict[str, Any]) -> Any:
    method = model.encode_query if settings["is_query"] else model.encode
    options = {k: v for k, v in settings.items() if k != "is_query"}
    words = model.vocabulary  # read here, on the worker's thread (once per model): to_dict() works on any thread
    encoded: list[Any] = method(texts, **options)  # type: ignore[assignment]
    return [dataclasses.replace(e, vocabulary=words) for e in encoded]


def _multi(model: MultiVectorEncoder, texts: list[Any], progress: Any, settings: dict[str, Any]) -> Any:
    method = model.encode_query if settings["is_query"] else model.encode_document
    options = {k: v for k, v in settings.items() if k != "is_query"}
    return method(texts, **options)


def _classify(model: Classifier, texts: list[Any], progress: Any, settings: dict[str, Any]) -> Any:
    return model.predict(texts, **settings)


_OUTPUTS: dict[str, tuple[Callable[..., Any], Callable[[Any, Any], int]]] = {
    "embed_sparse": (_sparse, _encoder_tokens),
    "embed_multi": (_multi, _encoder_tokens),
    "classify": (_classify, _classifier_tokens),
}
"""Each output's worker function and its token count for dynamic batching, by the call's name (the join key's
first item, so that no joined call mixes outputs)."""


def _texts_of(replicas: Replicas, texts: Any, verb: str) -> tuple[list[Any], bool]:
    """A request's texts as a list, and whether one str was given alone."""
    if isinstance(texts, str):
        return [texts], True
    if isinstance(texts, bytes) or not isinstance(texts, Sequence):
        raise InvalidInputError(f"{verb} expects a str or a sequence of str, got {type(texts).__name__}", replicas.name)
    items = list(texts)
    if not items:
        raise InvalidInputError(f"{verb} got no texts", replicas.name)
    return items, False


def output_call(replicas: Replicas, output: str, texts: Any, settings: dict[str, Any], *, join: bool = True) -> Call:
    """A request for ``texts``' sparse vectors, token vectors or label scores (``output``: "embed_sparse",
    "embed_multi" or "classify"), answered for one str by its own result.

    Requests of the same output and ``settings`` waiting for one copy may share a llama.cpp call (dynamic batching,
    as for embeddings); the join key starts with ``output``, so a joined call never mixes outputs.
    """
    items, single = _texts_of(replicas, texts, output)
    compute, count = _OUTPUTS[output]
    key: Hashable | None = (output, tuple(sorted(settings.items())))
    try:
        hash(key)
    except TypeError:  # an unhashable argument: the request runs alone
        key = None
    job = Job(items, functools.partial(compute, settings=settings), None, _as_computed, None, key if join else None,
              count)  # fmt: skip
    return Call(replicas, [job], _first_row if single else _rows)
