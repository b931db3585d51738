# SPDX-License-Identifier: Apache-2.0
"""``embellama embed --output-kind sparse|multi`` writes what SparseEncoder and MultiVectorEncoder give, and
``embellama convert`` copies a model's heads file along with it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from embellama import ModelConfig, MultiVectorEncoder, SparseEncoder
from tests.cli.test_cli import run
from tests.support import sparse_models

TEXTS = ["A cat sits on the mat.", "Stock markets fell sharply today.", "Kittens sleep."]


@pytest.fixture(scope="module")
def models():
    return {name: sparse_models.ensure(name) / "model.F32.gguf" for name in ("splade", "bge-m3")}


def test_embed_sparse_jsonl_and_json(models):
    proc = run("embed", str(models["splade"]), *TEXTS, "--output-kind", "sparse", "--format", "jsonl")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    with SparseEncoder(ModelConfig(model_path=models["splade"])) as enc:
        want = enc.encode(TEXTS)
    assert [r["text"] for r in rows] == TEXTS
    for row, emb in zip(rows, want, strict=True):
        assert row["indices"] == emb.indices.tolist()
        np.testing.assert_allclose(row["values"], emb.values, rtol=1e-6)
    proc = run("embed", str(models["bge-m3"]), *TEXTS, "--output-kind", "sparse")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert len(doc["embeddings"]) == 3 and set(doc["embeddings"][0]) == {"indices", "values"}


def test_embed_multi(models):
    proc = run("embed", str(models["bge-m3"]), *TEXTS, "--output-kind", "multi", "--chunk-size", "2")
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)["embeddings"]
    with MultiVectorEncoder(ModelConfig(model_path=models["bge-m3"])) as enc:
        want = enc.encode(TEXTS)
    for rows, vectors in zip(got, want, strict=True):
        np.testing.assert_allclose(np.array(rows), vectors, rtol=1e-5, atol=1e-6)


def test_embed_refusals(models, tmp_path):
    proc = run("embed", str(models["splade"]), *TEXTS, "--output-kind", "multi")
    assert proc.returncode != 0 and "ColBERT projection" in proc.stderr
    proc = run("embed", str(models["splade"]), *TEXTS, "--output-kind", "sparse", "--output", str(tmp_path / "x.npy"))
    assert proc.returncode != 0 and "json or jsonl" in proc.stderr


def test_convert_copies_the_heads_file(models, tmp_path):
    src = tmp_path / "splade.gguf"
    shutil.copy(models["splade"], src)
    shutil.copy(models["splade"].with_name("model.F32.heads.npz"), tmp_path / "splade.heads.npz")
    proc = run("convert", str(src), str(tmp_path / "splade.f16.gguf"), "--type", "f16")
    assert proc.returncode == 0, proc.stderr
    copied = tmp_path / "splade.f16.heads.npz"
    assert copied.read_bytes() == (tmp_path / "splade.heads.npz").read_bytes()
