# SPDX-License-Identifier: Apache-2.0
"""llamabuild.cli: the command line, its dry runs and refusals, and the thin build_llama.py."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llamabuild import cli, cmake, cuda, paths, pins
from llamabuild import source as sources
from llamabuild.plan import make_plan
from tests.unit.llamabuild.helpers import ROOT, defines, dry, fake_cublas_wheel, fake_tree, option_lines
from tests.unit.llamabuild.test_cmake import COMMON_OFF


@pytest.mark.usefixtures("no_side_effects")
def test_dry_run_cpu_prints_commands(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = dry(capsys, tmp_path, "--jobs", "3", "--prefix", str(tmp_path / "p"))
    got = option_lines(out)
    assert got[: len(COMMON_OFF) + 1] == [*COMMON_OFF, "-DGGML_NATIVE=ON"]
    assert defines(got)["CMAKE_CXX_FLAGS"].endswith(" ".join(cmake.NO_AMX_FLAGS))
    assert "would pip download llama-cpp-python==0.3.36" in out
    assert "cmake -S " in out and " -DLLAMA_BUILD_TOOLS=OFF" in out
    assert "--target llama -j 3" in out
    assert str(tmp_path / "p" / "manifest.json") in out
    assert not (tmp_path / "p").exists()


@pytest.mark.usefixtures("no_side_effects")
def test_dry_run_portable_tools(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = dry(capsys, tmp_path, "--portable", "--with-tools", "--cmake-arg=-DFOO=1")
    got = defines(option_lines(out))
    assert got["GGML_NATIVE"] == "OFF"
    assert got["LLAMA_BUILD_COMMON"] == got["LLAMA_BUILD_TOOLS"] == "ON"
    assert got["CMAKE_PROJECT_INCLUDE"].endswith(paths.RPATH_INCLUDE_NAME)
    assert option_lines(out)[-1] == "-DFOO=1"
    assert "--target llama llama-embedding llama-quantize" in out
    assert "-cpu-portable-tools" in out


@pytest.mark.usefixtures("no_side_effects")
def test_dry_run_with_server(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = dry(capsys, tmp_path, "--with-server", "--jobs", "2")
    got = defines(option_lines(out))
    assert got["LLAMA_BUILD_SERVER"] == got["LLAMA_BUILD_TOOLS"] == got["LLAMA_BUILD_COMMON"] == "ON"
    assert got["LLAMA_USE_PREBUILT_UI"] == got["LLAMA_OPENSSL"] == "OFF"
    assert got["CMAKE_PROJECT_INCLUDE"].endswith(paths.RPATH_INCLUDE_NAME)
    assert "--target llama llama-embedding llama-quantize llama-server -j 2" in out
    assert "tools            : llama-embedding, llama-quantize, llama-server" in out
    assert "-cpu-server" in out and "-cpu-tools" not in out


@pytest.mark.usefixtures("no_side_effects")
def test_dry_run_cuda_with_arch(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = dry(capsys, tmp_path, "--backend", "cuda", "--cuda-arch", "80;86")
    got = defines(option_lines(out))
    assert got["GGML_CUDA"] == "ON"
    assert got["CMAKE_CUDA_ARCHITECTURES"] == "80;86"
    assert "embellama/_lib/cuda" in out


@pytest.mark.usefixtures("no_side_effects")
def test_dry_run_cuda_without_arch_or_gpu(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_which = shutil.which

    def which(name: str) -> str | None:
        return None if name == "nvidia-smi" else real_which(name)

    monkeypatch.setattr(shutil, "which", which)
    out = dry(capsys, tmp_path, "--backend", "cuda")
    assert "CMAKE_CUDA_ARCHITECTURES" not in "".join(option_lines(out))
    assert "ggml's default" in out and "--cuda-arch" in out
    out = dry(capsys, tmp_path, "--backend", "cuda", "--portable")
    assert "ggml's default list (--portable)" in out


@pytest.mark.usefixtures("no_side_effects")
def test_dry_run_metal_and_vulkan(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    metal = defines(option_lines(dry(capsys, tmp_path, "--backend", "metal")))
    assert metal["GGML_METAL"] == metal["GGML_METAL_EMBED_LIBRARY"] == "ON"
    vulkan = defines(option_lines(dry(capsys, tmp_path, "--backend", "vulkan")))
    assert vulkan["GGML_VULKAN"] == "ON"


@pytest.mark.usefixtures("no_side_effects")
def test_metal_refused_off_macos(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    code = cli.main(["--backend", "metal", "--cache-dir", str(tmp_path / "c")])
    assert code == 2
    assert "metal builds only on macOS" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_cuda_without_gpu_or_arch_refused_before_fetching(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cuda, "detect_cuda_arch", lambda: None)
    monkeypatch.setattr(sources, "fetch_source", lambda *a, **k: pytest.fail("fetched"))
    code = cli.main(["--backend", "cuda", "--cache-dir", str(tmp_path / "c")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--cuda-arch" in err and "native" in err


def test_cli_rejects_bad_combinations() -> None:
    with pytest.raises(SystemExit):
        cli.main(["--cuda-arch", "90"])  # backend cpu
    with pytest.raises(SystemExit):
        cli.main(["--jobs", "0", "--dry-run"])


def test_help_documents_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--source",
        "--backend",
        "--cuda-arch",
        "--portable",
        "--with-tools",
        "--with-server",
        "--jobs",
        "--prefix",
        "--build-dir",
        "--cmake-arg",
        "--clean",
        "--dry-run",
        "--verbose",
        "EMBELLAMA_CACHE_DIR",
    ):
        assert option in text


def test_dry_run_cuda_uses_a_pip_cublas(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = fake_cublas_wheel(tmp_path / "site", "cu13")
    monkeypatch.setattr(cmake, "compiler_can_drop_amx", lambda *a, **k: False)
    monkeypatch.setattr(cuda, "cuda_toolkit_lib_dirs", lambda *a, **k: [])
    monkeypatch.setattr(sys, "path", [str(tmp_path / "site")])
    out = dry(capsys, tmp_path, "--backend", "cuda", "--cuda-arch", "90")
    got = defines(option_lines(out))
    assert got["CUDA_cublas_LIBRARY"] == str(pkg / "lib" / "libcublas.so.13")
    assert "cuBLAS from a pip wheel" in out


def test_another_llama_cpp_gets_its_own_folders(tmp_path: Path) -> None:
    args = cli.parse_args(["--llama-cpp-python", "0.3.30", "--cache-dir", str(tmp_path), "--dry-run"])
    plan = make_plan(args)
    assert plan.key == "llama-cpp-python-0.3.30"
    assert plan.prefix == tmp_path / "lib" / "llama-cpp-python-0.3.30-cpu"
    assert plan.prefix != paths.default_prefix("cpu")
    assert plan.build_dir == tmp_path / "build" / "llama-cpp-python-0.3.30-cpu"
    assert plan.source_dir == tmp_path / "src" / "llama-cpp-python-0.3.30"
    assert not any(o.startswith("-DLLAMA_BUILD_COMMIT=") for o in plan.options)
    pinned = make_plan(cli.parse_args(["--llama-cpp-python", pins.SDIST_VERSION, "--cache-dir", str(tmp_path)]))
    assert pinned.key is None and pinned.prefix == paths.default_prefix("cpu")
    # a checkout whose llama.h is not the pinned one is keyed too
    src = fake_tree(tmp_path)
    checkout = make_plan(cli.parse_args(["--source", str(src), "--cache-dir", str(tmp_path)]))
    assert checkout.key is not None and checkout.key.startswith("path-")
    assert checkout.prefix == tmp_path / "lib" / f"{checkout.key}-cpu"
    with pytest.raises(SystemExit):
        cli.parse_args(["--llama-cpp-python", "0.3.30", "--source", "git"])


def test_build_llama_py_is_a_thin_entry_point() -> None:
    text = (ROOT / "build_llama.py").read_text(encoding="utf-8")
    tree = ast.parse(text)
    assert len(text.splitlines()) <= 50
    assert [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))] == ["main"]
    assert "from llamabuild import cli" in text


def _run(*argv: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "build_backend"), "EMBELLAMA_CACHE_DIR": str(cache)}
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)


def test_build_llama_py_and_python_m_llamabuild_are_the_same_command(tmp_path: Path) -> None:
    def same(script: str, module: str) -> bool:
        return script.replace("build_llama.py", "PROG") == module.replace("python -m llamabuild", "PROG")

    helps = [_run("build_llama.py", "--help", cache=tmp_path), _run("-m", "llamabuild", "--help", cache=tmp_path)]
    assert [run.returncode for run in helps] == [0, 0]
    # after the usage lines (wrapped to the name's length): the description, every option, the epilogue
    assert helps[0].stdout.split("\n\n", 1)[1] == helps[1].stdout.split("\n\n", 1)[1]
    assert helps[1].stdout.startswith("usage: python -m llamabuild [-h]")
    dry = [
        _run(*cmd, "--dry-run", "--portable", "-j", "3", cache=tmp_path)
        for cmd in (["build_llama.py"], ["-m", "llamabuild"])
    ]
    assert [run.returncode for run in dry] == [0, 0] and dry[0].stdout == dry[1].stdout
    assert "GGML_CPU_ALL_VARIANTS" in dry[0].stdout and not (tmp_path / "src").exists()  # nothing fetched
    bad = [_run(*cmd, "--cuda-arch", "90", cache=tmp_path) for cmd in (["build_llama.py"], ["-m", "llamabuild"])]
    assert [run.returncode for run in bad] == [2, 2]
    assert same(bad[0].stderr.splitlines()[-1], bad[1].stderr.splitlines()[-1])
    assert bad[0].stderr.splitlines()[-1] == "build_llama.py: error: --cuda-arch only applies to --backend cuda"
