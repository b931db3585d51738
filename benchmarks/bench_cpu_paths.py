# SPDX-License-Identifier: Apache-2.0
"""The CPU levers of issue 28 measured one against another: weight types, ggml's thread pool, and a BLAS library.

    python benchmarks/bench_cpu_paths.py --rounds 5                  # -> benchmarks/results/cpu-paths.{json,md}
    python build_llama.py --blas --prefix /tmp/blas                  # then, to add OpenBLAS (scipy-openblas32):
    python benchmarks/bench_cpu_paths.py --rounds 5 --blas-lib /tmp/blas

Every variant runs in a process of its own, once per round, rounds interleaved, 2 threads, on the short corpus
(STS-B test sentences) and the long one (passages of >= 200 words); texts/s of ``embed_batch`` after one warm-up
call. The variants:

- **weights**: the same F16 file run as F16 (``compute_type="off"``), BF16 and F32 (converted once, cached), and as
  ``"auto"`` chooses, for all-MiniLM-L6-v2 and for a random BERT-base-size model (768 wide, 12 layers, 110 M
  weights; built here with transformers and llama.cpp's converter, cached; skipped without them);
- **thread pool**: a persistent ggml thread pool attached to the context (``llama_attach_threadpool``, as
  ``llama-embedding`` does) instead of the one ggml makes for each graph, polling 0 or 50 (ggml's default), and
  pinned to the first CPUs; it matters for builds without OpenMP (the portable build, the wheel);
- **BLAS** (``--blas-lib``): F32 weights through ggml's BLAS backend, with OpenMP's default (spinning) wait
  policy and with ``OMP_WAIT_POLICY=PASSIVE``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import quiet  # noqa: E402
from bench import make_passages, read_sts  # noqa: E402

SHORT, LONG = 1200, 48


def base_size_model() -> Path | None:
    """A random-weight BERT-base-size model (MiniLM's vocabulary) as an F16 GGUF, built once into the cache."""
    from embellama._native import cache_dir
    from tests.support.make_model import hf_model_dir, llama_source

    out = cache_dir() / "bench" / "bert-base-random" / "bert-base-random.F16.gguf"
    if out.is_file():
        return out
    try:
        import torch
        from transformers import BertConfig, BertModel
    except ImportError:
        return None
    hf = out.parent / "hf"
    source = hf_model_dir()
    config = BertConfig.from_pretrained(source)
    config.hidden_size, config.intermediate_size = 768, 3072
    config.num_hidden_layers = config.num_attention_heads = 12
    torch.manual_seed(0)
    BertModel(config).save_pretrained(hf)
    for path in source.rglob("*"):  # the tokenizer and sentence-transformers' pooling, not the weights
        if path.is_file() and path.name not in ("config.json", "model.safetensors", "pytorch_model.bin"):
            (hf / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
            (hf / path.relative_to(source)).write_bytes(path.read_bytes())
    (hf / "1_Pooling").mkdir(exist_ok=True)
    pooling = source / "1_Pooling" / "config.json"
    (hf / "1_Pooling" / "config.json").write_bytes(pooling.read_bytes())
    src = llama_source()
    partial = out.with_suffix(".partial")
    subprocess.run(
        [sys.executable, str(src / "convert_hf_to_gguf.py"), str(hf), "--outtype", "f16", "--outfile", str(partial)],
        check=True,
        capture_output=True,
        env=dict(os.environ, PYTHONPATH=str(src / "gguf-py")),
    )
    partial.replace(out)
    return out


def attach_threadpool(model: Any, poll: int, pin: bool) -> Any:
    """Attach a persistent ggml thread pool to ``model``'s context; returns the pool (keep it alive)."""
    import cffi

    ffi = cffi.FFI()
    ffi.cdef(
        """
        typedef struct ggml_backend_reg *ggml_backend_reg_t;
        typedef struct ggml_backend_device *ggml_backend_dev_t;
        ggml_backend_dev_t ggml_backend_dev_by_type(int type);
        ggml_backend_reg_t ggml_backend_dev_backend_reg(ggml_backend_dev_t device);
        void *ggml_backend_reg_get_proc_address(ggml_backend_reg_t reg, const char *name);
        struct ggml_threadpool_params { bool cpumask[512]; int n_threads; int prio; uint32_t poll;
                                        bool strict_cpu; bool paused; };
        struct ggml_threadpool_params ggml_threadpool_params_default(int n_threads);
        void llama_attach_threadpool(void *ctx, void *threadpool, void *threadpool_batch);
        """
    )
    context = model.context
    lib = ffi.dlopen(str(context._lib.path))
    reg = lib.ggml_backend_dev_backend_reg(lib.ggml_backend_dev_by_type(0))  # the CPU device
    new = ffi.cast(
        "void *(*)(struct ggml_threadpool_params *)", lib.ggml_backend_reg_get_proc_address(reg, b"ggml_threadpool_new")
    )
    params = ffi.new("struct ggml_threadpool_params *", lib.ggml_threadpool_params_default(context.params.n_threads))
    params.poll = poll
    if pin:
        params.strict_cpu = True
        for cpu in range(context.params.n_threads):
            params.cpumask[cpu] = True
    pool = new(params)
    raw = ffi.cast("void *", int(context._lib.ffi.cast("uintptr_t", context._handle())))
    lib.llama_attach_threadpool(raw, pool, pool)
    return (ffi, lib, pool)


def child(spec: dict[str, Any]) -> dict[str, float]:
    """One variant, once: texts/s on each corpus."""
    from embellama import EmbeddingModel, ModelConfig

    sentences, _ = read_sts()
    corpora = {"short": sentences[:SHORT], "long": make_passages(sentences)[:LONG]}
    config = ModelConfig(model_path=spec["model"], n_threads=2, compute_type=spec["compute_type"])
    with EmbeddingModel(config) as model:
        keep = attach_threadpool(model, spec["poll"], spec["pin"]) if spec.get("poll") is not None else None
        model.embed_batch(corpora["short"][:64])
        rates = {}
        for name, texts in corpora.items():
            start = time.perf_counter()
            model.embed_batch(texts)
            rates[name] = len(texts) / (time.perf_counter() - start)
        rates["ftype"] = model.model.ftype
        del keep
    return rates


def variants(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    from tests.support.make_model import ensure_models

    minilm = str(ensure_models()["f16"])
    out: dict[str, dict[str, Any]] = {}
    models = {"MiniLM": minilm}
    base = base_size_model()
    if base is not None:
        models["BERT-base size"] = str(base)
    for label, path in models.items():
        for ct in ("off", "bf16", "f32", "auto"):
            out[f"{label}, {'F16 (off)' if ct == 'off' else ct}"] = {
                "group": "weights",
                "model": path,
                "compute_type": ct,
            }
    out["MiniLM auto, a pool per graph (ggml's default)"] = {
        "group": "thread pool",
        "model": minilm,
        "compute_type": "auto",
    }
    for poll, pin in ((0, False), (50, False), (0, True)):
        out[f"MiniLM auto, thread pool poll {poll}{', pinned' if pin else ''}"] = {
            "group": "thread pool",
            "model": minilm,
            "compute_type": "auto",
            "poll": poll,
            "pin": pin,
        }
    if args.blas_lib:
        builds = {"tinyBLAS": args.native_lib, "OpenBLAS": args.blas_lib}
        for policy in ("", "PASSIVE"):
            for kernel, lib in builds.items():
                env = {"OMP_WAIT_POLICY": policy} if policy else {}
                if lib is not None:
                    env["EMBELLAMA_LIB"] = str(lib)
                out[f"MiniLM f32, {kernel}{', OMP_WAIT_POLICY=' + policy if policy else ''}"] = {
                    "group": "BLAS",
                    "model": minilm,
                    "compute_type": "f32",
                    "env": env,
                }
    return out


def render(report: dict[str, Any]) -> str:
    lines = [
        "# CPU levers: weight types, ggml's thread pool, BLAS",
        "",
        f"{report['cpu']}; 2 threads; load average {report['load_start']:.2f} at the start, "
        f"{report['load_end']:.2f} at the end; {report['rounds']} interleaved rounds, each variant in a process of "
        "its own; library: "
        f"{report['library']}. Ratios are to the first row of each group (medians).",
        "",
        "| group | variant | short texts/s (median, min-max) | × | long texts/s (median, min-max) | × |",
        "|---|---|---|---|---|---|",
    ]
    first: dict[str, dict[str, float]] = {}
    for name, row in report["rows"].items():
        base = first.setdefault(row["group"], row["median"])
        cells = []
        for corpus in ("short", "long"):
            runs, median = row["runs"][corpus], row["median"][corpus]
            cells.append(f"{median:.1f} ({min(runs):.1f}-{max(runs):.1f}) | {median / base[corpus]:.2f}")
        lines.append(f"| {row['group']} | {name} | {cells[0]} | {cells[1]} |")
    if report["verdict"]:
        lines += ["", "Rounds spreading more than 15 % (the benchmarks' rule for a ratio that may be published):", ""]
        lines += [f"- {line}" for line in report["verdict"]]
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to wait for a quiet machine")
    parser.add_argument("--max-load", type=float, default=quiet.MAX_LOAD)
    parser.add_argument("--blas-lib", type=Path, help="a build_llama.py --blas install folder")
    parser.add_argument(
        "--native-lib", type=Path, help="the same build without --blas, to compare with (default: the library found)"
    )
    parser.add_argument("--only", help="run the variants whose name contains this")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    load_start = quiet.wait_until_quiet(args.wait, max_load=args.max_load)
    from embellama import get_library

    library = get_library()
    todo = {k: v for k, v in variants(args).items() if not args.only or args.only in k}
    runs: dict[str, dict[str, list[float]]] = {k: {"short": [], "long": []} for k in todo}
    ftypes: dict[str, int] = {}
    for r in range(args.rounds):
        for name, spec in todo.items() if r % 2 == 0 else reversed(todo.items()):
            env = dict(os.environ, **spec.get("env", {}))
            proc = subprocess.run(
                [sys.executable, __file__, "--child", json.dumps({k: v for k, v in spec.items() if k != "env"})],
                capture_output=True,
                text=True,
                env=env,
                check=False,
            )
            if proc.returncode != 0:
                raise SystemExit(f"{name}: {proc.stderr[-2000:]}")
            got = json.loads(proc.stdout.strip().splitlines()[-1])
            ftypes[name] = got["ftype"]
            for corpus in ("short", "long"):
                runs[name][corpus].append(got[corpus])
            print(
                f"round {r + 1}/{args.rounds} {name}: {got['short']:.1f} / {got['long']:.2f} texts/s", file=sys.stderr
            )
    rows = {}
    for name, spec in todo.items():
        rows[name] = {
            "group": spec["group"] + (f" ({name.split(',')[0]})" if spec["group"] == "weights" else ""),
            "runs": runs[name],
            "median": {c: statistics.median(v) for c, v in runs[name].items()},
            "ftype": ftypes[name],
        }
    spreads = [(f"{n} {c}", quiet.spread(v)) for n, row in rows.items() for c, v in row["runs"].items()]
    report = {
        "cpu": quiet.cpu_name(),
        "load_start": load_start,
        "load_end": os.getloadavg()[0],
        "rounds": args.rounds,
        "library": f"{library.path} ({'OpenMP' if 'OPENMP = 1' in library.system_info() else 'no OpenMP'})",
        "rows": rows,
        "verdict": quiet.verdict(spreads),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cpu-paths.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (args.out / "cpu-paths.md").write_text(render(report), encoding="utf-8")
    print(render(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
