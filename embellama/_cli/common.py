# SPDX-License-Identifier: Apache-2.0
"""What the ``embellama`` subcommands share: the model options, reading texts, output formats, whole-file writes."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from embellama._config import ModelConfig
from embellama._exceptions import ConfigurationError
from embellama._gguf import convert as gguf_convert

__all__ = [
    "FORMATS",
    "RERANK_FORMATS",
    "Subparsers",
    "add_io_options",
    "add_run_options",
    "deliver",
    "model_config",
    "output_format",
    "positive_int",
    "read_texts",
    "whole_file",
]

Subparsers = Any
"""What ``ArgumentParser.add_subparsers()`` returns (argparse names its class privately); each command module's
``add_parsers`` adds its subcommands to it."""

FORMATS = {".json": "json", ".jsonl": "jsonl", ".csv": "csv", ".npy": "npy"}
"""``embed``'s output formats, by the output file's extension."""

RERANK_FORMATS = {".json": "json", ".jsonl": "jsonl", ".csv": "csv", ".tsv": "tsv"}
"""``rerank``'s output formats, by the output file's extension."""


def model_config(args: argparse.Namespace) -> ModelConfig:
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
        lora=getattr(args, "lora", None) or None,
    )


def read_texts(args: argparse.Namespace, what: str = "texts") -> list[str]:
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


def output_format(args: argparse.Namespace, formats: dict[str, str] = FORMATS) -> str:
    """The output format: ``--format``, else the output file's extension, else json (stdout)."""
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


@contextlib.contextmanager
def whole_file(output: str) -> Iterator[Path]:
    """A ``.part`` path to write; renamed to ``output`` when the block succeeds: the output appears whole, or not
    at all."""
    out = Path(output)
    part = out.with_name(out.name + ".part")
    try:
        yield part
        os.replace(part, out)
    finally:
        part.unlink(missing_ok=True)


def deliver(output: str | None, write: Callable[[IO[str]], None]) -> None:
    """Run ``write`` on stdout (UTF-8) when ``output`` is None, else on the text file ``output``, written whole."""
    if output is None:
        if isinstance(sys.stdout, io.TextIOWrapper):
            sys.stdout.reconfigure(encoding="utf-8")
        write(sys.stdout)
        return
    with whole_file(output) as part, open(part, "w", encoding="utf-8", newline="") as f:
        write(f)


def add_io_options(p: argparse.ArgumentParser, what: str, formats: dict[str, str], kinds: str) -> None:
    """``--input``, ``--output`` and ``--format``."""
    p.add_argument("-i", "--input", help=f"file with one {what} per line ('-': stdin); blank lines are skipped")
    p.add_argument("-o", "--output", help=f"file to write: {kinds} (default: stdout)")
    p.add_argument("--format", choices=sorted(set(formats.values())), help="output format (default: by extension)")


def add_run_options(p: argparse.ArgumentParser) -> None:
    """``--threads``, ``--gpu-layers``, ``--progress`` and ``--compute-type``."""
    p.add_argument("--threads", type=int, help="CPU threads")
    p.add_argument("--gpu-layers", type=int, default=-1, help="layers to offload (-1: all)")
    p.add_argument("--progress", action="store_true", help="show progress on stderr")
    p.add_argument(
        "--compute-type",
        default="auto",
        choices=gguf_convert.COMPUTE_TYPES,
        help=(
            "weight type to compute with (default auto, the fastest exact one: F32 for small models on Intel CPUs "
            "with AVX512_BF16, else the file's; bf16 is faster on AMD Zen 4, at cosine 0.99995)"
        ),
    )


def positive_int(text: str) -> int:
    """An argparse type: an int of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value
