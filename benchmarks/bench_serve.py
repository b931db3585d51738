# SPDX-License-Identifier: Apache-2.0
"""Concurrent single-text clients: the engine's dynamic batching, and ``embellama serve`` beside its peers.

1. **Engine** (in process): N threads, each embedding one text at a time with ``EmbeddingEngine.embed``
   until the corpus is done, with dynamic batching off (``max_batch_texts=1``: one llama.cpp call per
   request, as the engine ran before it) and on (the defaults); texts/s against ``embed_batch`` of the
   same texts, and p50/p99 request latency. ``--wait-sweep`` also measures ``max_batch_wait_ms``
   values, which is how its default was chosen.
2. **Servers** (HTTP on 127.0.0.1): N asyncio clients (raw keep-alive connections: httpx's pool took
   a core of its own at 64 clients, on the cores the servers need), each posting one text per request to
   ``/v1/embeddings``, against ``embellama serve``, llama-cpp-python's server (``--lcp-python``: a Python
   with ``llama-cpp-python[server]``, loading our libllama through ``LLAMA_CPP_LIB_PATH``) and
   ``llama-server --embedding`` (``--llama-server PATH``, else ``bin/llama-server`` beside the libraries,
   from ``build_llama.py --with-server``, which ``nox -s bench`` runs; the row is skipped, and the output
   says so, without one). Same GGUF, same threads, one run; llama-server gets embellama's batch sizes
   (``-b``/``-ub`` 512) and a slot per client (``--parallel``, default: the most clients), so that it can
   batch every waiting request as embellama does. Every server runs with ``OMP_WAIT_POLICY=PASSIVE``
   (unless set), embellama serve's default. Requests/s, texts/s, p50/p99 and embellama's ratio to each peer.

Rounds are interleaved (each configuration once per round, in turn) and medians reported. In the engine part,
``embed_batch`` runs again before each client count, and each engine run is reported against that neighbour.
Results: ``benchmarks/results/serve.json`` and ``serve.md``.

    python benchmarks/bench_serve.py --rounds 2 --lcp-python /path/to/venv/bin/python
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime
import json
import os
import platform
import queue
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
STS = Path(os.environ.get("EMBELLAMA_STS_FILE") or REPO.parent / "shared" / "data" / "stsbenchmark" / "sts-test.csv")
_LIB = Path(os.environ.get("EMBELLAMA_LIB") or REPO / "embellama" / "_lib" / "cpu")
LIB_DIR = _LIB if _LIB.is_dir() else _LIB.parent
RESULTS = HERE / "results"
START = 180  # seconds for a server to load and listen


def read_sts(limit: int) -> list[str]:
    with open(STS, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [s for r in rows for s in (r[5], r[6])][:limit]


def _spread(row: dict[str, Any]) -> str:
    """`` , 0.95-1.04`` : the range of a configuration's paired ratios, where the run recorded them."""
    low, high = row.get("vs_embed_batch_range") or (None, None)
    return f", {low:.2f}-{high:.2f}" if low is not None else ""


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    a = np.asarray(latencies) * 1000
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


# -- engine --------------------------------------------------------------------------------------


def engine_run(engine: Any, texts: list[str], clients: int) -> dict[str, float]:
    """``clients`` threads embed the texts one per request; texts/s and latency percentiles."""
    lock = threading.Lock()
    cursor = [0]
    latencies: list[float] = []

    def client() -> None:
        mine = []
        while True:
            with lock:
                i = cursor[0]
                cursor[0] += 1
            if i >= len(texts):
                break
            began = time.perf_counter()
            engine.embed(texts[i])
            mine.append(time.perf_counter() - began)
        with lock:
            latencies.extend(mine)

    began = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    seconds = time.perf_counter() - began
    p50, p99 = _percentiles(latencies)
    return {"texts_per_s": len(texts) / seconds, "p50_ms": p50, "p99_ms": p99}


def bench_engine(model: Path, texts: list[str], args: argparse.Namespace) -> dict[str, Any]:
    from embellama import EmbeddingEngine, EngineConfig, ModelConfig

    config = ModelConfig(model_path=model, n_threads=args.threads)
    modes: dict[str, EngineConfig] = {  # "after" first: right behind the embed_batch run it is divided by
        "after": EngineConfig(),
        "before": EngineConfig(max_batch_texts=1),  # one llama.cpp call per request, as before dynamic batching
    }
    if args.wait_sweep:
        for ms in args.wait_sweep:
            modes[f"wait {ms:g} ms"] = EngineConfig(max_batch_wait_ms=ms)
    runs: dict[str, dict[int, list[dict[str, float]]]] = {m: {c: [] for c in args.concurrency} for m in modes}
    batch_runs: list[float] = []
    batch_split: dict[int, list[dict[str, float]]] = {c: [] for c in args.concurrency}
    engines = {m: EmbeddingEngine(cfg, models=[config]) for m, cfg in modes.items()}
    decode = _DecodeClock()
    try:
        for eng in engines.values():
            eng.embed_batch(texts[:64])  # warm up
        for r in range(args.rounds):
            for c in args.concurrency:
                # embed_batch right before each client count's runs: each run's ratio is to its neighbour, so
                # that the machine's drift over a round cancels out of the ratios
                decode.reset()
                began = time.perf_counter()
                engines["after"].embed_batch(texts)
                wall = time.perf_counter() - began
                batch_runs.append(len(texts) / wall)
                batch_split[c].append({"wall_s": wall, "decode_s": decode.seconds})
                for mode, eng in engines.items():
                    if mode.startswith("wait") and c not in (1, 8, 64):
                        continue
                    decode.reset()
                    run = engine_run(eng, texts, c)
                    run["decode_s"] = decode.seconds
                    run["wall_s"] = len(texts) / run["texts_per_s"]
                    run["vs_embed_batch"] = run["texts_per_s"] / batch_runs[-1]
                    runs[mode][c].append(run)
                    print(
                        f"  engine round {r + 1} {mode:>10} c={c:<4} {run['texts_per_s']:7.1f} texts/s "
                        f"p50 {run['p50_ms']:7.1f} ms  p99 {run['p99_ms']:7.1f} ms",
                        flush=True,
                    )
        stats = engines["after"].stats()
    finally:
        decode.close()
        for eng in engines.values():
            eng.close()
    batch = statistics.median(batch_runs)
    table = {}
    for mode, by_c in runs.items():
        table[mode] = {}
        for c, rs in by_c.items():
            if not rs:
                continue
            med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}  # vs_embed_batch: of the paired ratios
            med["vs_embed_batch_range"] = [min(r["vs_embed_batch"] for r in rs), max(r["vs_embed_batch"] for r in rs)]
            med["runs"] = rs
            table[mode][c] = med
    split = {
        c: {k: statistics.median(r[k] for r in rs) for k in ("wall_s", "decode_s")} for c, rs in batch_split.items()
    }
    return {
        "embed_batch_texts_per_s": batch,
        "embed_batch_runs": batch_runs,
        "embed_batch_split": split,
        "modes": table,
        "joined": stats,
    }


class _DecodeClock:
    """Wall-clock seconds spent inside llama.cpp's calls (``Context.process``) since the last reset: where an engine
    run loses against ``embed_batch``, inside llama.cpp (its threads slowed by the callers' Python) or outside it
    (the worker's own Python between calls)."""

    def __init__(self) -> None:
        from embellama import llama as _llama

        self._cls = _llama.Context
        self._original = self._cls.process
        self.seconds = 0.0
        clock = self

        def process(context: Any, batch: Any) -> None:
            began = time.perf_counter()
            try:
                clock._original(context, batch)
            finally:
                clock.seconds += time.perf_counter() - began

        self._cls.process = process  # type: ignore[method-assign]

    def reset(self) -> None:
        self.seconds = 0.0

    def close(self) -> None:
        self._cls.process = self._original  # type: ignore[method-assign]


# -- servers -------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Peer:
    """A server process: started, waited for, stopped."""

    def __init__(self, name: str, cmd: list[str], url: str | None, env: dict[str, str], model_name: str) -> None:
        self.name, self.cmd, self.url, self.env, self.model_name = name, cmd, url, env, model_name
        self.discover = url is None  # the URL is the one the server prints (it listens on a free port)
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        if self.discover:
            self.url = None
        self.proc = subprocess.Popen(
            self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env, cwd=REPO
        )
        lines: queue.Queue[str] = queue.Queue()

        def read() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                lines.put(line)

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + START
        import httpx

        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out = []
                while not lines.empty():
                    out.append(lines.get())
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {''.join(out)[-2000:]}")
            while not lines.empty():
                line = lines.get()
                if self.url is None and "listening on " in line:
                    self.url = line.split("listening on ", 1)[1].split()[0]
            if self.url is not None:
                try:
                    r = httpx.post(self.url + "/v1/embeddings", json={"input": "warm up", "model": self.model_name})
                    if r.status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(0.2)
        out = []
        while not lines.empty():
            out.append(lines.get())
        self.stop()
        raise RuntimeError(f"{self.name} did not answer within {START} s (url {self.url}): {''.join(out)[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


async def _post(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, body: bytes
) -> tuple[int, bytes, bool]:
    """One HTTP/1.1 keep-alive POST to /v1/embeddings on an open connection: (status, body, whether the
    server closes the connection after it, as llama-server's does after 100 requests)."""
    writer.write(
        b"POST /v1/embeddings HTTP/1.1\r\nHost: " + host.encode() + b"\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
    closes = headers.get("connection", "").lower() == "close"
    if headers.get("transfer-encoding", "").lower() == "chunked":
        data = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return status, data, closes
            data += chunk[:-2]
    return status, await reader.readexactly(int(headers.get("content-length", "0"))), closes


async def _http_run(url: str, model_name: str, texts: list[str], clients: int) -> dict[str, Any]:
    """``clients`` coroutines, each with its own keep-alive connection (asyncio streams: a light client,
    so that the load generator does not take the cores the servers need), one text per request."""
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    cursor = 0
    latencies: list[float] = []
    vectors: dict[int, list[float]] = {}
    errors = 0

    async def client() -> None:
        nonlocal cursor, errors
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while cursor < len(texts):
                i = cursor
                cursor += 1
                body = json.dumps({"input": texts[i], "model": model_name}).encode()
                began = time.perf_counter()
                try:
                    status, data, closes = await _post(reader, writer, host, body)
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:  # counted; a new connection
                    errors += 1
                    print(f"    {type(exc).__name__} on request {i}", flush=True)
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, int(port))
                    continue
                latencies.append(time.perf_counter() - began)
                if closes:  # the next request goes on a new connection (outside its latency)
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, int(port))
                if status != 200:
                    errors += 1
                    continue
                if i % 50 == 0:
                    vectors[i] = json.loads(data)["data"][0]["embedding"]
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    seconds = time.perf_counter() - began
    p50, p99 = _percentiles(latencies)
    n = len(texts)
    return {
        "requests_per_s": n / seconds,
        "texts_per_s": n / seconds,
        "p50_ms": p50,
        "p99_ms": p99,
        "errors": errors,
        "sample": vectors,
    }


def bench_servers(model: Path, texts: list[str], reference: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ, LLAMA_CPP_LIB_PATH=str(LIB_DIR), PYTHONUNBUFFERED="1")
    # Every server under embellama serve's own OpenMP setting (its default; the same libgomp runs all three):
    # with spinning idle threads, llama-server's requests stalled for 1-2 s on 2 cores, as embellama serve's did.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    threads = str(args.threads)
    peers = [
        Peer(
            "embellama serve",
            [
                sys.executable,
                "-m",
                "embellama",
                "serve",
                str(model),
                "--model-name",
                "minilm",
                "--port",
                "0",
                "--threads",
                threads,
                "--max-pending",
                "4096",
            ],
            None,
            env,
            "minilm",
        )
    ]
    skipped: dict[str, str] = {}
    lcp = args.lcp_python
    if lcp and subprocess.run([lcp, "-c", "import llama_cpp.server"], env=env, capture_output=True).returncode == 0:
        port = _free_port()
        peers.append(
            Peer(
                "llama-cpp-python server",
                [
                    lcp,
                    "-m",
                    "llama_cpp.server",
                    "--model",
                    str(model),
                    "--embedding",
                    "true",
                    "--n_threads",
                    threads,
                    "--n_threads_batch",
                    threads,
                    "--n_ctx",
                    "512",
                    "--n_batch",
                    "512",
                    "--n_ubatch",
                    "512",
                    "--flash_attn",
                    "true",
                    "--verbose",
                    "false",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                f"http://127.0.0.1:{port}",
                env,
                "minilm",
            )
        )
    else:
        skipped["llama-cpp-python server"] = "no --lcp-python with llama-cpp-python[server] installed"
    server_bin = args.llama_server or shutil.which("llama-server")
    if server_bin is None and (LIB_DIR / "bin" / "llama-server").is_file():  # a build with LLAMA_BUILD_SERVER
        server_bin = str(LIB_DIR / "bin" / "llama-server")
    if server_bin and Path(server_bin).is_file():
        port = _free_port()
        peers.append(
            Peer(
                "llama-server",
                [
                    server_bin,
                    "-m",
                    str(model),
                    "--embedding",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "-t",
                    threads,
                    "-tb",
                    threads,
                    "-c",
                    str(512 * args.parallel),
                    "-b",
                    "512",
                    "-ub",
                    "512",
                    "--parallel",
                    str(args.parallel),
                    "--pooling",
                    "mean",
                ],
                f"http://127.0.0.1:{port}",
                env,
                "minilm",
            )
        )
    else:
        skipped["llama-server"] = (
            "no llama-server binary: `build_llama.py --with-server` builds one (--llama-server PATH)"
        )
    for name, why in skipped.items():
        print(f"  skipped {name}: {why}", flush=True)
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {p.name: {c: [] for c in args.server_concurrency} for p in peers}
    for r in range(args.rounds):
        for peer in peers:  # one server at a time: they never compete for the cores
            peer.start()
            try:
                for c in args.server_concurrency:
                    assert peer.url is not None
                    run = asyncio.run(_http_run(peer.url, peer.model_name, texts, c))
                    sample = run.pop("sample")
                    cos = [float(np.dot(v, reference[i]) / np.linalg.norm(v)) for i, v in sample.items()]
                    run["min_cos_vs_embed_batch"] = min(cos) if cos else None
                    runs[peer.name][c].append(run)
                    print(
                        f"  server round {r + 1} {peer.name:>24} c={c:<4} {run['texts_per_s']:7.1f} req/s "
                        f"p50 {run['p50_ms']:7.1f} ms  p99 {run['p99_ms']:7.1f} ms  errors {run['errors']}",
                        flush=True,
                    )
            finally:
                peer.stop()
    table: dict[str, dict[int, dict[str, Any]]] = {}
    for name, by_c in runs.items():
        table[name] = {}
        for c, rs in by_c.items():
            med: dict[str, Any] = {
                k: statistics.median(x[k] for x in rs) for k in ("requests_per_s", "texts_per_s", "p50_ms", "p99_ms")
            }
            med["errors"] = sum(x["errors"] for x in rs)
            cosines = [x["min_cos_vs_embed_batch"] for x in rs if x["min_cos_vs_embed_batch"]]
            med["min_cos_vs_embed_batch"] = min(cosines, default=None)
            med["runs"] = rs
            table[name][c] = med
    ours = table["embellama serve"]
    for name, by_c in table.items():
        if name != "embellama serve":
            for c, row in by_c.items():
                row["embellama_ratio"] = ours[c]["texts_per_s"] / row["texts_per_s"]
    commands = {p.name: _shown_command(p.cmd, model) for p in peers}
    return {"servers": table, "skipped": skipped, "commands": commands, "omp_wait_policy": env["OMP_WAIT_POLICY"]}


def _shown_command(cmd: list[str], model: Path) -> str:
    """``cmd`` for the report: the program's name, MODEL for the GGUF's path and PORT for a free port."""
    shown = [Path(cmd[0]).name, *("MODEL" if a == str(model) else a for a in cmd[1:])]
    for i, arg in enumerate(shown[:-1]):
        if arg == "--port" and shown[i + 1] != "0":
            shown[i + 1] = "PORT"
    return shlex.join(shown)


# -- report --------------------------------------------------------------------------------------


def markdown(result: dict[str, Any]) -> str:
    meta = result["meta"]
    out = [
        f"# Concurrent single-text clients ({meta['date']})",
        "",
        f"{meta['cpu']}, {meta['threads']} threads, {meta['model']}, {meta['texts']} STS-B sentences, "
        f"{meta['rounds']} interleaved round(s), medians; llama.cpp {meta['llama_cpp']}.",
        "",
    ]
    engine = result.get("engine")
    if engine:
        batch = engine["embed_batch_texts_per_s"]
        out += [
            f"## Engine: `embed()` from N threads (embed_batch of the same texts: {batch:.0f} texts/s)",
            "",
            "Each engine run is divided by the `embed_batch` run just before it; × is the median of those ratios.",
            "",
            "| clients | before: texts/s | before: p50 / p99 ms | after: texts/s (× embed_batch) "
            "| after: p50 / p99 ms |",
            "|---|---|---|---|---|",
        ]
        before, after = engine["modes"]["before"], engine["modes"]["after"]
        for c in after:
            b, a = before[c], after[c]
            out.append(
                f"| {c} | {b['texts_per_s']:.0f} ({b['vs_embed_batch']:.2f}×) | {b['p50_ms']:.1f} / {b['p99_ms']:.1f} "
                f"| {a['texts_per_s']:.0f} ({a['vs_embed_batch']:.2f}×{_spread(a)}) "
                f"| {a['p50_ms']:.1f} / {a['p99_ms']:.1f} |"
            )
        split = engine.get("embed_batch_split")
        if split:
            out += [
                "",
                "Where the time goes: seconds for the whole corpus, inside llama.cpp's calls (`Context.process`, wall "
                "clock on the worker) and outside them (medians):",
                "",
                "| clients | embed_batch: in llama.cpp / outside | after: in llama.cpp / outside | "
                "after − embed_batch: in / outside |",
                "|---|---|---|---|",
            ]
            for c, a in after.items():
                b = split.get(str(c)) or split.get(c)  # JSON keys are str
                if not b or "wall_s" not in a:
                    continue
                a_in, a_out = a["decode_s"], a["wall_s"] - a["decode_s"]
                b_in, b_out = b["decode_s"], b["wall_s"] - b["decode_s"]
                out.append(
                    f"| {c} | {b_in:.2f} / {b_out:.2f} | {a_in:.2f} / {a_out:.2f} | "
                    f"{a_in - b_in:+.2f} / {a_out - b_out:+.2f} |"
                )
        waits = {m: v for m, v in engine["modes"].items() if m.startswith("wait")}
        if waits:
            out += ["", "max_batch_wait_ms (texts/s, p50 / p99 ms):", ""]
            out += ["| setting | " + " | ".join(f"c={c}" for c in next(iter(waits.values()))) + " |"]
            out += ["|---|" + "---|" * len(next(iter(waits.values())))]
            for m, by_c in waits.items():
                cells = [f"{r['texts_per_s']:.0f}, {r['p50_ms']:.1f} / {r['p99_ms']:.1f}" for r in by_c.values()]
                out.append(f"| {m} | " + " | ".join(cells) + " |")
        out.append("")
    servers = result.get("servers")
    if servers:
        out += [
            "## Servers: one text per request to /v1/embeddings from N clients (a keep-alive connection each)",
            "",
            *(
                [f"Every server with OMP_WAIT_POLICY={servers['omp_wait_policy']}.", ""]
                if "omp_wait_policy" in servers
                else []
            ),
            "| server | clients | requests/s (= texts/s) | p50 / p99 ms | embellama's ratio | min cos | errors |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, by_c in servers["servers"].items():
            for c, r in by_c.items():
                ratio = f"{r['embellama_ratio']:.2f}×" if "embellama_ratio" in r else "-"
                cos = f"{r['min_cos_vs_embed_batch']:.5f}" if r["min_cos_vs_embed_batch"] else "-"
                out.append(
                    f"| {name} | {c} | {r['requests_per_s']:.0f} | {r['p50_ms']:.1f} / {r['p99_ms']:.1f} "
                    f"| {ratio} | {cos} | {r['errors']} |"
                )
        for name, why in servers["skipped"].items():
            out.append(f"\nSkipped {name}: {why}.")
        if servers.get("commands"):
            out += ["", "Commands (MODEL: the GGUF above):", ""]
            out += [f"- {name}: `{cmd}`" for name, cmd in servers["commands"].items()]
        out.append("")
    return "\n".join(out)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="GGUF (default: the test model's F16 file)")
    parser.add_argument("--texts", type=int, default=1500, help="STS-B sentences (default 1500)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--concurrency", type=_ints, default=[1, 8, 64, 256], help="engine clients (1,8,64,256)")
    parser.add_argument("--server-concurrency", type=_ints, default=[1, 8, 64], help="HTTP clients (1,8,64)")
    parser.add_argument(
        "--wait-sweep",
        type=lambda s: [float(x) for x in s.split(",")],
        default=None,
        help="also measure these max_batch_wait_ms values, e.g. 1,2,5",
    )
    parser.add_argument("--lcp-python", help="a Python with llama-cpp-python[server] (default: this one, if it has it)")
    parser.add_argument("--llama-server", help="a llama-server binary (llama.cpp's LLAMA_BUILD_SERVER); else skipped")
    parser.add_argument(
        "--parallel", type=int, help="llama-server --parallel slots (default: the most --server-concurrency clients)"
    )
    parser.add_argument("--no-engine", action="store_true")
    parser.add_argument("--no-servers", action="store_true")
    parser.add_argument("--reuse-engine", type=Path, help="take the engine part from this earlier results JSON")
    parser.add_argument("--out", type=Path, default=RESULTS / "serve.json")
    args = parser.parse_args(argv)
    args.lcp_python = args.lcp_python or sys.executable
    args.parallel = args.parallel or max(args.server_concurrency)
    if args.model is None:
        from tests.support import make_model

        args.model = make_model.ensure_models(verbose=False)["f16"]
    texts = read_sts(args.texts)
    from embellama import EmbeddingModel, ModelConfig, load_library

    lib = load_library()
    with EmbeddingModel(ModelConfig(model_path=args.model, n_threads=args.threads)) as m:
        reference = m.embed_batch(texts)
    result: dict[str, Any] = {
        "meta": {
            "date": datetime.date.today().isoformat(),
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "threads": args.threads,
            "model": args.model.name,
            "texts": len(texts),
            "rounds": args.rounds,
            "llama_cpp": str((lib.manifest or {}).get("llama_cpp_commit", lib.commit))[:12],
        }
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            result["meta"]["cpu"] = next(x.split(":", 1)[1].strip() for x in f if x.startswith("model name"))
    except (OSError, StopIteration):
        pass
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.reuse_engine is not None:  # the engine part of an earlier run (same corpus), to rerun the servers only
        result["engine"] = json.loads(args.reuse_engine.read_text())["engine"]
    elif not args.no_engine:
        print("engine:", flush=True)
        result["engine"] = bench_engine(args.model, texts, args)
        args.out.write_text(json.dumps(result, indent=2) + "\n")  # kept if the server part fails
    if not args.no_servers:
        print("servers:", flush=True)
        result["servers"] = bench_servers(args.model, texts, reference, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    report = markdown(result)
    args.out.with_suffix(".md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
