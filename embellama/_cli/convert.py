# SPDX-License-Identifier: Apache-2.0
"""``embellama convert`` (a GGUF of another weight type), ``prompts`` (a GGUF's prompts) and ``cache`` (the
models compute_type converted)."""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from embellama._cli.common import Subparsers
from embellama._compute import prompts as compute_prompts
from embellama._exceptions import ConfigurationError, ModelNotFoundError
from embellama._gguf import convert as gguf_convert
from embellama._gguf import heads as gguf_heads
from embellama._gguf import prompts as gguf_prompts
from embellama._hub.reference import check_repo_id, is_reference, parse_reference
from embellama._hub.resolve import snapshot_folder
from embellama._native import load_library
from embellama.llama import Model

__all__ = [
    "add_cache_parser",
    "add_convert_parser",
    "add_prompts_parser",
    "cache_command",
    "convert_command",
    "prompts_command",
]


def prompts_command(args: argparse.Namespace) -> int:
    """``embellama prompts``: print a GGUF's prompts, or write a copy with prompts set."""
    path: Path = args.model
    with Model(path, n_gpu_layers=0, vocab_only=True) as model:
        saved_default = model.metadata_value(compute_prompts.DEFAULT_PROMPT_KEY)
        saved = compute_prompts.parse_saved_prompts(model.metadata_value(compute_prompts.PROMPTS_KEY), str(path))
    if not (args.set or args.from_hf or args.default):
        print(json.dumps({"prompts": saved, "default_prompt_name": saved_default}, indent=2, ensure_ascii=False))
        return 0
    prompts, default = dict(saved), saved_default
    if args.from_hf is not None:
        prompts, default = gguf_prompts.hf_prompts(args.from_hf)
    for item in args.set:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise ConfigurationError(f"--set expects NAME=TEXT, got {item!r}")
        prompts[name] = text
    default = args.default or default
    out = gguf_prompts.write_prompts(path, args.output or path, prompts, default)
    print(f"wrote {out}: prompts {json.dumps(prompts, ensure_ascii=False)}, default {default!r}")
    return 0


def _hub_source(text: str) -> Path | None:
    """A Hub repository named by ``org/repo`` or ``hf://org/repo[@revision]`` (that is not a local path) as its
    snapshot folder in the Hugging Face cache (downloaded if missing and allowed); None for a local path."""
    if is_reference(text):
        ref = parse_reference(text)
        if ref.filename is not None:
            raise ConfigurationError(f"{text}: convert takes a repository (hf://org/repo[@revision]), not a file")
        return snapshot_folder(ref.repo_id, revision=ref.revision)
    if Path(text).exists() or text.count("/") != 1:
        return None
    try:
        check_repo_id(text)
    except ConfigurationError:
        return None
    return snapshot_folder(text)


def convert_command(args: argparse.Namespace) -> int:
    """``embellama convert``: a GGUF file, a Hugging Face model folder or a Hub repository (``org/repo``, from
    the Hugging Face cache first) to a GGUF of ``--type``."""
    source = _hub_source(args.source) or Path(args.source)
    out: Path = args.output
    started = time.perf_counter()
    if source.is_dir():
        tree = gguf_convert.llama_source(args.llama_src, None)
        gguf_convert.convert_hf(source, out, args.type, tree)
        if (heads := gguf_heads.write_heads(source, out)) is not None:
            print(f"wrote {heads} (the heads llama.cpp's converter drops)")
    elif source.is_file():
        gguf_convert.convert_gguf(source, out, args.type, load_library(), n_threads=args.threads or 0)
        if gguf_heads.heads_path(source).is_file():  # the sidecar goes with the model
            shutil.copyfile(gguf_heads.heads_path(source), gguf_heads.heads_path(out))
    else:
        raise ModelNotFoundError(str(source))
    size = out.stat().st_size / 2**20
    print(f"wrote {out} ({args.type.upper()}, {size:.1f} MiB) in {time.perf_counter() - started:.1f} s")
    return 0


def cache_command(args: argparse.Namespace) -> int:
    """``embellama cache``: list (or ``--clear``) the converted models in the cache."""
    folder = gguf_convert.cache_dir() / "converted"
    if args.clear:
        files, size = gguf_convert.clear_converted()
        print(f"removed {files} converted model(s), {size / 2**20:.1f} MiB, from {folder}")
        return 0
    paths = sorted(folder.glob("*.gguf")) if folder.is_dir() else []
    total = sum(p.stat().st_size for p in paths)
    print(f"{folder}: {len(paths)} converted model(s), {total / 2**20:.1f} MiB")
    for path in paths:
        print(f"  {path.name}  {path.stat().st_size / 2**20:.1f} MiB")
    return 0


def add_prompts_parser(sub: Subparsers) -> None:
    """The ``prompts`` subcommand."""
    prompts = sub.add_parser(
        "prompts", help="show a GGUF's prompts, or write a copy with prompts set (needs gguf: embellama[gguf])"
    )
    prompts.add_argument("model", type=Path, help="GGUF model file")
    prompts.add_argument("--set", action="append", default=[], metavar="NAME=TEXT", help="set a prompt (repeatable)")
    prompts.add_argument("--from-hf", type=Path, help="take the prompts of a sentence-transformers model folder")
    prompts.add_argument("--default", help="the default prompt name")
    prompts.add_argument("-o", "--output", type=Path, help="the GGUF to write (default: the model file, in place)")
    prompts.set_defaults(func=prompts_command)


def add_convert_parser(sub: Subparsers) -> None:
    """The ``convert`` subcommand."""
    convert = sub.add_parser(
        "convert",
        help="write a GGUF of another weight type from a GGUF, a Hugging Face model folder or a Hub repository",
    )
    convert.add_argument(
        "source",
        help="a GGUF file, a Hugging Face model folder, or a Hub repository org/repo or hf://org/repo[@revision] "
        "(read from the Hugging Face cache; downloaded if missing, unless HF_HUB_OFFLINE=1; needs embellama[convert])",
    )
    convert.add_argument("output", type=Path, help="the GGUF file to write")
    convert.add_argument("--type", default="bf16", choices=sorted(gguf_convert.FTYPE_CODES), help="weight type")
    convert.add_argument("--threads", type=int, help="threads for the quantizer")
    convert.add_argument("--llama-src", help="llama.cpp source tree (for a model folder: its convert_hf_to_gguf.py)")
    convert.set_defaults(func=convert_command)


def add_cache_parser(sub: Subparsers) -> None:
    """The ``cache`` subcommand."""
    cache = sub.add_parser("cache", help="list (or --clear) the models compute_type converted into the cache")
    cache.add_argument("--clear", action="store_true", help="delete them")
    cache.set_defaults(func=cache_command)
