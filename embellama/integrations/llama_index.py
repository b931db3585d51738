# SPDX-License-Identifier: Apache-2.0
"""LlamaIndex: embellama as a ``BaseEmbedding`` (queries and texts with their prompts, sync and async) and a
reranker as a node postprocessor. Needs the ``llama-index`` extra (llama-index-core)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from embellama._engine import EmbeddingEngine
from embellama._exceptions import ConfigurationError, InvalidInputError
from embellama.integrations._shared import DOCUMENT, EMBEDDING, QUERY, RERANKER, Backend, ModelSource, missing_extra

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.bridge.pydantic import PrivateAttr
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
except ImportError as exc:  # pragma: no cover - the extra is installed wherever the tests run
    raise missing_extra("llama-index", "llama-index-core", "embellama.integrations.llama_index") from exc

__all__ = ["EmbellamaEmbedding", "EmbellamaRerank"]


def _backend(
    model: ModelSource | None,
    engine: EmbeddingEngine | None,
    model_name: str | None,
    model_kwargs: Mapping[str, Any] | None,
    kind: str,
    who: str,
) -> Backend:
    return Backend(model, engine=engine, model_name=model_name, model_kwargs=model_kwargs, kind=kind, who=who)


class EmbellamaEmbedding(BaseEmbedding):
    """LlamaIndex ``BaseEmbedding`` over an embellama model: queries get the model's query prompt, texts (nodes)
    its document prompt (``encode_query`` and ``encode_document``'s rules).

    >>> Settings.embed_model = EmbellamaEmbedding("minilm.gguf")  # doctest: +SKIP
    >>> index = VectorStoreIndex(nodes)  # doctest: +SKIP

    Sync and async calls run on an :class:`EmbeddingEngine` (the async ones through its async calls, never
    blocking the event loop): its own, started on first use, or a running one given as ``engine``.

    Parameters
    ----------
    model : str, os.PathLike or ModelConfig, optional
        A GGUF embedding model's path, an ``hf://`` reference, or a ModelConfig.
    engine : EmbeddingEngine, optional
        A running engine to share instead of ``model``.
    model_name : str, optional
        With ``engine``: which of its models (default: its default model); with ``model``: the model's name.
    model_kwargs : mapping, optional
        More ModelConfig fields for ``model`` (``n_threads``, ``prompts``, ...).
    embed_batch_size : int, optional
        Texts LlamaIndex hands over per call (default 256); embellama packs each call's texts itself.
    **kwargs
        Other ``BaseEmbedding`` fields (``callback_manager``, ...).

    Raises
    ------
    ConfigurationError
        Both or neither of ``model`` and ``engine``, an engine without that model, a model that is a reranker,
        or a bad ``model_kwargs``.
    """

    _backend: Backend = PrivateAttr()

    def __init__(
        self,
        model: ModelSource | None = None,
        *,
        engine: EmbeddingEngine | None = None,
        model_name: str | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        embed_batch_size: int = 256,
        **kwargs: Any,
    ) -> None:
        backend = _backend(model, engine, model_name, model_kwargs, EMBEDDING, "EmbellamaEmbedding")
        super().__init__(model_name=backend.name, embed_batch_size=embed_batch_size, **kwargs)
        self._backend = backend

    @classmethod
    def class_name(cls) -> str:
        return "EmbellamaEmbedding"

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._backend.embed_one(query, QUERY).tolist()  # type: ignore[no-any-return]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return (await self._backend.aembed_one(query, QUERY)).tolist()  # type: ignore[no-any-return]

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._backend.embed_one(text, DOCUMENT).tolist()  # type: ignore[no-any-return]

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return (await self._backend.aembed_one(text, DOCUMENT)).tolist()  # type: ignore[no-any-return]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._backend.embed(texts, DOCUMENT).tolist()  # type: ignore[no-any-return]

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return (await self._backend.aembed(texts, DOCUMENT)).tolist()  # type: ignore[no-any-return]

    def close(self) -> None:
        """Stop the engine of this object's own (a shared engine is left running)."""
        self._backend.close()


class EmbellamaRerank(BaseNodePostprocessor):
    """LlamaIndex node postprocessor that reorders nodes by a cross-encoder's score for the query
    (:meth:`Reranker.rank` through an :class:`EmbeddingEngine`), best first, keeping the best ``top_n``.

    Each returned node carries the reranker's score as its ``score``. Use it as a query engine's
    ``node_postprocessors=[...]``, or call ``postprocess_nodes(nodes, query_str=...)``.

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
        How many nodes to keep (default 2, as LlamaIndex's rerankers); None keeps them all, reordered.

    Raises
    ------
    ConfigurationError
        As for :class:`EmbellamaEmbedding`, or a model that is not a reranker, or a bad ``top_n``.
    """

    top_n: int | None = 2
    _backend: Backend = PrivateAttr()

    def __init__(
        self,
        model: ModelSource | None = None,
        *,
        engine: EmbeddingEngine | None = None,
        model_name: str | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        top_n: int | None = 2,
        **kwargs: Any,
    ) -> None:
        if top_n is not None and (not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 1):
            raise ConfigurationError(f"EmbellamaRerank: top_n must be a positive int or None, got {top_n!r}")
        backend = _backend(model, engine, model_name, model_kwargs, RERANKER, "EmbellamaRerank")
        super().__init__(**kwargs)
        self.top_n = top_n
        self._backend = backend

    @classmethod
    def class_name(cls) -> str:
        return "EmbellamaRerank"

    def _texts(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None) -> tuple[str, list[str]]:
        if query_bundle is None:
            raise InvalidInputError(f"EmbellamaRerank (model {self._backend.name!r}): no query to rerank by")
        return query_bundle.query_str, [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query, texts = self._texts(nodes, query_bundle)
        return _scored(nodes, self._backend.rerank(query, texts, self.top_n))

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query, texts = self._texts(nodes, query_bundle)
        return _scored(nodes, await self._backend.arerank(query, texts, self.top_n))

    def close(self) -> None:
        """Stop the engine of this object's own (a shared engine is left running)."""
        self._backend.close()


def _scored(nodes: list[NodeWithScore], ranked: list[dict[str, Any]]) -> list[NodeWithScore]:
    return [NodeWithScore(node=nodes[row["corpus_id"]].node, score=row["score"]) for row in ranked]
