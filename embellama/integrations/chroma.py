# SPDX-License-Identifier: Apache-2.0
"""Chroma: embellama as an ``EmbeddingFunction`` that survives Chroma's persistence (``name``, ``get_config``,
``build_from_config``; registered with Chroma when this module is imported). Needs the ``chroma`` extra."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from embellama._engine import EmbeddingEngine
from embellama._exceptions import ConfigurationError
from embellama.integrations._shared import DOCUMENT, EMBEDDING, QUERY, Backend, ModelSource, missing_extra

try:
    from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
    from chromadb.utils.embedding_functions import register_embedding_function
except ImportError as exc:  # pragma: no cover - the extra is installed wherever the tests run
    raise missing_extra("chroma", "chromadb", "embellama.integrations.chroma") from exc

__all__ = ["EmbellamaEmbeddingFunction"]

NAME = "embellama"


@register_embedding_function
class EmbellamaEmbeddingFunction(EmbeddingFunction[Documents]):
    """Chroma ``EmbeddingFunction`` over an embellama model: documents get the model's document prompt, query texts
    its query prompt (Chroma calls ``embed_query`` for ``query_texts``).

    >>> ef = EmbellamaEmbeddingFunction("minilm.gguf")  # doctest: +SKIP
    >>> collection = client.create_collection("docs", embedding_function=ef)  # doctest: +SKIP

    Chroma stores :meth:`get_config` with the collection (the model's path or ``hf://`` reference, its name and
    settings); once this module is imported, ``client.get_collection("docs")`` in a later process rebuilds the
    function by :meth:`build_from_config`, which loads the model on first use. A function on a shared ``engine``
    stores its model's file and settings, so a reopened collection loads the model into an engine of its own.
    The default space is cosine.

    Parameters
    ----------
    model : str, os.PathLike or ModelConfig, optional
        A GGUF embedding model's path, an ``hf://`` reference, or a ModelConfig.
    engine : EmbeddingEngine, optional
        A running engine to share instead of ``model``.
    model_name : str, optional
        With ``engine``: which of its models (default: its default model); with ``model``: the model's name.
    model_kwargs : mapping, optional
        More ModelConfig fields for ``model`` (JSON values, as :meth:`get_config` writes them).

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
        model_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self._backend = Backend(
            model,
            engine=engine,
            model_name=model_name,
            model_kwargs=model_kwargs,
            kind=EMBEDDING,
            who=type(self).__name__,
        )

    def __call__(self, input: Documents) -> Embeddings:
        """The documents' vectors (float32 arrays), with the model's document prompt.

        Raises
        ------
        InvalidInputError
            A text is empty or not a str (the message gives its index).
        """
        return list(self._backend.embed(input, DOCUMENT))

    def embed_query(self, input: Documents) -> Embeddings:
        """The query texts' vectors, with the model's query prompt."""
        return list(self._backend.embed(input, QUERY))

    @staticmethod
    def name() -> str:
        """The name Chroma stores with the collection and finds this class by: ``"embellama"``."""
        return NAME

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        return ["cosine", "l2", "ip"]

    def get_config(self) -> dict[str, Any]:
        """``model`` (a path or ``hf://`` reference), ``model_name`` and ``model_kwargs`` (JSON)."""
        return self._backend.settings()

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> EmbellamaEmbeddingFunction:
        """The function :meth:`get_config` described; its model loads on first use.

        Raises
        ------
        ConfigurationError
            The config lacks ``model`` or has other keys than :meth:`get_config` writes.
        """
        EmbellamaEmbeddingFunction.validate_config(config)
        return EmbellamaEmbeddingFunction(
            config["model"], model_name=config.get("model_name"), model_kwargs=config.get("model_kwargs")
        )

    @staticmethod
    def validate_config(config: dict[str, Any]) -> None:
        """Check a stored config: a ``model`` string, and only the keys :meth:`get_config` writes."""
        if not isinstance(config, dict) or not isinstance(config.get("model"), str):
            raise ConfigurationError(f"an embellama embedding function's config needs a model path, got {config!r}")
        extra = sorted(set(config) - {"model", "model_name", "model_kwargs"})
        if extra:
            raise ConfigurationError(f"an embellama embedding function's config has unknown keys {extra}")

    def validate_config_update(self, old_config: dict[str, Any], new_config: dict[str, Any]) -> None:
        """A collection's vectors belong to its model: an update may not name another model or change its output."""
        if old_config != new_config:
            raise ConfigurationError(
                f"the collection's vectors were made by {old_config.get('model_name')!r} with {old_config}; "
                f"an embedding function with {new_config} would not match them"
            )

    def close(self) -> None:
        """Stop the engine of this function's own (a shared engine is left running)."""
        self._backend.close()

    def __repr__(self) -> str:
        return repr(self._backend)
