# SPDX-License-Identifier: Apache-2.0
"""Classifier against transformers' ``*ForSequenceClassification`` on the same weights.

Tiny random-weight classifiers with real tokenizers (``tests/support/classify_models.py``): BERT with 1, 2, 3 and
5 labels (2: transformers' default label names, which ``embellama convert`` writes back), RoBERTa with 3, ModernBERT
with 5, each converted to F32 by ``embellama convert``. The reference is transformers' logits for 200 texts.

llama.cpp's CPU backend computes GELU through an F16 table (ggml-cpu's ``GGML_GELU_FP16``), so logits agree to
about 1e-3 of their spread, not 1e-4 (tests/models/test_rerank.py measures the same on the cross-encoders).
"""

from __future__ import annotations

import numpy as np
import pytest

from embellama import Classifier, ConfigurationError, EmbeddingModel, InvalidInputError, ModelConfig, TruncationWarning
from tests.support import classify_models

TOL = {"modernbert5": 3e-3}
"""Max abs logit difference: 1e-3 (the rerankers' tolerance in test_rerank.py); ModernBERT's GeGLU layers carry more
of the F16 GELU table's rounding. Measured: 4e-4 to 9e-4 on BERT and RoBERTa, 2.2e-3 on ModernBERT, on logits
whose spread (std) is 0.10 to 1.1."""


@pytest.fixture(scope="module")
def built(library) -> dict[str, classify_models.Built]:
    return {name: classify_models.ensure(name) for name in classify_models.RECIPES}


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return classify_models.texts()


@pytest.mark.parametrize("name", list(classify_models.RECIPES))
def test_logits_equal_transformers(built, texts, name):
    ref = built[name].logits()
    with Classifier(ModelConfig(model_path=built[name].gguf, compute_type="off", n_threads=1)) as model:
        logits = model.predict(texts, raw=True)
        probs = model.predict(texts)
        assert model.labels == tuple(built[name].labels)
        assert model.num_labels == ref.shape[1] == classify_models.RECIPES[name].num_labels
        assert model.activation == ("sigmoid" if model.num_labels == 1 else "softmax")
    assert logits.shape == ref.shape and logits.dtype == np.float32
    spread = float(ref.std())
    error = float(np.abs(logits - ref).max())
    print(f"{name}: max |logit error| {error:.2e}, spread {spread:.3f}, relative {error / spread:.1e}")
    tol = TOL.get(name, 1e-3)
    assert spread > 20 * tol  # the random weights spread the logits beyond the tolerance: a wrong head shows
    assert error <= tol
    if model.num_labels > 1:  # the same label wins wherever the reference separates the best two clearly
        top2 = np.sort(ref, axis=1)[:, -2:]
        clear = top2[:, 1] - top2[:, 0] > 10 * error
        assert clear.sum() > 0.8 * len(texts)
        assert (logits.argmax(1) == ref.argmax(1))[clear].all()
        want = np.exp(ref - ref.max(1, keepdims=True))
        want /= want.sum(1, keepdims=True)
    else:
        want = 1 / (1 + np.exp(-ref.astype(np.float64)))
    np.testing.assert_allclose(probs, want, atol=5e-3)


def test_top_k_single_text_and_options(built, texts):
    with Classifier(ModelConfig(model_path=built["bert5"].gguf, compute_type="off", n_threads=1)) as model:
        scores = model.predict(texts[:4])
        ranked = model.predict(texts[:4], top_k=2)
        one = model.predict(texts[0])
        one_ranked = model.predict(texts[0], top_k=5)
        sigmoid = model.predict(texts[:4], activation="sigmoid")
        logits = model.predict(texts[:4], raw=True)
        assert repr(model) == f"Classifier(name={model.name!r}, loaded)"
        for bad in (0, -1, 1.5, True):
            with pytest.raises(ConfigurationError, match="top_k"):
                model.predict(texts[:1], top_k=bad)
        with pytest.raises(ConfigurationError, match="unknown activation"):
            model.predict(texts[:1], activation="relu")
        with pytest.raises(InvalidInputError, match=r"text is empty \(input #1\)"):
            model.predict(["fine", ""])
        with pytest.raises(InvalidInputError, match="expected str"):
            model.predict([None])  # type: ignore[list-item]
    np.testing.assert_allclose(scores.sum(1), 1, rtol=1e-5)
    np.testing.assert_allclose(one, scores[0], rtol=1e-5, atol=1e-6)
    assert len(ranked) == 4 and all(len(r) == 2 for r in ranked)
    labels = list(model.labels)
    for row, r in zip(scores, ranked, strict=True):
        order = np.argsort(-row)[:2]
        assert [d["label"] for d in r] == [labels[j] for j in order]
        assert [d["score"] for d in r] == pytest.approx(row[order].tolist(), rel=1e-6)
    assert [d["label"] for d in one_ranked] == [labels[j] for j in np.argsort(-scores[0])]
    np.testing.assert_allclose(sigmoid, 1 / (1 + np.exp(-logits.astype(np.float64))), rtol=1e-5)


def test_long_texts_warn_or_raise(built, texts):
    long = " ".join(texts[:60])
    config = ModelConfig(model_path=built["bert3"].gguf, compute_type="off", n_threads=1, max_tokens=64)
    with Classifier(config) as model, pytest.warns(TruncationWarning, match="1 of 2 text"):
        model.predict([texts[0], long])
    config = ModelConfig(model_path=built["bert3"].gguf, compute_type="off", n_threads=1, max_tokens=64, truncate=False)
    with Classifier(config) as model, pytest.raises(InvalidInputError, match=r"the limit is 64.*input #1"):
        model.predict([texts[0], long])


def test_refuses_what_is_not_a_classifier(built, minilm_f16):
    with pytest.raises(ConfigurationError, match="no classification head"):
        Classifier(ModelConfig(model_path=minilm_f16)).load()
    with pytest.raises(ConfigurationError, match="pooling 'rank', not 'mean'"):
        Classifier(ModelConfig(model_path=built["bert3"].gguf, pooling="mean"))
    with pytest.raises(ConfigurationError, match="applies to embeddings"):
        Classifier(ModelConfig(model_path=built["bert3"].gguf, truncate_dim=8))
    with pytest.raises(ConfigurationError, match="is a reranker"):  # an embedder refuses a classifier's GGUF
        EmbeddingModel(ModelConfig(model_path=built["bert3"].gguf)).load()
