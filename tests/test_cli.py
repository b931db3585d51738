"""The embellama command: doctor, embed, demo and its error exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from embellama import EmbeddingModel, ModelConfig

REPO = Path(__file__).resolve().parent.parent


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "embellama", *args], capture_output=True, text=True, input=stdin, cwd=REPO, timeout=120
    )


def test_doctor_reports_library_backend_and_abi_check(library):
    proc = run("doctor", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["backend"] == library.backend == (os.environ.get("EMBELLAMA_BACKEND") or "cpu")
    assert report["library"] == str(library.path)
    assert report["llama_cpp_commit"] == library.commit
    assert report["abi_check"] == "manifest layout + defaults"
    assert [d["type"] for d in report["devices"]] == [d["type"] for d in library.devices()]
    assert report["devices"][-1]["type"] == "CPU"


def test_embed_prints_the_same_vectors_as_the_api(minilm_f16):
    proc = run("embed", str(minilm_f16), stdin="first line\nsecond line\n")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    got = np.array(data["embeddings"], dtype=np.float32)
    with EmbeddingModel(ModelConfig(model_path=minilm_f16)) as model:
        expected = model.embed_batch(["first line", "second line"])
    assert got.shape == (2, 384)
    np.testing.assert_allclose((got * expected).sum(1), 1.0, atol=1e-5)


def test_demo_ranks_the_paraphrase_first(minilm_f16):
    proc = run("demo", str(minilm_f16))
    assert proc.returncode == 0, proc.stderr
    assert "closest to [0] is [1]" in proc.stdout
    assert "closest to [2] is [3]" in proc.stdout


def test_errors_exit_1_with_a_message(tmp_path):
    proc = run("embed", str(tmp_path / "none.gguf"), "text")
    assert proc.returncode == 1
    assert "model file not found" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_demo_with_pooling_none_is_a_clean_error(minilm_f16):
    proc = run("demo", str(minilm_f16), "--pooling", "none")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "--pooling none" in proc.stderr and "one vector per sentence" in proc.stderr
