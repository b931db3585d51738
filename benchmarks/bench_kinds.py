# SPDX-License-Identifier: Apache-2.0
"""Sparse and multi-vector output beside the peers, one run (issue 31, item 6).

    python benchmarks/bench_kinds.py [--texts 1000] [--rounds 3] [--threads 1] [--cpu "Intel Xeon (Sapphire Rapids)"]
    nox -s bench -- --kinds                # the same through the bench session (its peers installed)

Two models of all-MiniLM-L6-v2's size (6 layers, hidden 384, its WordPiece), made from its encoder weights with
random heads, since no SPLADE or ColBERT checkpoint is at hand offline:

- SPLADE: ``BertForMaskedLM`` with a random MLM transform, the decoder tied to the word embeddings, and a bias
  that leaves about 1 % of the vocabulary above zero per token (a trained SPLADE's sparsity);
- ColBERT: the encoder and a random ``Dense`` projection 384 -> 128 (no bias), Stanford ColBERT's markers
  (``[unused0]``/``[unused1]``, as fastembed inserts), query length 32 with ``[MASK]`` expansion, punctuation
  skiplist.

Each is converted by ``embellama convert`` (F16 GGUF and the heads file) and exported to fp32 ONNX by
``torch.onnx.export`` (as benchmarks/bench.py exports for ONNX Runtime): SPLADE's logits, ColBERT's projected
token vectors. The tools, each with ``--threads`` threads, on the same texts (STS-B sentences where the file is
there, else the test corpus):

- sparse: embellama ``SparseEncoder``; fastembed 0.9.1 ``SparseTextEmbedding`` (its SPLADE++ class on the ONNX
  folder, ``specific_model_path``); sentence-transformers' ``SparseEncoder`` on the Hugging Face folder (torch);
- multi-vector: embellama ``MultiVectorEncoder``; fastembed 0.9.1 ``LateInteractionTextEmbedding`` (its ColBERT
  class on the ONNX folder), documents and queries.

Rounds are interleaved (each round runs every tool once); a tool's figure is its median round. Besides texts/s,
the heads' own cost: the numpy head (embellama's ``_compute.heads``, on the token vectors of one llama.cpp pass)
against that pass, per 1,000 tokens. Results: benchmarks/results/kinds.{json,md}, with the CPU and the load
average at start and end (this benchmark does not wait for a quiet machine: it says how busy it was).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import string
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _path in (str(REPO), str(HERE)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import quiet  # noqa: E402

RESULTS = HERE / "results"
SEED = 20261207
COLBERT_DIM = 128
TOKENIZER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
ST_SKIPLIST = list(string.punctuation)


def texts(limit: int) -> tuple[list[str], str]:
    """STS-B sentences (the bench's short corpus) where the file is there, else the test corpus's sentences."""
    import bench

    if bench.STS.is_file():
        return bench.read_sts()[0][:limit], f"STS-B test sentences ({bench.STS.name})"
    from tests.support import corpus

    s1, s2 = corpus.sentence_pairs()
    return [*s1, *s2][:limit], "the test corpus's sentences (no STS file)"


# -- the models --------------------------------------------------------------------------------------------------


def _copy_tokenizer(src: Path, dst: Path) -> None:
    """The tokenizer files (and config.json where ``dst`` has none)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (src / name).is_file() and not (dst / name).is_file():
            shutil.copy2(src / name, dst / name)


def _export(module: Any, tokenizer_dir: Path, out: Path, output: str, names: Sequence[str]) -> None:
    """fp32 ONNX of ``module(*names)`` (input_ids, attention_mask[, token_type_ids]) with the tokenizer files."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    example = torch.ones((2, 16), dtype=torch.int64)
    axes = {0: "batch", 1: "sequence"}
    torch.onnx.export(
        module.eval(),
        tuple(example if n != "token_type_ids" else torch.zeros_like(example) for n in names),
        str(out / "model.onnx"),
        input_names=list(names),
        output_names=[output],
        dynamic_axes={**{n: axes for n in names}, output: axes},
        opset_version=17,
        dynamo=False,
    )
    _copy_tokenizer(tokenizer_dir, out)


def build_models(folder: Path, log: Callable[[str], None]) -> dict[str, Path]:
    """Both models' Hugging Face folders, GGUFs (with heads) and ONNX folders under ``folder``, built once."""
    import torch
    import transformers as tf
    from safetensors.torch import save_file

    from tests.support import make_model, rerank_models

    if (folder / "done").is_file():
        return {p.name: p for p in folder.iterdir() if p.is_dir()}
    shutil.rmtree(folder, ignore_errors=True)
    src = make_model.hf_model_dir()
    torch.manual_seed(SEED)

    log("SPLADE: MiniLM's encoder, a random MLM head")
    splade = folder / "splade"
    mlm = tf.BertForMaskedLM.from_pretrained(str(src)).eval()
    tok = tf.AutoTokenizer.from_pretrained(str(src))
    with torch.no_grad():  # about 1 % of the vocabulary above zero per token
        sample = tok(texts(64)[0], return_tensors="pt", padding=True)
        logits = mlm(**sample).logits[sample["attention_mask"].bool()]
        mlm.cls.predictions.bias.sub_(torch.quantile(logits.flatten()[::13], 0.99))
    mlm.config.architectures = ["BertForMaskedLM"]
    mlm.save_pretrained(splade / "hf")
    _copy_tokenizer(src, splade / "hf")

    class Logits(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits

    _export(Logits(mlm), src, splade / "onnx", "logits", ["input_ids", "attention_mask", "token_type_ids"])

    log("ColBERT: MiniLM's encoder, a random Dense 384 -> 128, Stanford's markers")
    colbert = folder / "colbert"
    bert = tf.BertModel.from_pretrained(str(src), add_pooling_layer=False).eval()
    hidden = bert.config.hidden_size
    linear = torch.nn.Linear(hidden, COLBERT_DIM, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(COLBERT_DIM, hidden) / hidden**0.5)
    bert.save_pretrained(colbert / "hf")
    _copy_tokenizer(src, colbert / "hf")
    (colbert / "hf" / "1_Dense").mkdir()
    save_file({"linear.weight": linear.weight.detach().contiguous()}, colbert / "hf" / "1_Dense" / "model.safetensors")
    dense_config = {"in_features": hidden, "out_features": COLBERT_DIM, "bias": False}
    dense_config["activation_function"] = "torch.nn.modules.linear.Identity"
    (colbert / "hf" / "1_Dense" / "config.json").write_text(json.dumps(dense_config))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"},
    ]
    (colbert / "hf" / "modules.json").write_text(json.dumps(modules))
    settings = {"query_prefix": "[unused0]", "document_prefix": "[unused1]", "query_length": 32}
    settings.update(document_length=512, do_query_expansion=True, attend_to_expansion_tokens=False)
    settings["skiplist_words"] = ST_SKIPLIST
    (colbert / "hf" / "config_sentence_transformers.json").write_text(json.dumps(settings))

    class Projected(torch.nn.Module):
        def __init__(self, model: Any, head: Any) -> None:
            super().__init__()
            self.model, self.head = model, head

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:  # fastembed's ColBERT feeds these two
            out = self.model(input_ids=input_ids, attention_mask=attention_mask)
            return self.head(out.last_hidden_state)

    _export(Projected(bert, linear), src, colbert / "onnx", "token_embeddings", ["input_ids", "attention_mask"])

    for name in ("splade", "colbert"):
        log(f"{name}: embellama convert (F16 and the heads file)")
        out = folder / name / "model.F16.gguf"
        rerank_models._convert_embellama(folder / name / "hf", out, "f16", make_model.llama_source())
    (folder / "done").write_text("")
    return {"splade": splade, "colbert": colbert}


# -- the tools ---------------------------------------------------------------------------------------------------


def _config(gguf: Path, threads: int) -> Any:
    from embellama import ModelConfig

    return ModelConfig(model_path=gguf, n_threads=threads)


def sparse_tools(models: dict[str, Path], threads: int) -> dict[str, Callable[[list[str]], Any]]:
    import torch
    from fastembed import SparseTextEmbedding
    from sentence_transformers import SparseEncoder as STSparseEncoder

    from embellama import SparseEncoder

    torch.set_num_threads(threads)
    folder = models["splade"]
    mine = SparseEncoder(_config(folder / "model.F16.gguf", threads)).load()
    fe = SparseTextEmbedding(
        "prithivida/Splade_PP_en_v1", specific_model_path=str(folder / "onnx"), threads=threads, lazy_load=False
    )
    st = STSparseEncoder(str(folder / "hf"), device="cpu")
    return {
        "embellama": lambda t: mine.encode(t),
        "fastembed": lambda t: list(fe.embed(t, batch_size=32)),
        "sentence-transformers": lambda t: st.encode(t, batch_size=32, convert_to_tensor=False),
    }


def multi_tools(models: dict[str, Path], threads: int) -> dict[str, Callable[[list[str]], Any]]:
    from fastembed import LateInteractionTextEmbedding

    from embellama import MultiVectorEncoder

    folder = models["colbert"]
    mine = MultiVectorEncoder(_config(folder / "model.F16.gguf", threads)).load()
    fe = LateInteractionTextEmbedding(
        "colbert-ir/colbertv2.0", specific_model_path=str(folder / "onnx"), threads=threads
    )
    return {
        "embellama documents": lambda t: mine.encode_document(t),
        "fastembed documents": lambda t: list(fe.embed(t, batch_size=256)),
        "embellama queries": lambda t: mine.encode_query(t),
        "fastembed queries": lambda t: list(fe.query_embed(t)),
    }


def head_cost(models: dict[str, Path], items: list[str], threads: int, rounds: int) -> dict[str, dict[str, float]]:
    """The numpy heads against the llama.cpp pass whose token vectors they read, per 1,000 tokens."""
    from embellama import MultiVectorEncoder, SparseEncoder
    from embellama._compute import heads
    from embellama._compute.pooling import normalize

    out: dict[str, dict[str, float]] = {}
    with SparseEncoder(_config(models["splade"] / "model.F16.gguf", threads)) as splade:
        a, meta = splade.heads.arrays, splade.heads.meta["mlm"]

        def mlm(hidden: Any, lengths: Any) -> Any:
            return heads.splade_pool(hidden, lengths, dense_w=a["mlm.dense.weight"], dense_b=a["mlm.dense.bias"],
                                     norm_w=a["mlm.norm.weight"], norm_b=a["mlm.norm.bias"],
                                     decoder_w=a["mlm.decoder.weight"], decoder_b=a["mlm.decoder.bias"],
                                     act=meta["activation"], eps=meta["eps"])  # fmt: skip

        out["SPLADE MLM head + pooling"] = _time_head(splade.model, items, mlm, rounds)
    with MultiVectorEncoder(_config(models["colbert"] / "model.F16.gguf", threads)) as colbert:
        w, b = colbert.heads.arrays["colbert.weight"], colbert.heads.arrays["colbert.bias"]
        out["ColBERT projection + normalize"] = _time_head(
            colbert.model, items, lambda hidden, _: normalize(heads.project(hidden, w, b)), rounds
        )
    return out


def _time_head(model: Any, items: list[str], head: Callable[[Any, Any], Any], rounds: int) -> dict[str, float]:
    ids = [model.tokenize(t) for t in items]
    lengths = np.array([len(i) for i in ids], dtype=np.int64)
    passes, heads_s = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        hidden = np.concatenate(model.embed_token_ids(ids))
        passes.append(time.perf_counter() - started)
        started = time.perf_counter()
        head(hidden, lengths)
        heads_s.append(time.perf_counter() - started)
    per_k = 1000 / int(lengths.sum())
    pass_ms, head_ms = statistics.median(passes) * 1e3 * per_k, statistics.median(heads_s) * 1e3 * per_k
    return {
        "tokens": int(lengths.sum()),
        "pass_ms_per_1k": pass_ms,
        "head_ms_per_1k": head_ms,
        "ratio": head_ms / pass_ms,
    }


def measure(tools: dict[str, Callable[[list[str]], Any]], items: list[str], rounds: int) -> dict[str, dict[str, Any]]:
    for run in tools.values():  # warm-up: loads, first calls, caches
        run(items[:16])
    times: dict[str, list[float]] = {name: [] for name in tools}
    for _ in range(rounds):
        for name, run in tools.items():
            started = time.perf_counter()
            run(items)
            times[name].append(time.perf_counter() - started)
    return {
        name: {"texts_per_s": len(items) / statistics.median(t), "rounds_s": t, "spread": quiet.spread(t)}
        for name, t in times.items()
    }


# -- the report --------------------------------------------------------------------------------------------------


def render(report: dict[str, Any]) -> str:
    """The Markdown of ``report``: the texts/s table with ratios to embellama, the heads' cost, the machine."""
    meta = report["meta"]
    lines = [
        "# Sparse and multi-vector beside the peers",
        "",
        f"One run of `benchmarks/bench_kinds.py` on {meta['cpu']}, {meta['threads']} thread(s) per tool, "
        f"{meta['texts']} texts ({meta['corpus']}), {meta['rounds']} interleaved rounds, the median round.",
        "",
        f"**A loaded machine**: load average (1 min) {meta['loadavg_start']:.2f} at the start and "
        f"{meta['loadavg_end']:.2f} at the end, on {meta['cpus']} logical CPUs shared with other work. The ratios "
        "compare tools that ran in the same rounds; the absolute rates are lower than on a quiet machine.",
        "",
        "Models: all-MiniLM-L6-v2's encoder (6 layers, hidden 384) with random heads (SPLADE: an MLM head, about "
        "1 % of the vocabulary above zero per token; ColBERT: Dense 384 -> 128, Stanford's markers, queries "
        "expanded to 32 tokens). embellama runs the F16 GGUF (llama.cpp), fastembed the fp32 ONNX export "
        "(ONNX Runtime), sentence-transformers the Hugging Face folder (torch, fp32).",
        "",
        "| output | tool | texts/s | x embellama | rounds' spread |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for kind, results in (("sparse", report["sparse"]), ("multi-vector", report["multi"])):
        for name, r in results.items():
            base = results["embellama" if kind == "sparse" else f"embellama {name.split()[-1]}"]["texts_per_s"]
            lines.append(
                f"| {kind} | {name} | {r['texts_per_s']:.1f} | {r['texts_per_s'] / base:.2f} | {r['spread']:.0%} |"
            )
    lines += [
        "",
        "The heads' own cost (embellama's numpy heads on the token vectors of one llama.cpp pass, the median of "
        f"{meta['rounds']} rounds):",
        "",
        "| head | tokens | llama.cpp pass, ms per 1k tokens | numpy head, ms per 1k tokens | head / pass |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, h in report["heads"].items():
        lines.append(
            f"| {name} | {h['tokens']} | {h['pass_ms_per_1k']:.1f} | {h['head_ms_per_1k']:.1f} | {h['ratio']:.2f} |"
        )
    lines += ["", f"Versions: {', '.join(f'{k} {v}' for k, v in meta['versions'].items())}.", ""]
    return "\n".join(lines)


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    import embellama

    out = {"embellama": embellama.__version__}
    for name in ("fastembed", "onnxruntime", "sentence-transformers", "torch"):
        out[name] = version(name)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=1000, help="how many texts (default 1000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="threads per tool (default 1)")
    parser.add_argument("--out", type=Path, default=RESULTS / "kinds", help="results stem (.json and .md)")
    parser.add_argument("--cpu", default="", help="the CPU's name in the report, before what /proc/cpuinfo says")
    parser.add_argument("--render", action="store_true", help="only rewrite the .md from the .json")
    args = parser.parse_args(argv)
    if args.render:
        args.out.with_suffix(".md").write_text(render(json.loads(args.out.with_suffix(".json").read_text())))
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("EMBELLAMA_BACKEND", "cpu")
    from tests.support import make_model

    def log(message: str) -> None:
        print(f"[bench_kinds] {message}", file=sys.stderr, flush=True)

    loadavg_start = os.getloadavg()[0]
    items, corpus_name = texts(args.texts)
    models = build_models(make_model.cache_dir() / "bench-kinds" / f"minilm-{SEED}", log)
    report: dict[str, Any] = {}
    log(f"sparse: {len(items)} texts, {args.rounds} rounds")
    report["sparse"] = measure(sparse_tools(models, args.threads), items, args.rounds)
    log("multi-vector")
    report["multi"] = measure(multi_tools(models, args.threads), items, args.rounds)
    log("the heads' cost")
    report["heads"] = head_cost(models, items, args.threads, args.rounds)
    report["meta"] = {
        "cpu": f"{args.cpu}: {quiet.cpu_name()}" if args.cpu else quiet.cpu_name(),
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "texts": len(items),
        "corpus": corpus_name,
        "rounds": args.rounds,
        "loadavg_start": loadavg_start,
        "loadavg_end": os.getloadavg()[0],
        "versions": _versions(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    text = render(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for suffix, content in ((".json", json.dumps(report, indent=2) + "\n"), (".md", text)):
        args.out.with_suffix(suffix).write_text(content, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
