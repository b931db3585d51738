# SPDX-License-Identifier: Apache-2.0
"""Texts longer than an EmbeddingModel's token limit, never cut silently: the truncation counts and warning,
``overflow="chunk"`` (windows with a stride, pooled), and late chunking (one pass, pooled over spans)."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from embellama._compute import packing as _batch
from embellama._compute import spans as _spans
from embellama._compute.pooling import Normalization, NormalizeSpec, PoolingStrategy, parse_normalization
from embellama._compute.pooling import normalize as _normalize
from embellama._exceptions import ConfigurationError, InvalidInputError, TruncationWarning
from embellama._models.options import PLAIN, text_preview
from embellama.llama import Batch, Context, Model

__all__ = [
    "CHUNK_POOLINGS",
    "OVERFLOWS",
    "ChunkedEmbeddings",
    "Chunks",
    "EmbeddingsWithTruncation",
    "SpanEmbeddings",
    "TokenContext",
    "check_overflow",
    "embed_chunked",
    "embed_spans",
    "is_chunk_option",
    "report_cuts",
]

OVERFLOWS = ("truncate", "error", "chunk")
"""What ``embed_batch(overflow=...)`` does with a text over the token limit."""

CHUNK_POOLINGS = ("mean", "weighted")
"""How a chunked text's window vectors become its vector: their mean, or weighted by their token counts."""


class EmbeddingsWithTruncation(NamedTuple):
    """``embed_batch(..., return_truncation=True)``: the embeddings and the tokens cut from each text."""

    embeddings: Any
    """What ``embed_batch`` returns without ``return_truncation``."""
    truncated_tokens: npt.NDArray[np.int64]
    """Tokens cut from each text (0 for a text that fit), in input order."""


class Chunks(NamedTuple):
    """One text's windows under ``overflow="chunk"``: their vectors and character spans."""

    embeddings: npt.NDArray[Any]
    """``(n_windows, dim)``: each window's vector, normalized as the model's output."""
    spans: npt.NDArray[np.int64]
    """``(n_windows, 2)``: each window's start and end character in the text (to whole words)."""
    tokens: npt.NDArray[np.int64]
    """``(n_windows,)``: each window's tokens of the text (special tokens and prompt not counted)."""


class ChunkedEmbeddings(NamedTuple):
    """``embed_chunked(..., return_chunks=True)``: one vector per text, and each text's windows."""

    embeddings: npt.NDArray[Any]
    chunks: list[Chunks]


class SpanEmbeddings(NamedTuple):
    """``embed_spans``: one vector per span, and the spans (start and end character)."""

    embeddings: npt.NDArray[np.float32]
    spans: npt.NDArray[np.int64]


def report_cuts(
    name: str, limit: int, cuts: dict[int, int], total: int, stacklevel: int = 3, offset: int = 0
) -> npt.NDArray[np.int64]:
    """The tokens cut per text (``cuts``: text index to tokens lost) as an array; a :class:`TruncationWarning`
    when any text was cut (the message counts a text's index from ``offset``: a stream's chunk)."""
    dropped = np.zeros(total, dtype=np.int64)
    if cuts:
        dropped[list(cuts)] = list(cuts.values())
        first = min(cuts)
        message = (
            f"model {name!r}: {len(cuts)} of {total} text(s) exceeded max_tokens ({limit}) and were cut, losing "
            f"{int(dropped.sum())} token(s) (text #{first + offset} lost {cuts[first]}); pass return_truncation=True "
            "for the counts, overflow='chunk' to embed every token, or truncate=False to refuse them"
        )
        warnings.warn(TruncationWarning(message, name, len(cuts), int(dropped.sum())), stacklevel=stacklevel)
    return dropped


def _check_text(text: Any, name: str, index: int) -> str:
    if not isinstance(text, str):
        raise InvalidInputError(f"expected str, got {type(text).__name__}", name, index)
    if not text:
        raise InvalidInputError("text is empty", name, index)
    return text


def _body(model: Model, text: str, parse_special: bool, name: str, index: int) -> npt.NDArray[np.int32]:
    """The text's tokens without the special tokens."""
    try:
        return model.tokenize(text, add_special=False, parse_special=parse_special)
    except InvalidInputError as exc:
        raise InvalidInputError(exc.reason, name, index) from None


def token_char_spans(
    model: Model, text: str, n_tokens: int, parse_special: bool
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Start and end character of each of the text's ``n_tokens`` tokens, to whole words.

    Each run of non-space characters is tokenized alone (one call per word, not per token); where the words'
    tokens add up to the text's, each token gets its word's span. Elsewhere (a vocabulary whose tokens cross
    words) the tokens are spread evenly over the text's characters.
    """
    starts, ends = _spans.word_spans(text)
    counts = np.fromiter(
        (
            len(model.tokenize(text[s:e], add_special=False, parse_special=parse_special))
            for s, e in zip(starts.tolist(), ends.tolist(), strict=True)
        ),
        dtype=np.int64,
        count=len(starts),
    )
    if int(counts.sum()) == n_tokens:
        return np.repeat(starts, counts), np.repeat(ends, counts)
    edges = np.linspace(0, len(text), n_tokens + 1).round().astype(np.int64)
    return edges[:-1], edges[1:]


def _check_int(value: Any, name: str, what: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigurationError(f"model {name!r}: {what} must be an int >= {low}, got {value!r}")
    return value


def embed_chunked(
    self: Any,
    texts: Sequence[str],
    *,
    chunk_tokens: int | None = None,
    chunk_overlap: int = 0,
    chunk_pooling: str = "mean",
    return_chunks: bool = False,
    batch_size: int | None = None,
    normalize: NormalizeSpec | None = None,
    prompt_name: str | None = None,
    prompt: str | None = None,
    truncate_dim: int | None = None,
    precision: str | None = None,
    task: str | None = None,
) -> Any:
    """:meth:`EmbeddingModel.embed_chunked` (see there)."""
    name = self.name
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
        raise InvalidInputError(f"embed_chunked expects a sequence of str, got {type(texts).__name__}", name)
    model, _, _ = self._require()
    if self.pooling is PoolingStrategy.NONE:
        raise ConfigurationError(f"model {name!r}: chunking pools the windows' vectors; pooling NONE has none")
    if chunk_pooling not in CHUNK_POOLINGS:
        raise ConfigurationError(
            f"model {name!r}: unknown chunk_pooling {chunk_pooling!r}; expected one of: {', '.join(CHUNK_POOLINGS)}"
        )
    self._check_batch_size(batch_size)
    norm = self._norm if normalize is None else parse_normalization(normalize)
    options = self._options(prompt_name, prompt, truncate_dim, precision, task)
    special = model.special_tokens
    prefix = np.asarray(special.prefix, dtype=np.int32)
    suffix = np.asarray(special.suffix, dtype=np.int32)
    parse = self.config.parse_special
    lead = prefix
    if options.prompt:
        lead = np.concatenate([prefix, model.tokenize(options.prompt, add_special=False, parse_special=parse)])
    room = self.max_sequence_length - len(lead) - len(suffix)
    width = room if chunk_tokens is None else _check_int(chunk_tokens, name, "chunk_tokens", 1)
    if width > room:
        raise ConfigurationError(
            f"model {name!r}: chunk_tokens ({width}) is more than the {room} tokens a text may have here "
            f"(max_tokens {self.max_sequence_length} less the special tokens and prompt)"
        )
    overlap = _check_int(chunk_overlap, name, "chunk_overlap", 0)
    if overlap >= width:
        raise ConfigurationError(f"model {name!r}: chunk_overlap ({overlap}) must be less than chunk_tokens ({width})")
    bodies = [_body(model, _check_text(t, name, i), parse, name, i) for i, t in enumerate(texts)]
    pieces: list[npt.NDArray[np.int32]] = []
    bounds: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]] = []
    for body in bodies:
        starts, ends = _spans.windows(len(body), width, width - overlap)
        bounds.append((starts, ends))
        pieces.extend(
            np.concatenate([lead, body[s:e], suffix]) for s, e in zip(starts.tolist(), ends.tolist(), strict=True)
        )
    counts = np.array([len(s) for s, _ in bounds], dtype=np.int64)
    lengths = np.concatenate([e - s for s, e in bounds]) if bounds else np.zeros(0, dtype=np.int64)
    progress = _batch.Progress(len(pieces), name, False)
    vectors = self._infer(pieces, batch_size, Normalization.NONE, progress, PLAIN._replace(task=options.task))
    if not len(texts):
        pooled = np.zeros((0, vectors.shape[1] if vectors.ndim == 2 else self.embedding_dimensions), np.float32)
    else:
        weights = np.maximum(lengths, 1).astype(np.float64) if chunk_pooling == "weighted" else np.ones(len(lengths))
        pooled = _spans.pool_windows(vectors, counts, weights)
    out = _normalize(pooled, norm) if options.plain else self._finish(pooled, options, norm)
    if not return_chunks:
        return out
    chunks = []
    at = 0
    normalized = _normalize(vectors, norm)
    for text, body, (starts, ends) in zip(texts, bodies, bounds, strict=True):
        char_starts, char_ends = token_char_spans(model, text, len(body), parse)
        if len(body):
            spans = np.stack([char_starts[starts], char_ends[np.maximum(ends - 1, starts)]], axis=1)
        else:
            spans = np.array([[0, len(text)]], dtype=np.int64)
        chunks.append(Chunks(normalized[at : at + len(starts)], spans, ends - starts))
        at += len(starts)
    return ChunkedEmbeddings(out, chunks)


@dataclasses.dataclass
class TokenContext:
    """A second context of the same model with pooling NONE: late chunking's token vectors. Made on first use."""

    context: Context
    batch: Batch

    def close(self) -> None:
        self.context.close()


def _token_vectors(self: Any, ids: npt.NDArray[np.int32]) -> npt.NDArray[np.float32]:
    """The last hidden state of every token of one sequence (one llama.cpp pass)."""
    self._fit(len(ids))
    model, context, batch = self._require()
    if self.pooling is PoolingStrategy.NONE:
        ctx, tok_batch = context, batch
    else:
        if self._token_context is None:
            params = dataclasses.replace(context.params, pooling="none")
            new = Context(model, params)
            self._tasks.activate(new, None)  # the adapters every call has
            self._token_context = TokenContext(new, Batch(self.token_budget, 1))
        ctx, tok_batch = self._token_context.context, self._token_context.batch
    result = _batch.run_batch(
        [ids],
        context=ctx,
        batch=tok_batch,
        pooling=PoolingStrategy.NONE,
        norm=Normalization.NONE,
        budget=self.token_budget,
        max_seqs=1,
        progress=_batch.Progress(1, self.name, False),
        started=self._before_call,
    )
    return result[0]  # type: ignore[no-any-return]


def _given_spans(spans: Any, length: int, name: str) -> npt.NDArray[np.int64]:
    try:
        array = np.asarray(spans)
    except (TypeError, ValueError):
        array = np.zeros((0, 0))
    ok = array.ndim == 2 and array.shape[1] == 2 and array.shape[0] > 0 and np.issubdtype(array.dtype, np.integer)
    if not ok:
        raise InvalidInputError("spans must be a non-empty sequence of (start, end) character offsets (ints)", name)
    array = array.astype(np.int64)
    bad = np.flatnonzero((array[:, 0] < 0) | (array[:, 1] > length) | (array[:, 0] >= array[:, 1]))
    if bad.size:
        s, e = array[bad[0]].tolist()
        raise InvalidInputError(f"span {bad[0]} ({s}, {e}) is not within the text's {length} characters", name)
    return array


def embed_spans(
    self: Any,
    text: str,
    spans: Any = None,
    *,
    by: str = "sentence",
    span_tokens: int = 64,
    normalize: NormalizeSpec | None = None,
) -> SpanEmbeddings:
    """:meth:`EmbeddingModel.embed_spans` (see there)."""
    name = self.name
    model, _, _ = self._require()
    text = _check_text(text, name, 0)
    if by not in ("sentence", "tokens"):
        raise ConfigurationError(f"model {name!r}: by must be 'sentence' or 'tokens', got {by!r}")
    norm = self._norm if normalize is None else parse_normalization(normalize)
    parse = self.config.parse_special
    special = model.special_tokens
    prefix = np.asarray(special.prefix, dtype=np.int32)
    suffix = np.asarray(special.suffix, dtype=np.int32)
    body = _body(model, text, parse, name, 0)
    room = self.max_sequence_length - len(prefix) - len(suffix)
    if len(body) > room:
        report_cuts(name, self.max_sequence_length, {0: len(body) - room}, 1, stacklevel=4)
    covered = body[:room]
    char_starts, char_ends = token_char_spans(model, text, len(body), parse)
    char_starts, char_ends = char_starts[: len(covered)], char_ends[: len(covered)]
    if spans is not None:
        chosen = _given_spans(spans, len(text), name)
        first, last = _spans.char_to_token_spans(char_starts, char_ends, chosen[:, 0], chosen[:, 1])
    elif by == "sentence":
        chosen = _spans.sentence_spans(text)
        first, last = _spans.char_to_token_spans(char_starts, char_ends, chosen[:, 0], chosen[:, 1])
        keep = first < last  # sentences past the model's limit, or of no tokens, are left out
        chosen, first, last = chosen[keep], first[keep], last[keep]
    else:
        width = _check_int(span_tokens, name, "span_tokens", 1)
        first, last = _spans.windows(len(covered), width, width)
        keep = first < last
        first, last = first[keep], last[keep]
        chosen = (
            np.stack([char_starts[first], char_ends[last - 1]], axis=1) if len(first) else np.zeros((0, 2), np.int64)
        )
    empty = np.flatnonzero(first >= last)
    if empty.size:
        k = int(empty[0])
        s, e = chosen[k].tolist()
        where = "past the model's limit" if s >= (char_ends[-1] if len(char_ends) else 0) else "between tokens"
        raise InvalidInputError(
            f"span {k} ({s}, {e}) {text_preview(text[s:e])} covers no token ({where}: the model reads the first "
            f"{len(covered)} tokens of {len(body)})",
            name,
        )
    if not len(first):
        return SpanEmbeddings(np.zeros((0, self.embedding_dimensions), np.float32), np.zeros((0, 2), np.int64))
    tokens = _token_vectors(self, np.concatenate([prefix, covered, suffix]).astype(np.int32))
    body_vectors = tokens[len(prefix) : len(prefix) + len(covered)]
    vectors = _normalize(_spans.span_means(body_vectors, first, last), norm)
    return SpanEmbeddings(vectors, chosen)


def check_overflow(value: Any, truncate: bool, name: str) -> str:
    """The overflow mode of a call: ``value``, else the config's (``truncate`` or ``error``)."""
    if value is None:
        return "truncate" if truncate else "error"
    if value not in OVERFLOWS:
        raise ConfigurationError(f"model {name!r}: unknown overflow {value!r}; expected one of: {', '.join(OVERFLOWS)}")
    return str(value)


def is_chunk_option(chunk_tokens: Any, chunk_overlap: Any) -> bool:
    """Whether a call set a chunk option (they need ``overflow="chunk"``)."""
    return chunk_tokens is not None or (chunk_overlap not in (0, None))
