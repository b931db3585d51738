# SPDX-License-Identifier: Apache-2.0
"""benchmarks/bench_seed.py: the projection per core count, the stream's flatness rule and the report; nothing run."""

from __future__ import annotations

import json
import math

import bench_seed
import pytest
from hypothesis import given
from hypothesis import strategies as st


@given(per_core=st.floats(1.0, 5000.0), efficiency=st.floats(0.1, 1.5))
def test_projection_scales_the_per_core_rate(per_core: float, efficiency: float) -> None:
    proj = bench_seed.projection(per_core, per_core * efficiency)
    assert proj["projected"]["1"] == per_core
    for n in (2, 4, 8, 16, 32, 64):  # never better than linear
        assert proj["projected"][str(n)] == pytest.approx(per_core * min(1.0, efficiency) * n)
    rate_at = lambda cores: per_core if cores == 1 else per_core * min(1.0, efficiency) * cores  # noqa: E731
    assert rate_at(proj["cores_needed_int"]) >= 1000 * (1 - 1e-9)
    if proj["cores_needed_int"] > 2:
        assert rate_at(proj["cores_needed_int"] - 1) < 1000


def test_stream_flat_ignores_the_warm_up_and_allows_five_percent() -> None:
    count = 1000
    warm = [(1.0, 0, 50.0), (2.0, 50, 90.0)]  # before 10 % of the texts: not judged
    flat = [(3.0 + i, 100 + 100 * i, 100.0 + (i % 3)) for i in range(9)]
    assert bench_seed.stream_flat(warm + flat, count)
    growing = [(3.0 + i, 100 + 100 * i, 100.0 * 1.01**i) for i in range(9)]  # +8 % by the end
    assert not bench_seed.stream_flat(warm + growing, count)
    assert not bench_seed.stream_flat(warm, count)  # nothing after the warm-up: not shown flat


def test_the_report_judges_each_target_on_its_figure() -> None:
    report = json.loads((bench_seed.RESULTS / "seed.json").read_text(encoding="utf-8"))
    big, minilm, meta = report["big"], report["minilm"], report["meta"]
    rows = {row["what"].split(",")[0]: row for row in bench_seed.targets(big, minilm, meta["threads"], meta["busy"])}
    e = big["embellama"]
    key = "cpu_median" if meta["busy"] else "median"
    assert rows["memory: peak RSS (VmHWM) / GGUF size"]["met"] == (e["peak_rss_mb"] < 2 * big["gguf_mb"])
    assert rows["single-text latency"]["met"] == (e["latency_ms"][key] < 50)
    assert rows["start-up: process start -> first embedding"]["met"] == (
        e["startup_cpu_s" if meta["busy"] else "startup_s"] < 5
    )
    text = bench_seed.markdown(report)
    assert f"{e['peak_rss_mb'] / big['gguf_mb']:.2f}x" in text
    assert math.isclose(big["cores_needed"] * big["per_core"] * min(1.0, minilm["projection"]["efficiency_2"]), 1000)


@pytest.mark.parametrize(
    ("meta", "weights", "expected"),
    [
        ({"compute_type": "auto"}, "F16", "embellama's defaults: compute_type auto, the fastest exact type"),
        ({"compute_type": "bf16"}, "BF16", "compute_type='bf16' (BF16), not the defaults"),
        ({}, None, "ran the F16 file as BF16 on AVX512_BF16 CPUs (before 2026-12-08)"),
    ],
)
def test_the_report_says_which_weights_embellama_ran(meta: dict[str, str], weights: str | None, expected: str) -> None:
    big = {"embellama": {"weights": weights}} if weights else {"embellama": {}}
    sentence = bench_seed._compute_sentence(meta, big)
    assert expected in sentence
    if weights:
        assert weights in sentence
