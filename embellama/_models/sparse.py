# SPDX-License-Identifier: Apache-2.0
"""SparseEncoder: lexical sparse vectors (SPLADE's MLM head, bge-m3's sparse head) with sentence-transformers'
``SparseEncoder`` conventions, and SparseEmbedding, the scipy-free sparse result."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from embellama._compute import heads as _heads
from embellama._compute.prompts import resolve_prompt
from embellama._config import ModelConfig
from embellama._exceptions import ConfigurationError, InvalidInputError
from embellama._gguf.heads import Heads, load_heads
from embellama._models.embedding import EmbeddingModel
from embellama._models.options import text_tokens
from embellama._models.overflow import report_cuts

__all__ = ["SparseEmbedding", "SparseEncoder", "sparse_to_coo", "token_model"]

_SPECIAL_KEYS = ("bos", "eos", "unknown", "padding", "seperator", "cls")


@dataclasses.dataclass(frozen=True, eq=False)
class SparseEmbedding:
    """One text's sparse vector: ``indices`` (token ids, ascending, int32) and their ``values`` (float32).

    Parameters
    ----------
    indices : numpy.ndarray
        The non-zero dimensions (token ids), ascending.
    values : numpy.ndarray
        Their weights.
    dim : int
        The vector's length (the vocabulary size).
    vocabulary : sequence of str, optional
        Token strings by id, for :meth:`to_dict` and :meth:`decode`.
    """

    indices: npt.NDArray[np.int32]
    values: npt.NDArray[np.float32]
    dim: int
    vocabulary: Sequence[str] | None = dataclasses.field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.indices.size)

    def to_dict(self) -> dict[str, float]:
        """Token strings to weights.

        Returns
        -------
        dict of str to float
            The vocabulary's strings (WordPiece's ``"##ing"`` as Hugging Face writes it; ids as text without a
            vocabulary) to their weights, in id order.
        """
        words = self.vocabulary
        return {
            (words[i] if words is not None else str(i)): float(v)
            for i, v in zip(self.indices.tolist(), self.values.tolist(), strict=True)
        }

    def decode(self, top_k: int | None = None) -> list[tuple[str, float]]:
        """The tokens and their weights, the largest weight first.

        Parameters
        ----------
        top_k : int, optional
            Only the first ``top_k`` pairs.

        Returns
        -------
        list of (str, float)
        """
        order = np.argsort(-self.values, kind="stable")[: top_k if top_k is not None else None]
        words = self.vocabulary
        return [
            (words[i] if words is not None else str(i), float(v))
            for i, v in zip(self.indices[order].tolist(), self.values[order].tolist(), strict=True)
        ]

    def to_dense(self) -> npt.NDArray[np.float32]:
        """The full vector.

        Returns
        -------
        numpy.ndarray
            float32, shape ``(dim,)``.
        """
        out = np.zeros(self.dim, dtype=np.float32)
        out[self.indices] = self.values
        return out

    def dot(self, other: SparseEmbedding) -> float:
        """The dot product with another sparse vector (over the ids both have).

        Parameters
        ----------
        other : SparseEmbedding
            The other vector.

        Returns
        -------
        float
        """
        _, a, b = np.intersect1d(self.indices, other.indices, assume_unique=True, return_indices=True)
        return float(np.dot(self.values[a].astype(np.float64), other.values[b].astype(np.float64)))

    def to_scipy(self) -> Any:
        """The vector as scipy's sparse type (scipy is imported here, not before).

        Returns
        -------
        scipy.sparse.csr_array
            Shape ``(1, dim)``.

        Raises
        ------
        ConfigurationError
            scipy is not installed.
        """
        return sparse_to_scipy([self])


def sparse_to_coo(
    embeddings: Sequence[SparseEmbedding],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32], tuple[int, int]]:
    """COO arrays of several sparse vectors (no scipy, no torch): ``(rows, cols, values, shape)``."""
    dim = max((e.dim for e in embeddings), default=0)
    rows = np.repeat(np.arange(len(embeddings), dtype=np.int64), [len(e) for e in embeddings])
    cols = np.concatenate([e.indices for e in embeddings]).astype(np.int64) if embeddings else np.zeros(0, np.int64)
    values = np.concatenate([e.values for e in embeddings]) if embeddings else np.zeros(0, np.float32)
    return rows, cols, values.astype(np.float32), (len(embeddings), dim)


def sparse_to_scipy(embeddings: Sequence[SparseEmbedding]) -> Any:
    """A ``scipy.sparse.csr_array`` ``(len(embeddings), dim)``."""
    try:
        import scipy.sparse
    except ImportError:
        raise ConfigurationError("scipy.sparse export needs scipy: pip install scipy") from None
    rows, cols, values, shape = sparse_to_coo(embeddings)
    return scipy.sparse.csr_array((values, (rows, cols)), shape=shape)


def token_model(config: ModelConfig | str | os.PathLike[str]) -> tuple[ModelConfig, EmbeddingModel]:
    """The model config and an EmbeddingModel giving raw token vectors (pooling NONE, no normalization)."""
    if not isinstance(config, ModelConfig):
        config = ModelConfig(model_path=config)
    return config, EmbeddingModel(dataclasses.replace(config, pooling="none", normalize=False, truncate_dim=None))


class _TokenEncoder:
    """What SparseEncoder and MultiVectorEncoder share: the pooling-NONE model, its heads, prompts, tokens."""

    _kind_name = "encoder"

    def __init__(self, config: ModelConfig | str | os.PathLike[str]) -> None:
        self.config, self.model = token_model(config)
        self.name = self.config.name
        self.heads: Heads = load_heads(self.config.model_path, who=self.name)
        self._vocabulary: list[str] | None = None

    def load(self) -> Any:
        """Load the model now (else the first call does), on this thread.

        Returns
        -------
        SparseEncoder or MultiVectorEncoder
            The encoder itself.
        """
        self.model.load()
        return self

    def close(self) -> None:
        """Free the model (from the thread that loaded it). Idempotent."""
        self.model.close()

    def __enter__(self) -> Any:
        return self.load()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def vocabulary(self) -> list[str]:
        """Token strings by id (read once from the GGUF's vocabulary)."""
        if self._vocabulary is None:
            llama = self.model.load().model
            words = [llama.token_text(i) for i in range(llama.n_vocab)]
            if llama.vocab_type == "wpm":  # llama.cpp writes WordPiece's "word" as "\u2581word", "##ing" as "ing"
                words = [w[1:] if w.startswith("\u2581") else w if w.startswith("[") else "##" + w for w in words]
            self._vocabulary = words
        return self._vocabulary

    def special_ids(self) -> set[int]:
        """The vocabulary's special tokens.

        Returns
        -------
        set of int
            The ids of BOS/CLS, EOS, UNK, PAD and SEP the GGUF names.
        """
        llama = self.model.load().model
        out: set[int] = set()
        for key in _SPECIAL_KEYS:
            value = llama.metadata_value(f"tokenizer.ggml.{key}_token_id")
            if value is not None and value.lstrip("-").isdigit() and int(value) >= 0:
                out.add(int(value))
        return out

    def _texts(self, texts: Any) -> tuple[list[str], bool]:
        if isinstance(texts, str):
            return [texts], True
        if not isinstance(texts, (list, tuple)):
            raise InvalidInputError(f"texts must be a str or a list of str, got {type(texts).__name__}", self.name)
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text:
                raise InvalidInputError("each text must be a non-empty str", self.name, i)
        return list(texts), False

    def _prompt(self, prompt_name: str | None, prompt: str | None) -> str:
        self.model.load()
        text = resolve_prompt(self.model.prompts, self.model.default_prompt_name, prompt, prompt_name, self.name)
        return text or ""

    def _tokens(self, texts: list[str], prefix: str) -> list[npt.NDArray[np.int32]]:
        """Each text's ids with the special tokens (``prefix`` first), cut at ``max_tokens`` with a
        TruncationWarning counting what was cut (or refused with ``truncate=False``)."""
        llama, limit, cfg = self.model.load().model, self.model.max_sequence_length, self.model.config
        cuts: dict[int, int] = {}
        ids = [
            text_tokens(llama, text, i, truncate=cfg.truncate, limit=limit, parse_special=cfg.parse_special,
                        name=self.name, prompt=prefix, cuts=cuts)
            for i, text in enumerate(texts)
        ]  # fmt: skip
        report_cuts(self.name, limit, cuts, len(texts), stacklevel=4)
        return ids

    def _token_vectors(self, ids: list[npt.NDArray[np.int32]]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """The hidden states of every text concatenated ``(total, hidden)`` and each text's length."""
        if not ids:  # no texts: no tokens (the heads then give each output kind's empty list)
            width = self.model.load().model.n_embd
            return np.zeros((0, width), dtype=np.float32), np.zeros(0, dtype=np.int64)
        vectors = self.model.embed_token_ids(ids)
        lengths = np.array([len(v) for v in vectors], dtype=np.int64)
        return np.concatenate(vectors, axis=0).astype(np.float32, copy=False), lengths


class SparseEncoder(_TokenEncoder):
    """Sparse lexical vectors over the vocabulary, as sentence-transformers' ``SparseEncoder``.

    Two kinds, from the heads file ``embellama convert`` writes beside the GGUF (``<model>.heads.npz``):

    - ``splade`` (a ``*ForMaskedLM`` checkpoint): MLM logits, log(1 + ReLU), max over tokens (``SpladePooling``);
    - ``bge-m3`` (``sparse_linear.pt``): ReLU(linear(hidden)) per token, the largest weight per token id, the
      special tokens left out (FlagEmbedding's rule).

    The encoder runs with pooling NONE; the heads run in numpy, vectorized.

    Parameters
    ----------
    config : ModelConfig or path
        The model (its pooling and normalization are replaced by NONE and off).
    kind : {"auto", "splade", "bge-m3"}, optional
        Which head; ``auto``: ``splade`` when the MLM head is there, else ``bge-m3``.
    max_active_dims : int, optional
        Keep only the largest this many weights of each vector (SPLADE's top-k pruning).

    Raises
    ------
    ConfigurationError
        No heads file beside the model, or it has no head of ``kind``.
    """

    def __init__(
        self,
        config: ModelConfig | str | os.PathLike[str],
        *,
        kind: str = "auto",
        max_active_dims: int | None = None,
    ) -> None:
        super().__init__(config)
        if kind == "auto":
            kind = "splade" if self.heads.has("mlm") else "bge-m3"
        need = {"splade": "mlm", "bge-m3": "sparse"}.get(kind)
        if need is None:
            raise ConfigurationError(f"model {self.name!r}: unknown sparse kind {kind!r}; expected splade or bge-m3")
        if not self.heads.has(need):
            raise ConfigurationError(
                f"model {self.name!r}: its heads file has {self.heads.names or 'no heads'}, not the {need} head a "
                f"{kind} sparse encoder needs"
            )
        if max_active_dims is not None and (not isinstance(max_active_dims, int) or max_active_dims < 1):
            raise ConfigurationError(f"model {self.name!r}: max_active_dims must be a positive int")
        self.kind = kind
        self.max_active_dims = max_active_dims

    @property
    def dimension(self) -> int:
        """The vectors' length: the vocabulary size."""
        if self.kind == "splade":
            return int(self.heads.arrays["mlm.decoder.weight"].shape[0])
        return int(self.model.load().model.n_vocab)

    def encode(
        self,
        texts: str | Sequence[str],
        *,
        prompt_name: str | None = None,
        prompt: str | None = None,
        max_active_dims: int | None = None,
    ) -> SparseEmbedding | list[SparseEmbedding]:
        """Sparse vectors of ``texts`` (one :class:`SparseEmbedding`, or a list for a list).

        Parameters
        ----------
        texts : str or sequence of str
            The texts.
        prompt_name, prompt : str, optional
            A prompt of the model's, or a prompt text, put before each text.
        max_active_dims : int, optional
            Top-k pruning for this call (default: the encoder's).

        Returns
        -------
        SparseEmbedding or list of SparseEmbedding

        Raises
        ------
        InvalidInputError
            A text that is empty or not a str (naming the model and its index).
        """
        items, single = self._texts(texts)
        prefix = self._prompt(prompt_name, prompt)
        ids = self._tokens(items, prefix)
        hidden, lengths = self._token_vectors(ids)
        k = max_active_dims if max_active_dims is not None else self.max_active_dims
        words = self._vocabulary
        if self.kind == "splade":
            a = self.heads.arrays
            mlm, pool = self.heads.meta["mlm"], self.heads.meta.get("splade", {})
            dense = _heads.splade_pool(
                hidden,
                lengths,
                dense_w=a["mlm.dense.weight"],
                dense_b=a["mlm.dense.bias"],
                norm_w=a["mlm.norm.weight"],
                norm_b=a["mlm.norm.bias"],
                decoder_w=a["mlm.decoder.weight"],
                decoder_b=a["mlm.decoder.bias"],
                act=mlm["activation"],
                eps=mlm["eps"],
                pooling=pool.get("pooling_strategy", "max"),
                activation_function=pool.get("activation_function", "relu"),
            )
            dense = _heads.top_k_prune(dense, k)
            rows, cols = np.nonzero(dense)
            bounds = np.searchsorted(rows, np.arange(len(items) + 1))
            out = [
                SparseEmbedding(
                    cols[bounds[i] : bounds[i + 1]].astype(np.int32),
                    dense[i, cols[bounds[i] : bounds[i + 1]]],
                    dense.shape[1],
                    words,
                )
                for i in range(len(items))
            ]
        else:
            weights = np.maximum(
                _heads.project(hidden, self.heads.arrays["sparse.weight"], self.heads.arrays["sparse.bias"])[:, 0], 0
            )
            pairs = _heads.max_per_token_id(np.concatenate(ids), weights, lengths, sorted(self.special_ids()))
            dim = self.dimension
            out = [SparseEmbedding(i, v, dim, words) for i, v in (_prune(p, k) for p in pairs)]
        if words is None:
            out = [dataclasses.replace(e, vocabulary=_LazyVocabulary(self)) for e in out]
        return out[0] if single else out

    def encode_query(self, texts: Any, **kwargs: Any) -> Any:
        """:meth:`encode` with the model's ``query`` prompt when it has one (and no prompt is given).

        Parameters
        ----------
        texts : str or sequence of str
            The texts.
        **kwargs
            As for :meth:`encode`.

        Returns
        -------
        SparseEmbedding or list of SparseEmbedding
        """
        return self.encode(texts, **_task_prompt(self.model, "query", kwargs))

    def encode_document(self, texts: Any, **kwargs: Any) -> Any:
        """:meth:`encode` with the model's ``document`` prompt when it has one (and no prompt is given).

        Parameters
        ----------
        texts : str or sequence of str
            The texts.
        **kwargs
            As for :meth:`encode`.

        Returns
        -------
        SparseEmbedding or list of SparseEmbedding
        """
        return self.encode(texts, **_task_prompt(self.model, "document", kwargs))

    @staticmethod
    def similarity(
        a: SparseEmbedding | Sequence[SparseEmbedding], b: SparseEmbedding | Sequence[SparseEmbedding]
    ) -> npt.NDArray[np.float32]:
        """Dot products of every vector of ``a`` with every vector of ``b`` (SPLADE's and bge-m3's lexical score).

        Parameters
        ----------
        a, b : SparseEmbedding or sequence of SparseEmbedding
            The vectors.

        Returns
        -------
        numpy.ndarray
            float32, shape ``(len(a), len(b))``.
        """
        left = [a] if isinstance(a, SparseEmbedding) else list(a)
        right = [b] if isinstance(b, SparseEmbedding) else list(b)
        ra, ca, va, _ = sparse_to_coo(left)
        rb, cb, vb, _ = sparse_to_coo(right)
        # join on the token id: sort b's entries by id, find each of a's ids among them
        order = np.argsort(cb, kind="stable")
        cb, rb, vb = cb[order], rb[order], vb[order]
        lo, hi = np.searchsorted(cb, ca, side="left"), np.searchsorted(cb, ca, side="right")
        counts = hi - lo
        ai = np.repeat(np.arange(len(ca)), counts)
        bi = (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)) + np.repeat(lo, counts)
        out = np.zeros((len(left), len(right)), dtype=np.float64)
        np.add.at(out, (ra[ai], rb[bi]), va[ai].astype(np.float64) * vb[bi])
        return out.astype(np.float32)

    def decode(self, embedding: SparseEmbedding, top_k: int | None = None) -> list[tuple[str, float]]:
        """The tokens of ``embedding`` and their weights, the largest first.

        Parameters
        ----------
        embedding : SparseEmbedding
            A vector this encoder made.
        top_k : int, optional
            Only the first ``top_k`` pairs.

        Returns
        -------
        list of (str, float)
        """
        return embedding.decode(top_k)

    def __repr__(self) -> str:
        return f"<SparseEncoder {self.name!r} {self.kind}>"


class _LazyVocabulary(Sequence[str]):
    """The encoder's vocabulary, read on first use (most callers never ask for token strings)."""

    def __init__(self, encoder: _TokenEncoder) -> None:
        self._encoder = encoder

    def __getitem__(self, index: Any) -> Any:
        return self._encoder.vocabulary[index]

    def __len__(self) -> int:
        return len(self._encoder.vocabulary)


def _prune(
    pair: tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]], k: int | None
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    ids, values = pair
    if k is None or len(ids) <= k:
        return ids, values
    keep = np.sort(np.argpartition(-values, k - 1)[:k])
    return ids[keep], values[keep]


def _task_prompt(model: EmbeddingModel, task: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    if kwargs.get("prompt") is None and kwargs.get("prompt_name") is None:
        model.load()
        if model.prompts.get(task):
            kwargs = dict(kwargs, prompt_name=task)
    return kwargs
