# SPDX-License-Identifier: Apache-2.0
"""compute_type: weights converted once into the cache; ``auto`` picks only exact types (F32 on Intel CPUs with a BF16
kernel, else the file's own)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from embellama import ConfigurationError, EmbeddingModel, ModelConfig
from embellama import llama as llama_module
from embellama._gguf import convert as _convert

BF16 = _convert.FTYPE_CODES["bf16"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBELLAMA_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "converted"


def _with_bf16_kernel(library, monkeypatch):
    info = library.system_info().replace("AVX2 = 1", "AVX2 = 1 | AVX512_BF16 = 1")
    monkeypatch.setattr(type(library), "system_info", lambda self: info)


@pytest.fixture
def bf16_cpu(library, monkeypatch):
    """Pretend the library was compiled with AVX512_BF16 on an AMD CPU (this test machine may be neither)."""
    _with_bf16_kernel(library, monkeypatch)
    monkeypatch.setattr(_convert, "cpu_vendor", lambda: "amd")


@pytest.fixture
def intel_bf16_cpu(library, monkeypatch):
    """Pretend the library was compiled with AVX512_BF16 on an Intel CPU."""
    _with_bf16_kernel(library, monkeypatch)
    monkeypatch.setattr(_convert, "cpu_vendor", lambda: "intel")


def _sts_sample(sts, sts_reference, step=5):
    s1, s2, _ = sts
    texts = s1 + s2
    index = np.arange(0, len(texts), step)
    return [texts[i] for i in index], sts_reference["emb_st"][index]


def test_explicit_bf16_converts_once_and_stays_exact(minilm_f16, cache, caplog, sts, sts_reference):
    texts, reference = _sts_sample(sts, sts_reference)
    config = ModelConfig(model_path=minilm_f16, compute_type="bf16", max_tokens=256, n_threads=2)
    with caplog.at_level(logging.INFO, logger="embellama"), EmbeddingModel(config) as model:
        assert model.model.ftype == BF16
        assert model.weights_path.parent == cache and model.weights_path.name.endswith(".BF16.gguf")
        ours = model.embed_batch(texts)
    converted = [r for r in caplog.records if "converting its weights to bf16" in r.getMessage()]
    assert len(converted) == 1
    cos = (ours * reference).sum(1)
    print(f"\nBF16 vs sentence-transformers: min cos {cos.min():.6f} over {len(texts)} STS sentences")
    assert cos.min() >= 0.9999
    (made,) = cache.glob("*.gguf")
    stamp = made.stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="embellama"), EmbeddingModel(config) as again:
        assert again.weights_path == made and again.model.ftype == BF16
    assert made.stat().st_mtime_ns == stamp  # reused, not rewritten
    assert not [r for r in caplog.records if "converting" in r.getMessage()]
    assert [p.name for p in cache.iterdir()] == [made.name]  # no temporary file left behind


def test_auto_leaves_the_weights_alone_without_a_bf16_kernel(minilm_f16, cache, library, monkeypatch):
    info = library.system_info().replace("AVX512_BF16 = 1", "")
    monkeypatch.setattr(type(library), "system_info", lambda self: info)
    with EmbeddingModel(ModelConfig(model_path=minilm_f16)) as model:
        assert model.weights_path == minilm_f16 and model.model.ftype == _convert.FTYPE_CODES["f16"]
    assert not cache.exists()


def test_auto_keeps_the_f16_file_on_an_amd_bf16_cpu(minilm_f16, minilm_q8, cache, bf16_cpu, sts, sts_reference):
    # BF16 would be 1.4 times faster there, but not exact: auto leaves that to an explicit compute_type="bf16"
    texts, reference = _sts_sample(sts, sts_reference)
    with EmbeddingModel(ModelConfig(model_path=minilm_f16, max_tokens=256, n_threads=2)) as model:
        assert model.weights_path == minilm_f16 and model.model.ftype == _convert.FTYPE_CODES["f16"]
        cos = (model.embed_batch(texts) * reference).sum(1)
    assert cos.min() >= 0.99999, cos.min()
    with EmbeddingModel(ModelConfig(model_path=minilm_q8)) as q8:  # a quantized file is not copied either
        assert q8.weights_path == minilm_q8 and q8.model.ftype == _convert.FTYPE_CODES["q8_0"]
    assert not cache.exists()


def test_auto_runs_a_small_model_as_f32_on_an_intel_bf16_cpu(
    minilm_f16, cache, intel_bf16_cpu, library, sts, sts_reference
):
    texts, reference = _sts_sample(sts, sts_reference)
    with EmbeddingModel(ModelConfig(model_path=minilm_f16, max_tokens=256, n_threads=2)) as model:
        assert model.model.ftype == _convert.FTYPE_CODES["f32"] and model.weights_path.parent == cache
        cos = (model.embed_batch(texts) * reference).sum(1)
    assert cos.min() >= 0.99999  # F32 weights: exact, where BF16 gives about 0.99995
    f32_copy = model.weights_path
    # an F32 file is the target already (nothing copied); a BF16 one is widened, losslessly
    with EmbeddingModel(ModelConfig(model_path=f32_copy)) as f32_file:
        assert f32_file.weights_path == f32_copy
    bf16_file = cache.parent / "mini.bf16.gguf"
    _convert.convert_gguf(minilm_f16, bf16_file, "bf16", library)
    with EmbeddingModel(ModelConfig(model_path=bf16_file)) as widened:
        assert widened.model.ftype == _convert.FTYPE_CODES["f32"] and widened.weights_path.parent == cache


def test_auto_keeps_a_large_models_file_on_an_intel_bf16_cpu(minilm_f16, cache, intel_bf16_cpu, monkeypatch, library):
    weights = _convert.weight_count(minilm_f16)
    assert weights is not None and 20_000_000 < weights < 25_000_000  # all-MiniLM-L6-v2: 22.7 M
    assert _convert.target_type("auto", library, offloaded=False, source=minilm_f16) == "f32"
    monkeypatch.setattr(_convert, "F32_MAX_WEIGHTS", weights - 1)  # as if it had one weight too many
    assert _convert.target_type("auto", library, offloaded=False, source=minilm_f16) is None
    with EmbeddingModel(ModelConfig(model_path=minilm_f16)) as model:
        assert model.weights_path == minilm_f16 and model.model.ftype == _convert.FTYPE_CODES["f16"]
    assert not cache.exists()
    # no readable header, or one shard of a split model: the safe choice, the file as it is
    assert _convert.target_type("auto", library, offloaded=False, source=cache.parent / "missing.gguf") is None
    header = _convert._gguf.read_header(minilm_f16)
    header.metadata["split.count"] = 3
    monkeypatch.setattr(_convert._gguf, "read_header", lambda path: header)
    assert _convert.weight_count(minilm_f16) is None
    assert _convert.target_type("auto", library, offloaded=False, source=minilm_f16) is None


def test_cpu_vendor_names_this_machine():
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        vendor_line = next(line for line in f if line.startswith("vendor_id"))
    expected = {"GenuineIntel": "intel", "AuthenticAMD": "amd"}.get(vendor_line.split(":")[1].strip(), "")
    assert _convert.cpu_vendor() == expected


def test_auto_keeps_gpu_offloaded_weights(minilm_f16, cache, intel_bf16_cpu, monkeypatch, library):
    import embellama._models.base as model_module

    monkeypatch.setattr(model_module, "_gpu_devices", lambda lib: [{"name": "GPU0", "type": "GPU"}])
    assert _convert.target_type("auto", library, offloaded=True, source=minilm_f16) is None
    assert _convert.target_type("auto", library, offloaded=False, source=minilm_f16) == "f32"
    assert _convert.target_type("q8_0", library, offloaded=True) == "q8_0"  # an explicit type is obeyed
    monkeypatch.setattr(llama_module, "_gpu_devices", lambda lib: [])  # the CPU build has none to load onto
    with EmbeddingModel(ModelConfig(model_path=minilm_f16, n_gpu_layers=-1)) as model:
        assert model.weights_path == minilm_f16
    with EmbeddingModel(ModelConfig(model_path=minilm_f16, n_gpu_layers=0)) as cpu_only:
        assert cpu_only.model.ftype == _convert.FTYPE_CODES["f32"]


def test_a_changed_source_is_converted_again(minilm_f16, cache, tmp_path):
    copy = tmp_path / "mini.gguf"
    copy.write_bytes(minilm_f16.read_bytes())
    config = ModelConfig(model_path=copy, compute_type="q8_0")
    with EmbeddingModel(config) as first:
        first_path = first.weights_path
    os.utime(copy, ns=(copy.stat().st_atime_ns, copy.stat().st_mtime_ns + 10**9))
    with EmbeddingModel(config) as second:
        assert second.weights_path != first_path and second.model.ftype == _convert.FTYPE_CODES["q8_0"]


def test_compute_type_is_validated():
    with pytest.raises(ConfigurationError, match="unknown compute_type 'int4'"):
        ModelConfig(model_path="m.gguf", model_name="m", compute_type="int4")


def _cli(*args, env):
    return subprocess.run([sys.executable, "-m", "embellama", *args], capture_output=True, text=True, env=env)


def test_convert_and_cache_commands(minilm_f16, cache, tmp_path, library):
    env = dict(os.environ)
    out = tmp_path / "mini.bf16.gguf"
    proc = _cli("convert", str(minilm_f16), str(out), "--type", "bf16", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "BF16" in proc.stdout
    with llama_module.Model(out) as model:
        assert model.ftype == BF16
    with EmbeddingModel(ModelConfig(model_path=minilm_f16, compute_type="f32")):
        pass
    proc = _cli("cache", env=env)
    assert "1 converted model(s)" in proc.stdout and ".F32.gguf" in proc.stdout
    proc = _cli("cache", "--clear", env=env)
    assert proc.returncode == 0 and "removed 1 converted model(s)" in proc.stdout
    assert list(cache.glob("*.gguf")) == []


def test_convert_a_hugging_face_folder(tmp_path, sts, sts_reference):
    from tests.support import make_model

    out = tmp_path / "from-hf.BF16.gguf"
    proc = _cli("convert", str(make_model.hf_model_dir()), str(out), "--type", "bf16", env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-3000:]
    texts, reference = _sts_sample(sts, sts_reference, step=11)
    with EmbeddingModel(ModelConfig(model_path=out, compute_type="off", max_tokens=256)) as model:
        assert model.model.ftype == BF16
        cos = (model.embed_batch(texts) * reference).sum(1)
    assert cos.min() >= 0.9999
