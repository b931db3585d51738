# SPDX-License-Identifier: Apache-2.0
"""MultiVectorEncoder: ColBERT-style per-token vectors (late interaction) with MaxSim scoring and ranking."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from embellama._compute import heads as _heads
from embellama._compute.pooling import normalize
from embellama._config import ModelConfig
from embellama._exceptions import ApproximationWarning, ConfigurationError
from embellama._models.sparse import _task_prompt, _TokenEncoder

__all__ = ["MultiVectorEncoder"]

F32 = npt.NDArray[np.float32]


class MultiVectorEncoder(_TokenEncoder):
    """Per-token vectors for late interaction (ColBERT), from the projection in the model's heads file.

    Two styles, from the heads file ``embellama convert`` writes beside the GGUF (``<model>.heads.npz``):

    - ``bge-m3`` (``colbert_linear.pt``): the projection of every token but the first (CLS), normalized;
      MaxSim averaged over the query's tokens;
    - ``colbert`` (a PyLate/ColBERT checkpoint's Dense module): query and document marker tokens after the
      first token, queries padded with ``[MASK]`` to ``query_length`` (query augmentation), the punctuation
      skiplist dropped from documents, normalized; MaxSim summed.

    Parameters
    ----------
    config : ModelConfig or path
        The model (its pooling and normalization are replaced by NONE and off).

    Raises
    ------
    ConfigurationError
        No heads file beside the model, or it has no ColBERT projection.
    """

    def __init__(self, config: ModelConfig | str | os.PathLike[str]) -> None:
        super().__init__(config)
        if not self.heads.has("colbert"):
            raise ConfigurationError(
                f"model {self.name!r}: its heads file has {self.heads.names or 'no heads'}, not a ColBERT projection "
                "(colbert_linear.pt or a Dense module)"
            )
        self.settings: dict[str, Any] = dict(self.heads.meta.get("colbert", {}))
        self.style = str(self.settings.get("style", "bge-m3"))
        self.score_reduce = str(self.settings.get("score", "sum"))
        self._skip: set[int] | None = None
        self._markers: dict[str, npt.NDArray[np.int32]] = {}
        self._approximation_told = False
        activation = str(self.settings.get("activation", "Identity")).rsplit(".", 1)[-1].lower()
        if activation not in ("identity", "tanh"):
            raise ConfigurationError(
                f"model {self.name!r}: its ColBERT projection's activation {activation!r} is not supported "
                "(Identity, Tanh)"
            )
        self._tanh = activation == "tanh"

    @property
    def dimension(self) -> int:
        """Each token vector's length."""
        return int(self.heads.arrays["colbert.weight"].shape[0])

    def _marker(self, key: str) -> npt.NDArray[np.int32]:
        if key not in self._markers:
            text = self.settings.get(key) or ""
            ids = np.zeros(0, dtype=np.int32)
            if text.strip():
                ids = self.model.load().model.tokenize(text.strip(), add_special=False, parse_special=True)
            # PyLate and ColBERT insert the marker's own vocabulary entry (convert_tokens_to_ids: PyLate's added
            # "[Q] ", Stanford's "[unused0]"), which llama.cpp's tokenizer splits into pieces
            found = [w for w in dict.fromkeys((text, text.strip())) if w and w in self.vocabulary]
            if len(ids) > 1 and found:
                ids = np.array([self.vocabulary.index(found[0])], dtype=np.int32)
            self._markers[key] = ids
        return self._markers[key]

    def _skiplist(self) -> set[int]:
        if self._skip is None:
            llama = self.model.load().model
            words = self.settings.get("skiplist_words") or []
            self._skip = {int(t) for w in words for t in llama.tokenize(w, add_special=False)[:1]}
        return self._skip

    def _ids(self, texts: list[str], prefix: str, is_query: bool) -> list[npt.NDArray[np.int32]]:
        ids = self._tokens(texts, prefix)
        if self.style != "colbert":
            return ids
        marker = self._marker("query_prefix" if is_query else "document_prefix")
        limit = self.settings.get("query_length" if is_query else "document_length")
        out = []
        for row in ids:
            row = np.concatenate([row[:1], marker, row[1:]]).astype(np.int32)
            if limit and len(row) > int(limit):
                row = np.concatenate([row[: int(limit) - 1], row[-1:]])
            if is_query and limit and self.settings.get("do_query_expansion", True):
                llama = self.model.load().model
                mask = int(llama.metadata_value("tokenizer.ggml.mask_token_id") or -1)
                if mask < 0:
                    raise ConfigurationError(f"model {self.name!r}: query expansion needs a [MASK] token")
                row = np.concatenate([row, np.full(int(limit) - len(row), mask, np.int32)])
                self._tell_expansion_attended()
            out.append(row)
        return out

    def _tell_expansion_attended(self) -> None:
        """Warn once when the checkpoint keeps [MASK] expansion out of attention, which llama.cpp cannot do."""
        if self._approximation_told or self.settings.get("attend_to_expansion_tokens", True):
            return
        self._approximation_told = True
        warnings.warn(
            ApproximationWarning(
                f"model {self.name!r} was trained with attend_to_expansion_tokens=False (its query tokens do not "
                "attend to the [MASK] expansion); llama.cpp's encoder lets every token of a sequence see every "
                "other one, so its query vectors are computed as if it were True and differ from PyLate's "
                "(documents are exact); see the guide's sparse and multi-vector page",
                self.name,
            ),
            stacklevel=4,
        )

    def _encode(self, texts: Any, prompt_name: str | None, prompt: str | None, is_query: bool) -> Any:
        items, single = self._texts(texts)
        if not items:
            return []
        ids = self._ids(items, self._prompt(prompt_name, prompt), is_query)
        hidden, lengths = self._token_vectors(ids)
        keep = np.ones(len(hidden), dtype=bool)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        if self.settings.get("skip_first"):
            keep[starts] = False
        if self.style == "colbert" and not is_query and self._skiplist():
            keep &= ~np.isin(np.concatenate(ids), np.array(sorted(self._skiplist())))
        vectors = _heads.project(hidden, self.heads.arrays["colbert.weight"], self.heads.arrays["colbert.bias"])
        if self._tanh:
            vectors = np.tanh(vectors)
        if self.settings.get("normalize", True):
            vectors = normalize(vectors)
        text_of = np.repeat(np.arange(len(items)), lengths)[keep]
        vectors = vectors[keep]
        bounds = np.searchsorted(text_of, np.arange(len(items) + 1))
        out = [vectors[bounds[i] : bounds[i + 1]] for i in range(len(items))]
        return out[0] if single else out

    def encode(self, texts: str | Sequence[str], *, prompt_name: str | None = None, prompt: str | None = None) -> Any:
        """Token vectors of ``texts`` as documents: ``(n_tokens, dim)`` float32 (a list of them for a list).

        Parameters
        ----------
        texts : str or sequence of str
            The texts.
        prompt_name, prompt : str, optional
            A prompt of the model's, or a prompt text, put before each text.

        Returns
        -------
        numpy.ndarray or list of numpy.ndarray

        Raises
        ------
        InvalidInputError
            A text that is empty or not a str (naming the model and its index).
        """
        return self.encode_document(texts, prompt_name=prompt_name, prompt=prompt)

    def encode_query(self, texts: Any, **kwargs: Any) -> Any:
        """Token vectors of queries: the query marker and ``[MASK]`` augmentation where the model has them.

        Parameters
        ----------
        texts : str or sequence of str
            The queries.
        **kwargs
            ``prompt_name`` or ``prompt``, as for :meth:`encode` (default: the model's ``query`` prompt).

        Returns
        -------
        numpy.ndarray or list of numpy.ndarray
            float32 ``(n_tokens, dim)`` per text.
        """
        kw = _task_prompt(self.model, "query", kwargs)
        return self._encode(texts, kw.get("prompt_name"), kw.get("prompt"), True)

    def encode_document(self, texts: Any, **kwargs: Any) -> Any:
        """Token vectors of documents: the document marker and the skiplist where the model has them.

        Parameters
        ----------
        texts : str or sequence of str
            The documents.
        **kwargs
            ``prompt_name`` or ``prompt``, as for :meth:`encode` (default: the model's ``document`` prompt).

        Returns
        -------
        numpy.ndarray or list of numpy.ndarray
            float32 ``(n_tokens, dim)`` per text.
        """
        kw = _task_prompt(self.model, "document", kwargs)
        return self._encode(texts, kw.get("prompt_name"), kw.get("prompt"), False)

    def maxsim(self, query: Any, documents: Any) -> F32:
        """MaxSim scores of queries' and documents' token vectors (summed or, for bge-m3, averaged).

        Parameters
        ----------
        query : numpy.ndarray or sequence of numpy.ndarray
            One query's ``(tokens, dim)`` vectors, or several.
        documents : numpy.ndarray or sequence of numpy.ndarray
            One document's vectors, or several.

        Returns
        -------
        numpy.ndarray
            float32 ``(n_queries, n_docs)``; ``(n_docs,)`` for one query.
        """
        queries = [query] if isinstance(query, np.ndarray) else list(query)
        docs = [documents] if isinstance(documents, np.ndarray) else list(documents)
        scores = _heads.maxsim_matrix(queries, docs, reduce=self.score_reduce)
        return scores[0] if isinstance(query, np.ndarray) else scores

    def rank(self, query: str, documents: Sequence[str], *, top_k: int | None = None) -> list[dict[str, Any]]:
        """The documents ranked by MaxSim with ``query``.

        Parameters
        ----------
        query : str
            The query.
        documents : sequence of str
            The documents.
        top_k : int, optional
            Only the best ``top_k``.

        Returns
        -------
        list of dict
            ``{"corpus_id": int, "score": float}``, the best first.
        """
        scores = self.maxsim(self.encode_query(query), self.encode_document(list(documents)))
        order = np.argsort(-scores, kind="stable")[:top_k]
        return [{"corpus_id": int(i), "score": float(scores[i])} for i in order]

    def __repr__(self) -> str:
        return f"<MultiVectorEncoder {self.name!r} {self.style}>"
