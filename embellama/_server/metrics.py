# SPDX-License-Identifier: Apache-2.0
"""The server's Prometheus metrics: request counters, a latency histogram and the engine's gauges, as text."""

from __future__ import annotations

import math

from embellama._engine import EmbeddingEngine

__all__ = ["LATENCY_BUCKETS", "Metrics"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Upper bounds (seconds) of the request latency histogram on /metrics."""

UNTIMED_PATHS = frozenset({"/health", "/metrics"})
"""The routes whose requests the latency histogram leaves out (every route that does work is timed)."""


class _Histogram:
    """One route's latency histogram."""

    def __init__(self) -> None:
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.buckets[i] += 1
                break
        else:
            self.buckets[-1] += 1
        self.total += seconds
        self.count += 1


class Metrics:
    """Counters and a latency histogram per route in Prometheus' text format (no dependency)."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.inputs = 0
        self.tokens = 0
        self.in_flight = 0
        self.latency: dict[str, _Histogram] = {}

    def observe(self, path: str, status: int, seconds: float) -> None:
        """Count one answered request of the route ``path`` (and time it, unless it is /health or /metrics)."""
        self.requests[(path, status)] = self.requests.get((path, status), 0) + 1
        if path not in UNTIMED_PATHS:
            histogram = self.latency.get(path)
            if histogram is None:
                histogram = self.latency[path] = _Histogram()
            histogram.observe(seconds)

    def served(self, inputs: int, tokens: int) -> None:
        """Count the inputs and tokens of one successful request."""
        self.inputs += inputs
        self.tokens += tokens

    def render(self, engine: EmbeddingEngine) -> str:
        """The metrics page: these counters and ``engine``'s statistics."""
        stats = engine.stats()
        lines = ["# TYPE embellama_requests_total counter"]
        for (path, status), n in sorted(self.requests.items()):
            lines.append(f'embellama_requests_total{{path="{path}",status="{status}"}} {n}')
        lines += [
            "# TYPE embellama_inputs_total counter",
            f"embellama_inputs_total {self.inputs}",
            "# TYPE embellama_tokens_total counter",
            f"embellama_tokens_total {self.tokens}",
            "# TYPE embellama_requests_in_flight gauge",
            f"embellama_requests_in_flight {self.in_flight}",
            "# TYPE embellama_engine_pending gauge",
            f"embellama_engine_pending {stats['pending']}",
            "# TYPE embellama_engine_joined_calls_total counter",
            f"embellama_engine_joined_calls_total {stats['joined_calls']}",
            "# TYPE embellama_engine_joined_requests_total counter",
            f"embellama_engine_joined_requests_total {stats['joined_requests']}",
            "# TYPE embellama_request_duration_seconds histogram",
        ]
        for path, histogram in sorted(self.latency.items()):
            cumulative = 0
            for bound, n in zip((*LATENCY_BUCKETS, math.inf), histogram.buckets, strict=True):
                cumulative += n
                le = "+Inf" if bound == math.inf else f"{bound:g}"
                lines.append(f'embellama_request_duration_seconds_bucket{{path="{path}",le="{le}"}} {cumulative}')
            lines.append(f'embellama_request_duration_seconds_sum{{path="{path}"}} {histogram.total:.6f}')
            lines.append(f'embellama_request_duration_seconds_count{{path="{path}"}} {histogram.count}')
        return "\n".join(lines) + "\n"
