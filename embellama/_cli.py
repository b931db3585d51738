"""The ``embellama`` command: ``doctor``, ``embed`` and ``demo``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import _convert
from ._config import ModelConfig, PoolingStrategy
from ._exceptions import ConfigurationError, EmbellamaError, ModelNotFoundError
from ._lib import load_library
from ._model import EmbeddingModel

DEMO_SENTENCES = [
    "A man is playing a guitar.",
    "Someone is playing an instrument.",
    "A woman is slicing an onion.",
    "A chef is chopping vegetables in the kitchen.",
    "The stock market fell sharply today.",
]


def _doctor(args: argparse.Namespace) -> int:
    lib = load_library(args.lib)
    manifest = lib.manifest or {}
    report: dict[str, Any] = {
        "library": str(lib.path),
        "found_by": lib.source,
        "llama_version": lib.version,
        "llama_cpp_commit": lib.commit,
        "backend": lib.backend,
        "portable": manifest.get("portable"),
        "gpu_offload": lib.supports_gpu_offload(),
        "abi_check": "manifest layout + defaults" if lib.manifest else "defaults only (no manifest)",
        "devices": lib.devices(),
        "system_info": lib.system_info(),
        "warnings": lib.warnings,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for key, value in report.items():
        if key == "devices":
            print("devices:")
            for dev in value:
                mem = dev["memory_total"] / 2**30
                print(f"  - {dev['name']} ({dev['type']}): {dev['description']}, {mem:.1f} GiB")
        elif key == "warnings":
            continue  # already logged by the loader
        else:
            print(f"{key}: {value}")
    return 0


def _config(args: argparse.Namespace) -> ModelConfig:
    return ModelConfig(
        model_path=args.model,
        pooling=args.pooling,
        normalize=not args.no_normalize,
        n_threads=args.threads,
        n_gpu_layers=args.gpu_layers,
        compute_type=args.compute_type,
    )


def _embed(args: argparse.Namespace) -> int:
    texts = list(args.text) or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    with EmbeddingModel(_config(args)) as model:
        vectors = model.embed_batch(texts, show_progress_bar=args.progress)
    if isinstance(vectors, list):
        out = [v.tolist() for v in vectors]
    else:
        out = vectors.tolist()
    json.dump({"model": model.name, "embeddings": out}, sys.stdout)
    sys.stdout.write("\n")
    return 0


def _demo(args: argparse.Namespace) -> int:
    sentences = list(args.text) or DEMO_SENTENCES
    if args.pooling is not None and PoolingStrategy.parse(args.pooling) is PoolingStrategy.NONE:
        raise ConfigurationError(
            "demo compares one vector per sentence; --pooling none gives one per token "
            "(use mean, cls, max, mean_sqrt or last, or 'embellama embed --pooling none')"
        )
    started = time.perf_counter()
    with EmbeddingModel(_config(args)) as model:
        loaded = time.perf_counter()
        vectors = model.embed_batch(sentences)
        done = time.perf_counter()
        print(
            f"model: {model.name} ({model.model.description}), {model.embedding_dimensions} dims, "
            f"pooling {model.pooling.value}"
        )
    lib = load_library()
    print(f"libllama {lib.version} ({lib.backend}) from {lib.path}")
    print(f"loaded in {loaded - started:.2f} s, embedded {len(sentences)} sentences in {(done - loaded) * 1000:.1f} ms")
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = vectors @ vectors.T
    print("\ncosine similarity:")
    for i, text in enumerate(sentences):
        row = "  ".join(f"{s:5.2f}" for s in sims[i])
        print(f"  [{i}] {row}   {text}")
    print()
    for i in range(len(sentences)):
        j = int(np.argsort(-sims[i])[1])
        print(f"  closest to [{i}] is [{j}] ({sims[i, j]:.2f}): {sentences[j]}")
    return 0


def _convert_cmd(args: argparse.Namespace) -> int:
    source: Path = args.source
    out: Path = args.output
    started = time.perf_counter()
    if source.is_dir():
        tree = _convert.llama_source(args.llama_src, None)
        _convert.convert_hf(source, out, args.type, tree)
    elif source.is_file():
        _convert.convert_gguf(source, out, args.type, load_library(), n_threads=args.threads or 0)
    else:
        raise ModelNotFoundError(str(source))
    size = out.stat().st_size / 2**20
    print(f"wrote {out} ({args.type.upper()}, {size:.1f} MiB) in {time.perf_counter() - started:.1f} s")
    return 0


def _cache_cmd(args: argparse.Namespace) -> int:
    folder = _convert.cache_dir() / "converted"
    if args.clear:
        files, size = _convert.clear_converted()
        print(f"removed {files} converted model(s), {size / 2**20:.1f} MiB, from {folder}")
        return 0
    paths = sorted(folder.glob("*.gguf")) if folder.is_dir() else []
    total = sum(p.stat().st_size for p in paths)
    print(f"{folder}: {len(paths)} converted model(s), {total / 2**20:.1f} MiB")
    for path in paths:
        print(f"  {path.name}  {path.stat().st_size / 2**20:.1f} MiB")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``embellama`` command."""
    parser = argparse.ArgumentParser(prog="embellama", description="Text embeddings with llama.cpp.")
    parser.add_argument("--lib", help="libllama file or folder (default: $EMBELLAMA_LIB, then the built one)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="-v: info, -vv: llama.cpp's log too")
    sub = parser.add_subparsers(dest="command", required=True)

    doctor = sub.add_parser("doctor", help="show which libllama is used, its backend and devices")
    doctor.add_argument("--json", action="store_true", help="print JSON")
    doctor.set_defaults(func=_doctor)

    for name, func, help_text in (
        ("embed", _embed, "print embeddings of texts (arguments or stdin lines) as JSON"),
        ("demo", _demo, "embed a few sentences and print their similarities"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("model", type=Path, help="GGUF model file")
        p.add_argument("text", nargs="*", help="texts (default: stdin lines for embed, examples for demo)")
        p.add_argument("--pooling", help="mean, cls, max, mean_sqrt, last or none (default: the model's)")
        p.add_argument("--no-normalize", action="store_true", help="skip L2 normalization")
        p.add_argument("--threads", type=int, help="CPU threads")
        p.add_argument("--gpu-layers", type=int, default=-1, help="layers to offload (-1: all)")
        p.add_argument("--progress", action="store_true", help="show progress on stderr")
        p.add_argument(
            "--compute-type",
            default="auto",
            choices=_convert.COMPUTE_TYPES,
            help="weight type to compute with (default auto: BF16 on CPUs with AVX512_BF16)",
        )
        p.set_defaults(func=func)

    convert = sub.add_parser(
        "convert", help="write a GGUF of another weight type from a GGUF or a Hugging Face model folder"
    )
    convert.add_argument("source", type=Path, help="a GGUF file, or a Hugging Face model folder")
    convert.add_argument("output", type=Path, help="the GGUF file to write")
    convert.add_argument("--type", default="bf16", choices=sorted(_convert.FTYPE_CODES), help="weight type")
    convert.add_argument("--threads", type=int, help="threads for the quantizer")
    convert.add_argument("--llama-src", help="llama.cpp source tree (for a model folder: its convert_hf_to_gguf.py)")
    convert.set_defaults(func=_convert_cmd)

    cache = sub.add_parser("cache", help="list (or --clear) the models compute_type converted into the cache")
    cache.add_argument("--clear", action="store_true", help="delete them")
    cache.set_defaults(func=_cache_cmd)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``embellama`` console script."""
    args = build_parser().parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # llama.cpp's own lines: errors only, unless -vv
    logging.getLogger("embellama.llama").setLevel(logging.DEBUG if args.verbose >= 2 else logging.ERROR)
    try:
        if args.lib and args.command != "doctor":
            load_library(args.lib)
        return int(args.func(args))
    except EmbellamaError as exc:
        print(f"embellama: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
