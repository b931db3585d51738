# SPDX-License-Identifier: Apache-2.0
"""The import contracts of pyproject.toml: kept by the tree, broken by a planted violation.

``lint-imports`` (import-linter, run by ``nox -s lint``) reads ``[tool.importlinter]``. Each test
copies ``embellama/`` into a scratch folder, plants one violation there and shows that the
contract it breaks fails the run, so a contract that checks nothing cannot pass unnoticed.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")


def _contract_names() -> list[str]:
    """The names of pyproject's import contracts (read as text: tomllib is Python 3.11+)."""
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    section = text[text.index("[tool.importlinter]") :]
    return re.findall(r'^name = "(.+)"$', section, flags=re.MULTILINE)


def _run(root: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports with pyproject's contracts over the package copy under ``root``."""
    if LINT_IMPORTS is None:
        pytest.fail("lint-imports (import-linter) is not installed: the test extra brings it")
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [LINT_IMPORTS, str(REPO / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the Python sources of embellama/ (no binaries) and of llamabuild in ``tmp_path``."""
    skip = shutil.ignore_patterns("_lib", "__pycache__")
    shutil.copytree(REPO / "embellama", tmp_path / "embellama", ignore=skip)
    shutil.copytree(REPO / "build_backend" / "llamabuild", tmp_path / "llamabuild", ignore=skip)
    return tmp_path


def _plant(tree: Path, module: str, line: str) -> None:
    path = tree / Path(*module.split(".")).with_suffix(".py")
    if not path.is_file():  # the layer's package itself (its modules may be split or renamed)
        path = tree / Path(*module.split(".")[:2]) / "__init__.py"
    text = path.read_text(encoding="utf-8")
    path.write_text(text + f"\n{line}  # planted by tests/unit/test_contracts.py\n", encoding="utf-8")


def test_the_tree_keeps_every_contract(tree: Path) -> None:
    result = _run(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    names = _contract_names()
    assert len(names) >= 3, names
    for name in names:
        assert f"{name} KEPT" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        # a lower layer reaching up: the numpy layer importing the server
        ("embellama._compute.pooling", "from embellama._server import app as _app", "Layers"),
        # siblings that must stay independent: the server and the Ray integration
        ("embellama._server.app", "import embellama.ray", "Layers"),
        # a function-local import counts as much as one at the top
        ("embellama._native.paths", "def _later():\n    import embellama._models", "Layers"),
        # a cycle inside one layer: two modules of _compute importing each other
        ("embellama._compute.pooling", "from embellama._compute import packing as _p", "No import cycle"),
        # cffi outside the native layer
        ("embellama.llama", "import cffi as _cffi", "Only the native layer"),
        # the build package reaching for embellama's dependencies, or for embellama itself
        ("llamabuild.pins", "import numpy as _np", "The build package"),
        ("llamabuild.cmake", "from embellama import _version", "The build package"),
    ],
)
def test_a_planted_violation_breaks_its_contract(tree: Path, module: str, line: str, contract: str) -> None:
    _plant(tree, module, line)
    result = _run(tree)
    assert result.returncode != 0, result.stdout
    broken = [row for row in result.stdout.splitlines() if row.endswith(" BROKEN")]
    assert any(row.startswith(contract) for row in broken), result.stdout


def test_the_build_package_imports_only_the_standard_library() -> None:
    """build_backend/llamabuild/ runs under any Python without embellama's dependencies."""
    package = REPO / "build_backend" / "llamabuild"
    files = sorted(package.rglob("*.py"))
    assert files, f"no build package at {package}"
    outside = {}
    for file in files:
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "llamabuild":
                    outside.setdefault(str(file.relative_to(REPO)), set()).add(name)
    assert not outside, f"the build package imports outside the standard library: {outside}"
