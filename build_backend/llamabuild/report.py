# SPDX-License-Identifier: Apache-2.0
"""What the build tells its user: ``build_llama: ...`` lines, timed steps, and errors with a log's tail."""

from __future__ import annotations

import sys
import time
from pathlib import Path

PREFIX = "build_llama"  # every line the build prints starts with it
LOG_TAIL_LINES = 40


class BuildError(Exception):
    """A failure with a message meant for the user; ``exit_code`` is the command's exit status."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class StepFailed(BuildError):
    """A step's command exited non-zero; its output is in ``log``."""

    def __init__(self, step: str, returncode: int, log: Path) -> None:
        super().__init__(f"step {step!r} failed (exit {returncode})")
        self.step = step
        self.returncode = returncode
        self.log = log
        self.hint = ""

    def report(self, lines: int = LOG_TAIL_LINES) -> str:
        """The failure, the last ``lines`` lines of its log, and the hint if there is one."""
        tail = log_tail(self.log, lines)
        failed = f"step {self.step!r} failed (exit {self.returncode})"
        head = f"{PREFIX}: {failed}; last {lines} lines of {self.log}:"
        return head + "\n" + "\n".join(tail) + (f"\n{PREFIX}: hint: {self.hint}" if self.hint else "")


def say(message: str) -> None:
    """``build_llama: message`` on stdout."""
    print(f"{PREFIX}: {message}", flush=True)


def warn(message: str) -> None:
    """``build_llama: warning: message`` on stderr."""
    print(f"{PREFIX}: warning: {message}", file=sys.stderr, flush=True)


def log_tail(log: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last ``lines`` lines of ``log`` (one line saying why, when it cannot be read)."""
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return [f"(could not read {log}: {exc})"]
    return text.splitlines()[-lines:]


class Timer:
    """Prints ``build_llama: <step> <detail> (N.N s)`` when the block ends without error."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.detail = ""
        self.start = 0.0

    def __enter__(self) -> Timer:
        self.start = time.monotonic()
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            took = time.monotonic() - self.start
            say(f"{self.name:<9} {self.detail} ({took:.1f} s)")
