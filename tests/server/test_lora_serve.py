# SPDX-License-Identifier: Apache-2.0
"""LoRA tasks where users reach them without Python: ``embellama serve`` (``task`` in a ``/v1/embeddings`` body, as
jina's own API takes it) and ``embellama embed --lora ... --task ...``.

The reference is transformers with each adapter merged (``tests/support/lora_models.py``), as in
tests/models/test_lora.py: a dropped or wrong adapter could not pass (the tasks' vectors are far apart).
"""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import numpy as np
import openai
import pytest

from tests.models.test_lora import COS, PASSAGE, QUERY
from tests.models.test_lora import built as built  # the tiny BERT and its adapters, built and cached once
from tests.models.test_lora import ref as ref  # transformers with each adapter merged
from tests.server.test_serve import KEY, REPO, WAIT, Server
from tests.support import lora_models


@pytest.fixture(scope="module")
def texts():
    return lora_models.texts()[:12]


def _lowest_cos(got, want) -> float:
    got, want = np.atleast_2d(np.asarray(got, dtype=np.float64)), np.atleast_2d(want)
    return float(((got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)).min())


@pytest.fixture(scope="module")
def server(built, tmp_path_factory):
    entry = {
        "model_path": str(built / "base.F32.gguf"), "model_name": "tiny", "pooling": "mean", "compute_type": "off",
        "n_threads": 1, "lora": [str(built / "query.gguf"), str(built / "passage.gguf")],
    }  # fmt: skip
    config = tmp_path_factory.mktemp("lora") / "models.json"
    config.write_text(json.dumps({"models": [entry]}))
    srv = Server("--config", str(config), "--api-key", KEY)
    yield srv
    assert srv.stop() == 0, "".join(srv.stderr)[-3000:]


def test_the_openai_client_picks_a_task_per_request(server, ref, texts):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=WAIT)

    def vectors(**extra):
        got = client.embeddings.create(model="tiny", input=texts, extra_body=extra or None)
        return np.array([d.embedding for d in got.data])

    for task, key in [(QUERY, "query"), (None, "base"), (PASSAGE, "passage"), (QUERY, "query")]:
        got = vectors(task=task) if task else vectors()
        assert _lowest_cos(got, ref[key][: len(texts)]) >= COS, (task, key)
    assert _lowest_cos(ref["query"], ref["passage"]) < 0.9  # the tasks differ far beyond the tolerance


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"task": "classification"}, "one of the model's tasks ['retrieval.passage', 'retrieval.query']"),
        ({"task": 3}, "one of the model's tasks"),
        ({"task": QUERY, "input": [[101, 2023, 102]]}, "'task' needs texts"),
    ],
)
def test_a_bad_task_gets_an_openai_400_naming_the_field(server, extra, fragment):
    body = {"model": "tiny", "input": "a text", **extra}
    r = httpx.post(server.url + "/v1/embeddings", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=WAIT)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "task" and fragment in error["message"], error
    # and the server goes on serving
    ok = httpx.post(
        server.url + "/v1/embeddings",
        json={"model": "tiny", "input": "a text", "task": PASSAGE},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=WAIT,
    )
    assert ok.status_code == 200


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "embellama", *args], capture_output=True, text=True, cwd=REPO, timeout=WAIT * 2
    )


def test_the_cli_embeds_with_a_task(built, ref, texts):
    common = [str(built / "base.F32.gguf"), "--pooling", "mean", "--compute-type", "off", "--threads", "1"]
    adapters = ["--lora", str(built / "query.gguf"), "--lora", str(built / "passage.gguf")]
    proc = _cli("embed", *common, *adapters, "--task", QUERY, *texts[:4])
    assert proc.returncode == 0, proc.stderr
    assert _lowest_cos(json.loads(proc.stdout)["embeddings"], ref["query"][:4]) >= COS
    bad = _cli("embed", *common, *adapters, "--task", "nope", texts[0])
    assert bad.returncode != 0 and "nope" in bad.stderr and QUERY in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr
