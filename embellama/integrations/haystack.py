# SPDX-License-Identifier: Apache-2.0
"""Haystack: ``EmbellamaTextEmbedder``, ``EmbellamaDocumentEmbedder`` and ``EmbellamaRanker`` components, which
serialize with ``to_dict``/``from_dict``. Needs the ``haystack`` extra (haystack-ai)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from embellama._engine import EmbeddingEngine
from embellama._exceptions import ConfigurationError
from embellama.integrations._shared import DOCUMENT, EMBEDDING, QUERY, RERANKER, Backend, ModelSource, missing_extra

try:
    from haystack import Document, component, default_from_dict, default_to_dict
except ImportError as exc:  # pragma: no cover - the extra is installed wherever the tests run
    raise missing_extra("haystack", "haystack-ai", "embellama.integrations.haystack") from exc

__all__ = ["EmbellamaDocumentEmbedder", "EmbellamaRanker", "EmbellamaTextEmbedder"]


class _Component:
    """What the three components share: the model (loaded by ``warm_up`` or the first run), serialization."""

    _kind = EMBEDDING

    def __init__(
        self,
        model: ModelSource | None,
        engine: EmbeddingEngine | None,
        model_name: str | None,
        model_kwargs: Mapping[str, Any] | None,
    ) -> None:
        who = type(self).__name__
        self._backend = Backend(
            model, engine=engine, model_name=model_name, model_kwargs=model_kwargs, kind=self._kind, who=who
        )

    def warm_up(self) -> None:
        """Load the model (an engine of the component's own), if not yet."""
        _ = self._backend.engine

    def close(self) -> None:
        """Stop the engine of the component's own (a shared engine is left running)."""
        self._backend.close()

    def _params(self) -> dict[str, Any]:
        return {}

    def to_dict(self) -> dict[str, Any]:
        """The component as a dict: its model's path (or ``hf://`` reference), name and settings, and its options.

        A component built on a shared ``engine`` serializes its model's file and settings: :meth:`from_dict` then
        gives one that loads the model into an engine of its own.
        """
        return default_to_dict(self, **self._backend.settings(), **self._params())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """The component :meth:`to_dict` described (the model loads at ``warm_up`` or the first run)."""
        return default_from_dict(cls, data)


def _check_int(value: object, name: str, who: str, *, none: bool = False) -> None:
    if none and value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigurationError(f"{who}: {name} must be a positive int{' or None' if none else ''}, got {value!r}")


@component
class EmbellamaTextEmbedder(_Component):
    """Embeds a query (a string) with the model's query prompt, for an embedding retriever.

    Parameters
    ----------
    model : str, os.PathLike or ModelConfig, optional
        A GGUF embedding model's path, an ``hf://`` reference, or a ModelConfig.
    engine : EmbeddingEngine, optional
        A running engine to share instead of ``model``.
    model_name : str, optional
        With ``engine``: which of its models (default: its default model); with ``model``: the model's name.
    model_kwargs : dict, optional
        More ModelConfig fields for ``model`` (JSON values, as ``to_dict`` writes them).
    prefix, suffix : str, optional
        Text put before and after the query, besides the model's query prompt.

    Raises
    ------
    ConfigurationError
        Both or neither of ``model`` and ``engine``, an engine without that model, a reranker, or a bad
        ``model_kwargs``.
    """

    def __init__(
        self,
        model: ModelSource | None = None,
        *,
        engine: EmbeddingEngine | None = None,
        model_name: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
        prefix: str = "",
        suffix: str = "",
    ) -> None:
        _Component.__init__(self, model, engine, model_name, model_kwargs)
        self.prefix = prefix
        self.suffix = suffix

    def _params(self) -> dict[str, Any]:
        return {"prefix": self.prefix, "suffix": self.suffix}

    def _check(self, text: object) -> str:
        if not isinstance(text, str):
            raise TypeError(
                f"{type(self).__name__} embeds one string; for a list of Documents use EmbellamaDocumentEmbedder"
            )
        return self.prefix + text + self.suffix

    @component.output_types(embedding=list[float], meta=dict[str, Any])
    def run(self, text: str) -> dict[str, Any]:
        """The query's vector.

        Parameters
        ----------
        text : str
            The query.

        Returns
        -------
        dict
            ``embedding`` (list of float) and ``meta`` (``{"model": name}``).

        Raises
        ------
        TypeError
            ``text`` is not a str.
        InvalidInputError
            The text is empty, or too long with ``truncate=False``.
        """
        vector = self._backend.embed_one(self._check(text), QUERY)
        return {"embedding": vector.tolist(), "meta": {"model": self._backend.name}}

    @component.output_types(embedding=list[float], meta=dict[str, Any])
    async def run_async(self, text: str) -> dict[str, Any]:
        """:meth:`run` through the engine's async calls."""
        vector = await self._backend.aembed_one(self._check(text), QUERY)
        return {"embedding": vector.tolist(), "meta": {"model": self._backend.name}}


@component
class EmbellamaDocumentEmbedder(_Component):
    """Embeds Documents with the model's document prompt: each gets its ``embedding`` (the input is not changed).

    The text embedded is ``prefix + separator.join(meta values of meta_fields_to_embed, content) + suffix``,
    as Haystack's own document embedders make it.

    Parameters
    ----------
    model, engine, model_name, model_kwargs
        As for :class:`EmbellamaTextEmbedder`.
    prefix, suffix : str, optional
        Text put before and after each document's text, besides the model's document prompt.
    batch_size : int, optional
        Most texts per llama.cpp call (default 32).
    progress_bar : bool, optional
        Draw a progress bar (tqdm) while embedding (default True).
    meta_fields_to_embed : list of str, optional
        Meta fields whose values are embedded before the content (missing and None ones are left out).
    embedding_separator : str, optional
        What joins them (default a newline).

    Raises
    ------
    ConfigurationError
        As for :class:`EmbellamaTextEmbedder`, or a bad ``batch_size``.
    """

    def __init__(
        self,
        model: ModelSource | None = None,
        *,
        engine: EmbeddingEngine | None = None,
        model_name: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
        prefix: str = "",
        suffix: str = "",
        batch_size: int = 32,
        progress_bar: bool = True,
        meta_fields_to_embed: list[str] | None = None,
        embedding_separator: str = "\n",
    ) -> None:
        _Component.__init__(self, model, engine, model_name, model_kwargs)
        _check_int(batch_size, "batch_size", type(self).__name__)
        self.prefix = prefix
        self.suffix = suffix
        self.batch_size = batch_size
        self.progress_bar = progress_bar
        self.meta_fields_to_embed = list(meta_fields_to_embed or [])
        self.embedding_separator = embedding_separator

    def _params(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "suffix": self.suffix,
            "batch_size": self.batch_size,
            "progress_bar": self.progress_bar,
            "meta_fields_to_embed": self.meta_fields_to_embed,
            "embedding_separator": self.embedding_separator,
        }

    def _texts(self, documents: object) -> list[str]:
        if not isinstance(documents, list) or not all(isinstance(d, Document) for d in documents):
            raise TypeError(
                f"{type(self).__name__} embeds a list of Documents; for one string use EmbellamaTextEmbedder"
            )
        texts = []
        for doc in documents:
            meta = [str(doc.meta[key]) for key in self.meta_fields_to_embed if doc.meta.get(key) is not None]
            texts.append(self.prefix + self.embedding_separator.join([*meta, doc.content or ""]) + self.suffix)
        return texts

    def _result(self, documents: list[Document], vectors: Any) -> dict[str, Any]:
        rows = vectors.tolist()
        out = [dataclasses.replace(doc, embedding=row) for doc, row in zip(documents, rows, strict=True)]
        return {"documents": out, "meta": {"model": self._backend.name}}

    @component.output_types(documents=list[Document], meta=dict[str, Any])
    def run(self, documents: list[Document]) -> dict[str, Any]:
        """The documents, each a copy with its ``embedding``.

        Parameters
        ----------
        documents : list of Document
            The documents.

        Returns
        -------
        dict
            ``documents`` (in order) and ``meta`` (``{"model": name}``).

        Raises
        ------
        TypeError
            ``documents`` is not a list of Documents.
        InvalidInputError
            A document's text is empty (the message gives its index).
        """
        texts = self._texts(documents)
        vectors = self._backend.embed(texts, DOCUMENT, batch_size=self.batch_size, progress_bar=self.progress_bar)
        return self._result(documents, vectors)

    @component.output_types(documents=list[Document], meta=dict[str, Any])
    async def run_async(self, documents: list[Document]) -> dict[str, Any]:
        """:meth:`run` through the engine's async calls (no progress bar)."""
        texts = self._texts(documents)
        return self._result(documents, await self._backend.aembed(texts, DOCUMENT, batch_size=self.batch_size))


@component
class EmbellamaRanker(_Component):
    """Ranks Documents by a cross-encoder's score for the query (:meth:`Reranker.rank`), best first.

    Each returned document is a copy with its ``score`` set to the reranker's.

    Parameters
    ----------
    model : str, os.PathLike or ModelConfig, optional
        A reranker GGUF's path, an ``hf://`` reference, or a ModelConfig.
    engine, model_name, model_kwargs
        As for :class:`EmbellamaTextEmbedder` (the model must be a reranker).
    top_k : int, optional
        How many documents to return (default 10).
    meta_fields_to_embed : list of str, optional
        Meta fields whose values are put before the content in the pair's document.
    embedding_separator : str, optional
        What joins them (default a newline).
    score_threshold : float, optional
        Drop documents scoring below it.

    Raises
    ------
    ConfigurationError
        As for :class:`EmbellamaTextEmbedder`, a model that is not a reranker, or a bad ``top_k``.
    """

    _kind = RERANKER

    def __init__(
        self,
        model: ModelSource | None = None,
        *,
        engine: EmbeddingEngine | None = None,
        model_name: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
        top_k: int = 10,
        meta_fields_to_embed: list[str] | None = None,
        embedding_separator: str = "\n",
        score_threshold: float | None = None,
    ) -> None:
        _Component.__init__(self, model, engine, model_name, model_kwargs)
        _check_int(top_k, "top_k", type(self).__name__)
        self.top_k = top_k
        self.meta_fields_to_embed = list(meta_fields_to_embed or [])
        self.embedding_separator = embedding_separator
        self.score_threshold = score_threshold

    def _params(self) -> dict[str, Any]:
        return {
            "top_k": self.top_k,
            "meta_fields_to_embed": self.meta_fields_to_embed,
            "embedding_separator": self.embedding_separator,
            "score_threshold": self.score_threshold,
        }

    def _prepare(self, documents: list[Document], top_k: int | None) -> tuple[list[str], int]:
        top_k = self.top_k if top_k is None else top_k
        _check_int(top_k, "top_k", type(self).__name__)
        texts = []
        for doc in documents:
            meta = [str(doc.meta[key]) for key in self.meta_fields_to_embed if doc.meta.get(key) is not None]
            texts.append(self.embedding_separator.join([*meta, doc.content or ""]))
        return texts, top_k

    def _result(
        self, documents: list[Document], ranked: list[dict[str, Any]], score_threshold: float | None
    ) -> dict[str, Any]:
        threshold = self.score_threshold if score_threshold is None else score_threshold
        out = [dataclasses.replace(documents[row["corpus_id"]], score=row["score"]) for row in ranked]
        if threshold is not None:
            out = [doc for doc in out if doc.score is not None and doc.score >= threshold]
        return {"documents": out}

    @component.output_types(documents=list[Document])
    def run(
        self, query: str, documents: list[Document], top_k: int | None = None, score_threshold: float | None = None
    ) -> dict[str, Any]:
        """The best ``top_k`` documents for ``query``, best first, each a copy with its ``score``.

        Parameters
        ----------
        query : str
            The query.
        documents : list of Document
            The candidates (none gives none).
        top_k : int, optional
            Instead of the component's ``top_k``.
        score_threshold : float, optional
            Instead of the component's ``score_threshold``.

        Returns
        -------
        dict
            ``documents``.

        Raises
        ------
        InvalidInputError
            The query or a document's text is empty (the message gives the document's index).
        """
        texts, k = self._prepare(documents, top_k)
        return self._result(documents, self._backend.rerank(query, texts, k), score_threshold)

    @component.output_types(documents=list[Document])
    async def run_async(
        self, query: str, documents: list[Document], top_k: int | None = None, score_threshold: float | None = None
    ) -> dict[str, Any]:
        """:meth:`run` through the engine's async calls."""
        texts, k = self._prepare(documents, top_k)
        return self._result(documents, await self._backend.arerank(query, texts, k), score_threshold)
