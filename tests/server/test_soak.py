# SPDX-License-Identifier: Apache-2.0
"""A short soak of ``embellama serve`` (benchmarks/soak_serve.py, issue 30 item 6): 14 s of every API's
traffic from 32 clients, bad requests and hang-ups among it, under the full run's rules: RSS flat within 5 % after
the warm-up, every request answered, no 5xx but the backpressure codes, exit 0 on SIGTERM."""

from __future__ import annotations

import soak_serve


def test_a_short_soak_keeps_memory_flat_and_answers_every_request(minilm_f16, tmp_path):
    from tests.support import rerank_models

    reranker = rerank_models.ensure("bert").gguf("f32")
    rows = []
    result = soak_serve.soak(
        minilm_f16,
        reranker,
        seconds=14,
        clients=32,
        interval=2,
        warmup=4,
        threads=1,
        max_pending=24,
        log=rows.append,
    )
    soak_serve.write_report(result, tmp_path)
    assert result["passed"], (result["failures"], result["samples"], result["server_log_tail"])
    assert len(rows) >= 6 and all(row["fds"] > 0 and row["threads"] > 0 for row in rows)
    assert result["statuses"].get("200", 0) > 20  # real work was done ...
    assert {"400", "404", "422"} <= set(result["statuses"])  # ... and the bad requests got their 4xx
    assert sum(row["hang_ups"] for row in rows) > 0
    assert result["server_metrics"]["embellama_inputs_total"] > 20
    table = (tmp_path / "soak-embellama.md").read_text()
    assert "**PASS.**" in table and table.count("\n| ") >= 9
    assert (tmp_path / "soak-embellama.png").stat().st_size > 1000
