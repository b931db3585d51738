# SPDX-License-Identifier: Apache-2.0
"""EmbeddingEngine: the public facade that serves named embedding models and rerankers from worker threads.

Each request method checks its arguments and prepares one :class:`~embellama._engine.calls.Call`
(``calls``); its sync and async forms differ only in how they wait for it. The models, their
lifetime, admission and the cache live in :class:`~embellama._engine.base.EngineBase`; the worker
threads and dynamic batching in ``worker``; a model's copies and routing in ``replicas``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy.typing as npt

from embellama._compute import prompts as _prompts
from embellama._compute.packing import ProgressCallback
from embellama._compute.pooling import NormalizeSpec
from embellama._engine.base import EngineBase
from embellama._engine.calls import (
    Call,
    check_calibration,
    check_stream,
    embed_call,
    output_call,
    predict_call,
    rerank_call,
    stream,
    stream_tracker,
)
from embellama._engine.worker import CLASSIFIER, EMBEDDING, MULTI_VECTOR, RERANKER, SPARSE
from embellama._exceptions import ConfigurationError

__all__ = ["EmbeddingEngine"]


class EmbeddingEngine(EngineBase):
    """Serve several named embedding models and rerankers; safe to call from any number of threads and from asyncio.

    >>> with EmbeddingEngine([ModelConfig(model_path="minilm.gguf")]) as engine:  # doctest: +SKIP
    ...     engine.embed("hello", model="minilm").shape
    (384,)
    >>> engine = EmbeddingEngine(EngineConfig(workers_per_model=2, cache_size=10_000),  # doctest: +SKIP
    ...                          models=[ModelConfig(model_path="minilm.gguf")])

    Each copy of a model (``EngineConfig.workers_per_model``) is loaded and used by its own
    worker thread; a request goes to the copy with the fewest pending requests. Requests to
    one copy run one after another; copies and models run in parallel. The constructor's
    models load in parallel; if one fails, the others are stopped and the error is raised.
    ``EmbeddingEngine(configs, default_model=...)`` works too.

    A model whose GGUF is a cross-encoder (:func:`embellama._models.kinds.is_reranker`) is served by a
    :class:`Reranker` on each worker: :meth:`rerank` and :meth:`predict` score with it, and
    embedding calls on it raise :class:`ConfigurationError` (as :meth:`rerank` does on an
    embedding model); :meth:`info` says which ``kind`` a model is. A model loaded with ``kind="classifier"``
    is served by a :class:`Classifier` (:meth:`classify`), a sparse or multi-vector model by a
    :class:`SparseEncoder` (:meth:`embed_sparse`) or a :class:`MultiVectorEncoder` (:meth:`embed_multi`); see
    :meth:`load_model` for how the kind is found. Their requests are joined by dynamic batching like embeddings,
    never with requests of another output.

    With ``EngineConfig.max_pending`` set, a request that finds that many requests pending
    waits up to ``submit_timeout`` seconds for room, then raises :class:`EngineBusyError`
    (at once with the default timeout of 0); async calls wait without blocking the loop.

    Dynamic batching: embedding requests that wait for the same copy of a model are joined
    into one packed llama.cpp call, as :meth:`EmbeddingModel.embed_batch` packs a list
    (``EngineConfig.max_batch_texts``, ``max_batch_wait_ms``), so many concurrent one-text
    callers run at batch speed. Each gets its own rows or its own exception; a text's vector
    then equals its ``embed_batch`` vector to float rounding (llama.cpp's output moves in the
    last bits with the texts sharing its call). A request that finds its copy free runs
    alone at once. ``embed_iter``'s chunks, requests with ``batch_size``, ``progress`` or a
    progress bar, and :meth:`submit` always run on their own.

    The cache (``EngineConfig.cache_size``) keeps results bit-identical to uncached ones:
    llama.cpp's vector for a text moves in the last bits with the other texts of its call,
    so by default the cache only stores and serves texts embedded alone (``embed``,
    ``aembed``, one-text batches, when they did not share a call); batches of several texts
    go to the worker whole.
    ``cache_batches=True`` also serves and fills it from such batches (only the misses are
    computed), equal to uncached results to float rounding.

    Parameters
    ----------
    config : EngineConfig, ModelConfig or iterable of ModelConfig, optional
        The engine's settings; for brevity a model's config or a list of them may stand here
        instead, with default settings.
    models : iterable of ModelConfig, optional
        Models to load now (in parallel, each on its own worker threads).
    default_model : str, optional
        The model used when a call names none; default: ``config.default_model``, else the first model.

    Raises
    ------
    ConfigurationError
        Invalid settings, two models of one name, or an unknown ``default_model``.
    ModelNotFoundError, ModelLoadError
        A model could not be loaded (the others are stopped first).
    """

    # -- embeddings --------------------------------------------------------------------

    def embed(
        self,
        text: str,
        *,
        model: str | None = None,
        normalize: NormalizeSpec | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        truncate_dim: int | None = None,
        precision: str | None = None,
        task: str | None = None,
    ) -> npt.NDArray[Any]:
        """Embedding of one text with the named (or default) model (from the cache when it holds it).

        Parameters
        ----------
        text : str
            The text.
        model : str, optional
            The model's name; default: the default model.
        normalize : bool, str or float, optional
            Normalization instead of the model's ``ModelConfig.normalize``.
        prompt_name, prompt, truncate_dim, precision, task
            As for :meth:`EmbeddingModel.embed_batch` (requests of different tasks never share a llama.cpp call).

        Returns
        -------
        numpy.ndarray
            float32, shape ``(dim,)`` (``truncate_dim``, ``precision`` as asked).

        Raises
        ------
        InvalidInputError
            The text is empty, not a str, or too long with ``truncate=False``.
        ConfigurationError, ResourceClosedError, EngineBusyError
            No such model, the engine is closed, or no room for the request.
        EmbeddingError
            llama.cpp failed.
        """
        options = dict(
            prompt_name=prompt_name, prompt=prompt, truncate_dim=truncate_dim, precision=precision, task=task
        )
        call = self._embed_call(model, [text], options, None, normalize, False, None, single=True)
        return call.run(self._admission)  # type: ignore[no-any-return]

    def embed_batch(
        self,
        texts: Sequence[str],
        *,
        model: str | None = None,
        batch_size: int | None = None,
        normalize: NormalizeSpec | None = None,
        show_progress_bar: bool | None = None,
        progress: ProgressCallback | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        truncate_dim: int | None = None,
        precision: str | None = None,
        task: str | None = None,
        overflow: str | None = None,
        chunk_tokens: int | None = None,
        chunk_overlap: int = 0,
    ) -> npt.NDArray[Any]:
        """Embeddings of several texts with the named (or default) model.

        ``progress(done, total)`` is called as texts complete, last with ``(total, total)``;
        it runs on the model's worker thread (on the caller's when the cache held every text).

        Parameters
        ----------
        texts : sequence of str
            The texts; all are checked before any is embedded.
        model : str, optional
            The model's name; default: the default model.
        batch_size, normalize, show_progress_bar, progress, prompt_name, prompt, truncate_dim, precision, task
            As for :meth:`EmbeddingModel.embed_batch`.
        overflow, chunk_tokens, chunk_overlap
            As for :meth:`EmbeddingModel.embed_batch`: what a text over the model's limit gets ("truncate", with a
            :class:`TruncationWarning`; "error"; "chunk").

        Returns
        -------
        numpy.ndarray
            float32 (or ``precision``'s type), shape ``(len(texts), dim)``, in input order.

        Raises
        ------
        InvalidInputError
            A text is invalid (the message gives its index).
        ConfigurationError, ResourceClosedError, EngineBusyError, EmbeddingError
            As for :meth:`embed`.
        """
        options = dict(
            prompt_name=prompt_name, prompt=prompt, truncate_dim=truncate_dim, precision=precision, task=task
        )
        options.update(_overflow_options(overflow, chunk_tokens, chunk_overlap))
        call = self._embed_call(model, texts, options, batch_size, normalize, show_progress_bar, progress)
        return call.run(self._admission)  # type: ignore[no-any-return]

    async def aembed(
        self,
        text: str,
        *,
        model: str | None = None,
        normalize: NormalizeSpec | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        truncate_dim: int | None = None,
        precision: str | None = None,
        task: str | None = None,
    ) -> npt.NDArray[Any]:
        """:meth:`embed` for coroutines: the work runs on the worker; the event loop never blocks.

        Parameters
        ----------
        text, model, normalize, prompt_name, prompt, truncate_dim, precision, task
            As for :meth:`embed`.

        Returns
        -------
        numpy.ndarray
            The vector :meth:`embed` returns; it was computed on the worker thread while the loop ran on.

        Raises
        ------
        InvalidInputError, ConfigurationError, ResourceClosedError, EngineBusyError, EmbeddingError
            As for :meth:`embed`; a cancelled task cancels the request if it has not started.
        """
        options = dict(
            prompt_name=prompt_name, prompt=prompt, truncate_dim=truncate_dim, precision=precision, task=task
        )
        call = self._embed_call(model, [text], options, None, normalize, False, None, single=True)
        return await call.arun(self._admission)  # type: ignore[no-any-return]

    async def aembed_batch(
        self,
        texts: Sequence[str],
        *,
        model: str | None = None,
        batch_size: int | None = None,
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
    ) -> npt.NDArray[Any]:
        """:meth:`embed_batch` for coroutines; ``progress`` runs on the worker thread, not the loop.

        Parameters
        ----------
        texts, model, batch_size, normalize, progress, prompt_name, prompt, truncate_dim, precision, task
            As for :meth:`embed_batch`.
        overflow, chunk_tokens, chunk_overlap
            As for :meth:`embed_batch`.

        Returns
        -------
        numpy.ndarray
            float32, shape ``(len(texts), dim)``.

        Raises
        ------
        InvalidInputError, ConfigurationError, ResourceClosedError, EngineBusyError, EmbeddingError
            As for :meth:`embed_batch`.
        """
        options = dict(
            prompt_name=prompt_name, prompt=prompt, truncate_dim=truncate_dim, precision=precision, task=task
        )
        options.update(_overflow_options(overflow, chunk_tokens, chunk_overlap))
        call = self._embed_call(model, texts, options, batch_size, normalize, False, progress)
        return await call.arun(self._admission)  # type: ignore[no-any-return]

    def embed_iter(
        self,
        texts: Iterable[str],
        *,
        model: str | None = None,
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
    ) -> Iterator[npt.NDArray[Any]]:
        """Embed a stream of texts in chunks: yields one ``(len(chunk), dim)`` array per chunk, in input order.

        ``texts`` is read lazily, ``chunk_size`` texts at a time, and each chunk is a request
        to the model's workers; while the caller handles one chunk, the next ones (one per
        copy of the model, plus one) are computed. Like :meth:`EmbeddingModel.embed_iter`,
        ``progress(done, total)`` gets ``total=None`` while the stream's length is unknown
        and ends with ``(total, total)``; here it runs on the caller's thread, as each chunk
        is yielded. A bad text raises :class:`InvalidInputError` with its index in the whole
        stream. Stopping the iteration early cancels the chunks not yet begun.

        Parameters
        ----------
        texts : iterable of str
            Any iterable, read lazily (a generator over a file's lines, say).
        model : str, optional
            The model's name; default: the default model.
        chunk_size : int, optional
            Texts per chunk (per request and per yielded array).
        batch_size, normalize, show_progress_bar, progress, prompt_name, prompt, truncate_dim, precision, task
            As for :meth:`EmbeddingModel.embed_iter` (which refuses int8/uint8).

        Yields
        ------
        numpy.ndarray
            float32, shape ``(len(chunk), dim)``, chunk after chunk in input order.

        Raises
        ------
        ConfigurationError
            A bad ``chunk_size``, or no such model.
        InvalidInputError
            ``texts`` is a str itself, or a text is invalid (its index in the stream).
        ResourceClosedError, EngineBusyError, EmbeddingError
            As for :meth:`embed`.
        """
        check_stream(texts, chunk_size)
        replicas = self._model(model, EMBEDDING)
        check_calibration(replicas, precision)
        options = dict(
            prompt_name=prompt_name, prompt=prompt, truncate_dim=truncate_dim, precision=precision, task=task
        )

        def prepare(chunk: list[str]) -> Call:  # the stream's own chunks: each is one request, as the caller sized it
            return embed_call(
                replicas, chunk, self._cache, self._config, options, batch_size, normalize, False, join=False
            )

        tracker = stream_tracker(replicas, texts, show_progress_bar, progress)
        return stream(self._admission, replicas, iter(texts), chunk_size, tracker, prepare)

    def encode_query(
        self,
        sentences: str | Sequence[str],
        *,
        model: str | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        **kwargs: Any,
    ) -> npt.NDArray[Any]:
        """:meth:`EmbeddingModel.encode_query` through the engine: the ``query`` prompt unless the call names one.

        Parameters
        ----------
        sentences : str or sequence of str
            One query (gives ``(dim,)``) or several (``(n, dim)``).
        model : str, optional
            The model's name; default: the default model.
        prompt_name, prompt : str, optional
            Another prompt, as for :meth:`EmbeddingModel.encode`.
        **kwargs
            ``normalize``, ``truncate_dim``, ``precision`` (and, for several texts, the other arguments of
            :meth:`embed_batch`).

        Returns
        -------
        numpy.ndarray
            As :meth:`embed` or :meth:`embed_batch` returns.

        Raises
        ------
        InvalidInputError, ConfigurationError, ResourceClosedError, EngineBusyError, EmbeddingError
            As for :meth:`embed_batch`.
        """
        if prompt_name is None and prompt is None and kwargs.get("task") is None and "query" in self._prompts(model):
            prompt_name = "query"
        return self._encode(sentences, model, prompt_name, prompt, kwargs)

    def encode_document(
        self,
        sentences: str | Sequence[str],
        *,
        model: str | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        **kwargs: Any,
    ) -> npt.NDArray[Any]:
        """:meth:`EmbeddingModel.encode_document` through the engine: the first of the ``document``, ``passage``
        and ``corpus`` prompts unless the call names one.

        Parameters
        ----------
        sentences : str or sequence of str
            One document (gives ``(dim,)``) or several (``(n, dim)``).
        model, prompt_name, prompt, **kwargs
            As for :meth:`encode_query`.

        Returns
        -------
        numpy.ndarray
            As :meth:`encode_query` returns.

        Raises
        ------
        InvalidInputError, ConfigurationError, ResourceClosedError, EngineBusyError, EmbeddingError
            As for :meth:`encode_query`.
        """
        if prompt_name is None and prompt is None and kwargs.get("task") is None:
            prompt_name = _prompts.document_prompt_name(self._prompts(model))
        return self._encode(sentences, model, prompt_name, prompt, kwargs)

    def _prompts(self, model: str | None) -> dict[str, str]:
        return self._model(model, EMBEDDING).wait_loaded(None)["prompts"]  # type: ignore[no-any-return]

    def _encode(
        self,
        sentences: str | Sequence[str],
        model: str | None,
        prompt_name: str | None,
        prompt: str | None,
        kwargs: dict[str, Any],
    ) -> npt.NDArray[Any]:
        if isinstance(sentences, str):
            return self.embed(sentences, model=model, prompt_name=prompt_name, prompt=prompt, **kwargs)
        return self.embed_batch(sentences, model=model, prompt_name=prompt_name, prompt=prompt, **kwargs)

    def _embed_call(
        self,
        model: str | None,
        texts: Sequence[str],
        options: dict[str, Any],
        batch_size: int | None,
        normalize: NormalizeSpec | None,
        show_progress_bar: bool | None,
        progress: ProgressCallback | None,
        single: bool = False,
    ) -> Call:
        """The call of an embedding request (``single``: of one text); ``options``: its prompt and output options."""
        replicas = self._model(model, EMBEDDING)
        settings = (batch_size, normalize, show_progress_bar, progress)
        return embed_call(replicas, texts, self._cache, self._config, options, *settings, single=single)

    # -- reranking -----------------------------------------------------------------------

    def predict(
        self,
        pairs: Sequence[tuple[str, str]] | tuple[str, str],
        *,
        model: str | None = None,
        activation: str | None = None,
        batch_size: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> Any:
        """Scores of (query, document) pairs with the named (or default) reranker, in input order.

        The scores are :meth:`Reranker.predict`'s. With several copies of the model
        (``workers_per_model``), a request of valid pairs is split among them (at least 16 pairs a
        copy) and each part packed into llama.cpp calls by length; the scores then equal those of
        one ``Reranker.predict`` call to float rounding (bit-identical with one copy). Scores are
        never cached, and pair requests are not joined by dynamic batching.

        Parameters
        ----------
        pairs : sequence of (str, str), or one (str, str)
            The pairs; all are checked before any is scored.
        model : str, optional
            The reranker's name; default: the default model.
        activation : str, optional
            "sigmoid", "identity" (raw logits) or "softmax" instead of the model's (:attr:`Reranker.activation`).
        batch_size : int, optional
            Most pairs per llama.cpp call; default: as many as fit.
        progress : callable, optional
            ``progress(done, total)`` as pairs complete, last with ``(total, total)``; it runs on the
            model's worker threads (one at a time).

        Returns
        -------
        numpy.ndarray
            float32: shape ``(n,)`` for a one-output head, ``(n, num_labels)`` otherwise; for one pair
            given alone, a float32 scalar (or a ``(num_labels,)`` row).

        Raises
        ------
        InvalidInputError
            ``pairs`` is not a sequence of 2-tuples, or a text is not a str, is empty, or the pair is too
            long with ``truncate=False`` (the message names the model and the pair's index).
        ConfigurationError
            No such model, the model is an embedding model, or a bad ``activation`` or ``batch_size``.
        ResourceClosedError, EngineBusyError, EmbeddingError
            As for :meth:`embed`.
        """
        call = predict_call(self._model(model, RERANKER), pairs, activation, batch_size, progress)
        return call.run(self._admission)

    async def apredict(
        self,
        pairs: Sequence[tuple[str, str]] | tuple[str, str],
        *,
        model: str | None = None,
        activation: str | None = None,
        batch_size: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> Any:
        """:meth:`predict` for coroutines: the work runs on the workers; the event loop never blocks.

        Parameters
        ----------
        pairs, model, activation, batch_size, progress
            As for :meth:`predict`.

        Returns
        -------
        numpy.ndarray
            As :meth:`predict` returns.

        Raises
        ------
        InvalidInputError, ConfigurationError, ResourceClosedError, EngineBusyError, EmbeddingError
            As for :meth:`predict`; a cancelled task cancels the parts of the request not yet begun.
        """
        call = predict_call(self._model(model, RERANKER), pairs, activation, batch_size, progress)
        return await call.arun(self._admission)

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        model: str | None = None,
        top_k: int | None = None,
        return_documents: bool = False,
        activation: str | None = None,
        batch_size: int | None = None,
    ) -> list[dict[str, Any]]:
        """The documents sorted by their score for ``query`` with the named (or default) reranker, best first.

        :meth:`Reranker.rank` through the engine: the scores are :meth:`predict`'s for the pairs
        ``(query, document)``.

        Parameters
        ----------
        query : str
            The query.
        documents : sequence of str
            The candidates (at least one).
        model : str, optional
            The reranker's name; default: the default model.
        top_k : int, optional
            Return only the best ``top_k``; default all.
        return_documents : bool, optional
            Include each document's text under ``"text"``.
        activation, batch_size
            As for :meth:`predict`.

        Returns
        -------
        list of dict
            ``{"corpus_id": index in documents, "score": float}`` (and ``"text"``), by descending score;
            equal scores keep input order.

        Raises
        ------
        InvalidInputError
            ``documents`` is empty or not a sequence, or a text is invalid (the index is the document's).
        ConfigurationError
            No such model, the model is an embedding model or has several outputs per pair, or a bad
            ``top_k``, ``activation`` or ``batch_size``.
        ResourceClosedError, EngineBusyError, EmbeddingError
            As for :meth:`embed`.
        """
        replicas = self._model(model, RERANKER)
        call = rerank_call(replicas, query, documents, top_k, return_documents, activation, batch_size)
        return call.run(self._admission)  # type: ignore[no-any-return]

    async def arerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        model: str | None = None,
        top_k: int | None = None,
        return_documents: bool = False,
        activation: str | None = None,
        batch_size: int | None = None,
    ) -> list[dict[str, Any]]:
        """:meth:`rerank` for coroutines: the work runs on the workers; the event loop never blocks.

        Parameters
        ----------
        query, documents, model, top_k, return_documents, activation, batch_size
            As for :meth:`rerank`.

        Returns
        -------
        list of dict
            As :meth:`rerank` returns.

        Raises
        ------
        InvalidInputError, ConfigurationError, ResourceClosedError, EngineBusyError, EmbeddingError
            As for :meth:`rerank`; a cancelled task cancels the parts of the request not yet begun.
        """
        replicas = self._model(model, RERANKER)
        call = rerank_call(replicas, query, documents, top_k, return_documents, activation, batch_size)
        return await call.arun(self._admission)  # type: ignore[no-any-return]

    # -- sparse, multi-vector and classifier outputs ----------------------------------------------

    def embed_sparse(
        self,
        texts: str | Sequence[str],
        *,
        model: str | None = None,
        is_query: bool = False,
        prompt_name: str | None = None,
        prompt: str | None = None,
        max_active_dims: int | None = None,
    ) -> Any:
        """Sparse vectors of ``texts`` with the named (or default) sparse encoder (:class:`SparseEncoder`).

        Requests of the same settings waiting for one copy of the model share a llama.cpp call (dynamic
        batching); a joined call never mixes sparse, multi-vector, dense or classifier requests.

        Parameters
        ----------
        texts : str or sequence of str
            One text or several; all are checked before any is encoded.
        model : str, optional
            The sparse encoder's name (a model of kind "sparse"); default: the default model.
        is_query : bool, optional
            Encode as queries (:meth:`SparseEncoder.encode_query`: the model's ``query`` prompt when it has one).
        prompt_name, prompt : str, optional
            A prompt of the model's, or a prompt text, before each text.
        max_active_dims : int, optional
            Keep the largest this many weights per vector (default: the encoder's).

        Returns
        -------
        SparseEmbedding or list of SparseEmbedding
            One for a str, a list (in input order) for a sequence.

        Raises
        ------
        InvalidInputError
            A text is empty or not a str (the message names the model and the text's index).
        ConfigurationError
            No such model, or the model is not a sparse encoder (the message names it and its kind).
        ResourceClosedError, EngineBusyError, EmbeddingError
            As for :meth:`embed`.
        """
        return self._output_call(model, SPARSE, texts, _sparse_settings(is_query, prompt_name, prompt,
                                 max_active_dims)).run(self._admission)  # fmt: skip

    async def aembed_sparse(
        self,
        texts: str | Sequence[str],
        *,
        model: str | None = None,
        is_query: bool = False,
        prompt_name: str | None = None,
        prompt: str | None = None,
        max_active_dims: int | None = None,
    ) -> Any:
        """:meth:`embed_sparse` for coroutines: the work runs on the worker; the event loop never blocks.

        Parameters
        ----------
        texts, model, is_query, prompt_name, prompt, max_active_dims
            As for :meth:`embed_sparse`.

        Returns
        -------
        SparseEmbedding or list of SparseEmbedding
            As :meth:`embed_sparse` returns.

        Raises
        ------
        InvalidInputError, ConfigurationError, ResourceClosedError, EngineBusyError, EmbeddingError
            As for :meth:`embed_sparse`; a cancelled task cancels the request if it has not started.
        """
        settings = _sparse_settings(is_query, prompt_name, prompt, max_active_dims)
        return await self._output_call(model, SPARSE, texts, settings).arun(self._admission)

    def embed_multi(
        self,
        texts: str | Sequence[str],
        *,
        model: str | None = None,
        is_query: bool = False,
        prompt_name: str | None = None,
        prompt: str | None = None,
    ) -> Any:
        """ColBERT token vectors of ``texts`` with the named (or default) multi-vector encoder
        (:class:`MultiVectorEncoder`), as documents or as queries.

        Parameters
        ----------
        texts : str or sequence of str
            One text or several.
        model : str, optional
            The encoder's name (a model of kind "multi_vector"); default: the default model.
        is_query : bool, optional
            Encode as queries (the query marker and ``[MASK]`` augmentation where the model has them); default
            documents (the document marker and the punctuation skiplist).
        prompt_name, prompt : str, optional
            A prompt of the model's, or a prompt text, before each text.

        Returns
        -------
        numpy.ndarray or list of numpy.ndarray
            float32 ``(n_tokens, dim)`` for a str, a list of them for a sequence.

        Raises
        ------
        InvalidInputError
            A text is empty or not a str (naming the model and the text's index).
        ConfigurationError
            No such model, or the model is not a multi-vector encoder.
        ResourceClosedError, EngineBusyError, EmbeddingError
            As for :meth:`embed`.
        """
        settings = _multi_settings(is_query, prompt_name, prompt)
        return self._output_call(model, MULTI_VECTOR, texts, settings).run(self._admission)

    async def aembed_multi(
        self,
        texts: str | Sequence[str],
        *,
        model: str | None = None,
        is_query: bool = False,
        prompt_name: str | None = None,
        prompt: str | None = None,
    ) -> Any:
        """:meth:`embed_multi` for coroutines: the work runs on the worker; the event loop never blocks.

        Parameters
        ----------
        texts, model, is_query, prompt_name, prompt
            As for :meth:`embed_multi`.

        Returns
        -------
        numpy.ndarray or list of numpy.ndarray
            As :meth:`embed_multi` returns.

        Raises
        ------
        InvalidInputError, ConfigurationError, ResourceClosedError, EngineBusyError, EmbeddingError
            As for :meth:`embed_multi`; a cancelled task cancels the request if it has not started.
        """
        settings = _multi_settings(is_query, prompt_name, prompt)
        return await self._output_call(model, MULTI_VECTOR, texts, settings).arun(self._admission)

    def classify(
        self,
        texts: str | Sequence[str],
        *,
        model: str | None = None,
        top_k: int | None = None,
        raw: bool = False,
        activation: str | None = None,
    ) -> Any:
        """Label scores of single texts with the named (or default) classifier (:meth:`Classifier.predict`).

        Parameters
        ----------
        texts : str or sequence of str
            One text or several.
        model : str, optional
            The classifier's name (a model loaded with kind "classifier"); default: the default model.
        top_k : int, optional
            Per text, the ``top_k`` best labels as ``{"label", "score"}`` dicts, best first.
        raw : bool, optional
            Logits, without the activation.
        activation : str, optional
            "softmax", "sigmoid" or "identity" instead of the model's.

        Returns
        -------
        numpy.ndarray or list
            float32 ``(len(texts), num_labels)`` (a row for a str); with ``top_k``, a list per text of dicts.

        Raises
        ------
        InvalidInputError
            A text is empty, not a str, or too long with ``truncate=False`` (naming the model and its index).
        ConfigurationError
            No such model, the model is not a classifier, or a bad ``top_k`` or ``activation``.
        ResourceClosedError, EngineBusyError, EmbeddingError
            As for :meth:`embed`.
        """
        settings = _classify_settings(top_k, raw, activation)
        return self._output_call(model, CLASSIFIER, texts, settings).run(self._admission)

    async def aclassify(
        self,
        texts: str | Sequence[str],
        *,
        model: str | None = None,
        top_k: int | None = None,
        raw: bool = False,
        activation: str | None = None,
    ) -> Any:
        """:meth:`classify` for coroutines: the work runs on the worker; the event loop never blocks.

        Parameters
        ----------
        texts, model, top_k, raw, activation
            As for :meth:`classify`.

        Returns
        -------
        numpy.ndarray or list
            As :meth:`classify` returns.

        Raises
        ------
        InvalidInputError, ConfigurationError, ResourceClosedError, EngineBusyError, EmbeddingError
            As for :meth:`classify`; a cancelled task cancels the request if it has not started.
        """
        settings = _classify_settings(top_k, raw, activation)
        return await self._output_call(model, CLASSIFIER, texts, settings).arun(self._admission)

    def _output_call(self, model: str | None, kind: str, texts: Any, settings: dict[str, Any]) -> Call:
        output = {SPARSE: "embed_sparse", MULTI_VECTOR: "embed_multi", CLASSIFIER: "classify"}[kind]
        return output_call(self._model(model, kind), output, texts, settings)


def _flag(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{field} must be a bool, got {value!r}")
    return value


def _sparse_settings(is_query: bool, prompt_name: str | None, prompt: str | None, k: int | None) -> dict[str, Any]:
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ConfigurationError(f"max_active_dims must be a positive int, got {k!r}")
    return {"is_query": _flag(is_query, "is_query"), "prompt_name": prompt_name, "prompt": prompt,
            "max_active_dims": k}  # fmt: skip


def _multi_settings(is_query: bool, prompt_name: str | None, prompt: str | None) -> dict[str, Any]:
    return {"is_query": _flag(is_query, "is_query"), "prompt_name": prompt_name, "prompt": prompt}


def _classify_settings(top_k: int | None, raw: bool, activation: str | None) -> dict[str, Any]:
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ConfigurationError(f"top_k must be a positive int, got {top_k!r}")
    return {"top_k": top_k, "raw": _flag(raw, "raw"), "activation": activation}


def _overflow_options(overflow: str | None, chunk_tokens: int | None, chunk_overlap: int) -> dict[str, Any]:
    """The long-text options a call set (only those: they join the cache and batching keys)."""
    options: dict[str, Any] = {}
    if overflow is not None:
        options["overflow"] = overflow
    if chunk_tokens is not None:
        options["chunk_tokens"] = chunk_tokens
    if chunk_overlap != 0:
        options["chunk_overlap"] = chunk_overlap
    return options
