# SPDX-License-Identifier: Apache-2.0
"""The batch pipeline behind ``EmbeddingModel.embed_batch`` and ``embed_iter``.

1. **Validate and tokenize** every text before any inference (a bad text raises
   :class:`InvalidInputError` with its index; nothing is half-returned). While a GPU
   computes, large inputs are tokenized by a few threads at once: ``llama_tokenize`` runs
   without the GIL and only reads the vocabulary; every thread is joined before the call
   returns or raises. (On the CPU, inference keeps every core busy and tokenization is
   0.3 % of the time: threads bring nothing there.)
2. **Pack:** on the CPU, by the attention kernel's tiles (:func:`pack_tiles`: no text crosses
   a 64-token block, short texts in calls of 256 tokens); elsewhere by length
   (:func:`pack_by_length`: sorted longest first and cut into calls of at most ``budget``
   tokens and ``max_seqs`` texts).
3. **Infer** each call into the one reused :class:`~embellama.llama.Batch`, and copy each
   pooled vector straight from llama.cpp's buffer into its row of the result: one copy,
   no scatter pass. Pooling llama.cpp does not have (MAX, MEAN_SQRT) is a numpy reduction.
4. **Normalize** the result in place.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from embellama._compute.pooling import Normalization, PoolingStrategy, pool_tokens
from embellama._compute.pooling import normalize as _normalize
from embellama.llama import Batch, Context

__all__ = [
    "Progress",
    "ProgressCallback",
    "TileLayout",
    "pack_by_length",
    "pack_tiles",
    "plan_calls",
    "run_batch",
    "tokenize_all",
]

logger = logging.getLogger("embellama")

ProgressCallback = Callable[[int, "int | None"], None]
"""``progress(done, total)``: texts embedded so far and the total (None while a stream's length is unknown)."""


PARALLEL_TOKENIZE_MIN = 256
"""Inputs shorter than this are tokenized on the calling thread: a pool would cost more than it saves."""


def tokenize_all(
    texts: Sequence[Any], tokenize: Callable[[Any, int], npt.NDArray[np.int32]], threads: int
) -> list[npt.NDArray[np.int32]]:
    """``[tokenize(text, index) ...]`` in input order, split over up to ``threads`` threads.

    The calling thread takes the first slice itself. Every slice finishes before this
    returns or raises (nothing may use the vocabulary after the caller moves on), and the
    error raised is the one of the lowest index, as in a serial loop.
    """
    n = len(texts)
    threads = max(1, min(threads, n // (PARALLEL_TOKENIZE_MIN // 2)))
    if threads == 1 or n < PARALLEL_TOKENIZE_MIN:
        return [tokenize(text, i) for i, text in enumerate(texts)]
    bounds = np.linspace(0, n, threads + 1).astype(int).tolist()

    def part(k: int) -> list[npt.NDArray[np.int32]]:
        return [tokenize(texts[i], i) for i in range(bounds[k], bounds[k + 1])]

    with ThreadPoolExecutor(threads - 1, thread_name_prefix="embellama-tokenize") as pool:
        futures = [pool.submit(part, k) for k in range(1, threads)]
        try:
            out = part(0)
        finally:
            wait(futures)
        for future in futures:
            out += future.result()  # raises the first failing slice's error, in index order
    return out


def pack_by_length(lengths: npt.NDArray[np.int64], budget: int, max_seqs: int) -> list[npt.NDArray[np.intp]]:
    """Indices of the texts, longest first, cut into calls of at most ``budget`` tokens and ``max_seqs`` texts.

    Every length must be at most ``budget``. The loop runs once per text, never per token.
    """
    order = np.argsort(-lengths, kind="stable")
    sorted_lengths = lengths[order].tolist()
    groups: list[npt.NDArray[np.intp]] = []
    start = used = 0
    for i, n in enumerate(sorted_lengths):
        if i > start and (used + n > budget or i - start >= max_seqs):
            groups.append(order[start:i])
            start, used = i, 0
        used += n
    if start < len(sorted_lengths):
        groups.append(order[start:])
    return groups


@dataclass(frozen=True)
class TileLayout:
    """How calls of short texts are laid out for the loaded libllama's attention kernel.

    ggml's CPU flash attention works in ``tile`` x ``tile`` blocks of (query, key) tokens and
    skips a block only when the mask hides all of it. A packed call whose sequences never cross
    a ``tile``-token boundary computes just the blocks on the diagonal; one whose sequences
    straddle the boundaries computes the neighbours too, and every call scans all
    ``(tokens / tile)^2`` blocks of its mask for each head and layer, so short texts go in calls
    of ``call_tokens`` (a multiple of ``tile``), and a longer text in a call of its own (see
    :func:`pack_tiles`).
    """

    tile: int
    call_tokens: int

    def __post_init__(self) -> None:
        if self.tile < 1 or self.call_tokens < self.tile or self.call_tokens % self.tile:
            raise ValueError(f"call_tokens ({self.call_tokens}) must be a positive multiple of tile ({self.tile})")


def pack_tiles(
    lengths: npt.NDArray[np.int64], layout: TileLayout, max_seqs: int, budget: int | None = None
) -> list[npt.NDArray[np.intp]]:
    """Each llama.cpp call's slots in token order: a text's index (``>= 0``) or ``-p`` for ``p`` pad tokens.

    Texts are packed into ``tile``-token bins by best-fit decreasing: a text of up to ``tile``
    tokens goes into the fullest bin it fits, a longer one opens ``ceil(len / tile)`` tiles whose
    last one's free room takes short texts too. These units then go into calls, largest first,
    each into the fullest call it fits: a call of short texts holds at most ``call_tokens``
    tokens; one that starts with a text over half of that may grow to ``budget`` (default
    ``call_tokens``), so long texts share a call where two fit. A call holds at most
    ``max_seqs`` sequences, pads included: a unit that is not the last of its call is padded to
    the tile boundary with a sequence of its own, so no text crosses a boundary. A text over
    ``budget`` goes alone. The loops run per text, unit and call, never per token.
    """
    tile = layout.tile
    call_tiles = layout.call_tokens // tile
    long_tiles = max(call_tiles, (budget or layout.call_tokens) // tile)
    calls: list[npt.NDArray[np.intp]] = []
    order = np.argsort(-lengths, kind="stable")
    members: list[list[int]] = []  # the texts of each unit (a bin, or a multi-tile text with its tail)
    tiles: list[int] = []
    free: list[int] = []
    by_free: list[list[int]] = [[] for _ in range(tile + 1)]  # units by the room left in their last tile
    for index, n in zip(order.tolist(), lengths[order].tolist(), strict=True):
        if n > long_tiles * tile:
            calls.append(np.array([index], dtype=np.intp))
            continue
        if n > tile:
            unit, room = len(members), -(-n // tile) * tile - n
            members.append([index])
            tiles.append(-(-n // tile))
            free.append(room)
        else:
            room = next((f for f in range(n, tile + 1) if by_free[f]), 0)
            if room:
                unit = by_free[room].pop()
                members[unit].append(index)
                room -= n
                free[unit] = room
            else:
                unit, room = len(members), tile - n
                members.append([index])
                tiles.append(1)
                free.append(room)
        if room and len(members[unit]) < max_seqs:  # a bin never holds more texts than a call may
            by_free[room].append(unit)
    # Units into calls: largest first, each into the open call with the least room that takes it.
    call_units: list[list[int]] = []
    call_seqs: list[int] = []
    open_by_room: list[list[int]] = [[] for _ in range(long_tiles + 1)]
    for unit in sorted(range(len(members)), key=lambda u: -tiles[u]):
        k, seqs = tiles[unit], len(members[unit])
        chosen = -1
        for room in range(k, long_tiles + 1):
            bucket = open_by_room[room]
            while bucket:
                c = bucket[-1]
                if call_seqs[c] + seqs + (1 if free[call_units[c][-1]] else 0) <= max_seqs:
                    chosen = c
                    break
                bucket.pop()  # no room for this unit's sequences: the call takes nothing more of this size
            if chosen >= 0:
                open_by_room[room].pop()
                break
        if chosen < 0:
            chosen = len(call_units)
            call_units.append([])
            call_seqs.append(0)
            room = long_tiles if k > call_tiles // 2 else call_tiles
        call_seqs[chosen] += seqs + (1 if call_units[chosen] and free[call_units[chosen][-1]] else 0)
        call_units[chosen].append(unit)
        if room - k > 0 and call_seqs[chosen] < max_seqs:
            open_by_room[room - k].append(chosen)
    for units in call_units:
        slots: list[int] = []
        for position, unit in enumerate(units):
            slots.extend(members[unit])
            if position < len(units) - 1 and free[unit]:
                slots.append(-free[unit])
        calls.append(np.array(slots, dtype=np.intp))
    return calls


def plan_calls(
    lengths: npt.NDArray[np.int64], budget: int, max_seqs: int, layout: TileLayout | None
) -> list[npt.NDArray[np.intp]]:
    """The llama.cpp calls of one batch, each as its slots (see :func:`pack_tiles`; length packing has no pads).

    By tiles where there is a layout, a text longer than a call of short texts in a call of its own (pairing two
    measured 0.91-0.97x on 220-353-token passages, benchmarks/bench_packing.py); else by length into calls of
    ``budget`` tokens.
    """
    if layout is None or layout.call_tokens > budget:
        return pack_by_length(lengths, budget, max_seqs)
    return pack_tiles(lengths, layout, max_seqs)


def run_batch(
    tokens: Sequence[npt.NDArray[np.int32]],
    *,
    context: Context,
    batch: Batch,
    pooling: PoolingStrategy,
    norm: Normalization | float,
    budget: int,
    max_seqs: int,
    progress: Progress,
    layout: TileLayout | None = None,
    started: Callable[[], None] | None = None,
) -> Any:
    """Embed already tokenized texts: ``(n, dim)`` float32, or a list of token matrices for pooling NONE.

    With a :class:`TileLayout`, calls are laid out by :func:`pack_tiles`; without one, by
    :func:`pack_by_length`. ``started()`` is called once, just before the first llama.cpp call.
    """
    dim = context.n_embd
    n = len(tokens)
    lengths = np.fromiter((len(t) for t in tokens), dtype=np.int64, count=n)
    native = pooling.native != "none"
    per_token: list[npt.NDArray[np.float32]] = []
    if pooling is PoolingStrategy.NONE:
        per_token = [np.empty((0, dim), np.float32)] * n
    out = np.empty((n, dim), dtype=np.float32)
    for slots in plan_calls(lengths, budget, max_seqs, layout):
        real = slots >= 0
        group = slots[real]
        if real.all():
            batch.fill([tokens[i] for i in group])
            slot_lengths = lengths[group]
        else:
            # Pads get the seq_ids after the texts', so sequence k is still the group's k-th text.
            pad = tokens[int(group[0])][:1]
            batch.fill(
                [tokens[i] if i >= 0 else np.repeat(pad, -i) for i in slots.tolist()],
                np.argsort(np.argsort(~real, kind="stable")),
            )
            slot_lengths = np.where(real, lengths[np.maximum(slots, 0)], -slots)
        if started is not None:
            before: Callable[[], None] = started
            started = None
            before()
        context.process(batch)
        if native:
            context.copy_sequence_embeddings(out, group)
        else:
            flat = context.token_embeddings(batch.n_tokens)
            if not real.all():
                flat = flat[np.repeat(real, slot_lengths)]
            group_lengths = lengths[group]
            if pooling is PoolingStrategy.NONE:
                for i, piece in zip(group, np.split(flat, np.cumsum(group_lengths)[:-1]), strict=True):
                    per_token[i] = _normalize(piece, norm)
            else:
                out[group] = pool_tokens(flat, group_lengths, pooling)
        progress.advance(len(group))
    if pooling is PoolingStrategy.NONE:
        return per_token
    return _normalize(out, norm)


class Progress:
    """Reports ``(done, total)`` to a callback and, when asked, draws a progress bar.

    The bar is tqdm's when tqdm is installed, else one line on stderr. ``enabled=None``
    shows it when the ``embellama`` logger's level is INFO or lower (as sentence-transformers
    does) and there is more than one text.
    """

    def __init__(
        self, total: int | None, name: str, enabled: bool | None, callback: ProgressCallback | None = None
    ) -> None:
        if enabled is None:
            enabled = logger.getEffectiveLevel() <= logging.INFO and (total is None or total > 1)
        self.total = total
        self.done = 0
        self.name = name
        self.callback = callback
        self.started = time.perf_counter()
        self._last = 0.0
        self._bar: Any = None
        self._line = False
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                self._line = True
            else:
                self._bar = tqdm(total=total, desc=f"embedding with {name}", unit="text")

    def advance(self, n: int) -> None:
        self.done += n
        if self.callback is not None:
            self.callback(self.done, self.total)
        if self._bar is not None:
            self._bar.update(n)
        elif self._line:
            now = time.perf_counter()
            if now - self._last >= 0.2 or self.done == self.total:
                self._last = now
                rate = self.done / max(now - self.started, 1e-9)
                of = f"/{self.total}" if self.total is not None else ""
                sys.stderr.write(f"\rembedding with {self.name}: {self.done}{of} texts ({rate:.0f}/s)")
                sys.stderr.flush()

    def close(self, *, report: bool = True) -> None:
        """Finish; the callback's last call is ``(total, total)`` (also for no texts, or a stream)."""
        if report and self.callback is not None and (self.done == 0 or self.total is None):
            self.callback(self.done, self.done)
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._line:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self._line = False
