# SPDX-License-Identifier: Apache-2.0
"""Reranker: a cross-encoder's scores for (query, document) pairs, in sentence-transformers' CrossEncoder style.

llama.cpp computes the score with its rank pooling: the classification head on the pair's first token
(``LLAMA_POOLING_TYPE_RANK``), ``n_cls_out`` numbers per pair. This module joins each pair by the
vocabulary's rules, cuts the document first when a pair is too long, packs pairs by length into llama.cpp
calls like ``embed_batch`` packs texts, and applies the activation.

Two things the stock conversion of a BERT cross-encoder loses, ``embellama convert`` writes back (see
:func:`embellama._gguf.convert.converter_fixes`): the pooler (dense + tanh) before the classifier, and token
type 1 of the second segment, as a second block of token rows (``embellama.token_type_offset``) into which
this module shifts the document's tokens. A file without them is scored as llama.cpp would, with a warning.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from embellama._compute import packing as _batch
from embellama._compute.packing import ProgressCallback
from embellama._config import ModelConfig, Normalization, PoolingStrategy
from embellama._exceptions import ConfigurationError, InvalidInputError, ResourceClosedError
from embellama._gguf import convert as _convert
from embellama._gguf import reader as _gguf
from embellama._gguf.reader import ACTIVATION_KEY, TOKEN_TYPE_OFFSET_KEY
from embellama._models.base import LlamaModel, is_positive_int
from embellama._models.kinds import check_scoring_config
from embellama.llama import Context, Model

__all__ = ["ACTIVATIONS", "Reranker", "check_activation", "is_pair", "rank_results"]

logger = logging.getLogger("embellama")

ACTIVATIONS = ("sigmoid", "identity", "softmax")
"""What :meth:`Reranker.predict` can apply to the head's outputs."""


RERANK_TEMPLATE_KEY = "tokenizer.chat_template.rerank"
"""A decoder reranker's prompt, with ``{query}`` and ``{document}`` (llama.cpp's converter writes Qwen3-Reranker's)."""

_SLOT = re.compile(r"\{(query|document)\}")

HEAD_TENSORS = ("cls.weight", "cls.output.weight")
"""The classification head's tensors in a GGUF (llama.cpp's LLM_TENSOR_CLS and LLM_TENSOR_CLS_OUT)."""


class _Head(NamedTuple):
    """What the loaded GGUF says about its head and its pairs."""

    labels: tuple[str, ...]
    activation: str
    offset: int  # token id offset of the second segment (0: none)
    exact_types: bool  # False: the model has token types the file cannot apply
    doubled_sep: bool  # RoBERTa's ``<s> q </s></s> d </s>``
    template: str | None = None  # a decoder's prompt with {query} and {document}


class Reranker(LlamaModel):
    """A cross-encoder (reranker) GGUF: scores for (query, document) pairs.

    >>> with Reranker(ModelConfig(model_path="ms-marco-MiniLM-L6-v2.gguf")) as r:  # doctest: +SKIP
    ...     r.rank("how do cats sleep?", ["Cats sleep 16 hours a day.", "Dogs bark."])
    [{'corpus_id': 0, 'score': 0.98...}, {'corpus_id': 1, 'score': 0.01...}]

    A pair is joined as the model's tokenizer joins two texts: ``[CLS] q [SEP] d [SEP]`` for BERT's
    vocabulary (the document with token type 1 when the file carries it), ``<s> q </s></s> d </s>`` for
    RoBERTa's and XLM-RoBERTa's. As for :class:`EmbeddingModel`, the context belongs to the thread that loads
    the model; :class:`EmbeddingEngine` serves rerankers from worker threads.

    Parameters
    ----------
    config : ModelConfig
        Which model and how to run it (``pooling`` may be left unset or "rank"; ``normalize`` does not apply;
        ``prompts``, ``truncate_dim`` and ``precision`` must stay unset). ``max_tokens`` and ``truncate``
        apply to the joined pair.
    activation : str, optional
        Applied by :meth:`predict` and :meth:`rank` unless a call says otherwise: "sigmoid", "identity" (raw
        logits) or "softmax" (over a multi-label head's outputs). Default: the one the model was saved with,
        else sentence-transformers' default (sigmoid for one output, identity for several).

    Raises
    ------
    ConfigurationError
        ``config`` is not a :class:`ModelConfig`, asks for another pooling or an embedding option, or
        ``activation`` is unknown.
    """

    def __init__(self, config: ModelConfig, *, activation: str | None = None) -> None:
        super().__init__(config)
        who = f"model {config.name!r}"
        check_scoring_config(config, "Reranker", "scores")
        self._activation = check_activation(activation, who)
        self._head: _Head | None = None

    # -- loading ----------------------------------------------------------------------------

    def _choose_pooling(self, model: Model) -> PoolingStrategy:
        return PoolingStrategy.RANK

    def _prepare(self, model: Model, context: Context, max_tokens: int) -> _Head:
        who = f"model {self.name!r}"
        arch = model.architecture
        # Arrays are read only when asked for: the labels are one (the model's id2label).
        header = _gguf.read_header(model.path, arrays=(f"{arch}.classifier.output_labels",))
        if not any(name in header.tensors for name in HEAD_TENSORS):
            raise ConfigurationError(
                f"{who} has no classification head (no {' or '.join(HEAD_TENSORS)} tensor): it embeds text, it does "
                "not score pairs; use EmbeddingModel"
            )
        if model.is_causal:
            return self._decoder_head(model, header, context.n_embd)
        n_out = context.n_embd
        labels_value = header.metadata.get(f"{arch}.classifier.output_labels")
        labels = tuple(str(v) for v in labels_value) if isinstance(labels_value, list) else ()
        saved = header.metadata.get(ACTIVATION_KEY)
        activation = saved if saved in ACTIVATIONS else ("sigmoid" if n_out == 1 else "identity")
        offset = int(header.metadata.get(TOKEN_TYPE_OFFSET_KEY, 0) or 0)
        if offset and offset * 2 != model.n_vocab:
            raise ConfigurationError(f"{who}: {TOKEN_TYPE_OFFSET_KEY} is {offset} for a vocabulary of {model.n_vocab}")
        types = _convert.token_type_count(header)
        exact = offset > 0 or types < 2
        if not exact:
            logger.warning(
                "model %r has %d token types but its GGUF carries no rows for type 1: llama.cpp scores the document "
                "with type 0, which is not what the model was trained with; convert it with `embellama convert` "
                "for exact scores",
                self.name,
                types,
            )
        suffix = model.special_tokens.suffix
        doubled = [model.token_text(t) for t in suffix] == ["</s>"]
        fixed = len(model.special_tokens.prefix) + (2 + doubled) * len(suffix)
        if max_tokens <= fixed:
            raise ConfigurationError(f"{who}: max_tokens ({max_tokens}) leaves no room for a pair's text")
        return _Head(labels or tuple(f"LABEL_{i}" for i in range(n_out)), activation, offset, exact, doubled)

    def _decoder_head(self, model: Model, header: _gguf.Header, n_out: int) -> _Head:
        """A decoder reranker (Qwen3-Reranker): llama.cpp's rank head gives softmax(yes, no) at the last token
        of the prompt the GGUF's ``rerank`` chat template makes; the score is P(yes)."""
        who = f"model {self.name!r}"
        template = header.metadata.get(RERANK_TEMPLATE_KEY)
        labels = header.metadata.get(f"{model.architecture}.classifier.output_labels")
        if not isinstance(template, str) or "{query}" not in template or "{document}" not in template:
            raise ConfigurationError(
                f"{who} is a decoder ({model.architecture}) without a rerank prompt ({RERANK_TEMPLATE_KEY} with "
                "{query} and {document}); decoder rerankers are scored through it"
            )
        if n_out != 2 or (isinstance(labels, list) and labels[:1] != ["yes"]):
            raise ConfigurationError(f"{who}: a decoder reranker's head must give (yes, no), not {n_out} outputs")
        return _Head(("yes",), "identity", 0, True, False, template)

    def _adopt(self, prepared: _Head) -> None:
        self._head = prepared

    def _require_head(self) -> _Head:
        self._require()
        assert self._head is not None
        return self._head

    # -- information ---------------------------------------------------------------------------

    @property
    def num_labels(self) -> int:
        """Outputs of the classification head per pair (1 for a reranker's relevance score)."""
        return len(self._require_head().labels)

    @property
    def labels(self) -> tuple[str, ...]:
        """The head's output labels (from the GGUF; ``LABEL_<i>`` where it names none)."""
        return self._require_head().labels

    @property
    def activation(self) -> str:
        """The activation :meth:`predict` applies by default."""
        return self._activation or self._require_head().activation

    @property
    def exact_token_types(self) -> bool:
        """False when the model was trained with token types the GGUF cannot give llama.cpp (scores differ)."""
        return self._require_head().exact_types

    # -- pairs -----------------------------------------------------------------------------------

    def tokenize_pair(self, query: str, document: str, *, truncate: bool | None = None) -> npt.NDArray[np.int32]:
        """Token ids of the joined pair exactly as :meth:`predict` feeds them (second-segment ids shifted where
        the file carries token type 1).

        Parameters
        ----------
        query, document : str
            The pair.
        truncate : bool, optional
            Cut an over-long pair (the document first) instead of raising; default ``ModelConfig.truncate``.

        Returns
        -------
        numpy.ndarray
            int32 token ids.

        Raises
        ------
        InvalidInputError
            A text is empty or not a str, or the pair is too long with ``truncate=False``.
        """
        model, _, _ = self._require()
        cut = self.config.truncate if truncate is None else truncate
        return self._pair_tokens(model, [(query, document)], 0, cut)[0]

    def _text(self, model: Model, text: Any, kind: str, index: int) -> npt.NDArray[np.int32]:
        if not isinstance(text, str):
            raise InvalidInputError(f"{kind} of pair {index} is {type(text).__name__}, not str", self.name, index)
        if not text:
            raise InvalidInputError(f"{kind} of pair {index} is empty", self.name, index)
        try:
            return model.tokenize(text, add_special=False, parse_special=self.config.parse_special)
        except InvalidInputError as exc:
            raise InvalidInputError(f"{kind} of pair {index}: {exc.reason}", self.name, index) from None

    def _check_pair(self, pair: Any, index: int) -> None:
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise InvalidInputError(
                f"pair {index} must be a (query, document) tuple, got {type(pair).__name__}", self.name, index
            )

    def _pair_tokens(
        self, model: Model, pairs: Sequence[Any], offset: int, truncate: bool
    ) -> list[npt.NDArray[np.int32]]:
        """Check, tokenize and join ``pairs`` (indices in errors count from ``offset``)."""
        head = self._require_head()
        if head.template is not None:
            return self._prompt_tokens(model, head.template, pairs, offset, truncate)
        queries: list[npt.NDArray[np.int32]] = []
        docs: list[npt.NDArray[np.int32]] = []
        seen: dict[str, npt.NDArray[np.int32]] = {}  # a query repeats across its documents: tokenized once
        for i, pair in enumerate(pairs):
            index = offset + i
            self._check_pair(pair, index)
            query, doc = pair
            ids = seen.get(query) if isinstance(query, str) else None
            if ids is None:
                ids = self._text(model, query, "query", index)
                seen[query] = ids
            queries.append(ids)
            docs.append(self._text(model, doc, "document", index))
        special = model.special_tokens
        prefix = np.asarray(special.prefix, dtype=np.int32)
        suffix = np.asarray(special.suffix, dtype=np.int32)
        second_head = suffix if head.doubled_sep else suffix[:0]
        limit = self._max_tokens
        fixed = len(prefix) + 2 * len(suffix) + len(second_head)
        out: list[npt.NDArray[np.int32]] = []
        cut: list[int] = []
        for i, (query, doc) in enumerate(zip(queries, docs, strict=True)):
            total = fixed + len(query) + len(doc)
            if total > limit:
                if not truncate:
                    raise InvalidInputError(
                        f"pair {offset + i} has {total} tokens; the limit is {limit} (set truncate=True to cut the "
                        "document)",
                        self.name,
                        offset + i,
                    )
                room = limit - fixed
                doc = doc[: max(room - len(query), 0)]
                query = query[: room - len(doc)]
                cut.append(offset + i)
            second = np.concatenate([second_head, doc, suffix])
            if head.offset:
                second = second + np.int32(head.offset)
            out.append(np.concatenate([prefix, query, suffix, second]).astype(np.int32, copy=False))
        if cut:
            logger.warning(
                "model %r: %d pair(s) longer than max_tokens (%d) were cut, the document first (pair %d%s)",
                self.name,
                len(cut),
                limit,
                cut[0],
                "" if len(cut) == 1 else ", ...",
            )
        return out

    def _prompt_tokens(
        self, model: Model, template: str, pairs: Sequence[Any], offset: int, truncate: bool
    ) -> list[npt.NDArray[np.int32]]:
        """A decoder's pairs: the template filled in, tokenized whole (as the model's own code does, special
        tokens parsed); an over-long pair loses the end of its document, then of its query."""
        out: list[npt.NDArray[np.int32]] = []
        limit, cut = self._max_tokens, []
        for i, pair in enumerate(pairs):
            index = offset + i
            self._check_pair(pair, index)
            texts = [
                self._text(model, text, kind, index) for text, kind in zip(pair, ("query", "document"), strict=True)
            ]
            query, doc = pair
            ids = self._fill(model, template, query, doc, index)
            if len(ids) > limit and not truncate:
                raise InvalidInputError(
                    f"pair {index} has {len(ids)} tokens; the limit is {limit} (set truncate=True to cut the document)",
                    self.name,
                    index,
                )
            for _ in range(8):  # each pass cuts at least the excess in tokens; a few passes settle BPE merges
                excess = len(ids) - limit
                if excess <= 0:
                    break
                cut.append(index)
                q_ids, d_ids = texts
                if len(d_ids) > 0:
                    d_ids = d_ids[: max(len(d_ids) - excess, 0)]
                else:
                    q_ids = q_ids[: max(len(q_ids) - excess, 0)]
                texts = [q_ids, d_ids]
                query, doc = (model.detokenize(t) for t in texts)
                ids = self._fill(model, template, query, doc, index)
            if len(ids) > limit:
                raise InvalidInputError(
                    f"pair {index}: the prompt alone exceeds max_tokens ({limit})", self.name, index
                )
            out.append(ids)
        if cut:
            logger.warning(
                "model %r: %d pair(s) longer than max_tokens (%d) were cut, the document first (pair %d)",
                self.name,
                len(set(cut)),
                limit,
                cut[0],
            )
        return out

    def _fill(self, model: Model, template: str, query: str, doc: str, index: int) -> npt.NDArray[np.int32]:
        # one pass, so a query that contains "{document}" stays as it is
        text = _SLOT.sub(lambda m: query if m.group(1) == "query" else doc, template)
        try:
            return model.tokenize(text, add_special=False, parse_special=True)
        except InvalidInputError as exc:
            raise InvalidInputError(f"pair {index}: {exc.reason}", self.name, index) from None

    # -- scores --------------------------------------------------------------------------------------

    def predict(
        self,
        pairs: Sequence[tuple[str, str]] | tuple[str, str],
        *,
        batch_size: int | None = None,
        activation: str | None = None,
        show_progress_bar: bool | None = None,
        progress: ProgressCallback | None = None,
    ) -> Any:
        """Scores of (query, document) pairs, in input order (sentence-transformers' ``CrossEncoder.predict``).

        Every pair is checked and tokenized before any inference; pairs are then packed into llama.cpp calls
        by length.

        Parameters
        ----------
        pairs : sequence of (str, str), or one (str, str)
            The pairs (a list or tuple of 2-tuples or 2-lists).
        batch_size : int, optional
            Most pairs per llama.cpp call; default: as many as fit.
        activation : str, optional
            "sigmoid", "identity" (raw logits) or "softmax" instead of :attr:`activation`.
        show_progress_bar : bool, optional
            Draw a progress bar on stderr; default: when the ``embellama`` logger shows INFO.
        progress : callable, optional
            ``progress(done, total)``, called on this thread after each llama.cpp call.

        Returns
        -------
        numpy.ndarray
            float32: shape ``(n,)`` for a one-output head, ``(n, num_labels)`` otherwise; for one pair given
            alone, a float32 scalar (or a ``(num_labels,)`` row).

        Raises
        ------
        InvalidInputError
            ``pairs`` is not a sequence of 2-tuples, or a query or document is not a str, is empty, or the pair is
            too long with ``truncate=False`` (the message names the model and the pair's index).
        ConfigurationError
            A bad ``batch_size`` or ``activation``, or the model has no classification head.
        ModelNotFoundError, ModelLoadError, ThreadAffinityError, EmbeddingError
            As for :meth:`EmbeddingModel.embed_batch`.
        """
        single = is_pair(pairs)
        batch = [pairs] if single else pairs
        if isinstance(batch, (str, bytes)) or not isinstance(batch, Sequence):
            raise InvalidInputError(
                f"predict expects a sequence of (query, document) pairs, got {type(pairs).__name__}", self.name
            )
        model, _, _ = self._require()
        self._check_batch_size(batch_size)
        kind = check_activation(activation, f"model {self.name!r}") or self.activation
        tracker = _batch.Progress(len(batch), self.name, show_progress_bar, progress)
        scores = self._score(model, batch, 0, batch_size, kind, tracker)
        tracker.close()
        return scores[0] if single else scores

    def predict_iter(
        self,
        pairs: Iterable[tuple[str, str]],
        *,
        chunk_size: int = 1024,
        batch_size: int | None = None,
        activation: str | None = None,
    ) -> Iterator[Any]:
        """Stream scores: one array per ``chunk_size`` pairs, in input order, for inputs that do not fit in memory.

        Parameters
        ----------
        pairs : iterable of (str, str)
            Read lazily, ``chunk_size`` pairs at a time.
        chunk_size : int, optional
            Pairs per yielded array.
        batch_size, activation
            As for :meth:`predict`.

        Yields
        ------
        numpy.ndarray
            The chunk's scores, as :meth:`predict` gives them.

        Raises
        ------
        InvalidInputError, ConfigurationError
            As for :meth:`predict` (a bad pair's index counts in the whole stream).
        """
        self._check_chunk_size(chunk_size)
        if isinstance(pairs, (str, bytes)) or is_pair(pairs):
            raise InvalidInputError("predict_iter expects an iterable of (query, document) pairs", self.name)
        model, _, _ = self._require()
        self._check_batch_size(batch_size)
        kind = check_activation(activation, f"model {self.name!r}") or self.activation
        source = iter(pairs)
        done = 0
        while chunk := list(itertools.islice(source, chunk_size)):
            scores = self._score(model, chunk, done, batch_size, kind, _batch.Progress(len(chunk), self.name, False))
            done += len(chunk)
            yield scores

    def rank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_k: int | None = None,
        return_documents: bool = False,
        batch_size: int | None = None,
        activation: str | None = None,
        show_progress_bar: bool | None = None,
    ) -> list[dict[str, Any]]:
        """The documents sorted by their score for ``query``, best first (``CrossEncoder.rank``).

        Parameters
        ----------
        query : str
            The query.
        documents : sequence of str
            The candidates (at least one).
        top_k : int, optional
            Return only the best ``top_k``; default all.
        return_documents : bool, optional
            Include each document's text under ``"text"``.
        batch_size, activation, show_progress_bar
            As for :meth:`predict`.

        Returns
        -------
        list of dict
            ``{"corpus_id": index in documents, "score": float}`` (and ``"text"``), by descending score; equal
            scores keep input order.

        Raises
        ------
        InvalidInputError
            ``documents`` is empty or not a sequence of str, or a text is invalid (as for :meth:`predict`).
        ConfigurationError
            A bad ``top_k``, or the head has several outputs (rank needs one score per document).
        """
        if isinstance(documents, (str, bytes)) or not isinstance(documents, Sequence):
            raise InvalidInputError(f"rank expects a sequence of documents, got {type(documents).__name__}", self.name)
        if not documents:
            raise InvalidInputError("rank got no documents", self.name)
        if top_k is not None and not is_positive_int(top_k):
            raise ConfigurationError(f"model {self.name!r}: top_k must be a positive int, got {top_k!r}")
        if self.num_labels != 1:
            raise ConfigurationError(
                f"model {self.name!r} has {self.num_labels} outputs per pair; rank needs one score (use predict)"
            )
        scores = self.predict(
            [(query, d) for d in documents],
            batch_size=batch_size,
            activation=activation,
            show_progress_bar=show_progress_bar,
        )
        return rank_results(scores, documents, top_k, return_documents)

    def _infer(
        self, tokens: Sequence[npt.NDArray[np.int32]], batch_size: int | None, progress: _batch.Progress
    ) -> npt.NDArray[np.float32]:
        self._require()
        if self._head is None:
            raise ResourceClosedError(f"model {self.name!r} was unloaded")
        out: npt.NDArray[np.float32] = self._run_batch(
            tokens, PoolingStrategy.RANK, Normalization.NONE, batch_size, progress
        )
        return out[:, :1] if self._head.template is not None else out  # a decoder's P(yes), not P(no)

    def score_pairs(
        self,
        pairs: Sequence[Any],
        *,
        offset: int = 0,
        batch_size: int | None = None,
        activation: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> npt.NDArray[np.float32]:
        """:meth:`predict`'s scores of one slice of a larger request (what the engine's workers run).

        Parameters
        ----------
        pairs : sequence of (str, str)
            The (query, document) pairs of the slice.
        offset : int, optional
            The slice's first index in the whole request: an error names a pair by ``offset`` + its index.
        batch_size : int, optional
            Most pairs per llama.cpp call (default: as many as the context holds).
        activation : str, optional
            One of :data:`ACTIVATIONS`, already checked by the caller; default: the model's own.
        progress : callable, optional
            Called with the number of pairs done so far.

        Returns
        -------
        numpy.ndarray
            ``(len(pairs),)`` float32 scores, or ``(len(pairs), num_labels)`` for a multi-label model.

        Raises
        ------
        InvalidInputError
            A pair that is not two non-empty strings, or too long without truncation.
        ResourceClosedError
            The model was closed.

        :meta private:
        """
        model, _, _ = self._require()
        self._check_batch_size(batch_size)
        tracker = _batch.Progress(len(pairs), self.name, False, progress)
        scores = self._score(model, pairs, offset, batch_size, activation or self.activation, tracker)
        tracker.close()
        return scores

    def _score(
        self,
        model: Model,
        pairs: Sequence[Any],
        offset: int,
        batch_size: int | None,
        activation: str,
        tracker: _batch.Progress,
    ) -> npt.NDArray[np.float32]:
        """The checked, tokenized and scored ``pairs`` (errors name a pair by ``offset`` + its index)."""
        tokens = self._pair_tokens(model, pairs, offset, self.config.truncate)
        return _activate(self._infer(tokens, batch_size, tracker), activation)

    def __repr__(self) -> str:
        state = "loaded" if self.is_loaded else "not loaded"
        return f"Reranker(name={self.name!r}, {state})"


def rank_results(
    scores: npt.NDArray[np.float32], documents: Sequence[str], top_k: int | None, return_documents: bool
) -> list[dict[str, Any]]:
    """``CrossEncoder.rank``'s result from one score per document: best first, ties in input order."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:top_k]
    values = np.asarray(scores)[order].tolist()
    results: list[dict[str, Any]] = [
        {"corpus_id": int(i), "score": float(s)} for i, s in zip(order.tolist(), values, strict=True)
    ]
    if return_documents:
        for item in results:
            item["text"] = documents[item["corpus_id"]]
    return results


def is_pair(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, str) for v in value)


def check_activation(value: str | None, who: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value.lower() not in ACTIVATIONS:
        raise ConfigurationError(f"{who}: unknown activation {value!r}; expected one of: {', '.join(ACTIVATIONS)}")
    return value.lower()


def _activate(logits: npt.NDArray[np.float32], kind: str) -> npt.NDArray[np.float32]:
    """The head's outputs ``(n, k)`` after ``kind``; one column becomes ``(n,)``."""
    x = logits.astype(np.float64)
    if kind == "sigmoid":
        x = 0.5 * (1.0 + np.tanh(0.5 * x))  # the logistic function, without overflow for large |x|
    elif kind == "softmax":
        x = np.exp(x - x.max(axis=1, keepdims=True))
        x /= x.sum(axis=1, keepdims=True)
    out = x.astype(np.float32)
    return out[:, 0] if out.shape[1] == 1 else out
