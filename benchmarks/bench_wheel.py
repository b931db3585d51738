# SPDX-License-Identifier: Apache-2.0
"""The wheel's portable libllama against the native (-march=native) build, on the same machine, in one run.

    python benchmarks/bench_wheel.py --wheel .whl/wheelhouse/embellama-*.whl [--rounds 3]

The wheel's ``embellama/_lib/cpu`` (every CPU variant; ggml loads the best for this CPU) is
unpacked into a temporary folder; the native build is the checkout's ``embellama/_lib/cpu``
(``python build_llama.py``). Each (build, corpus, round) runs in a fresh process, interleaved, with
the same model, threads and ``embed_batch``; the figure is texts/s of the embedding call alone
(median over rounds), and the ratio wheel/native. Writes ``benchmarks/results/wheel.json``.
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
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from bench import make_passages, read_sts  # noqa: E402

WORKER = r"""
import json, sys, time
import embellama
texts = json.load(open(sys.argv[2], encoding="utf-8"))
config = embellama.ModelConfig(model_path=sys.argv[1], n_threads=int(sys.argv[3]), max_tokens=int(sys.argv[4]))
with embellama.EmbeddingModel(config) as model:
    model.embed_batch(texts[:64], show_progress_bar=False)  # warm-up: pages, thread pool
    start = time.perf_counter()
    model.embed_batch(texts, show_progress_bar=False)
    seconds = time.perf_counter() - start
lib = embellama.get_library()
print(json.dumps({"seconds": seconds, "variant": lib.cpu_variant, "library": str(lib.path)}))
"""


def run(lib_dir: Path, model: Path, texts_file: Path, threads: int, max_tokens: int) -> dict[str, object]:
    env = {**os.environ, "EMBELLAMA_LIB": str(lib_dir), "EMBELLAMA_BACKEND": "cpu"}
    command = [sys.executable, "-c", WORKER, str(model), str(texts_file), str(threads), str(max_tokens)]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheel", type=Path, required=True, help="the embellama wheel")
    parser.add_argument("--native", type=Path, default=REPO / "embellama" / "_lib" / "cpu", help="native build folder")
    parser.add_argument("--model", type=Path, help="GGUF (default: the test suite's MiniLM F16)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "wheel.json")
    args = parser.parse_args(argv)
    if args.model is None:
        sys.path.insert(0, str(REPO))
        from tests.support import make_model

        args.model = make_model.ensure_models()["f16"]
    sentences, _ = read_sts()
    corpora = {"short": (sentences, 256), "long": (make_passages(sentences), 512)}
    with tempfile.TemporaryDirectory(prefix="bench-wheel-") as tmp:
        wheel_lib = Path(tmp) / "wheel"
        with zipfile.ZipFile(args.wheel) as zf:
            for name in zf.namelist():
                if name.startswith("embellama/_lib/cpu/") and not name.endswith("/"):
                    target = wheel_lib / name.rsplit("/", 1)[1]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(zf.read(name))
        builds = {"native": args.native, "wheel": wheel_lib}
        files = {}
        for corpus, (texts, _) in corpora.items():
            files[corpus] = Path(tmp) / f"{corpus}.json"
            files[corpus].write_text(json.dumps(texts), encoding="utf-8")
        runs: dict[str, dict[str, list[float]]] = {b: {c: [] for c in corpora} for b in builds}
        variant = None
        for round_no in range(args.rounds):
            for corpus, (texts, max_tokens) in corpora.items():
                order = list(builds) if round_no % 2 == 0 else list(reversed(builds))
                for build in order:
                    result = run(builds[build], args.model, files[corpus], args.threads, max_tokens)
                    if build == "wheel":
                        variant = result["variant"]
                    rate = len(texts) / float(result["seconds"])  # type: ignore[arg-type]
                    runs[build][corpus].append(rate)
                    print(f"round {round_no + 1} {corpus:<5} {build:<6} {rate:8.1f} texts/s", flush=True)
    report = {
        "machine": {"cpu": _cpu_name(), "machine": platform.machine(), "threads": args.threads},
        "wheel": args.wheel.name,
        "wheel_size_mb": round(args.wheel.stat().st_size / 2**20, 1),
        "variant": variant,
        "rounds": args.rounds,
        "texts_s": {b: {c: round(statistics.median(v), 2) for c, v in r.items()} for b, r in runs.items()},
        "runs": runs,
    }
    report["ratio_wheel_over_native"] = {
        c: round(report["texts_s"]["wheel"][c] / report["texts_s"]["native"][c], 3) for c in corpora
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: report[k] for k in ("variant", "wheel_size_mb", "texts_s", "ratio_wheel_over_native")}))
    return 0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    raise SystemExit(main())
