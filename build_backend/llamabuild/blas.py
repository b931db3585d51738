# SPDX-License-Identifier: Apache-2.0
"""ggml's BLAS backend with OpenBLAS from the ``scipy-openblas32`` wheel (``build_llama.py --blas``).

The wheel carries ``libscipy_openblas.so`` and its headers, with every symbol prefixed
``scipy_`` (so that it never clashes with another OpenBLAS in the process). ggml-blas calls
the unprefixed names, so the build maps the few it uses onto the prefixed ones, points
FindBLAS at the wheel's library and headers, and gives the libraries an RPATH to the wheel's
folder. Measured against tinyBLAS in ``docs/performance.md``: slower on the CPUs measured,
so it is an option, never the default.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

PACKAGE = "scipy_openblas32"

#: The OpenBLAS functions ggml-blas calls, mapped onto the wheel's prefixed names.
RENAMED = ("cblas_sgemm", "openblas_set_num_threads", "openblas_get_parallel")


@dataclasses.dataclass(frozen=True)
class PipOpenBLAS:
    """OpenBLAS from the scipy-openblas32 wheel: its header folder and library file."""

    include: Path
    library: Path
    prefix: str = "scipy_"

    def cmake_options(self, environ: Mapping[str, str] | None = None) -> list[str]:
        """``-DGGML_BLAS=ON`` with FindBLAS pointed at the wheel and ggml-blas's calls renamed.

        ``$CFLAGS``/``$CXXFLAGS`` from ``environ`` come first in the flags (a later
        ``CMAKE_C_FLAGS`` option, such as the native build's AMX flags, replaces these:
        :func:`merge_flags` joins them).
        """
        env = {} if environ is None else environ
        defines = [f"-D{name}={self.prefix}{name}" for name in RENAMED]
        opts = [
            "-DGGML_BLAS=ON",
            "-DGGML_BLAS_VENDOR=OpenBLAS",
            f"-DBLAS_LIBRARIES={self.library}",
            f"-DBLAS_INCLUDE_DIRS={self.include}",
        ]
        for lang, var in (("C", "CFLAGS"), ("CXX", "CXXFLAGS")):
            flags = [*shlex.split(env.get(var, "")), *defines]
            opts.append(f"-DCMAKE_{lang}_FLAGS={shlex.join(flags)}")
        return opts


def merge_flags(options: Sequence[str]) -> list[str]:
    """``options`` with repeated ``-DCMAKE_C_FLAGS=``/``-DCMAKE_CXX_FLAGS=`` joined into the first of each.

    CMake keeps only the last ``-D`` of a name; the BLAS renames and the native build's flags
    must both reach the compiler.
    """
    merged: list[str] = []
    seen: dict[str, int] = {}
    for opt in options:
        name, sep, value = opt.partition("=")
        if sep and name in ("-DCMAKE_C_FLAGS", "-DCMAKE_CXX_FLAGS"):
            if name in seen:
                head = merged[seen[name]].partition("=")[2]
                merged[seen[name]] = f"{name}={shlex.join([*shlex.split(head), *shlex.split(value)])}"
                continue
            seen[name] = len(merged)
        merged.append(opt)
    return merged


def find_pip_openblas(search_path: Sequence[str] | None = None) -> PipOpenBLAS | None:
    """The scipy-openblas32 wheel on ``search_path`` (``sys.path``), or None when it is not installed."""
    for entry in sys.path if search_path is None else search_path:
        folder = Path(entry or ".") / PACKAGE
        include, lib = folder / "include", folder / "lib"
        libraries = sorted(lib.glob("libscipy_openblas*.so*")) + sorted(lib.glob("libscipy_openblas*.dylib"))
        if (include / "cblas.h").is_file() and libraries:
            return PipOpenBLAS(include.resolve(), libraries[0].resolve())
    return None
