# SPDX-License-Identifier: Apache-2.0
"""GPU placement options reach llama.cpp's parameter structs, and bad ones raise early.

The structs are read back field by field, so this runs on any build; on a CPU build
the options must not change the embeddings (there is no GPU to place layers on).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from embellama import ConfigurationError, EmbeddingModel, ModelConfig
from embellama.llama import SPLIT_MODES, ContextParams, ModelLoadOptions, _context_params, _model_params

_FAKE_GPUS = [{"name": "GPU0", "type": "GPU"}, {"name": "GPU1", "type": "GPU"}]


def test_model_params_carry_the_gpu_options(library, monkeypatch):
    import embellama.llama as llama_module

    monkeypatch.setattr(llama_module, "_gpu_devices", lambda lib: _FAKE_GPUS)
    opts = ModelLoadOptions(n_gpu_layers=7, main_gpu=0, split_mode="row", tensor_split=(3.0, 1.0), use_mmap=False)
    params, keep = _model_params(library, opts, "m")
    assert params.n_gpu_layers == 7
    assert params.main_gpu == 0
    assert params.split_mode == SPLIT_MODES["row"] == library.lib.LLAMA_SPLIT_MODE_ROW
    assert params.load_mode == library.lib.LLAMA_LOAD_MODE_NONE
    n_max = int(library.lib.llama_max_devices())
    assert [params.tensor_split[i] for i in range(n_max)] == [3.0, 1.0] + [0.0] * (n_max - 2)
    assert keep is not None


def test_without_gpus_the_placement_options_are_ignored(library, monkeypatch):
    """llama.cpp refuses split_mode "tensor" (and a main_gpu) when there is no GPU: a CPU build ignores them."""
    import embellama.llama as llama_module

    monkeypatch.setattr(llama_module, "_gpu_devices", lambda lib: [])
    opts = ModelLoadOptions(n_gpu_layers=7, main_gpu=5, split_mode="tensor", tensor_split=(3.0, 1.0))
    params, _ = _model_params(library, opts, "m")
    assert params.split_mode == library.lib.LLAMA_SPLIT_MODE_LAYER and params.main_gpu == 0
    assert params.tensor_split == library.ffi.NULL


def test_model_params_defaults_offload_everything(library):
    params, keep = _model_params(library, ModelLoadOptions(), "m")
    assert params.n_gpu_layers == -1  # llama.cpp reads a negative count as "all layers"
    assert params.split_mode == library.lib.LLAMA_SPLIT_MODE_LAYER
    assert params.tensor_split == library.ffi.NULL and keep is None
    assert params.vocab_only is False


def test_builds_with_amx_kernels_keep_weights_out_of_extra_buffers(library, monkeypatch):
    # ggml's AMX kernels crash on quantized weights (llama.cpp #20824): a library that has
    # them loads models without the extra CPU buffer types; others keep them (repacking).
    assert _model_params(library, ModelLoadOptions(), "m")[0].use_extra_bufts is not library.has_amx_kernels
    monkeypatch.setattr(library, "system_info", lambda: "CPU : AVX512 = 1 | AMX_INT8 = 1 | OPENMP = 1 |")
    assert library.has_amx_kernels
    assert _model_params(library, ModelLoadOptions(), "m")[0].use_extra_bufts is False
    monkeypatch.setattr(library, "system_info", lambda: "CPU : AVX512 = 1 | OPENMP = 1 |")
    assert _model_params(library, ModelLoadOptions(), "m")[0].use_extra_bufts is True


@pytest.mark.parametrize("offload_kqv", [True, False])
def test_context_params_carry_offload_kqv(library, offload_kqv):
    params = ContextParams(n_ctx=64, n_batch=64, n_ubatch=64, n_seq_max=4, n_threads=1, offload_kqv=offload_kqv)
    cparams = _context_params(library, params)
    assert cparams.offload_kqv is offload_kqv
    assert (cparams.n_ctx, cparams.n_batch, cparams.n_seq_max, cparams.n_threads) == (64, 64, 4, 1)


@pytest.mark.parametrize(
    "opts, message",
    [
        (ModelLoadOptions(split_mode="diagonal"), "unknown split_mode 'diagonal'"),
        (ModelLoadOptions(n_gpu_layers=-3), "n_gpu_layers"),
        (ModelLoadOptions(main_gpu=-4), "main_gpu"),
        (ModelLoadOptions(tensor_split=(1.0,) * 40), "tensor_split"),
        (ModelLoadOptions(tensor_split=(0.0,)), "tensor_split"),
    ],
)
def test_bad_options_raise_before_reaching_c(library, opts, message):
    with pytest.raises(ConfigurationError, match=message) as info:
        _model_params(library, opts, "minilm")
    assert "minilm" in str(info.value)


def test_main_gpu_out_of_range_names_the_gpus(library, monkeypatch):
    fake = [
        {"name": "CPU", "description": "x86", "type": "CPU", "memory_total": 1, "memory_free": 1},
        {"name": "CUDA0", "description": "H100", "type": "GPU", "memory_total": 1, "memory_free": 1},
    ]
    monkeypatch.setattr(type(library), "devices", lambda self: fake)
    with pytest.raises(ConfigurationError, match=r"main_gpu=1 but the GPUs are 1: CUDA0"):
        _model_params(library, ModelLoadOptions(main_gpu=1, split_mode="none"), "minilm")
    # only split_mode "none" uses main_gpu; index 0 is the one GPU there is
    assert _model_params(library, ModelLoadOptions(main_gpu=1, split_mode="layer"), "minilm")[0].main_gpu == 1
    assert _model_params(library, ModelLoadOptions(main_gpu=0, split_mode="none"), "minilm")[0].main_gpu == 0


def test_config_reaches_the_loaded_model(minilm_f16, library):
    cfg = ModelConfig(
        model_path=minilm_f16,
        model_name="minilm",
        n_gpu_layers=0,
        main_gpu=-1,
        split_mode="none",
        tensor_split=(1, 0),
        offload_kqv=False,
        n_threads=2,
    )
    with EmbeddingModel(cfg) as model:
        assert model._model is not None and model._context is not None
        opts = model._model.load_options
        assert (opts.n_gpu_layers, opts.main_gpu, opts.split_mode, opts.tensor_split) == (0, -1, "none", (1.0, 0.0))
        assert model._context.params.offload_kqv is False
        placed = model.embed_batch(["offload options", "x"])
    with EmbeddingModel(dataclasses.replace(cfg, n_gpu_layers=-1, split_mode="layer", offload_kqv=True)) as model:
        default = model.embed_batch(["offload options", "x"])
    if not any(d["type"] in ("GPU", "IGPU") for d in library.devices()):
        # nowhere to offload: both must be the same CPU computation, bit for bit
        assert np.array_equal(placed, default)
    else:
        assert float(np.min(np.sum(placed * default, axis=1))) > 0.999
