# SPDX-License-Identifier: Apache-2.0
"""Throughput and memory of embellama beside its peers, in one run, reported as ratios.

    python benchmarks/bench_throughput.py [--rounds 3] [--limit N] [--out FILE]

Each configuration runs in its own process (so peak RSS is its own), rounds are
interleaved, and the table gives medians and the ratio to embellama. Peers measured:
llama.cpp's ``llama-embedding`` from the same build (``build_llama.py --with-tools``)
and sentence-transformers on the same weights, when installed.

Corpus: the 2,758 STS Benchmark test sentences from ../shared (or ``$EMBELLAMA_STS_FILE``)
when present, else generated sentences of similar length.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STS = Path(os.environ.get("EMBELLAMA_STS_FILE") or REPO.parent / "shared" / "data" / "stsbenchmark" / "sts-test.csv")
sys.path.insert(0, str(REPO))  # run as a script from anywhere: the repository root holds tests.support


def corpus(limit: int | None) -> tuple[str, list[str]]:
    if STS.is_file():
        with open(STS, encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        texts = [r[5] for r in rows] + [r[6] for r in rows]
        name = "STS-B test sentences"
    else:
        from tests.support.texts import generated

        texts = [t for t in generated(2758, seed=7) if len(t.split()) <= 35]
        name = "generated sentences"
    return name, texts[:limit] if limit else texts


def _hwm_mb(pid: int | str = "self") -> float | None:
    """VmHWM (peak RSS of this process image) from /proc; ru_maxrss would include the parent's."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def peak_rss_mb() -> float:
    return _hwm_mb() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- workers: each runs in its own process and prints one JSON line -------------------


def worker_embellama(model: str, texts: list[str], threads: int) -> dict[str, float]:
    t0 = time.perf_counter()
    from embellama import EmbeddingModel, ModelConfig

    layers = int(os.environ.get("EMBELLAMA_GPU_LAYERS", "-1"))
    m = EmbeddingModel(ModelConfig(model_path=model, n_threads=threads, n_gpu_layers=layers)).load()
    t1 = time.perf_counter()
    m.embed_batch(texts, show_progress_bar=False)
    t2 = time.perf_counter()
    return {"load_s": t1 - t0, "embed_s": t2 - t1, "rss_mb": peak_rss_mb()}


def worker_st(model: str, texts: list[str], threads: int) -> dict[str, float]:
    t0 = time.perf_counter()
    import torch
    from sentence_transformers import SentenceTransformer

    from tests.support.make_model import hf_model_dir

    torch.set_num_threads(threads)
    st = SentenceTransformer(str(hf_model_dir()), device="cpu")
    t1 = time.perf_counter()
    st.encode(texts, batch_size=64, normalize_embeddings=True)
    t2 = time.perf_counter()
    return {"load_s": t1 - t0, "embed_s": t2 - t1, "rss_mb": peak_rss_mb()}


def run_cli(binary: Path, model: str, texts: list[str], threads: int) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        f.write("\n".join(texts))
        prompt_file = f.name
    cmd = [str(binary), "-m", model, "-f", prompt_file, "-c", "512", "-b", "512", "-ub", "512", "-t", str(threads)]
    cmd += ["--embd-output-format", "array", "--embd-normalize", "2", "--log-disable"]
    cmd += ["-ngl", os.environ.get("EMBELLAMA_GPU_LAYERS", "-1")]
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        peak = 0.0
        while proc.poll() is None:  # sample the child's own high-water mark until it exits
            peak = max(peak, _hwm_mb(proc.pid) or 0.0)
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    os.unlink(prompt_file)
    if proc.returncode != 0:
        raise RuntimeError(f"llama-embedding failed: {stderr[-2000:]}")
    return {"wall_s": wall, "rss_mb": peak}


WORKERS = {"embellama": worker_embellama, "sentence-transformers": worker_st}


def spawn(name: str, model: str, texts_file: str, threads: int) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--worker", name, "--model", model, "--texts", texts_file]
    cmd += ["--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit", type=int, help="use only the first N texts")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--model", help="GGUF model (default: the F16 test model)")
    parser.add_argument("--backend", default="cpu", help="which build of embellama/_lib/ to measure (cpu, cuda, ...)")
    parser.add_argument("--gpu-layers", type=int, default=-1, help="layers to offload in GPU builds (-1: all)")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--texts", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        texts = json.loads(Path(args.texts).read_text(encoding="utf-8"))
        print(json.dumps(WORKERS[args.worker](args.model, texts, args.threads)))
        return 0

    from tests.support.make_model import ensure_models

    model = args.model or str(ensure_models(verbose=False)["f16"])
    corpus_name, texts = corpus(args.limit)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as f:
        json.dump(texts, f)
        texts_file = f.name

    names = ["embellama"]
    os.environ["EMBELLAMA_BACKEND"] = args.backend  # inherited by the worker processes
    os.environ["EMBELLAMA_GPU_LAYERS"] = str(args.gpu_layers)
    cli = REPO / "embellama" / "_lib" / args.backend / "bin" / "llama-embedding"
    if cli.is_file():
        names.append("llama-embedding")
    try:
        import sentence_transformers  # noqa: F401

        from tests.support.make_model import hf_model_dir

        if (hf_model_dir() / "model.safetensors").is_file():  # an offline bundle carries no weights
            names.append("sentence-transformers")
    except (ImportError, RuntimeError):
        pass

    results: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for r in range(args.rounds):
        for name in names:
            print(f"round {r + 1}/{args.rounds}: {name} ...", file=sys.stderr, flush=True)
            if name == "llama-embedding":
                full = run_cli(cli, model, texts, args.threads)
                fixed = run_cli(cli, model, texts[:1], args.threads)
                full["embed_s"] = full["wall_s"] - fixed["wall_s"]  # without start-up and load
                results[name].append(full)
            else:
                results[name].append(spawn(name, model, texts_file, args.threads))
    os.unlink(texts_file)

    base = statistics.median(x["embed_s"] for x in results["embellama"])
    lines = [
        f"Corpus: {len(texts)} {corpus_name}; model {Path(model).name}; {args.backend} build; {args.threads} threads; "
        f"{args.rounds} rounds, medians; {platform.machine()} {os.cpu_count()} CPUs.",
        "",
        "| tool | texts/s | speed vs embellama | peak RSS MB | load s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in names:
        embed_s = statistics.median(x["embed_s"] for x in results[name])
        rss = statistics.median(x["rss_mb"] for x in results[name])
        load = statistics.median(x.get("load_s", float("nan")) for x in results[name])
        load_text = "n/a (CLI)" if load != load else f"{load:.2f}"
        lines.append(f"| {name} | {len(texts) / embed_s:.1f} | {base / embed_s:.2f} | {rss:.0f} | {load_text} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
