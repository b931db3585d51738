# SPDX-License-Identifier: Apache-2.0
"""The Python examples of a Markdown page (the README, the guide's pages), found by the heading above each,
and run as a reader would: with ``MODEL`` (and ``RERANKER``) set, printing to a string."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
FENCE = re.compile(r"^(`{3,})(\S*)")


def python_blocks(path: Path) -> list[tuple[str, str]]:
    """(the heading above it, its code) for every ```python block of a Markdown file, in order."""
    blocks: list[tuple[str, str]] = []
    heading, fence, language, code = "", "", "", []
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        match = FENCE.match(line)
        if not fence:
            if match:
                fence, language, code = match.group(1), match.group(2), []
            elif line.startswith("#"):
                heading = line.lstrip("#").strip()
        elif line.rstrip() == fence:
            if language == "python":
                blocks.append((heading, "".join(code)))
            fence = ""
        else:
            code.append(line)
    return blocks


def guide_pages() -> list[Path]:
    """Every Markdown page of the guide (docs/**/*.md), the build folder left out."""
    return sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.relative_to(DOCS).parts)


def examples(path: Path) -> dict[str, str]:
    """A page's Python examples by ``"<page>:<heading>"`` (the page relative to docs/, or README.md).

    Raises
    ------
    AssertionError
        When two examples share a heading, so that one name would hide the other.
    """
    name = path.relative_to(DOCS).as_posix() if DOCS in path.parents else path.name
    found: dict[str, str] = {}
    for heading, code in python_blocks(path):
        key = f"{name}:{heading}"
        assert key not in found, f"{key}: two python examples under one heading; give each its own"
        found[key] = code
    return found


def run(code: str, name: str, **names: str) -> str:
    """Run an example with ``names`` as its globals; return what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, name, "exec"), dict(names))
    return out.getvalue()


def section(path: Path, heading: str) -> str:
    """The first python example under ``heading`` of a page (for the tests that run it elsewhere)."""
    for found, code in python_blocks(path):
        if found == heading:
            return code
    raise AssertionError(f"{path.relative_to(REPO)} has no python example under the heading {heading!r}")
