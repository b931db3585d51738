# SPDX-License-Identifier: Apache-2.0
"""ModelConfig: validated on construction, frozen, changed with dataclasses.replace."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from embellama import ConfigurationError, ModelConfig, PoolingStrategy


def test_defaults_and_name_from_stem():
    cfg = ModelConfig(model_path="/models/all-MiniLM-L6-v2.F16.gguf")
    assert cfg.model_name == "all-MiniLM-L6-v2.F16"
    assert cfg.name == "all-MiniLM-L6-v2.F16"
    assert isinstance(cfg.model_path, Path)
    assert cfg.normalize is True and cfg.truncate is True and cfg.pooling is None
    assert cfg.n_gpu_layers == -1


def test_frozen_and_replace():
    cfg = ModelConfig(model_path="m.gguf", pooling="max")
    assert cfg.pooling is PoolingStrategy.MAX
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.n_threads = 2  # type: ignore[misc]
    other = dataclasses.replace(cfg, n_threads=2)
    assert other.n_threads == 2 and cfg.n_threads is None
    with pytest.raises(ConfigurationError):
        dataclasses.replace(cfg, n_threads=0)


def test_keyword_only():
    with pytest.raises(TypeError):
        ModelConfig("m.gguf")  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model_path": ""}, "model_path"),
        ({"model_path": 3}, "model_path"),
        ({"model_name": ""}, "model_name"),
        ({"n_ctx": 0}, "n_ctx must be a positive int"),
        ({"n_threads": -2}, "n_threads"),
        ({"n_batch": 1.5}, "n_batch"),
        ({"n_ubatch": True}, "n_ubatch"),
        ({"n_gpu_layers": -5}, "n_gpu_layers"),
        ({"main_gpu": -2}, "main_gpu must be an int >= -1"),
        ({"main_gpu": "0"}, "main_gpu"),
        ({"split_mode": "rows"}, "unknown split_mode 'rows'"),
        ({"tensor_split": ()}, "tensor_split"),
        ({"tensor_split": (1, -1)}, "tensor_split"),
        ({"tensor_split": (0, 0)}, "tensor_split"),
        ({"tensor_split": (float("nan"),)}, "tensor_split"),
        ({"offload_kqv": 0}, "offload_kqv must be a bool"),
        ({"pooling": "median"}, "unknown pooling 'median'"),
        ({"normalize": "l7"}, "normalization"),
        ({"truncate": "yes"}, "truncate must be a bool"),
        ({"flash_attn": 1}, "flash_attn"),
        ({"n_batch": 256, "n_ubatch": 512}, r"n_ubatch \(512\) > n_batch \(256\)"),
        ({"n_batch": 64, "n_seq_max": 128}, r"n_seq_max \(128\) > n_batch \(64\)"),
        ({"n_ctx": 512, "n_batch": 256}, r"n_batch \(256\) < n_ctx \(512\)"),
        ({"n_ctx": 128, "max_tokens": 256}, r"max_tokens \(256\) > n_ctx \(128\)"),
    ],
)
def test_invalid_values_raise_configuration_error(kwargs, message):
    kwargs = {"model_path": "mini.gguf", **kwargs}
    with pytest.raises(ConfigurationError, match=message) as info:
        ModelConfig(**kwargs)
    if "model_path" not in message:
        assert "mini" in str(info.value) or "model_name" in message


def test_llama_cpp_limits_are_asked_of_the_library_at_load(library, minilm_f16):
    from embellama import EmbeddingModel

    limits = library.limits
    assert (limits.max_devices, limits.max_sequences) == (16, 256)  # LLAMA_MAX_DEVICES, LLAMA_MAX_SEQ
    too_many = ModelConfig(model_path=minilm_f16, model_name="mini", n_seq_max=limits.max_sequences + 44)
    with pytest.raises(ConfigurationError, match=r"model 'mini': n_seq_max \(300\) > llama.cpp's limit 256"):
        EmbeddingModel(too_many).load()
    shares = ModelConfig(model_path=minilm_f16, model_name="mini", tensor_split=(1.0,) * (limits.max_devices + 1))
    with pytest.raises(ConfigurationError, match="model 'mini': tensor_split must be 1 to 16"):
        EmbeddingModel(shares).load()


def test_configuration_error_is_a_value_error():
    with pytest.raises(ValueError):
        ModelConfig(model_path="m.gguf", n_ctx=-1)


@pytest.mark.parametrize("key", ["n_ctx", "n_batch", "n_ubatch", "max_tokens", "n_gpu_layers", "main_gpu"])
def test_values_beyond_int32_are_refused(key):
    with pytest.raises(ConfigurationError, match=rf"{key} \(2147483648\) does not fit llama.cpp's int32"):
        ModelConfig(model_path="mini.gguf", **{key: 2**31})


def test_split_modes_are_read_from_the_declarations_on_first_validation():
    """Importing the config parses no C declarations; the first ModelConfig reads llama.cpp's split modes."""
    code = """
import json
from embellama import _config
before = _config._split_modes.cache_info().currsize
_config.ModelConfig(model_path="m.gguf", split_mode="row")
print(json.dumps([before, _config._split_modes.cache_info().currsize, list(_config._split_modes())]))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert proc.returncode == 0, proc.stderr
    before, after, modes = json.loads(proc.stdout)
    assert (before, after) == (0, 1)
    assert modes == ["none", "layer", "row", "tensor"]  # enum llama_split_mode, in value order


def test_amx_kernels_warn_except_in_the_portable_build(caplog):
    """ggml's AMX kernels (llama.cpp issue 20824): a native or custom build warns; the wheel's portable build,
    whose AMX CPU module an AMX CPU picks, says so at info level only; no kernels, nothing."""
    import logging
    import types
    from pathlib import Path

    from embellama._native.loader import amx_warning

    def lib(amx: bool, manifest: dict | None) -> types.SimpleNamespace:
        return types.SimpleNamespace(path=Path("/x/libllama.so"), manifest=manifest, has_amx_kernels=amx)

    assert amx_warning(lib(False, {"portable": False})) is None
    for manifest in (None, {"portable": False}):
        warning = amx_warning(lib(True, manifest))
        assert warning and "/x/libllama.so has ggml's AMX kernels" in warning and "builds without AMX" in warning
    with caplog.at_level(logging.INFO, logger="embellama"):
        assert amx_warning(lib(True, {"portable": True})) is None
    assert any("AMX kernels" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)
