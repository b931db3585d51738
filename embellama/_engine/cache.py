# SPDX-License-Identifier: Apache-2.0
"""The engine's embedding cache: an LRU of one text's vector per (model load, text, settings), and its lookups."""

from __future__ import annotations

import collections
import threading
from collections.abc import Hashable
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from embellama._compute.packing import ProgressCallback
from embellama._compute.pooling import NormalizeSpec, parse_normalization
from embellama._config import ModelConfig
from embellama._exceptions import ConfigurationError


class CacheInfo(NamedTuple):
    """Statistics of the engine's embedding cache, as ``functools.lru_cache`` reports them."""

    hits: int
    misses: int
    maxsize: int
    currsize: int


class Cache:
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


def cache_key(
    generation: int, config: ModelConfig, text: Any, normalize: NormalizeSpec | None, options: dict[str, Any]
) -> Hashable | None:
    """The cache key of one text for a model load, or None when the text cannot be cached (the worker says why)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        norm = parse_normalization(config.normalize if normalize is None else normalize)
    except ConfigurationError:
        return None
    extra = tuple(sorted(options.items()))  # prompt, truncate_dim, precision as the call gave them
    return (generation, text, config.pooling, norm, *extra)


def assemble(parts: list[npt.NDArray[np.float32]]) -> Any:
    """The rows of a batch answer in one array; a list of per-token arrays with pooling NONE."""
    return parts if parts[0].ndim != 1 else np.stack(parts)


class Lookup:
    """A batch request's texts looked up in the cache: the hits, and the misses a worker must compute.

    ``answer`` is the whole answer when the cache held everything (``complete``). Otherwise
    ``misses(texts)`` are the texts to compute, each once, at the caller's places ``places``;
    ``finish(rows, exact)`` stores their rows and returns the whole answer in input order.
    Rows computed in a call shared with other requests (``exact`` false) are stored only with
    ``keep_shared`` (``EngineConfig.cache_batches``): the cache otherwise keeps only vectors
    computed alone, bit-identical to an uncached ``embed``.
    """

    def __init__(self, cache: Cache, keys: list[Hashable], keep_shared: bool) -> None:
        self._cache = cache
        self._keep_shared = keep_shared
        self._n = len(keys)
        self._found: dict[int, npt.NDArray[np.float32]] = {}
        for i, key in enumerate(keys):
            hit = cache.get(key)
            if hit is not None:
                self._found[i] = hit
        self._wanted: dict[Hashable, list[int]] = {}  # each missing text once, in order
        for i, key in enumerate(keys):
            if i not in self._found:
                self._wanted.setdefault(key, []).append(i)
        self.places = [places[0] for places in self._wanted.values()]

    @property
    def complete(self) -> bool:
        return len(self._found) == self._n

    def answer(self, progress: ProgressCallback | None) -> Any:
        """The whole answer from the cache (when ``complete``); ``progress`` hears that every text is done."""
        if progress is not None:
            progress(self._n, self._n)
        return assemble([self._found[i] for i in range(self._n)])

    def misses(self, texts: list[Any]) -> list[Any]:
        return [texts[i] for i in self.places]

    def progress(self, progress: ProgressCallback | None) -> ProgressCallback | None:
        """``progress`` of the whole request, fed by the progress of computing the misses."""
        if progress is None:
            return None
        n, base = self._n, len(self._found)

        def report(done: int, total: int | None) -> None:
            progress(n if total is not None and done >= total else base + done, n)

        return report

    def finish(self, computed: Any, exact: bool) -> Any:
        parts = dict(self._found)
        for places, key, vector in zip(self._wanted.values(), self._wanted, computed, strict=True):
            if exact or self._keep_shared:
                self._cache.put(key, vector)
            for i in places:
                parts[i] = vector
        return assemble([parts[i] for i in range(self._n)])
