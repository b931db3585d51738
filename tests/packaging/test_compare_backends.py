# SPDX-License-Identifier: Apache-2.0
"""benchmarks/compare_backends.py: builds run in child processes, cosines and the exit status."""

from __future__ import annotations

import json

import compare_backends
import pytest


def test_same_build_twice_agrees_and_reports(library, minilm_f16, tmp_path, capsys):
    lib_dir = str(library.path.parent)
    out = tmp_path / "cmp.md"
    args = [lib_dir, lib_dir, "--model", str(minilm_f16), "--limit", "40", "--rounds", "1", "--threads", "2"]
    assert compare_backends.main([*args, "--out", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["n_texts"] == 40 and report["ok"] is True
    assert [r["backend"] for r in report["rows"]] == [library.backend, library.backend]
    # one build, the same texts in the same batches: the vectors agree to float rounding
    assert all(r["cos_min"] > 0.99999 for r in report["rows"])
    assert report["rows"][0]["speed_ratio"] == 1.0 and report["rows"][1]["texts_per_s"] > 0
    assert "| build | backend |" in out.read_text()


def test_threshold_sets_the_exit_status(library, minilm_f16, capsys):
    lib_dir = str(library.path.parent)
    args = [lib_dir, lib_dir, "--model", str(minilm_f16), "--limit", "8", "--rounds", "1", "--min-cos", "1.5"]
    assert compare_backends.main(args) == 1
    assert "BELOW the threshold 1.5" in capsys.readouterr().out


def test_a_broken_build_is_named(library, minilm_f16, tmp_path):
    missing = tmp_path / "no-such-lib"
    missing.mkdir()
    args = [str(library.path.parent), str(missing), "--model", str(minilm_f16), "--limit", "4", "--rounds", "1"]
    with pytest.raises(SystemExit, match="build '.*no-such-lib' failed"):
        compare_backends.main(args)


def test_needs_two_builds():
    with pytest.raises(SystemExit):
        compare_backends.main(["cpu"])
