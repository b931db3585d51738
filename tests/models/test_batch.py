# SPDX-License-Identifier: Apache-2.0
"""The batch pipeline: packing by length, order kept, progress, streaming."""

from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embellama import ConfigurationError, EmbeddingModel, InvalidInputError, ModelConfig
from embellama._compute.packing import pack_by_length
from tests.support.texts import generated


@pytest.fixture(scope="module")
def model(minilm_f16):
    with EmbeddingModel(ModelConfig(model_path=minilm_f16, n_threads=2)) as m:
        yield m


@pytest.fixture(scope="module")
def mixed() -> list[str]:
    """500 texts from one word to several hundred tokens, shuffled."""
    rng = random.Random(5)
    short = generated(400, seed=11)
    long = [" ".join(generated(rng.randint(5, 40), seed=i)) for i in range(100)]
    texts = short + long
    rng.shuffle(texts)
    return texts


@given(
    lengths=st.lists(st.integers(1, 64), max_size=300),
    budget=st.integers(64, 600),
    max_seqs=st.integers(1, 300),
)
@settings(max_examples=300, deadline=None)
def test_packing_covers_every_text_once_within_the_limits(lengths, budget, max_seqs):
    arr = np.array(lengths, dtype=np.int64)
    groups = pack_by_length(arr, budget, max_seqs)
    flat = np.concatenate(groups) if groups else np.array([], dtype=np.intp)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    for group in groups:
        assert 1 <= len(group) <= max_seqs and arr[group].sum() <= budget
    assert arr[flat].tolist() == sorted(lengths, reverse=True)  # longest first: similar lengths share a call


def test_batch_equals_one_by_one_in_any_order(model, mixed):
    batch = model.embed_batch(mixed)
    singles = np.stack([model.embed(t) for t in mixed])
    cos = (batch * singles).sum(1)
    assert cos.min() >= 0.9999, mixed[int(cos.argmin())]
    order = np.random.default_rng(3).permutation(len(mixed))
    shuffled = model.embed_batch([mixed[i] for i in order])
    assert (shuffled * batch[order]).sum(1).min() >= 0.9999
    capped = model.embed_batch(mixed, batch_size=7)  # at most 7 texts per llama.cpp call
    assert (capped * batch).sum(1).min() >= 0.9999


def test_edge_cases(model):
    assert model.embed_batch([]).shape == (0, 384)
    one = model.embed_batch(["only one"])
    assert one.shape == (1, 384)
    dup = model.embed_batch(["same text", "other", "same text"])
    np.testing.assert_allclose(dup[0], dup[2], atol=1e-6)
    limit = model.max_sequence_length
    at_limit = " ".join(["word"] * (limit - 2))  # [CLS] + limit-2 words + [SEP]
    assert len(model.tokenize(at_limit)) == limit
    over = " ".join(["word"] * (limit + 50))
    out = model.embed_batch([at_limit, over, "a"])
    assert out.shape == (3, 384) and np.isfinite(out).all()
    with pytest.raises(InvalidInputError, match=r"input #2"):
        model.embed_batch(["fine", "also fine", "", "never reached"])
    with pytest.raises(ConfigurationError, match="batch_size"):
        model.embed_batch(["x"], batch_size=0)


def test_over_long_text_is_refused_before_any_inference(minilm_f16):
    config = ModelConfig(model_path=minilm_f16, truncate=False, n_threads=1)
    calls = []
    with EmbeddingModel(config) as m, pytest.raises(InvalidInputError, match=r"tokens; the limit is 512.*input #3"):
        m.embed_batch(["a", "b", "c", "word " * 600], progress=lambda done, total: calls.append(done))
    assert calls == []  # validation comes first: no llama.cpp call was made


def test_progress_reports_every_call_and_ends_at_total(model, mixed):
    calls = []
    model.embed_batch(mixed, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (len(mixed), len(mixed))
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and len(calls) > 1
    assert {t for _, t in calls} == {len(mixed)}
    empty = []
    model.embed_batch([], progress=lambda done, total: empty.append((done, total)))
    assert empty == [(0, 0)]
    via_encode = []
    model.encode(mixed[:10], progress=lambda done, total: via_encode.append((done, total)))
    assert via_encode[-1] == (10, 10)


def test_progress_bar_uses_tqdm_when_installed(model, capsys):
    pytest.importorskip("tqdm")  # installed by the test session (sentence-transformers needs it)
    model.embed_batch(["a", "b", "c"], show_progress_bar=True)
    err = capsys.readouterr().err
    assert ("embedding with" in err and "3/3" in err and "it/s" in err) or "text/s" in err


def test_embed_iter_streams_in_order(model, mixed):
    whole = model.embed_batch(mixed)
    calls = []
    chunks = list(model.embed_iter(iter(mixed), chunk_size=64, progress=lambda d, t: calls.append((d, t))))
    assert [len(c) for c in chunks] == [64] * 7 + [52]
    assert (np.concatenate(chunks) * whole).sum(1).min() >= 0.9999
    assert calls[-1] == (500, 500) and calls[0][1] is None  # a bare iterator has no known length
    sized = []
    list(model.embed_iter(mixed[:100], chunk_size=30, progress=lambda d, t: sized.append((d, t))))
    assert sized[0][1] == 100 and sized[-1] == (100, 100)
    with pytest.raises(InvalidInputError, match=r"input #70"):
        for _ in model.embed_iter([*mixed[:70], ""], chunk_size=30):
            pass
    assert list(model.embed_iter([])) == []
    with pytest.raises(ConfigurationError, match="chunk_size"):
        next(model.embed_iter(["a"], chunk_size=0))


_STREAM_RSS = """
import itertools, sys
from embellama import EmbeddingModel, ModelConfig

def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024

texts = (f"streamed text {i}" for i in itertools.count())
with EmbeddingModel(ModelConfig(model_path=sys.argv[1], n_threads=2)) as model:
    done = 0
    for chunk in model.embed_iter(itertools.islice(texts, int(sys.argv[2])), chunk_size=1000):
        done += len(chunk)
        if done in (5_000, int(sys.argv[2])):
            print(done, round(rss_mb(), 1), flush=True)
"""


def test_streaming_keeps_memory_flat(minilm_f16):
    total = 20_000  # the closing note of the issue gives the figures for 100,000
    proc = subprocess.run(
        [sys.executable, "-c", _STREAM_RSS, str(minilm_f16), str(total)], capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rss = dict(tuple(map(float, line.split())) for line in proc.stdout.split("\n") if line.strip())
    print(f"\nRSS after 5k texts {rss[5_000]:.1f} MB, after {total // 1000}k {rss[total]:.1f} MB")
    assert rss[total] < rss[5_000] + 20  # four times the texts, no growth beyond noise


@pytest.mark.parametrize("pooling", ["mean", "cls", "max", "mean_sqrt"])
@pytest.mark.parametrize("norm", [None, False, "l1"])
def test_single_text_path_equals_the_batch_pipeline(minilm_f16, pooling, norm):
    """embed() skips the pipeline's packing for one text: the numbers must not change."""
    texts = ["a", "A man is playing a guitar.", "word " * 600]  # the last is truncated
    with EmbeddingModel(ModelConfig(model_path=minilm_f16, n_threads=1, pooling=pooling)) as m:
        for text in texts:
            one = m.embed(text, normalize=norm)
            assert one.shape == (384,) and one.dtype == np.float32
            np.testing.assert_array_equal(one, m.embed_batch([text], normalize=norm)[0])
        with pytest.raises(InvalidInputError, match=r"text is empty") as info:
            m.embed("")
        assert m.name in str(info.value)
        with pytest.raises(InvalidInputError, match="expected str"):
            m.embed(b"bytes")  # type: ignore[arg-type]
