# SPDX-License-Identifier: Apache-2.0
"""The ``embellama`` command: ``doctor``, ``info``, ``embed``, ``rerank``, ``demo``, ``serve``, ``convert``,
``prompts``, ``build`` and ``cache``."""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import itertools
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

import numpy as np

from embellama._compute import output as _output
from embellama._compute import prompts as _prompts
from embellama._config import EngineConfig, ModelConfig, PoolingStrategy
from embellama._exceptions import ConfigurationError, EmbellamaError, ModelNotFoundError
from embellama._gguf import convert as _convert
from embellama._gguf import prompts as _gguf_prompts
from embellama._models import ACTIVATIONS, EmbeddingModel, Reranker, is_reranker
from embellama._native import LLAMA_LOGGER_NAME, load_library, user_build_dir
from embellama._version import __version__
from embellama.llama import Model

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
        "embellama_version": __version__,
        "library": str(lib.path),
        "found_by": lib.source,
        "llama_version": lib.version,
        "llama_cpp_commit": lib.commit,
        "backend": lib.backend,
        "portable": manifest.get("portable"),
        "cpu_variant": lib.cpu_variant,
        "cpu_variants_shipped": manifest.get("cpu_variants") or [],
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
    """The model's settings from the options ``embed``, ``rerank`` and ``demo`` have (unset ones: the defaults)."""
    return ModelConfig(
        model_path=args.model,
        pooling=getattr(args, "pooling", None),
        normalize=not getattr(args, "no_normalize", False),
        n_threads=args.threads,
        n_gpu_layers=args.gpu_layers,
        compute_type=args.compute_type,
        truncate_dim=getattr(args, "truncate_dim", None),
        precision=getattr(args, "precision", "float32"),
    )


FORMATS = {".json": "json", ".jsonl": "jsonl", ".csv": "csv", ".npy": "npy"}
RERANK_FORMATS = {".json": "json", ".jsonl": "jsonl", ".csv": "csv", ".tsv": "tsv"}


def _read_texts(args: argparse.Namespace, what: str = "texts") -> list[str]:
    """The texts: the arguments, else the lines of --input (``-``: stdin), else stdin; blank lines skipped."""
    if args.text and args.input is not None:
        raise ConfigurationError(f"give the {what} as arguments or with --input, not both")
    if args.text:
        return list(args.text)
    if args.input is None or args.input == "-":
        if sys.stdin.isatty():
            raise ConfigurationError(f"no {what}: give them as arguments, with --input FILE, or on stdin")
        if isinstance(sys.stdin, io.TextIOWrapper):
            sys.stdin.reconfigure(encoding="utf-8")
        return [line.rstrip("\n") for line in sys.stdin if line.strip()]
    with open(args.input, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def _output_format(args: argparse.Namespace, formats: dict[str, str] = FORMATS) -> str:
    if args.format is not None:
        fmt: str = args.format
    elif args.output is None:
        fmt = "json"
    else:
        suffix = Path(args.output).suffix.lower()
        if suffix not in formats:
            raise ConfigurationError(
                f"cannot tell the format of {args.output} from its extension; use {', '.join(formats)} or --format"
            )
        fmt = formats[suffix]
    if fmt == "npy" and args.output is None:
        raise ConfigurationError("the npy format needs --output FILE.npy")
    return fmt


def _embed(args: argparse.Namespace) -> int:
    fmt = _output_format(args)
    texts = _read_texts(args)
    config = _config(args)
    if fmt in ("npy", "csv") and config.pooling is PoolingStrategy.NONE:
        raise ConfigurationError(
            f"--pooling none gives one vector per token, which {fmt} cannot hold; use json or jsonl"
        )
    with EmbeddingModel(config) as model:
        prompts = {"prompt_name": args.prompt_name, "prompt": args.prompt}
        if config.precision in ("int8", "uint8"):  # calibrated on every text together, as one batch
            whole = model.embed_batch(texts, show_progress_bar=args.progress, **prompts)
            chunks: Iterator[Any] = iter([whole])
        else:
            chunks = model.embed_iter(texts, chunk_size=args.chunk_size, show_progress_bar=args.progress, **prompts)
        if fmt == "npy":
            with _whole_file(args.output) as part:
                _write(fmt, None, part, model, texts, chunks)
        else:
            _deliver(args.output, lambda f: _write(fmt, f, None, model, texts, chunks))
    return 0


@contextlib.contextmanager
def _whole_file(output: str) -> Iterator[Path]:
    """A ``.part`` path to write; renamed to ``output`` when the block succeeds: the output appears whole, or not
    at all."""
    out = Path(output)
    part = out.with_name(out.name + ".part")
    try:
        yield part
        os.replace(part, out)
    finally:
        part.unlink(missing_ok=True)


def _deliver(output: str | None, write: Callable[[IO[str]], None]) -> None:
    """Run ``write`` on stdout (UTF-8) when ``output`` is None, else on the text file ``output``, written whole."""
    if output is None:
        if isinstance(sys.stdout, io.TextIOWrapper):
            sys.stdout.reconfigure(encoding="utf-8")
        write(sys.stdout)
        return
    with _whole_file(output) as part, open(part, "w", encoding="utf-8", newline="") as f:
        write(f)


def _write(
    fmt: str, f: IO[str] | None, path: Path | None, model: EmbeddingModel, texts: list[str], chunks: Iterator[Any]
) -> None:
    """Write the embeddings chunk by chunk: only one chunk of vectors is in memory at a time."""
    cfg = model.config
    dim = _output.output_width(model.embedding_dimensions, cfg.truncate_dim, cfg.precision)
    dtype = {"float32": np.float32, "int8": np.int8, "binary": np.int8}.get(cfg.precision, np.uint8)
    if fmt == "npy":
        assert path is not None
        if not texts:
            with open(path, "wb") as empty:
                np.save(empty, np.empty((0, dim), dtype))
            return
        array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(len(texts), dim))
        start = 0
        for vectors in chunks:
            array[start : start + len(vectors)] = vectors
            start += len(vectors)
        array.flush()
        del array
        return
    assert f is not None
    rows = (row for vectors in chunks for row in vectors)
    if fmt == "json":
        f.write(f'{{"model": {json.dumps(model.name)}, "embeddings": [')
        for i, row in enumerate(rows):
            f.write((", " if i else "") + json.dumps(row.tolist()))
        f.write("]}\n")
    elif fmt == "jsonl":
        for text, row in zip(texts, rows, strict=True):
            f.write(json.dumps({"text": text, "embedding": row.tolist()}, ensure_ascii=False) + "\n")
    else:
        writer = csv.writer(f)
        writer.writerow(["text", *(f"dim_{i}" for i in range(dim))])
        for text, row in zip(texts, rows, strict=True):
            writer.writerow([text, *(repr(x.item()) for x in row)])


def _rerank(args: argparse.Namespace) -> int:
    fmt = _output_format(args, RERANK_FORMATS)
    documents = _read_texts(args, "documents")
    if not documents:
        raise ConfigurationError("no documents to rank (blank lines are skipped)")
    config = _config(args)
    if not is_reranker(config):
        with Model(config.model_path, vocab_only=True):  # a missing or broken file: its own error
            pass
        raise ConfigurationError(
            f"{config.model_path} is not a reranker: it has no classification head to score pairs with "
            "(embed with it: 'embellama embed'; 'embellama info' tells the two apart)"
        )
    with Reranker(config) as reranker:
        if reranker.num_labels != 1:
            raise ConfigurationError(
                f"model {reranker.name!r} has {reranker.num_labels} outputs per pair ({', '.join(reranker.labels)}); "
                "rerank needs a model with one relevance score"
            )
        ranked = reranker.rank(
            args.query,
            documents,
            top_k=args.top_k,
            return_documents=args.return_documents,
            activation=args.activation,
            show_progress_bar=args.progress,
        )
        name = reranker.name
    # float32 scores printed in their shortest form (reads back as the same float32)
    rows = [{"index": r["corpus_id"], "score": float(str(np.float32(r["score"])))} for r in ranked]
    if args.return_documents:
        for row, r in zip(rows, ranked, strict=True):
            row["text"] = r["text"]
    _deliver(args.output, lambda f: _write_ranking(fmt, f, name, args.query, rows))
    return 0


def _write_ranking(fmt: str, f: IO[str], model: str, query: str, rows: list[dict[str, Any]]) -> None:
    """The ranked documents, best first: ``index`` (the document's position among those read), ``score`` and,
    when asked, ``text``."""
    if fmt == "json":
        f.write(json.dumps({"model": model, "query": query, "results": rows}, ensure_ascii=False) + "\n")
    elif fmt == "jsonl":
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    else:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n") if fmt == "tsv" else csv.writer(f)
        writer.writerow(list(rows[0]) if rows else ["index", "score"])
        for row in rows:
            writer.writerow(row.values())


def _pooling_used(model: Model, reranker: bool = False) -> str:
    """The pooling EmbeddingModel picks for the file by default, and why."""
    named = model.pooling_type
    if reranker or named == "rank":
        return "rank: a reranker (score pairs with 'embellama rerank'; pass --pooling to embed with it anyway)"
    if named in ("mean", "cls", "last"):
        return f"{named} (from the GGUF metadata)"
    fallback = "last" if model.is_causal else "mean"
    return f"{fallback} (the GGUF names none)"


def _reranker_info(path: Path) -> dict[str, Any] | None:
    """A reranker's head: labels, default activation, exact token types (None for an embedding model)."""
    config = ModelConfig(model_path=path, n_gpu_layers=0, n_threads=1, compute_type="off")
    if not is_reranker(config):
        return None
    try:
        with Reranker(config) as reranker:
            return {
                "labels": list(reranker.labels),
                "activation": reranker.activation,
                "exact_token_types": reranker.exact_token_types,
            }
    except ConfigurationError as exc:  # a rank-pooling GGUF that Reranker cannot score (a decoder...)
        return {"unusable": str(exc)}


def _describe_reranker(info: dict[str, Any] | None) -> str:
    if info is None:
        return "no (an embedding model)"
    if "unusable" in info:
        return f"yes, but embellama cannot score with it: {info['unusable']}"
    types = (
        "exact token types"
        if info["exact_token_types"]
        else "token types NOT exact (re-convert with 'embellama convert' for the model's scores)"
    )
    return f"yes: labels {', '.join(info['labels'])}; default activation {info['activation']}; {types}"


def _info(args: argparse.Namespace) -> int:
    path: Path = args.model
    reranker = _reranker_info(path)  # None for an embedding model, and for a file that Model then refuses
    with Model(path, n_gpu_layers=0) as model:
        ftypes = {code: name.upper() for name, code in _convert.FTYPE_CODES.items()}
        report: dict[str, Any] = {
            "path": str(path),
            "name": model.metadata_value("general.name") or path.stem,
            "architecture": model.architecture,
            "description": model.description,
            "weight_type": ftypes.get(model.ftype, model.description.split(" ", 2)[-1]),
            "parameters": model.n_params,
            "size": model.size,
            "file_size": path.stat().st_size,
            "embedding_dimensions": model.n_embd,
            "context_length": model.n_ctx_train,
            "layers": model.n_layer,
            "vocabulary": model.n_vocab,
            "tokenizer": model.vocab_type,
            "causal_attention": model.is_causal,
            "pooling": _pooling_used(model, reranker is not None),
            "reranker": reranker,
            "metadata": dict(sorted(model.metadata().items())),
        }
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return 0
    for key, value in report.items():
        if key == "metadata":
            print("metadata:")
            for name, text in value.items():
                text = text if len(text) <= 100 else text[:97] + "..."
                print(f"  {name} = {text}")
        elif key in ("size", "file_size"):
            print(f"{key}: {value} bytes ({value / 2**20:.1f} MiB)")
        elif key == "parameters":
            print(f"{key}: {value} ({value / 1e6:.1f} M)")
        elif key == "reranker":
            print(f"{key}: {_describe_reranker(value)}")
        else:
            print(f"{key}: {value}")
    return 0


def _prompts_cmd(args: argparse.Namespace) -> int:
    path: Path = args.model
    with Model(path, n_gpu_layers=0, vocab_only=True) as model:
        saved_default = model.metadata_value(_prompts.DEFAULT_PROMPT_KEY)
        saved = _prompts.parse_saved_prompts(model.metadata_value(_prompts.PROMPTS_KEY), str(path))
    if not (args.set or args.from_hf or args.default):
        print(json.dumps({"prompts": saved, "default_prompt_name": saved_default}, indent=2, ensure_ascii=False))
        return 0
    prompts, default = dict(saved), saved_default
    if args.from_hf is not None:
        prompts, default = _gguf_prompts.hf_prompts(args.from_hf)
    for item in args.set:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise ConfigurationError(f"--set expects NAME=TEXT, got {item!r}")
        prompts[name] = text
    default = args.default or default
    out = _gguf_prompts.write_prompts(path, args.output or path, prompts, default)
    print(f"wrote {out}: prompts {json.dumps(prompts, ensure_ascii=False)}, default {default!r}")
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


def _build_script() -> tuple[list[str], dict[str, str]]:
    """``python -m llamabuild`` (the build package, installed beside embellama) and its environment.

    The child finds llamabuild where this process does: its folder goes first on ``PYTHONPATH``.
    """
    import importlib.util  # only here: the CLI's start-up stays small

    spec = importlib.util.find_spec("llamabuild")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError("this embellama has no llamabuild, the package that builds libllama")
    folder = str(Path(next(iter(spec.submodule_search_locations))).parent)
    paths = [folder, *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)]
    return [sys.executable, "-m", "llamabuild"], {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def _build_cmd(args: argparse.Namespace) -> int:
    import subprocess  # only here: the CLI's start-up stays small

    prefix = Path(args.prefix) if args.prefix else user_build_dir(args.backend)
    command, env = _build_script()
    command += ["--backend", args.backend, "--prefix", str(prefix)]
    command += ["--portable"] if args.portable else []
    command += ["--cuda-arch", args.cuda_arch] if args.cuda_arch else []
    command += ["--jobs", str(args.jobs)] if args.jobs else []
    command += ["--sdist", args.sdist] if args.sdist else []
    command += ["--source", args.source] if args.source else []
    command += ["--build-dir", args.build_dir] if args.build_dir else []
    command += ["--dry-run"] if args.dry_run else []
    command += [f"--cmake-arg={arg}" for arg in args.cmake_arg]
    returncode = subprocess.run(command, env=env, check=False).returncode
    if returncode == 0 and not args.dry_run:
        print(f"embellama: built into {prefix}; embellama finds it there (embellama doctor shows what it loads)")
    return returncode


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


def _serve_configs(args: argparse.Namespace) -> tuple[list[ModelConfig], dict[str, Any]]:
    """The models to serve (files on the command line, then --config's) and the config file's other settings."""
    settings: dict[str, Any] = {}
    configs: list[ModelConfig] = []
    names = list(args.model_name or [])
    if len(names) > len(args.models):
        raise ConfigurationError(f"{len(names)} --model-name for {len(args.models)} model file(s)")
    for i, path in enumerate(args.models):
        configs.append(
            ModelConfig(
                model_path=path,
                model_name=names[i] if i < len(names) else None,
                pooling=args.pooling,
                normalize=not args.no_normalize,
                n_threads=args.threads,
                n_gpu_layers=args.gpu_layers,
                compute_type=args.compute_type,
                truncate=not args.no_truncate,
            )
        )
    if args.config is not None:
        with open(args.config, encoding="utf-8") as f:
            try:
                settings = json.load(f)
            except ValueError as exc:
                raise ConfigurationError(f"{args.config}: not valid JSON ({exc})") from None
        if not isinstance(settings, dict) or not isinstance(settings.get("models", []), list):
            raise ConfigurationError(f'{args.config}: expected {{"models": [{{"model_path": ...}}, ...], ...}}')
        base = Path(args.config).resolve().parent
        for entry in settings.get("models", []):
            if not isinstance(entry, dict) or "model_path" not in entry:
                raise ConfigurationError(f"{args.config}: each model needs a 'model_path', got {entry!r}")
            entry = dict(entry)
            path = Path(entry["model_path"]).expanduser()
            entry["model_path"] = path if path.is_absolute() else base / path
            try:
                configs.append(ModelConfig(**entry))
            except TypeError as exc:
                raise ConfigurationError(f"{args.config}: {exc}") from None
    if not configs:
        raise ConfigurationError("no model to serve: give GGUF files, or --config FILE")
    return configs, settings


def _serve(args: argparse.Namespace) -> int:
    try:
        from embellama._server import (  # starlette and uvicorn: the optional extra embellama[server]
            ServerLimits,
            serve,
        )
    except ImportError as exc:
        raise ConfigurationError(
            f"embellama serve needs the server extra ({exc}): pip install 'embellama[server]'"
        ) from None

    configs, settings = _serve_configs(args)
    engine = dict(settings.get("engine", {}))
    for key, value in (
        ("workers_per_model", args.workers),
        ("max_pending", args.max_pending),
        ("max_batch_texts", args.max_batch_texts),
        ("max_batch_wait_ms", args.max_batch_wait_ms),
        ("cache_size", args.cache_size),
    ):
        if value is not None:
            engine[key] = value
    engine.setdefault("max_pending", 1024)
    try:
        engine_config = EngineConfig(**engine)
    except TypeError as exc:
        raise ConfigurationError(f"engine settings: {exc}") from None
    limits = ServerLimits(max_body_bytes=args.max_body_bytes, max_inputs=args.max_inputs, retry_after=args.retry_after)
    api_key = args.api_key if args.api_key is not None else os.environ.get("EMBELLAMA_API_KEY") or None

    def ready(url: str) -> None:
        print(f"embellama serve: listening on {url} (models: {', '.join(c.name for c in configs)})", flush=True)

    return serve(
        configs,
        host=args.host,
        port=args.port,
        api_key=api_key,
        engine_config=engine_config,
        limits=limits,
        graceful_timeout=args.graceful_timeout,
        keep_alive=args.keep_alive,
        ready=ready,
    )


def _add_io_options(p: argparse.ArgumentParser, what: str, formats: dict[str, str], kinds: str) -> None:
    p.add_argument("-i", "--input", help=f"file with one {what} per line ('-': stdin); blank lines are skipped")
    p.add_argument("-o", "--output", help=f"file to write: {kinds} (default: stdout)")
    p.add_argument("--format", choices=sorted(set(formats.values())), help="output format (default: by extension)")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, help="CPU threads")
    p.add_argument("--gpu-layers", type=int, default=-1, help="layers to offload (-1: all)")
    p.add_argument("--progress", action="store_true", help="show progress on stderr")
    p.add_argument(
        "--compute-type",
        default="auto",
        choices=_convert.COMPUTE_TYPES,
        help="weight type to compute with (default auto: BF16 on CPUs with AVX512_BF16)",
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other error of the command."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``embellama`` command."""
    parser = _Parser(prog="embellama", description="Text embeddings with llama.cpp.")
    parser.add_argument("--version", action="version", version=f"embellama {__version__}")
    parser.add_argument("--lib", help="libllama file or folder (default: $EMBELLAMA_LIB, then the built one)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="-v: info, -vv: llama.cpp's log too")
    sub = parser.add_subparsers(dest="command", required=True)

    doctor = sub.add_parser("doctor", help="show which libllama is used, its backend and devices")
    doctor.add_argument("--json", action="store_true", help="print JSON")
    doctor.set_defaults(func=_doctor)

    info = sub.add_parser("info", help="show a GGUF model's metadata, dimensions, pooling and size")
    info.add_argument("model", type=Path, help="GGUF model file")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=_info)

    prompts = sub.add_parser(
        "prompts", help="show a GGUF's prompts, or write a copy with prompts set (needs gguf: embellama[gguf])"
    )
    prompts.add_argument("model", type=Path, help="GGUF model file")
    prompts.add_argument("--set", action="append", default=[], metavar="NAME=TEXT", help="set a prompt (repeatable)")
    prompts.add_argument("--from-hf", type=Path, help="take the prompts of a sentence-transformers model folder")
    prompts.add_argument("--default", help="the default prompt name")
    prompts.add_argument("-o", "--output", type=Path, help="the GGUF to write (default: the model file, in place)")
    prompts.set_defaults(func=_prompts_cmd)

    for name, func, help_text in (
        (
            "embed",
            _embed,
            "embed texts (arguments, --input FILE or stdin lines) into JSON on stdout, or .npy, .jsonl or .csv",
        ),
        ("demo", _demo, "embed a few sentences and print their similarities"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("model", type=Path, help="GGUF model file")
        p.add_argument("text", nargs="*", help="texts (default: stdin lines for embed, examples for demo)")
        if name == "embed":
            _add_io_options(p, "text", FORMATS, ".npy (float32 rows), .jsonl, .csv or .json")
            p.add_argument("--chunk-size", type=int, default=1024, help="texts embedded and written at a time")
            p.add_argument("--prompt-name", help="prepend the model's prompt of this name (see 'embellama prompts')")
            p.add_argument("--prompt", help="prepend this text to every text (wins over --prompt-name)")
            p.add_argument("--truncate-dim", type=int, help="keep the first N dimensions (cut before normalizing)")
            p.add_argument(
                "--precision",
                default="float32",
                choices=_output.PRECISIONS,
                help="output type (int8/uint8: ranges from all the texts; binary kinds: 8 dimensions a byte)",
            )
        p.add_argument("--pooling", help="mean, cls, max, mean_sqrt, last or none (default: the model's)")
        p.add_argument("--no-normalize", action="store_true", help="skip L2 normalization")
        _add_run_options(p)
        p.set_defaults(func=func)

    rerank = sub.add_parser(
        "rerank", help="rank documents (arguments, --input FILE or stdin lines) by a reranker's score for --query"
    )
    rerank.add_argument("model", type=Path, help="GGUF file of a reranker (cross-encoder)")
    rerank.add_argument("text", nargs="*", metavar="DOCUMENT", help="documents (default: stdin lines)")
    rerank.add_argument("-q", "--query", required=True, help="the query the documents are scored for")
    _add_io_options(rerank, "document", RERANK_FORMATS, ".json, .jsonl, .csv or .tsv")
    rerank.add_argument("--top-k", type=_positive_int, help="print only the best K documents (default: all)")
    rerank.add_argument("--return-documents", action="store_true", help="print each document's text too")
    rerank.add_argument(
        "--activation",
        choices=ACTIVATIONS,
        help="applied to the scores (default: the model's, else sigmoid; identity: the raw logits)",
    )
    _add_run_options(rerank)
    rerank.set_defaults(func=_rerank)

    srv = sub.add_parser(
        "serve",
        help=(
            "serve models over HTTP: OpenAI-compatible /v1/embeddings, /v1/rerank, /v1/models, /health "
            "(needs embellama[server])"
        ),
    )
    srv.add_argument("models", nargs="*", type=Path, help="GGUF model files (the first is the default model)")
    srv.add_argument("--model-name", action="append", help="name of the n-th model file (repeat; default: its stem)")
    srv.add_argument(
        "--config", help='JSON file: {"models": [{"model_path": ..., ModelConfig fields}], "engine": {...}}'
    )
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    srv.add_argument("--port", type=int, default=8080, help="port (default 8080; 0: a free one, printed)")
    srv.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (default: $EMBELLAMA_API_KEY)")
    srv.add_argument("--workers", type=int, help="copies of each model, each on its own thread (default 1)")
    srv.add_argument(
        "--max-pending", type=int, help="requests queued or running before 503 + Retry-After (default 1024)"
    )
    srv.add_argument("--max-batch-texts", type=int, help="dynamic batching: most texts per joined call (0: one call)")
    srv.add_argument("--max-batch-wait-ms", type=float, help="dynamic batching: wait for more requests (default 0)")
    srv.add_argument("--cache-size", type=int, help="LRU cache of single-text embeddings (default 0: off)")
    srv.add_argument("--max-inputs", type=int, default=2048, help="most inputs per request (default 2048)")
    srv.add_argument("--max-body-bytes", type=int, default=16 * 2**20, help="largest request body (default 16 MiB)")
    srv.add_argument("--retry-after", type=int, default=1, help="Retry-After seconds on 503 (default 1)")
    srv.add_argument(
        "--graceful-timeout", type=float, default=30.0, help="seconds to finish running requests on SIGTERM"
    )
    srv.add_argument("--keep-alive", type=int, default=75, help="seconds idle connections stay open (default 75)")
    srv.add_argument("--pooling", help="mean, cls, max, mean_sqrt or last (default: the model's)")
    srv.add_argument("--no-normalize", action="store_true", help="skip L2 normalization")
    srv.add_argument("--no-truncate", action="store_true", help="refuse over-long inputs (400) instead of cutting")
    srv.add_argument("--threads", type=int, help="CPU threads per model copy")
    srv.add_argument("--gpu-layers", type=int, default=-1, help="layers to offload (-1: all)")
    srv.add_argument("--compute-type", default="auto", choices=_convert.COMPUTE_TYPES, help="weight type")
    srv.set_defaults(func=_serve)

    convert = sub.add_parser(
        "convert", help="write a GGUF of another weight type from a GGUF or a Hugging Face model folder"
    )
    convert.add_argument("source", type=Path, help="a GGUF file, or a Hugging Face model folder")
    convert.add_argument("output", type=Path, help="the GGUF file to write")
    convert.add_argument("--type", default="bf16", choices=sorted(_convert.FTYPE_CODES), help="weight type")
    convert.add_argument("--threads", type=int, help="threads for the quantizer")
    convert.add_argument("--llama-src", help="llama.cpp source tree (for a model folder: its convert_hf_to_gguf.py)")
    convert.set_defaults(func=_convert_cmd)

    build = sub.add_parser(
        "build",
        help="build libllama (CPU, CUDA, Metal, Vulkan) into the user cache, where embellama finds it",
        description=(
            "Builds the llama.cpp that this embellama is pinned to with CMake and a C/C++ compiler (and the "
            "backend's SDK), fetching its source with pip unless --sdist/--source names it, into "
            "<cache>/lib/embellama-<commit>-<backend>, which the loader tries before the package's own "
            "libllama. Incremental: the build folder is kept in the cache."
        ),
    )
    build.add_argument("--backend", default="cpu", choices=("cpu", "cuda", "metal", "vulkan"), help="default: cpu")
    build.add_argument(
        "--portable", action="store_true", help="every CPU variant, as the wheel (default: tuned to this CPU)"
    )
    build.add_argument("--cuda-arch", help="CMAKE_CUDA_ARCHITECTURES, e.g. 90 (default: the local GPUs')")
    build.add_argument("--cmake-arg", action="append", default=[], help="extra CMake option (repeatable)")
    build.add_argument("--jobs", type=int, help="parallel compile jobs (default: the CPU count)")
    build.add_argument("--sdist", help="a downloaded llama-cpp-python sdist of the pinned version (offline)")
    build.add_argument("--source", help="a llama.cpp source tree to build in place")
    build.add_argument("--prefix", help="install folder (default: the user cache, see above)")
    build.add_argument("--build-dir", help="CMake build folder (default: <cache>/build/...; kept for the next build)")
    build.add_argument("--dry-run", action="store_true", help="print the plan; build nothing")
    build.set_defaults(func=_build_cmd)

    cache = sub.add_parser("cache", help="list (or --clear) the models compute_type converted into the cache")
    cache.add_argument("--clear", action="store_true", help="delete them")
    cache.set_defaults(func=_cache_cmd)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``embellama`` console script."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:  # texts after an option (embed MODEL --threads 2 TEXT...): argparse took the positionals before it
        if getattr(args, "text", None) is None:  # a command that takes no texts
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        texts = list(itertools.takewhile(lambda e: not e.startswith("-"), extras))
        if len(texts) < len(extras):
            parser.error(f"unrecognized arguments: {' '.join(extras[len(texts) :])}")
        args.text = [*args.text, *texts]
    level = logging.WARNING if args.verbose == 0 else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # llama.cpp's own lines: errors only, unless -vv
    logging.getLogger(LLAMA_LOGGER_NAME).setLevel(logging.DEBUG if args.verbose >= 2 else logging.ERROR)
    if args.command == "serve":
        # Before libggml (and its OpenMP) loads: idle OpenMP threads sleep instead of spinning. In a server the
        # event loop shares the cores with inference; spinning threads starved it and the compute's own
        # barriers (requests stalled for seconds; benchmarks/results/serve.md). Set it yourself to override.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        if args.lib and args.command != "doctor":
            load_library(args.lib)
        return int(args.func(args))
    except (EmbellamaError, OSError, UnicodeDecodeError) as exc:
        if isinstance(exc, BrokenPipeError):  # the reader of stdout went away (| head): stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
        message = str(exc) if isinstance(exc, EmbellamaError) else f"{type(exc).__name__}: {exc}"
        print(f"embellama: error: {' '.join(message.split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("embellama: interrupted", file=sys.stderr)
        return 130
