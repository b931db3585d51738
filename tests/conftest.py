# SPDX-License-Identifier: Apache-2.0
"""Shared fixtures: the library, the real MiniLM GGUF files and reference outputs."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
SHARED = REPO.parent / "shared"
STS_FILE = Path(os.environ.get("EMBELLAMA_STS_FILE") or SHARED / "data" / "stsbenchmark" / "sts-test.csv")
sys.path.insert(0, str(TESTS))

import make_model  # noqa: E402
from texts import varied_texts  # noqa: E402

ST_MAX_SEQ_LENGTH = 256  # sentence_bert_config.json of all-MiniLM-L6-v2


@pytest.fixture(scope="session")
def library():
    """The process-wide libllama (built by build_llama.py or named by $EMBELLAMA_LIB)."""
    import embellama

    try:
        lib = embellama.load_library()
    except embellama.LibraryError as exc:
        pytest.fail(f"libllama is required for this test: {exc}")
    wanted = os.environ.get("EMBELLAMA_BACKEND")
    if wanted and lib.backend != wanted:
        pytest.fail(f"asked for the {wanted} backend but loaded a {lib.backend} build from {lib.path}")
    if wanted in ("cuda", "metal", "vulkan") and not any(d["type"] in ("GPU", "IGPU") for d in lib.devices()):
        pytest.fail(f"the {wanted} build sees no GPU device: {lib.devices()}")
    return lib


@pytest.fixture(scope="session")
def minilm_paths(library) -> dict[str, Path]:
    """{"f16": path, "q8_0": path} of all-MiniLM-L6-v2 in GGUF (made once, cached)."""
    return make_model.ensure_models()


@pytest.fixture(scope="session")
def minilm_f16(minilm_paths) -> Path:
    return minilm_paths["f16"]


@pytest.fixture(scope="session")
def minilm_q8(minilm_paths) -> Path:
    return minilm_paths["q8_0"]


def _reference(texts: list[str], tag: str, modes: str = "mean,cls,max,mean_sqrt") -> dict[str, np.ndarray]:
    """sentence-transformers / HF tokenizer outputs for ``texts``, cached by content."""
    digest = hashlib.sha256(json.dumps([texts, ST_MAX_SEQ_LENGTH, modes]).encode()).hexdigest()[:16]
    weights = make_model.weights_key()
    out = make_model.cache_dir() / "reference" / f"{tag}-{weights}-{digest}.npz"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        texts_file = out.with_suffix(".json")
        texts_file.write_text(json.dumps(texts), encoding="utf-8")
        cmd = [sys.executable, str(TESTS / "reference.py"), str(texts_file), str(out)]
        cmd += ["--max-seq-length", str(ST_MAX_SEQ_LENGTH), "--modes", modes]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"reference.py failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    with np.load(out) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="session")
def varied() -> list[str]:
    return varied_texts()


@pytest.fixture(scope="session")
def varied_reference(varied) -> dict[str, np.ndarray]:
    return _reference(varied, "varied")


def read_sts() -> tuple[list[str], list[str], np.ndarray]:
    with open(STS_FILE, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r[5] for r in rows], [r[6] for r in rows], np.array([float(r[4]) for r in rows])


@pytest.fixture(scope="session")
def sts():
    """STS Benchmark test pairs from ../shared; required in CI, optional elsewhere."""
    if not STS_FILE.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{STS_FILE} is missing in CI")
        pytest.skip(f"{STS_FILE} not present (it lives beside the checkout)")
    return read_sts()


@pytest.fixture(scope="session")
def sts_reference(sts) -> dict[str, np.ndarray]:
    s1, s2, _ = sts
    return _reference(s1 + s2, "sts", modes="")
