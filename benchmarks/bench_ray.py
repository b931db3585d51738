# SPDX-License-Identifier: Apache-2.0
"""Ray Data against plain ``embed_batch`` on the same corpus, in one run (embellama.ray).

    python benchmarks/bench_ray.py [--rounds 3] [--limit N] [--model GGUF] [--cpus 2] [--out FILE]

Configurations, interleaved round by round on one local Ray cluster of ``--cpus`` CPUs:

- ``embed_batch``: one EmbeddingModel in a process of its own, ``n_threads = cpus`` (load, then embed);
- ``ray 1 x N``: ``embed_dataset`` with 1 actor of ``cpus`` threads;
- ``ray N x 1``: ``embed_dataset`` with ``cpus`` actors of 1 thread each;
- and, for estimates of longer texts, ``embed_batch`` on passages of consecutive sentences joined
  to about 200 tokens (what a document store holds), in tokens/s.

A Ray job's time runs from submitting the (already materialized) dataset to having every
vector back in the object store: actor start, model load, batches in and vectors out. The
table gives the best and the median round of each (the machine may be shared: the best
round is the least disturbed) and the ratio of the best to ``embed_batch`` (load + embed).
Ray's own start (``ray.init``) is reported apart.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
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
    """The STS Benchmark test sentences (both sides of every pair)."""
    if not STS.is_file():
        raise SystemExit(f"{STS} not found (set $EMBELLAMA_STS_FILE)")
    with open(STS, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    texts = [r[5] for r in rows] + [r[6] for r in rows]
    return "STS-B test sentences", texts[:limit] if limit else texts


def child(model_path: str, threads: int, texts_file: str, out: str) -> None:
    """Load, warm up and embed the texts of ``texts_file``; print [load + embed, embed] seconds."""
    import numpy as np

    from embellama import EmbeddingModel, ModelConfig

    texts = json.loads(Path(texts_file).read_text(encoding="utf-8"))
    t0 = time.perf_counter()
    with EmbeddingModel(ModelConfig(model_path=model_path, n_threads=threads)) as model:
        model.embed("warm up")
        t1 = time.perf_counter()
        vectors = model.embed_batch(texts, show_progress_bar=False)
    t2 = time.perf_counter()
    np.save(out, vectors)
    print(json.dumps([t2 - t0, t2 - t1]))


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="use the first N texts")
    parser.add_argument("--model", default=None, help="GGUF file (default: the MiniLM F16 test model)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster (and threads)")
    parser.add_argument("--passages", type=int, default=200, help="also embed this many ~200-token passages")
    parser.add_argument("--passage-tokens", type=int, default=200, help="tokens per passage (at least)")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    args = parser.parse_args()

    import numpy as np
    import pyarrow as pa
    import ray
    import ray.data

    from embellama import EmbeddingModel, ModelConfig
    from embellama.ray import embed_dataset, embedding_matrix

    if args.model is None:
        from tests.support import make_model

        args.model = str(make_model.ensure_models()["f16"])
    name, texts = corpus(args.limit)
    cpus = args.cpus
    started = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, object_store_memory=300 * 1024 * 1024, log_to_driver=False)
    ray_start = time.perf_counter() - started
    ray.data.DataContext.get_current().enable_progress_bars = False
    source = ray.data.from_arrow(pa.table({"id": np.arange(len(texts)), "text": texts})).materialize()

    with EmbeddingModel(ModelConfig(model_path=args.model, n_threads=1)) as model:
        n_tokens = sum(len(model.tokenize(t)) for t in texts)
        passages: list[str] = []  # consecutive sentences joined to about 200 tokens (what a document store holds)
        current: list[str] = []
        for text in texts:
            current.append(text)
            if len(model.tokenize(" ".join(current))) >= args.passage_tokens:
                passages.append(" ".join(current))
                current = []
        passages = passages[: args.passages]
        passage_tokens = sum(len(model.tokenize(p)) for p in passages)

    workdir = Path(tempfile.mkdtemp(prefix="embellama-bench-ray-"))
    (workdir / "texts.json").write_text(json.dumps(texts), encoding="utf-8")
    (workdir / "passages.json").write_text(json.dumps(passages), encoding="utf-8")

    def plain(corpus_file: str) -> tuple[float, float, np.ndarray]:
        """embed_batch in a process of its own (as a user without Ray runs it): (load + embed, embed) seconds."""
        out = workdir / "vectors.npy"
        cmd = [sys.executable, __file__, "--child", args.model, str(cpus), str(workdir / corpus_file), str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"embed_batch child failed:\n{proc.stderr[-3000:]}")
        total, inner = json.loads(proc.stdout.strip().splitlines()[-1])
        return total, inner, np.load(out)

    def with_ray(actors: int, threads: int) -> tuple[float, np.ndarray]:
        config = ModelConfig(model_path=args.model, n_threads=threads)
        t0 = time.perf_counter()
        out = embed_dataset(source, config, n_threads=threads, concurrency=actors).materialize()
        elapsed = time.perf_counter() - t0
        table = pa.concat_tables([ray.get(ref) for ref in out.to_arrow_refs()])
        order = np.argsort(table.column("id").to_numpy())
        return elapsed, embedding_matrix(table.column("embedding"))[order]

    configs = {"embed_batch": [], f"ray 1 x {cpus}": [], f"ray {cpus} x 1": []}
    embed_only: list[float] = []
    long_texts: list[float] = []
    reference = None
    min_cos = 1.0
    for r in range(args.rounds):
        total, inner, reference = plain("texts.json")
        configs["embed_batch"].append(total)
        embed_only.append(inner)
        if passages:
            long_texts.append(plain("passages.json")[1])
        for label, (actors, threads) in ((f"ray 1 x {cpus}", (1, cpus)), (f"ray {cpus} x 1", (cpus, 1))):
            seconds, vectors = with_ray(actors, threads)
            configs[label].append(seconds)
            min_cos = min(min_cos, float((vectors * reference).sum(1).min()))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in configs.items()), file=sys.stderr)
    ray.shutdown()
    shutil.rmtree(workdir, ignore_errors=True)

    n = len(texts)
    base = min(configs["embed_batch"])
    rows = [
        ("embed_batch, embedding only (model loaded)", embed_only),
        *configs.items(),
    ]
    lines = [
        f"{n:,} {name}, {Path(args.model).name}, local Ray cluster of {cpus} CPUs "
        f"({platform.machine()}, {os.cpu_count()} cores seen; {args.rounds} interleaved rounds; "
        f"min cosine Ray vs embed_batch {min_cos:.7f}; ray.init took {ray_start:.1f} s)",
        "",
        "| configuration | best s | median s | texts/s (best) | tokens/s (best) | relative to embed_batch (best) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for label, times in rows:
        shown = label if label != "embed_batch" else f"embed_batch, load + embed ({cpus} threads)"
        best, median = min(times), statistics.median(times)
        lines.append(
            f"| {shown} | {best:.2f} | {median:.2f} | {n / best:.0f} | {n_tokens / best:.0f} | {base / best:.2f} |"
        )
    if passages:
        best, median = min(long_texts), statistics.median(long_texts)
        lines.append(
            f"| embed_batch, embedding only, {len(passages)} passages of {passage_tokens / len(passages):.0f} tokens "
            f"| {best:.2f} | {median:.2f} | {len(passages) / best:.1f} | {passage_tokens / best:.0f} | |"
        )
    report = "\n".join(lines)
    print(report)
    if args.out:
        payload = {
            "texts": n,
            "corpus": name,
            "cpus": cpus,
            "rounds": args.rounds,
            "ray_init_s": ray_start,
            "min_cos": min_cos,
            "tokens": n_tokens,
            "passages": len(passages),
            "passage_tokens": passage_tokens,
            "seconds": {**configs, "embed_batch_embed_only": embed_only, "embed_batch_passages": long_texts},
            "markdown": report,
        }
        Path(args.out).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
