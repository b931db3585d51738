# SPDX-License-Identifier: Apache-2.0
"""``embellama rerank`` and ``embellama info`` on rerankers, run as users run them (``python -m embellama``)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from embellama import ModelConfig, Reranker
from tests.cli.test_cli import _one_line_error, run
from tests.support import rerank_models

TOL = 2e-3  # llama.cpp's CPU GELU goes through an F16 table: scores agree with CrossEncoder's to about 1e-3
OFF = ("--compute-type", "off", "--threads", "1")  # the file's own F32 weights, as the references were made


@pytest.fixture(scope="module")
def built(library) -> dict[str, rerank_models.Built]:
    return {name: rerank_models.ensure(name) for name in ("bert", "bert3", "xlm-roberta")}


@pytest.fixture(scope="module")
def sample() -> tuple[list[str], list[list[int]], list[str]]:
    return rerank_models.pairs()


def _api_rank(path, query: str, documents: list[str], **kwargs) -> list[dict]:
    with Reranker(ModelConfig(model_path=path, compute_type="off", n_threads=1)) as reranker:
        return reranker.rank(query, documents, **kwargs)


def _usage_error(proc) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(("embellama: error: ", "embellama rerank: error: ")), proc.stderr
    return lines[0]


@pytest.mark.parametrize("name", ["bert", "xlm-roberta"])
def test_rerank_ranks_like_the_api_and_sentence_transformers(built, sample, name, tmp_path):
    model = built[name]
    queries, chosen, docs = sample
    reference = model.reference()["scores"]
    q = 3
    documents = [docs[j] for j in chosen[q]]
    source = tmp_path / "docs.txt"
    source.write_text("\n".join(documents[:5]) + "\n\n" + "\n".join(documents[5:]) + "\n", encoding="utf-8")

    proc = run("rerank", str(model.gguf("f32")), "--query", queries[q], "--input", str(source), *OFF)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["model"] == f"{name}.F32" and out["query"] == queries[q]
    results = out["results"]
    assert [sorted(r) for r in results] == [["index", "score"]] * 20  # the blank line is no document
    got = np.array([r["score"] for r in results], dtype=np.float32)
    assert np.all(np.diff(got) <= 0)  # best first

    expected = _api_rank(model.gguf("f32"), queries[q], documents)
    assert [r["index"] for r in results] == [e["corpus_id"] for e in expected]
    assert np.array_equal(got, np.array([e["score"] for e in expected], dtype=np.float32))
    ours = np.empty(20, dtype=np.float32)
    ours[[r["index"] for r in results]] = got
    np.testing.assert_allclose(ours, reference[q * 20 : (q + 1) * 20], atol=TOL)


def test_formats_top_k_texts_and_activation(built, sample, tmp_path):
    model = built["bert"]
    path = str(model.gguf("f32"))
    queries, chosen, docs = sample
    logits = model.reference()["logits"][:, 0]
    q = 11
    documents = [docs[j] for j in chosen[q]][:8]
    documents[2] = 'a, "quoted"\tline: Zürich 東京'  # csv and tsv quote it
    expected = _api_rank(path, queries[q], documents, activation="identity", top_k=3, return_documents=True)
    assert len(expected) == 3

    # documents as arguments, after the options
    proc = run("rerank", path, "-q", queries[q], "--format", "tsv", "--top-k", "3", "--return-documents",
               "--activation", "identity", *OFF, *documents)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.reader(proc.stdout.splitlines(), delimiter="\t"))
    assert rows[0] == ["index", "score", "text"] and len(rows) == 4
    assert [(int(i), t) for i, _, t in rows[1:]] == [(e["corpus_id"], e["text"]) for e in expected]
    scores = np.array([float(s) for _, s, _ in rows[1:]], dtype=np.float32)
    assert np.array_equal(scores, np.array([e["score"] for e in expected], dtype=np.float32))
    # identity: the raw logits, as CrossEncoder gives them (not the sigmoid, which is in (0, 1))
    plain = [docs[j] for j in chosen[q]][:8]
    for row, score in zip(rows[1:], scores, strict=True):
        index = int(row[0])
        if index != 2:
            assert abs(score - logits[q * 20 + plain.index(documents[index])]) <= TOL

    # stdin, jsonl
    proc = run("rerank", path, "-q", queries[q], "--format", "jsonl", *OFF, stdin="\n".join(documents) + "\n")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    full = _api_rank(path, queries[q], documents)
    assert [(r["index"], np.float32(r["score"])) for r in lines] == [(e["corpus_id"], e["score"]) for e in full]
    assert all(0 < r["score"] < 1 for r in lines)  # the model's default activation: sigmoid

    # a file, its format from the extension
    for suffix, delimiter in ((".csv", ","), (".tsv", "\t")):
        out = tmp_path / f"ranked{suffix}"
        proc = run("rerank", path, "-q", queries[q], "--return-documents", "-o", str(out), *OFF, *documents)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == ""
        with open(out, encoding="utf-8", newline="") as f:
            table = list(csv.reader(f, delimiter=delimiter))
        assert table[0] == ["index", "score", "text"]
        assert [(int(i), t) for i, _, t in table[1:]] == [(e["corpus_id"], documents[e["corpus_id"]]) for e in full]


def test_rerank_errors_are_one_line(built, minilm_f16, tmp_path):
    path = str(built["bert"].gguf("f32"))
    line = _one_line_error(run("rerank", str(minilm_f16), "-q", "a query", "a document"))
    assert "is not a reranker" in line and "embellama embed" in line
    line = _one_line_error(run("rerank", str(built["bert3"].gguf("f32")), "-q", "q", "a", "b"))
    assert "has 3 outputs per pair" in line and "one relevance score" in line
    assert "model file not found" in _one_line_error(run("rerank", str(tmp_path / "none.gguf"), "-q", "q", "d"))
    (tmp_path / "bad.gguf").write_bytes(b"not a model")
    assert "not a GGUF file" in _one_line_error(run("rerank", str(tmp_path / "bad.gguf"), "-q", "q", "d"))
    assert "document of pair 1 is empty" in _one_line_error(run("rerank", path, "-q", "q", "fine", "", *OFF))
    assert "query of pair 0 is empty" in _one_line_error(run("rerank", path, "-q", "", "fine", *OFF))
    assert "no documents to rank" in _one_line_error(run("rerank", path, "-q", "q", stdin="\n \n"))
    assert "not both" in _one_line_error(run("rerank", path, "-q", "q", "d", "--input", str(tmp_path / "d.txt")))
    assert "cannot tell the format" in _one_line_error(run("rerank", path, "-q", "q", "d", "-o", str(tmp_path / "o")))
    assert "required: -q/--query" in _usage_error(run("rerank", path, "d"))
    assert "positive integer, got 0" in _usage_error(run("rerank", path, "-q", "q", "d", "--top-k", "0"))
    assert "invalid choice: 'npy'" in _usage_error(run("rerank", path, "-q", "q", "d", "--format", "npy"))
    assert "unrecognized arguments: --pooling mean" in _usage_error(
        run("rerank", path, "-q", "q", "d", "--pooling", "mean")
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.gguf"]  # a failed run leaves no file behind


def test_info_says_a_reranker_is_one(built, minilm_f16):
    proc = run("info", str(built["bert"].gguf("f16")), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["reranker"] == {"labels": ["LABEL_0"], "activation": "sigmoid", "exact_token_types": True}
    assert report["pooling"].startswith("rank: a reranker")

    three = json.loads(run("info", str(built["bert3"].gguf("f32")), "--json").stdout)["reranker"]
    assert len(three["labels"]) == 3 and three["activation"] == "identity"  # CrossEncoder's default for several

    proc = run("info", str(built["bert"].stock))  # llama.cpp's converter alone: no rows for token type 1
    assert proc.returncode == 0, proc.stderr
    assert "reranker: yes: labels LABEL_0; default activation sigmoid; token types NOT exact" in proc.stdout
    assert "pooling: rank: a reranker" in proc.stdout

    text = run("info", str(built["xlm-roberta"].gguf("f32"))).stdout
    assert "reranker: yes: labels LABEL_0; default activation sigmoid; exact token types" in text

    proc = run("info", str(minilm_f16))
    assert proc.returncode == 0, proc.stderr
    assert "reranker: no (an embedding model)" in proc.stdout and "pooling: mean" in proc.stdout
    assert json.loads(run("info", str(minilm_f16), "--json").stdout)["reranker"] is None
