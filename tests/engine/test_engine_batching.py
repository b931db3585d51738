# SPDX-License-Identifier: Apache-2.0
"""Dynamic batching: requests waiting for the same copy of a model share one llama.cpp call (issue 20)."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

import numpy as np
import pytest

from embellama import (
    ConfigurationError,
    EmbeddingEngine,
    EmbeddingError,
    EmbeddingModel,
    EngineBusyError,
    EngineConfig,
    InvalidInputError,
    ModelConfig,
    ResourceClosedError,
)

WAIT = 60  # seconds: far beyond any request here; reaching it means a future was left unresolved

TEXTS = [f"request {i}: a sentence about topic {i % 7} and a few more words" for i in range(40)]


def _config(path, name="m", **kwargs):
    return ModelConfig(model_path=path, model_name=name, n_threads=1, **kwargs)


class _Recording(EmbeddingModel):
    """An EmbeddingModel that records the texts of each embed_batch call."""

    calls: ClassVar[list[list]] = []
    fail_joined: ClassVar[bool] = False
    events: ClassVar[list[tuple]] = []  # ("tokenize", text) and ("llama call",), in the worker's order

    def embed_batch(self, texts, **kwargs):
        type(self).calls.append(list(texts))
        if type(self).fail_joined and len(texts) > 1:
            raise EmbeddingError("joined calls fail in this test", self.name)
        return super().embed_batch(texts, **kwargs)

    def _tokenize(self, model, text, *args, **kwargs):
        type(self).events.append(("tokenize", text))
        return super()._tokenize(model, text, *args, **kwargs)

    def before_llama_calls(self, hook):
        def logged():
            type(self).events.append(("llama call",))
            if hook is not None:
                hook()

        super().before_llama_calls(logged)


@pytest.fixture
def recording(monkeypatch):
    import embellama._engine.worker as worker_module

    class Rec(_Recording):
        calls: ClassVar[list[list]] = []
        fail_joined: ClassVar[bool] = False
        events: ClassVar[list[tuple]] = []

    monkeypatch.setattr(worker_module, "EmbeddingModel", Rec)
    return Rec


@pytest.fixture(scope="module")
def reference(minilm_f16):
    """Each text of TEXTS embedded alone, and all of them by one embed_batch."""
    with EmbeddingModel(_config(minilm_f16)) as model:
        alone = {t: model.embed(t) for t in TEXTS}
        batch = model.embed_batch(TEXTS)
    return alone, batch


def _block(eng, model=None):
    """Occupy one worker until the returned event is set; returns (release, future)."""
    release, started = threading.Event(), threading.Event()

    def hold(m):
        started.set()
        assert release.wait(WAIT)
        return "held"

    future = eng.submit(hold, model=model)
    assert started.wait(WAIT)
    return release, future


def _wait_pending(eng, n):
    """Wait until ``n`` requests are pending on the engine's workers."""
    deadline = time.monotonic() + WAIT
    while eng.stats()["pending"] < n:
        assert time.monotonic() < deadline, eng.stats()
        time.sleep(0.005)


def _queue(eng, calls, pool):
    """Start ``calls`` (functions of the engine) on threads, one after another once each is queued."""
    futures = []
    for i, call in enumerate(calls):
        futures.append(pool.submit(call))
        _wait_pending(eng, i + 2)  # the blocking request and those queued so far: keeps their order
    return futures


def test_waiting_requests_share_one_call_and_each_gets_its_own_rows(minilm_f16, recording, reference):
    alone, batch = reference
    texts = TEXTS[:12]  # one llama.cpp call's worth
    with EmbeddingEngine([_config(minilm_f16)]) as eng, ThreadPoolExecutor(len(texts)) as pool:
        release, held = _block(eng)
        futures = _queue(eng, [lambda t=t: eng.embed(t) for t in texts], pool)
        release.set()
        results = [f.result(WAIT) for f in futures]
        assert held.result(WAIT) == "held"
        assert recording.calls == [texts]  # one llama.cpp call for the twelve requests, in their order
        for text, vector, row in zip(texts, results, batch[:12], strict=True):
            assert vector.shape == (384,)
            assert float(vector @ row) > 0.9999  # equal to embed_batch's vector of the same text
            assert float(vector @ alone[text]) > 0.9999  # and its own: nothing mixed up
        stats = eng.stats()
        assert (stats["joined_calls"], stats["joined_requests"], stats["pending"]) == (1, 12, 0)


def test_a_joined_call_leaves_its_nearly_empty_last_llama_call_to_the_next(
    minilm_f16, recording, reference, monkeypatch
):
    import embellama.llama as llama_module

    alone, batch = reference
    texts = TEXTS[:20]  # more than one llama.cpp call of short texts, the second nearly empty
    tokens: list[int] = []
    process = llama_module.Context.process

    def counted(self, b):
        tokens.append(b.n_tokens)
        return process(self, b)

    with EmbeddingEngine([_config(minilm_f16)]) as eng, ThreadPoolExecutor(len(texts)) as pool:
        plan = eng.submit(lambda m: m.call_plan([len(m.tokenize(t)) for t in texts])).result(WAIT)
        release, _ = _block(eng)
        futures = _queue(eng, [lambda t=t: eng.embed(t) for t in texts], pool)
        monkeypatch.setattr(llama_module.Context, "process", counted)
        release.set()
        results = [f.result(WAIT) for f in futures]
    assert len(plan) == 2 and min(fill for _, fill in plan) < 0.75  # what embed_batch of the twenty would run
    first, second = recording.calls
    assert first + second == texts and len(second) < len(first)  # the oldest first, the newest left for later
    assert len(tokens) == len(plan)  # no llama.cpp call more than embed_batch's: the first fills one whole call
    assert tokens[0] > 0.75 * 256
    for text, vector, row in zip(texts, results, batch[:20], strict=True):
        assert float(vector @ row) > 0.9999 and float(vector @ alone[text]) > 0.9999


def test_a_joined_call_tokenizes_each_text_once(minilm_f16, reference, monkeypatch):
    import embellama._models.embedding as embedding_module

    alone, batch = reference
    texts = TEXTS[:12]
    seen: list[str] = []
    tokenize = embedding_module.text_tokens

    def counted(model, text, *args, **kwargs):
        seen.append(text)
        return tokenize(model, text, *args, **kwargs)

    with EmbeddingEngine([_config(minilm_f16)]) as eng, ThreadPoolExecutor(len(texts)) as pool:
        release, _ = _block(eng)
        futures = _queue(eng, [lambda t=t: eng.embed(t) for t in texts], pool)
        monkeypatch.setattr(embedding_module, "text_tokens", counted)
        release.set()
        results = [f.result(WAIT) for f in futures]
        assert eng.stats()["joined_calls"] == 1
        assert eng.embed(texts[0], prompt="query: ").shape == (384,)  # a prompt's tokens are never reused
    assert sorted(seen) == sorted([*texts, texts[0]])  # counted as they joined, not again in the call
    for text, vector, row in zip(texts, results, batch[:12], strict=True):
        assert float(vector @ row) > 0.9999 and float(vector @ alone[text]) > 0.9999


def test_a_lone_request_runs_alone_at_once_and_bit_identical(minilm_f16, recording, reference):
    alone, _ = reference
    with EmbeddingEngine(EngineConfig(max_batch_wait_ms=0), models=[_config(minilm_f16)]) as eng:
        for text in TEXTS[:3]:
            assert np.array_equal(eng.embed(text), alone[text])
    assert recording.calls == [[t] for t in TEXTS[:3]]


def test_batch_requests_join_too_and_keep_their_order(minilm_f16, recording, reference):
    alone, _ = reference
    requests = [TEXTS[0:3], TEXTS[3:4], TEXTS[4:9], TEXTS[9:11]]
    with EmbeddingEngine([_config(minilm_f16)]) as eng, ThreadPoolExecutor(4) as pool:
        release, _ = _block(eng)
        futures = _queue(eng, [lambda r=r: eng.embed_batch(r) for r in requests], pool)
        release.set()
        for texts, future in zip(requests, futures, strict=True):
            got = future.result(WAIT)
            assert got.shape == (len(texts), 384)
            for text, row in zip(texts, got, strict=True):
                assert float(row @ alone[text]) > 0.9999
    assert recording.calls == [TEXTS[:11]]


def test_embed_embed_batch_and_aembed_requests_join_each_other(minilm_f16, recording, reference):
    alone, _ = reference
    calls = [
        lambda eng: eng.embed(TEXTS[0]),
        lambda eng: eng.embed_batch(TEXTS[1:3]),
        lambda eng: asyncio.run(eng.aembed(TEXTS[3])),
        lambda eng: asyncio.run(eng.aembed_batch(TEXTS[4:6])),
    ]
    with EmbeddingEngine([_config(minilm_f16)]) as eng, ThreadPoolExecutor(len(calls)) as pool:
        release, _ = _block(eng)
        futures = _queue(eng, [lambda c=c: c(eng) for c in calls], pool)
        release.set()
        got = [f.result(WAIT) for f in futures]
    assert recording.calls == [TEXTS[:6]]
    rows = [got[0], *got[1], got[2], *got[3]]
    assert all(float(row @ alone[t]) > 0.9999 for t, row in zip(TEXTS[:6], rows, strict=True))


def test_a_bad_text_fails_only_its_own_request(minilm_f16, recording):
    calls = [
        lambda eng: eng.embed("fine one"),
        lambda eng: eng.embed(""),
        lambda eng: eng.embed_batch(["fine two", 42]),
        lambda eng: eng.embed("word " * 600),
        lambda eng: eng.embed("fine three"),
    ]
    with (
        EmbeddingEngine([_config(minilm_f16, truncate=False)]) as eng,
        EmbeddingEngine(EngineConfig(max_batch_texts=1), models=[_config(minilm_f16, "alone", truncate=False)]) as solo,
        ThreadPoolExecutor(len(calls)) as pool,
    ):
        release, _ = _block(eng)
        futures = _queue(eng, [lambda c=c: c(eng) for c in calls], pool)
        release.set()
        outcomes = []
        for future in futures:
            try:
                outcomes.append(future.result(WAIT))
            except InvalidInputError as exc:
                outcomes.append(exc)
        # the good requests shared a call; each bad one ran on its own, for its own error
        assert recording.calls == [["fine one", "fine three"], [""], ["fine two", 42], ["word " * 600]]
        for call, outcome in zip(calls, outcomes, strict=True):  # as each request alone would end
            try:
                expected = call(solo)
            except InvalidInputError as exc:
                assert isinstance(outcome, InvalidInputError)
                assert str(outcome).replace("'m'", "'alone'") == str(exc)
            else:
                assert isinstance(outcome, np.ndarray) and float(outcome @ expected) > 0.9999


def test_a_failing_joined_call_runs_each_request_alone(minilm_f16, recording, reference):
    alone, _ = reference
    recording.fail_joined = True
    with EmbeddingEngine([_config(minilm_f16)]) as eng, ThreadPoolExecutor(4) as pool:
        release, _ = _block(eng)
        futures = _queue(eng, [lambda t=t: eng.embed(t) for t in TEXTS[:4]], pool)
        release.set()
        for text, future in zip(TEXTS[:4], futures, strict=True):
            assert np.array_equal(future.result(WAIT), alone[text])  # run alone: bit-identical
    assert recording.calls == [TEXTS[:4], *([t] for t in TEXTS[:4])]


def test_max_batch_texts_caps_each_call_and_one_turns_batching_off(minilm_f16, recording):
    with EmbeddingEngine(EngineConfig(max_batch_texts=3), models=[_config(minilm_f16)]) as eng:
        with ThreadPoolExecutor(7) as pool:
            release, _ = _block(eng)
            futures = _queue(eng, [lambda t=t: eng.embed(t) for t in TEXTS[:7]], pool)
            release.set()
            assert all(f.result(WAIT).shape == (384,) for f in futures)
        assert recording.calls == [TEXTS[0:3], TEXTS[3:6], TEXTS[6:7]]
        recording.calls.clear()
        with ThreadPoolExecutor(2) as pool:  # a request of more texts than the cap runs alone
            release, _ = _block(eng)
            futures = _queue(eng, [lambda: eng.embed_batch(TEXTS[:4]), lambda: eng.embed(TEXTS[4])], pool)
            release.set()
            assert [f.result(WAIT).shape for f in futures] == [(4, 384), (384,)]
        assert recording.calls == [TEXTS[:4], TEXTS[4:5]]
    recording.calls.clear()
    with EmbeddingEngine(EngineConfig(max_batch_texts=1), models=[_config(minilm_f16)]) as off:
        with ThreadPoolExecutor(5) as pool:
            release, _ = _block(off)
            futures = _queue(off, [lambda t=t: off.embed(t) for t in TEXTS[:5]], pool)
            release.set()
            assert all(f.result(WAIT).shape == (384,) for f in futures)
        assert recording.calls == [[t] for t in TEXTS[:5]]
        assert off.stats()["joined_calls"] == 0


def test_a_joined_call_holds_at_most_one_llama_call_of_tokens(minilm_f16, recording):
    long_texts = [f"text {i} " + "many words in a long sentence " * 25 for i in range(6)]  # ~160 tokens each
    with EmbeddingEngine([_config(minilm_f16)]) as eng, ThreadPoolExecutor(6) as pool:
        budget = eng.submit(lambda m: m.call_tokens).result(WAIT)
        assert budget <= eng.submit(lambda m: m.token_budget).result(WAIT)  # on the CPU's tiles, 256 of 512
        count = eng.submit(lambda m: [len(m.tokenize(t)) for t in long_texts]).result(WAIT)
        release, _ = _block(eng)
        futures = _queue(eng, [lambda t=t: eng.embed(t) for t in long_texts], pool)
        release.set()
        assert all(f.result(WAIT).shape == (384,) for f in futures)
    sizes = {t: n for t, n in zip(long_texts, count, strict=True)}
    assert [t for call in recording.calls for t in call] == long_texts  # in order, each once
    assert len(recording.calls) > 1
    for call in recording.calls:
        assert sum(sizes[t] for t in call) <= budget


def test_requests_of_other_settings_do_not_join(minilm_f16, recording, reference):
    alone, _ = reference
    calls = [
        lambda eng: eng.embed(TEXTS[0]),
        lambda eng: eng.embed(TEXTS[1]),
        lambda eng: eng.embed(TEXTS[2], normalize=False),
        lambda eng: eng.embed(TEXTS[3], normalize=False),
        lambda eng: eng.embed_batch(TEXTS[4:6], batch_size=1),  # a batch_size: runs on its own
        lambda eng: eng.embed_batch(TEXTS[6:8], progress=lambda d, t: None),  # progress: on its own
        lambda eng: eng.embed(TEXTS[8]),
    ]
    with EmbeddingEngine([_config(minilm_f16)]) as eng, ThreadPoolExecutor(len(calls)) as pool:
        release, _ = _block(eng)
        futures = _queue(eng, [lambda c=c: c(eng) for c in calls], pool)
        release.set()
        results = [f.result(WAIT) for f in futures]
    assert recording.calls == [TEXTS[0:2], TEXTS[2:4], TEXTS[4:6], TEXTS[6:8], TEXTS[8:9]]
    raw = results[2]
    assert abs(float(np.linalg.norm(raw)) - 1) > 1e-3  # not normalized
    assert float(raw @ alone[TEXTS[2]]) / float(np.linalg.norm(raw)) > 0.9999


def test_cancelled_requests_are_skipped_and_the_rest_answered(minilm_f16, recording):
    with EmbeddingEngine([_config(minilm_f16)]) as eng:
        release, _ = _block(eng)

        async def scenario():
            tasks = [asyncio.create_task(eng.aembed(t)) for t in TEXTS[:6]]
            while eng.stats()["pending"] < 7:
                await asyncio.sleep(0.005)
            for task in tasks[1::2]:
                task.cancel()
            # Let the loop carry the cancellations to the engine's futures before the worker runs again
            # (cancel() only schedules them: releasing at once raced the worker).
            await asyncio.sleep(0.05)
            release.set()
            return await asyncio.gather(*tasks, return_exceptions=True)

        outcomes = asyncio.run(asyncio.wait_for(scenario(), WAIT))
    for i, outcome in enumerate(outcomes):
        if i % 2:
            assert isinstance(outcome, asyncio.CancelledError)
        else:
            assert isinstance(outcome, np.ndarray) and outcome.shape == (384,)
    assert recording.calls == [TEXTS[0:6:2]]  # the cancelled requests were never computed


def test_close_answers_every_waiting_request(minilm_f16):
    eng = EmbeddingEngine([_config(minilm_f16)])
    with ThreadPoolExecutor(10) as pool:
        release, held = _block(eng)
        futures = _queue(eng, [lambda t=t: eng.embed(t) for t in TEXTS[:10]], pool)
        worker = eng._workers["m"].workers[0]
        closer = threading.Thread(target=eng.close)
        closer.start()
        deadline = time.monotonic() + WAIT
        while not worker.stopping:  # close() has stopped the worker; its running request goes on
            assert time.monotonic() < deadline
            time.sleep(0.005)
        assert not any(f.done() for f in futures)
        release.set()
        closer.join(WAIT)
        assert not closer.is_alive()
        assert held.result(WAIT) == "held"
        for future in futures:  # each caller's thread wakes and raises on its own time: wait for it, bounded
            with pytest.raises(ResourceClosedError):
                future.result(WAIT)


def test_a_joined_calls_answers_are_handed_out_as_the_next_llama_call_starts(minilm_f16, recording, monkeypatch):
    import embellama._engine.worker as worker_module

    settle = worker_module._settle

    def logged(future, fn, arg):  # runs on the worker thread, in its order with the model's events
        settle(future, fn, arg)
        recording.events.append(("answer",))

    monkeypatch.setattr(worker_module, "_settle", logged)
    config = EngineConfig(max_batch_texts=3)
    with EmbeddingEngine(config, models=[_config(minilm_f16)]) as eng, ThreadPoolExecutor(6) as pool:
        release, _ = _block(eng)
        futures = _queue(eng, [lambda t=t: eng.embed(t) for t in TEXTS[:6]], pool)
        recording.events.clear()
        release.set()
        assert all(f.result(WAIT).shape == (384,) for f in futures)
    assert recording.calls == [TEXTS[0:3], TEXTS[3:6]]
    events = recording.events
    answers = [i for i, e in enumerate(events) if e == ("answer",)]
    assert answers[0] == 0  # the blocking function's own answer, then the six requests'
    answers = answers[1:]
    assert len(answers) == 6
    # the first call's callers are woken only once the second call is tokenized, as its first llama.cpp call starts
    last_tokenize = max(i for i, e in enumerate(events) if e == ("tokenize", TEXTS[5]))
    assert answers[0] > last_tokenize
    assert events[answers[0] - 1] == ("llama call",)
    assert answers[:3] == list(range(answers[0], answers[0] + 3))


def test_callers_that_ask_again_at_once_join_the_next_call_together(minilm_f16, recording, reference, monkeypatch):
    """Six threads, each asking for one text after another: after a joined call, the worker waits for its callers'
    next requests (while the waiting ones do not fill a call), so every call holds all six, not a few at a time."""
    import embellama._engine.worker as worker_module

    monkeypatch.setattr(worker_module, "SETTLE_GAP", WAIT)  # a slow test machine still counts as "at once"
    monkeypatch.setattr(worker_module, "SETTLE_MAX", WAIT)
    alone, _ = reference
    texts, rounds = TEXTS[:6], 5

    def client(text):
        return [eng.embed(text) for _ in range(rounds)]

    with EmbeddingEngine([_config(minilm_f16)]) as eng, ThreadPoolExecutor(len(texts)) as pool:
        release, _ = _block(eng)
        futures = _queue(eng, [lambda t=t: client(t) for t in texts], pool)
        release.set()
        answers = [f.result(WAIT) for f in futures]
    assert len(recording.calls) == rounds  # old code: the first arrivals ran ahead, a few texts per call
    assert all(sorted(call) == sorted(texts) for call in recording.calls)
    for text, vectors in zip(texts, answers, strict=True):
        assert all(float(v @ alone[text]) > 0.9999 for v in vectors)


def test_callers_are_answered_before_the_worker_waits_for_their_next_requests(minilm_f16, recording, monkeypatch):
    """The wait for callers' next requests comes after their answers, and ends once ``SETTLE_GAP`` passes without a
    request (here 2 s), long before ``SETTLE_MAX`` (10 s)."""
    import embellama._engine.worker as worker_module

    monkeypatch.setattr(worker_module, "SETTLE_GAP", 2.0)
    monkeypatch.setattr(worker_module, "SETTLE_MAX", 10.0)
    with EmbeddingEngine([_config(minilm_f16)]) as eng, ThreadPoolExecutor(2) as pool:
        release, _ = _block(eng)
        futures = _queue(eng, [lambda t=t: eng.embed(t) for t in TEXTS[:2]], pool)
        began = time.monotonic()
        release.set()
        assert all(f.result(WAIT).shape == (384,) for f in futures)
        assert time.monotonic() - began < 1.5  # not kept for the wait
        began = time.monotonic()
        assert eng.embed(TEXTS[2]).shape == (384,)  # one of two callers asks again: it waits for the other's
        assert 1.0 < time.monotonic() - began < 6.0  # for SETTLE_GAP, not SETTLE_MAX
    assert recording.calls == [TEXTS[:2], [TEXTS[2]]]


def test_a_joined_calls_answers_are_not_held_back_by_a_function_that_follows(minilm_f16, recording):
    second, started = threading.Event(), threading.Event()

    def hold(m):
        started.set()
        assert second.wait(WAIT)
        return "second"

    with EmbeddingEngine([_config(minilm_f16)]) as eng, ThreadPoolExecutor(3) as pool:
        release, _ = _block(eng)
        futures = _queue(eng, [lambda t=t: eng.embed(t) for t in TEXTS[:3]], pool)
        held = eng.submit(hold)
        _wait_pending(eng, 5)
        release.set()
        assert started.wait(WAIT)
        assert all(f.result(WAIT).shape == (384,) for f in futures)  # answered while the function still runs
        assert not held.done()
        second.set()
        assert held.result(WAIT) == "second"
    assert recording.calls == [TEXTS[:3]]


def test_the_hook_runs_once_per_batch_before_its_first_llama_call(minilm_f16):
    events: list[object] = []
    with EmbeddingModel(_config(minilm_f16)) as model:
        model.before_llama_calls(lambda: events.append("hook"))
        model.embed_batch(TEXTS * 20, progress=lambda done, total: events.append(done))
        model.before_llama_calls(None)
        model.embed_batch(TEXTS[:3], progress=lambda done, total: events.append(done))
    calls = [e for e in events if e != "hook"]
    assert len(calls) > 2  # several llama.cpp calls in the first batch
    assert events[0] == "hook" and events.count("hook") == 1


def test_max_pending_counts_each_waiting_request(minilm_f16):
    config = EngineConfig(max_pending=4)
    with EmbeddingEngine(config, models=[_config(minilm_f16)]) as eng, ThreadPoolExecutor(3) as pool:
        release, _ = _block(eng)
        futures = _queue(eng, [lambda t=t: eng.embed(t) for t in TEXTS[:3]], pool)
        with pytest.raises(EngineBusyError, match="4 requests pending"):
            eng.embed("one too many")
        release.set()
        assert all(f.result(WAIT).shape == (384,) for f in futures)
        assert [f.result(WAIT) for f in [eng.submit(lambda m: 1) for _ in range(4)]] == [1] * 4


def test_the_cache_keeps_only_vectors_computed_alone(minilm_f16, reference):
    alone, _ = reference
    with EmbeddingEngine(EngineConfig(cache_size=100), models=[_config(minilm_f16)]) as eng:
        with ThreadPoolExecutor(4) as pool:
            release, _ = _block(eng)
            futures = _queue(eng, [lambda t=t: eng.embed(t) for t in TEXTS[:4]], pool)
            release.set()
            assert all(f.result(WAIT).shape == (384,) for f in futures)
        assert eng.cache_info().currsize == 0  # they shared a call: not bit-identical to embed alone
        for text in TEXTS[:4]:
            assert np.array_equal(eng.embed(text), alone[text])  # computed alone now, and cached
        assert eng.cache_info().currsize == 4
        for text in TEXTS[:4]:
            assert np.array_equal(eng.embed(text), alone[text])
        assert eng.cache_info().hits == 4
    shared = EngineConfig(cache_size=100, cache_batches=True)  # cache_batches: shared calls fill it too
    with EmbeddingEngine(shared, models=[_config(minilm_f16)]) as eng, ThreadPoolExecutor(4) as pool:
        release, _ = _block(eng)
        futures = _queue(eng, [lambda t=t: eng.embed(t) for t in TEXTS[:4]], pool)
        release.set()
        got = [f.result(WAIT) for f in futures]
        assert eng.cache_info().currsize == 4
        assert all(np.array_equal(eng.embed(t), v) for t, v in zip(TEXTS[:4], got, strict=True))


def test_max_batch_wait_ms_lets_a_free_worker_wait_for_company(minilm_f16, recording):
    config = EngineConfig(max_batch_wait_ms=400)
    with EmbeddingEngine(config, models=[_config(minilm_f16)]) as eng, ThreadPoolExecutor(2) as pool:
        first = pool.submit(eng.embed, TEXTS[0])
        time.sleep(0.05)
        second = pool.submit(eng.embed, TEXTS[1])
        assert first.result(WAIT).shape == second.result(WAIT).shape == (384,)
        assert recording.calls == [TEXTS[:2]]
        began = time.monotonic()
        eng.embed(TEXTS[2])  # alone: waits out the 0.4 s, then runs alone
        assert 0.3 < time.monotonic() - began < WAIT
        assert recording.calls[-1] == [TEXTS[2]]


def test_pooling_none_requests_join_into_token_matrices(minilm_f16):
    with (
        EmbeddingModel(_config(minilm_f16, pooling="none")) as direct,
        EmbeddingEngine([_config(minilm_f16, pooling="none")]) as eng,
        ThreadPoolExecutor(3) as pool,
    ):
        release, _ = _block(eng)
        futures = _queue(eng, [lambda t=t: eng.embed_batch([t]) for t in TEXTS[:3]], pool)
        release.set()
        for text, future in zip(TEXTS[:3], futures, strict=True):
            (got,) = future.result(WAIT)
            expected = direct.embed(text)
            assert got.shape == expected.shape
            assert float(np.min(np.sum(got * expected, axis=1))) > 0.9999
        assert eng.stats()["joined_calls"] == 1


def test_many_concurrent_clients_match_embed_batch(minilm_f16, reference):
    """64 threads, each one text at a time: every answer is its own text's vector (cos >= 0.9999)."""
    _, batch = reference
    order = [i % len(TEXTS) for i in range(256)]
    with EmbeddingEngine(EngineConfig(workers_per_model=2), models=[_config(minilm_f16)]) as eng:
        with ThreadPoolExecutor(64) as pool:
            results = list(pool.map(lambda i: (i, eng.embed(TEXTS[i])), order))
        stats = eng.stats()
    for i, vector in results:
        assert float(vector @ batch[i]) >= 0.9999
    assert stats["joined_calls"] > 0 and stats["pending"] == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_batch_texts": -1}, "max_batch_texts must be an int >= 0"),
        ({"max_batch_texts": True}, "max_batch_texts must be an int >= 0"),
        ({"max_batch_wait_ms": -1}, "max_batch_wait_ms must be a finite number"),
        ({"max_batch_wait_ms": float("nan")}, "max_batch_wait_ms must be a finite number"),
        ({"max_batch_wait_ms": "5"}, "max_batch_wait_ms must be a finite number"),
    ],
)
def test_batching_settings_are_validated(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        EngineConfig(**kwargs)
    assert EngineConfig(max_batch_wait_ms=2).max_batch_wait_ms == 2.0
