# SPDX-License-Identifier: Apache-2.0
"""CUDA: the architectures to compile for (given or the local GPUs'), and cuBLAS from a pip wheel."""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

_CUDA_ARCH_ITEM_RE = re.compile(r"^(?:[0-9]{2,3}[af]?(?:-real|-virtual)?|native|all|all-major)$")


def normalize_cuda_arch(value: str) -> str:
    """Accept ``90``, ``80;86``, ``80,86``, ``native``...; return CMake's ``;`` list."""
    items = [item.strip() for item in re.split(r"[;,\s]+", value) if item.strip()]
    if not items:
        raise ValueError("empty CUDA architecture list")
    for item in items:
        if not _CUDA_ARCH_ITEM_RE.match(item):
            expected = "expected e.g. 90, 86-real, 120a, native"
            raise ValueError(f"invalid CUDA architecture {item!r} ({expected})")
    return ";".join(items)


def _has_cublas(folder: Path) -> bool:
    return any(folder.glob("libcublas.so*")) or any(folder.glob("cublas64_*.dll")) or (folder / "cublas.lib").exists()


def cuda_toolkit_lib_dirs(environ: Mapping[str, str] | None = None) -> list[Path]:
    """Folders where a CUDA toolkit (or the system) keeps its libraries."""
    env = os.environ if environ is None else environ
    roots = [Path(env[k]) for k in ("CUDAToolkit_ROOT", "CUDA_PATH", "CUDA_HOME") if env.get(k)]
    roots.append(Path("/usr/local/cuda"))
    nvcc = shutil.which("nvcc")
    if nvcc:
        roots.append(Path(nvcc).resolve().parent.parent)
    dirs = [Path("/usr/lib/x86_64-linux-gnu"), Path("/usr/lib/aarch64-linux-gnu"), Path("/usr/lib64")]
    for root in roots:
        dirs += [root / "lib64", root / "lib", root / "lib" / "x64", *sorted(root.glob("targets/*/lib"))]
    return dirs


@dataclasses.dataclass(frozen=True)
class PipCublas:
    """cuBLAS from NVIDIA's pip wheels (nvidia-cublas for CUDA 13, nvidia-cublas-cu12 for 12)."""

    include: Path
    cublas: Path
    cublas_lt: Path

    def cmake_options(self, environ: Mapping[str, str] | None = None) -> list[str]:
        """The options that point FindCUDAToolkit's CUDA::cublas targets at the wheel."""
        env = os.environ if environ is None else environ
        cuda_flags = [*shlex.split(env.get("CUDAFLAGS", "")), f"-I{self.include}"]
        return [
            f"-DCUDA_cublas_LIBRARY={self.cublas}",
            f"-DCUDA_cublasLt_LIBRARY={self.cublas_lt}",
            f"-DCMAKE_CUDA_FLAGS={shlex.join(cuda_flags)}",
        ]


def find_pip_cublas(
    search_path: Sequence[str] | None = None,
    toolkit_lib_dirs: Sequence[Path] | None = None,
) -> PipCublas | None:
    """cuBLAS from a pip wheel on ``search_path`` (``sys.path``), when the toolkit has none.

    CUDA toolkits assembled from NVIDIA's pip wheels (nvcc, cudart, ...) often lack
    cuBLAS, which ggml-cuda links; its wheel ships only ``libcublas.so.<major>``, which
    CMake's FindCUDAToolkit does not look for. None when the toolkit has cuBLAS or no
    wheel is installed.
    """
    lib_dirs = cuda_toolkit_lib_dirs() if toolkit_lib_dirs is None else toolkit_lib_dirs
    if any(_has_cublas(d) for d in lib_dirs if d.is_dir()):
        return None
    for entry in sys.path if search_path is None else search_path:
        nvidia = Path(entry or ".") / "nvidia"
        if not nvidia.is_dir():
            continue
        for pkg in [*sorted(nvidia.glob("cu[0-9]*"), reverse=True), nvidia / "cublas"]:
            include, lib = pkg / "include", pkg / "lib"
            cublas = sorted(lib.glob("libcublas.so.*"))
            cublas_lt = sorted(lib.glob("libcublasLt.so.*"))
            if (include / "cublas_v2.h").is_file() and cublas and cublas_lt:
                return PipCublas(include.resolve(), cublas[0].resolve(), cublas_lt[0].resolve())
    return None


def detect_cuda_arch() -> str | None:
    """Compute capabilities of the local GPUs (``nvidia-smi``), e.g. ``"90"``; None if none."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        proc = subprocess.run(
            [exe, "--query-gpu=compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    archs: list[str] = []
    for line in proc.stdout.splitlines():
        match = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", line)
        if match:
            arch = match.group(1) + match.group(2)
            if arch not in archs:
                archs.append(arch)
    return ";".join(sorted(archs, key=int)) or None
