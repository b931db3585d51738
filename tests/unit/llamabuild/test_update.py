# SPDX-License-Identifier: Apache-2.0
"""llamabuild.update: moving the pin writes pins.json and the regenerated declarations, nothing else."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from llamabuild import cdef, pins, probe, report, update
from llamabuild import source as sources
from tests.unit.llamabuild.helpers import ROOT, fake_tree, needs_cc

NEW_CDEF = "/* llama.cpp " + "f" * 40 + " include/llama.h */\nstruct pair {\n    int32_t a;\n};\n"


def _checkout(folder: Path) -> Path:
    """A copy of the checkout's files that a pin could be spelled in: the build, the package's pins, nox."""
    for rel in ("build_llama.py", "noxfile.py", *update.PIN_FILES, "embellama/_native/compat.py"):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, folder / rel)
    shutil.copytree(ROOT / "build_backend", folder / "build_backend", ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def newer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> sources.Source:
    """A (pretend) newer llama-cpp-python: fetched, its declarations generated and probed, all faked."""
    fetched = sources.Source(
        "pypi", fake_tree(tmp_path), "llama-cpp-python==0.3.99:vendor/llama.cpp", "f" * 40, "1" * 64
    )
    monkeypatch.setattr(sources, "fetch_sdist_version", lambda *a, **k: fetched)
    monkeypatch.setattr(cdef, "generate_cdef", lambda header, label: NEW_CDEF)
    monkeypatch.setattr(probe, "probe_compiler", lambda *a, **k: ["cc"])

    def run_probe(source_dir: Path, work: Path, structs: Any, enums: Any, *rest: Any) -> Any:
        assert source_dir == fetched.directory and dict(structs) == {"pair": ["a"]}
        return {"pair": {"size": 4, "align": 4, "fields": {"a": 0}}}, {}

    monkeypatch.setattr(probe, "run_probe", run_probe)
    return fetched


def test_a_pin_bump_edits_only_pins_json_and_the_declarations(tmp_path: Path, newer: sources.Source) -> None:
    repo = _checkout(tmp_path / "repo")
    before = _files(repo)
    out = update.update_pin("0.3.99", tmp_path / "cache", root=repo)
    after = _files(repo)
    changed = sorted(rel for rel in after if after[rel] != before.get(rel))
    assert changed == sorted([update.PINS_FILE, *update.PIN_FILES])
    assert set(after) == set(before)  # nothing added, nothing removed
    moved = pins.read(repo / update.PINS_FILE)
    assert (moved.llama_cpp_python, moved.llama_cpp_commit, moved.sdist_sha256) == ("0.3.99", "f" * 40, "1" * 64)
    header = newer.directory / "include" / "llama.h"
    assert moved.llama_h_sha256 == hashlib.sha256(header.read_bytes()).hexdigest()
    assert moved.window == (*pins.WINDOW[:-1], "0.3.99") and moved.oldest_llama_cpp_python == pins.OLDEST_VERSION
    assert all((repo / rel).read_text() == NEW_CDEF for rel in update.PIN_FILES)
    assert "+struct pair {" in out and out.endswith("layout of llama.cpp ffffffffffff: pair 4 B\n")
    # the checkout's noxfile reads the new pin from the file (and embellama's compat module does the same)
    data = json.loads((repo / update.PINS_FILE).read_text())
    assert data["window"][-1] == data["llama_cpp_python"] == "0.3.99"


def test_a_dry_run_of_the_pin_bump_writes_nothing(tmp_path: Path, newer: sources.Source) -> None:
    repo = _checkout(tmp_path / "repo")
    before = _files(repo)
    out = update.update_pin("0.3.99", tmp_path / "cache", write=False, root=repo)
    assert _files(repo) == before and "+struct pair {" in out


def test_a_pin_bump_needs_a_checkout(tmp_path: Path, newer: sources.Source) -> None:
    with pytest.raises(report.BuildError, match="edits a checkout"):
        update.update_pin("0.3.99", tmp_path / "cache", root=tmp_path / "not-a-checkout")


@needs_cc
@pytest.mark.libllama
def test_update_pin_to_the_same_llama_cpp_shows_no_difference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = json.loads((ROOT / "embellama" / "_lib" / "cpu" / "manifest.json").read_text())
    pinned = Path(manifest["source"]["directory"])
    fetched = sources.Source(
        "pypi", pinned, "llama-cpp-python==0.3.36:vendor/llama.cpp", pins.LLAMA_CPP_COMMIT, "0" * 64
    )
    monkeypatch.setattr(sources, "fetch_sdist_version", lambda *a, **k: fetched)
    monkeypatch.setattr(update, "write_text_atomic", lambda *a: pytest.fail("a dry run writes nothing"))
    text = update.update_pin(pins.SDIST_VERSION, tmp_path, write=False)
    assert text.splitlines()[0] == f"layout of llama.cpp {pins.LLAMA_CPP_COMMIT[:12]}: " + ", ".join(
        f"{name} {entry['size']} B" for name, entry in manifest["layout"].items()
    )
