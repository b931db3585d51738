# SPDX-License-Identifier: Apache-2.0
"""Fixtures of the build package's tests: no process or fetch in a dry run; fake tools for whole builds."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from llamabuild import cmake, cuda, probe, process
from llamabuild import source as sources
from tests.unit.llamabuild.helpers import FakeTools


@pytest.fixture
def no_side_effects(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any process start or fetch fail the test."""

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"must not run in a dry run: {args!r}")

    monkeypatch.setattr(subprocess, "run", forbidden)
    monkeypatch.setattr(subprocess, "Popen", forbidden)
    monkeypatch.setattr(sources, "fetch_source", forbidden)
    monkeypatch.setattr(sources, "pip_download_sdist", forbidden)
    monkeypatch.setattr(cuda, "detect_cuda_arch", forbidden)
    monkeypatch.setattr(process, "run_step", forbidden)
    monkeypatch.setattr(cmake, "compiler_can_drop_amx", lambda *a, **k: True)  # it runs `cc -E`
    monkeypatch.setattr(cuda, "find_pip_cublas", lambda *a, **k: None)  # whatever this machine has


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeTools:
    """Fake cmake and probe, a fake llama.cpp tree and folders in ``tmp_path``."""
    fake = FakeTools(tmp_path)
    monkeypatch.setattr(process, "run_step", fake.run_step)
    monkeypatch.setattr(probe, "run_probe", fake.run_probe)
    # cmake "is installed"; no ninja, git or compiler is looked for or run
    monkeypatch.setattr(shutil, "which", lambda name, **kw: "/usr/bin/cmake" if name == "cmake" else None)
    monkeypatch.setenv("CC", "fake-cc")
    return fake
