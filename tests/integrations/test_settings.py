# SPDX-License-Identifier: Apache-2.0
"""The settings Haystack's to_dict and Chroma's get_config store (``model``, ``model_name``, ``model_kwargs``)
are JSON that rebuilds the same ModelConfig, for any config; the model is loaded only on first use, so an
``hf://`` reference is kept as written and nothing is fetched to serialize or rebuild."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from embellama import ModelConfig
from embellama._compute.pooling import Normalization, PoolingStrategy
from embellama.integrations._shared import EMBEDDING, Backend

names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12).filter(str.strip)
fields = st.fixed_dictionaries(
    {},
    optional={
        "n_ctx": st.integers(64, 4096),
        "n_threads": st.integers(1, 64),
        "n_gpu_layers": st.integers(-1, 99),
        "pooling": st.sampled_from([*PoolingStrategy, "mean", "CLS", "mean_sqrt_len_tokens"]),
        "normalize": st.one_of(st.booleans(), st.sampled_from(Normalization), st.floats(0.5, 8.0)),
        "truncate": st.booleans(),
        "parse_special": st.booleans(),
        "flash_attn": st.one_of(st.none(), st.booleans()),
        "use_mmap": st.booleans(),
        "compute_type": st.sampled_from(["auto", "off", "f32", "f16", "bf16", "q8_0"]),
        "tensor_split": st.lists(st.floats(0.1, 4.0), min_size=1, max_size=4).map(tuple),
        "prompts": st.dictionaries(names, st.text(max_size=20), max_size=3),
        "default_prompt_name": names,
        "truncate_dim": st.integers(1, 1024),
        "precision": st.sampled_from(["float32", "int8", "uint8", "binary", "ubinary"]),
    },
)


@settings(max_examples=150, deadline=None)
@given(fields=fields, name=st.one_of(st.none(), names))
def test_stored_settings_rebuild_the_same_config(fields, name):
    config = ModelConfig(model_path="models/some model.gguf", model_name=name, **fields)
    backend = Backend(config, engine=None, model_name=None, model_kwargs=None, kind=EMBEDDING, who="test")
    stored = json.loads(json.dumps(backend.settings()))  # what the frameworks write and read back
    again = Backend(
        stored["model"],
        engine=None,
        model_name=stored["model_name"],
        model_kwargs=stored["model_kwargs"],
        kind=EMBEDDING,
        who="test",
    )
    assert again.config == config
    assert not again.loaded and again.settings() == stored


def test_an_hf_reference_is_stored_as_written():
    reference = "hf://org/repo@v1/model-Q8_0.gguf"
    backend = Backend(reference, engine=None, model_name="m", model_kwargs={"n_threads": 2}, kind=EMBEDDING, who="t")
    assert backend.settings() == {"model": reference, "model_name": "m", "model_kwargs": {"n_threads": 2}}
    assert not backend.loaded
