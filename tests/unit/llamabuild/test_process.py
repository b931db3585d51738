# SPDX-License-Identifier: Apache-2.0
"""llamabuild.process: a step's command, its log, its progress, and the report of a failure."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from llamabuild import process, report
from tests.unit.llamabuild.helpers import failing_cmd


def test_failed_step_report_names_step_and_shows_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "configure.log"
    with pytest.raises(report.StepFailed) as exc:
        process.run_step("configure", failing_cmd(), log)
    text = exc.value.report()
    first, *tail = text.splitlines()
    assert first == f"build_llama: step 'configure' failed (exit 3); last 40 lines of {log}:"
    assert len(tail) == 40
    assert "boom" in tail[-2] and tail[-1] == "[exit 3]"
    assert "line 0" not in text  # only the tail


def test_run_step_shows_progress(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cmd = [sys.executable, "-c", "print('[1/2] compile a'); print('[2/2] link b')"]
    out = process.run_step("build", cmd, tmp_path / "b.log", progress=True, heartbeat=0.0)
    assert "[2/2] link b" in out
    printed = capsys.readouterr().out
    assert "build: [" in printed
    log = (tmp_path / "b.log").read_text()
    assert "[1/2] compile a" in log and "[exit 0]" in log


def test_run_step_missing_program(tmp_path: Path) -> None:
    with pytest.raises(report.BuildError, match="cannot run"):
        process.run_step("build", ["/nonexistent/cmake"], tmp_path / "x.log")
