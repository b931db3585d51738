# SPDX-License-Identifier: Apache-2.0
"""EmbeddingModel: text in, numpy vectors out."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence, Sized
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

    # -- embedding-specific loading and information ------------------------------------

    def _prepare(self, model: Model, context: Context, max_tokens: int) -> tuple[Prompts, str]:
        prompts = Prompts.read(model, self.config, self._known)
        _output.check_truncate_dim(self.config.truncate_dim, f"model {self.name!r}", model.n_embd)
        return prompts, similarity_fn_name(self.config, model, self._known)

    def _adopt(self, prepared: tuple[Prompts, str]) -> None:
        self._prompts, self._similarity_fn = prepared


    def _choose_pooling(self, model: Model) -> PoolingStrategy:
        return embedding_pooling(self.config, model)

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

    def _tokenize(
        self, model: Model, text: Any, index: int | None, truncate: bool, prompt: str | None = None
    ) -> npt.NDArray[np.int32]:
        return text_tokens(
            model,
            text,
            index,
            truncate=truncate,
            limit=self._max_tokens,
            parse_special=self.config.parse_special,
            name=self.name,
            prompt=prompt,
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
    ) -> npt.NDArray[Any]:
        """Embedding of one text: shape ``(dim,)``, or ``(n_tokens, dim)`` with pooling NONE.

        Parameters
        ----------
        text : str
            The text.
        normalize : bool, str or float, optional
            Normalization instead of ``ModelConfig.normalize`` (the same values).
        prompt_name, prompt, truncate_dim, precision
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
        options = self._options(prompt_name, prompt, truncate_dim, precision)
        assert self._pooling is not None
        if self._pooling.native == "none":  # pooled in numpy, or token vectors: the batch pipeline
            return self._run([text], 0, None, norm, _batch.Progress(1, self.name, False), options)[0]  # type: ignore[no-any-return]
        # One text, one llama.cpp call: the batch pipeline's steps without its packing and bookkeeping.
        ids = self._tokenize(model, text, None, self.config.truncate, options.prompt)
        batch.fill((ids,))
        context.process(batch)
        out = np.empty((1, context.n_embd), dtype=np.float32)
        context.copy_sequence_embeddings(out, _FIRST_ROW)
        if options.plain:
            return _normalize(out, norm)[0]
        return _output.finish(out, options.truncate_dim, norm, options.precision, self.name)[0]  # type: ignore[no-any-return]

    def _options(
        self, prompt_name: str | None, prompt: str | None, truncate_dim: int | None, precision: str | None
    ) -> Options:
        """A call's prompt text, truncate_dim and precision: its own, else the config's (model loaded)."""
        model, _, _ = self._require()
        return self._prompts.options(model, self.config, self._max_tokens, prompt_name, prompt, truncate_dim, precision)

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

        Returns
        -------
        numpy.ndarray or list of numpy.ndarray
            float32, shape ``(len(texts), dim)`` (int8/uint8 with ``precision``, ``ceil(dim / 8)`` columns for the
            binary kinds, ``truncate_dim`` for ``dim``); with pooling NONE one ``(n_tokens_i, dim)`` array per text.

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
        options = self._options(prompt_name, prompt, truncate_dim, precision)
        return self._run(
            texts,
            0,
            batch_size,
            normalize,
            _batch.Progress(len(texts), self.name, show_progress_bar, progress),
            options,
        )

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
        batch_size, normalize, show_progress_bar, progress, prompt_name, prompt, truncate_dim, precision
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
        options = self._options(prompt_name, prompt, truncate_dim, precision)
        check_streamable(options, self.name)
        tracker = _batch.Progress(total, self.name, show_progress_bar, progress)
        finished = False
        try:
            # While a GPU computes, chunk k+1 is tokenized on a second thread as chunk k runs. On the CPU the
            # overlap measured 0.91-1.02x (benchmarks/bench_pipeline.py): one thread does both.
            yield from stream_chunks(
                iter(texts),
                chunk_size,
                lambda chunk, offset: self._tokens(chunk, offset, 1, options.prompt),
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
    ) -> Any:
        """Check, tokenize and embed ``texts`` (indices in errors count from ``offset``)."""
        self._require()
        self._check_batch_size(batch_size)
        norm = self._norm if normalize is None else parse_normalization(normalize)
        tokens = self._tokens(texts, offset, self._tokenize_threads, options.prompt)
        result = self._infer(tokens, batch_size, norm, progress, options)
        progress.close()
        return result

    def _tokens(
        self, texts: Sequence[Any], offset: int, threads: int, prompt: str | None = None
    ) -> list[npt.NDArray[np.int32]]:
        """Every text checked and tokenized; reads only the vocabulary, so any thread may call it."""
        model, truncate = self._model, self.config.truncate
        if model is None:
            raise ResourceClosedError(f"model {self.name!r} was unloaded")
        return _batch.tokenize_all(
            texts, lambda text, i: self._tokenize(model, text, offset + i, truncate, prompt), threads
        )

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
        result = self._run_batch(tokens, pooling, plain_norm, batch_size, progress)
        if options.plain:
            return result
        return _output.finish(result, options.truncate_dim, norm, options.precision, self.name)

    def __repr__(self) -> str:
        state = "loaded" if self.is_loaded else "not loaded"
        return f"<EmbeddingModel {self.name!r} {state}>"
