# SPDX-License-Identifier: Apache-2.0
"""Parallel tokenization in the batch pipeline: same ids, same order, the serial loop's error."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embellama import EmbeddingModel, InvalidInputError, ModelConfig
from embellama._compute.packing import PARALLEL_TOKENIZE_MIN, tokenize_all
from tests.support.texts import generated


class Bad(Exception):
    pass


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(0, 3 * PARALLEL_TOKENIZE_MIN),
    threads=st.integers(1, 8),
    bad=st.sets(st.integers(0, 3 * PARALLEL_TOKENIZE_MIN), max_size=4),
)
def test_results_in_order_and_the_lowest_bad_index_wins(n, threads, bad):
    texts = [f"t{i}" for i in range(n)]
    calls: list[tuple[int, float]] = []
    lock = threading.Lock()

    def tokenize(text: str, i: int) -> np.ndarray:
        assert text == f"t{i}"
        if i % 97 == 0:
            time.sleep(0.0005)  # slices finish out of order
        with lock:
            calls.append((i, time.perf_counter()))
        if i in bad:
            raise Bad(i)
        return np.array([i], np.int32)

    bad_here = sorted(b for b in bad if b < n)
    if bad_here:
        with pytest.raises(Bad) as info:
            tokenize_all(texts, tokenize, threads)
        assert info.value.args == (bad_here[0],)
    else:
        out = tokenize_all(texts, tokenize, threads)
        assert [int(a[0]) for a in out] == list(range(n))
    returned = time.perf_counter()
    assert all(t <= returned for _, t in calls)  # no thread tokenizes after the call is over


def test_large_inputs_use_several_threads_small_ones_only_the_caller():
    seen: set[int] = set()

    def tokenize(text: str, i: int) -> np.ndarray:
        seen.add(threading.get_ident())
        time.sleep(0.0001)
        return np.zeros(1, np.int32)

    tokenize_all(["x"] * (PARALLEL_TOKENIZE_MIN - 1), tokenize, 4)
    assert seen == {threading.get_ident()}
    seen.clear()
    tokenize_all(["x"] * (4 * PARALLEL_TOKENIZE_MIN), tokenize, 4)
    assert threading.get_ident() in seen and len(seen) > 1


@pytest.fixture(scope="module")
def model(minilm_f16):
    with EmbeddingModel(ModelConfig(model_path=minilm_f16, n_threads=2)) as m:
        yield m


def test_real_model_parallel_ids_equal_serial_and_errors_name_the_first_bad_index(model):
    texts = generated(3 * PARALLEL_TOKENIZE_MIN, seed=3)
    serial = [model.tokenize(t) for t in texts]
    low = model.model  # the llama.cpp model: its vocabulary may be read from any thread
    parallel = tokenize_all(texts, lambda t, i: low.tokenize(t, add_special=True), 4)
    assert len(parallel) == len(serial)
    assert all(np.array_equal(a, b) for a, b in zip(parallel, serial, strict=True))

    broken = list(texts)
    broken[600] = ""
    broken[400] = 42  # type: ignore[call-overload]
    with pytest.raises(InvalidInputError) as info:
        model.embed_batch(broken, show_progress_bar=False)
    assert info.value.index == 400 and "str" in str(info.value) and model.name in str(info.value)


def test_threads_only_while_a_gpu_computes(minilm_f16, monkeypatch):
    """On the CPU inference keeps the cores busy: tokenization stays on the calling thread."""
    import embellama._models.base as model_module

    # compute_type="off": with a stand-in GPU, auto would keep F16 weights that it runs as F32 on an Intel
    # CPU with AVX512_BF16, and the two runs would differ in their weights, not their tokenization.
    with EmbeddingModel(ModelConfig(model_path=minilm_f16, n_threads=1, compute_type="off")) as cpu:
        assert cpu._tokenize_threads == 1
        serial = cpu.embed_batch(generated(PARALLEL_TOKENIZE_MIN * 2, seed=4), show_progress_bar=False)
        layout = cpu._layout
    monkeypatch.setattr(model_module, "_gpu_devices", lambda library: [{"type": "GPU", "name": "stand-in"}])
    monkeypatch.setattr(model_module, "_cpu_count", lambda: 4)
    with EmbeddingModel(ModelConfig(model_path=minilm_f16, n_threads=1, compute_type="off")) as gpu:
        assert gpu._tokenize_threads == 4
        assert gpu._layout is None  # a GPU's calls are packed by length; the CPU's layout here, to compare
        gpu._layout = layout  # the tokenization alone (another packing differs in the last bits)
        threaded = gpu.embed_batch(generated(PARALLEL_TOKENIZE_MIN * 2, seed=4), show_progress_bar=False)
    np.testing.assert_array_equal(threaded, serial)
    with EmbeddingModel(ModelConfig(model_path=minilm_f16, n_threads=1, n_gpu_layers=0)) as none:
        assert none._tokenize_threads == 1  # no layer on the GPU


def test_embed_iter_tokenizes_the_next_chunk_during_inference_and_never_while_the_caller_holds_it(model, monkeypatch):
    texts = generated(50, seed=8)
    in_flight = 0
    done = 0
    lock = threading.Lock()
    original = EmbeddingModel._tokenize

    threads_seen: set[int] = set()

    def spy(self, *args):
        nonlocal in_flight, done
        with lock:
            in_flight += 1
            threads_seen.add(threading.get_ident())
        try:
            time.sleep(0.001)
            return original(self, *args)
        finally:
            with lock:
                in_flight -= 1
                done += 1

    monkeypatch.setattr(EmbeddingModel, "_tokenize", spy)
    assert model._tokenize_threads == 1  # on the CPU: everything on the calling thread
    threads_seen.clear()
    list(model.embed_iter(texts, chunk_size=10, show_progress_bar=False))
    assert threads_seen == {threading.get_ident()} and done == 50
    done = 0
    threads_seen.clear()
    monkeypatch.setattr(model, "_tokenize_threads", 2)  # as while a GPU computes
    seen = []
    for k, block in enumerate(model.embed_iter(texts, chunk_size=10, show_progress_bar=False)):
        assert in_flight == 0  # nothing runs while the caller has the stream
        assert done == min(10 * (k + 2), 50)  # chunk k+1 was tokenized while chunk k ran
        seen.append(block)
    monkeypatch.undo()
    assert len(threads_seen) == 1 and threading.get_ident() not in threads_seen  # the tokenizing thread
    assert (np.concatenate(seen) * model.embed_batch(texts)).sum(1).min() >= 0.9999  # same texts, same order


@pytest.mark.parametrize("threads", [1, 2])
def test_embed_iter_hands_out_finished_chunks_before_a_failing_source_or_text(model, monkeypatch, threads):
    monkeypatch.setattr(model, "_tokenize_threads", threads)

    def source():
        yield from generated(5, seed=1)
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for block in model.embed_iter(source(), chunk_size=2, show_progress_bar=False):
            got.append(len(block))
    assert got == [2, 2]  # the partial chunk read when the source failed is lost, as with islice

    got = []
    with pytest.raises(InvalidInputError) as info:
        for block in model.embed_iter(["a", "b", "c", "", "e"], chunk_size=2, show_progress_bar=False):
            got.append(len(block))
    assert got == [2] and info.value.index == 3

    stream = model.embed_iter(generated(30, seed=2), chunk_size=5, show_progress_bar=False)
    next(stream)
    stream.close()  # stopped early: the tokenizing thread is gone
    assert not [t for t in threading.enumerate() if t.name.startswith("embellama-tokenize")]
