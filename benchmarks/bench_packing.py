# SPDX-License-Identifier: Apache-2.0
"""How embellama lays out llama.cpp calls, measured: tiles or length, call sizes, long texts alone or paired.

    python benchmarks/bench_packing.py --rounds 5            # -> benchmarks/results/packing.{json,md}

One process, one model (all-MiniLM-L6-v2 F16, the test model), 2 threads. Each configuration embeds the
short corpus (the STS-B test sentences) and the long one (256 passages of >= 200 words), in interleaved
rounds with the order rotating; the table gives texts/s (median, min, max) and the minimum cosine
against the plain length packing, which was embellama's layout before tiles. It waits for a quiet machine
(``--wait``) and marks configurations whose rounds spread more than 15 %.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import quiet  # noqa: E402
from bench import make_passages, read_sts  # noqa: E402

CONFIGS: dict[str, tuple[str, int]] = {
    # name: (layout, call tokens); "length" = sorted by length into calls of the whole budget (512)
    "length (before)": ("length", 512),
    "tiles, calls of 128": ("tiles", 128),
    "tiles, calls of 256, long texts paired": ("tiles", 256),
    "tiles, calls of 512": ("tiles", 512),
    "tiles 256, long texts alone (default)": ("alone", 256),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to wait for a quiet machine")
    parser.add_argument("--max-load", type=float, default=quiet.MAX_LOAD, help="the quiet rule (default 0.5)")
    parser.add_argument("--limit", type=int, help="only the first N texts of each corpus")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    load = quiet.wait_until_quiet(args.wait, max_load=args.max_load)

    from embellama import EmbeddingModel, ModelConfig
    from embellama._compute import packing as _batch
    from embellama._compute.packing import TileLayout, pack_tiles
    from tests.support.make_model import ensure_models

    sentences, _ = read_sts()
    corpora = {"short": sentences[: args.limit], "long": make_passages(sentences)[: args.limit]}
    model_path = ensure_models()["f16"]
    model = EmbeddingModel(ModelConfig(model_path=model_path, n_threads=2)).load()
    model.embed_batch(corpora["short"][:64])

    budget = model.token_budget

    def layout(name: str) -> TileLayout | None:
        kind, tokens = CONFIGS[name]
        # "tiles": a call led by a long text grows to the budget, so two long texts share it (the default until
        # 2026-12-07); "alone" (embellama's default): a text over a call of short texts goes in one of its own
        _batch.pack_tiles = pack_tiles if kind == "alone" else functools.partial(pack_tiles, budget=budget)
        return None if kind == "length" else TileLayout(64, tokens)

    times: dict[tuple[str, str], list[float]] = {}
    vectors: dict[tuple[str, str], Any] = {}
    names = list(CONFIGS)
    for r in range(args.rounds):
        for corpus, texts in corpora.items():
            for name in names[r % len(names) :] + names[: r % len(names)]:
                model._layout = layout(name)
                started = time.perf_counter()
                out = model.embed_batch(texts)
                times.setdefault((name, corpus), []).append(time.perf_counter() - started)
                vectors.setdefault((name, corpus), out)
                print(f"round {r + 1} {corpus:5s} {name}: {len(texts) / times[(name, corpus)][-1]:.1f} texts/s")
    rows = []
    for (name, corpus), values in times.items():
        rates = [len(corpora[corpus]) / v for v in values]
        base = vectors[("length (before)", corpus)]
        rows.append(
            {
                "config": name,
                "corpus": corpus,
                **{f"texts_s_{k}": v for k, v in quiet.summary(rates).items() if k != "rounds"},
                "min_cos_vs_length": float((vectors[(name, corpus)] * base).sum(1).min()),
            }
        )
    noisy = quiet.verdict((f"{r['config']} {r['corpus']}", r["texts_s_spread"]) for r in rows)
    meta = {"cpu": quiet.cpu_name(), "load_at_start": load, "rounds": args.rounds, "noisy": noisy}
    lines = [
        "# Call layouts measured (benchmarks/bench_packing.py)",
        "",
        f"{meta['cpu']}; 2 threads; load average {load:.2f} at start; {args.rounds} interleaved rounds.",
        "",
        "| corpus | layout | texts/s median | min | max | spread | × length | min cos vs length |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["corpus"] != "short", list(CONFIGS).index(r["config"]))):
        base = next(x for x in rows if x["corpus"] == r["corpus"] and x["config"] == "length (before)")
        lines.append(
            f"| {r['corpus']} | {r['config']} | {r['texts_s_median']:.1f} | {r['texts_s_min']:.1f} | "
            f"{r['texts_s_max']:.1f} | {r['texts_s_spread']:.0%} | {r['texts_s_median'] / base['texts_s_median']:.2f}× "
            f"| {r['min_cos_vs_length']:.7f} |"
        )
    if noisy:
        lines += ["", f"**Not publishable:** these spread more than 15 %: {', '.join(noisy)}."]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "packing.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    (args.out / "packing.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
