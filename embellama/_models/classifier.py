# SPDX-License-Identifier: Apache-2.0
"""Classifier: a ``*ForSequenceClassification`` GGUF's labels for single texts (sentiment, topics, NLI heads,
toxicity), as transformers' text-classification pipeline gives them.

llama.cpp computes the head with its rank pooling (``LLAMA_POOLING_TYPE_RANK``): the classification head on the
first token (BERT, RoBERTa) or the mean of the tokens (ModernBERT), ``n_cls_out`` numbers per text, one per label
of the GGUF's ``<arch>.classifier.output_labels`` (the model's ``id2label``). This module tokenizes each text with
the special tokens, packs texts by length into llama.cpp calls as ``embed_batch`` does, and applies softmax (or
sigmoid for one label). ``embellama convert`` writes what the stock converter leaves out (BERT's pooler, the
labels of a two-label head with default names).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from embellama._compute import packing as _batch
from embellama._compute.packing import ProgressCallback
from embellama._config import ModelConfig, Normalization, PoolingStrategy
from embellama._exceptions import ConfigurationError, InvalidInputError
from embellama._gguf import reader as _gguf
from embellama._models.base import LlamaModel, is_positive_int
from embellama._models.kinds import check_scoring_config
from embellama._models.options import text_tokens
from embellama._models.overflow import report_cuts
from embellama.llama import Context, Model

__all__ = ["CLASSIFIER_ACTIVATIONS", "Classifier"]

CLASSIFIER_ACTIVATIONS = ("softmax", "sigmoid", "identity")
"""What :meth:`Classifier.predict` applies to the head's logits: softmax over the labels, sigmoid on each
(multi-label heads, and a one-label head), or none."""

_HEAD_TENSORS = ("cls.weight", "cls.output.weight")


class _Head(NamedTuple):
    labels: tuple[str, ...]
    activation: str


def _activate(logits: npt.NDArray[np.float32], kind: str) -> npt.NDArray[np.float32]:
    x = logits.astype(np.float64)
    if kind == "sigmoid":
        x = 0.5 * (1.0 + np.tanh(0.5 * x))  # the logistic function, without overflow for large |x|
    elif kind == "softmax":
        x = np.exp(x - x.max(axis=1, keepdims=True))
        x /= x.sum(axis=1, keepdims=True)
    return x.astype(np.float32)


class Classifier(LlamaModel):
    """A sequence-classification GGUF: each text's label probabilities (or logits).

    >>> with Classifier(ModelConfig(model_path="distilbert-sst2.gguf")) as c:  # doctest: +SKIP
    ...     c.predict(["What a great film!"], top_k=1)
    [[{'label': 'POSITIVE', 'score': 0.99...}]]

    The text is tokenized as the model's tokenizer does a single text (``[CLS] text [SEP]``, ``<s> text </s>``).
    As for :class:`EmbeddingModel`, the context belongs to the thread that loads the model.

    Parameters
    ----------
    config : ModelConfig
        Which model and how to run it (``pooling`` may be left unset or "rank"; ``prompts``, ``truncate_dim`` and
        ``precision`` must stay unset). ``max_tokens`` and ``truncate`` apply to each text.
    activation : str, optional
        Applied by :meth:`predict` unless a call says otherwise: "softmax", "sigmoid" (each label on its own, as
        multi-label models are trained) or "identity" (logits). Default: softmax, sigmoid for a one-label head.

    Raises
    ------
    ConfigurationError
        ``config`` is not a :class:`ModelConfig`, asks for another pooling or an embedding option, or
        ``activation`` is unknown.
    """

    def __init__(self, config: ModelConfig, *, activation: str | None = None) -> None:
        super().__init__(config)
        check_scoring_config(config, "Classifier", "runs")
        self._activation = self._check_activation(activation)
        self._head: _Head | None = None

    def _check_activation(self, value: str | None) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or value.lower() not in CLASSIFIER_ACTIVATIONS:
            raise ConfigurationError(
                f"model {self.name!r}: unknown activation {value!r}; expected one of: "
                + ", ".join(CLASSIFIER_ACTIVATIONS)
            )
        return value.lower()

    # -- loading ----------------------------------------------------------------------------

    def _choose_pooling(self, model: Model) -> PoolingStrategy:
        return PoolingStrategy.RANK

    def _prepare(self, model: Model, context: Context, max_tokens: int) -> _Head:
        who = f"model {self.name!r}"
        labels_key = f"{model.architecture}.classifier.output_labels"
        header = _gguf.read_header(model.path, arrays=(labels_key,))
        if not any(name in header.tensors for name in _HEAD_TENSORS):
            raise ConfigurationError(
                f"{who} has no classification head (no {' or '.join(_HEAD_TENSORS)} tensor): it embeds text; use "
                "EmbeddingModel"
            )
        if model.is_causal:
            raise ConfigurationError(
                f"{who} is a decoder ({model.architecture}): its head scores prompts (a decoder reranker); use Reranker"
            )
        n_out = context.n_embd  # with rank pooling: the head's outputs
        saved = header.metadata.get(labels_key)
        labels = tuple(str(v) for v in saved) if isinstance(saved, list) else ()
        if labels and len(labels) != n_out:
            raise ConfigurationError(f"{who}: the GGUF names {len(labels)} labels for a head of {n_out} outputs")
        return _Head(labels or tuple(f"LABEL_{i}" for i in range(n_out)), "sigmoid" if n_out == 1 else "softmax")

    def _adopt(self, prepared: _Head) -> None:
        self._head = prepared

    def _require_head(self) -> _Head:
        self._require()
        assert self._head is not None
        return self._head

    # -- information ---------------------------------------------------------------------------

    @property
    def labels(self) -> tuple[str, ...]:
        """The labels, in the head's output order (the GGUF's ``id2label``; ``LABEL_<i>`` where it names none)."""
        return self._require_head().labels

    @property
    def num_labels(self) -> int:
        """Outputs of the head per text."""
        return len(self.labels)

    @property
    def activation(self) -> str:
        """The activation :meth:`predict` applies by default."""
        return self._activation or self._require_head().activation

    # -- predictions ----------------------------------------------------------------------------

    def predict(
        self,
        texts: str | Sequence[str],
        *,
        top_k: int | None = None,
        raw: bool = False,
        activation: str | None = None,
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
        progress: ProgressCallback | None = None,
    ) -> Any:
        """Each text's label scores, in input order.

        Every text is checked and tokenized before any inference; texts are then packed into llama.cpp calls by
        length. A text over ``max_sequence_length`` is cut (keeping the end tokens) with a
        :class:`TruncationWarning`, or refused with ``ModelConfig(truncate=False)``.

        Parameters
        ----------
        texts : str or sequence of str
            One text or several.
        top_k : int, optional
            Return, per text, the ``top_k`` best labels as ``{"label": str, "score": float}`` dicts, best first
            (transformers' text-classification pipeline); default: the array of every label's score.
        raw : bool, optional
            Logits, without the activation (as ``activation="identity"``).
        activation : str, optional
            "softmax", "sigmoid" or "identity" instead of :attr:`activation`.
        batch_size : int, optional
            Most texts per llama.cpp call; default: as many as fit.
        show_progress_bar : bool, optional
            Draw a progress bar on stderr; default: when the ``embellama`` logger shows INFO.
        progress : callable, optional
            ``progress(done, total)``, called on this thread after each llama.cpp call.

        Returns
        -------
        numpy.ndarray or list
            float32 ``(len(texts), num_labels)`` (a ``(num_labels,)`` row for one str); with ``top_k``, a list
            per text of ``top_k`` dicts (one list for one str).

        Raises
        ------
        InvalidInputError
            A text is empty, not a str, or too long with ``truncate=False`` (the message names the model and the
            text's index).
        ConfigurationError
            A bad ``top_k``, ``batch_size`` or ``activation``, or the model has no classification head.
        ModelNotFoundError, ModelLoadError, ThreadAffinityError, EmbeddingError
            As for :meth:`EmbeddingModel.embed_batch`.
        """
        single = isinstance(texts, str)
        batch = [texts] if single else texts
        if isinstance(batch, bytes) or not isinstance(batch, Sequence):
            raise InvalidInputError(
                f"predict expects a str or a sequence of str, got {type(texts).__name__}", self.name
            )
        if top_k is not None and not is_positive_int(top_k):
            raise ConfigurationError(f"model {self.name!r}: top_k must be a positive int, got {top_k!r}")
        if not isinstance(raw, bool):
            raise ConfigurationError(f"model {self.name!r}: raw must be a bool, got {raw!r}")
        model, _, _ = self._require()
        self._check_batch_size(batch_size)
        kind = "identity" if raw else (self._check_activation(activation) or self.activation)
        cuts: dict[int, int] = {}
        tokens = _batch.tokenize_all(
            batch,
            lambda text, i: text_tokens(
                model,
                text,
                i,
                truncate=self.config.truncate,
                limit=self._max_tokens,
                parse_special=self.config.parse_special,
                name=self.name,
                cuts=cuts,
            ),
            1,
        )
        report_cuts(self.name, self._max_tokens, cuts, len(batch))
        tracker = _batch.Progress(len(batch), self.name, show_progress_bar, progress)
        logits = self._run_batch(tokens, PoolingStrategy.RANK, Normalization.NONE, batch_size, tracker)
        tracker.close()
        scores = _activate(np.asarray(logits, dtype=np.float32).reshape(len(batch), self.num_labels), kind)
        if top_k is None:
            return scores[0] if single else scores
        labels = self.labels
        order = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
        picked = np.take_along_axis(scores, order, axis=1).tolist()
        ranked = [
            [{"label": labels[j], "score": float(s)} for j, s in zip(row, values, strict=True)]
            for row, values in zip(order.tolist(), picked, strict=True)
        ]
        return ranked[0] if single else ranked

    def __repr__(self) -> str:
        state = "loaded" if self.is_loaded else "not loaded"
        return f"Classifier(name={self.name!r}, {state})"
