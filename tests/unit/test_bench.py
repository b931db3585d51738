# SPDX-License-Identifier: Apache-2.0
"""benchmarks/bench.py: the corpora, the figures, the targets and the report; no peer is run."""

from __future__ import annotations

import bench
import pytest
import quiet


def test_read_sts_interleaves_the_pairs(tmp_path):
    f = tmp_path / "sts.csv"
    f.write_text("g\tf\t2012\t1\t2.5\tA cat.\tA dog.\n" + 'g\tf\t2012\t2\t4.0\tOne "quoted.\tTwo.\textra\tcols\n')
    sentences, gold = bench.read_sts(f)
    assert sentences == ["A cat.", "A dog.", 'One "quoted.', "Two."]
    assert gold == [2.5, 4.0]


def test_passages_join_consecutive_sentences_and_cycle():
    sentences = [f"s{i} " + "w " * (i % 7 + 3) for i in range(50)]
    passages = bench.make_passages(sentences, count=40, min_words=20)
    assert len(passages) == 40
    assert passages == bench.make_passages(sentences, count=40, min_words=20)
    assert all(len(p.split()) >= 20 for p in passages)
    stream = " ".join(passages).split()
    cycled = " ".join(sentences * 10).split()
    assert stream == cycled[: len(stream)]  # in order, nothing skipped, past the end of the list
    with pytest.raises(ValueError):
        bench.make_passages(["", " "])


@pytest.mark.sts_gold  # the benchmark's corpora are the STS file's: it skips without it (tests/support/sts.py)
def test_long_corpus_from_sts_is_deterministic():
    sentences, gold = bench.read_sts()
    assert len(sentences) == 2758 and len(gold) == 1379
    passages = bench.make_passages(sentences)
    assert len(passages) == 256 == len(set(passages))
    assert min(len(p.split()) for p in passages) >= 200
    assert passages[0].startswith(sentences[0] + " " + sentences[1])
    assert passages == bench.make_passages(list(sentences))


RUNS = [
    {"tool": "embellama", "corpus": "short", "embed_s": 2.0, "rss_mb": 150, "startup_s": 0.2, "latency_ms_median": 3},
    {"tool": "embellama", "corpus": "short", "embed_s": 4.0, "rss_mb": 170, "startup_s": 0.3, "latency_ms_median": 5},
    {"tool": "embellama", "corpus": "short", "embed_s": 1.0, "rss_mb": 160, "startup_s": 0.25, "latency_ms_median": 4},
    {"tool": "embellama", "corpus": "long", "embed_s": 10.0, "rss_mb": 180, "startup_s": 0.4},
    {"tool": "peer", "corpus": "short", "embed_s": 3.0, "rss_mb": 300, "startup_s": 1.0, "latency_ms_median": 2},
]


def test_summarize_takes_medians_and_rates():
    results = bench.summarize(RUNS, {"short": (100, 1000), "long": (10, 2500)})
    me = results["embellama"]
    assert me["short_texts_s"] == 50.0 and me["short_tokens_s"] == 500.0
    assert me["short_rss_mb"] == 160 and me["long_texts_s"] == 1.0 and me["long_tokens_s"] == 250.0
    assert me["startup_s"] == pytest.approx(0.275)  # both corpora pooled
    assert me["latency_ms_median"] == 4
    assert "long_texts_s" not in results["peer"]
    # every round's rate is kept: min, max and their spread around the median
    assert me["short_texts_s_worst"] == 25.0 and me["short_texts_s_best"] == 100.0
    assert me["short_spread"] == pytest.approx((100 - 25) / 50)
    assert bench.ratios(results)["peer"]["short_texts_s_best"] == pytest.approx((100 / 3) / 100)


def test_rounds_that_disagree_are_named_and_quiet_ones_are_not():
    assert quiet.spread([10.0]) == 0.0
    assert quiet.spread([9.0, 10.0, 11.0]) == pytest.approx(0.2)
    assert quiet.verdict([("a short", 0.2), ("b short", 0.05)]) == ["a short (20%)"]
    assert quiet.summary([3.0, 1.0, 2.0]) == {"min": 1.0, "median": 2.0, "max": 3.0, "spread": 1.0, "rounds": 3}


def test_a_busy_machine_is_refused_or_waited_for(monkeypatch):
    loads = iter([2.0, 1.0, 0.3])
    monkeypatch.setattr(quiet.os, "getloadavg", lambda: (next(loads), 0.0, 0.0))
    monkeypatch.setattr(quiet.time, "sleep", lambda s: None)
    assert quiet.wait_until_quiet(60.0, max_load=0.5) == 0.3  # waited through two busy readings
    monkeypatch.setattr(quiet.os, "getloadavg", lambda: (1.7, 0.0, 0.0))
    with pytest.raises(SystemExit, match=r"busy \(load average 1.70 > 0.5\)"):
        quiet.wait_until_quiet(0.0)


def test_ratios_divide_by_embellama():
    results = {"embellama": {"short_texts_s": 200.0, "startup_s": 0.2}, "peer": {"short_texts_s": 100.0}}
    assert bench.ratios(results) == {
        "embellama": {"short_texts_s": 1.0, "startup_s": 1.0},
        "peer": {"short_texts_s": 0.5},
    }


def _results(**me: float) -> dict[str, dict[str, float]]:
    base = {"short_texts_s": 400.0, "long_texts_s": 20.0, "short_min_cos": 0.99999, "latency_ms_median": 3.0}
    base.update(startup_s=0.2, short_rss_mb=150.0)
    base.update(me)
    return {
        "embellama": base,
        "llama-cpp-python-f16": {"short_texts_s": 300.0, "long_texts_s": 18.0, "latency_ms_median": 3.5},
        "sentence-transformers": {"short_texts_s": 320.0, "long_texts_s": 15.0},
        "embellama-bf16": {"short_texts_s": 900.0, "long_texts_s": 90.0},  # not a peer
    }


def test_targets_met_and_missed():
    peers = ["llama-cpp-python-f16", "sentence-transformers", "fastembed"]
    rows = {r["target"]: r for r in bench.evaluate_targets(_results(), peers)}
    short = rows["short corpus throughput"]
    assert short["value"] == pytest.approx(1.25) and short["met"] is False  # 400 vs ST's 320: below 1.3
    assert "sentence-transformers 320.0" in short["measured"]
    long = rows["long corpus throughput"]
    assert long["value"] == pytest.approx(20 / 18) and long["met"] is False
    assert rows["short corpus accuracy"]["met"] is True
    assert rows["single short text"]["met"] is True
    assert rows["start-up"]["met"] is True and rows["memory"]["met"] is True

    rows = {r["target"]: r for r in bench.evaluate_targets(_results(short_texts_s=420.0, startup_s=0.3), peers)}
    assert rows["short corpus throughput"]["met"] is True
    assert rows["start-up"]["met"] is False


def test_targets_without_measurements():
    rows = bench.evaluate_targets({"embellama": {"short_texts_s": 100.0}}, ["fastembed"])
    assert [r["met"] for r in rows] == [None] * 6
    assert all(r["measured"] == "not measured" for r in rows)


def _report() -> dict:
    results = _results(short_mean_cos=0.999999, spearman=82.05, import_s=0.1, load_s=0.05, first_s=0.01)
    peers = [t.name for t in bench.TOOLS if t.peer]
    corpus = {"description": "d", "texts": 10, "tokens": 100, "min_tokens": 5, "median_tokens": 10, "max_tokens": 20}
    meta = {"date": "today", "cpu": "cpu", "cpus": 2, "threads": 2, "rounds": 1, "llama_cpp": "abc"}
    meta.update(latency_texts=10, versions={"embellama": "0.1.0"})
    return {
        "meta": meta,
        "corpora": {"short": corpus, "long": corpus},
        "tools": [vars(t) for t in bench.TOOLS],
        "results": results,
        "ratios": bench.ratios(results),
        "targets": bench.evaluate_targets(results, peers),
        "skipped": {"fastembed": "not installed (fastembed)"},
    }


def test_markdown_has_the_tables_ratios_and_verdicts():
    md = bench.render_markdown(_report())
    lines = md.splitlines()
    row = next(line for line in lines if line.startswith("| sentence-transformers |"))
    assert "| 320.0 | – | 0.80× |" in row  # 320 texts/s, 0.8 of embellama's 400 (one round: no range)
    assert "| 15.00 | – | 0.75× |" in row
    assert next(line for line in lines if line.startswith("| embellama |")).count("1.00×") >= 2
    assert "| short corpus throughput |" in md and "**missed**" in md and "**met**" in md
    assert "- fastembed: not installed (fastembed)" in md
    assert "| 82.050 | 0.9999900 | 0.9999990 |" in md
    assert "onnxruntime" not in md.split("## Targets")[0]  # tools without results get no row
    widths = {line.count("|") for line in lines if line.startswith("| embellama |")}
    assert len(widths) == 3  # one row in each of the three tables


def test_chart_is_written(tmp_path):
    bench.plot(_report(), tmp_path / "bench.png")
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"


def test_parse_raw_skips_log_lines():
    text = "main: loaded 3 prompts\n0.1 0.2 0.3\nllama_perf: 1 2 3 ms\n-0.5 0.5 1e-3\n"
    assert bench.parse_raw(text, dim=3) == [[0.1, 0.2, 0.3], [-0.5, 0.5, 0.001]]


def test_select_keeps_embellama_and_takes_families():
    names = [t.name for t in bench._select(["llama-cpp-python"])]
    assert names == ["embellama", "llama-cpp-python-f16", "llama-cpp-python-bf16", "llama-cpp-python-f32"]
    assert [t.name for t in bench._select(["fastembed,onnxruntime"])] == ["embellama", "onnxruntime", "fastembed"]
    assert len(bench._select(None)) == len(bench.TOOLS)
    with pytest.raises(SystemExit, match="unknown tool"):
        bench._select(["torch"])


def test_corpus_gflop_counts_the_layer_products_and_attention():
    # one layer of width 2 and feed-forward 3, one text of 4 tokens: per token 4·2·2 + 2·2·3 = 28 multiply-adds,
    # per text 2·4·4·2 = 64 for attention scores and the weighted sum; 2 FLOP each
    assert bench.corpus_gflop([4], 1, 2, 3) * 1e9 == pytest.approx(2 * (4 * 28 + 64))
    assert bench.corpus_gflop([4, 4], 3, 2, 3) == pytest.approx(6 * bench.corpus_gflop([4], 1, 2, 3))
    # MiniLM-L6 (6 x 384, ff 1536): 21.2 MFLOP per token of matrix products, before attention
    assert bench.corpus_gflop([1], 6, 384, 1536) * 1e3 == pytest.approx(21.24, abs=0.01)


def test_sustained_rate_follows_texts_per_second():
    results = {"a": {"short_texts_s": 50.0}, "b": {}}
    bench.add_compute(results, {"short": 20.0}, {"short": 100})
    assert results["a"]["short_gflops"] == pytest.approx(10.0)  # 20 GFLOP in 100 texts at 50 texts/s
    assert "short_gflops" not in results["b"]


def test_missed_targets_carry_a_measured_reason():
    results = _results(startup_s=0.3, import_s=0.2, load_s=0.09, first_s=0.01)
    gflop = {"short": 40.0, "long": 30.0}
    bench.add_compute(results, gflop, {"short": 2758, "long": 256})
    compute = {"sgemm_gflops": 150.0, "bf16_kernel": False, "numpy_import_s": 0.11}
    peers = ["llama-cpp-python-f16", "sentence-transformers", "fastembed"]
    rows = {r["target"]: r for r in bench.evaluate_targets(results, peers, compute=compute)}
    why = rows["short corpus throughput"]["why"]
    needed = 1.3 * 40.0 / 2758 * 320.0  # 1.3x sentence-transformers' sustained rate
    assert f"means {needed:.0f} GFLOP/s" in why and f"({150.0:.0f} GFLOP/s" in why
    assert "no AVX512_BF16 kernel" in why and "same libllama" not in why
    assert "runs the same libllama" in rows["long corpus throughput"]["why"]  # llama-cpp-python is fastest there
    assert "importing numpy alone takes 0.110 s" in rows["start-up"]["why"]
    assert rows["memory"]["why"] == "" and rows["short corpus accuracy"]["why"] == ""  # met: no reason
    report = _report()
    report["compute"] = {**compute, "n_layer": 6, "n_embd": 384, "n_ff": 1536, "gflop": gflop}
    bench.add_compute(report["results"], gflop, {"short": 2758, "long": 256})
    md = bench.render_markdown(report)
    assert "runs at 150 GFLOP/s on this CPU" in md and "has no AVX512_BF16 kernel" in md


def test_ceiling_worker_measures_numpy_gemm():
    shape = {"n_embd": 64, "n_ff": 128}
    result = bench.measure_ceiling(shape, tokens=32)
    assert result["sgemm_gflops"] > 0.1 and 0 < result["numpy_import_s"] < 10


def test_serve_report_names_no_paths_or_ports():
    import bench_serve

    shown = bench_serve._shown_command(
        ["/opt/x/llama-server", "-m", "/m/a.gguf", "--port", "5123", "-t", "2"], "/m/a.gguf"
    )
    assert shown == "llama-server -m MODEL --port PORT -t 2"
    assert bench_serve._shown_command(["/v/bin/python", "-m", "embellama", "--port", "0"], "x").endswith("--port 0")


def test_serve_client_follows_the_server_closing_the_connection():
    """llama-server closes a keep-alive connection after 100 requests (Connection: close): the client reconnects
    instead of losing the next request."""
    import asyncio
    import json

    import bench_serve

    served = []

    async def handle(reader, writer):
        for _ in range(2):  # two requests per connection, the second answered with Connection: close
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(
                next(x for x in head.decode().split("\r\n") if x.lower().startswith("content-length")).split(":")[1]
            )
            served.append(json.loads(await reader.readexactly(length))["input"])
            body = json.dumps({"data": [{"embedding": [1.0, 0.0]}]}).encode()
            close = b"Connection: close\r\n" if len(served) % 2 == 0 else b""
            writer.write(
                b"HTTP/1.1 200 OK\r\n" + close + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await bench_serve._http_run(f"http://127.0.0.1:{port}", "m", [f"t{i}" for i in range(7)], 1)

    run = asyncio.run(main())
    assert run["errors"] == 0 and served == [f"t{i}" for i in range(7)]
    assert run["sample"] == {0: [1.0, 0.0]}


def test_serve_report_splits_the_engine_time_inside_and_outside_llama_cpp(monkeypatch):
    """bench_serve's engine table: the seconds each run spent inside llama.cpp's calls, and outside them."""
    import bench_serve

    from embellama import llama as llama_module

    calls = []
    monkeypatch.setattr(llama_module.Context, "process", lambda self, batch: calls.append(batch))
    clock = bench_serve._DecodeClock()
    try:
        llama_module.Context.process(object(), "b1")  # the clock wraps whatever process is, and times it
        assert calls == ["b1"] and clock.seconds > 0
        clock.reset()
        assert clock.seconds == 0
    finally:
        clock.close()
    assert llama_module.Context.process.__name__ == "<lambda>"  # restored
    run = {"texts_per_s": 500.0, "p50_ms": 1.0, "p99_ms": 2.0, "vs_embed_batch": 0.8, "decode_s": 2.5, "wall_s": 3.0}
    engine = {
        "embed_batch_texts_per_s": 600.0,
        "embed_batch_split": {"64": {"wall_s": 2.5, "decode_s": 2.25}},
        "modes": {
            "before": {64: dict(run, vs_embed_batch=0.4)},
            "after": {64: dict(run, vs_embed_batch_range=[0.7, 0.9])},
        },
    }
    meta = {"date": "d", "cpu": "c", "threads": 2, "model": "m", "texts": 1500, "rounds": 1, "llama_cpp": "x"}
    md = bench_serve.markdown({"meta": meta, "engine": engine})
    assert "| 64 | 2.25 / 0.25 | 2.50 / 0.50 | +0.25 / +0.25 |" in md
