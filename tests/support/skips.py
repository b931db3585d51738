# SPDX-License-Identifier: Apache-2.0
"""The gold-score tests' skip, and the strict mode that lets no other test skip (a pytest plugin).

``tests/conftest.py`` registers :class:`SkipPolicy`. It

- skips a test marked ``sts_gold`` where there is no STS file (or fails it before its fixtures run, with
  ``EMBELLAMA_REQUIRE_STS=1``), and fails a test that asks for the ``sts_gold`` fixture without the marker;
- with ``EMBELLAMA_STRICT_SKIPS=1``, collects every skipped test without the marker (an expected failure,
  ``xfail``, is no skip) and turns a passing run into a failed one, naming them in the summary.

See :mod:`tests.support.sts` for the switches.
"""

from __future__ import annotations

import pytest

from tests.support import sts

GOLD_FIXTURE = "sts_gold"


class SkipPolicy:
    """The plugin object (one per pytest run)."""

    def __init__(self, config: pytest.Config) -> None:
        # pytest-xdist's workers report to the controller, which alone judges (and sets the exit status).
        self.judge = not hasattr(config, "workerinput")
        self.unexpected: list[tuple[str, str]] = []  # (node id, skip reason)

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        if sts.sts_file() is None and not sts.sts_required():
            skip = pytest.mark.skip(reason=sts.missing_reason())  # reported at the test's own line
            for item in items:
                if item.get_closest_marker(sts.MARKER) is not None:
                    item.add_marker(skip)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        marked = item.get_closest_marker(sts.MARKER) is not None
        if not marked and GOLD_FIXTURE in getattr(item, "fixturenames", ()):
            pytest.fail(f"{item.nodeid} reads the STS gold scores: mark it @pytest.mark.{sts.MARKER}")
        if marked and sts.sts_file() is None and sts.sts_required():
            pytest.fail(f"{sts.missing_reason()} ({sts.REQUIRE_VAR}=1 asks for these tests to run)")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped and not hasattr(report, "wasxfail") and sts.MARKER not in report.keywords:
            self._note(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.skipped:  # a whole module skipped (pytest.skip(allow_module_level=True), importorskip)
            self._note(report)

    def _note(self, report: pytest.TestReport | pytest.CollectReport) -> None:
        if self.judge and sts.strict_skips():
            longrepr = report.longrepr
            reason = str(longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else longrepr)
            self.unexpected.append((report.nodeid, reason.removeprefix("Skipped: ")))

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.unexpected and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:  # type: ignore[no-untyped-def]
        if not self.unexpected:
            return
        terminalreporter.section(f"{sts.STRICT_VAR}=1: skipped tests fail the run", sep="=", red=True, bold=True)
        for nodeid, reason in self.unexpected:
            terminalreporter.line(f"SKIPPED {nodeid}: {reason}")
        terminalreporter.line(f"{len(self.unexpected)} skipped test(s) not marked {sts.MARKER}: the run fails")
