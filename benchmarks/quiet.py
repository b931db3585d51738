# SPDX-License-Identifier: Apache-2.0
"""The benchmarks' rules for figures that can be believed: a quiet machine, and rounds that agree.

A benchmark asks :func:`wait_until_quiet` before it starts (load average over the last minute at most
``MAX_LOAD``; it waits up to ``wait_s`` seconds, then refuses) and :func:`spread` of each tool's
rounds after it ends; :func:`verdict` says whether its ratios may be published.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Iterable, Sequence

MAX_LOAD = 0.5  # the 1-minute load average at start
MAX_SPREAD = 0.15  # (max - min) / median of one tool's rounds


def cpu_name() -> str:
    """The CPU's model name and the vector extensions that matter to ggml (every figure says which CPU)."""
    name, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and name == "unknown CPU":
                    name = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        return name
    isa = [x for x in ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile") if x in flags]
    return f"{name} ({', '.join(isa) or 'no AVX2'}), {os.cpu_count()} logical CPUs"


def wait_until_quiet(wait_s: float, log: object = print, max_load: float = MAX_LOAD) -> float:
    """Wait (checking every 10 s, up to ``wait_s``) for the 1-minute load average to drop to ``max_load``.

    Returns the load average at start; raises SystemExit naming it when the machine stays busy.
    """
    deadline = time.monotonic() + wait_s
    while True:
        load = os.getloadavg()[0]
        if load <= max_load:
            return load
        if time.monotonic() >= deadline:
            raise SystemExit(
                f"the machine is busy (load average {load:.2f} > {max_load}): figures from it would not be "
                f"believable. Stop the other work, or pass --wait SECONDS to wait for quiet."
            )
        print(f"load average {load:.2f} > {max_load}: waiting for a quiet machine", file=sys.stderr, flush=True)
        time.sleep(min(10.0, max(0.0, deadline - time.monotonic())) or 0.1)


def spread(values: Sequence[float]) -> float:
    """``(max - min) / median`` of one tool's rounds (0 for fewer than two)."""
    if len(values) < 2:
        return 0.0
    return (max(values) - min(values)) / statistics.median(values)


def summary(values: Sequence[float]) -> dict[str, float]:
    """min, median and max of one tool's rounds, and their spread."""
    return {
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
        "spread": spread(values),
        "rounds": len(values),
    }


def verdict(spreads: Iterable[tuple[str, float]], max_spread: float = MAX_SPREAD) -> list[str]:
    """The tools whose rounds spread more than ``max_spread``: their ratios are not to be published."""
    return [f"{name} ({value:.0%})" for name, value in spreads if value > max_spread]
