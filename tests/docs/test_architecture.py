# SPDX-License-Identifier: Apache-2.0
"""docs/architecture.md keeps up with the tree: its layer drawing names every module, and the contracts it states.

The import contracts keep the layers true in code (tests/unit/test_contracts.py); this keeps the page that
draws them true: a module added, moved or renamed without its line in the drawing fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "architecture.md"


def _drawings() -> str:
    """The page's text drawings (the code blocks), where the modules are named."""
    return "\n".join(re.findall(r"```text\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.DOTALL))


def test_the_drawing_names_every_module_of_every_layer() -> None:
    drawing = _drawings()
    missing = []
    for package in sorted(p for p in (REPO / "embellama").iterdir() if (p / "__init__.py").is_file()):
        if package.name not in drawing:
            missing.append(f"embellama/{package.name}/")
        for module in sorted(package.glob("*.py")):
            if module.stem != "__init__" and not re.search(rf"\b{module.stem}\b", drawing):
                missing.append(f"embellama/{package.name}/{module.name}")
    for module in sorted((REPO / "embellama").glob("*.py")):
        named = module.name in drawing or f"embellama.{module.stem}" in drawing
        if not module.stem.startswith("__") and not named:
            missing.append(f"embellama/{module.name}")
    for module in sorted((REPO / "build_backend" / "llamabuild").glob("*.py")):
        if not module.stem.startswith("__") and not re.search(rf"\b{module.stem}\b", drawing):
            missing.append(f"build_backend/llamabuild/{module.name}")
    assert not missing, f"docs/architecture.md's drawing does not name: {missing}"


def test_the_page_states_each_contract_that_pyproject_checks() -> None:
    page = PAGE.read_text(encoding="utf-8")
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    kinds = set(re.findall(r'^type = "(\w+)"$', text[text.index("[tool.importlinter]") :], flags=re.MULTILINE))
    assert kinds == {"layers", "acyclic_siblings", "forbidden"}
    for promise in ("layer order", "no import cycle", "cffi and pycparser", "standard library"):
        assert promise in page, promise
