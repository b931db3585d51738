# SPDX-License-Identifier: Apache-2.0
"""The seed's four targets on a model its size: start-up, memory, single-text latency, throughput (issue 28.6).

The plan embellama grew from promises, for a 1 GB model: start-up under 5 s, memory overhead under 2x the
model's size, single-text latency under 50 ms on a CPU, batch throughput over 1,000 texts/s. The 1 GB model
is a random-weight Qwen3 of Qwen3-Embedding-0.6B's shape in F16 (``tests/support/big_model.py``, built once
and cached). Each measurement runs in its own process, embellama (defaults, ``n_threads`` set) beside
llama-cpp-python on the same file where ``llama_cpp`` imports (``nox -s bench`` installs it, loading this
checkout's libllama through ``LLAMA_CPP_LIB_PATH``):

- start-up, split: process start -> ``import`` -> model loaded (mmap) -> first embedding;
- peak RSS (VmHWM) over the latency and throughput corpora, against the GGUF's size;
- single-text latency over 200 STS sentences (median, p95);
- throughput on the STS sentences (``--big-texts`` of them on the 1 GB model), and the 1,000 texts/s
  projected per core count from MiniLM's measured rate at 1 and 2 threads;
- ``embed_iter`` over ``--stream-texts`` (100,000) STS sentences, cycled, on MiniLM, with the RSS sampled every
  ``--sample-s`` seconds: after the warm-up (the first 10 % of the texts) it must stay flat.

    python benchmarks/bench_seed.py --wait 600            # writes benchmarks/results/seed.{json,md}
    python benchmarks/bench_seed.py --busy-ok             # on a loaded machine: measures, says the load

A busy machine (load average over 0.5, :mod:`quiet`) is waited for up to ``--wait`` seconds, then refused
unless ``--busy-ok``: then each figure carries the load it was taken under and each process's CPU share.
"""

from __future__ import annotations

import sys
import time

T_MAIN = time.time()  # before any other import: a worker's "python start -> main" ends here

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
STS = Path(os.environ.get("EMBELLAMA_STS_FILE") or REPO.parent / "shared" / "data" / "stsbenchmark" / "sts-test.csv")
_LIB = Path(os.environ.get("EMBELLAMA_LIB") or REPO / "embellama" / "_lib" / "cpu")
LIB_DIR = _LIB if _LIB.is_dir() else _LIB.parent

TARGETS = {"startup_s": 5.0, "overhead_x": 2.0, "latency_ms": 50.0, "texts_s": 1000.0}
LATENCY_TEXTS = 200
FLAT_TOLERANCE = 0.05  # the stream's RSS after warm-up: max within 5 % of its first sample (as soak_serve.py)


# -- the worker side (its own process; only the standard library before the clock) --------------------------


def _status() -> dict[str, float]:
    """VmRSS, VmHWM, RssAnon and RssFile of this process, in MB."""
    out: dict[str, float] = {}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) / 1024
    return out


def _cpu_s() -> float:
    """This process's CPU time, all threads (nanosecond clock; os.times() ticks in 10 ms)."""
    return time.process_time()


def _percentiles(values: Sequence[float], cpu: Sequence[float] = ()) -> dict[str, float]:
    """Median and p95 of wall-clock seconds, in ms; with ``cpu``, the median of the process's CPU time too."""
    cuts = statistics.quantiles(values, n=20) if len(values) > 1 else list(values) * 19
    out = {"median": statistics.median(values) * 1e3, "p95": cuts[18] * 1e3}
    if cpu:
        out["cpu_median"] = statistics.median(cpu) * 1e3
    return out


def _latencies(one: Callable[[str], Any], texts: Sequence[str]) -> dict[str, float] | None:
    """One call per text: wall-clock and CPU-time percentiles (on a shared machine the CPU time is the
    steadier figure: it leaves out the time the process waited for a core)."""
    wall, cpu = [], []
    for text in texts:
        c0, w0 = _cpu_s(), time.perf_counter()
        one(text)
        wall.append(time.perf_counter() - w0)
        cpu.append(_cpu_s() - c0)
    return _percentiles(wall, cpu) if texts else None


def _load_backends(llama_cpp: Any) -> None:
    """Load the CPU backends of a ``GGML_BACKEND_DL`` build (embellama's portable one), which llama-cpp-python does not
    load itself: ggml is one library in the process, so registering them once through ctypes serves its libllama."""
    import ctypes

    folder = Path(os.environ.get("LLAMA_CPP_LIB_PATH") or Path(llama_cpp.__file__).parent / "lib")
    ggml = folder / "libggml.so"
    if not ggml.is_file() or not any(folder.glob("libggml-cpu*.so")):
        return  # backends built in: nothing to load
    lib = ctypes.CDLL(str(ggml))
    if hasattr(lib, "ggml_backend_load_all_from_path"):
        lib.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
        lib.ggml_backend_load_all_from_path(str(folder).encode())


def _load(job: dict[str, Any]) -> tuple[Any, Callable[[Sequence[str]], Any], Callable[[str], Any], str]:
    """(model, embed a list, embed one, version) for embellama or llama-cpp-python."""
    if job["tool"] == "embellama":
        import embellama
        from embellama import EmbeddingModel, ModelConfig

        model = EmbeddingModel(ModelConfig(model_path=job["model"], n_threads=job["threads"], **job.get("config", {})))
        return model, lambda t: model.embed_batch(t, show_progress_bar=False), model.embed, embellama.__version__
    import llama_cpp  # type: ignore[import-not-found]

    _load_backends(llama_cpp)
    n = job["n_ctx"]
    llm = llama_cpp.Llama(
        model_path=job["model"], embedding=True, n_ctx=n, n_batch=n, n_ubatch=n, n_threads=job["threads"],
        n_threads_batch=job["threads"], flash_attn=True, verbose=False,
    )  # fmt: skip
    return llm, lambda t: llm.embed(list(t)), llm.embed, str(llama_cpp.__version__)


def _compute_sentence(meta: dict[str, Any], big: dict[str, Any]) -> str:
    """What embellama computed with: ``compute_type`` and the weight type it gave."""
    asked = meta.get("compute_type", "auto")
    weights = big.get("embellama", {}).get("weights")
    if weights is None:  # results from before the weight type was recorded: auto converted F16 to BF16 then
        return "embellama: compute_type auto, which ran the F16 file as BF16 on AVX512_BF16 CPUs (before 2026-12-08)."
    if asked == "auto":
        return f"embellama's defaults: compute_type auto, the fastest exact type for this CPU, here {weights}."
    return f"embellama: compute_type={asked!r} ({weights}), not the defaults."


def work_seed(job: dict[str, Any]) -> dict[str, Any]:
    """Start-up (split), RSS, latency over ``latency`` texts, throughput over ``texts``, peak RSS."""
    texts: list[str] = job["texts"]
    marks: dict[str, Any] = {"spawn_to_main_s": T_MAIN - job["spawn_wall"]}
    t_import0 = time.time()
    if job["tool"] == "embellama":
        import embellama  # noqa: F401  (the import, timed apart from the load)
    else:
        import llama_cpp  # type: ignore[import-not-found]  # noqa: F401
    t_import = time.time()
    model, embed, one, version = _load(job)  # embellama: constructed, not loaded; llama-cpp-python: loaded
    if job["tool"] == "embellama":
        model.load()
    t_loaded = time.time()
    rss_loaded = _status()
    one(job["probe"])
    t_first = time.time()
    rss_first = _status()
    marks.update(
        import_s=t_import - t_import0,
        load_s=t_loaded - t_import,
        first_embedding_s=t_first - t_loaded,
        startup_s=t_first - job["spawn_wall"],
        startup_cpu_s=_cpu_s(),
    )
    latency = _latencies(one, job["latency"])
    cpu0, wall0 = _cpu_s(), time.perf_counter()
    embed(texts)
    batch_s = time.perf_counter() - wall0
    batch_cpu_s = _cpu_s() - cpu0
    weights = None
    if job["tool"] == "embellama":  # the type it computed with (compute_type may have converted the file)
        from embellama._gguf.convert import FTYPE_CODES

        weights = next((k.upper() for k, v in FTYPE_CODES.items() if v == model.model.ftype), str(model.model.ftype))
    return {
        "version": version,
        "weights": weights,
        **marks,
        "rss_loaded_mb": rss_loaded,
        "rss_first_mb": rss_first,
        "peak_rss_mb": _status()["VmHWM"],
        "latency_ms": latency,
        "latency_texts": len(job["latency"]),
        "batch_texts": len(texts),
        "batch_s": batch_s,
        "texts_s": len(texts) / batch_s if texts else None,
        "texts_cpu_s": len(texts) / batch_cpu_s if texts else None,
        "cpu_share": batch_cpu_s / (batch_s * job["threads"]) if texts else None,
    }


def work_rate(job: dict[str, Any]) -> dict[str, Any]:
    """embed_batch texts/s at ``threads`` (after a warm-up call), and single-text latency over ``latency``."""
    _, embed, one, version = _load(job)
    embed(job["texts"][:64])
    cpu0, wall0 = _cpu_s(), time.perf_counter()
    embed(job["texts"])
    batch_s = time.perf_counter() - wall0
    batch_cpu_s = _cpu_s() - cpu0
    return {
        "version": version,
        "texts_s": len(job["texts"]) / batch_s,
        "texts_cpu_s": len(job["texts"]) / batch_cpu_s,
        "cpu_share": batch_cpu_s / (batch_s * job["threads"]),
        "latency_ms": _latencies(one, job["latency"]),
        "peak_rss_mb": _status()["VmHWM"],
    }


def work_stream(job: dict[str, Any]) -> dict[str, Any]:
    """embed_iter over ``count`` texts (``texts`` cycled) with VmRSS sampled every ``sample_s`` seconds."""
    import itertools

    import embellama

    config = embellama.ModelConfig(model_path=job["model"], n_threads=job["threads"], **job.get("config", {}))
    model = embellama.EmbeddingModel(config).load()
    texts, count = job["texts"], job["count"]
    done = [0]
    samples: list[tuple[float, int, float]] = []
    stop = threading.Event()
    t0 = time.perf_counter()

    def sample() -> None:
        while not stop.wait(job["sample_s"]):
            samples.append((time.perf_counter() - t0, done[0], _status()["VmRSS"]))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stream = itertools.islice(itertools.cycle(texts), count)
    checksum = 0.0
    for chunk in model.embed_iter(stream, chunk_size=job["chunk_size"]):
        done[0] += len(chunk)
        checksum += float(chunk[0, 0])
    elapsed = time.perf_counter() - t0
    stop.set()
    sampler.join()
    samples.append((elapsed, done[0], _status()["VmRSS"]))
    warm = [s for s in samples if s[1] >= count * 0.1] or samples[-1:]
    rss = [s[2] for s in warm]
    return {
        "texts": done[0],
        "seconds": elapsed,
        "texts_s": done[0] / elapsed,
        "samples": samples,
        "after_warmup_mb": {"first": rss[0], "last": rss[-1], "max": max(rss), "min": min(rss)},
        "growth": (max(rss) - rss[0]) / rss[0],
        "flat": (max(rss) - rss[0]) / rss[0] <= FLAT_TOLERANCE,
        "peak_rss_mb": _status()["VmHWM"],
        "checksum": checksum,
    }


WORKS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "seed": work_seed,
    "rate": work_rate,
    "stream": work_stream,
}


def worker(job_file: str) -> None:
    job = json.loads(Path(job_file).read_text(encoding="utf-8"))
    result = WORKS[job["work"]](job)
    Path(job["result"]).write_text(json.dumps(result), encoding="utf-8")


# -- the parent side --------------------------------------------------------------------------------------------


def read_sts(path: Path = STS) -> list[str]:
    """The STS-B test sentences (sent1, sent2 of each pair, in file order)."""
    import csv

    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [s for r in rows for s in (r[5], r[6])]


def spawn(job: dict[str, Any], env: dict[str, str], timeout_s: float) -> dict[str, Any]:
    """Run one job in a fresh process; its result, or ``{"error": ...}``."""
    with tempfile.TemporaryDirectory(prefix="bench_seed.") as tmp:
        job_file, result = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job_file.write_text(json.dumps(dict(job, result=str(result), spawn_wall=time.time())), encoding="utf-8")
        try:
            proc = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "worker", str(job_file)],
                env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout_s, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout_s:.0f} s"}
        if proc.returncode != 0 or not result.is_file():
            return {"error": (proc.stderr or proc.stdout)[-1500:]}
        return dict(json.loads(result.read_text(encoding="utf-8")))


def have_llama_cpp_python() -> str | None:
    """llama-cpp-python's version when ``llama_cpp`` is installed, else None (without importing it)."""
    from importlib import metadata

    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        return None


def projection(per_core_1: float, per_core_2: float, target: float = TARGETS["texts_s"]) -> dict[str, Any]:
    """Texts/s per core count from the texts per CPU-second measured at 1 and at 2 threads.

    A CPU-second is a core's second: on a quiet machine the 2-thread run's texts/s is twice its texts per
    CPU-second; on a shared one, the CPU time leaves out the waits for a core. The 2-thread efficiency
    ``per_core_2 / per_core_1`` (barriers, work split) is applied to every core count above one.
    """
    efficiency = per_core_2 / per_core_1
    cores = [1, 2, 4, 8, 16, 32, 64]
    projected = {str(n): per_core_1 if n == 1 else per_core_1 * min(1.0, efficiency) * n for n in cores}
    needed = target / per_core_1 if target <= per_core_1 else target / (per_core_1 * min(1.0, efficiency))
    return {
        "per_core": per_core_1,
        "efficiency_2": efficiency,
        "projected": projected,
        "cores_needed": needed,
        "cores_needed_int": max(1, math.ceil(needed)),
    }


def stream_flat(samples: Sequence[Sequence[float]], count: int) -> bool:
    """Whether the RSS after the warm-up (the first 10 % of ``count`` texts) stays within 5 % of its first value."""
    rss = [s[2] for s in samples if s[1] >= count * 0.1]
    return bool(rss) and (max(rss) - rss[0]) / rss[0] <= FLAT_TOLERANCE


def _fmt(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:,.{digits}f}"


def targets(big: dict[str, Any], minilm: dict[str, Any], threads: int, busy: bool) -> list[dict[str, Any]]:
    """The four targets on the 1 GB model (and MiniLM's latency and throughput beside them).

    On a quiet machine a target is judged on the wall clock; on a busy one (``busy``) on the CPU time, which
    leaves out the waits for a core (start-up: the process's CPU time to the first embedding; throughput: texts
    per CPU-second times the threads).
    """
    e, p, mb = big["embellama"], big.get("llama-cpp-python") or {}, big["gguf_mb"]
    ok_p = bool(p) and "error" not in p

    def lat(r: dict[str, Any]) -> str:
        m = r["latency_ms"]
        return f"{m['median']:.1f} ms (p95 {m['p95']:.1f}; CPU {m['cpu_median']:.1f})"

    def tput(r: dict[str, Any], n: int) -> str:
        return f"{r['texts_s']:,.1f} texts/s (CPU-time equivalent {r['texts_cpu_s'] * n:,.1f})"

    def start(r: dict[str, Any]) -> str:
        return f"{r['startup_s']:.2f} s (CPU {r['startup_cpu_s']:.2f} s)"

    e_lat = e["latency_ms"]["cpu_median" if busy else "median"]
    e_startup = e["startup_cpu_s" if busy else "startup_s"]
    e_tput = e["texts_cpu_s"] * threads if busy else e["texts_s"]
    r2 = minilm["rate_2"]
    m_lat = minilm["latency"]["cpu_median" if busy else "median"]
    # Busy: two spinning ggml threads wait for each other's core, so 2 cores are projected from 1 thread's CPU time.
    m_tput = minilm["projection"]["projected"]["2"] if busy else r2["texts_s"]
    m_shown = f"{r2['texts_s']:,.1f} texts/s" + (f" (2 cores projected from 1 thread: {m_tput:,.0f})" if busy else "")
    return [
        {"what": "start-up: process start -> first embedding", "target": "< 5 s", "embellama": start(e),
         "met": e_startup < TARGETS["startup_s"], "peer": start(p) if ok_p else "n/a"},
        {"what": "memory: peak RSS (VmHWM) / GGUF size", "target": "< 2x",
         "embellama": f"{e['peak_rss_mb'] / mb:.2f}x ({e['peak_rss_mb']:,.0f} MB)",
         "met": e["peak_rss_mb"] / mb < TARGETS["overhead_x"],
         "peer": f"{p['peak_rss_mb'] / mb:.2f}x ({p['peak_rss_mb']:,.0f} MB)" if ok_p else "n/a"},
        {"what": f"single-text latency, median, {e['latency_texts']} STS sentences",
         "target": "< 50 ms", "embellama": lat(e), "met": e_lat < TARGETS["latency_ms"],
         "peer": lat(p) if ok_p else "n/a"},
        {"what": f"batch throughput, {e['batch_texts']} STS sentences", "target": "> 1,000 texts/s",
         "embellama": tput(e, threads), "met": e_tput > TARGETS["texts_s"],
         "peer": tput(p, threads) if ok_p else "n/a"},
        {"what": "MiniLM (45 MB): single-text latency, median", "target": "< 50 ms",
         "embellama": lat({"latency_ms": minilm["latency"]}),
         "met": m_lat < TARGETS["latency_ms"]},
        {"what": f"MiniLM (45 MB): batch throughput, {minilm['texts']:,} STS sentences, 2 threads",
         "target": "> 1,000 texts/s", "embellama": m_shown, "met": m_tput > TARGETS["texts_s"]},
    ]  # fmt: skip


def markdown(report: dict[str, Any]) -> str:
    meta, big, minilm = report["meta"], report["big"], report["minilm"]
    busy = meta["busy"]
    lines = [
        "# The seed's targets on a 1 GB model",
        "",
        f"{meta['date']}. {meta['cpu']}; {meta['threads']} thread(s) on the 1 GB model. Load average "
        f"{meta['load_start']:.2f} at start, {meta['load_end']:.2f} at the end"
        + (
            ": **a busy machine**. Wall-clock figures include the waits for a core; the targets are judged on the "
            "CPU time (see each row)."
            if busy
            else "."
        ),
        f"embellama {meta['embellama']}; llama.cpp {meta['llama_cpp']}; llama-cpp-python: "
        f"{meta['llama_cpp_python'] or 'not installed here (no wheel for the pin): embellama alone'}.",
        "",
        f"Model: {big['name']} (Qwen3-Embedding-0.6B's shape, random weights; tests/support/big_model.py), F16 GGUF "
        f"{big['gguf_mb']:,.0f} MiB, {big['parameters']:,} parameters; page cache warm. "
        f"{_compute_sentence(meta, big)} A first load (which writes a conversion when the cache lacks it) took "
        f"{_fmt(big.get('first_load_s'), 2)} s to the first embedding before the measured start-up.",
        "",
        "| target (seed) | bound | embellama | met | llama-cpp-python |",
        "|---|---|---|---|---|",
    ]
    for row in report["targets"]:
        lines.append(
            f"| {row['what']} | {row['target']} | {row['embellama']} | {'yes' if row['met'] else '**no**'} "
            f"| {row.get('peer', '')} |"
        )
    lines += ["", "Start-up, split (seconds, wall clock from the parent's spawn):", ""]
    lines += ["| tool | python start | import | load (mmap) | first embedding | total |", "|---|---|---|---|---|---|"]
    for tool in ("embellama", "llama-cpp-python"):
        r = big.get(tool)
        if r and "error" not in r:
            lines.append(
                f"| {tool} | {r['spawn_to_main_s']:.2f} | {r['import_s']:.2f} | {r['load_s']:.2f} "
                f"| {r['first_embedding_s']:.2f} | {r['startup_s']:.2f} |"
            )
    lines += ["", "Memory (MB): RSS (anonymous + file-backed) after load and after the first embedding; peak:", ""]
    lines += ["| tool | loaded | first embedding | peak (VmHWM) | peak / file |", "|---|---|---|---|---|"]
    for tool in ("embellama", "llama-cpp-python"):
        r = big.get(tool)
        if r and "error" not in r:
            lo, fi = r["rss_loaded_mb"], r["rss_first_mb"]
            lines.append(
                f"| {tool} | {lo['VmRSS']:,.0f} ({lo.get('RssAnon', 0):,.0f} + {lo.get('RssFile', 0):,.0f}) "
                f"| {fi['VmRSS']:,.0f} ({fi.get('RssAnon', 0):,.0f} + {fi.get('RssFile', 0):,.0f}) "
                f"| {r['peak_rss_mb']:,.0f} | {r['peak_rss_mb'] / big['gguf_mb']:.2f}x |"
            )
    whole = big.get("n_ctx_whole") or {}
    small = big.get("n_ctx_512") or {}  # results written before the context grew on demand
    if "rss_first_mb" in whole:
        fi = whole["rss_first_mb"]
        lines.append(
            f"| embellama, n_ctx=8192 (load, first embedding) | {whole['rss_loaded_mb']['VmRSS']:,.0f} "
            f"| {fi['VmRSS']:,.0f} "
            f"({fi.get('RssAnon', 0):,.0f} + {fi.get('RssFile', 0):,.0f}) | {whole['peak_rss_mb']:,.0f} "
            f"| {whole['peak_rss_mb'] / big['gguf_mb']:.2f}x |"
        )
        lines += [
            "",
            "embellama's default context for a decoder (Qwen3) starts at 512 tokens (its KV cache: 56 MiB) and grows "
            "when a text needs more, up to the training context or 8,192 tokens. Asked for whole (n_ctx=8192, the "
            "default before), it reserves its KV cache for all of it: 28 layers x 8,192 x 2 x 1,024 x F16 = 896 MiB.",
        ]
    elif "rss_first_mb" in small:
        fi = small["rss_first_mb"]
        lines.append(
            f"| embellama, n_ctx=512 (load, first embedding) | {small['rss_loaded_mb']['VmRSS']:,.0f} "
            f"| {fi['VmRSS']:,.0f} "
            f"({fi.get('RssAnon', 0):,.0f} + {fi.get('RssFile', 0):,.0f}) | {small['peak_rss_mb']:,.0f} "
            f"| {small['peak_rss_mb'] / big['gguf_mb']:.2f}x |"
        )
        lines += [
            "",
            "embellama's default context was the training context up to 8,192 tokens; a decoder (Qwen3) reserved its "
            "KV cache for all of it (28 layers x 8,192 x 2 x 1,024 x F16 = 896 MiB, the anonymous part above). "
            "With n_ctx=512 that cache is 56 MiB.",
        ]
    proj = minilm["projection"]
    r1, r2 = minilm["rate_1"], minilm["rate_2"]
    lines += [
        "",
        f"Throughput per core. MiniLM (all-MiniLM-L6-v2 F16, {minilm['texts']:,} STS sentences, embed_batch): "
        f"1 thread {r1['texts_s']:,.0f} texts/s wall, {r1['texts_cpu_s']:,.0f} per CPU-second; 2 threads "
        f"{r2['texts_s']:,.0f} texts/s wall, {r2['texts_cpu_s']:,.0f} per CPU-second (2-thread efficiency "
        f"{minilm['efficiency_2_measured']:.2f}"
        + (
            "; on this busy machine that is the contention's, so the projection below scales linearly: an upper bound"
            if busy
            else ""
        )
        + f"). 1,000 texts/s needs about {proj['cores_needed']:.1f} cores "
        f"({proj['cores_needed_int']}) with MiniLM. The 1 GB model: {big['per_core']:.1f} texts per CPU-second, "
        f"so {big['cores_needed']:,.0f} cores for 1,000 texts/s. Projected (per-core rate x cores x the 2-thread "
        "efficiency):",
        "",
        "| cores | MiniLM texts/s | 1 GB model texts/s |",
        "|---|---|---|",
    ]
    eff = min(1.0, proj["efficiency_2"])
    for n, rate in proj["projected"].items():
        lines.append(f"| {n} | {rate:,.0f} | {big['per_core'] * (1 if int(n) == 1 else eff * int(n)):,.1f} |")
    st = report["stream"]
    if "error" in st:
        lines += ["", f"embed_iter: failed: {st['error'][-300:]}"]
    else:
        a = st["after_warmup_mb"]
        lines += [
            "",
            f"`embed_iter` over {st['texts']:,} STS sentences (cycled) on MiniLM, {meta['stream_threads']} thread(s), "
            f"in {st['seconds']:.0f} s "
            f"({st['texts_s']:,.0f} texts/s), RSS sampled every {meta['sample_s']:.0f} s ({len(st['samples'])} "
            f"samples). After the warm-up (the first 10 % of the texts): first {a['first']:.1f} MB, last "
            f"{a['last']:.1f} MB, max {a['max']:.1f} MB (growth {st['growth']:+.1%}): "
            f"{'flat' if st['flat'] else '**not flat**'} (bound: within {FLAT_TOLERANCE:.0%}).",
        ]
        if "stream_load_start" in meta:
            lines[-1] += f" Measured in a run of its own (--stream-only), load average {meta['stream_load_start']:.2f}."
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--latency-texts", type=int, default=LATENCY_TEXTS, help="single-text calls")
    parser.add_argument("--big-texts", type=int, default=256, help="STS sentences for the 1 GB model's throughput")
    parser.add_argument("--stream-texts", type=int, default=100_000)
    parser.add_argument("--stream-threads", type=int, default=2)
    parser.add_argument("--minilm-texts", type=int, default=0, help="STS sentences for MiniLM's rates (0: all)")
    parser.add_argument("--sample-s", type=float, default=5.0)
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to wait for a quiet machine")
    parser.add_argument("--busy-ok", action="store_true", help="measure on a busy machine (says its load)")
    parser.add_argument("--skip-peer", action="store_true", help="embellama alone")
    parser.add_argument("--compute-type", default="auto", help="embellama's compute_type (default: auto, the default)")
    parser.add_argument("--out", type=Path, default=RESULTS / "seed")
    parser.add_argument(
        "--stream-only", action="store_true", help="measure the embed_iter stream alone, into the results JSON at --out"
    )
    parser.add_argument("--render", type=Path, help="write the Markdown of a results JSON again, measure nothing")
    args = parser.parse_args(argv)
    if args.render:
        saved = json.loads(args.render.read_text(encoding="utf-8"))
        saved["targets"] = targets(saved["big"], saved["minilm"], saved["meta"]["threads"], saved["meta"]["busy"])
        args.render.write_text(json.dumps(saved, indent=2) + "\n", encoding="utf-8")
        args.render.with_suffix(".md").write_text(markdown(saved), encoding="utf-8")
        return 0

    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(HERE))
    from quiet import cpu_name, wait_until_quiet

    from tests.support import big_model, make_model

    try:
        load_start = wait_until_quiet(args.wait)
        busy = False
    except SystemExit:
        if not args.busy_ok:
            raise
        load_start, busy = os.getloadavg()[0], True
        print(f"busy machine (load {load_start:.2f}): measuring anyway (--busy-ok)", file=sys.stderr, flush=True)

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    sentences = read_sts()
    minilm_path = str(make_model.ensure_models(verbose=False)["f16"])
    env = dict(os.environ, EMBELLAMA_BACKEND="cpu", LLAMA_CPP_LIB_PATH=str(LIB_DIR), HF_HUB_OFFLINE="1")
    env.setdefault("EMBELLAMA_LIB", "")

    def measure_stream() -> dict[str, Any]:
        job = dict(work="stream", tool="embellama", model=minilm_path, texts=sentences, threads=args.stream_threads,
                   count=args.stream_texts, sample_s=args.sample_s, chunk_size=1024,
                   config={"compute_type": args.compute_type})  # fmt: skip
        result = spawn(job, env, 3600)
        log(f"embed_iter: {json.dumps({k: v for k, v in result.items() if k != 'samples'})[:300]}")
        return result

    if args.stream_only:
        saved = json.loads(args.out.with_suffix(".json").read_text(encoding="utf-8"))
        saved["stream"] = measure_stream()
        saved["meta"].update(stream_threads=args.stream_threads, sample_s=args.sample_s, stream_load_start=load_start)
        saved["meta"]["stream_load_end"] = os.getloadavg()[0]
        args.out.with_suffix(".json").write_text(json.dumps(saved, indent=2) + "\n", encoding="utf-8")
        args.out.with_suffix(".md").write_text(markdown(saved), encoding="utf-8")
        return 0
    t0 = time.perf_counter()
    gguf = big_model.ensure()
    log(f"1 GB model: {gguf} ({time.perf_counter() - t0:.0f} s)")
    latency = sentences[: args.latency_texts]
    probe = "The seed's first embedding."
    base = {"threads": args.threads, "probe": probe, "n_ctx": 512, "config": {"compute_type": args.compute_type}}

    # A first load may convert the weights (compute_type) into the cache: timed apart, not in start-up.
    info = json.loads((gguf.parent / "info.json").read_text())
    big: dict[str, Any] = {
        "name": big_model.NAME, "gguf_mb": gguf.stat().st_size / 2**20, "parameters": info["parameters"],
    }  # fmt: skip
    first = spawn(dict(base, work="seed", tool="embellama", model=str(gguf), texts=[], latency=[]), env, 900)
    big["first_load_s"] = first.get("startup_s")
    log(f"first load: {first.get('startup_s', first.get('error'))}")
    big_texts = sentences[args.latency_texts : args.latency_texts + args.big_texts]
    seed_job = dict(base, work="seed", model=str(gguf), texts=big_texts, latency=latency)
    tools = ["embellama"]
    peer_version = None if args.skip_peer else have_llama_cpp_python()
    if peer_version:
        tools.append("llama-cpp-python")
    for tool in tools:
        big[tool] = spawn(dict(seed_job, tool=tool), env, 1800)
        log(f"{tool} on the 1 GB model: {json.dumps(big[tool])[:300]}")
    if "error" in big["embellama"]:
        raise SystemExit(f"embellama on the 1 GB model failed: {big['embellama']['error']}")

    # Memory with the whole context asked for (embellama's default starts a decoder's at 512 tokens and grows it;
    # n_ctx=8192 reserves a KV cache for all of it from the start, as the default did before).
    whole = spawn(dict(base, work="seed", tool="embellama", model=str(gguf), texts=[], latency=[],
                       config={"n_ctx": 8192, "compute_type": args.compute_type}), env, 900)  # fmt: skip
    big["n_ctx_whole"] = whole
    log(f"n_ctx 8192: {json.dumps(whole)[:200]}")

    minilm_texts = sentences[: args.minilm_texts] if args.minilm_texts else sentences
    minilm: dict[str, Any] = {"texts": len(minilm_texts)}
    for threads in (1, 2):
        job = dict(base, work="rate", tool="embellama", model=minilm_path, texts=minilm_texts, threads=threads,
                   latency=latency if threads == args.threads else [])  # fmt: skip
        minilm[f"rate_{threads}"] = spawn(job, env, 900)
        log(f"MiniLM at {threads} thread(s): {json.dumps(minilm[f'rate_{threads}'])[:200]}")
    minilm["latency"] = minilm[f"rate_{args.threads}"]["latency_ms"]
    # On a busy machine two spinning ggml threads wait for each other's core: the measured 2-thread efficiency is
    # the contention's, so the projection scales linearly (an upper bound) and says so.
    minilm["projection"] = projection(
        minilm["rate_1"]["texts_cpu_s"],
        minilm["rate_1"]["texts_cpu_s"] if busy else minilm["rate_2"]["texts_cpu_s"],
    )
    minilm["efficiency_2_measured"] = minilm["rate_2"]["texts_cpu_s"] / minilm["rate_1"]["texts_cpu_s"]
    # The 1 GB model's texts per CPU-second at --threads, scaled with MiniLM's 2-thread efficiency.
    big["per_core"] = big["embellama"]["texts_cpu_s"]
    big["cores_needed"] = TARGETS["texts_s"] / (big["per_core"] * min(1.0, minilm["projection"]["efficiency_2"]))

    stream = measure_stream()

    manifest = LIB_DIR / "manifest.json"
    commit = json.loads(manifest.read_text()).get("llama_cpp_commit", "unknown") if manifest.is_file() else "unknown"
    report: dict[str, Any] = {
        "meta": {
            "cpu": cpu_name(), "threads": args.threads, "load_start": load_start, "load_end": os.getloadavg()[0],
            "busy": busy, "embellama": big["embellama"]["version"], "llama_cpp": str(commit)[:12],
            "llama_cpp_python": peer_version, "sample_s": args.sample_s, "stream_threads": args.stream_threads,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "compute_type": args.compute_type,
        },
        "big": big, "minilm": minilm, "stream": stream,
    }  # fmt: skip
    report["targets"] = targets(big, minilm, args.threads, busy)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    args.out.with_suffix(".md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "worker":
        worker(sys.argv[2])
    else:
        raise SystemExit(main())
