# SPDX-License-Identifier: Apache-2.0
"""EmbeddingEngine: named models on worker threads of their own, safe from many threads and asyncio."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from typing import ClassVar

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embellama import (
    ConfigurationError,
    EmbeddingEngine,
    EmbeddingModel,
    EngineBusyError,
    EngineConfig,
    InvalidInputError,
    ModelConfig,
    ModelLoadError,
    ModelNotFoundError,
    ResourceClosedError,
)
from embellama._engine import CacheInfo


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
        engine.load_model(ModelConfig(model_path=tmp_path / "missing.gguf"))
    assert engine.models == ["f16", "q8"]
    with pytest.raises(ConfigurationError, match="already registered"):
        engine.load_model(ModelConfig(model_path=tmp_path / "x.gguf", model_name="f16"))


def test_add_remove_and_close(minilm_f16):
    eng = EmbeddingEngine()
    with pytest.raises(ConfigurationError, match="no models"):
        eng.embed("x")
    eng.load_model(ModelConfig(model_path=minilm_f16, model_name="a"))
    worker = eng._workers["a"].workers[0].thread
    assert eng.embed("hello").shape == (384,)
    eng.unload_model("a")
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
    import embellama._engine.worker as worker_module

    class Slow(_SlowLoad):
        gate = threading.Event()
        entered = threading.Event()

    monkeypatch.setattr(worker_module, "EmbeddingModel", Slow)
    return Slow


def test_a_failed_load_fails_every_pending_request(slow_load, tmp_path):
    eng = EmbeddingEngine()
    missing = ModelConfig(model_path=tmp_path / "gone.gguf", model_name="gone")
    errors = []
    loader = threading.Thread(target=lambda: errors.append(_raises(lambda: eng.load_model(missing))))
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


@pytest.mark.parametrize("how", ["unload_model", "close"])
def test_a_request_racing_removal_runs_or_fails_closed(minilm_f16, monkeypatch, how):
    import embellama._engine.worker as worker_module

    eng = EmbeddingEngine([ModelConfig(model_path=minilm_f16, model_name="race", n_threads=1)])
    looked_up, go = threading.Event(), threading.Event()
    original = worker_module.Worker.submit

    def paused_submit(self, fn):  # the request found its worker; now it is removed before the message lands
        looked_up.set()
        assert go.wait(WAIT)
        return original(self, fn)

    monkeypatch.setattr(worker_module.Worker, "submit", paused_submit)
    outcome = []
    caller = threading.Thread(target=lambda: outcome.append(_raises(lambda: eng.embed("hello", model="race"))))
    caller.start()
    assert looked_up.wait(WAIT)
    getattr(eng, how)(*(["race"] if how == "unload_model" else []))
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
    eng.load_model(ModelConfig(model_path=minilm_f16, model_name="a", n_threads=1))
    eng.load_model(ModelConfig(model_path=minilm_f16, model_name="b", n_threads=1))
    with pytest.raises(ModelNotFoundError):
        eng.load_model(ModelConfig(model_path=tmp_path / "c.gguf", model_name="c"))
    assert eng.models == ["a", "b"] and eng.default_model == "a"
    assert eng.embed("x").shape == (384,) and eng.info("b")["embedding_dimensions"] == 384
    eng.unload_model("a")
    assert eng.default_model == "b"
    repr(eng)
    eng.close()


def test_no_worker_outlives_close_even_after_a_timed_out_load(slow_load, minilm_f16):
    eng = EmbeddingEngine()
    with pytest.raises(TimeoutError):
        eng.load_model(ModelConfig(model_path=minilm_f16, model_name="slow", n_threads=1), timeout=0.2)
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
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"exit status {proc.returncode}\n{proc.stderr[-2000:]}"
        assert "leaving with" in proc.stdout and "Fatal" not in proc.stderr and "Traceback" not in proc.stderr


def test_stress_every_future_resolves_and_no_thread_outlives_close(minilm_f16):
    """Submit, load_model, unload_model and close from several threads at random."""
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
                        eng.load_model(ModelConfig(model_path=minilm_f16, model_name=name, n_threads=1))
                    else:
                        eng.unload_model(name)
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
    print(
        f"stress: {len(futures)} requests, {rounds}x{actors} threads, {rounds * seconds:.1f} s, {outcomes}, "
        f"synchronous refusals {sync_errors}, unresolved 0"
    )


# -- EngineConfig, copies of a model, the bound on pending requests (issue 12) ------------------


def _f16(path, name="m", **kwargs):
    return ModelConfig(model_path=path, model_name=name, n_threads=1, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"workers_per_model": 0}, "workers_per_model must be a positive int"),
        ({"workers_per_model": True}, "workers_per_model must be a positive int"),
        ({"cache_size": -1}, "cache_size must be an int >= 0"),
        ({"max_pending": 1.5}, "max_pending must be an int >= 0"),
        ({"submit_timeout": -1}, "submit_timeout must be a finite number"),
        ({"submit_timeout": float("inf")}, "submit_timeout must be a finite number"),
        ({"cache_batches": 1}, "cache_batches must be a bool"),
        ({"default_model": ""}, "default_model must be a non-empty str"),
    ],
)
def test_engine_config_is_validated(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        EngineConfig(**kwargs)


def test_engine_config_is_frozen_and_keyword_only():
    config = EngineConfig(cache_size=10)
    assert (config.workers_per_model, config.max_pending, config.submit_timeout) == (1, 0, 0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.cache_size = 3  # type: ignore[misc]
    assert dataclasses.replace(config, max_pending=5).max_pending == 5
    with pytest.raises(TypeError):
        EngineConfig(None)  # type: ignore[misc]


def test_engine_config_form_and_default_model(minilm_f16, minilm_q8):
    models = [_f16(minilm_f16, "cf16"), _f16(minilm_q8, "cq8")]
    with EmbeddingEngine(EngineConfig(default_model="cq8"), models=models) as eng:
        assert eng.models == ["cf16", "cq8"] and eng.default_model == "cq8"
        assert eng.config.default_model == "cq8"
        assert np.array_equal(eng.embed("x"), eng.embed("x", model="cq8"))
    with pytest.raises(ConfigurationError, match="not among the models"):
        EmbeddingEngine(EngineConfig(default_model="nope"), models=models[:1])
    with pytest.raises(ConfigurationError, match="not both"):
        EmbeddingEngine(models[:1], models=models[1:])
    with pytest.raises(ConfigurationError, match="differs"):
        EmbeddingEngine(EngineConfig(default_model="cf16"), models=models, default_model="cq8")
    assert _engine_threads("embellama:cf16") == [] and _engine_threads("embellama:cq8") == []


def _block(eng, model=None):
    """Occupy one worker of ``model`` until the returned event is set; returns (release, started, future)."""
    release, started = threading.Event(), threading.Event()

    def hold(m):
        started.set()
        assert release.wait(WAIT)
        return threading.current_thread().name

    return release, started, eng.submit(hold, model=model)


def test_copies_of_a_model_share_its_requests_and_stop_together(minilm_f16):
    eng = EmbeddingEngine(EngineConfig(workers_per_model=3), models=[_f16(minilm_f16)])
    assert eng.info()["workers"] == 3
    blocks = [_block(eng) for _ in range(3)]  # the least busy copy takes each: one per copy
    for _, started, _ in blocks:
        assert started.wait(WAIT)
    for release, _, _ in blocks:
        release.set()
    assert sorted(f.result(WAIT) for _, _, f in blocks) == ["embellama:m#0", "embellama:m#1", "embellama:m#2"]
    assert len(_engine_threads("embellama:m#")) == 3
    assert eng.load_model(_f16(minilm_f16, "two"), workers=2)["workers"] == 2
    eng.unload_model("m")
    assert _engine_threads("embellama:m#") == []
    assert len(_engine_threads("embellama:two#")) == 2
    eng.close()
    assert _engine_threads("embellama:m") == [] and _engine_threads("embellama:two") == []


def test_a_copy_that_fails_to_load_fails_the_model(monkeypatch, minilm_f16):
    import embellama._engine.worker as worker_module

    gates = {"#0": threading.Event(), "#1": threading.Event()}
    entered = threading.Barrier(3)

    class Gated(EmbeddingModel):
        def load(self):
            copy = threading.current_thread().name[-2:]
            entered.wait(WAIT)
            assert gates[copy].wait(WAIT)
            if copy == "#1":
                raise ModelLoadError(str(self.config.model_path), "copy #1 refuses", self.name)
            return super().load()

    monkeypatch.setattr(worker_module, "EmbeddingModel", Gated)
    eng = EmbeddingEngine(EngineConfig(workers_per_model=2))
    errors = []
    loader = threading.Thread(target=lambda: errors.append(_raises(lambda: eng.load_model(_f16(minilm_f16)))))
    loader.start()
    entered.wait(WAIT)  # both copies are loading
    pending = [eng.submit(lambda m: m.embed("hi"), model="m") for _ in range(6)]  # spread over both copies
    gates["#1"].set()  # copy 1 fails first ...
    loader.join(WAIT)
    gates["#0"].set()  # ... then copy 0 loads, and must not run what was queued for the failed model
    assert isinstance(errors[0], ModelLoadError) and "copy #1 refuses" in str(errors[0])
    for future in pending:
        with pytest.raises(ModelLoadError, match="copy #1 refuses"):
            future.result(WAIT)
    assert eng.models == []
    eng.close()
    assert _engine_threads("embellama:m") == []


def test_a_full_engine_refuses_at_once(minilm_f16):
    eng = EmbeddingEngine(EngineConfig(max_pending=2, cache_size=4), models=[_f16(minilm_f16)])
    cached = eng.embed("cached")
    release, started, running = _block(eng)
    assert started.wait(WAIT)
    queued = eng.submit(lambda m: m.embed("queued"))
    began = time.monotonic()
    for attempt in (lambda: eng.submit(lambda m: None), lambda: eng.embed("x"), lambda: eng.embed_batch(["x", "y"])):
        with pytest.raises(EngineBusyError, match="2 requests pending"):
            attempt()
    assert time.monotonic() - began < 5  # no waiting with submit_timeout=0
    assert np.array_equal(eng.embed("cached"), cached)  # the cache answers without a worker
    release.set()
    assert running.result(WAIT) and queued.result(WAIT).shape == (384,)
    assert [eng.submit(lambda m: 1).result(WAIT) for _ in range(5)] == [1] * 5  # every room was given back
    eng.close()


def test_a_full_engine_waits_up_to_submit_timeout(minilm_f16):
    eng = EmbeddingEngine(EngineConfig(max_pending=1, submit_timeout=0.3), models=[_f16(minilm_f16)])
    release, started, running = _block(eng)
    assert started.wait(WAIT)
    began = time.monotonic()
    with pytest.raises(EngineBusyError, match="waited 0.3 s"):
        eng.embed("x")
    assert 0.25 <= time.monotonic() - began < 5
    threading.Timer(0.1, release.set).start()
    assert eng.embed("x").shape == (384,)  # room came up within the 0.3 s
    assert running.done()
    eng.close()


# -- asyncio -----------------------------------------------------------------------------------


async def _with_ticker(coro):
    """Run ``coro`` beside a coroutine that ticks every millisecond; returns (result, ticks)."""
    ticks = 0

    async def tick():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0)
    try:
        result = await coro
    finally:
        ticker.cancel()
    return result, ticks


def test_aembed_never_blocks_the_event_loop(engine):
    texts = [f"sentence number {i} about a topic that takes a while " * 3 for i in range(32)]
    expected = engine.embed_batch(texts, model="q8")

    async def blocking():  # the control: a synchronous call inside the loop freezes the ticker
        return engine.embed_batch(texts, model="q8")

    _, frozen = asyncio.run(_with_ticker(blocking()))
    got, ticks = asyncio.run(_with_ticker(engine.aembed_batch(texts, model="q8")))
    assert frozen == 0 and ticks >= 5, (frozen, ticks)
    assert np.array_equal(got, expected)
    one = asyncio.run(engine.aembed("hello", model="f16"))
    assert np.array_equal(one, engine.embed("hello", model="f16"))
    with pytest.raises(InvalidInputError):
        asyncio.run(engine.aembed(""))


def test_async_calls_wait_for_room_on_the_loop_and_cancel_cleanly(minilm_f16):
    eng = EmbeddingEngine(EngineConfig(max_pending=2, submit_timeout=30), models=[_f16(minilm_f16)])
    release, started, running = _block(eng)
    assert started.wait(WAIT)

    async def scenario():
        queued = asyncio.create_task(eng.aembed("queued"))  # takes the second room, waits for the worker
        await asyncio.sleep(0.05)
        waiting = asyncio.create_task(eng.aembed("waiting"))  # no room: waits on the loop
        await asyncio.sleep(0.05)
        assert not waiting.done()
        queued.cancel()  # its request had not started: cancelled, and its room goes to `waiting`
        with pytest.raises(asyncio.CancelledError):
            await queued
        asyncio.get_running_loop().call_later(0.2, release.set)
        vector, ticks = await _with_ticker(waiting)
        return vector, ticks

    vector, ticks = asyncio.run(scenario())
    assert vector.shape == (384,) and ticks >= 5
    assert running.result(WAIT)
    eng.close()
    busy = EmbeddingEngine(EngineConfig(max_pending=1), models=[_f16(minilm_f16)])
    release, started, running = _block(busy)
    assert started.wait(WAIT)
    with pytest.raises(EngineBusyError):
        asyncio.run(busy.aembed("x"))
    release.set()
    busy.close()


# -- cache -------------------------------------------------------------------------------------


class _Recording(EmbeddingModel):
    """An EmbeddingModel that records the texts each embed_batch call receives."""

    calls: ClassVar[list[list[str]]] = []

    def embed_batch(self, texts, **kwargs):
        type(self).calls.append(list(texts))
        return super().embed_batch(texts, **kwargs)


@pytest.fixture
def recording(monkeypatch):
    import embellama._engine.worker as worker_module

    class Rec(_Recording):
        calls: ClassVar[list[list[str]]] = []

    monkeypatch.setattr(worker_module, "EmbeddingModel", Rec)
    return Rec


def test_cache_is_an_lru_with_lru_cache_statistics(minilm_f16, recording):
    with EmbeddingEngine(EngineConfig(cache_size=2), models=[_f16(minilm_f16)]) as eng:
        a = eng.embed("a")
        a[:] = 0  # the caller's copy: the cache keeps its own
        assert not np.array_equal(eng.embed("a"), a)
        eng.embed("b")
        eng.embed("c")  # evicts "a" (b was used after a)
        eng.embed("b")
        assert eng.cache_info() == CacheInfo(hits=2, misses=3, maxsize=2, currsize=2)
        eng.embed("a")
        assert eng.cache_info().misses == 4
        raw = eng.embed("a", normalize=False)  # another normalization is another entry
        assert eng.cache_info().misses == 5 and not np.allclose(raw, eng.embed("a"))
        assert recording.calls == [["a"], ["b"], ["c"], ["a"], ["a"]]
        eng.cache_clear()
        assert eng.cache_info() == CacheInfo(0, 0, 2, 0)
        eng.unload_model("m")
        eng.load_model(_f16(minilm_f16))
        eng.embed("b")
        assert eng.cache_info().misses == 1  # a new load of the same name starts afresh
    with EmbeddingEngine([_f16(minilm_f16)]) as plain:
        plain.embed("a")
        assert plain.cache_info() == CacheInfo(0, 0, 0, 0)


@pytest.fixture(scope="module")
def cache_pair(minilm_f16):
    """Two engines on the same model: without a cache, and with a small one (so entries get evicted)."""
    with (
        EmbeddingEngine([_f16(minilm_f16)]) as plain,
        EmbeddingEngine(EngineConfig(cache_size=3), models=[_f16(minilm_f16)]) as cached,
    ):
        yield plain, cached


VOCAB = ["a cat", "a dog", "the stock market", "quantum physics", "ein Hund", "猫", "x"]
operations = st.lists(
    st.tuples(
        st.one_of(st.sampled_from(VOCAB), st.lists(st.sampled_from(VOCAB), min_size=1, max_size=5)),
        st.sampled_from([None, False, "l1"]),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_results_are_identical_with_and_without_the_cache(cache_pair, ops):
    plain, cached = cache_pair
    for request, normalize in ops:
        if isinstance(request, str):
            expected, got = (e.embed(request, normalize=normalize) for e in (plain, cached))
        else:
            expected, got = (e.embed_batch(request, normalize=normalize) for e in (plain, cached))
        assert got.dtype == expected.dtype and np.array_equal(got, expected)  # bit for bit
    assert cached.cache_info().currsize <= 3


def test_cache_batches_sends_only_the_misses(minilm_f16, recording):
    config = EngineConfig(cache_size=100, cache_batches=True)
    with EmbeddingEngine(config, models=[_f16(minilm_f16, truncate=False)]) as eng:
        first = eng.embed_batch(["a", "b"])
        calls = []
        got = eng.embed_batch(["b", "c", "a", "c"], progress=lambda done, total: calls.append((done, total)))
        assert recording.calls == [["a", "b"], ["c"]]  # the cache answered b and a; c went once
        assert calls[-1] == (4, 4)
        assert np.array_equal(got[0], first[1]) and np.array_equal(got[2], first[0])
        assert np.array_equal(got[1], got[3])
        with EmbeddingModel(_f16(minilm_f16)) as direct:
            expected = direct.embed_batch(["b", "c", "a", "c"])
        np.testing.assert_allclose(got, expected, atol=1e-6)  # equal to float rounding, not bit for bit
        assert eng.cache_info()[:2] == (2, 4)
        with pytest.raises(InvalidInputError, match=r"limit is 512.*\(input #1\)"):
            eng.embed_batch(["a", "word " * 600])  # the index is the caller's, not the misses'
        assert np.array_equal(eng.embed_batch(["c", "b", "a"]), got[[1, 0, 2]])  # all from the cache
        assert recording.calls[-1] == ["word " * 600]


# -- streaming and progress --------------------------------------------------------------------


def test_embed_iter_streams_chunks_in_order(engine):
    texts = [f"text number {i}" for i in range(30)]
    read = []

    def source():
        for text in texts:
            read.append(text)
            yield text

    calls = []
    chunks = engine.embed_iter(source(), model="q8", chunk_size=4, progress=lambda d, t: calls.append((d, t)))
    first = next(chunks)
    assert len(read) < len(texts)  # lazily read: a few chunks ahead, not the whole stream
    rest = list(chunks)
    assert [len(c) for c in [first, *rest]] == [4] * 7 + [2]
    for i, chunk in enumerate([first, *rest]):
        assert np.array_equal(chunk, engine.embed_batch(texts[4 * i : 4 * i + 4], model="q8"))
    assert calls[0] == (4, None) and calls[-1] == (30, 30)
    sized = []
    list(engine.embed_iter(texts, chunk_size=7, progress=lambda d, t: sized.append((d, t))))
    assert sized == [(7, 30), (14, 30), (21, 30), (28, 30), (30, 30)]
    with pytest.raises(InvalidInputError, match=r"text is empty \(input #9\)"):
        list(engine.embed_iter(["ok"] * 9 + [""], chunk_size=4))
    assert list(engine.embed_iter([], chunk_size=4)) == []
    with pytest.raises(ConfigurationError, match="chunk_size"):
        engine.embed_iter(texts, chunk_size=0)


def test_embed_iter_stopped_early_gives_its_room_back(minilm_f16):
    with EmbeddingEngine(EngineConfig(max_pending=3), models=[_f16(minilm_f16)]) as eng:
        for chunk in eng.embed_iter((f"t{i}" for i in range(1000)), chunk_size=5):
            assert chunk.shape == (5, 384)
            break
        deadline = time.monotonic() + WAIT
        while True:  # the chunk already running finishes; the queued one was cancelled
            try:
                futures = [eng.submit(lambda m: 1) for _ in range(3)]
                break
            except EngineBusyError:
                assert time.monotonic() < deadline
                time.sleep(0.01)
        assert [f.result(WAIT) for f in futures] == [1, 1, 1]


def test_progress_runs_on_the_worker_thread(engine):
    texts = [f"progress {i}" for i in range(20)]
    calls = []
    result = engine.embed_batch(
        texts,
        model="q8",
        batch_size=4,
        progress=lambda done, total: calls.append((done, total, threading.current_thread().name)),
    )
    assert result.shape == (20, 384)
    assert [c[:2] for c in calls] == [(4, 20), (8, 20), (12, 20), (16, 20), (20, 20)]
    assert {c[2] for c in calls} == {"embellama:q8"}
    got = []
    asyncio.run(engine.aembed_batch(texts, model="q8", progress=lambda d, t: got.append((d, t))))
    assert got[-1] == (20, 20)


# -- property tests: random text, batch sizes, worker counts; many threads, two models -------------

any_char = st.characters(codec=None, exclude_categories=())
random_text = st.one_of(
    st.text(any_char, max_size=40),
    st.lists(st.sampled_from(["Hello", "мир", "世界", "🙂", "\x00", "\ud800", "[SEP]", " ", "\n"]), max_size=20).map(
        " ".join
    ),
)


@pytest.fixture(scope="module")
def engines_by_workers(minilm_f16):
    """EmbeddingEngines of the F16 model with 1, 2 and 3 copies."""
    # max_batch_texts=1: no dynamic batching, so each request's vectors are bit-identical to a serial call's
    # (with batching they equal them to float rounding: tests/engine/test_engine_batching.py)
    engines = {
        n: EmbeddingEngine(EngineConfig(workers_per_model=n, max_batch_texts=1), models=[_f16(minilm_f16)])
        for n in (1, 2, 3)
    }
    yield engines
    for eng in engines.values():
        eng.close()


def _outcome(fn):
    try:
        return fn()
    except (InvalidInputError, ConfigurationError) as exc:
        return f"{type(exc).__name__}: {exc}"


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    requests=st.lists(st.lists(random_text, max_size=10), min_size=1, max_size=4),
    batch_size=st.one_of(st.none(), st.integers(1, 8)),
    workers=st.sampled_from([1, 2, 3]),
)
def test_random_unicode_batches_keep_order_on_any_number_of_workers(engines_by_workers, requests, batch_size, workers):
    reference, eng = engines_by_workers[1], engines_by_workers[workers]
    expected = [_outcome(lambda r=r: reference.embed_batch(r, batch_size=batch_size)) for r in requests]
    with ThreadPoolExecutor(len(requests)) as pool:  # the requests at once, spread over the copies
        got = list(pool.map(lambda r: _outcome(lambda: eng.embed_batch(r, batch_size=batch_size)), requests))
    for texts, want, have in zip(requests, expected, got, strict=True):
        if isinstance(want, str):
            assert have == want
            continue
        assert isinstance(have, np.ndarray) and have.shape == (len(texts), 384)
        assert np.array_equal(have, want)
        for text, row in zip(texts, have, strict=True):  # order: row i is text i's vector
            assert float(row @ reference.embed(text)) > 0.999


def test_eight_threads_fifty_requests_each_across_two_models(minilm_f16, minilm_q8):
    rng = random.Random(12)
    words = ["cat", "dog", "market", "rain", "guitar", "onion", "Zürich", "東京", "🙂", "physics"]
    requests = []
    for i in range(8 * 50):
        model = rng.choice(["f16", "q8"])
        texts = [" ".join(rng.choices(words, k=rng.randint(1, 8))) for _ in range(rng.randint(1, 3))]
        requests.append((model, texts if i % 3 else texts[0]))
    configs = {"f16": _f16(minilm_f16, "f16"), "q8": _f16(minilm_q8, "q8")}
    expected = []
    for name, config in configs.items():  # single-threaded: a model used directly from this thread
        with EmbeddingModel(config) as direct:
            expected += [
                (i, direct.embed(t) if isinstance(t, str) else direct.embed_batch(t))
                for i, (model, t) in enumerate(requests)
                if model == name
            ]
    expected_by_index = dict(expected)

    # max_batch_texts=1: bit-identical to the direct model (dynamic batching: tests/engine/test_engine_batching.py)
    with EmbeddingEngine(EngineConfig(workers_per_model=2, max_batch_texts=1), models=list(configs.values())) as eng:
        barrier = threading.Barrier(8)

        def client(k):
            barrier.wait(WAIT)
            out = []
            for i in range(k, len(requests), 8):
                model, t = requests[i]
                out.append((i, eng.embed(t, model=model) if isinstance(t, str) else eng.embed_batch(t, model=model)))
            return out

        with ThreadPoolExecutor(8) as pool:
            results = [r for chunk in pool.map(client, range(8)) for r in chunk]
    assert len(results) == 400
    for i, vectors in results:
        assert np.array_equal(vectors, expected_by_index[i]), f"request {i} ({requests[i][0]}) differs"
