# SPDX-License-Identifier: Apache-2.0
"""The ``embellama`` command: its parser and dispatch, and ``build``.

Each subcommand lives in a module of its own: :mod:`~embellama._cli.info` (``doctor``, ``info``),
:mod:`~embellama._cli.convert` (``prompts``, ``convert``, ``cache``), :mod:`~embellama._cli.embed`
(``embed``, ``demo``), :mod:`~embellama._cli.rerank`, :mod:`~embellama._cli.serve` and
:mod:`~embellama._cli.hub` (``pull``, ``ls``); ``build`` is here.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from embellama._cli import convert, embed, hub, info, rerank, serve
from embellama._cli.common import Subparsers
from embellama._exceptions import ConfigurationError, EmbellamaError
from embellama._native import LLAMA_LOGGER_NAME, load_library, user_build_dir
from embellama._version import __version__


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


def _add_build_parser(sub: Subparsers) -> None:
    """The ``build`` subcommand."""
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
    info.add_doctor_parser(sub)
    info.add_info_parser(sub)
    convert.add_prompts_parser(sub)
    embed.add_parsers(sub)
    rerank.add_parsers(sub)
    serve.add_parsers(sub)
    convert.add_convert_parser(sub)
    _add_build_parser(sub)
    convert.add_cache_parser(sub)
    hub.add_parsers(sub)
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
