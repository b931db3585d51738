# SPDX-License-Identifier: Apache-2.0
"""benchmarks/bench_kinds.py's report: ratios to embellama per output (sparse against embellama's sparse rate,
documents and queries each against embellama's own), the heads' cost, and the load average it ran under."""

from __future__ import annotations

import bench_kinds
from hypothesis import given
from hypothesis import strategies as st

rates = st.floats(min_value=0.1, max_value=1e4)
HEAD = {"tokens": 1000, "pass_ms_per_1k": 800.0, "head_ms_per_1k": 900.0, "ratio": 1.125}
META = {"cpu": "a CPU", "cpus": 2, "threads": 1, "texts": 600, "corpus": "STS", "rounds": 3, "loadavg_start": 6.17}
META.update(loadavg_end=8.2, versions={"fastembed": "0.9.1"})


def _row(table: str, tool: str) -> list[str]:
    line = next(line for line in table.splitlines() if line.startswith("|") and f"| {tool} |" in line)
    return [cell.strip() for cell in line.strip("|").split("|")]


@given(rates, rates, rates, rates, rates)
def test_ratios_are_against_embellamas_rate_of_the_same_output(mine, fe, st_rate, docs, fe_queries) -> None:
    report = {
        "sparse": {
            "embellama": {"texts_per_s": mine, "spread": 0.05},
            "fastembed": {"texts_per_s": fe, "spread": 0.0},
            "sentence-transformers": {"texts_per_s": st_rate, "spread": 0.1},
        },
        "multi": {
            "embellama documents": {"texts_per_s": docs, "spread": 0.0},
            "embellama queries": {"texts_per_s": mine, "spread": 0.0},
            "fastembed queries": {"texts_per_s": fe_queries, "spread": 0.0},
        },
        "heads": {"SPLADE MLM head + pooling": HEAD},
        "meta": META,
    }
    text = bench_kinds.render(report)
    assert _row(text, "fastembed")[3] == f"{fe / mine:.2f}"
    assert _row(text, "sentence-transformers")[3] == f"{st_rate / mine:.2f}"
    assert _row(text, "fastembed queries")[3] == f"{fe_queries / mine:.2f}"
    assert _row(text, "embellama documents")[3] == "1.00"
    assert _row(text, "SPLADE MLM head + pooling")[1:] == ["1000", "800.0", "900.0", "1.12"]
    assert "load average (1 min) 6.17 at the start and 8.20 at the end" in text and "A loaded machine" in text
