# SPDX-License-Identifier: Apache-2.0
"""The embellama command: doctor, info, embed (JSON, .npy, .jsonl, .csv), demo and one-line errors."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from embellama import EmbeddingModel, ModelConfig

REPO = Path(__file__).resolve().parents[2]


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


def _one_line_error(proc: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("embellama: error: "), proc.stderr
    return lines[0]


def test_embed_writes_npy_jsonl_and_csv(minilm_f16, tmp_path):
    texts = ["first line", 'a, "quoted" line', "Zürich 東京 🙂"]
    source = tmp_path / "texts.txt"
    source.write_text(f"{texts[0]}\n\n{texts[1]}\n{texts[2]}\n", encoding="utf-8")  # the blank line is skipped
    with EmbeddingModel(ModelConfig(model_path=minilm_f16)) as model:
        expected = model.embed_batch(texts)

    proc = run("embed", str(minilm_f16), "--input", str(source), "-o", str(tmp_path / "out.npy"), "--progress")
    assert proc.returncode == 0, proc.stderr
    array = np.load(tmp_path / "out.npy")
    assert array.dtype == np.float32 and array.shape == (3, 384)
    np.testing.assert_allclose(array, expected, atol=1e-6)
    assert "embedding with" in proc.stderr and "3/3" in proc.stderr  # the progress bar
    assert not (tmp_path / "out.npy.part").exists()

    proc = run("embed", str(minilm_f16), "-i", "-", "-o", str(tmp_path / "out.jsonl"), stdin=source.read_text())
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in rows] == texts
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows], np.float32), expected, atol=1e-6)

    proc = run("embed", str(minilm_f16), *texts, "--output", str(tmp_path / "out.csv"))
    assert proc.returncode == 0, proc.stderr
    with open(tmp_path / "out.csv", encoding="utf-8", newline="") as f:
        header, *table = list(csv.reader(f))
    assert header[0] == "text" and header[1:] == [f"dim_{i}" for i in range(384)]
    assert [r[0] for r in table] == texts
    np.testing.assert_allclose(np.array([r[1:] for r in table], np.float64), expected, atol=1e-6)


def test_embed_errors_are_one_line(minilm_f16, tmp_path):
    model = str(minilm_f16)
    assert "cannot tell the format" in _one_line_error(run("embed", model, "x", "-o", str(tmp_path / "o.txt")))
    assert "not both" in _one_line_error(run("embed", model, "x", "--input", str(tmp_path / "t.txt")))
    assert "No such file" in _one_line_error(run("embed", model, "--input", str(tmp_path / "missing.txt")))
    assert "needs --output" in _one_line_error(run("embed", model, "x", "--format", "npy"))
    assert "unrecognized arguments" in _one_line_error(run("embed", model, "x", "--bogus"), code=2)
    line = _one_line_error(run("embed", model, "x", "--pooling", "none", "-o", str(tmp_path / "o.csv")))
    assert "one vector per token" in line
    assert "text is empty" in _one_line_error(run("embed", model, "ok", "", "-o", str(tmp_path / "o.npy")))
    assert not list(tmp_path.iterdir())  # a failed run leaves no file behind


def test_info_prints_metadata_dimensions_pooling_and_size(minilm_q8, tmp_path):
    proc = run("info", str(minilm_q8), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["architecture"] == "bert" and report["weight_type"] == "Q8_0"
    assert report["embedding_dimensions"] == 384 and report["context_length"] == 512
    assert report["pooling"] == "mean (from the GGUF metadata)"
    assert 0 < report["size"] <= report["file_size"] == minilm_q8.stat().st_size
    assert report["metadata"]["general.architecture"] == "bert"
    text = run("info", str(minilm_q8))
    assert text.returncode == 0, text.stderr
    for line in ("embedding_dimensions: 384", "pooling: mean", "weight_type: Q8_0", "bert.pooling_type = 1"):
        assert line in text.stdout
    assert "model file not found" in _one_line_error(run("info", str(tmp_path / "none.gguf")))
    (tmp_path / "bad.gguf").write_bytes(b"not a model")
    assert "not a GGUF file" in _one_line_error(run("info", str(tmp_path / "bad.gguf")))
