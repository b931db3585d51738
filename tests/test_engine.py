"""EmbeddingEngine: named models, one worker thread each, safe from many threads."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait

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


# -- every request answered, no worker left behind (issue: never hang) ---------------------

WAIT = 60  # seconds: far beyond any request here; reaching it means a future was left unresolved


def _engine_threads(prefix: str = "embellama:") -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


class _SlowLoad(EmbeddingModel):
    """An EmbeddingModel whose load() waits for the test's signal first (to order events)."""

    gate = threading.Event()
    entered = threading.Event()

    def load(self):
        type(self).entered.set()
        assert type(self).gate.wait(WAIT)
        return super().load()


@pytest.fixture
def slow_load(monkeypatch):
    import embellama._engine as engine_module

    class Slow(_SlowLoad):
        gate = threading.Event()
        entered = threading.Event()

    monkeypatch.setattr(engine_module, "EmbeddingModel", Slow)
    return Slow


def test_a_failed_load_fails_every_pending_request(slow_load, tmp_path):
    eng = EmbeddingEngine()
    missing = ModelConfig(model_path=tmp_path / "gone.gguf", model_name="gone")
    errors = []
    loader = threading.Thread(target=lambda: errors.append(_raises(lambda: eng.add_model(missing))))
    loader.start()
    assert slow_load.entered.wait(WAIT)
    pending = [eng.submit(lambda m: m.embed("hi"), model="gone") for _ in range(5)]
    slow_load.gate.set()
    loader.join(WAIT)
    assert not loader.is_alive() and isinstance(errors[0], ModelNotFoundError)
    for future in pending:
        with pytest.raises(ModelNotFoundError):
            future.result(WAIT)
    assert eng.models == []
    eng.close()


def _raises(fn):
    try:
        fn()
    except BaseException as exc:
        return exc
    return None


@pytest.mark.parametrize("how", ["remove_model", "close"])
def test_a_request_racing_removal_runs_or_fails_closed(minilm_f16, monkeypatch, how):
    import embellama._engine as engine_module

    eng = EmbeddingEngine([ModelConfig(model_path=minilm_f16, model_name="race", n_threads=1)])
    looked_up, go = threading.Event(), threading.Event()
    original = engine_module._Worker.submit

    def paused_submit(self, fn):  # the request found its worker; now it is removed before the message lands
        looked_up.set()
        assert go.wait(WAIT)
        return original(self, fn)

    monkeypatch.setattr(engine_module._Worker, "submit", paused_submit)
    outcome = []
    caller = threading.Thread(target=lambda: outcome.append(_raises(lambda: eng.embed("hello", model="race"))))
    caller.start()
    assert looked_up.wait(WAIT)
    getattr(eng, how)(*(["race"] if how == "remove_model" else []))
    go.set()
    caller.join(WAIT)
    assert not caller.is_alive(), "the request was never answered"
    assert outcome and (outcome[0] is None or isinstance(outcome[0], ResourceClosedError)), outcome
    eng.close()


def test_a_failing_constructor_stops_the_models_it_started(minilm_f16, tmp_path):
    configs = [
        ModelConfig(model_path=minilm_f16, model_name="first", n_threads=1),
        ModelConfig(model_path=minilm_f16, model_name="second", n_threads=1),
        ModelConfig(model_path=tmp_path / "third.gguf", model_name="third"),
    ]
    with pytest.raises(ModelNotFoundError):
        EmbeddingEngine(configs)
    assert _engine_threads("embellama:first") == [] and _engine_threads("embellama:second") == []


def test_shared_state_is_only_touched_under_the_lock(minilm_f16, tmp_path):
    class Checked(EmbeddingEngine):
        def __getattribute__(self, name):
            if name in ("_workers", "_default"):
                lock = object.__getattribute__(self, "_lock")
                assert lock.locked(), f"{name} read without the engine's lock"
            return object.__getattribute__(self, name)

    eng = Checked()
    eng.add_model(ModelConfig(model_path=minilm_f16, model_name="a", n_threads=1))
    eng.add_model(ModelConfig(model_path=minilm_f16, model_name="b", n_threads=1))
    with pytest.raises(ModelNotFoundError):
        eng.add_model(ModelConfig(model_path=tmp_path / "c.gguf", model_name="c"))
    assert eng.models == ["a", "b"] and eng.default_model == "a"
    assert eng.embed("x").shape == (384,) and eng.info("b")["embedding_dimensions"] == 384
    eng.remove_model("a")
    assert eng.default_model == "b"
    repr(eng)
    eng.close()


def test_no_worker_outlives_close_even_after_a_timed_out_load(slow_load, minilm_f16):
    eng = EmbeddingEngine()
    with pytest.raises(TimeoutError):
        eng.add_model(ModelConfig(model_path=minilm_f16, model_name="slow", n_threads=1), timeout=0.2)
    assert eng.models == []
    slow_load.gate.set()  # the abandoned load completes now, in its worker
    eng.close()
    assert _engine_threads("embellama:slow") == []


def test_close_answers_queued_requests_and_ends_every_worker(minilm_f16):
    eng = EmbeddingEngine([ModelConfig(model_path=minilm_f16, model_name="busy", n_threads=1)])
    started = threading.Event()

    def slow(m):
        started.set()
        time.sleep(0.3)
        return m.embed("first")

    running = eng.submit(slow)
    assert started.wait(WAIT)
    queued = [eng.submit(lambda m: m.embed("later")) for _ in range(20)]
    eng.close()
    assert _engine_threads("embellama:busy") == []
    assert running.result(0).shape == (384,)  # the running request finishes
    for future in queued:
        assert future.done()
        with pytest.raises(ResourceClosedError):
            future.result(0)
    with pytest.raises(ResourceClosedError):
        eng.submit(lambda m: None)


def test_interpreter_exit_with_a_live_engine_is_clean(minilm_f16):
    script = f"""
import threading
from embellama import EmbeddingEngine, ModelConfig
engine = EmbeddingEngine([ModelConfig(model_path={str(minilm_f16)!r}, model_name="exit", n_threads=2)])
futures = [engine.submit(lambda m: m.embed_batch(["a sentence to embed " * 20] * 64)) for _ in range(50)]
futures[0].result()
print("leaving with", sum(not f.done() for f in futures), "requests pending", flush=True)
"""
    for _ in range(6):  # without the exit hook, about one run in five died here by SIGSEGV
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=WAIT)
        assert proc.returncode == 0, f"exit status {proc.returncode}\n{proc.stderr[-2000:]}"
        assert "leaving with" in proc.stdout and "Fatal" not in proc.stderr and "Traceback" not in proc.stderr


def test_stress_every_future_resolves_and_no_thread_outlives_close(minilm_f16):
    """Submit, add_model, remove_model and close from several threads at random."""
    rounds, actors, seconds = 3, 6, 1.5
    names = ["s0", "s1", "s2"]
    futures: list = []
    sync_errors: dict[str, int] = {}
    for round_no in range(rounds):
        eng = EmbeddingEngine([ModelConfig(model_path=minilm_f16, model_name="s0", n_threads=1)])
        deadline = time.monotonic() + seconds
        close_at = time.monotonic() + random.uniform(0.5, 1.0) * seconds

        def actor(seed, eng=eng, deadline=deadline, close_at=close_at):
            rng = random.Random(seed)
            while time.monotonic() < deadline and not (eng.closed and rng.random() < 0.1):
                roll, name = rng.random(), rng.choice(names)
                try:
                    if time.monotonic() > close_at and roll < 0.05:
                        eng.close()
                    elif roll < 0.88:
                        text = f"request {rng.randrange(1000)}"
                        future = eng.submit(lambda m, text=text: m.embed(text), model=name)
                        futures.append(future)
                        if roll < 0.1:
                            future.result(WAIT)
                    elif roll < 0.94:
                        eng.add_model(ModelConfig(model_path=minilm_f16, model_name=name, n_threads=1))
                    else:
                        eng.remove_model(name)
                except (ConfigurationError, ResourceClosedError) as exc:
                    sync_errors[type(exc).__name__] = sync_errors.get(type(exc).__name__, 0) + 1

        threads = [threading.Thread(target=actor, args=(round_no * 100 + i,)) for i in range(actors)]
        for t in threads:
            t.start()
        while time.monotonic() < close_at:
            time.sleep(0.01)
        eng.close()
        assert [t.name for t in threading.enumerate() if t.name in {f"embellama:{n}" for n in names}] == []
        for t in threads:
            t.join(WAIT)
            assert not t.is_alive()
        eng.close()
    done, not_done = wait(futures, timeout=WAIT)
    assert not not_done, f"{len(not_done)} of {len(futures)} futures never resolved"
    outcomes = {"result": 0}
    for future in done:
        exc = future.exception()
        if exc is None:
            assert future.result().shape == (384,)
            outcomes["result"] += 1
        else:
            assert isinstance(exc, ResourceClosedError), repr(exc)
            outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
    assert outcomes["result"] > 0
    print(f"stress: {len(futures)} requests, {rounds}x{actors} threads, {rounds * seconds:.1f} s, {outcomes}, "
          f"synchronous refusals {sync_errors}, unresolved 0")
