# SPDX-License-Identifier: Apache-2.0
"""Where embed_batch's time goes inside llama.cpp: ``perf`` samples grouped by ggml op and kernel.

    nox -s profile                                   # short corpus, the defaults
    python benchmarks/bench_profile.py --corpus long --layout length --out benchmarks/results/profile-long-length.md

One process loads all-MiniLM-L6-v2 F16 (the test model), warms up, then embeds one corpus under
``perf record`` (cpu-clock samples at 499 Hz of every thread, no call graphs). Samples are grouped by symbol
into the parts the issue names: tinyBLAS/ggml matrix products, the flash-attention tiles, GELU, norms,
barriers and waits, type conversions, and the rest; the table gives each group's share and its top symbols.
``--layout length`` runs the packing embellama used before calls were laid out by attention tiles.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import quiet  # noqa: E402

WAITS = "barriers and waits"
GROUPS = (  # (group, pattern on the symbol), first match wins
    ("matrix products (tinyBLAS, ggml mul_mat)", r"tinyBLAS|gemm|mul_mat|vec_dot|sgemm|amx"),
    ("flash attention (tiles, softmax)", r"flash_attn|soft_max|simd_gemm"),
    ("GELU and other unary ops", r"unary|gelu|silu"),
    ("norms", r"norm"),
    (WAITS, r"barrier|gomp|sched_yield|futex|pthread|omp_|spin|graph_compute_thread"),
    ("conversions and copies (K/V casts, F32->F16)", r"fp32_to_fp16|fp16_to_fp32|bf16|dup|cpy|mem(cpy|move|set)|cont"),
    ("adds, scales, other elementwise", r"add|mul|scale|get_rows"),
    ("Python and numpy", r"_PyEval|Py[A-Z_]|numpy|_multiarray|libpython"),
)

WORKLOAD = """
import sys, time
sys.path[:0] = {paths!r}
from bench import make_passages, read_sts
from embellama import EmbeddingModel, ModelConfig
from embellama._compute.packing import TileLayout
from tests.support.make_model import ensure_models
sentences, _ = read_sts()
texts = sentences if {corpus!r} == "short" else make_passages(sentences)
model = EmbeddingModel(ModelConfig(model_path=ensure_models(verbose=False)["f16"], n_threads={threads})).load()
if {layout!r} == "length":
    model._layout = None
model.embed_batch(texts[:64])
open({ready!r}, "w").close()
started = time.perf_counter()
model.embed_batch(texts)
print(f"{{len(texts) / (time.perf_counter() - started):.1f}} texts/s", flush=True)
"""


def group_of(symbol: str) -> str:
    for name, pattern in GROUPS:
        if re.search(pattern, symbol, flags=re.IGNORECASE):
            return name
    return "other"


def parse_report(text: str) -> list[tuple[float, str, str]]:
    """(share %, shared object, symbol) rows of ``perf report --stdio --sort dso,symbol``."""
    rows = []
    for line in text.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(.+?)\s*$", line)
        if m:
            rows.append((float(m.group(1)), m.group(2), m.group(3)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", choices=("short", "long"), default="short")
    parser.add_argument("--layout", choices=("default", "length"), default="default")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to wait for a quiet machine")
    parser.add_argument("--max-load", type=float, default=quiet.MAX_LOAD, help="the quiet rule (default 0.5)")
    parser.add_argument("--out", type=Path, help="write the table here too (Markdown)")
    args = parser.parse_args(argv)
    perf = shutil.which("perf")
    if perf is None:
        raise SystemExit("perf is not installed (Debian: apt-get install linux-perf)")
    load = quiet.wait_until_quiet(args.wait, max_load=args.max_load)
    with tempfile.TemporaryDirectory(prefix="embellama-profile-") as tmp:
        ready, data = Path(tmp) / "ready", Path(tmp) / "perf.data"
        code = WORKLOAD.format(
            paths=[str(HERE), str(HERE.parent)],
            corpus=args.corpus,
            layout=args.layout,
            threads=args.threads,
            ready=str(ready),
        )
        worker = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        while not ready.exists():  # start sampling after the load and warm-up
            if worker.poll() is not None:
                raise SystemExit(f"the workload failed (exit {worker.returncode})")
            subprocess.run(["sleep", "0.05"], check=True)
        rec = subprocess.Popen(
            [perf, "record", "-F", "499", "-o", str(data), "-p", str(worker.pid)],
            stderr=subprocess.DEVNULL,
        )
        rate = (worker.communicate()[0] or "").strip()
        rec.wait()
        report = subprocess.run(
            [perf, "report", "-i", str(data), "--no-children", "--sort", "dso,symbol", "--stdio"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    rows = parse_report(report)
    groups: dict[str, list[tuple[float, str]]] = {}
    for share, _dso, symbol in rows:
        groups.setdefault(group_of(symbol), []).append((share, symbol))
    total = sum(s for s, _, _ in rows) or 1.0
    lines = [
        f"# Profile: {args.corpus} corpus, layout {args.layout}",
        "",
        f"{quiet.cpu_name()}; {args.threads} threads; load average {load:.2f} at start; {rate}.",
        "",
        "The share of work leaves out the barriers and waits, which grow whenever the two ggml threads are not"
        " both running (perf's own process competes with them on 2 cores), so it compares runs; the share of all"
        " samples says how much time went to waiting in this one.",
        "",
        "| part | share of work | share of all samples | top symbols |",
        "|---|---|---|---|",
    ]
    waits = sum(s for s, _ in groups.get(WAITS, [])) or 0.0
    for name, items in sorted(groups.items(), key=lambda kv: -sum(s for s, _ in kv[1])):
        share = sum(s for s, _ in items)
        work = "–" if name == WAITS else f"{share / max(total - waits, 1e-9):.1%}"
        top = ", ".join(f"`{sym.strip()[:60]}` {s:.1f} %" for s, sym in sorted(items, reverse=True)[:3])
        lines.append(f"| {name} | {work} | {share / total:.1%} | {top} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
