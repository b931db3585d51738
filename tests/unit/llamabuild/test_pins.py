# SPDX-License-Identifier: Apache-2.0
"""llamabuild.pins: the pins live in pins.json, checked when read; embellama and the noxfile read them too."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import pytest

from embellama._native import compat
from llamabuild import pins
from tests.unit.llamabuild.helpers import ROOT


def test_the_pins_come_from_pins_json() -> None:
    data = json.loads(pins.FILE.read_text(encoding="utf-8"))
    assert pins.FILE == ROOT / "build_backend" / "llamabuild" / "pins.json"
    assert (data["llama_cpp_python"], data["llama_cpp_commit"]) == (pins.SDIST_VERSION, pins.LLAMA_CPP_COMMIT)
    assert (data["sdist_sha256"], data["llama_h_sha256"]) == (pins.SDIST_SHA256, pins.LLAMA_H_SHA256)
    assert (data["oldest_llama_cpp_python"], data["oldest_llama_cpp_commit"]) == (
        pins.OLDEST_VERSION,
        pins.OLDEST_COMMIT,
    )
    assert tuple(data["window"]) == pins.WINDOW and pins.WINDOW[0] == pins.OLDEST_VERSION
    assert pins.WINDOW[-1] == pins.SDIST_VERSION and len(pins.LLAMA_CPP_COMMIT) == 40
    # the file is what dumps() writes, so a pin update changes only the values
    assert pins.dumps(pins.read()) == pins.FILE.read_text(encoding="utf-8")


def test_embellama_names_the_same_supported_range() -> None:
    assert (pins.SDIST_VERSION, pins.LLAMA_CPP_COMMIT[:12]) == (compat.PIN_VERSION, compat.PIN_COMMIT)
    assert (compat.OLDEST_VERSION, compat.OLDEST_COMMIT) == (pins.OLDEST_VERSION, pins.OLDEST_COMMIT)


def _python_files() -> list[Path]:
    files = [ROOT / "build_llama.py", ROOT / "noxfile.py"]
    for folder in ("embellama", "build_backend"):
        files += [p for p in (ROOT / folder).rglob("*.py") if "_lib" not in p.parts]
    return files


def test_no_python_source_spells_a_pin() -> None:
    """A pin bump edits pins.json: no string in the package, the build or the noxfile is a pin's value."""
    values = {
        pins.SDIST_VERSION,
        pins.LLAMA_CPP_COMMIT,
        pins.LLAMA_CPP_COMMIT[:12],
        pins.LLAMA_CPP_COMMIT[:8],
        pins.SDIST_SHA256,
        pins.LLAMA_H_SHA256,
        pins.OLDEST_VERSION,
        pins.OLDEST_COMMIT,
        *pins.WINDOW,
        f"{pins.PROJECT}=={pins.SDIST_VERSION}",
    }
    found = []
    for file in _python_files():
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in values:
                found.append(f"{file.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not found, found


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"window": ["0.3.30", "0.3.36"]}, "'window' must run from"),
        ({"window": []}, "'window' must be a list"),
        ({"llama_cpp_commit": ""}, "'llama_cpp_commit' must be a non-empty string"),
        ({"pinned": "x"}, "unknown keys pinned"),
    ],
)
def test_pins_json_is_checked_when_read(change: dict[str, object], message: str) -> None:
    data = {**json.loads(pins.FILE.read_text(encoding="utf-8")), **change}
    with pytest.raises(ValueError, match=message):
        pins.loads(json.dumps(data))
    with pytest.raises(ValueError, match="not JSON"):
        pins.loads("{")


def test_moving_the_pin_ends_the_window_at_it() -> None:
    old = pins.read()
    moved = old.moved("0.3.99", "f" * 40, "1" * 64, "2" * 64)
    assert moved.window == (*old.window[:-1], "0.3.99")  # the old pin leaves the window; the oldest stays
    assert (moved.oldest_llama_cpp_python, moved.comment) == (old.oldest_llama_cpp_python, old.comment)
    assert pins.loads(pins.dumps(moved)) == moved
    changed = {f.name for f in dataclasses.fields(pins.Pins) if getattr(old, f.name) != getattr(moved, f.name)}
    assert changed == {"llama_cpp_python", "llama_cpp_commit", "sdist_sha256", "llama_h_sha256", "window"}
