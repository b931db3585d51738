# SPDX-License-Identifier: Apache-2.0
"""Fused Q/K/V weights (one ``attn_qkv`` matmul of width 3·d instead of three of width d), measured before adopting.

    python benchmarks/bench_fused_qkv.py --rounds 5     # -> benchmarks/results/fused-qkv.{json,md}

llama.cpp's BERT loader takes ``blk.N.attn_qkv.{weight,bias}`` in place of the three tensors, and its graph then runs
one matrix product and views Q, K and V out of it (``build_qkv``). This writes the test model (all-MiniLM-L6-v2, F16)
again with the three fused (gguf-py; the values are the same, concatenated), and embeds the short corpus (STS-B
test sentences) and the long one (passages of >= 200 words) with both files in interleaved rounds, each file as
``compute_type`` runs it (``auto``: BF16 on CPUs with AVX512_BF16).

Two measures, so that a shared machine still gives a ratio: texts per CPU-second at one thread (process time, which
other processes on the machine barely move), and texts per wall-second at two threads (which needs a quiet machine:
``--wait``). The vectors of the two files are compared too: the fusion must not change them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import quiet  # noqa: E402
from bench import make_passages, read_sts  # noqa: E402


def fuse_qkv(source: Path, destination: Path) -> int:
    """``source`` written to ``destination`` with each layer's Q, K and V weights and biases as one ``attn_qkv``
    tensor (rows of Q, then K, then V); returns how many tensors were fused."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(source)
    arch = str(reader.fields["general.architecture"].contents())
    writer = gguf.GGUFWriter(destination, arch)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
    tensors = {t.name: t for t in reader.tensors}

    def values(name: str) -> Any:
        t = tensors[name]
        return np.asarray(t.data).reshape([int(n) for n in reversed(t.shape)])

    fused = 0
    for t in reader.tensors:
        name = t.name
        if ".attn_k." in name or ".attn_v." in name:
            continue  # written with their Q
        if ".attn_q." in name:
            head, tail = name.split(".attn_q.")
            parts = [values(f"{head}.attn_{p}.{tail}") for p in "qkv"]
            writer.add_tensor(f"{head}.attn_qkv.{tail}", np.concatenate(parts, axis=0), raw_dtype=t.tensor_type)
            fused += 1
            continue
        writer.add_tensor(name, values(name), raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return fused


def render(report: dict[str, Any]) -> str:
    """The markdown table of ``report``."""
    lines = [
        "# Fused Q/K/V weights against the file as converted",
        "",
        f"{report['cpu']}; load average {report['load_start']:.2f} at the start, {report['load_end']:.2f} at the end; "
        f"{report['rounds']} interleaved rounds; all-MiniLM-L6-v2 F16 run as compute_type={report['compute_type']!r}; "
        f"lowest cosine between the two files' vectors {report['min_cos']:.7f}.",
        "",
        "| measure | corpus | as converted (median, min-max) | fused (median, min-max) | fused ÷ converted |",
        "|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        b, f = row["converted"], row["fused"]
        lines.append(
            f"| {row['measure']} | {row['corpus']} | {statistics.median(b):.1f} ({min(b):.1f}-{max(b):.1f}) "
            f"| {statistics.median(f):.1f} ({min(f):.1f}-{max(f):.1f}) | {row['ratio']:.3f} |"
        )
    lines += ["", report["verdict"], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to wait for a quiet machine")
    parser.add_argument("--max-load", type=float, default=float("inf"), help="the quiet rule (default: none)")
    parser.add_argument("--compute-type", default="auto")
    parser.add_argument("--limit", type=int, default=1200, help="short texts per round")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    load_start = quiet.wait_until_quiet(args.wait, max_load=args.max_load)

    import numpy as np

    from embellama import EmbeddingModel, ModelConfig
    from embellama._native import cache_dir
    from tests.support.make_model import ensure_models

    sentences, _ = read_sts()
    corpora = {"short": sentences[: args.limit], "long": make_passages(sentences)[:48]}
    source = ensure_models()["f16"]
    # a stable path, so that compute_type's converted copy in the cache is made once, not once per run
    fused_path = cache_dir() / "bench" / f"{source.stem}.fused-qkv.gguf"
    if not fused_path.exists() or fused_path.stat().st_mtime < source.stat().st_mtime:
        fused_path.parent.mkdir(parents=True, exist_ok=True)
        partial = fused_path.with_suffix(".partial")
        count = fuse_qkv(source, partial)
        partial.replace(fused_path)
        print(f"fused {count} Q/K/V tensor triples into {fused_path}", file=sys.stderr)

    files = {"converted": source, "fused": fused_path}
    measures = {"texts per CPU-second, 1 thread": 1, "texts/s, 2 threads": 2}
    models = {
        (name, threads): EmbeddingModel(
            ModelConfig(model_path=path, n_threads=threads, compute_type=args.compute_type)
        ).load()
        for name, path in files.items()
        for threads in measures.values()
    }
    a = models[("converted", 1)].embed_batch(corpora["short"][:256])
    b = models[("fused", 1)].embed_batch(corpora["short"][:256])
    min_cos = float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())

    rates: dict[tuple[str, str, str], list[float]] = {}
    for r in range(args.rounds):
        order = list(files) if r % 2 == 0 else list(reversed(files))
        for measure, threads in measures.items():
            for name in order:
                for corpus, texts in corpora.items():
                    clock = time.process_time if threads == 1 else time.perf_counter
                    start = clock()
                    models[(name, threads)].embed_batch(texts)
                    rates.setdefault((measure, corpus, name), []).append(len(texts) / (clock() - start))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    rows = []
    for measure in measures:
        for corpus in corpora:
            base, fused = rates[(measure, corpus, "converted")], rates[(measure, corpus, "fused")]
            ratio = statistics.median(fused) / statistics.median(base)
            rows.append({"measure": measure, "corpus": corpus, "converted": base, "fused": fused, "ratio": ratio})
    spread = max(quiet.spread(v) for v in rates.values())
    gains = [row["ratio"] for row in rows]
    verdict = f"Gain {min(gains):.3f}-{max(gains):.3f}x against rounds spreading up to {spread * 100:.0f} %: " + (
        "measurable." if min(gains) - 1 > spread else "within the noise, so the rewrite is not adopted."
    )
    report = {
        "cpu": quiet.cpu_name(),
        "load_start": load_start,
        "load_end": os.getloadavg()[0],
        "rounds": args.rounds,
        "compute_type": args.compute_type,
        "min_cos": min_cos,
        "rows": rows,
        "verdict": verdict,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fused-qkv.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (args.out / "fused-qkv.md").write_text(render(report), encoding="utf-8")
    print(render(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
