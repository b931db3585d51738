# SPDX-License-Identifier: Apache-2.0
"""Repository conventions: a license header in every source file, the tools' configuration present."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEADER = "SPDX-License-Identifier: Apache-2.0"


def _tracked(*patterns: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", *patterns], cwd=REPO, capture_output=True, text=True, check=True)
    return [REPO / line for line in out.stdout.splitlines() if (REPO / line).is_file()]


def test_every_source_file_starts_with_the_spdx_header():
    files = _tracked("*.py", ".ci/run")
    assert len(files) > 40
    missing = [str(f.relative_to(REPO)) for f in files if HEADER not in "".join(f.read_text().splitlines(True)[:2])]
    assert missing == []


def test_pre_commit_runs_the_lint_session_tools():
    config = (REPO / ".pre-commit-config.yaml").read_text()
    assert "ruff==0.17.6" in config and "mypy==2.4.1" in config
    assert "ruff==0.17.6" in (REPO / "noxfile.py").read_text()  # the same pins as nox -s lint
