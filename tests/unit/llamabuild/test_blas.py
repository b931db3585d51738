# SPDX-License-Identifier: Apache-2.0
"""llamabuild.blas: ggml's BLAS backend with OpenBLAS from the scipy-openblas32 wheel (``--blas``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamabuild import blas, cmake
from tests.unit.llamabuild.helpers import defines, dry, option_lines


def _fake_wheel(site: Path) -> Path:
    pkg = site / blas.PACKAGE
    (pkg / "include").mkdir(parents=True)
    (pkg / "lib").mkdir()
    (pkg / "include" / "cblas.h").write_text("")
    (pkg / "lib" / "libscipy_openblas.so").write_text("")
    return pkg


def test_find_pip_openblas(tmp_path: Path) -> None:
    site = tmp_path / "site"
    pkg = _fake_wheel(site)
    found = blas.find_pip_openblas([str(tmp_path / "empty"), str(site)])
    assert found == blas.PipOpenBLAS(pkg / "include", pkg / "lib" / "libscipy_openblas.so")
    assert blas.find_pip_openblas([str(tmp_path / "empty")]) is None
    (pkg / "include" / "cblas.h").unlink()  # a wheel without its headers cannot be built against
    assert blas.find_pip_openblas([str(site)]) is None


def test_options_rename_the_calls_onto_the_prefixed_symbols(tmp_path: Path) -> None:
    found = blas.PipOpenBLAS(tmp_path / "include", tmp_path / "lib" / "libscipy_openblas.so")
    got = defines(found.cmake_options({"CFLAGS": "-O3 -g", "CXXFLAGS": ""}))
    assert got["GGML_BLAS"] == "ON" and got["GGML_BLAS_VENDOR"] == "OpenBLAS"
    assert got["BLAS_LIBRARIES"] == str(tmp_path / "lib" / "libscipy_openblas.so")
    assert got["BLAS_INCLUDE_DIRS"] == str(tmp_path / "include")
    renames = [f"-D{name}=scipy_{name}" for name in blas.RENAMED]
    assert got["CMAKE_C_FLAGS"].split() == ["-O3", "-g", *renames]
    assert got["CMAKE_CXX_FLAGS"].split() == renames


def test_merge_flags_keeps_every_flag_in_one_option() -> None:
    merged = blas.merge_flags(
        ["-DA=1", "-DCMAKE_C_FLAGS=-mno-amx-tile", "-DCMAKE_CXX_FLAGS=-x", "-DCMAKE_C_FLAGS=-Dcblas_sgemm=s", "-DB=2"]
    )
    assert merged == ["-DA=1", "-DCMAKE_C_FLAGS=-mno-amx-tile -Dcblas_sgemm=s", "-DCMAKE_CXX_FLAGS=-x", "-DB=2"]


@pytest.mark.usefixtures("no_side_effects")
def test_dry_run_blas(capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = _fake_wheel(tmp_path / "site")
    monkeypatch.setattr(
        blas, "find_pip_openblas", lambda *a, **k: blas.PipOpenBLAS(pkg / "include", pkg / "lib" / "x.so")
    )
    out = dry(capsys, tmp_path, "--blas")
    lines = option_lines(out)
    got = defines(lines)
    assert got["GGML_BLAS"] == "ON" and got["BLAS_LIBRARIES"] == str(pkg / "lib" / "x.so")
    # one CMAKE_CXX_FLAGS, with the native build's AMX flags and the renames both in it
    assert sum(line.startswith("-DCMAKE_CXX_FLAGS=") for line in lines) == 1
    flags = got["CMAKE_CXX_FLAGS"].split()
    assert set(cmake.NO_AMX_FLAGS) <= set(flags) and "-Dcblas_sgemm=scipy_cblas_sgemm" in flags
    assert "-cpu-blas" in out


@pytest.mark.usefixtures("no_side_effects")
def test_blas_without_the_wheel_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llamabuild import cli

    monkeypatch.setattr(blas, "find_pip_openblas", lambda *a, **k: None)
    assert cli.main(["--blas", "--dry-run", "--prefix", str(tmp_path / "p")]) == 1
    assert "pip install scipy-openblas32" in capsys.readouterr().err
