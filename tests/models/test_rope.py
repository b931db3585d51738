# SPDX-License-Identifier: Apache-2.0
"""Long context: ModelConfig's rope settings reach llama.cpp and give what transformers' own rope scaling gives.

The architecture matrix's tiny random Qwen3 (trained context 512) is rebuilt in transformers from its recipe (the
same seed, the same weights as its F32 GGUF) with ``rope_parameters`` linear or YaRN, and both embed texts of
530 and 610 tokens, beyond the training context: cosine >= 0.9999 per text. The scalings differ from each other by far
more, so a setting that did not arrive would fail. A known-model entry supplies the settings when n_ctx exceeds the
training context; a model of learned positions refuses such an n_ctx.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from embellama import ConfigurationError, EmbeddingModel, ModelConfig
from tests.support import arch_models

LENGTHS = (530, 610)  # beyond the 512 trained; short, as a causal GGUF computes its LM head over every token
EOS = 151643  # the tiny Qwen3's EOS, which its last-token pooling reads
CASES = {
    "none": ({}, {"rope_type": "default"}),
    "linear": ({"rope_scaling": "linear", "rope_freq_scale": 0.5}, {"rope_type": "linear", "factor": 2.0}),
    "yarn": (
        {"rope_scaling": "yarn", "rope_freq_scale": 0.5, "yarn_orig_ctx": 512},
        {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 512},
    ),
}


@pytest.fixture(scope="module")
def qwen3(library) -> arch_models.Built:
    return arch_models.ensure("qwen3")


@pytest.fixture(scope="module")
def token_ids() -> list[np.ndarray]:
    rng = np.random.default_rng(29)
    return [np.append(rng.integers(200, 30000, n - 1), EOS).astype(np.int32) for n in LENGTHS]


@pytest.fixture(scope="module")
def reference(qwen3, token_ids) -> dict[str, np.ndarray]:
    """transformers' last-token vectors of the same weights under each rope scaling."""
    import torch
    import transformers as tf

    torch.set_num_threads(1)
    config = tf.Qwen3Config.from_pretrained(qwen3.hf_dir)
    assert config.max_position_embeddings == 512
    theta = config.rope_parameters["rope_theta"]
    torch.manual_seed(arch_models.SEED)
    model = tf.Qwen3ForCausalLM(config).eval()
    arch_models._spread(model, arch_models.SEED)  # the recipe's weights, as its GGUF holds them
    out = {}
    for name, (_, rope) in CASES.items():
        config.rope_parameters = {**rope, "rope_theta": theta}
        model.model.rotary_emb = type(model.model.rotary_emb)(config=config)  # transformers' own rope of that kind
        rows = []
        with torch.no_grad():
            for ids in token_ids:
                hidden = model.model(input_ids=torch.from_numpy(ids.astype(np.int64))[None]).last_hidden_state
                rows.append(torch.nn.functional.normalize(hidden[0, -1], dim=-1).numpy())
        out[name] = np.stack(rows)
    return out


def _config(path: Path, **kw: object) -> ModelConfig:
    return ModelConfig(model_path=path, n_threads=1, n_gpu_layers=0, compute_type="off", n_ctx=1024, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("case", list(CASES))
def test_rope_scaling_beyond_the_training_context_matches_transformers(qwen3, token_ids, reference, case, caplog):
    config = _config(qwen3.gguf("f32"), **CASES[case][0])
    with caplog.at_level(logging.WARNING, logger="embellama"), EmbeddingModel(config) as m:
        assert m.max_sequence_length >= max(LENGTHS)
        ours = m.embed_token_ids(token_ids)
    assert "exceeds the 512 tokens it was trained with" in caplog.text
    cos = (ours * reference[case]).sum(1)
    assert cos.min() >= 0.9999, (case, cos)
    others = [k for k in CASES if k != case]  # the scalings are told apart: a setting that is lost fails
    assert all((ours * reference[k]).sum(1).min() < 0.999 for k in others), case


def test_rope_freq_base_reaches_llama_cpp(qwen3, token_ids, reference):
    with EmbeddingModel(_config(qwen3.gguf("f32"), rope_freq_base=500.0)) as m:
        assert (m.embed_token_ids(token_ids) * reference["none"]).sum(1).max() < 0.999  # the model's is 10000


def test_a_known_model_entry_supplies_rope_beyond_the_training_context(qwen3, token_ids, reference, tmp_path):
    table = tmp_path / "rope.json"
    entry = {"id": "test/tiny-qwen3", "names": ["Hf"], "architectures": ["qwen3"], "rope": CASES["yarn"][0]}
    table.write_text(json.dumps({"models": [entry]}))
    with EmbeddingModel(_config(qwen3.gguf("f32"), known_models=table)) as m:
        assert m.known_model is not None and m.known_model.id == "test/tiny-qwen3"
        assert (m.embed_token_ids(token_ids) * reference["yarn"]).sum(1).min() >= 0.9999


def test_bad_rope_settings_are_refused(qwen3, minilm_f16):
    for bad in ({"rope_scaling": "longrope"}, {"rope_freq_scale": 0.0}, {"rope_freq_base": float("nan")},
                {"yarn_orig_ctx": 0}, {"yarn_beta_fast": -1.0}, {"rope_freq_scale": True}):  # fmt: skip
        with pytest.raises(ConfigurationError, match="rope|yarn"):
            _config(qwen3.gguf("f32"), **bad)
    # learned positions (BERT) cannot go beyond their table, scaling or not: refused, not aborted
    with pytest.raises(ConfigurationError, match="learned table"):
        EmbeddingModel(_config(minilm_f16, rope_scaling="linear", rope_freq_scale=0.5)).load()
