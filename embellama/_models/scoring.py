# SPDX-License-Identifier: Apache-2.0
"""EmbeddingModel's similarity methods (a mixin): ``similarity``, ``similarity_pairwise`` and
``similarity_fn_name``, as sentence-transformers' ``SentenceTransformer`` has them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from embellama._compute import similarity as _similarity
from embellama._config import ModelConfig

__all__ = ["SimilarityMethods"]


class SimilarityMethods:
    """``similarity`` and ``similarity_pairwise`` with the model's similarity function.

    The class using it sets ``_similarity_fn`` when the model loads (see
    :func:`embellama._models.defaults.similarity_fn_name`) and has ``config`` and ``_require``.
    """

    _similarity_fn: str | None = None

    if TYPE_CHECKING:  # what EmbeddingModel gives these methods
        config: ModelConfig

        def _require(self) -> Any: ...

    @property
    def similarity_fn_name(self) -> str:
        """The similarity function :meth:`similarity` uses: ``ModelConfig.similarity_fn_name``, else the GGUF's
        (``embellama.similarity_fn_name``), else the known-model table's, else "cosine"."""
        self._require()
        return self._similarity_fn or "cosine"

    def _fn_and_precision(self, a: Any, b: Any) -> tuple[str, str | None]:
        """The function, and "binary"/"ubinary" when ``a`` and ``b`` are this model's packed bits: int8/uint8
        rows of ``ceil(dims / 8)`` bytes for the model's output dims (or ``truncate_dim``), or the config's
        precision says so. Other integers are int8/uint8 numbers."""
        arrays = [np.asarray(x) for x in (a, b)]
        kinds = {x.dtype for x in arrays}
        if len(kinds) != 1 or not kinds <= {np.dtype(np.int8), np.dtype(np.uint8)}:
            return self.similarity_fn_name, None
        kind = "binary" if kinds == {np.dtype(np.int8)} else "ubinary"
        if self.config.precision == kind:
            return self.similarity_fn_name, kind
        dims = {self._require()[0].n_embd, self.config.truncate_dim or 0}
        widths = {-(-d // 8) for d in dims if d} - dims  # a packed width that is no dims' own
        packed = all(x.ndim in (1, 2) and x.shape[-1] in widths for x in arrays)
        return self.similarity_fn_name, (kind if packed else None)

    def similarity(self, a: Any, b: Any) -> npt.NDArray[np.float32]:
        """Scores of every embedding in ``a`` against every one in ``b``, with :attr:`similarity_fn_name`.

        As ``SentenceTransformer.similarity``: ``cosine``, ``dot``, or ``euclidean``/``manhattan`` as negative
        distances (larger is more similar). int8/uint8 outputs are compared as numbers; the model's binary/ubinary
        outputs (``ceil(dims / 8)`` bytes a row, or ``precision`` "binary"/"ubinary" in the config) are packed bits,
        unpacked to +1/-1 first.

        Parameters
        ----------
        a, b : array_like
            Embeddings of shape ``(n, dim)`` and ``(m, dim)`` (a single vector counts as one row).

        Returns
        -------
        numpy.ndarray
            float32, shape ``(n, m)``.

        Raises
        ------
        InvalidInputError
            The inputs are not numeric matrices of one dimension, or hold NaN or infinities.
        """
        fn, precision = self._fn_and_precision(a, b)
        return _similarity.similarity(a, b, fn, precision=precision)

    def similarity_pairwise(self, a: Any, b: Any) -> npt.NDArray[np.float32]:
        """Scores of ``a[i]`` against ``b[i]``, with :attr:`similarity_fn_name`.

        As ``SentenceTransformer.similarity_pairwise``; inputs as for :meth:`similarity`.

        Parameters
        ----------
        a, b : array_like
            Embeddings of shape ``(n, dim)`` each.

        Returns
        -------
        numpy.ndarray
            float32, shape ``(n,)``.

        Raises
        ------
        InvalidInputError
            As for :meth:`similarity`, and when ``a`` and ``b`` have different numbers of rows.
        """
        fn, precision = self._fn_and_precision(a, b)
        return _similarity.pairwise_similarity(a, b, fn, precision=precision)
