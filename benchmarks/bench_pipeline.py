# SPDX-License-Identifier: Apache-2.0
"""The batch pipeline's own figures: packing, tokenization, overlap and streaming memory.

    python benchmarks/bench_pipeline.py [--rounds 3] [--threads 2] [--stream 10000,100000] [--out FILE]

All in one run, each figure a ratio against the shipped pipeline:

* **packing**: ``embed_batch`` (texts packed longest first) against the same pipeline
  packing texts in input order (the pre-pipeline behaviour) and against a loop of ``embed``;
* **tokenization**: the corpus tokenized serially against a thread pool (llama_tokenize
  runs without the GIL), and tokenization's share of ``embed_batch``;
* **overlap**: ``embed_iter`` (chunk k+1 tokenized on a second thread while chunk k runs)
  against the same chunks tokenized and run one after the other;
* **streaming memory**: peak RSS of ``embed_iter`` over 10,000 and 100,000 texts, each in a
  fresh process, beside ``embed_batch`` holding all 10,000 results.

Corpus: the STS Benchmark test sentences (``../shared``) as in bench_throughput.py.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from bench_throughput import corpus, peak_rss_mb


def _load(model_path: str, threads: int) -> Any:
    from embellama import EmbeddingModel, ModelConfig

    return EmbeddingModel(ModelConfig(model_path=model_path, n_threads=threads)).load()


def _in_order(lengths: np.ndarray, budget: int, max_seqs: int) -> list[np.ndarray]:
    """Input-order packing: the same limits as pack_by_length, without the sort."""
    groups, start, used = [], 0, 0
    for i, n in enumerate(lengths.tolist()):
        if i > start and (used + n > budget or i - start >= max_seqs):
            groups.append(np.arange(start, i))
            start, used = i, 0
        used += n
    groups.append(np.arange(start, len(lengths)))
    return groups


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def packing(model: Any, texts: list[str], rounds: int) -> dict[str, Any]:
    """Length-packed embed_batch vs in-order packing vs a loop of embed, interleaved rounds."""
    from embellama._compute import packing as _batch

    shipped = _batch.pack_by_length

    def in_order() -> None:
        _batch.pack_by_length = _in_order  # type: ignore[assignment]
        try:
            model.embed_batch(texts, show_progress_bar=False)
        finally:
            _batch.pack_by_length = shipped

    runs: dict[str, list[float]] = {"embed_batch (length-packed)": [], "in-order packing": [], "loop of embed": []}
    for _ in range(rounds):
        runs["embed_batch (length-packed)"].append(_timed(lambda: model.embed_batch(texts, show_progress_bar=False)))
        runs["in-order packing"].append(_timed(in_order))
        runs["loop of embed"].append(_timed(lambda: [model.embed(t) for t in texts]))
    packed = model.embed_batch(texts, show_progress_bar=False)
    _batch.pack_by_length = _in_order  # type: ignore[assignment]
    try:
        ordered = model.embed_batch(texts, show_progress_bar=False)
    finally:
        _batch.pack_by_length = shipped
    return {
        "texts_per_s": {k: len(texts) / statistics.median(v) for k, v in runs.items()},
        "min_cos_packed_vs_in_order": float(np.min(np.sum(packed * ordered, axis=1))),
    }


def tokenization(model: Any, texts: list[str], rounds: int, workers: int) -> dict[str, Any]:
    """Serial tokenization vs a thread pool over chunks; and its share of embed_batch."""
    low, name = model.model, model.name

    def serial() -> None:
        for t in texts:
            model._tokenize(low, t, None, True)

    def pooled() -> None:
        step = max(1, len(texts) // (workers * 8))
        chunks = [texts[i : i + step] for i in range(0, len(texts), step)]
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda c: [model._tokenize(low, t, None, True) for t in c], chunks))

    s = [_timed(serial) for _ in range(rounds)]
    p = [_timed(pooled) for _ in range(rounds)]
    e = [_timed(lambda: model.embed_batch(texts, show_progress_bar=False)) for _ in range(rounds)]
    return {
        "model": name,
        "serial_s": statistics.median(s),
        f"pool{workers}_s": statistics.median(p),
        "pool_speedup": statistics.median(s) / statistics.median(p),
        "embed_batch_s": statistics.median(e),
        "tokenize_share": statistics.median(s) / statistics.median(e),
    }


def _serial_iter(model: Any, texts: list[str], chunk: int) -> Iterator[np.ndarray]:
    """embed_iter without its overlap: each chunk tokenized, then run, on the calling thread."""
    from embellama._compute import packing as _batch

    for i in range(0, len(texts), chunk):
        tokens = model._tokens(texts[i : i + chunk], i, 1)
        yield model._infer(tokens, None, model._norm, _batch.Progress(len(tokens), model.name, False))


def overlap(model: Any, texts: list[str], rounds: int, chunk: int) -> dict[str, Any]:
    """embed_iter (chunk k+1 tokenized on a second thread while chunk k runs) against the serial loop."""
    shipped, serial = [], []
    for _ in range(rounds):
        shipped.append(_timed(lambda: list(model.embed_iter(texts, chunk_size=chunk, show_progress_bar=False))))
        serial.append(_timed(lambda: list(_serial_iter(model, texts, chunk))))
    a = np.concatenate(list(model.embed_iter(texts, chunk_size=chunk, show_progress_bar=False)))
    b = np.concatenate(list(_serial_iter(model, texts, chunk)))
    return {
        "chunk_size": chunk,
        "embed_iter_s": statistics.median(shipped),
        "serial_s": statistics.median(serial),
        "overlap_speedup": statistics.median(serial) / statistics.median(shipped),
        "max_abs_diff": float(np.max(np.abs(a - b))),
    }


def stream_worker(model_path: str, threads: int, n: int, mode: str) -> dict[str, Any]:
    """One fresh process: embed n texts (the corpus cycled) and report the peak RSS."""
    _, base = corpus(None)
    model = _load(model_path, threads)
    before = peak_rss_mb()
    texts = itertools.islice(itertools.cycle(base), n)
    t0 = time.perf_counter()
    rows = 0
    if mode == "embed_iter":
        for block in model.embed_iter(texts, chunk_size=1024, show_progress_bar=False):
            rows += len(block)
    else:
        rows = len(model.embed_batch(list(texts), show_progress_bar=False))
    return {
        "n": rows,
        "mode": mode,
        "rss_after_load_mb": before,
        "peak_rss_mb": peak_rss_mb(),
        "seconds": time.perf_counter() - t0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--model", help="GGUF model (default: the F16 test model)")
    parser.add_argument("--stream", default="10000,100000", help="text counts for the streaming RSS runs ('' skips)")
    parser.add_argument("--only", help="comma-separated subset of packing,tokenization,overlap,stream")
    parser.add_argument("--out", type=Path, help="write the JSON here too")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.model is None:
        from tests.support.make_model import ensure_models

        args.model = str(ensure_models(verbose=False)["f16"])
    if args.worker:
        print(json.dumps(stream_worker(args.model, args.threads, int(args.worker[0]), args.worker[1])))
        return 0

    only = set((args.only or "packing,tokenization,overlap,stream").split(","))
    name, texts = corpus(None)
    report: dict[str, Any] = {"corpus": f"{len(texts)} {name}", "threads": args.threads, "model": Path(args.model).name}
    if only & {"packing", "tokenization", "overlap"}:
        model = _load(args.model, args.threads)
        model.embed_batch(texts[:64], show_progress_bar=False)  # warm
        if "packing" in only:
            report["packing"] = packing(model, texts, args.rounds)
            print(json.dumps(report["packing"]), file=sys.stderr, flush=True)
        if "tokenization" in only:
            report["tokenization"] = tokenization(model, texts, args.rounds, workers=2)
            print(json.dumps(report["tokenization"]), file=sys.stderr, flush=True)
        if "overlap" in only:
            report["overlap"] = overlap(model, texts, args.rounds, chunk=256)
            print(json.dumps(report["overlap"]), file=sys.stderr, flush=True)
        model.unload()
    if "stream" in only and args.stream:
        runs = [(int(n), "embed_iter") for n in args.stream.split(",")]
        runs.append((int(args.stream.split(",")[0]), "embed_batch"))
        report["stream"] = []
        for n, mode in runs:
            cmd = [sys.executable, __file__, "--model", args.model, "--threads", str(args.threads)]
            proc = subprocess.run([*cmd, "--worker", str(n), mode], capture_output=True, text=True, check=True)
            report["stream"].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(json.dumps(report["stream"][-1]), file=sys.stderr, flush=True)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
