# SPDX-License-Identifier: Apache-2.0
"""A soak of ``embellama serve``: minutes of mixed traffic from many clients, memory and handles watched.

    python benchmarks/soak_serve.py                       # 10 minutes, 64 clients -> benchmarks/results/soak_serve.*
    python benchmarks/soak_serve.py --minutes 1 --clients 16 --interval 5

The server (a child process: MiniLM F16 and, when its test model is built, a BERT cross-encoder) gets, from
``--clients`` asyncio clients on keep-alive connections, a mix of every API it speaks: OpenAI's
/v1/embeddings (short and ~400-word texts), TEI's /embed, POST /, /embed_all, /rerank, /tokenize and /decode,
Ollama's /api/embed and /api/embeddings, llama-server's /tokenize and /detokenize, Jina's /v1/rerank; bad
requests (not JSON, empty texts, unknown models, wrong types: each must get its 4xx); and clients that hang up
before their answer (a long text with a 50 ms timeout). ``--max-pending`` below the client count makes the
engine refuse some requests (503 or TEI's 429, with Retry-After), which the clients honour briefly.

Every ``--interval`` seconds it records the server's RSS, open file descriptors and threads (from /proc), and
the window's requests, p50/p99 latency of the answered ones, refusals, hang-ups and errors. The pass rule:
RSS at the end within 5 % of RSS after the warm-up (``--warmup``, default a tenth of the run), no request
without an answer (hang-ups are the clients' own), no 5xx other than the backpressure codes, no unexpected
status, and the server exits 0 on SIGTERM. Writes ``soak_serve.json``, ``soak_serve.md`` (the table) and
``soak_serve.png`` (the plot, with matplotlib) into ``--out`` (default benchmarks/results/).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import os
import platform
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
START = 180  # seconds for the server to load its models and listen
KEY = "sk-soak"
MAX_RSS_GROWTH = 0.05
BACKPRESSURE = (429, 503)

WORDS = (
    "the quick brown fox jumps over a lazy dog while music plays in the garden and people talk about the "
    "weather stocks football coffee history physics trains mountains oceans gardening and the moon"
).split()


def _text(i: int, words: int) -> str:
    return " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(words)) + f" {i}"


def requests_mix(i: int, reranker: bool) -> tuple[str, str, Any, tuple[int, ...], float | None]:
    """The i-th request of the mix: (name, path, JSON body or raw bytes, the statuses it may get, client timeout)."""
    short, long = _text(i, 12), _text(i, 400)
    ok = (200, *BACKPRESSURE)
    mix: list[tuple[str, str, Any, tuple[int, ...], float | None]] = [
        ("openai short", "/v1/embeddings", {"model": "minilm", "input": [short, _text(i + 1, 6)]}, ok, None),
        ("openai long", "/v1/embeddings", {"model": "minilm", "input": long}, ok, None),
        ("tei embed", "/embed", {"inputs": [short, _text(i + 2, 20)]}, ok, None),
        ("tei root", "/", {"inputs": short}, ok, None),
        ("tei embed_all", "/embed_all", {"inputs": short}, ok, None),
        ("tei embed left", "/embed", {"inputs": long + " " + long, "truncation_direction": "Left"}, ok, None),
        ("tei tokenize", "/tokenize", {"inputs": [short, long]}, ok, None),
        ("tei decode", "/decode", {"ids": [[101, 7592, 2088, 102]]}, ok, None),
        ("ollama embed", "/api/embed", {"model": "minilm", "input": [short, _text(i + 3, 30)]}, ok, None),
        ("ollama legacy", "/api/embeddings", {"model": "minilm", "prompt": short}, ok, None),
        ("llama-server tokenize", "/tokenize", {"content": long, "with_pieces": i % 2 == 0}, ok, None),
        ("llama-server detokenize", "/detokenize", {"tokens": [7592, 2088]}, ok, None),
        ("bad: not json", "/v1/embeddings", b"{not json", (400, *BACKPRESSURE), None),
        ("bad: empty text", "/embed", {"inputs": ["a", ""]}, (422, *BACKPRESSURE), None),
        ("bad: unknown model", "/api/embed", {"model": "nope", "input": "x"}, (404, *BACKPRESSURE), None),
        ("bad: wrong type", "/v1/embeddings", {"input": 5}, (400, *BACKPRESSURE), None),
        ("hang-up", "/v1/embeddings", {"input": [long, _text(i + 5, 400)]}, ok, 0.05),
    ]
    if reranker:
        documents = [_text(i + k, 15) for k in range(5)]
        mix += [
            ("tei rerank", "/rerank", {"model": "bert", "query": short, "texts": documents}, ok, None),
            ("jina rerank", "/v1/rerank", {"model": "bert", "query": short, "documents": documents}, ok, None),
        ]
    return mix[i % len(mix)]


MIX_NAMES = [requests_mix(i, True)[0] for i in range(19)]
"""The kinds of request in the mix (with a reranker)."""


@dataclasses.dataclass
class Window:
    """What the clients saw since the last sample."""

    latencies: list[float] = dataclasses.field(default_factory=list)
    refused: int = 0
    hang_ups: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)


class Soak:
    """The clients, the sampler and the tallies of one run."""

    def __init__(self, url: str, pid: int, clients: int, reranker: bool) -> None:
        self.url, self.pid, self.clients, self.reranker = url, pid, clients, reranker
        self.window = Window()
        self.samples: list[dict[str, Any]] = []
        self.sent = 0
        self.answered = 0
        self.statuses: dict[str, int] = {}
        self.stop = False

    def proc(self) -> dict[str, int]:
        """The server's RSS (KiB), open file descriptors and threads."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        return {
            "rss_kib": int(fields["VmRSS"].split()[0]),
            "fds": len(os.listdir(f"/proc/{self.pid}/fd")),
            "threads": int(fields["Threads"]),
        }

    async def client(self, c: int) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        async with httpx.AsyncClient(base_url=self.url, headers=headers, timeout=120) as http:
            k = 0
            while not self.stop:
                name, path, body, allowed, timeout = requests_mix(c * 131 + k, self.reranker)
                k += 1
                content = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.sent += 1
                started = time.perf_counter()
                try:
                    if timeout is not None:
                        response = await http.post(path, content=content, timeout=timeout)
                    else:
                        response = await http.post(path, content=content)
                except httpx.TimeoutException:
                    if timeout is not None:  # the client's own hang-up
                        self.window.hang_ups += 1
                        self.answered += 1
                        continue
                    self.window.errors.append(f"{name}: no answer (timed out)")
                    continue
                except httpx.HTTPError as exc:
                    self.window.errors.append(f"{name}: {type(exc).__name__}")
                    continue
                self.answered += 1
                status = response.status_code
                self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1
                if status not in allowed:
                    self.window.errors.append(f"{name}: status {status}: {response.text[:120]}")
                elif status in BACKPRESSURE:
                    self.window.refused += 1
                    if "retry-after" not in response.headers:
                        self.window.errors.append(f"{name}: {status} without Retry-After")
                    await asyncio.sleep(0.2)
                else:
                    self.window.latencies.append(time.perf_counter() - started)

    def sample(self, t: float) -> dict[str, Any]:
        window, self.window = self.window, Window()
        lat = sorted(window.latencies)
        row = {
            "t": round(t, 1),
            **self.proc(),
            "answered": len(lat),
            "p50_ms": round(1000 * lat[len(lat) // 2], 1) if lat else None,
            "p99_ms": round(1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))], 1) if lat else None,
            "refused": window.refused,
            "hang_ups": window.hang_ups,
            "errors": len(window.errors),
            "error_examples": window.errors[:3],
        }
        self.samples.append(row)
        return row

    async def prime(self) -> None:
        """Each request of the mix once, one after another, before the clock starts (the first of each kind
        allocates what that kind keeps: not growth)."""
        import httpx

        headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        async with httpx.AsyncClient(base_url=self.url, headers=headers, timeout=120) as http:
            for i in range(len(MIX_NAMES) + 2):
                name, path, body, allowed, timeout = requests_mix(i, self.reranker)
                if timeout is None:
                    content = body if isinstance(body, bytes) else json.dumps(body).encode()
                    response = await http.post(path, content=content)
                    if response.status_code not in allowed:
                        self.window.errors.append(f"{name}: status {response.status_code}: {response.text[:120]}")

    async def run(self, seconds: float, interval: float, log: Any) -> None:
        await self.prime()
        tasks = [asyncio.ensure_future(self.client(c)) for c in range(self.clients)]
        started = time.monotonic()
        self.samples.append(
            {
                "t": 0.0,
                **self.proc(),
                "answered": 0,
                "p50_ms": None,
                "p99_ms": None,
                "refused": 0,
                "hang_ups": 0,
                "errors": 0,
                "error_examples": [],
            }
        )
        while time.monotonic() - started < seconds:
            await asyncio.sleep(min(interval, max(0.0, seconds - (time.monotonic() - started))))
            row = self.sample(time.monotonic() - started)
            log(row)
        self.stop = True
        done, pending = await asyncio.wait(tasks, timeout=150)
        for task in pending:  # a request still without an answer 150 s after the end
            task.cancel()
            self.window.errors.append("a client's request was never answered")
        for task in done:
            if task.exception() is not None:
                self.window.errors.append(f"client failed: {task.exception()!r}")


def start_server(model: Path, reranker: Path | None, threads: int, max_pending: int, workdir: Path) -> tuple:
    """``python -m embellama serve`` in a child process; (process, url, stderr lines)."""
    cmd = [sys.executable, "-m", "embellama", "serve", str(model), "--model-name", "minilm", "--port", "0"]
    cmd += ["--threads", str(threads), "--max-pending", str(max_pending), "--api-key", KEY]
    if reranker is not None:
        config = workdir / "models.json"
        entry = {"model_path": str(reranker), "model_name": "bert", "n_threads": threads}
        config.write_text(json.dumps({"models": [entry]}))
        cmd += ["--config", str(config)]
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue[str] = queue.Queue()
    stderr: list[str] = []
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    threading.Thread(target=lambda: [stderr.append(x) for x in proc.stderr], daemon=True).start()  # type: ignore[union-attr]
    deadline = time.monotonic() + START
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        if "listening on " in line:
            return proc, line.split("listening on ", 1)[1].split()[0], stderr
    proc.kill()
    raise RuntimeError(f"the server did not start:\n{''.join(stderr)[-3000:]}")


def default_models() -> tuple[Path, Path | None]:
    """MiniLM's F16 GGUF from embellama's model cache, and the test suite's BERT cross-encoder when built."""
    cache = Path(os.environ.get("EMBELLAMA_CACHE") or Path.home() / ".cache" / "embellama") / "models"
    found = sorted(cache.glob("all-MiniLM-L6-v2-*.F16.gguf"))
    if not found:
        raise SystemExit(f"no MiniLM F16 GGUF under {cache}: give --model (or run the test suite once)")
    try:  # the test suite's random BERT cross-encoder (tests/support/rerank_models.py), built there once
        sys.path.insert(0, str(REPO))
        from tests.support import rerank_models

        reranker: Path | None = rerank_models.ensure("bert").gguf("f32")
    except Exception as exc:  # no torch or transformers to build it: embeddings only
        print(f"no reranker ({type(exc).__name__}: {exc}); soaking the embedding routes only", file=sys.stderr)
        reranker = None
    return found[0], reranker


def verdict(samples: list[dict[str, Any]], warmup: float, soak: Soak, exit_status: int) -> dict[str, Any]:
    """The pass rule applied to a run."""
    after = [s for s in samples if s["t"] >= warmup] or samples[-1:]
    base, last = after[0]["rss_kib"], samples[-1]["rss_kib"]
    growth = (last - base) / base
    errors = [e for s in samples for e in s["error_examples"]]
    n_errors = sum(s["errors"] for s in samples) + len(soak.window.errors)
    errors += soak.window.errors
    five = {k: v for k, v in soak.statuses.items() if k.startswith("5") and int(k) not in BACKPRESSURE}
    failures = []
    if growth >= MAX_RSS_GROWTH:
        failures.append(f"RSS grew {100 * growth:.1f} % after the warm-up ({base} -> {last} KiB)")
    if n_errors:
        failures.append(f"{n_errors} request(s) unanswered or answered wrongly, e.g. {errors[:3]}")
    if five:
        failures.append(f"5xx other than backpressure: {five}")
    if exit_status != 0:
        failures.append(f"the server exited {exit_status} on SIGTERM")
    return {
        "passed": not failures,
        "failures": failures,
        "rss_growth_after_warmup": round(growth, 4),
        "rss_base_kib": base,
        "rss_last_kib": last,
        "requests_sent": soak.sent,
        "requests_answered": soak.answered,
        "statuses": dict(sorted(soak.statuses.items())),
        "exit_status": exit_status,
    }


def soak(
    model: Path,
    reranker: Path | None,
    *,
    seconds: float,
    clients: int,
    interval: float,
    warmup: float,
    threads: int = 2,
    max_pending: int = 48,
    log: Any = print,
) -> dict[str, Any]:
    """Run the soak; the samples, the pass verdict and the run's settings."""
    with tempfile.TemporaryDirectory() as workdir:
        proc, url, stderr = start_server(model, reranker, threads, max_pending, Path(workdir))
        run = Soak(url, proc.pid, clients, reranker is not None)
        exit_status = -1
        try:
            asyncio.run(run.run(seconds, interval, log))
            metrics = _metrics(url)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                exit_status = proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    result = verdict(run.samples, warmup, run, exit_status)
    result.update(
        {
            "samples": run.samples,
            "settings": {
                "seconds": seconds,
                "clients": clients,
                "interval": interval,
                "warmup": warmup,
                "threads": threads,
                "max_pending": max_pending,
                "model": model.name,
                "reranker": reranker.name if reranker else None,
            },
            "server_metrics": metrics,
            "server_log_tail": "".join(stderr)[-2000:],
        }
    )
    return result


def _metrics(url: str) -> dict[str, float]:
    import httpx

    out = {}
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        if line.startswith(("embellama_engine_joined", "embellama_inputs_total", "embellama_tokens_total")):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def write_report(result: dict[str, Any], out: Path, stem: str = "soak_serve") -> None:
    """``stem``.json, .md (the table) and .png (the plot) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    s = result["settings"]
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    rows = [
        "| t (s) | RSS (MiB) | fds | threads | answered | p50 / p99 ms | refused (429/503) | hang-ups | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["samples"]:
        lat = f"{r['p50_ms']} / {r['p99_ms']}" if r["p50_ms"] is not None else "-"
        rows.append(
            f"| {r['t']:.0f} | {r['rss_kib'] / 1024:.1f} | {r['fds']} | {r['threads']} | {r['answered']} | {lat} "
            f"| {r['refused']} | {r['hang_ups']} | {r['errors']} |"
        )
    verdict_line = "PASS" if result["passed"] else "FAIL: " + "; ".join(result["failures"])
    text = [
        f"# Soak of embellama serve ({datetime.date.today().isoformat()})",
        "",
        f"{cpu_name()}, {os.cpu_count()} cores; {s['model']} and {s['reranker'] or 'no reranker'}, "
        f"{s['threads']} threads each; {s['clients']} clients for {s['seconds'] / 60:.1f} min, max_pending "
        f"{s['max_pending']}; a sample every {s['interval']:g} s, warm-up {s['warmup']:g} s.",
        "",
        f"**{verdict_line}.** RSS after the warm-up {result['rss_base_kib'] / 1024:.1f} MiB, at the end "
        f"{result['rss_last_kib'] / 1024:.1f} MiB ({100 * result['rss_growth_after_warmup']:+.2f} %; the rule: "
        f"under +{100 * MAX_RSS_GROWTH:.0f} %). Requests sent {result['requests_sent']}, answered "
        f"{result['requests_answered']} (hang-ups included); statuses {result['statuses']}; exit status "
        f"{result['exit_status']} on SIGTERM.",
        "",
        *rows,
        "",
        "Traffic: every API (OpenAI, TEI, Ollama, llama-server, Jina's rerank), short and ~400-word texts, bad "
        "requests (each must get its 4xx), clients hanging up after 50 ms; `python benchmarks/soak_serve.py "
        f"--minutes {s['seconds'] / 60:g} --clients {s['clients']}`.",
        "",
    ]
    (out / f"{stem}.md").write_text("\n".join(text))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    t = [r["t"] for r in result["samples"]]
    fig, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    axes[0].plot(t, [r["rss_kib"] / 1024 for r in result["samples"]], marker="o")
    axes[0].axvline(s["warmup"], color="grey", linestyle=":")
    axes[0].set_ylabel("RSS (MiB)")
    axes[1].plot(t, [r["fds"] for r in result["samples"]], label="open fds")
    axes[1].plot(t, [r["threads"] for r in result["samples"]], label="threads")
    axes[1].legend()
    lat_t = [r["t"] for r in result["samples"] if r["p50_ms"] is not None]
    axes[2].plot(lat_t, [r["p50_ms"] for r in result["samples"] if r["p50_ms"] is not None], label="p50")
    axes[2].plot(lat_t, [r["p99_ms"] for r in result["samples"] if r["p99_ms"] is not None], label="p99")
    axes[2].set_ylabel("latency (ms)")
    axes[2].set_xlabel("seconds")
    axes[2].legend()
    fig.suptitle(f"embellama serve soak: {s['clients']} clients, {'PASS' if result['passed'] else 'FAIL'}")
    fig.tight_layout()
    fig.savefig(out / f"{stem}.png", dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, help="seconds before the RSS baseline (default: a tenth of the run)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-pending", type=int, default=48)
    parser.add_argument("--model", type=Path, help="embedding GGUF (default: MiniLM F16 from the model cache)")
    parser.add_argument("--reranker", type=Path, help="reranker GGUF (default: the test suite's BERT, if built)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    model, reranker = default_models() if args.model is None else (args.model, args.reranker)
    if args.reranker is not None:
        reranker = args.reranker
    seconds = args.minutes * 60
    warmup = args.warmup if args.warmup is not None else max(args.interval, round(seconds / 10))

    def log(row: dict[str, Any]) -> None:
        print(
            f"t={row['t']:6.0f}s rss={row['rss_kib'] / 1024:7.1f} MiB fds={row['fds']} threads={row['threads']} "
            f"answered={row['answered']} p50={row['p50_ms']} p99={row['p99_ms']} refused={row['refused']} "
            f"hang-ups={row['hang_ups']} errors={row['errors']} {row['error_examples'][:1]}",
            flush=True,
        )

    result = soak(
        model,
        reranker,
        seconds=seconds,
        clients=args.clients,
        interval=args.interval,
        warmup=warmup,
        threads=args.threads,
        max_pending=args.max_pending,
        log=log,
    )
    write_report(result, args.out)
    print("PASS" if result["passed"] else "FAIL: " + "; ".join(result["failures"]))
    print(f"wrote {args.out}/soak_serve.{{json,md,png}}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
