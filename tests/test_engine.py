"""EmbeddingEngine: named models, one worker thread each, safe from many threads."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from embellama import (
    ConfigurationError,
    EmbeddingEngine,
    EmbeddingModel,
    InvalidInputError,
    ModelConfig,
    ModelNotFoundError,
    ResourceClosedError,
)


@pytest.fixture(scope="module")
def engine(minilm_f16, minilm_q8):
    with EmbeddingEngine(
        [
            ModelConfig(model_path=minilm_f16, model_name="f16", n_threads=1),
            ModelConfig(model_path=minilm_q8, model_name="q8", n_threads=1),
        ]
    ) as eng:
        yield eng


def test_models_and_info(engine):
    assert engine.models == ["f16", "q8"]
    assert engine.default_model == "f16"
    info = engine.info("q8")
    assert info["embedding_dimensions"] == 384
    assert info["pooling"] == "mean"
    assert info["model_size"] < engine.info("f16")["model_size"]


def test_results_equal_a_direct_model(engine, minilm_f16):
    texts = ["The cat sat on the mat.", "Dogs are loyal animals.", "Markets rallied on Friday."]
    with EmbeddingModel(ModelConfig(model_path=minilm_f16)) as direct:
        expected = direct.embed_batch(texts)
    got = engine.embed_batch(texts)  # default model
    np.testing.assert_allclose((got * expected).sum(1), 1.0, atol=1e-5)
    q8 = engine.embed_batch(texts, model="q8")
    assert (q8 * expected).sum(1).min() > 0.99
    assert not np.array_equal(q8, got)


def test_many_threads_at_once(engine):
    texts = [f"request {i}: sentence about topic {i % 7}" for i in range(48)]
    expected = {m: engine.embed_batch(texts, model=m) for m in ("f16", "q8")}

    def one(i):
        model = "f16" if i % 2 else "q8"
        return model, i, engine.embed(texts[i], model=model)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, range(len(texts))))
    # Q8_0 activations are quantized per call, so its results move a little with batching
    tolerance = {"f16": 1e-5, "q8": 1e-3}
    for model, i, vector in results:
        assert float(vector @ expected[model][i]) == pytest.approx(1.0, abs=tolerance[model])


def test_models_run_on_their_own_worker_threads(engine):
    names = {m: engine.submit(lambda _: threading.current_thread().name, model=m).result() for m in engine.models}
    assert names == {"f16": "embellama:f16", "q8": "embellama:q8"}
    assert threading.current_thread().name not in names.values()


def test_errors_reach_the_caller(engine, tmp_path):
    with pytest.raises(InvalidInputError, match="'f16': text is empty"):
        engine.embed("")
    with pytest.raises(ConfigurationError, match="no model named 'nope'"):
        engine.embed("x", model="nope")
    with pytest.raises(ModelNotFoundError):
        engine.add_model(ModelConfig(model_path=tmp_path / "missing.gguf"))
    assert engine.models == ["f16", "q8"]
    with pytest.raises(ConfigurationError, match="already registered"):
        engine.add_model(ModelConfig(model_path=tmp_path / "x.gguf", model_name="f16"))


def test_add_remove_and_close(minilm_f16):
    eng = EmbeddingEngine()
    with pytest.raises(ConfigurationError, match="no models"):
        eng.embed("x")
    eng.add_model(ModelConfig(model_path=minilm_f16, model_name="a"))
    worker = eng._workers["a"].thread
    assert eng.embed("hello").shape == (384,)
    eng.remove_model("a")
    worker.join(10)
    assert not worker.is_alive()
    assert eng.models == [] and eng.default_model is None
    eng.close()
    with pytest.raises(ResourceClosedError):
        eng.embed("x")
