# SPDX-License-Identifier: Apache-2.0
"""LangChain: embellama as an ``Embeddings`` (queries and documents with their prompts) and a reranker as a
``BaseDocumentCompressor``. Needs the ``langchain`` extra (langchain-core)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from embellama._engine import EmbeddingEngine
from embellama._exceptions import ConfigurationError
from embellama.integrations._shared import DOCUMENT, EMBEDDING, QUERY, RERANKER, Backend, ModelSource, missing_extra

try:
    from langchain_core.callbacks import Callbacks
    from langchain_core.documents import BaseDocumentCompressor, Document
    from langchain_core.embeddings import Embeddings
    from pydantic import ConfigDict, PrivateAttr
except ImportError as exc:  # pragma: no cover - the extra is installed wherever the tests run
    raise missing_extra("langchain", "langchain-core", "embellama.integrations.langchain") from exc

__all__ = ["EmbellamaEmbeddings", "EmbellamaReranker"]


class EmbellamaEmbeddings(Embeddings):
    """LangChain ``Embeddings`` over an embellama model: documents get the model's document prompt, queries its
    query prompt (``encode_document`` and ``encode_query``'s rules), vectors as the model's config gives them
    (L2-normalized by default).

    >>> embeddings = EmbellamaEmbeddings("minilm.gguf")  # doctest: +SKIP
    >>> store = InMemoryVectorStore.from_texts(texts, embeddings)  # doctest: +SKIP

    The sync methods and the async ones (``aembed_documents``, ``aembed_query``, which never block the event loop)
    run on an :class:`EmbeddingEngine`: its own, started on first use, or a running one given as ``engine``.

    Parameters
    ----------
    model : str, os.PathLike or ModelConfig, optional
        A GGUF embedding model's path, an ``hf://`` reference, or a ModelConfig.
    engine : EmbeddingEngine, optional
        A running engine to share instead of ``model``.
    model_name : str, optional
        With ``engine``: which of its models (default: its default model); with ``model``: the model's name.
    model_kwargs : mapping, optional
        More ModelConfig fields for ``model`` (``n_threads``, ``prompts``, ``truncate_dim``, ...).
    batch_size : int, optional
        Most texts per llama.cpp call for ``embed_documents``; default: as many as fit.

    Raises
    ------
    ConfigurationError
        Both or neither of ``model`` and ``engine``, an engine without that model, a model that is a reranker,
        or a bad ``model_kwargs``.
    """

    def __init__(
        self,
        model: ModelSource | None = None,
        *,
        engine: EmbeddingEngine | None = None,
        model_name: str | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        batch_size: int | None = None,
    ) -> None:
        self._backend = Backend(
            model,
            engine=engine,
            model_name=model_name,
            model_kwargs=model_kwargs,
            kind=EMBEDDING,
            who=type(self).__name__,
        )
        self.batch_size = batch_size

    @property
    def model_name(self) -> str:
        """The model's name in its engine."""
        return self._backend.name

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Vectors of documents, with the model's document prompt.

        Parameters
        ----------
        texts : list of str
            The documents.

        Returns
        -------
        list of list of float
            One vector per document, in order.

        Raises
        ------
        InvalidInputError
            A text is empty, not a str, or too long with ``truncate=False`` (the message gives its index).
        """
        return self._backend.embed(texts, DOCUMENT, batch_size=self.batch_size).tolist()  # type: ignore[no-any-return]

    def embed_query(self, text: str) -> list[float]:
        """The vector of a query, with the model's query prompt.

        Parameters
        ----------
        text : str
            The query.

        Returns
        -------
        list of float
            Its vector.
        """
        return self._backend.embed_one(text, QUERY).tolist()  # type: ignore[no-any-return]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """:meth:`embed_documents` through the engine's async calls."""
        vectors = await self._backend.aembed(texts, DOCUMENT, batch_size=self.batch_size)
        return vectors.tolist()  # type: ignore[no-any-return]

    async def aembed_query(self, text: str) -> list[float]:
        """:meth:`embed_query` through the engine's async calls."""
        return (await self._backend.aembed_one(text, QUERY)).tolist()  # type: ignore[no-any-return]

    def close(self) -> None:
        """Stop the engine of this object's own (a shared engine is left running)."""
        self._backend.close()

    def __enter__(self) -> EmbellamaEmbeddings:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return repr(self._backend)


class EmbellamaReranker(BaseDocumentCompressor):
    """LangChain ``BaseDocumentCompressor`` that reorders documents by a cross-encoder's score for the query
    (:meth:`Reranker.rank` through an :class:`EmbeddingEngine`), best first, keeping the best ``top_n``.

    Each returned document is a copy with ``metadata["relevance_score"]`` set. Use it in a
    ``ContextualCompressionRetriever``, or call :meth:`compress_documents` directly.

    Parameters
    ----------
    model : str, os.PathLike or ModelConfig, optional
        A reranker GGUF's path, an ``hf://`` reference, or a ModelConfig.
    engine : EmbeddingEngine, optional
        A running engine to share instead of ``model``.
    model_name : str, optional
        With ``engine``: which of its rerankers (default: its default model); with ``model``: its name.
    model_kwargs : mapping, optional
        More ModelConfig fields for ``model``.
    top_n : int or None, optional
        How many documents to keep (default 3); None keeps them all, reordered.

    Raises
    ------
    ConfigurationError
        As for :class:`EmbellamaEmbeddings`, or a model that is not a reranker, or a bad ``top_n``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    top_n: int | None = 3
    _backend: Backend = PrivateAttr()

    def __init__(
        self,
        model: ModelSource | None = None,
        *,
        engine: EmbeddingEngine | None = None,
        model_name: str | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        top_n: int | None = 3,
    ) -> None:
        if top_n is not None and (not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 1):
            raise ConfigurationError(f"EmbellamaReranker: top_n must be a positive int or None, got {top_n!r}")
        super().__init__()
        self.top_n = top_n
        self._backend = Backend(
            model,
            engine=engine,
            model_name=model_name,
            model_kwargs=model_kwargs,
            kind=RERANKER,
            who="EmbellamaReranker",
        )

    @property
    def model_name(self) -> str:
        """The reranker's name in its engine."""
        return self._backend.name

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """The best ``top_n`` documents for ``query``, best first, each with ``metadata["relevance_score"]``.

        Parameters
        ----------
        documents : sequence of Document
            The candidates (none gives none).
        query : str
            The query.
        callbacks : optional
            Unused (LangChain's signature).

        Returns
        -------
        list of Document
            Copies of the chosen documents, by descending score.

        Raises
        ------
        InvalidInputError
            The query or a document's text is empty (the message gives the document's index).
        """
        ranked = self._backend.rerank(query, [d.page_content for d in documents], self.top_n)
        return _scored(documents, ranked)

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """:meth:`compress_documents` through the engine's async calls."""
        ranked = await self._backend.arerank(query, [d.page_content for d in documents], self.top_n)
        return _scored(documents, ranked)

    def close(self) -> None:
        """Stop the engine of this object's own (a shared engine is left running)."""
        self._backend.close()


def _scored(documents: Sequence[Document], ranked: list[dict[str, Any]]) -> list[Document]:
    out = []
    for row in ranked:
        doc = documents[row["corpus_id"]]
        out.append(doc.model_copy(update={"metadata": {**doc.metadata, "relevance_score": row["score"]}}))
    return out
