# SPDX-License-Identifier: Apache-2.0
"""EmbeddingModel's sentence-transformers names: ``encode``, ``encode_query`` and ``encode_document``, over its
``embed`` and ``embed_batch``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, overload

import numpy.typing as npt

from embellama._compute import prompts as _prompts
from embellama._compute.packing import ProgressCallback
from embellama._exceptions import ConfigurationError
from embellama._models.options import encode_options

if TYPE_CHECKING:
    from embellama._compute.pooling import NormalizeSpec

__all__ = ["EncodeMethods"]


class EncodeMethods:
    """``encode``, ``encode_query`` and ``encode_document`` for a class with ``embed``, ``embed_batch``, ``name``
    and ``prompts`` (:class:`EmbeddingModel`)."""

    if TYPE_CHECKING:  # what EmbeddingModel gives these methods

        @property
        def name(self) -> str: ...

        @property
        def prompts(self) -> dict[str, str]: ...

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
        ) -> npt.NDArray[Any]: ...

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
        ) -> Any: ...

    @overload
    def encode(
        self,
        sentences: str,
        batch_size: int | None = ...,
        show_progress_bar: bool | None = ...,
        normalize_embeddings: bool = ...,
        progress: ProgressCallback | None = ...,
        *,
        prompt_name: str | None = ...,
        prompt: str | None = ...,
        precision: str | None = ...,
        truncate_dim: int | None = ...,
        task: str | None = ...,
    ) -> npt.NDArray[Any]: ...

    @overload
    def encode(
        self,
        sentences: Sequence[str],
        batch_size: int | None = ...,
        show_progress_bar: bool | None = ...,
        normalize_embeddings: bool = ...,
        progress: ProgressCallback | None = ...,
        *,
        prompt_name: str | None = ...,
        prompt: str | None = ...,
        precision: str | None = ...,
        truncate_dim: int | None = ...,
        task: str | None = ...,
    ) -> npt.NDArray[Any]: ...

    def encode(
        self,
        sentences: str | Sequence[str],
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
        normalize_embeddings: bool = False,
        progress: ProgressCallback | None = None,
        *,
        prompt_name: str | None = None,
        prompt: str | None = None,
        precision: str | None = None,
        truncate_dim: int | None = None,
        task: str | None = None,
    ) -> npt.NDArray[Any]:
        """sentence-transformers-style ``encode``: a str gives ``(dim,)``, a list ``(n, dim)``.

        As in sentence-transformers, the model's own pipeline decides the output (here
        ``ModelConfig.normalize``, like a Normalize module), and ``normalize_embeddings=True``
        L2-normalizes on top of it. ``prompt_name``/``prompt`` pick the prompt as there (``prompt`` wins; else
        ``default_prompt_name``'s), ``truncate_dim`` cuts before normalizing, ``precision`` quantizes last.

        Parameters
        ----------
        sentences : str or sequence of str
            One text or several.
        batch_size, show_progress_bar, progress
            As for :meth:`embed_batch`.
        normalize_embeddings : bool, optional
            L2-normalize the model's output once more.
        prompt_name, prompt, precision, truncate_dim, task
            As for :meth:`embed_batch`.

        Returns
        -------
        numpy.ndarray
            float32 (or the ``precision``'s type), shape ``(dim,)`` for a str, ``(len(sentences), dim)`` for a sequence.

        Raises
        ------
        ConfigurationError
            ``normalize_embeddings`` is not a bool, the pooling is NONE (no single vector per text), or a bad prompt,
            ``truncate_dim`` or ``precision``.
        InvalidInputError, ModelNotFoundError, ModelLoadError, ThreadAffinityError, EmbeddingError
            As for :meth:`embed_batch`.
        """
        options = encode_options(normalize_embeddings, prompt_name, prompt, truncate_dim, precision, self.name, task)
        if isinstance(sentences, str):
            return self.embed(sentences, **options)
        result = self.embed_batch(
            sentences, batch_size=batch_size, show_progress_bar=show_progress_bar, progress=progress, **options
        )
        if isinstance(result, list):
            raise ConfigurationError(f"model {self.name!r}: encode() needs a pooling other than NONE")
        return result  # type: ignore[no-any-return]

    def encode_query(
        self,
        sentences: str | Sequence[str],
        *,
        prompt_name: str | None = None,
        prompt: str | None = None,
        **kwargs: Any,
    ) -> npt.NDArray[Any]:
        """:meth:`encode` with the model's ``query`` prompt, as sentence-transformers' ``encode_query``.

        With neither ``prompt_name`` nor ``prompt``, the ``query`` prompt is used (an empty one unless the GGUF or
        ``ModelConfig.prompts`` set it; it then overrides ``default_prompt_name``).

        Parameters
        ----------
        sentences : str or sequence of str
            One query or several.
        prompt_name, prompt : str, optional
            As for :meth:`encode`, to use another prompt.
        **kwargs
            The other arguments of :meth:`encode`.

        Returns
        -------
        numpy.ndarray
            As :meth:`encode` returns.

        Raises
        ------
        ConfigurationError, InvalidInputError, ModelNotFoundError, ModelLoadError, ThreadAffinityError, EmbeddingError
            As for :meth:`encode`.
        """
        if prompt_name is None and prompt is None and kwargs.get("task") is None and "query" in self.prompts:
            prompt_name = "query"
        return self.encode(sentences, prompt_name=prompt_name, prompt=prompt, **kwargs)

    def encode_document(
        self,
        sentences: str | Sequence[str],
        *,
        prompt_name: str | None = None,
        prompt: str | None = None,
        **kwargs: Any,
    ) -> npt.NDArray[Any]:
        """:meth:`encode` with the model's document prompt, as sentence-transformers' ``encode_document``.

        With neither ``prompt_name`` nor ``prompt``, the first of the prompts ``document``, ``passage`` and
        ``corpus`` the model has is used (``document`` is always there: empty unless set).

        Parameters
        ----------
        sentences : str or sequence of str
            One document or several.
        prompt_name, prompt : str, optional
            As for :meth:`encode`, to use another prompt.
        **kwargs
            The other arguments of :meth:`encode`.

        Returns
        -------
        numpy.ndarray
            As :meth:`encode` returns.

        Raises
        ------
        ConfigurationError, InvalidInputError, ModelNotFoundError, ModelLoadError, ThreadAffinityError, EmbeddingError
            As for :meth:`encode`.
        """
        if prompt_name is None and prompt is None and kwargs.get("task") is None:  # a task's prompt is its adapter's
            prompt_name = _prompts.document_prompt_name(self.prompts)
        return self.encode(sentences, prompt_name=prompt_name, prompt=prompt, **kwargs)
