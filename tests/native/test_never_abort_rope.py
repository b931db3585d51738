# SPDX-License-Identifier: Apache-2.0
"""No rope setting kills the interpreter: hypothesis draws ModelConfig's rope and YaRN fields (in and out of range,
with an n_ctx within and far beyond the training context) for the tiny rotary Qwen3, and a child process
(tests/support/child.py) loads and embeds with each. It may refuse with embellama's exception naming the model;
it must never die by a signal. The MiniLM GGUF (learned positions) is refused beyond its table, whatever the rope.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.support import arch_models
from tests.support.child import Child

EXAMPLES = int(os.environ.get("EMBELLAMA_ROPE_EXAMPLES", "12"))
NAME = "rope-probe"


def _floats() -> st.SearchStrategy[object]:
    return st.one_of(
        st.none(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([0.0, -1.0, 1e-30, 0.25, 1.0, 32.0, 1e6, 1e12, 1e13, True, "1.0"]),
    )


configs = st.fixed_dictionaries(
    {"model_name": st.just(NAME), "n_threads": st.just(1), "n_gpu_layers": st.just(0), "compute_type": st.just("off")},
    optional={
        "n_ctx": st.sampled_from([None, 64, 512, 513, 1024, 4096]),
        "rope_scaling": st.sampled_from([None, "none", "linear", "yarn", "longrope", "", 2]),
        "rope_freq_base": _floats(),
        "rope_freq_scale": _floats(),
        "yarn_orig_ctx": st.one_of(st.none(), st.sampled_from([-1, 0, 1, 64, 512, 2**31 - 1, 2**31, 1.5])),
        "yarn_ext_factor": _floats(),
        "yarn_attn_factor": _floats(),
        "yarn_beta_fast": _floats(),
        "yarn_beta_slow": _floats(),
    },
)


@pytest.fixture(scope="module")
def child(library):
    proc = Child()
    yield proc
    proc.close()


@pytest.fixture(scope="module")
def qwen3(library) -> arch_models.Built:
    return arch_models.ensure("qwen3")


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(config=configs)
def test_no_rope_setting_kills_the_process(child, qwen3, config):
    fields = {**config, "model_path": str(qwen3.gguf("f16"))}
    reply = child.call({"op": "load", "config": fields, "texts": ["A man plays a guitar.", "x"]})
    event("ran" if reply["ok"] else f"refused with {reply['error']}")
    if not reply["ok"]:
        assert reply["ours"], f"{reply['error']} is not an embellama exception: {reply['message']}"
        assert f"'{NAME}'" in reply["message"], f"the error does not name the model: {reply['message']}"
        return
    assert reply["shapes"] == [[64]] * 2


def test_learned_positions_are_refused_beyond_their_table_whatever_the_rope(child, minilm_f16):
    for rope in ({}, {"rope_scaling": "yarn", "rope_freq_scale": 0.25}, {"rope_scaling": "linear"}):
        config = {"model_path": str(minilm_f16), "model_name": NAME, "n_ctx": 2048, **rope}
        reply = child.call({"op": "load", "config": config, "texts": ["a b c"]})
        assert not reply["ok"] and reply["error"] == "ConfigurationError" and "learned table" in reply["message"]
