# SPDX-License-Identifier: Apache-2.0
"""llamabuild.cuda: the local GPUs' architectures and cuBLAS from a pip wheel."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from llamabuild import cuda
from tests.unit.llamabuild.helpers import fake_cublas_wheel


def test_detect_cuda_arch_reads_nvidia_smi(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/" + name)

    def fake_run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        assert cmd[1:] == ["--query-gpu=compute_cap", "--format=csv,noheader"]
        return subprocess.CompletedProcess(cmd, 0, stdout="9.0\n8.6\n9.0\n", stderr="")

    monkeypatch.setattr(subprocess, "run", fake_run)
    assert cuda.detect_cuda_arch() == "86;90"
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert cuda.detect_cuda_arch() is None


def test_find_pip_cublas_when_the_toolkit_has_none(tmp_path: Path) -> None:
    toolkit = tmp_path / "cuda" / "lib64"
    toolkit.mkdir(parents=True)
    (toolkit / "libcudart.so.13").write_text("")
    site = tmp_path / "site"
    pkg = fake_cublas_wheel(site, "cu13")
    found = cuda.find_pip_cublas([str(tmp_path / "empty"), str(site)], [toolkit, tmp_path / "missing"])
    assert found == cuda.PipCublas(pkg / "include", pkg / "lib" / "libcublas.so.13", pkg / "lib" / "libcublasLt.so.13")
    assert found.cmake_options({"CUDAFLAGS": "-lineinfo"}) == [
        f"-DCUDA_cublas_LIBRARY={pkg / 'lib' / 'libcublas.so.13'}",
        f"-DCUDA_cublasLt_LIBRARY={pkg / 'lib' / 'libcublasLt.so.13'}",
        f"-DCMAKE_CUDA_FLAGS=-lineinfo -I{pkg / 'include'}",
    ]
    # a toolkit with its own cuBLAS is left to CMake; no wheel, nothing found
    (toolkit / "libcublas.so.13").write_text("")
    assert cuda.find_pip_cublas([str(site)], [toolkit]) is None
    assert cuda.find_pip_cublas([str(tmp_path / "empty")], [tmp_path / "missing"]) is None
