# SPDX-License-Identifier: Apache-2.0
"""llamabuild.cmake: the configure options of each backend, the targets, and the configure stamp."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import pytest

from llamabuild import build, cli, cmake, files, paths, process
from llamabuild.plan import make_plan
from tests.unit.llamabuild.helpers import CC, defines, fake_tree, needs_cc

COMMON_OFF = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_TOOLS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_COMMON=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DCMAKE_BUILD_RPATH_USE_ORIGIN=ON",
    "-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON",
    "-DCMAKE_INSTALL_RPATH=$ORIGIN",
    "-DCMAKE_INSTALL_RPATH_USE_LINK_PATH=ON",
]


def opts(backend: str, **kw: Any) -> list[str]:
    kw.setdefault("system", "Linux")
    kw.setdefault("machine", "x86_64")
    result: list[str] = cmake.cmake_options(backend, **kw)
    return result


def test_cpu_options_exact() -> None:
    assert opts("cpu") == [*COMMON_OFF, "-DGGML_NATIVE=ON"]


def test_portable_builds_every_cpu_variant_where_ggml_has_them() -> None:
    for machine in ("x86_64", "AMD64", "aarch64"):
        got = opts("cpu", portable=True, machine=machine)
        assert got == [
            *COMMON_OFF,
            "-DGGML_NATIVE=OFF",
            "-DGGML_BACKEND_DL=ON",
            "-DGGML_CPU_ALL_VARIANTS=ON",
            "-DGGML_OPENMP=OFF",
        ], machine


def test_portable_elsewhere_turns_native_off_only() -> None:
    # macOS links its backends in; a 32-bit or other CPU has no variants at the pin.
    assert opts("cpu", portable=True, system="Darwin", machine="arm64")[-3:] == [
        "-DGGML_NATIVE=OFF",
        "-DGGML_OPENMP=OFF",
        "-DGGML_METAL=OFF",
    ]
    got = defines(opts("cpu", portable=True, machine="riscv64"))
    assert got["GGML_NATIVE"] == "OFF" and "GGML_CPU_ALL_VARIANTS" not in got
    assert not cmake.has_cpu_variants("Linux", "armv7l") and cmake.has_cpu_variants("Windows", "AMD64")


def test_cuda_without_arch_leaves_architectures_to_ggml() -> None:
    got = opts("cuda")
    assert got == [*COMMON_OFF, "-DGGML_NATIVE=ON", "-DGGML_CUDA=ON"]
    assert not any("CMAKE_CUDA_ARCHITECTURES" in o for o in got)


@pytest.mark.parametrize(
    ("arch", "expected"),
    [("90", "90"), ("80;86", "80;86"), ("80,86", "80;86"), ("86-real", "86-real")],
)
def test_cuda_with_arch(arch: str, expected: str) -> None:
    got = opts("cuda", cuda_arch=arch)
    assert got[-2:] == ["-DGGML_CUDA=ON", f"-DCMAKE_CUDA_ARCHITECTURES={expected}"]


def test_cuda_arch_rejected_for_other_backends_and_when_malformed() -> None:
    with pytest.raises(ValueError, match="cuda"):
        opts("cpu", cuda_arch="90")
    with pytest.raises(ValueError, match="invalid CUDA architecture"):
        opts("cuda", cuda_arch="sm_90")
    with pytest.raises(ValueError, match="unknown backend"):
        opts("rocm")


def test_metal_and_vulkan() -> None:
    metal = defines(opts("metal", system="Darwin"))
    assert metal["GGML_METAL"] == "ON"
    assert metal["GGML_METAL_EMBED_LIBRARY"] == "ON"
    assert opts("vulkan") == [*COMMON_OFF, "-DGGML_NATIVE=ON", "-DGGML_VULKAN=ON"]


def test_cpu_on_macos_switches_metal_off() -> None:
    assert defines(opts("cpu", system="Darwin"))["GGML_METAL"] == "OFF"
    assert "GGML_METAL" not in defines(opts("cpu", system="Linux"))


@pytest.mark.parametrize("backend", ["cuda", "vulkan", "metal"])
def test_gpu_backends_leave_the_cpu_part_alone(backend: str) -> None:
    cpu = defines(opts("cpu"))
    gpu = defines(opts(backend))
    assert {k: v for k, v in gpu.items() if k in cpu} == cpu
    extra = set(gpu) - set(cpu)
    assert all(key.startswith(f"GGML_{backend.upper()}") for key in extra), extra


def test_with_tools_turns_on_what_the_targets_need() -> None:
    got = defines(opts("cpu", with_tools=True))
    for key in ("LLAMA_BUILD_COMMON", "LLAMA_BUILD_EXAMPLES", "LLAMA_BUILD_TOOLS"):
        assert got[key] == "ON"
    for key in ("LLAMA_BUILD_TESTS", "LLAMA_BUILD_SERVER", "LLAMA_BUILD_APP", "LLAMA_OPENSSL"):
        assert got[key] == "OFF"
    assert cmake.build_targets(True) == ["llama", "llama-embedding", "llama-quantize"]
    assert cmake.build_targets(False) == ["llama"]
    # the server's web UI options stay out of the other builds (their configure stamps are unchanged)
    for options in (opts("cpu"), opts("cpu", with_tools=True)):
        assert not {"LLAMA_BUILD_UI", "LLAMA_USE_PREBUILT_UI"} & set(defines(options))


def test_with_server_builds_the_tools_and_the_server_and_downloads_nothing() -> None:
    got = defines(opts("cpu", with_server=True))
    for key in ("LLAMA_BUILD_COMMON", "LLAMA_BUILD_EXAMPLES", "LLAMA_BUILD_TOOLS", "LLAMA_BUILD_SERVER"):
        assert got[key] == "ON"
    # no OpenSSL (an extra system library); no web UI: the prebuilt one is fetched at build time, the other needs npm
    for key in ("LLAMA_BUILD_TESTS", "LLAMA_BUILD_APP", "LLAMA_OPENSSL", "LLAMA_BUILD_UI", "LLAMA_USE_PREBUILT_UI"):
        assert got[key] == "OFF"
    assert opts("cpu", with_server=True) == opts("cpu", with_tools=True, with_server=True)
    assert cmake.build_targets(False, True) == ["llama", "llama-embedding", "llama-quantize", "llama-server"]
    assert cmake.build_targets(True, True) == cmake.build_targets(False, True)
    assert cmake.installed_tools(True, True) == ("llama-embedding", "llama-quantize", "llama-server")
    assert cmake.installed_tools(True) == ("llama-embedding", "llama-quantize")
    assert cmake.installed_tools() == ()
    # installed into <prefix>/bin, the server finds the libraries in <prefix> as the tools do
    assert "llama-server" in cmake.RPATH_INCLUDE_TEXT.split("foreach(tgt IN ITEMS", 1)[1].split(")", 1)[0]


def test_extra_args_come_last_and_build_commit_is_passed() -> None:
    got = opts("cpu", extra=["-DGGML_LTO=ON"], build_commit="0c1e5709")
    assert got[-1] == "-DGGML_LTO=ON"
    assert "-DLLAMA_BUILD_COMMIT=0c1e5709" in got


def test_native_x86_builds_leave_out_the_amx_kernels() -> None:
    no_amx = " ".join(cmake.NO_AMX_FLAGS)
    got = defines(opts("cpu", no_amx=True, environ={}))
    assert got["CMAKE_C_FLAGS"] == got["CMAKE_CXX_FLAGS"] == no_amx
    # the user's own flags are kept, ahead of ours
    got = defines(opts("cuda", no_amx=True, environ={"CFLAGS": "-O2 -g", "CXXFLAGS": "-pipe"}))
    assert (got["CMAKE_C_FLAGS"], got["CMAKE_CXX_FLAGS"]) == (f"-O2 -g {no_amx}", f"-pipe {no_amx}")
    # portable builds do not turn AMX on in the first place; --cmake-arg still wins
    assert "CMAKE_C_FLAGS" not in defines(opts("cpu", portable=True, no_amx=True, environ={}))
    got = opts("cpu", no_amx=True, environ={}, extra=["-DCMAKE_C_FLAGS=-mamx-int8"])
    assert got[-1] == "-DCMAKE_C_FLAGS=-mamx-int8"


def test_compiler_can_drop_amx_only_on_x86_64() -> None:
    assert cmake.compiler_can_drop_amx({}, machine="aarch64") is False
    assert cmake.compiler_can_drop_amx({"CC": "/nonexistent/cc"}, machine="x86_64") is False


@needs_cc
def test_compiler_can_drop_amx_asks_the_compiler() -> None:

    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("x86-64 only")
    assert cmake.compiler_can_drop_amx({"CC": str(CC)}) is True
    # a compiler that rejects the flags (here: a script that always fails) gets none
    assert cmake.compiler_can_drop_amx({"CC": "false"}) is False


def test_configure_stamp(tmp_path: Path) -> None:
    build = tmp_path / "b"
    build.mkdir()
    stamp = cmake.configure_stamp(["cmake", "-DA=1"], tmp_path / "src", "Ninja")
    assert cmake.configure_needed(build, stamp) == "not configured yet"
    (build / "CMakeCache.txt").write_text(f"CMAKE_HOME_DIRECTORY:INTERNAL={tmp_path / 'src'}\n")
    (build / "build.ninja").write_text("")
    files.write_json_atomic(build / paths.STAMP_NAME, stamp)
    assert cmake.configure_needed(build, stamp) is None
    changed = cmake.configure_stamp(["cmake", "-DA=2"], tmp_path / "src", "Ninja")
    assert cmake.configure_needed(build, changed) == "options changed"
    cmake.prepare_reconfigure(build, changed)
    assert not (build / "CMakeCache.txt").exists()  # dropped options must not linger
    assert (build / "build.ninja").exists()  # but the objects stay
    moved = cmake.configure_stamp(["cmake"], tmp_path / "elsewhere", "Ninja")
    (build / "CMakeCache.txt").write_text(f"CMAKE_HOME_DIRECTORY:INTERNAL={tmp_path / 'src'}\n")
    cmake.prepare_reconfigure(build, moved)
    assert list(build.iterdir()) == []


def test_configure_after_a_wipe_still_finds_the_tools_rpath_include(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cmake, "compiler_can_drop_amx", lambda *a, **k: False)
    build_dir = tmp_path / "b"
    the_plan = make_plan(
        cli.parse_args(["--source", str(fake_tree(tmp_path)), "--build-dir", str(build_dir), "--with-tools"])
    )
    # configured before from a source elsewhere: the configure step empties the folder
    build_dir.mkdir()
    (build_dir / "CMakeCache.txt").write_text(f"CMAKE_HOME_DIRECTORY:INTERNAL={tmp_path / 'elsewhere'}\n")
    (build_dir / "stale.o").write_text("")
    seen: list[bool] = []

    def fake_step(name: str, cmd: list[str], log: Path, **kw: Any) -> str:
        seen.append((build_dir / paths.RPATH_INCLUDE_NAME).read_text() == cmake.RPATH_INCLUDE_TEXT)
        return ""

    monkeypatch.setattr(process, "run_step", fake_step)
    build.configure_step(the_plan, build_dir / "logs", False)
    assert seen == [True]
    assert not (build_dir / "stale.o").exists()
