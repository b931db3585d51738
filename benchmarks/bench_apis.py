# SPDX-License-Identifier: Apache-2.0
"""Requests/s of each API's route on ``embellama serve`` at 1, 8 and 64 clients, beside OpenAI's /v1/embeddings.

    python benchmarks/bench_apis.py                        # -> benchmarks/results/apis.{json,md}
    python benchmarks/bench_apis.py --seconds 5 --clients 1 8

One server (a child process: MiniLM F16, and the test suite's BERT cross-encoder when built), ``--threads``
threads per model. For each route and client count, that many asyncio clients on keep-alive connections post one
short sentence per request (rerank: a query and 5 short documents) for ``--seconds``; requests/s and p50/p99 of
the answered requests, and each route's ratio to /v1/embeddings at the same count. Routes are measured in turn,
the order rotated per client count.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from soak_serve import KEY, RESULTS, _text, cpu_name, default_models, start_server

ROUTES: list[tuple[str, str, Any]] = [
    ("OpenAI /v1/embeddings", "/v1/embeddings", lambda i: {"model": "minilm", "input": _text(i, 12)}),
    ("TEI /embed", "/embed", lambda i: {"inputs": _text(i, 12)}),
    ("TEI POST / (InferenceClient)", "/", lambda i: {"inputs": _text(i, 12)}),
    ("TEI /embed_all", "/embed_all", lambda i: {"inputs": _text(i, 12)}),
    ("Ollama /api/embed", "/api/embed", lambda i: {"model": "minilm", "input": _text(i, 12)}),
    ("Ollama /api/embeddings", "/api/embeddings", lambda i: {"model": "minilm", "prompt": _text(i, 12)}),
    ("TEI /tokenize", "/tokenize", lambda i: {"inputs": _text(i, 12)}),
    ("llama-server /tokenize", "/tokenize", lambda i: {"content": _text(i, 12)}),
]
RERANK_ROUTES: list[tuple[str, str, Any]] = [
    ("Jina /v1/rerank", "/v1/rerank", lambda i: {"model": "bert", "query": _text(i, 8), "documents": _docs(i)}),
    ("TEI /rerank", "/rerank", lambda i: {"model": "bert", "query": _text(i, 8), "texts": _docs(i)}),
]


def _docs(i: int) -> list[str]:
    return [_text(i + k, 12) for k in range(5)]


async def measure(url: str, path: str, body: Any, clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` keep-alive clients posting ``body(i)`` to ``path`` for ``seconds``."""
    import httpx

    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds

    async def client(c: int) -> None:
        nonlocal errors
        headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as http:
            k = 0
            while time.monotonic() < deadline:
                content = json.dumps(body(c * 1000 + k)).encode()
                k += 1
                started = time.perf_counter()
                response = await http.post(path, content=content)
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1

    started = time.monotonic()
    await asyncio.gather(*(client(c) for c in range(clients)))
    took = time.monotonic() - started
    lat = sorted(latencies)
    return {
        "requests_per_s": round(len(lat) / took, 1),
        "p50_ms": round(1000 * lat[len(lat) // 2], 1) if lat else None,
        "p99_ms": round(1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))], 1) if lat else None,
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per route and client count")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    model, reranker = default_models()
    routes = ROUTES + (RERANK_ROUTES if reranker is not None else [])
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as workdir:
        proc, url, _ = start_server(model, reranker, args.threads, 4096, Path(workdir))
        try:
            for n, clients in enumerate(args.clients):
                turn = routes[n % len(routes) :] + routes[: n % len(routes)]
                for name, path, body in turn:
                    asyncio.run(measure(url, path, body, 1, 0.5))  # warm the route
                    row = {
                        "route": name,
                        "clients": clients,
                        **asyncio.run(measure(url, path, body, clients, args.seconds)),
                    }
                    print(row, flush=True)
                    results.append(row)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    base = {r["clients"]: r["requests_per_s"] for r in results if r["route"] == "OpenAI /v1/embeddings"}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "apis.json").write_text(json.dumps({"results": results, "threads": args.threads}, indent=1) + "\n")
    lines = [
        f"# Requests/s per API route ({datetime.date.today().isoformat()})",
        "",
        f"{cpu_name()}, {os.cpu_count()} cores; {model.name}"
        + (f" and {reranker.name}" if reranker else "")
        + f", {args.threads} thread(s) each; one short sentence per request (rerank: a query and 5 documents); "
        f"{args.seconds:g} s per route and client count.",
        "",
        "| route | "
        + " | ".join(f"{c} client{'s' if c > 1 else ''}: req/s (× /v1/embeddings), p50 / p99 ms" for c in args.clients)
        + " |",
        "|---|" + "---|" * len(args.clients),
    ]
    for name, _, _ in routes:
        cells = []
        for c in args.clients:
            r = next(x for x in results if x["route"] == name and x["clients"] == c)
            ratio = (
                f" ({r['requests_per_s'] / base[c]:.2f}×)"
                if base.get(c) and not name.startswith(("Jina", "TEI /rerank"))
                else ""
            )
            cells.append(
                f"{r['requests_per_s']}{ratio}, {r['p50_ms']} / {r['p99_ms']}"
                + (f", {r['errors']} errors" if r["errors"] else "")
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"`python benchmarks/bench_apis.py --seconds {args.seconds:g} --clients {' '.join(map(str, args.clients))}`",
        "",
    ]
    (args.out / "apis.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
