# SPDX-License-Identifier: Apache-2.0
"""The plan of a build: from the command line, the source, folders, CMake options and commands,
worked out before anything runs; ``--dry-run`` prints it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import shutil
from pathlib import Path

from llamabuild import blas, cmake, cuda, paths, pins
from llamabuild import source as sources
from llamabuild.report import PREFIX, BuildError

SOURCE_KINDS = ("auto", "pypi", "git")


@dataclasses.dataclass
class Plan:
    """What a build does: its source, folders, CMake options and commands (see :func:`make_plan`)."""

    backend: str
    portable: bool
    with_tools: bool  # also true for a server build
    cuda_arch: str | None
    cuda_arch_note: str | None
    source_kind: str  # "cached", "pypi", "git" or "path"
    source_dir: Path
    key: str | None  # None: the pinned llama.cpp; else what the build and install folders are named by
    cache_dir: Path
    build_dir: Path
    prefix: Path
    generator: str | None
    options: list[str]
    configure_cmd: list[str]
    build_cmd: list[str]
    with_server: bool = False


def make_plan(args: argparse.Namespace) -> Plan:
    """Work out paths, options and commands from the arguments.

    Writes nothing and fetches nothing; it asks the C compiler whether it knows the
    AMX flags, and only a real (not --dry-run) cuda build without --cuda-arch runs
    ``nvidia-smi``.
    """
    cache_dir = (args.cache_dir or paths.default_cache_dir()).expanduser().resolve()
    kind, source_dir = _plan_source(args, cache_dir)
    key = _plan_key(args, kind, source_dir)
    if args.build_dir:
        build_dir = args.build_dir.expanduser().resolve()
    else:
        in_place = source_dir if kind == "path" else None
        name = paths.build_dir_name(
            args.backend, args.portable, args.with_tools, source_path=in_place, with_server=args.with_server
        )
        if getattr(args, "blas", False):
            name += "-blas"
        if args.llama_cpp_python:
            name = name.replace(pins.LLAMA_CPP_COMMIT[:12], key or "", 1)
        build_dir = cache_dir / "build" / name
    prefix = (args.prefix or paths.default_prefix(args.backend, key, cache_dir)).expanduser().resolve()
    cuda_arch, note = _plan_cuda_arch(args)
    no_amx = not args.portable and cmake.compiler_can_drop_amx()
    local, found = _local_options(args, build_dir, no_amx)  # before the user's --cmake-arg
    note = "; ".join(n for n in (note, *found) if n) or None
    pinned_build = key is None and (kind != "path" or sources.recorded_commit(source_dir) is not None)
    options = cmake.cmake_options(
        args.backend,
        portable=args.portable,
        cuda_arch=cuda_arch,
        with_tools=args.with_tools,
        with_server=args.with_server,
        extra=[*local, *args.cmake_arg],
        build_commit=pins.LLAMA_CPP_COMMIT[:8] if pinned_build else None,
        no_amx=no_amx,
    )
    if getattr(args, "blas", False):
        options = blas.merge_flags(options)  # the renames and the native build's flags in one CMAKE_C_FLAGS
    generator = cmake.cmake_generator()
    return Plan(
        backend=args.backend,
        portable=args.portable,
        with_tools=args.with_tools,
        cuda_arch=cuda_arch,
        cuda_arch_note=note,
        source_kind=kind,
        source_dir=source_dir,
        key=key,
        cache_dir=cache_dir,
        build_dir=build_dir,
        prefix=prefix,
        generator=generator,
        options=options,
        configure_cmd=cmake.configure_command(source_dir, build_dir, options, generator),
        build_cmd=cmake.build_command(build_dir, cmake.build_targets(args.with_tools, args.with_server), args.jobs),
        with_server=args.with_server,
    )


def _local_options(args: argparse.Namespace, build_dir: Path, no_amx: bool) -> tuple[list[str], list[str]]:
    """The options for what this machine has (cuBLAS or OpenBLAS from pip wheels), and notes naming them."""
    local: list[str] = []
    notes: list[str] = []
    if args.backend == "cuda":
        cublas = cuda.find_pip_cublas()
        if cublas is not None:
            local += cublas.cmake_options()
            notes.append(f"cuBLAS from a pip wheel: {cublas.cublas}")
    if getattr(args, "blas", False):
        openblas = blas.find_pip_openblas()
        if openblas is None:
            raise BuildError("--blas needs OpenBLAS from its wheel: pip install scipy-openblas32")
        local += openblas.cmake_options(None if no_amx else os.environ)  # no_amx's flags carry $CFLAGS
        notes.append(f"OpenBLAS from a pip wheel: {openblas.library}")
    if args.with_tools:
        local.append(f"-DCMAKE_PROJECT_INCLUDE={build_dir / paths.RPATH_INCLUDE_NAME}")
    return local, notes


def _plan_source(args: argparse.Namespace, cache_dir: Path) -> tuple[str, Path]:
    """The source's kind ("cached", "pypi", "git" or "path") and folder."""
    if args.source not in SOURCE_KINDS:
        return "path", Path(args.source).expanduser().resolve()
    if args.llama_cpp_python:
        folder = paths.sdist_source_dir(cache_dir, args.llama_cpp_python)
        return ("cached" if (folder / "CMakeLists.txt").is_file() and not args.refetch else "pypi"), folder
    cached = paths.cached_source_dir(cache_dir)
    if (cached / "CMakeLists.txt").is_file() and not args.refetch:
        return "cached", cached
    return ("git" if args.source == "git" else "pypi"), cached


def _plan_key(args: argparse.Namespace, kind: str, source_dir: Path) -> str | None:
    """None for the pinned llama.cpp; a name for the build and install folders of another one."""
    if args.llama_cpp_python:
        return f"{pins.PROJECT}-{args.llama_cpp_python}"
    if kind == "path" and not sources.same_api_as_pinned(source_dir):
        return paths.path_key(source_dir)
    return None


def _plan_cuda_arch(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """CMAKE_CUDA_ARCHITECTURES (None: ggml's default) and a note on where it comes from."""
    if args.backend != "cuda" or args.cuda_arch is not None:
        return args.cuda_arch, None
    if args.portable:
        return None, "CMAKE_CUDA_ARCHITECTURES left to ggml's default list (--portable)"
    if args.dry_run:
        if shutil.which("nvidia-smi"):
            return None, "CMAKE_CUDA_ARCHITECTURES: the local GPUs' compute capability (nvidia-smi)"
        return None, (
            "no nvidia-smi: CMAKE_CUDA_ARCHITECTURES would be left to ggml's default, "
            "which is 'native' for a native build and needs a GPU; a real run "
            "refuses: pass --cuda-arch or --portable"
        )
    cuda_arch = cuda.detect_cuda_arch()
    if cuda_arch is None:
        raise BuildError(
            "--backend cuda: no GPU found with nvidia-smi and no --cuda-arch given. "
            "ggml's default for a native build is CMAKE_CUDA_ARCHITECTURES=native, "
            "which fails without a GPU. Pass --cuda-arch (e.g. 90, '80;86', or "
            "'native' to let CMake detect it) or --portable for ggml's default list.",
            exit_code=2,
        )
    return cuda_arch, f"CMAKE_CUDA_ARCHITECTURES={cuda_arch} (local GPU, from nvidia-smi)"


def print_dry_run(plan: Plan, args: argparse.Namespace) -> None:
    """Print what the build would do: the source, folders, options and commands."""
    source_desc = {
        "cached": f"cached at {plan.source_dir}",
        "pypi": (
            f"not cached: would pip download {pins.PROJECT}=={pins.SDIST_VERSION} "
            f"(sha256 {pins.SDIST_SHA256[:16]}...) and extract {pins.SDIST_SUBDIR}/ to {plan.source_dir}"
        ),
        "git": f"not cached: would clone {pins.GIT_URL} @ {pins.LLAMA_CPP_COMMIT} to {plan.source_dir}",
        "path": f"{plan.source_dir} (used in place; its commit is not checked in a dry run)",
    }[plan.source_kind]
    if args.sdist is not None and plan.source_kind == "pypi":
        source_desc = f"not cached: would extract {args.sdist} to {plan.source_dir}"
    if args.llama_cpp_python and plan.source_kind == "pypi":
        source_desc = f"not cached: would pip download {pins.PROJECT}=={args.llama_cpp_python} into {plan.source_dir}"
    print(f"{PREFIX}: dry run, nothing is fetched, built or written")
    if plan.key is None:
        print(f"  llama.cpp commit : {pins.LLAMA_CPP_COMMIT}")
    else:
        print(f"  llama.cpp        : {plan.key} (declarations generated from its llama.h)")
    print(f"  source           : {source_desc}")
    print(f"  backend          : {plan.backend}")
    variants = " + GGML_CPU_ALL_VARIANTS" if "-DGGML_CPU_ALL_VARIANTS=ON" in plan.options else ""
    print(f"  portable         : {plan.portable} (GGML_NATIVE={'OFF' if plan.portable else 'ON'}{variants})")
    tools = cmake.installed_tools(plan.with_tools, plan.with_server)
    print(f"  tools            : {', '.join(tools) if tools else 'none'}")
    if plan.cuda_arch_note:
        print(f"  cuda             : {plan.cuda_arch_note}")
    print(f"  build dir        : {plan.build_dir}{' (wiped first: --clean)' if args.clean else ''}")
    print(f"  prefix           : {plan.prefix}")
    print(f"  generator        : {plan.generator or 'CMake default (ninja not found)'}")
    print("  cmake options    :")
    for opt in plan.options:
        print(f"    {opt}")
    print("  configure        : " + shlex.join(plan.configure_cmd))
    print("  build            : " + shlex.join(plan.build_cmd))
    print(f"  manifest         : {plan.prefix / paths.MANIFEST_NAME}")
