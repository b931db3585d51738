# SPDX-License-Identifier: Apache-2.0
"""EmbeddingModel and the low-level classes with the real MiniLM model: API, errors, threads."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest

from embellama import (
    ConfigurationError,
    EmbeddingModel,
    InvalidInputError,
    ModelConfig,
    ModelLoadError,
    ModelNotFoundError,
    PoolingStrategy,
    ResourceClosedError,
    ThreadAffinityError,
)
from embellama.llama import Batch, Context, ContextParams, Model


@pytest.fixture(scope="module")
def minilm(minilm_f16):
    # The file's own weights, as the low-level classes read them (auto would run F32 on Intel AVX512_BF16 CPUs).
    model = EmbeddingModel(ModelConfig(model_path=minilm_f16, model_name="minilm", compute_type="off"))
    model.load()
    yield model
    model.unload()


def run_in_thread(fn):
    box = {}

    def target():
        try:
            box["result"] = fn()
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target)
    t.start()
    t.join()
    return box


def test_properties(minilm, minilm_f16):
    assert minilm.is_loaded
    assert minilm.embedding_dimensions == 384
    assert minilm.max_sequence_length == 512
    assert 40e6 < minilm.model_size <= minilm_f16.stat().st_size
    assert minilm.pooling is PoolingStrategy.MEAN  # from the GGUF metadata
    assert minilm.name == "minilm"


def test_embed_shapes_dtype_and_norm(minilm):
    one = minilm.embed("A man is playing a guitar.")
    assert one.shape == (384,) and one.dtype == np.float32
    assert np.linalg.norm(one) == pytest.approx(1.0, abs=1e-5)
    many = minilm.embed_batch(["first text", "second text", "a third, longer text than the others"])
    assert many.shape == (3, 384) and many.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(many, axis=1), 1.0, atol=1e-5)
    assert minilm.encode("first text").shape == (384,)
    assert minilm.encode(["first text"]).shape == (1, 384)


def test_similarity_is_meaningful(minilm):
    a, b, c = minilm.embed_batch(
        ["A girl is styling her hair.", "A girl is brushing her hair.", "Stocks fell sharply."]
    )
    assert a @ b > 0.7
    assert a @ c < 0.2


def test_batch_equals_single_and_order_is_kept(minilm):
    texts = [f"sentence number {i} about {'cats' if i % 2 else 'the weather'}" for i in range(40)]
    batch = minilm.embed_batch(texts, batch_size=7)
    singles = np.stack([minilm.embed(t) for t in texts])
    np.testing.assert_allclose((batch * singles).sum(1), 1.0, atol=1e-5)
    full = minilm.embed_batch(texts)
    np.testing.assert_allclose((full * batch).sum(1), 1.0, atol=1e-5)
    # order is kept: each row is closest to its own text's single embedding
    assert ((full @ singles.T).argmax(axis=1) == np.arange(len(texts))).all()


def test_many_texts_fill_several_calls(minilm):
    texts = [f"text {i} " + "word " * (i % 50) for i in range(600)]  # > n_batch tokens and > 256 seqs
    out = minilm.embed_batch(texts)
    assert out.shape == (600, 384)
    assert float(out[123] @ minilm.embed(texts[123])) == pytest.approx(1.0, abs=1e-5)


def test_normalize_override(minilm):
    raw = minilm.embed("plain text", normalize=False)
    assert np.linalg.norm(raw) != pytest.approx(1.0, abs=1e-3)
    l2 = minilm.embed("plain text")
    np.testing.assert_allclose(l2, raw / np.linalg.norm(raw), rtol=1e-5, atol=1e-6)
    assert np.abs(minilm.embed("plain text", normalize="max_abs")).max() == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("", "text is empty"),
        (None, "expected str, got NoneType"),
        (42, "expected str, got int"),
        (b"bytes", "expected str, got bytes"),
        ("\ud800 lone surrogate", "not valid Unicode"),
    ],
)
def test_invalid_input(minilm, bad, message):
    with pytest.raises(InvalidInputError, match=message) as info:
        minilm.embed(bad)
    assert "'minilm'" in str(info.value)


def test_invalid_item_in_batch_names_its_index(minilm):
    with pytest.raises(InvalidInputError, match=r"text is empty \(input #2\)"):
        minilm.embed_batch(["ok", "fine", "", "ok"])
    with pytest.raises(InvalidInputError, match="sequence of str"):
        minilm.embed_batch("a single string")
    with pytest.raises(ConfigurationError, match="batch_size"):
        minilm.embed_batch(["x"], batch_size=0)


def test_too_long_text_raises_or_truncates(minilm_f16):
    long_text = "word " * 2000
    strict = EmbeddingModel(ModelConfig(model_path=minilm_f16, model_name="strict", truncate=False))
    with pytest.raises(InvalidInputError, match=r"2002 tokens; the limit is 512") as info:
        strict.embed(long_text)
    assert "'strict'" in str(info.value)
    lenient = EmbeddingModel(ModelConfig(model_path=minilm_f16, truncate=True, max_tokens=128))
    ids = lenient.tokenize(long_text)
    assert len(ids) == 128 and ids[0] == 101 and ids[-1] == 102  # [CLS] ... [SEP] kept
    cut = lenient.embed(long_text)
    same = lenient.embed("word " * 126)  # exactly what survives the cut
    assert float(cut @ same) == pytest.approx(1.0, abs=1e-5)


def test_missing_and_broken_model_files(tmp_path, minilm_f16, library):
    with pytest.raises(ModelNotFoundError, match="nope.gguf") as info:
        EmbeddingModel(ModelConfig(model_path=tmp_path / "nope.gguf")).load()
    assert "'nope'" in str(info.value)
    text = tmp_path / "text.gguf"
    text.write_text("hello")
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        EmbeddingModel(ModelConfig(model_path=text)).load()
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(minilm_f16.read_bytes()[:3_000_000])
    with pytest.raises(ModelLoadError, match="truncated.gguf"):
        EmbeddingModel(ModelConfig(model_path=truncated)).load()


def test_bad_context_settings_raise_instead_of_aborting(minilm_f16):
    # llama.cpp would GGML_ASSERT (abort the process) on these.
    with pytest.raises(ConfigurationError, match="exceeds the 512 positions"):
        EmbeddingModel(ModelConfig(model_path=minilm_f16, n_ctx=1024)).load()
    with Model(minilm_f16) as model:
        with pytest.raises(ConfigurationError, match=r"n_seq_max \(64\) must divide the 32 tokens"):
            Context(model, ContextParams(n_ctx=32, n_batch=32, n_ubatch=32, n_seq_max=64, n_threads=1))
        with pytest.raises(ConfigurationError, match="n_ubatch"):
            Context(model, ContextParams(n_ctx=64, n_batch=64, n_ubatch=128, n_seq_max=1, n_threads=1))
        with Context(
            model, ContextParams(n_ctx=64, n_batch=64, n_ubatch=64, n_seq_max=2, n_threads=1, pooling="mean")
        ) as ctx:
            big = Batch(256, 8)
            big.set_sequences(np.full(100, 1000, dtype=np.int32), [100])
            with pytest.raises(InvalidInputError, match="exceeds the context's n_batch=64"):
                ctx.process(big)
            big.set_sequences(np.full(12, 1000, dtype=np.int32), [3, 3, 3, 3])
            with pytest.raises(InvalidInputError, match="4 sequences; the context allows 2"):
                ctx.process(big)
            big.clear()
            with pytest.raises(InvalidInputError, match="empty"):
                ctx.process(big)


def test_low_level_round_trip(minilm_f16, minilm):
    with Model(minilm_f16) as model:
        params = ContextParams(n_ctx=512, n_batch=512, n_ubatch=512, n_seq_max=4, n_threads=2, pooling="mean")
        with Context(model, params) as ctx:
            assert (ctx.n_batch, ctx.n_seq_max, ctx.pooling) == (512, 4, "mean")
            ids = [model.tokenize(t) for t in ("hello world", "good morning to you")]
            batch = Batch(512, 4)
            batch.set_sequences(np.concatenate(ids), [len(i) for i in ids])
            assert batch.positions.tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 4, 5]
            assert batch.sequence_ids.tolist() == [0] * 4 + [1] * 6
            ctx.process(batch)
            pooled = ctx.sequence_embeddings(2)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    np.testing.assert_allclose(pooled, minilm.embed_batch(["hello world", "good morning to you"]), atol=1e-5)


def test_close_is_idempotent_and_use_after_close_raises(minilm_f16):
    model = Model(minilm_f16)
    ctx = Context(model, ContextParams(n_ctx=64, n_batch=64, n_ubatch=64, n_seq_max=1, n_threads=1))
    ctx.close()
    ctx.close()
    assert ctx.closed
    with pytest.raises(ResourceClosedError):
        ctx.process(Batch(8, 1))
    model.close()
    model.close()
    with pytest.raises(ResourceClosedError):
        model.tokenize("x")
    with pytest.raises(ResourceClosedError):
        _ = model.n_embd


def test_model_outlives_close_while_a_context_uses_it(minilm_f16):
    model = Model(minilm_f16)
    ctx = Context(model, ContextParams(n_ctx=64, n_batch=64, n_ubatch=64, n_seq_max=1, n_threads=1, pooling="mean"))
    ids = model.tokenize("still works")
    model.close()  # the weights stay until the context is gone
    batch = Batch(64, 1)
    batch.set_sequences(ids, [len(ids)])
    ctx.process(batch)
    assert ctx.sequence_embeddings(1).shape == (1, 384)
    ctx.close()


def test_context_refuses_other_threads(minilm):
    box = run_in_thread(lambda: minilm.embed("from another thread"))
    assert isinstance(box.get("error"), ThreadAffinityError)
    assert "belongs to thread" in str(box["error"])
    box = run_in_thread(minilm.unload)
    assert isinstance(box.get("error"), ThreadAffinityError)
    assert minilm.is_loaded
    assert minilm.embed("still fine here").shape == (384,)


def test_each_thread_with_its_own_model_works(minilm_f16, minilm):
    expected = minilm.embed("parallel sentence")

    def work():
        with EmbeddingModel(ModelConfig(model_path=minilm_f16, n_threads=1)) as m:
            return m.embed("parallel sentence")

    boxes = []
    threads = [threading.Thread(target=lambda: boxes.append(work())) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(boxes) == 3
    for got in boxes:
        assert float(got @ expected) == pytest.approx(1.0, abs=1e-5)


def test_unload_and_context_manager(minilm_f16):
    m = EmbeddingModel(ModelConfig(model_path=minilm_f16))
    assert not m.is_loaded
    with m:
        assert m.is_loaded
    assert not m.is_loaded
    m.unload()  # idempotent
    cfg = dataclasses.replace(m.config, pooling="cls")
    with EmbeddingModel(cfg) as cls_model:
        assert cls_model.pooling is PoolingStrategy.CLS


def test_token_level_output(minilm_f16):
    with EmbeddingModel(ModelConfig(model_path=minilm_f16, pooling="none", normalize=False)) as m:
        out = m.embed_batch(["hello world", "a much longer sentence than the first one"])
        assert isinstance(out, list)
        assert [o.shape for o in out] == [(4, 384), (10, 384)]
        single = m.embed("hello world")
        np.testing.assert_allclose(single, out[0], atol=1e-5)
        with pytest.raises(ConfigurationError, match="encode"):
            m.encode(["x", "y"])


def test_invalid_token_ids_are_an_error_not_a_crash(minilm_f16):
    from embellama import EmbeddingError

    with Model(minilm_f16) as model:
        params = ContextParams(n_ctx=64, n_batch=64, n_ubatch=64, n_seq_max=1, n_threads=1, pooling="mean")
        with Context(model, params) as ctx:
            batch = Batch(64, 1)
            batch.set_sequences(np.array([101, 10**6, 102], dtype=np.int32), [3])
            with pytest.raises(EmbeddingError, match="return code -1"):
                ctx.process(batch)
            batch.set_sequences(np.array([101, 7592, 102], dtype=np.int32), [3])
            ctx.process(batch)  # the context is still usable
            assert ctx.sequence_embeddings(1).shape == (1, 384)


def test_interpreter_exits_cleanly_with_live_models(minilm_f16):
    import subprocess
    import sys

    code = (
        "import threading, embellama as e\n"
        f"m = e.EmbeddingModel(e.ModelConfig(model_path={str(minilm_f16)!r}))\n"
        "m.embed('left loaded at exit')\n"
        f"eng = e.EmbeddingEngine([e.ModelConfig(model_path={str(minilm_f16)!r}, model_name='w')])\n"
        "eng.embed('worker still running at exit')\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "ok"


def test_batch_buffers_cannot_be_replaced_or_written(library):
    batch = Batch(16, 2)
    batch.set_sequences(np.array([101, 7592, 102, 101, 102], dtype=np.int32), [3, 2])
    assert batch.tokens.tolist() == [101, 7592, 102, 101, 102]
    assert (batch.n_tokens, batch.n_seqs, batch.max_seq_len, batch.lengths.tolist()) == (5, 2, 3, [3, 2])
    for name in ("tokens", "positions", "sequence_ids", "n_tokens", "n_seqs", "capacity", "max_seqs", "lengths"):
        with pytest.raises(AttributeError):
            setattr(batch, name, np.zeros(16, dtype=np.int32))
    for view in (batch.tokens, batch.positions, batch.sequence_ids, batch.lengths):
        with pytest.raises(ValueError, match="read-only"):
            view[0] = 1
    with pytest.raises(InvalidInputError, match="1-D array of ints"):
        batch.set_sequences(np.array([1.5, 2.5]), [2])
    with pytest.raises(InvalidInputError, match="positive ints"):
        batch.set_sequences(np.array([1, 2], dtype=np.int32), [2.0])


def test_a_failed_load_frees_the_model_and_context_at_once(minilm_f16, monkeypatch):
    import embellama._models.base as model_module

    made = []

    class RecordingContext(Context):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    def no_memory(*args, **kwargs):
        raise MemoryError("simulated: the batch buffers could not be allocated")

    monkeypatch.setattr(model_module, "Context", RecordingContext)
    monkeypatch.setattr(model_module, "Batch", no_memory)
    m = EmbeddingModel(ModelConfig(model_path=minilm_f16))
    with pytest.raises(MemoryError):
        m.load()
    assert len(made) == 1 and made[0].closed and made[0].model.closed
    assert not m.is_loaded


def test_encode_follows_sentence_transformers_normalize_embeddings(minilm_f16):
    texts = ["A man is playing a guitar.", "Markets fell."]
    with EmbeddingModel(ModelConfig(model_path=minilm_f16, normalize=False)) as raw:
        plain = raw.encode(texts)  # default False: the model's own output (here not normalized)
        np.testing.assert_array_equal(plain, raw.embed_batch(texts))
        assert np.abs(np.linalg.norm(plain, axis=1) - 1).max() > 0.01
        unit = raw.encode(texts, normalize_embeddings=True)
        np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-6)
        np.testing.assert_allclose(unit, plain / np.linalg.norm(plain, axis=1, keepdims=True), rtol=1e-5)
        with pytest.raises(ConfigurationError, match="normalize_embeddings must be a bool"):
            raw.encode(texts, normalize_embeddings="l1")
    with EmbeddingModel(ModelConfig(model_path=minilm_f16)) as default:  # L2 in the config, like ST's Normalize module
        np.testing.assert_allclose(default.encode(texts), unit, atol=1e-6)
        np.testing.assert_allclose(default.encode(texts, normalize_embeddings=False), unit, atol=1e-6)


def test_derived_sequences_divide_the_micro_batch(minilm_f16):
    """n_seq_max is chosen so that llama.cpp's reserved micro-batch splits evenly."""
    for n_ubatch, expected in ((64, 64), (100, 100), (300, 150), (257, 1), (512, 256)):
        with EmbeddingModel(ModelConfig(model_path=minilm_f16, n_ubatch=n_ubatch, n_threads=1)) as m:
            assert m.context.n_seq_max == expected
            assert m.max_sequence_length == min(n_ubatch, 512)
            assert m.embed_batch(["one", "two", "three"]).shape == (3, 384)
    with EmbeddingModel(ModelConfig(model_path=minilm_f16, n_ctx=8, n_threads=1)) as m:
        assert m.max_sequence_length == 8  # the context asked for, not llama.cpp's padded 256
        assert len(m.tokenize("a rather long sentence that must be cut")) == 8
