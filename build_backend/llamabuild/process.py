# SPDX-License-Identifier: Apache-2.0
"""Running a step's command: its output into the step's log, progress on the terminal, Ctrl-C stops it."""

from __future__ import annotations

import collections
import queue
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO

from llamabuild.report import BuildError, StepFailed, say

HEARTBEAT_SECONDS = 10.0
_PROGRESS_RE = re.compile(r"^\[\s*(\d+)/(\d+)\s*\]|^\[\s*(\d+)%\]")


def _pump(stream: Iterable[str], sink: queue.Queue[str | None]) -> None:
    try:
        for line in stream:
            sink.put(line)
    finally:
        sink.put(None)


def run_step(
    name: str,
    cmd: Sequence[str],
    log: Path,
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    verbose: bool = False,
    progress: bool = False,
    heartbeat: float = HEARTBEAT_SECONDS,
) -> str:
    """Run ``cmd``, appending its output to ``log``; raise StepFailed on a non-zero exit.

    With ``verbose`` every output line is echoed.  Otherwise, with ``progress``, build
    progress lines (``[n/N] ...`` from ninja, ``[ NN%]`` from make) are shown: live on
    a terminal, else one line every ``heartbeat`` seconds; a quiet command still gets a
    "still running" line every ``heartbeat`` seconds.  Returns the last lines of output.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    recent: collections.deque[str] = collections.deque(maxlen=400)
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"$ {shlex.join(cmd)}\n")
        fh.flush()
        if verbose:
            say(f"$ {shlex.join(cmd)}")
        try:
            proc = subprocess.Popen(
                list(cmd),
                cwd=cwd,
                env=dict(env) if env is not None else None,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                encoding="utf-8",
                errors="replace",
                bufsize=1,
            )
        except OSError as exc:
            fh.write(f"cannot start {cmd[0]!r}: {exc}\n")
            raise BuildError(f"step {name!r}: cannot run {cmd[0]!r}: {exc}") from exc
        shown = _Progress(name, verbose, progress, heartbeat)
        returncode = _follow(proc, fh, recent, shown)
        fh.write(f"[exit {returncode}]\n")
    if returncode != 0:
        raise StepFailed(name, returncode, log)
    return "".join(recent)


def _follow(
    proc: subprocess.Popen[str],
    log: IO[str],
    recent: collections.deque[str],
    shown: _Progress,
) -> int:
    """Copy ``proc``'s output to ``log`` and ``recent`` until it exits; its exit status.

    Stops the process when interrupted (Ctrl-C) or on any other error.
    """
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
    try:
        while True:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                line = ""
            if line is None:
                break
            if line:
                log.write(line)
                recent.append(line)
                shown.line(line.rstrip())
            shown.tick()
        return proc.wait()
    except BaseException:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        raise
    finally:
        shown.close()


class _Progress:
    """What :func:`run_step` shows of a running command."""

    def __init__(self, name: str, verbose: bool, progress: bool, heartbeat: float) -> None:
        self.name = name
        self.verbose = verbose
        self.progress = progress
        self.heartbeat = heartbeat
        self.tty = sys.stdout.isatty()
        self.start = self.last_shown = time.monotonic()
        self.status = ""
        self.fresh = False  # a new progress line since the last tick
        self.live = False  # a live line is on the terminal

    def line(self, text: str) -> None:
        """One line of output: echoed with ``verbose``, else kept if it is progress."""
        if self.verbose:
            print("    " + text, flush=True)
        elif self.progress and _PROGRESS_RE.match(text):
            self.status, self.fresh = text, True

    def tick(self) -> None:
        """Called after each line and at least every half second."""
        if self.verbose:
            return  # every line was echoed
        now = time.monotonic()
        elapsed = int(now - self.start)
        if self.tty and self.progress:
            # One live line, redrawn on progress and at least once a second.
            if self.fresh or now - self.last_shown >= 1.0:
                width = shutil.get_terminal_size((100, 20)).columns
                shown = f"    {self.name}: {self.status or 'running'}"[: width - 8]
                print(f"\r\x1b[K{shown} ({elapsed} s)", end="", flush=True)
                self.live, self.last_shown = True, now
        elif now - self.last_shown >= self.heartbeat:
            status = self.status
            shown = (status[:110] + " ...") if len(status) > 110 else status
            print(f"    {self.name}: {shown or 'still running'} ({elapsed} s)", flush=True)
            self.last_shown = now
        self.fresh = False

    def close(self) -> None:
        if self.live:
            print("\r\x1b[K", end="", flush=True)
