# SPDX-License-Identifier: Apache-2.0
"""The manifest: ``manifest.json`` beside the installed libraries, describing the build (the llama.cpp
commit and source, the options, compilers, files with their sha256, the probed layout and enum values).
The loader reads it to check that the declarations fit the libraries.
"""

from __future__ import annotations

import datetime
import hashlib
import platform
import subprocess
from typing import TYPE_CHECKING, Any

from llamabuild.cmake import BUILD_TYPE, read_cmake_cache
from llamabuild.files import sha256_file
from llamabuild.install import InstallResult, cpu_variant_names, library_map
from llamabuild.source import Source

if TYPE_CHECKING:
    from llamabuild.plan import Plan

MANIFEST_FORMAT = 1
BUILDER = "build_llama.py"  # the "builder" the manifest names: the command's name, as before the package


def compiler_version(compiler: str | None) -> str | None:
    """The identifying line of ``<compiler> --version`` (the 'release' line for nvcc)."""
    if not compiler:
        return None
    try:
        proc = subprocess.run(
            [compiler, "--version"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    lines = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    if not lines:
        return None
    for line in lines:
        if "nvcc" in lines[0].lower() and "release" in line:
            return line
    return lines[0]


def build_manifest(
    plan: Plan,
    source: Source,
    result: InstallResult,
    layout: dict[str, dict[str, Any]],
    cdef_text: str,
    build_seconds: float,
) -> dict[str, Any]:
    """The content of ``manifest.json``."""
    cache = read_cmake_cache(plan.build_dir)
    compilers: dict[str, str | None] = {
        "c": compiler_version(cache.get("CMAKE_C_COMPILER")),
        "cxx": compiler_version(cache.get("CMAKE_CXX_COMPILER")),
    }
    if cache.get("CMAKE_CUDA_COMPILER"):
        compilers["cuda"] = compiler_version(cache.get("CMAKE_CUDA_COMPILER"))
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "llama_cpp_commit": source.commit,
        "source": source.manifest_entry(),
        "backend": plan.backend,
        "portable": plan.portable,
        "build_type": BUILD_TYPE,
        "cmake_options": plan.options,
        "generator": plan.generator,
        "compiler": compilers,
        "platform": {"system": platform.system(), "machine": platform.machine()},
        "files": dict(sorted(result.files.items())),
        "links": dict(sorted(result.links.items())),
        "libraries": library_map([*result.files, *result.links]),
        "cpu_variants": cpu_variant_names([*result.files, *result.links]),
        "layout": layout,
        "cdef_sha256": hashlib.sha256(cdef_text.encode("utf-8")).hexdigest(),
        "llama_h_sha256": sha256_file(source.directory / "include" / "llama.h"),
        "tools": [name for name in result.files if name.startswith("bin/")],
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": build_seconds,
        "builder": BUILDER,
    }
    if plan.backend == "cuda":
        manifest["cuda_architectures"] = plan.cuda_arch or "ggml default"
    return manifest
