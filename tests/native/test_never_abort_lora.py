# SPDX-License-Identifier: Apache-2.0
"""No LoRA adapter and no task kills the interpreter: hypothesis draws ``ModelConfig.lora`` (lists and task dicts of
adapters of the tiny BERT, of another model, damaged, or not adapters at all) and a call's ``task``; a child process
(tests/support/child.py) loads and embeds with each. It may refuse with embellama's exception naming the model; it
must never die by a signal. llama.cpp itself is also handed the bad adapters directly (past embellama's header
check) in a child: it refuses each without aborting.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.support import lora_models
from tests.support.child import Child

EXAMPLES = int(os.environ.get("EMBELLAMA_LORA_EXAMPLES", "30"))
NAME = "lora-probe"
TASKS = [None, "retrieval.query", "retrieval.passage", "nope", ""]


@pytest.fixture(scope="module")
def child(library):
    proc = Child()
    yield proc
    proc.close()


@pytest.fixture(scope="module")
def adapters(library, tmp_path_factory) -> dict[str, str]:
    """Good adapters, and bad ones: another model's, a model file, a cut file, a non-GGUF, a missing path, another
    architecture's, and one that changes a tensor the model lacks."""
    import gguf

    from embellama._gguf.reader import rewrite

    built = lora_models.ensure()
    tmp = tmp_path_factory.mktemp("lora")
    plain = (built / "plain.gguf").read_bytes()
    (tmp / "cut.gguf").write_bytes(plain[: len(plain) - 300])
    (tmp / "text.gguf").write_text("not a GGUF")
    string = gguf.GGUFValueType.STRING
    rewrite(
        built / "plain.gguf", tmp / "nomic.gguf", why="test", set_keys={"general.architecture": ("nomic-bert", string)}
    )
    extra = {"blk.7.attn_q.weight.lora_a": np.zeros((4, 64), np.float32),
             "blk.7.attn_q.weight.lora_b": np.zeros((64, 4), np.float32)}  # fmt: skip
    rewrite(built / "plain.gguf", tmp / "extra.gguf", why="test", tensors=extra)
    files = {name: built / f"{name}.gguf" for name in ("plain", "query", "passage", "other")}
    files.update(model=built / "base.F32.gguf", missing=tmp / "missing.gguf")
    files.update({name: tmp / f"{name}.gguf" for name in ("cut", "text", "nomic", "extra")})
    return {name: str(path) for name, path in files.items()}


names = st.sampled_from(["plain", "query", "passage", "other", "model", "missing", "cut", "text", "nomic", "extra"])
loras = st.one_of(
    st.none(),
    st.lists(names, max_size=3),
    st.dictionaries(st.sampled_from(["a", "retrieval.query", ""]), names, max_size=2),
    st.sampled_from(["plain", 3, ""]),
)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(lora=loras, task=st.sampled_from(TASKS))
def test_no_adapter_or_task_kills_the_process(child, adapters, lora, task):
    def path(name: object) -> object:
        return adapters[name] if isinstance(name, str) and name in adapters else name

    if isinstance(lora, list):
        lora = [path(n) for n in lora]
    elif isinstance(lora, dict):
        lora = {t: path(n) for t, n in lora.items()}
    base = str(lora_models.ensure() / "base.F32.gguf")
    config = {"model_path": base, "model_name": NAME, "pooling": "mean", "n_threads": 1, "lora": lora}
    request = {"op": "load", "config": config, "texts": ["A man plays a guitar.", "x"]}
    if task is not None:
        request["task"] = task
    reply = child.call(request)
    event("ran" if reply["ok"] else f"refused with {reply['error']}")
    if not reply["ok"]:
        assert reply["ours"], f"{reply['error']} is not an embellama exception: {reply['message']}"
        assert f"'{NAME}'" in reply["message"] or "lora" in reply["message"], reply["message"]
        return
    assert reply["shapes"] == [[64]] * 2 and reply["finite"]


_DIRECT = """
import json, sys
from embellama.llama import Model
from embellama import ModelLoadError
model = Model(sys.argv[1], name="m")
out = {}
for name, path in json.loads(sys.argv[2]).items():
    try:
        model.load_lora(path)
        out[name] = "loaded"
    except ModelLoadError as exc:
        out[name] = "ModelLoadError"
print(json.dumps(out))
"""


def test_llama_cpp_refuses_bad_adapters_without_aborting(library, adapters):
    """Past embellama's header check, llama.cpp's own loader gets each bad adapter: it returns NULL (a
    ModelLoadError), never aborts, and a good adapter still loads afterwards."""
    names = ["other", "model", "cut", "nomic", "extra", "plain"]
    base = str(lora_models.ensure() / "base.F32.gguf")
    proc = subprocess.run(
        [sys.executable, "-c", _DIRECT, base, json.dumps({n: adapters[n] for n in names})],
        capture_output=True, text=True, timeout=120, env=dict(os.environ),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {**{n: "ModelLoadError" for n in names[:-1]}, "plain": "loaded"}
