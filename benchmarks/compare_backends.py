# SPDX-License-Identifier: Apache-2.0
"""Do two or more libllama builds give the same embeddings, and how fast is each?

    python benchmarks/compare_backends.py cpu cuda [--min-cos 0.999] [--limit N] [--out FILE]

Each argument is a backend built by ``build_llama.py`` (``embellama/_lib/<backend>``) or
the path of a libllama file or folder. Every build runs in its own process (two
libllama copies cannot share one), embeds the same corpus (the STS Benchmark test
sentences from ../shared when present, else generated sentences), and the first
build is the reference: the table gives each build's speed as a ratio to it and the
cosine of its embeddings to the reference's. The exit status is 1 when a minimum
cosine falls below ``--min-cos``, so nox and CI can use it as a check.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# A sibling (the script's folder is on sys.path); it puts the repository root there too, for tests.support.
from bench_throughput import REPO, corpus


def _worker(args: argparse.Namespace) -> None:
    """Child process: load one build, embed the corpus, save the vectors, print timings as JSON."""
    texts = json.loads(Path(args.texts).read_text(encoding="utf-8"))
    t0 = time.perf_counter()
    from embellama import EmbeddingModel, ModelConfig, get_library

    cfg = ModelConfig(model_path=args.model, n_threads=args.threads, n_gpu_layers=args.gpu_layers)
    model = EmbeddingModel(cfg).load()
    lib = get_library()
    load_s = time.perf_counter() - t0
    model.embed_batch(texts[:16])  # warm-up: first-call set-up (GPU kernels, graphs) is not throughput
    t1 = time.perf_counter()
    vectors = model.embed_batch(texts)
    embed_s = time.perf_counter() - t1
    np.save(args.save, vectors)
    devices = [d["name"] for d in lib.devices()]
    info = {"backend": lib.backend, "path": str(lib.path), "devices": devices, "load_s": load_s, "embed_s": embed_s}
    print(json.dumps(info))


def _run_build(build: str, args: argparse.Namespace, texts_file: Path, save: Path) -> dict[str, object]:
    env = dict(os.environ)
    if os.path.exists(build):
        env["EMBELLAMA_LIB"] = build
        env.pop("EMBELLAMA_BACKEND", None)
    else:
        env["EMBELLAMA_BACKEND"] = build
        env["EMBELLAMA_LIB"] = ""
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    cmd = [sys.executable, __file__, "--worker", "--texts", str(texts_file), "--save", str(save)]
    cmd += ["--model", args.model, "--threads", str(args.threads), "--gpu-layers", str(args.gpu_layers)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"build {build!r} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def compare(args: argparse.Namespace) -> dict[str, object]:
    """Run every build and return the report (also written as markdown and JSON)."""
    name, texts = corpus(args.limit)
    runs: list[list[dict[str, object]]] = [[] for _ in args.builds]
    with tempfile.TemporaryDirectory() as tmp:
        texts_file = Path(tmp) / "texts.json"
        texts_file.write_text(json.dumps(texts), encoding="utf-8")
        for r in range(args.rounds):  # rounds interleave the builds, so machine noise hits all alike
            for i, build in enumerate(args.builds):
                print(f"round {r + 1}/{args.rounds}: {build} ({len(texts)} texts)", file=sys.stderr, flush=True)
                runs[i].append(_run_build(build, args, texts_file, Path(tmp) / f"{i}.npy"))
        vectors = [np.load(Path(tmp) / f"{i}.npy") for i in range(len(args.builds))]
    rows: list[dict[str, object]] = []
    ref = vectors[0]
    for build, results, vec in zip(args.builds, runs, vectors, strict=True):
        cos = np.sum(ref * vec, axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(vec, axis=1))
        row = {**results[-1], "build": build, "cos_min": float(cos.min()), "cos_mean": float(cos.mean())}
        row["load_s"] = statistics.median(float(x["load_s"]) for x in results)  # type: ignore[arg-type]
        row["texts_per_s"] = len(texts) / statistics.median(float(x["embed_s"]) for x in results)  # type: ignore[arg-type]
        rows.append(row)
    base = float(rows[0]["texts_per_s"])  # type: ignore[arg-type]
    for row in rows:
        row["speed_ratio"] = float(row["texts_per_s"]) / base  # type: ignore[arg-type]
    report = {
        "corpus": name,
        "n_texts": len(texts),
        "model": Path(args.model).name,
        "threads": args.threads,
        "rounds": args.rounds,
        "gpu_layers": args.gpu_layers,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "min_cos": args.min_cos,
        "rows": rows,
        "ok": all(float(r["cos_min"]) >= args.min_cos for r in rows),  # type: ignore[arg-type]
    }
    return report


def markdown(report: dict[str, object]) -> str:
    lines = [
        f"# Backends compared: {report['corpus']} ({report['n_texts']} texts), {report['model']}",
        "",
        f"Machine: {report['machine']}; n_threads {report['threads']}, n_gpu_layers {report['gpu_layers']}. "
        f"Speed: median of {report['rounds']} interleaved rounds, each a fresh process timed after a warm-up, "
        "as a ratio to the first build; "
        "cosine is to the first build's vectors.",
        "",
        "| build | backend | devices | texts/s | speed vs first | load s | min cos | mean cos |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["rows"]:  # type: ignore[attr-defined]
        lines.append(
            f"| {r['build']} | {r['backend']} | {', '.join(r['devices'])} | {r['texts_per_s']:.0f} | "
            f"{r['speed_ratio']:.2f} | {r['load_s']:.2f} | {r['cos_min']:.8f} | {r['cos_mean']:.8f} |"
        )
    verdict = "all at or above" if report["ok"] else "BELOW"
    lines += ["", f"Minimum cosine {verdict} the threshold {report['min_cos']}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("builds", nargs="*", help="backends (cpu, cuda, ...) or libllama paths; first: reference")
    parser.add_argument("--model", help="GGUF model (default: the test MiniLM F16 from tests/support/make_model.py)")
    parser.add_argument("--limit", type=int, help="use only the first N texts")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--gpu-layers", type=int, default=-1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-cos", type=float, default=0.999)
    parser.add_argument("--out", help="also write the markdown table here (and JSON beside it)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--texts", help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args)
        return 0
    if len(args.builds) < 2:
        parser.error("name at least two builds, e.g. cpu cuda")
    if args.model is None:
        from tests.support.make_model import ensure_models

        args.model = str(ensure_models(verbose=False)["f16"])
    report = compare(args)
    text = markdown(report)
    print(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        Path(args.out).with_suffix(".json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
