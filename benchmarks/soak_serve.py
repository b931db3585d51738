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
status, and the server exits 0 on SIGTERM. Writes ``soak-<target>.json``, ``.md`` (the table) and ``.png``
(the plot, with matplotlib) into ``--out`` (default benchmarks/results/).

``--target llama-cpp-python`` or ``--target llama-server`` soaks a peer's server instead, on the same MiniLM
GGUF, under the same clients, sampling and pass rule, with only the routes it speaks: OpenAI's /v1/embeddings
(short, long and hanging-up requests), its tokenize and detokenize routes (llama-cpp-python's /extras/...,
llama-server's /tokenize and /detokenize) and the bad requests that make sense for a server of one model (not
JSON and a wrong type, which must get a 4xx; an empty text, which a peer may also embed). A peer has no
backpressure of its own: it queues every request. The RSS, fds and threads are the server's process tree's.

    python benchmarks/soak_serve.py --target llama-cpp-python --lcp-python /path/to/venv/bin/python
    python benchmarks/soak_serve.py --target llama-server --llama-server /path/to/llama-server

llama-cpp-python loads the libllama of ``--lib-path`` (``LLAMA_CPP_LIB_PATH``); it does not load ggml's
dynamic CPU backends, so give it a build without ``--portable`` (embellama's own libraries are used when they
are one).
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
import shlex
import shutil
import signal
import socket
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
CLIENT_ERRORS = tuple(range(400, 500))
TARGETS = ("embellama", "llama-cpp-python", "llama-server")
_LIB = Path(os.environ.get("EMBELLAMA_LIB") or REPO / "embellama" / "_lib" / "cpu")
LIB_DIR = _LIB if _LIB.is_dir() else _LIB.parent

WORDS = (
    "the quick brown fox jumps over a lazy dog while music plays in the garden and people talk about the "
    "weather stocks football coffee history physics trains mountains oceans gardening and the moon"
).split()


def _text(i: int, words: int) -> str:
    return " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(words)) + f" {i}"


def requests_mix(
    i: int, reranker: bool, target: str = "embellama"
) -> tuple[str, str, Any, tuple[int, ...], float | None]:
    """The i-th request of the mix: (name, path, JSON body or raw bytes, the statuses it may get, client timeout).

    ``target`` a peer's server (``llama-cpp-python``, ``llama-server``): only the routes it speaks."""
    short, long = _text(i, 12), _text(i, 400)
    ok = (200, *BACKPRESSURE)
    if target != "embellama":
        return _peer_mix(i, target, short, long, ok)
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


def _peer_mix(
    i: int, target: str, short: str, long: str, ok: tuple[int, ...]
) -> tuple[str, str, Any, tuple[int, ...], float | None]:
    tokenize: tuple[str, str, Any]
    detokenize: tuple[str, str, Any]
    if target == "llama-cpp-python":
        tokenize = ("llama-cpp-python tokenize", "/extras/tokenize", {"input": long})
        detokenize = ("llama-cpp-python detokenize", "/extras/detokenize", {"tokens": [7592, 2088]})
    elif target == "llama-server":
        tokenize = ("llama-server tokenize", "/tokenize", {"content": long, "with_pieces": i % 2 == 0})
        detokenize = ("llama-server detokenize", "/detokenize", {"tokens": [7592, 2088]})
    else:
        raise ValueError(f"unknown soak target {target!r}: one of {', '.join(TARGETS)}")
    mix: list[tuple[str, str, Any, tuple[int, ...], float | None]] = [
        ("openai short", "/v1/embeddings", {"model": "minilm", "input": [short, _text(i + 1, 6)]}, ok, None),
        ("openai long", "/v1/embeddings", {"model": "minilm", "input": long}, ok, None),
        ("openai one", "/v1/embeddings", {"model": "minilm", "input": _text(i + 2, 20)}, ok, None),
        (*tokenize, ok, None),
        (*detokenize, ok, None),
        ("bad: not json", "/v1/embeddings", b"{not json", CLIENT_ERRORS, None),
        ("bad: empty text", "/v1/embeddings", {"input": ["a", ""]}, (*ok, *CLIENT_ERRORS), None),
        ("bad: wrong type", "/v1/embeddings", {"input": 5}, CLIENT_ERRORS, None),
        ("hang-up", "/v1/embeddings", {"input": [long, _text(i + 5, 400)]}, ok, 0.05),
    ]
    return mix[i % len(mix)]


def mix_size(target: str, reranker: bool) -> int:
    """How many kinds of request ``target``'s mix has."""
    names: list[str] = []
    i = 0
    while True:
        name = requests_mix(i, reranker, target)[0]
        if name in names:
            return len(names)
        names.append(name)
        i += 1


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

    def __init__(self, url: str, pid: int, clients: int, reranker: bool, target: str = "embellama") -> None:
        self.url, self.pid, self.clients, self.reranker, self.target = url, pid, clients, reranker, target
        self.window = Window()
        self.samples: list[dict[str, Any]] = []
        self.sent = 0
        self.answered = 0
        self.statuses: dict[str, int] = {}
        self.stop = False

    def proc(self) -> dict[str, int]:
        """The RSS (KiB), open file descriptors and threads of the server's process tree."""
        return tree_usage(self.pid)

    async def client(self, c: int) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        async with httpx.AsyncClient(base_url=self.url, headers=headers, timeout=120) as http:
            k = 0
            while not self.stop:
                name, path, body, allowed, timeout = requests_mix(c * 131 + k, self.reranker, self.target)
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
            "load1": round(os.getloadavg()[0], 2),
        }
        self.samples.append(row)
        return row

    async def prime(self) -> None:
        """Each request of the mix once, one after another, before the clock starts (the first of each kind
        allocates what that kind keeps: not growth)."""
        import httpx

        headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        async with httpx.AsyncClient(base_url=self.url, headers=headers, timeout=120) as http:
            for i in range(mix_size(self.target, self.reranker)):
                name, path, body, allowed, timeout = requests_mix(i, self.reranker, self.target)
                if timeout is None:
                    content = body if isinstance(body, bytes) else json.dumps(body).encode()
                    try:
                        response = await http.post(path, content=content)
                    except httpx.HTTPError as exc:  # counted against the server, as in the run
                        self.window.errors.append(f"{name} (priming): {type(exc).__name__}")
                        continue
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
                "load1": round(os.getloadavg()[0], 2),
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


def tree_usage(pid: int) -> dict[str, int]:
    """RSS (KiB), open file descriptors and threads of ``pid`` and every process below it (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:  # gone meanwhile
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name, in parentheses, may hold spaces
            parents.setdefault(ppid, []).append(int(entry))
    usage = {"rss_kib": 0, "fds": 0, "threads": 0, "processes": 0}
    todo = [pid]
    while todo:
        p = todo.pop()
        todo += parents.get(p, [])
        try:
            status = Path(f"/proc/{p}/status").read_text()
            fds = len(os.listdir(f"/proc/{p}/fd"))
        except OSError:
            if p == pid:
                raise
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        usage["rss_kib"] += int(fields["VmRSS"].split()[0])
        usage["fds"] += fds
        usage["threads"] += int(fields["Threads"])
        usage["processes"] += 1
    return usage


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_llama_server(given: str | None) -> str | None:
    """A llama-server binary: ``given``, else on PATH, else ``bin/llama-server`` beside embellama's libraries."""
    if given:
        return given
    found = shutil.which("llama-server")
    if found is None and (LIB_DIR / "bin" / "llama-server").is_file():
        found = str(LIB_DIR / "bin" / "llama-server")
    return found


def peer_command(
    target: str,
    model: Path,
    *,
    port: int,
    threads: int,
    lcp_python: str = sys.executable,
    llama_server: str | None = None,
    parallel: int = 8,
) -> list[str]:
    """The command line that starts ``target``'s server on ``model`` (one embedding model, the soak's key)."""
    if target == "llama-cpp-python":
        cmd = [lcp_python, "-m", "llama_cpp.server", "--model", str(model), "--embedding", "true"]
        cmd += ["--n_threads", str(threads), "--n_threads_batch", str(threads), "--n_ctx", "512"]
        cmd += ["--n_batch", "512", "--n_ubatch", "512", "--verbose", "false", "--api_key", KEY]
        return [*cmd, "--host", "127.0.0.1", "--port", str(port)]
    if target == "llama-server":
        if not llama_server:
            raise SystemExit("no llama-server binary: `build_llama.py --with-server` builds one (--llama-server PATH)")
        cmd = [llama_server, "-m", str(model), "--embedding", "--pooling", "mean", "--api-key", KEY]
        cmd += ["-t", str(threads), "-tb", str(threads), "-c", str(512 * parallel), "-b", "512", "-ub", "512"]
        return [*cmd, "--parallel", str(parallel), "--host", "127.0.0.1", "--port", str(port)]
    raise ValueError(f"not a peer: {target!r} (one of {', '.join(TARGETS[1:])})")


def start_peer(cmd: list[str], port: int, lib_path: Path) -> tuple[subprocess.Popen[str], str, list[str]]:
    """A peer's server from ``cmd``, ready when its /v1/models answers 200; (process, url, output lines)."""
    import httpx

    env = dict(os.environ, LLAMA_CPP_LIB_PATH=str(lib_path), PYTHONUNBUFFERED="1")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as embellama serve's default
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    output: list[str] = []
    threading.Thread(target=lambda: output.extend(proc.stdout or ()), daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + "/v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=5).status_code == 200:
                return proc, url, output
        except httpx.HTTPError:
            pass
        time.sleep(1)
    proc.kill()
    raise RuntimeError(f"{cmd[0]} did not start:\n{''.join(output)[-3000:]}")


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


def default_models(with_reranker: bool = True) -> tuple[Path, Path | None]:
    """MiniLM's F16 GGUF from embellama's model cache, and the test suite's BERT cross-encoder when built."""
    cache = Path(os.environ.get("EMBELLAMA_CACHE") or Path.home() / ".cache" / "embellama") / "models"
    found = sorted(cache.glob("all-MiniLM-L6-v2-*.F16.gguf"))
    if not found:
        raise SystemExit(f"no MiniLM F16 GGUF under {cache}: give --model (or run the test suite once)")
    if not with_reranker:
        return found[0], None
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
    target: str = "embellama",
    command: list[str] | None = None,
    port: int | None = None,
    lib_path: Path = LIB_DIR,
) -> dict[str, Any]:
    """Run the soak; the samples, the pass verdict and the run's settings.

    ``target`` a peer (``llama-cpp-python``, ``llama-server``): ``command`` starts its server (listening on
    ``port``, with the soak's API key), which loads the libllama of ``lib_path``; ``reranker`` and
    ``max_pending`` are embellama's alone."""
    if target not in TARGETS:
        raise ValueError(f"unknown soak target {target!r}: one of {', '.join(TARGETS)}")
    if target != "embellama":
        reranker = None
        if command is None or port is None:
            raise ValueError(f"a soak of {target} needs the command that starts its server and its port")
    with tempfile.TemporaryDirectory() as workdir:
        if target == "embellama":
            proc, url, stderr = start_server(model, reranker, threads, max_pending, Path(workdir))
        else:
            assert command is not None and port is not None
            proc, url, stderr = start_peer(command, port, lib_path)
        run = Soak(url, proc.pid, clients, reranker is not None, target)
        exit_status = -1
        try:
            asyncio.run(run.run(seconds, interval, log))
            metrics = _metrics(url) if target == "embellama" else {}
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
                "target": target,
                "command": shlex.join(command) if command else None,
                "load_average": [round(x, 2) for x in os.getloadavg()],
                "seconds": seconds,
                "clients": clients,
                "interval": interval,
                "warmup": warmup,
                "threads": threads,
                "max_pending": max_pending if target == "embellama" else None,
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


def cpu_features() -> str:
    """The CPU's wide-vector and matrix extensions that ggml uses, from /proc/cpuinfo (e.g. "AVX-512, BF16, AMX")."""
    try:
        flags = next(
            set(line.split(":", 1)[1].split())
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("flags")
        )
    except (OSError, StopIteration):
        return ""
    names = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_bf16": "BF16", "amx_tile": "AMX"}
    found = [name for flag, name in names.items() if flag in flags]
    if "AVX-512" in found and "AVX2" in found:
        found.remove("AVX2")
    return ", ".join(found)


TITLES = {
    "embellama": "embellama serve",
    "llama-cpp-python": "llama-cpp-python's server",
    "llama-server": "llama-server",
}


def write_report(result: dict[str, Any], out: Path, stem: str | None = None) -> None:
    """``stem``.json, .md (the table) and .png (the plot) in ``out`` (default stem: ``soak-<target>``)."""
    out.mkdir(parents=True, exist_ok=True)
    s = result["settings"]
    target = s.get("target", "embellama")
    stem = stem or f"soak-{target}"
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    rows = [
        "| t (s) | RSS (MiB) | fds | threads | answered | p50 / p99 ms | refused (429/503) | hang-ups | errors "
        "| load (1 min) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["samples"]:
        lat = f"{r['p50_ms']} / {r['p99_ms']}" if r["p50_ms"] is not None else "-"
        rows.append(
            f"| {r['t']:.0f} | {r['rss_kib'] / 1024:.1f} | {r['fds']} | {r['threads']} | {r['answered']} | {lat} "
            f"| {r['refused']} | {r['hang_ups']} | {r['errors']} | {r.get('load1', '-')} |"
        )
    verdict_line = "PASS" if result["passed"] else "FAIL: " + "; ".join(result["failures"])
    if target == "embellama":
        what = (
            f"{s['model']} and {s['reranker'] or 'no reranker'}, {s['threads']} thread(s) each; "
            f"max_pending {s['max_pending']}"
        )
    else:
        what = f"{s['model']}, {s['threads']} thread(s); `{s['command']}`"
    loads = [r["load1"] for r in result["samples"] if "load1" in r]
    load = f"; load average (1 min) {min(loads):g} to {max(loads):g} over the run" if loads else ""
    text = [
        f"# Soak of {TITLES[target]} ({datetime.date.today().isoformat()})",
        "",
        f"{cpu_name()} ({cpu_features() or 'no AVX2'}), {os.cpu_count()} cores{load}; {what}; {s['clients']} "
        f"clients for {s['seconds'] / 60:.1f} min; a sample every {s['interval']:g} s, warm-up {s['warmup']:g} s.",
        "",
        f"**{verdict_line}.** RSS after the warm-up {result['rss_base_kib'] / 1024:.1f} MiB, at the end "
        f"{result['rss_last_kib'] / 1024:.1f} MiB ({100 * result['rss_growth_after_warmup']:+.2f} %; the rule: "
        f"under +{100 * MAX_RSS_GROWTH:.0f} %). Requests sent {result['requests_sent']}, answered "
        f"{result['requests_answered']} (hang-ups included); statuses {result['statuses']}; exit status "
        f"{result['exit_status']} on SIGTERM.",
        "",
        *([s["note"], ""] if s.get("note") else []),
        *rows,
        "",
        (
            "Traffic: every API (OpenAI, TEI, Ollama, llama-server, Jina's rerank), short and ~400-word texts, bad "
            "requests (each must get its 4xx), clients hanging up after 50 ms"
            if target == "embellama"
            else "Traffic: the routes this server speaks (OpenAI's /v1/embeddings with short and ~400-word texts, "
            "its tokenize and detokenize), bad requests (not JSON and a wrong type must get a 4xx; an empty text "
            "may be embedded), clients hanging up after 50 ms; RSS, fds and threads of its process tree"
        )
        + f"; `python benchmarks/soak_serve.py --target {target} --minutes {s['seconds'] / 60:g} "
        f"--clients {s['clients']} --threads {s['threads']}`.",
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
    fig.suptitle(f"{TITLES[target]} soak: {s['clients']} clients, {'PASS' if result['passed'] else 'FAIL'}")
    fig.tight_layout()
    fig.savefig(out / f"{stem}.png", dpi=90)
    plt.close(fig)


def peer_settings(args: argparse.Namespace, model: Path) -> tuple[list[str] | None, int | None]:
    """A peer's command line and port from the parsed options: (None, None) for embellama serve."""
    if args.target == "embellama":
        return None, None
    port = args.port or _free_port()
    if args.command:
        return shlex.split(args.command.format(model=model, port=port, threads=args.threads, key=KEY)), port
    llama_server = find_llama_server(args.llama_server) if args.target == "llama-server" else None
    cmd = peer_command(
        args.target,
        model,
        port=port,
        threads=args.threads,
        lcp_python=args.lcp_python,
        llama_server=llama_server,
        parallel=args.parallel,
    )
    return cmd, port


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line's options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, help="seconds before the RSS baseline (default: a tenth of the run)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-pending", type=int, default=48, help="embellama serve's --max-pending")
    parser.add_argument("--model", type=Path, help="embedding GGUF (default: MiniLM F16 from the model cache)")
    parser.add_argument("--reranker", type=Path, help="reranker GGUF (default: the test suite's BERT, if built)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--target", choices=TARGETS, default="embellama", help="whose server to soak")
    parser.add_argument("--port", type=int, help="a peer's port (default: a free one)")
    parser.add_argument(
        "--command",
        help="the command that starts a peer's server, with {model}, {port}, {threads} and {key} filled in "
        "(default: built from the options below)",
    )
    parser.add_argument(
        "--lcp-python",
        default=sys.executable,
        help="a Python with llama-cpp-python[server] (--target llama-cpp-python)",
    )
    parser.add_argument("--llama-server", help="llama-server binary (default: on PATH, else beside the libraries)")
    parser.add_argument("--lib-path", type=Path, default=LIB_DIR, help="the libllama folder a peer loads")
    parser.add_argument("--parallel", type=int, default=8, help="llama-server --parallel slots")
    parser.add_argument("--note", help="a paragraph for the report (the machine, the build, what else ran)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model, reranker = default_models(args.target == "embellama") if args.model is None else (args.model, None)
    if args.reranker is not None:
        reranker = args.reranker
    command, port = peer_settings(args, model)
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
        target=args.target,
        command=command,
        port=port,
        lib_path=args.lib_path,
    )
    if args.note:
        result["settings"]["note"] = args.note
    write_report(result, args.out)
    print("PASS" if result["passed"] else "FAIL: " + "; ".join(result["failures"]))
    print(f"wrote {args.out}/soak-{args.target}.{{json,md,png}}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
