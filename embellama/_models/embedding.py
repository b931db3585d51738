# SPDX-License-Identifier: Apache-2.0
"""EmbeddingModel: text in, numpy vectors out."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence, Sized
from typing import Any

import numpy as np
import numpy.typing as npt

from embellama._compute import output as _output
from embellama._compute import packing as _batch
from embellama._compute.packing import ProgressCallback
from embellama._compute.pooling import Normalization, NormalizeSpec, PoolingStrategy, parse_normalization
from embellama._compute.pooling import normalize as _normalize
from embellama._config import ModelConfig
from embellama._exceptions import ConfigurationError, InvalidInputError, ResourceClosedError
from embellama._models import overflow as _overflow
from embellama._models.base import LlamaModel
from embellama._models.defaults import similarity_fn_name
from embellama._models.encode import EncodeMethods
from embellama._models.kinds import embedding_pooling
from embellama._models.options import (
    PLAIN,
    Options,
    Prompts,
    check_streamable,
    check_token_ids,
    text_tokens,
)
from embellama._models.scoring import SimilarityMethods
from embellama._models.streaming import stream_chunks
from embellama.llama import Context, Model

__all__ = ["EmbeddingModel"]

_FIRST_ROW = np.zeros(1, dtype=np.intp)


class EmbeddingModel(LlamaModel, EncodeMethods, SimilarityMethods):
    """One GGUF embedding model with its llama.cpp context.

    >>> with EmbeddingModel(ModelConfig(model_path="all-MiniLM-L6-v2.gguf")) as m:  # doctest: +SKIP
    ...     m.embed("Hello world").shape
    (384,)

    The context belongs to the thread that loads the model (``load()``, or the first
    ``embed``); use it from that thread only, or through :class:`EmbeddingEngine`.

    Parameters
    ----------
    config : ModelConfig
        Which model and how to run it. Nothing is loaded until :meth:`load` or the first embedding.

    Raises
    ------
    ConfigurationError
        ``config`` is not a :class:`ModelConfig`.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self._norm: Normalization | float = parse_normalization(config.normalize)
        self._prompts = Prompts()
        self._token_context: _overflow.TokenContext | None = None  # late chunking's pooling-NONE context
        self._layer_norm_cut = False  # the known model's Matryoshka recipe: layer norm before truncate_dim's cut
        self._known_tokens: Mapping[str, npt.NDArray[np.int32]] | None = None  # see reuse_tokens

    # -- embedding-specific loading and information ------------------------------------

    def _prepare(self, model: Model, context: Context, max_tokens: int) -> tuple[Prompts, str]:
        prompts = Prompts.read(model, self.config, self._known)
        _output.check_truncate_dim(self.config.truncate_dim, f"model {self.name!r}", model.n_embd)
        return prompts, similarity_fn_name(self.config, model, self._known)

    def _adopt(self, prepared: tuple[Prompts, str]) -> None:
        self._prompts, self._similarity_fn = prepared
        self._layer_norm_cut = (
            self._known is not None and self._known.normalization == _output.LAYER_NORM_BEFORE_TRUNCATE
        )

    def _choose_pooling(self, model: Model) -> PoolingStrategy:
        return embedding_pooling(self.config, model)

    def unload(self) -> None:
        """Free the contexts and the model (from the thread that loaded it). Idempotent."""
        if self._token_context is not None:
            self._token_context.close()
            self._token_context = None
        super().unload()

    close = unload

    def _grown(self) -> None:
        if self._token_context is not None:  # late chunking's context: made again, as large, on its next use
            self._token_context.close()
            self._token_context = None

    @property
    def embedding_dimensions(self) -> int:
        """Length of each embedding vector."""
        return self._require()[0].n_embd

    @property
    def prompts(self) -> dict[str, str]:
        """The prompts in effect (name to text): ``query`` and ``document`` (empty unless set), the GGUF's
        (``embellama.prompts``), then ``ModelConfig.prompts``."""
        self._require()
        return dict(self._prompts.texts)

    @property
    def default_prompt_name(self) -> str | None:
        """The prompt applied when a call names none (``ModelConfig.default_prompt_name``, else the GGUF's)."""
        self._require()
        return self._prompts.default

    # -- tokens -------------------------------------------------------------------

    def tokenize(self, text: str, *, truncate: bool | None = None) -> npt.NDArray[np.int32]:
        """Token ids exactly as :meth:`embed` feeds them to the model (special tokens included).

        Parameters
        ----------
        text : str
            The text.
        truncate : bool, optional
            Cut at ``max_sequence_length`` instead of raising; default ``ModelConfig.truncate``.

        Returns
        -------
        numpy.ndarray
            int32 token ids.

        Raises
        ------
        InvalidInputError
            The text is empty, not a str, or too long with ``truncate=False``.
        """
        model, _, _ = self._require()
        return self._tokenize(model, text, None, self.config.truncate if truncate is None else truncate)

    def reuse_tokens(self, known: Mapping[str, npt.NDArray[np.int32]] | None) -> None:
        """Have the texts of ``known`` take these tokens, from :meth:`tokenize`, instead of being tokenized again.

        The engine's workers tokenize each request as it joins a call (to count it); the joined call then
        reuses those tokens. They stand only where :meth:`tokenize` would give the same: no prompt, the
        config's ``truncate``.

        Parameters
        ----------
        known : mapping of str to numpy.ndarray, or None
            Each text's tokens, as :meth:`tokenize` gave them; None stops.

        :meta private:
        """
        self._known_tokens = known

    def _tokenize(
        self,
        model: Model,
        text: Any,
        index: int | None,
        truncate: bool,
        prompt: str | None = None,
        cuts: dict[int, int] | None = None,
    ) -> npt.NDArray[np.int32]:
        known = self._known_tokens
        if known is not None and type(text) is str and not prompt and truncate == self.config.truncate:
            ids = known.get(text)
            if ids is not None and (cuts is None or len(ids) < self._max_tokens):  # at the limit: it may be cut
                return ids
        return text_tokens(
            model,
            text,
            index,
            truncate=truncate,
            limit=self._max_tokens,
            parse_special=self.config.parse_special,
            name=self.name,
            prompt=prompt,
            cuts=cuts,
        )

    # -- embeddings -----------------------------------------------------------------

    def embed(
        self,
        text: str,
        *,
        normalize: NormalizeSpec | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        truncate_dim: int | None = None,
        precision: str | None = None,
        task: str | None = None,
    ) -> npt.NDArray[Any]:
        """Embedding of one text: shape ``(dim,)``, or ``(n_tokens, dim)`` with pooling NONE.

        Parameters
        ----------
        text : str
            The text.
        normalize : bool, str or float, optional
            Normalization instead of ``ModelConfig.normalize`` (the same values).
        prompt_name, prompt, truncate_dim, precision, task
            As for :meth:`embed_batch` (int8/uint8 need several texts to calibrate on).

        Returns
        -------
        numpy.ndarray
            float32 vector (of ``truncate_dim`` dimensions when given); int8/uint8 with ``precision``.

        Raises
        ------
        InvalidInputError, ModelNotFoundError, ModelLoadError, ThreadAffinityError, EmbeddingError, ConfigurationError
            As for :meth:`embed_batch`.
        """
        model, context, batch = self._require()
        norm = self._norm if normalize is None else parse_normalization(normalize)
        options = self._options(prompt_name, prompt, truncate_dim, precision, task)
        assert self._pooling is not None
        cuts: dict[int, int] = {}
        if self._pooling.native == "none":  # pooled in numpy, or token vectors: the batch pipeline
            result = self._run([text], 0, None, norm, _batch.Progress(1, self.name, False), options, cuts=cuts)
            _overflow.report_cuts(self.name, self._max_tokens, cuts, 1)
            return result[0]  # type: ignore[no-any-return]
        # One text, one llama.cpp call: the batch pipeline's steps without its packing and bookkeeping.
        ids = self._tokenize(model, text, None, self.config.truncate, options.prompt, cuts)
        _overflow.report_cuts(self.name, self._max_tokens, cuts, 1)
        self._fit(len(ids))
        model, context, batch = self._require()
        batch.fill((ids,))
        self._tasks.activate(context, options.task)
        context.process(batch)
        out = np.empty((1, context.n_embd), dtype=np.float32)
        context.copy_sequence_embeddings(out, _FIRST_ROW)
        if options.plain:
            return _normalize(out, norm)[0]
        return self._finish(out, options, norm)[0]  # type: ignore[no-any-return]

    def _options(
        self,
        prompt_name: str | None,
        prompt: str | None,
        truncate_dim: int | None,
        precision: str | None,
        task: str | None = None,
    ) -> Options:
        """A call's prompt text, truncate_dim, precision and task: its own, else the config's (model loaded).

        A task (one of :attr:`tasks`) brings its adapter's prompt when the call names no prompt."""
        model, _, _ = self._require()
        task = self._tasks.check(task)
        if task is not None and prompt is None and prompt_name is None:
            prompt = self._tasks.prompt(task)
        found = self._prompts.options(
            model, self.config, self._max_tokens, prompt_name, prompt, truncate_dim, precision
        )
        return found._replace(task=task)

    def embed_batch(
        self,
        texts: Sequence[str],
        *,
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
        normalize: NormalizeSpec | None = None,
        progress: ProgressCallback | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        truncate_dim: int | None = None,
        precision: str | None = None,
        task: str | None = None,
        overflow: str | None = None,
        chunk_tokens: int | None = None,
        chunk_overlap: int = 0,
        return_truncation: bool = False,
    ) -> Any:
        """Embeddings of several texts, in order: float32 array of shape ``(n, dim)``.

        Every text is checked and tokenized before any inference; the texts are then packed
        into llama.cpp calls by length. With pooling NONE the result is a list of
        ``(n_tokens_i, dim)`` arrays instead. ``batch_size`` caps the texts per llama.cpp call
        (default: as many as fit). ``progress(done, total)`` is called after each call, the
        last time with ``(total, total)``; ``show_progress_bar`` draws a bar (tqdm if installed).

        Parameters
        ----------
        texts : sequence of str
            The texts (a list or tuple; not a single str).
        batch_size : int, optional
            Most texts per llama.cpp call; default: as many as fit.
        show_progress_bar : bool, optional
            Draw a progress bar on stderr; default: when the ``embellama`` logger shows INFO.
        normalize : bool, str or float, optional
            Normalization instead of ``ModelConfig.normalize`` (the same values).
        progress : callable, optional
            ``progress(done, total)``, called on this thread after each llama.cpp call.
        prompt_name : str, optional
            Prepend the model's prompt of that name (see :attr:`prompts`); default: ``default_prompt_name``'s.
        prompt : str, optional
            Prepend this text (wins over ``prompt_name``). Prompts count toward ``max_tokens`` and are never cut.
        truncate_dim : int, optional
            Keep the first dimensions, cut before normalization; default ``ModelConfig.truncate_dim``.
        precision : str, optional
            "float32", "int8", "uint8", "binary" or "ubinary" (as sentence-transformers' ``quantize_embeddings``:
            int8/uint8 ranges from these texts' vectors); default ``ModelConfig.precision``.
        task : str, optional
            Run with the LoRA adapter of this task (one of :attr:`tasks`, from ``ModelConfig.lora``), and its prompt
            when the call names none; default: no task adapter.
        overflow : str, optional
            What a text over ``max_sequence_length`` gets: "truncate" (cut, keeping the end tokens, counted and
            warned of with :class:`TruncationWarning`), "error" (:class:`InvalidInputError` naming the text) or
            "chunk" (embedded in windows of ``chunk_tokens`` that overlap by ``chunk_overlap``, their vectors
            averaged: see :meth:`embed_chunked`). Default: "truncate" if ``ModelConfig.truncate``, else "error".
        chunk_tokens, chunk_overlap : int, optional
            With ``overflow="chunk"``: the window's tokens of text (default: as many as fit) and the tokens two
            windows share.
        return_truncation : bool, optional
            Return :class:`EmbeddingsWithTruncation` ``(embeddings, truncated_tokens)``: the embeddings and the
            tokens cut from each text (an int64 array; zeros with ``overflow="chunk"``).

        Returns
        -------
        numpy.ndarray or list of numpy.ndarray
            float32, shape ``(len(texts), dim)`` (int8/uint8 with ``precision``, ``ceil(dim / 8)`` columns for the
            binary kinds, ``truncate_dim`` for ``dim``); with pooling NONE one ``(n_tokens_i, dim)`` array per text.
            With ``return_truncation``, that and the tokens cut per text.

        Warns
        -----
        TruncationWarning
            Once per call when texts were cut (how many, how many tokens, the first one's index).

        Raises
        ------
        InvalidInputError
            A text is empty, not a str, not valid Unicode, or too long with ``truncate=False`` (the message
            names the model and the text's index).
        ModelNotFoundError, ModelLoadError
            The first call loads the model, and it could not be loaded.
        ThreadAffinityError
            Called from another thread than the one that loaded the model.
        EmbeddingError
            llama.cpp failed (its return code and the text's length are in the message).
        ConfigurationError
            A bad ``batch_size``, ``normalize``, ``truncate_dim`` (above the dimensions) or ``precision``, an unknown
            ``prompt_name`` (the message lists the model's), a prompt that leaves no room for text, or
            ``truncate_dim``/``precision`` with pooling NONE.
        """
        if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
            raise InvalidInputError(f"embed_batch expects a sequence of str, got {type(texts).__name__}", self.name)
        self._require()
        mode = _overflow.check_overflow(overflow, self.config.truncate, self.name)
        if mode != "chunk" and _overflow.is_chunk_option(chunk_tokens, chunk_overlap):
            raise ConfigurationError(f"model {self.name!r}: chunk_tokens and chunk_overlap need overflow='chunk'")
        if mode == "chunk":
            result = self.embed_chunked(
                texts,
                chunk_tokens=chunk_tokens,
                chunk_overlap=chunk_overlap,
                batch_size=batch_size,
                normalize=normalize,
                prompt_name=prompt_name,
                prompt=prompt,
                truncate_dim=truncate_dim,
                precision=precision,
                task=task,
            )
            zeros = np.zeros(len(texts), dtype=np.int64)
            return _overflow.EmbeddingsWithTruncation(result, zeros) if return_truncation else result
        options = self._options(prompt_name, prompt, truncate_dim, precision, task)
        cuts: dict[int, int] = {}
        result = self._run(
            texts,
            0,
            batch_size,
            normalize,
            _batch.Progress(len(texts), self.name, show_progress_bar, progress),
            options,
            truncate=mode == "truncate",
            cuts=cuts,
        )
        dropped = _overflow.report_cuts(self.name, self._max_tokens, cuts, len(texts))
        return _overflow.EmbeddingsWithTruncation(result, dropped) if return_truncation else result

    def embed_iter(
        self,
        texts: Iterable[str],
        *,
        chunk_size: int = 1024,
        batch_size: int | None = None,
        normalize: NormalizeSpec | None = None,
        show_progress_bar: bool | None = None,
        progress: ProgressCallback | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        truncate_dim: int | None = None,
        precision: str | None = None,
        task: str | None = None,
    ) -> Iterator[Any]:
        """Stream embeddings: one ``(chunk, dim)`` array per ``chunk_size`` texts, in input order.

        For inputs that do not fit in memory: at most two chunks of texts (while a GPU computes,
        the next one is tokenized on a second thread as this one runs) and one of vectors are held. A bad
        text raises :class:`InvalidInputError` with its index in the whole stream when its
        chunk is reached (earlier chunks have been yielded by then).

        Parameters
        ----------
        texts : iterable of str
            Any iterable, read lazily, ``chunk_size`` texts at a time.
        chunk_size : int, optional
            Texts per yielded array.
        batch_size, normalize, show_progress_bar, progress, prompt_name, prompt, truncate_dim, precision, task
            As for :meth:`embed_batch`; ``progress`` gets ``total=None`` while the stream's length is unknown.
            ``precision`` int8/uint8 is refused: each chunk would get its own ranges (quantize the float32
            chunks with :func:`embellama.quantize_embeddings` and fixed ``ranges`` instead).

        Yields
        ------
        numpy.ndarray
            float32, shape ``(len(chunk), dim)`` (with pooling NONE, a list of per-token arrays).

        Raises
        ------
        ConfigurationError
            A bad ``chunk_size``, ``batch_size``, ``normalize``, prompt, ``truncate_dim`` or ``precision``.
        InvalidInputError
            ``texts`` is a str itself, or a text is invalid (its index in the whole stream).
        ModelNotFoundError, ModelLoadError, ThreadAffinityError, EmbeddingError
            As for :meth:`embed_batch`.
        """
        self._check_chunk_size(chunk_size)
        if isinstance(texts, (str, bytes)):
            raise InvalidInputError(f"embed_iter expects an iterable of str, got {type(texts).__name__}", self.name)
        total = len(texts) if isinstance(texts, Sized) else None
        self._require()  # loads the model on this thread, which then owns its context
        self._check_batch_size(batch_size)
        norm = self._norm if normalize is None else parse_normalization(normalize)
        options = self._options(prompt_name, prompt, truncate_dim, precision, task)
        check_streamable(options, self.name)
        tracker = _batch.Progress(total, self.name, show_progress_bar, progress)
        finished = False
        try:
            # While a GPU computes, chunk k+1 is tokenized on a second thread as chunk k runs. On the CPU the
            # overlap measured 0.91-1.02x (benchmarks/bench_pipeline.py): one thread does both.
            yield from stream_chunks(
                iter(texts),
                chunk_size,
                lambda chunk, offset: self._chunk_tokens(chunk, offset, options.prompt),
                lambda tokens: self._infer(tokens, batch_size, norm, tracker, options),
                ahead=self._tokenize_threads > 1,
            )
            finished = True
        finally:
            tracker.close(report=finished)  # a stream stopped early closes its bar without a final report

    def _run(
        self,
        texts: Sequence[Any],
        offset: int,
        batch_size: int | None,
        normalize: NormalizeSpec | None,
        progress: _batch.Progress,
        options: Options,
        *,
        truncate: bool | None = None,
        cuts: dict[int, int] | None = None,
    ) -> Any:
        """Check, tokenize and embed ``texts`` (indices in errors count from ``offset``; cut texts into ``cuts``)."""
        self._require()
        self._check_batch_size(batch_size)
        norm = self._norm if normalize is None else parse_normalization(normalize)
        tokens = self._tokens(texts, offset, self._tokenize_threads, options.prompt, truncate, cuts)
        result = self._infer(tokens, batch_size, norm, progress, options)
        progress.close()
        return result

    def _tokens(
        self,
        texts: Sequence[Any],
        offset: int,
        threads: int,
        prompt: str | None = None,
        truncate: bool | None = None,
        cuts: dict[int, int] | None = None,
    ) -> list[npt.NDArray[np.int32]]:
        """Every text checked and tokenized; reads only the vocabulary, so any thread may call it. A cut text's
        lost tokens go into ``cuts`` under its index in ``texts``."""
        model = self._model
        cut = self.config.truncate if truncate is None else truncate
        if model is None:
            raise ResourceClosedError(f"model {self.name!r} was unloaded")
        if cuts is None:
            return _batch.tokenize_all(
                texts, lambda text, i: self._tokenize(model, text, offset + i, cut, prompt), threads
            )
        found: dict[int, int] = {}
        tokens = _batch.tokenize_all(
            texts, lambda text, i: self._tokenize(model, text, offset + i, cut, prompt, found), threads
        )
        cuts.update({index - offset: n for index, n in found.items()})
        return tokens

    # -- long texts ----------------------------------------------------------------------

    def count_truncated(
        self, texts: Sequence[str], *, prompt_name: str | None = None, prompt: str | None = None
    ) -> npt.NDArray[np.int64]:
        """Tokens :meth:`embed_batch` would cut from each text (0 where it fits); tokenizes only, runs nothing.

        Parameters
        ----------
        texts : sequence of str
            The texts.
        prompt_name, prompt : str, optional
            As for :meth:`embed_batch` (a prompt's tokens count toward the limit).

        Returns
        -------
        numpy.ndarray
            int64, one count per text.

        Raises
        ------
        InvalidInputError
            A text is empty or not a str.
        """
        if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
            raise InvalidInputError(f"count_truncated expects a sequence of str, got {type(texts).__name__}", self.name)
        options = self._options(prompt_name, prompt, None, None)
        cuts: dict[int, int] = {}
        self._tokens(texts, 0, 1, options.prompt, True, cuts)
        dropped = np.zeros(len(texts), dtype=np.int64)
        if cuts:
            dropped[list(cuts)] = list(cuts.values())
        return dropped

    def embed_chunked(
        self,
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
        """One vector per text, however long: each text in windows of tokens, their vectors pooled.

        A text's tokens (without the special tokens) are cut into windows of ``chunk_tokens`` that start
        ``chunk_tokens - chunk_overlap`` apart, the last ending at the text's end; each window is embedded with the
        special tokens (and prompt) around it, all windows of all texts packed into llama.cpp calls together. The
        windows' vectors (before normalization) are averaged, then normalized as the model's output. A text that
        fits is one window: its vector is the one :meth:`embed_batch` gives.

        Parameters
        ----------
        texts : sequence of str
            The texts.
        chunk_tokens : int, optional
            Tokens of text per window; default and most: ``max_sequence_length`` less the special tokens and prompt.
        chunk_overlap : int, optional
            Tokens two consecutive windows share (less than ``chunk_tokens``).
        chunk_pooling : str, optional
            "mean" (every window counts the same) or "weighted" (by its tokens, so a short last window counts less).
        return_chunks : bool, optional
            Also return each text's windows: their vectors and character spans (:class:`Chunks`).
        batch_size, normalize, prompt_name, prompt, truncate_dim, precision, task
            As for :meth:`embed_batch` (``truncate_dim`` and ``precision`` apply to the pooled vectors).

        Returns
        -------
        numpy.ndarray or ChunkedEmbeddings
            ``(len(texts), dim)`` as :meth:`embed_batch`; with ``return_chunks``, ``(embeddings, chunks)``.

        Raises
        ------
        ConfigurationError
            Pooling NONE, a ``chunk_tokens`` over the room a window has, an overlap of at least ``chunk_tokens``,
            an unknown ``chunk_pooling``, or a bad option as for :meth:`embed_batch`.
        InvalidInputError
            A text is empty or not a str (the message names its index).
        """
        return _overflow.embed_chunked(
            self,
            texts,
            chunk_tokens=chunk_tokens,
            chunk_overlap=chunk_overlap,
            chunk_pooling=chunk_pooling,
            return_chunks=return_chunks,
            batch_size=batch_size,
            normalize=normalize,
            prompt_name=prompt_name,
            prompt=prompt,
            truncate_dim=truncate_dim,
            precision=precision,
            task=task,
        )

    def embed_spans(
        self,
        text: str,
        spans: Sequence[tuple[int, int]] | None = None,
        *,
        by: str = "sentence",
        span_tokens: int = 64,
        normalize: NormalizeSpec | None = None,
    ) -> _overflow.SpanEmbeddings:
        """Late chunking: one pass of the whole text, then one vector per span, the mean of its tokens' vectors.

        The text is run once (up to ``max_sequence_length`` tokens, so every token's vector has seen the text
        around it); each span's vector is the mean of the last hidden states of the tokens it overlaps (special
        tokens left out), normalized as the model's output. The model's own pooling is not used: the token
        vectors come from a second llama.cpp context with pooling NONE, made on the first call.

        Parameters
        ----------
        text : str
            The text.
        spans : sequence of (int, int), optional
            Character spans ``(start, end)``, end excluded. Default: found, as ``by`` says.
        by : str, optional
            Without ``spans``: "sentence" (split after ``.``, ``!``, ``?`` and the like, and at blank lines) or
            "tokens" (windows of ``span_tokens`` tokens).
        span_tokens : int, optional
            Tokens per span with ``by="tokens"``.
        normalize : bool, str or float, optional
            Normalization instead of ``ModelConfig.normalize``.

        Returns
        -------
        SpanEmbeddings
            ``(embeddings, spans)``: float32 ``(n_spans, dim)`` and the int64 ``(n_spans, 2)`` spans. Found spans
            past the model's limit are left out (with a :class:`TruncationWarning`).

        Raises
        ------
        InvalidInputError
            The text is empty or not a str, or a given span is out of the text or covers no token the model reads.
        ConfigurationError
            A bad ``by`` or ``span_tokens``.
        """
        return _overflow.embed_spans(self, text, spans, by=by, span_tokens=span_tokens, normalize=normalize)

    def _chunk_tokens(self, chunk: Sequence[Any], offset: int, prompt: str | None) -> list[npt.NDArray[np.int32]]:
        """One chunk of a stream tokenized; its cut texts are warned of (indices in the whole stream)."""
        cuts: dict[int, int] = {}
        tokens = self._tokens(chunk, offset, 1, prompt, None, cuts)
        if cuts:
            _overflow.report_cuts(self.name, self._max_tokens, cuts, len(chunk), stacklevel=2, offset=offset)
        return tokens

    def embed_token_ids(self, token_ids: Sequence[npt.NDArray[np.int32]]) -> Any:
        """Embed texts given as token ids, with the model's pooling and normalization.

        Parameters
        ----------
        token_ids : sequence of array_like
            One array of token ids per text, special tokens included: non-empty, each id in
            ``[0, n_vocab)`` and at most :attr:`max_sequence_length` ids.

        Returns
        -------
        numpy.ndarray or list of numpy.ndarray
            ``(len(token_ids), dim)`` float32 vectors; with pooling NONE, one ``(tokens, dim)``
            array per text.

        Raises
        ------
        InvalidInputError
            An array is empty, longer than the limit, or holds an id outside the vocabulary
            (naming the model and the array's index).
        ResourceClosedError
            The model was closed.
        """
        model, _, _ = self._require()
        arrays = check_token_ids(token_ids, model.n_vocab, self._max_tokens, self.name)
        return self._infer(arrays, None, self._norm, _batch.Progress(len(arrays), self.name, False))

    def _infer(
        self,
        tokens: Sequence[npt.NDArray[np.int32]],
        batch_size: int | None,
        norm: Normalization | float,
        progress: _batch.Progress,
        options: Options = PLAIN,
    ) -> Any:
        pooling = self.pooling
        if not options.plain and pooling is PoolingStrategy.NONE:
            raise ConfigurationError(
                f"model {self.name!r}: truncate_dim and precision need one vector per text, not pooling NONE"
            )
        plain_norm = norm if options.plain else Normalization.NONE  # else: cut first, then normalize
        self._tasks.activate(self.context, options.task)  # a no-op while the task stays the same
        result = self._run_batch(tokens, pooling, plain_norm, batch_size, progress)
        if options.plain:
            return result
        return self._finish(result, options, norm)

    def _finish(self, vectors: npt.NDArray[np.float32], options: Options, norm: Normalization | float) -> Any:
        """Pooled vectors cut to the call's ``truncate_dim`` (layer-normed first where the known model says so),
        normalized, then quantized."""
        ln = self._layer_norm_cut
        return _output.finish(vectors, options.truncate_dim, norm, options.precision, self.name, ln)

    def __repr__(self) -> str:
        state = "loaded" if self.is_loaded else "not loaded"
        return f"<EmbeddingModel {self.name!r} {state}>"
