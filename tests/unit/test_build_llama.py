# SPDX-License-Identifier: Apache-2.0
"""Tests for build_llama.py: options, dry runs, the cdef parser, the probe, fetching, steps.

Nothing here uses the network or compiles llama.cpp.  Tests that compile a tiny C
program need a C compiler (skipped without one); the one that probes the real
llama.h runs only when the pinned source is already in the cache.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
bl: Any = importlib.import_module("build_llama")

CC = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler")

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
    result: list[str] = bl.cmake_options(backend, **kw)
    return result


def defines(options: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for opt in options:
        assert opt.startswith("-D"), opt
        key, _, value = opt[2:].partition("=")
        assert key not in out, f"{key} given twice"
        out[key] = value
    return out


# --------------------------------------------------------------------------- cmake_options


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
    assert not bl.has_cpu_variants("Linux", "armv7l") and bl.has_cpu_variants("Windows", "AMD64")


def test_cpu_variant_names() -> None:
    names = ["libggml-cpu-haswell.so", "libggml-cpu-x64.so", "libggml-cpu.so", "libggml-cpu-armv8.2_1.so"]
    names += ["ggml-cpu-zen4.dll", "libggml.so.0", "libllama.so", "libggml-cpu-apple_m1.dylib"]
    assert bl.cpu_variant_names(names) == ["apple_m1", "armv8.2_1", "haswell", "x64", "zen4"]


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
    assert bl.build_targets(True) == ["llama", "llama-embedding", "llama-quantize"]
    assert bl.build_targets(False) == ["llama"]
    # the server's web UI options stay out of the other builds (their configure stamps are unchanged)
    for build in (opts("cpu"), opts("cpu", with_tools=True)):
        assert not {"LLAMA_BUILD_UI", "LLAMA_USE_PREBUILT_UI"} & set(defines(build))


def test_with_server_builds_the_tools_and_the_server_and_downloads_nothing() -> None:
    got = defines(opts("cpu", with_server=True))
    for key in ("LLAMA_BUILD_COMMON", "LLAMA_BUILD_EXAMPLES", "LLAMA_BUILD_TOOLS", "LLAMA_BUILD_SERVER"):
        assert got[key] == "ON"
    # no OpenSSL (an extra system library); no web UI: the prebuilt one is fetched at build time, the other needs npm
    for key in ("LLAMA_BUILD_TESTS", "LLAMA_BUILD_APP", "LLAMA_OPENSSL", "LLAMA_BUILD_UI", "LLAMA_USE_PREBUILT_UI"):
        assert got[key] == "OFF"
    assert opts("cpu", with_server=True) == opts("cpu", with_tools=True, with_server=True)
    assert bl.build_targets(False, True) == ["llama", "llama-embedding", "llama-quantize", "llama-server"]
    assert bl.build_targets(True, True) == bl.build_targets(False, True)
    assert bl.installed_tools(True, True) == ("llama-embedding", "llama-quantize", "llama-server")
    assert bl.installed_tools(True) == ("llama-embedding", "llama-quantize")
    assert bl.installed_tools() == ()
    # installed into <prefix>/bin, the server finds the libraries in <prefix> as the tools do
    assert "llama-server" in bl.RPATH_INCLUDE_TEXT.split("foreach(tgt IN ITEMS", 1)[1].split(")", 1)[0]


def test_extra_args_come_last_and_build_commit_is_passed() -> None:
    got = opts("cpu", extra=["-DGGML_LTO=ON"], build_commit="0c1e5709")
    assert got[-1] == "-DGGML_LTO=ON"
    assert "-DLLAMA_BUILD_COMMIT=0c1e5709" in got


def test_native_x86_builds_leave_out_the_amx_kernels() -> None:
    no_amx = " ".join(bl.NO_AMX_FLAGS)
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
    assert bl.compiler_can_drop_amx({}, machine="aarch64") is False
    assert bl.compiler_can_drop_amx({"CC": "/nonexistent/cc"}, machine="x86_64") is False


@needs_cc
def test_compiler_can_drop_amx_asks_the_compiler() -> None:
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("x86-64 only")
    assert bl.compiler_can_drop_amx({"CC": str(CC)}) is True
    # a compiler that rejects the flags (here: a script that always fails) gets none
    assert bl.compiler_can_drop_amx({"CC": "false"}) is False


def test_build_dir_names() -> None:
    assert bl.build_dir_name("cpu") == bl.LLAMA_CPP_COMMIT[:12] + "-cpu"
    assert bl.build_dir_name("cuda", True, True).endswith("-cuda-portable-tools")
    # a server build (tools included) has a folder of its own
    assert bl.build_dir_name("cpu", False, True, with_server=True) == bl.LLAMA_CPP_COMMIT[:12] + "-cpu-server"
    assert bl.build_dir_name("cpu", True, with_server=True).endswith("-cpu-portable-server")
    assert bl.build_dir_name("cpu", source_path=Path("/x")).startswith("path-")


def test_default_cache_dir_precedence(tmp_path: Path) -> None:
    home = Path.home()
    assert bl.default_cache_dir({"EMBELLAMA_CACHE_DIR": str(tmp_path)}) == tmp_path
    assert bl.default_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "embellama"
    assert bl.default_cache_dir({"XDG_CACHE_HOME": "relative"}) == home / ".cache/embellama"
    assert bl.default_cache_dir({}) == home / ".cache" / "embellama"


def test_detect_cuda_arch_reads_nvidia_smi(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bl.shutil, "which", lambda name: "/usr/bin/" + name)

    def fake_run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        assert cmd[1:] == ["--query-gpu=compute_cap", "--format=csv,noheader"]
        return subprocess.CompletedProcess(cmd, 0, stdout="9.0\n8.6\n9.0\n", stderr="")

    monkeypatch.setattr(bl.subprocess, "run", fake_run)
    assert bl.detect_cuda_arch() == "86;90"
    monkeypatch.setattr(bl.shutil, "which", lambda name: None)
    assert bl.detect_cuda_arch() is None


# --------------------------------------------------------------------------- main(): dry run


@pytest.fixture
def no_side_effects(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any process start or fetch fail the test."""

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"must not run in a dry run: {args!r}")

    monkeypatch.setattr(subprocess, "run", forbidden)
    monkeypatch.setattr(subprocess, "Popen", forbidden)
    monkeypatch.setattr(bl, "fetch_source", forbidden)
    monkeypatch.setattr(bl, "pip_download_sdist", forbidden)
    monkeypatch.setattr(bl, "detect_cuda_arch", forbidden)
    monkeypatch.setattr(bl, "run_step", forbidden)
    monkeypatch.setattr(bl, "compiler_can_drop_amx", lambda *a, **k: True)  # it runs `cc -E`
    monkeypatch.setattr(bl, "find_pip_cublas", lambda *a, **k: None)  # whatever this machine has


def dry(capsys: pytest.CaptureFixture[str], tmp_path: Path, *argv: str) -> str:
    cache = tmp_path / "cache"
    code = bl.main(["--dry-run", "--cache-dir", str(cache), *argv])
    out = capsys.readouterr().out
    assert code == 0, out
    assert not cache.exists(), "a dry run must not create the cache"
    return out


def option_lines(out: str) -> list[str]:
    lines = out.splitlines()
    start = lines.index("  cmake options    :") + 1
    result = []
    for line in lines[start:]:
        if not line.startswith("    -D"):
            break
        result.append(line.strip())
    return result


@pytest.mark.usefixtures("no_side_effects")
def test_dry_run_cpu_prints_commands(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = dry(capsys, tmp_path, "--jobs", "3", "--prefix", str(tmp_path / "p"))
    got = option_lines(out)
    assert got[: len(COMMON_OFF) + 1] == [*COMMON_OFF, "-DGGML_NATIVE=ON"]
    assert defines(got)["CMAKE_CXX_FLAGS"].endswith(" ".join(bl.NO_AMX_FLAGS))
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
    assert got["CMAKE_PROJECT_INCLUDE"].endswith(bl.RPATH_INCLUDE_NAME)
    assert option_lines(out)[-1] == "-DFOO=1"
    assert "--target llama llama-embedding llama-quantize" in out
    assert "-cpu-portable-tools" in out


@pytest.mark.usefixtures("no_side_effects")
def test_dry_run_with_server(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = dry(capsys, tmp_path, "--with-server", "--jobs", "2")
    got = defines(option_lines(out))
    assert got["LLAMA_BUILD_SERVER"] == got["LLAMA_BUILD_TOOLS"] == got["LLAMA_BUILD_COMMON"] == "ON"
    assert got["LLAMA_USE_PREBUILT_UI"] == got["LLAMA_OPENSSL"] == "OFF"
    assert got["CMAKE_PROJECT_INCLUDE"].endswith(bl.RPATH_INCLUDE_NAME)
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

    monkeypatch.setattr(bl.shutil, "which", which)
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
    monkeypatch.setattr(bl.sys, "platform", "linux")
    code = bl.main(["--backend", "metal", "--cache-dir", str(tmp_path / "c")])
    assert code == 2
    assert "metal builds only on macOS" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_cuda_without_gpu_or_arch_refused_before_fetching(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bl, "detect_cuda_arch", lambda: None)
    monkeypatch.setattr(bl, "fetch_source", lambda *a, **k: pytest.fail("fetched"))
    code = bl.main(["--backend", "cuda", "--cache-dir", str(tmp_path / "c")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--cuda-arch" in err and "native" in err


def test_cli_rejects_bad_combinations() -> None:
    with pytest.raises(SystemExit):
        bl.main(["--cuda-arch", "90"])  # backend cpu
    with pytest.raises(SystemExit):
        bl.main(["--jobs", "0", "--dry-run"])


def test_help_documents_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        bl.main(["--help"])
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


# --------------------------------------------------------------------------- cdef parsing


def test_parse_real_cdef() -> None:
    structs = bl.parse_cdef_structs((ROOT / "include" / "llama.cdef.h").read_text())
    assert {
        "llama_batch",
        "llama_model_params",
        "llama_context_params",
        "llama_model_quantize_params",
    } <= set(structs)
    ctx = structs["llama_context_params"]
    assert ctx[0] == "n_ctx"
    assert ctx[-1] == "ctx_other"
    assert len(ctx) == 37
    assert structs["llama_batch"] == [
        "n_tokens",
        "token",
        "embd",
        "pos",
        "n_seq_id",
        "seq_id",
        "logits",
    ]
    assert "cb_eval" in ctx and "abort_callback" in ctx


SYNTHETIC = """
/* a comment that mentions struct fake { int x; }; */
struct fwd;
typedef struct fwd * fwd_t;
enum e { A, B };

typedef struct pair {
    int32_t a;   // trailing comment
    const char * b; /* another */
} pair;

struct holder {
    struct pair p;
    void (*callback)(int level, const char * text);
    char name[32];
    unsigned long long big;
    const struct fwd * const * ptrs;
};

struct holder make_holder(void);
"""


def test_parse_synthetic_cdef() -> None:
    assert bl.parse_cdef_structs(SYNTHETIC) == {
        "pair": ["a", "b"],
        "holder": ["p", "callback", "name", "big", "ptrs"],
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("    int a, b;\n", "one field per line"),
        ("    int a; int b;\n", "one 'type name;' per line"),
        ("    unsigned flag : 1;\n", "bit-fields"),
        ("    int a;\n    int a;\n", "twice"),
        ("    a;\n", "cannot read a field"),
    ],
)
def test_parse_rejects_what_it_cannot_probe(body: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bl.parse_cdef_structs("struct s {\n" + body + "};\n")


def test_probe_source_lists_every_field() -> None:
    src = bl.probe_source({"pair": ["a", "b"], "holder": ["p"]})
    assert '#include "llama.h"' in src
    assert "sizeof(struct pair)" in src and "_Alignof(struct holder)" in src
    assert "offsetof(struct pair, a)" in src and "offsetof(struct pair, b)" in src
    assert "offsetof(struct holder, p)" in src


FAKE_HEADER = """\
#include <stdint.h>
struct pair { int32_t a; const char * b; };
struct holder { struct pair p; void (*callback)(int, const char *); char name[32];
                unsigned long long big; const struct fwd * const * ptrs; };
"""


def fake_tree(tmp_path: Path, header: str = FAKE_HEADER) -> Path:
    src = tmp_path / "src"
    (src / "include").mkdir(parents=True)
    (src / "ggml" / "include").mkdir(parents=True)
    (src / "include" / "llama.h").write_text(header)
    (src / "ggml" / "include" / "ggml.h").write_text("")
    (src / "CMakeLists.txt").write_text("project(fake C)\n")
    return src


@needs_cc
def test_probe_compiles_and_measures(tmp_path: Path) -> None:
    structs = bl.parse_cdef_structs(SYNTHETIC)
    src, work, log = fake_tree(tmp_path), tmp_path / "w", tmp_path / "probe.log"
    layout = bl.run_probe(src, work, structs, CC, "test", log)
    ptr = 8 if sys.maxsize > 2**32 else 4
    assert layout["pair"] == {"size": 2 * ptr, "align": ptr, "fields": {"a": 0, "b": ptr}}
    holder = layout["holder"]["fields"]
    assert list(holder) == ["p", "callback", "name", "big", "ptrs"]
    assert holder["callback"] == 2 * ptr and holder["name"] == 3 * ptr


@needs_cc
def test_probe_reports_fields_missing_from_the_header(tmp_path: Path) -> None:
    cdef = "struct pair {\n    int32_t a;\n    int32_t renamed;\n};\n"
    with pytest.raises(bl.BuildError) as exc:
        bl.run_probe(
            fake_tree(tmp_path),
            tmp_path / "w",
            bl.parse_cdef_structs(cdef),
            CC,
            "abc123",
            tmp_path / "probe.log",
        )
    text = str(exc.value)
    assert "include/llama.cdef.h declares fields that llama.h at abc123 does not have" in text
    assert "renamed" in text


@needs_cc
def test_probe_reports_fields_in_the_wrong_order(tmp_path: Path) -> None:
    cdef = "struct pair {\n    const char * b;\n    int32_t a;\n};\n"
    with pytest.raises(bl.BuildError, match="another order"):
        bl.run_probe(
            fake_tree(tmp_path),
            tmp_path / "w",
            bl.parse_cdef_structs(cdef),
            CC,
            "x",
            tmp_path / "probe.log",
        )


@needs_cc
def test_probe_against_the_cached_llama_h(tmp_path: Path) -> None:
    src = bl.cached_source_dir(bl.default_cache_dir())
    if not (src / "include" / "llama.h").is_file():
        pytest.skip(f"pinned llama.cpp source not cached at {src}")
    structs = bl.parse_cdef_structs((ROOT / "include" / "llama.cdef.h").read_text())
    layout = bl.run_probe(src, tmp_path, structs, CC, "pinned", tmp_path / "probe.log")
    assert set(layout) == set(structs)
    ctx = layout["llama_context_params"]
    assert ctx["fields"]["n_ctx"] == 0
    assert list(ctx["fields"]) == structs["llama_context_params"]
    if sys.maxsize > 2**32:
        assert layout["llama_batch"]["size"] == 56


# --------------------------------------------------------------------------- sdist / source


def make_sdist(path: Path, files: dict[str, bytes]) -> str:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


SDIST_FILES = {
    "pkg-1/setup.py": b"print()\n",
    "pkg-1/vendor/llama.cpp/CMakeLists.txt": b"project(x)\n",
    "pkg-1/vendor/llama.cpp/.git": b"gitdir: ../../.git/modules/vendor/llama.cpp\n",
    "pkg-1/vendor/llama.cpp/include/llama.h": b"/* h */\n",
}


def test_sdist_with_wrong_sha256_is_rejected(tmp_path: Path) -> None:
    sdist = tmp_path / "pkg-1.tar.gz"
    make_sdist(sdist, SDIST_FILES)
    dest = tmp_path / "out"
    with pytest.raises(bl.BuildError, match="sha256 mismatch"):
        bl.extract_sdist(sdist, dest)  # the pinned hash
    with pytest.raises(bl.BuildError, match="sha256 mismatch"):
        bl.extract_sdist(sdist, dest, expected_sha256="0" * 64)
    assert not dest.exists()


def test_sdist_extracts_only_the_vendored_tree(tmp_path: Path) -> None:
    sdist = tmp_path / "pkg-1.tar.gz"
    digest = make_sdist(sdist, SDIST_FILES)
    dest = tmp_path / "out"
    assert bl.extract_sdist(sdist, dest, expected_sha256=digest) == digest
    found = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert found == ["CMakeLists.txt", "include/llama.h"]  # no setup.py, no .git gitlink


def test_sdist_path_traversal_is_refused(tmp_path: Path) -> None:
    sdist = tmp_path / "evil.tar.gz"
    digest = make_sdist(sdist, {"pkg-1/vendor/llama.cpp/../../../../escaped": b"x"})
    with pytest.raises(bl.BuildError, match="cannot extract"):
        bl.extract_sdist(sdist, tmp_path / "a" / "b" / "out", expected_sha256=digest)
    assert not any(p.name == "escaped" for p in tmp_path.rglob("*"))


def test_fetch_source_from_a_local_sdist_caches_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sdist = tmp_path / "pkg-1.tar.gz"
    monkeypatch.setattr(bl, "SDIST_SHA256", make_sdist(sdist, SDIST_FILES))
    cache = tmp_path / "cache"
    source = bl.fetch_source("pypi", cache, tmp_path / "log", sdist=sdist)
    assert source.directory == bl.cached_source_dir(cache)
    assert (source.directory / "CMakeLists.txt").is_file()
    assert source.kind == "pypi" and source.commit == bl.LLAMA_CPP_COMMIT
    again = bl.load_cached_source(source.directory)
    assert again is not None and again.sdist_sha256 == bl.SDIST_SHA256
    assert [p.name for p in (cache / "src").iterdir()] == [source.directory.name]


def test_pip_download_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def fake_step(name: str, cmd: list[str], log: Path, **kw: Any) -> str:
        seen.append(cmd)
        (Path(cmd[cmd.index("-d") + 1]) / "llama_cpp_python-0.3.36.tar.gz").write_bytes(b"")
        return ""

    monkeypatch.setattr(bl, "run_step", fake_step)
    got = bl.pip_download_sdist(tmp_path, tmp_path / "log")
    assert got == tmp_path / "llama_cpp_python-0.3.36.tar.gz"
    cmd = seen[0]
    assert cmd[:4] == [sys.executable, "-m", "pip", "download"]
    for part in ("--no-deps", "llama-cpp-python==0.3.36"):
        assert part in cmd
    assert cmd[cmd.index("--no-binary") + 1] == ":all:"


@pytest.mark.skipif(os.name == "nt", reason="uses a shell script as the interpreter")
def test_pip_download_without_pip_suggests_sdist(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho '/usr/bin/python: No module named pip'\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(bl.sys, "executable", str(fake))
    (tmp_path / "d").mkdir()
    with pytest.raises(bl.BuildError, match="--sdist FILE"):
        bl.pip_download_sdist(tmp_path / "d", tmp_path / "log")


# --------------------------------------------------------------------------- steps


def failing_cmd() -> list[str]:
    return [
        sys.executable,
        "-c",
        "import sys\nfor i in range(60): print('line', i)\nprint('boom'); sys.exit(3)",
    ]


def test_failed_step_report_names_step_and_shows_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "configure.log"
    with pytest.raises(bl.StepFailed) as exc:
        bl.run_step("configure", failing_cmd(), log)
    report = exc.value.report()
    first, *tail = report.splitlines()
    assert first == f"build_llama: step 'configure' failed (exit 3); last 40 lines of {log}:"
    assert len(tail) == 40
    assert "boom" in tail[-2] and tail[-1] == "[exit 3]"
    assert "line 0" not in report  # only the tail


def test_main_reports_a_failing_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    src = fake_tree(tmp_path)
    monkeypatch.setattr(bl, "configure_command", lambda *a: failing_cmd())

    def which(name: str) -> str | None:
        return "/usr/bin/cmake" if name == "cmake" else None

    monkeypatch.setattr(bl.shutil, "which", which)
    monkeypatch.setattr(bl, "probe_step", lambda *a, **k: {})  # the probe runs before configure
    monkeypatch.setattr(bl, "declarations_step", lambda *a, **k: bl.Declarations("", {}, "test"))
    code = bl.main(
        [
            "--source",
            str(src),
            "--build-dir",
            str(tmp_path / "b"),
            "--prefix",
            str(tmp_path / "p"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    log = tmp_path / "b" / "logs" / "configure.log"
    assert f"build_llama: step 'configure' failed (exit 3); last 40 lines of {log}:" in err
    assert "boom" in err
    assert not (tmp_path / "p" / "manifest.json").exists()


def test_main_hints_at_cublas_when_a_cuda_configure_misses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    src = fake_tree(tmp_path)
    failing = [sys.executable, "-c", "import sys; print('target CUDA::cublas was not found'); sys.exit(1)"]
    monkeypatch.setattr(bl, "configure_command", lambda *a: failing)
    monkeypatch.setattr(bl.shutil, "which", lambda name, **kw: "/usr/bin/cmake" if name == "cmake" else None)
    monkeypatch.setattr(bl, "find_pip_cublas", lambda *a, **k: None)
    monkeypatch.setattr(bl, "probe_step", lambda *a, **k: {})  # the probe runs before configure
    monkeypatch.setattr(bl, "declarations_step", lambda *a, **k: bl.Declarations("", {}, "test"))
    argv = ["--source", str(src), "--build-dir", str(tmp_path / "b"), "--prefix", str(tmp_path / "p")]
    assert bl.main([*argv, "--backend", "cuda", "--cuda-arch", "90"]) == 1
    assert "hint: ggml-cuda links cuBLAS" in capsys.readouterr().err
    assert bl.main([*argv, "--backend", "vulkan", "--build-dir", str(tmp_path / "v")]) == 1
    assert "hint:" not in capsys.readouterr().err


def _fake_cublas_wheel(site: Path, package: str) -> Path:
    pkg = site / "nvidia" / package
    (pkg / "include").mkdir(parents=True)
    (pkg / "include" / "cublas_v2.h").write_text("")
    (pkg / "lib").mkdir()
    for name in ("libcublas.so.13", "libcublasLt.so.13", "libnvblas.so.13"):
        (pkg / "lib" / name).write_text("")
    return pkg.resolve()


def test_find_pip_cublas_when_the_toolkit_has_none(tmp_path: Path) -> None:
    toolkit = tmp_path / "cuda" / "lib64"
    toolkit.mkdir(parents=True)
    (toolkit / "libcudart.so.13").write_text("")
    site = tmp_path / "site"
    pkg = _fake_cublas_wheel(site, "cu13")
    found = bl.find_pip_cublas([str(tmp_path / "empty"), str(site)], [toolkit, tmp_path / "missing"])
    assert found == bl.PipCublas(pkg / "include", pkg / "lib" / "libcublas.so.13", pkg / "lib" / "libcublasLt.so.13")
    assert found.cmake_options({"CUDAFLAGS": "-lineinfo"}) == [
        f"-DCUDA_cublas_LIBRARY={pkg / 'lib' / 'libcublas.so.13'}",
        f"-DCUDA_cublasLt_LIBRARY={pkg / 'lib' / 'libcublasLt.so.13'}",
        f"-DCMAKE_CUDA_FLAGS=-lineinfo -I{pkg / 'include'}",
    ]
    # a toolkit with its own cuBLAS is left to CMake; no wheel, nothing found
    (toolkit / "libcublas.so.13").write_text("")
    assert bl.find_pip_cublas([str(site)], [toolkit]) is None
    assert bl.find_pip_cublas([str(tmp_path / "empty")], [tmp_path / "missing"]) is None


def test_dry_run_cuda_uses_a_pip_cublas(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = _fake_cublas_wheel(tmp_path / "site", "cu13")
    monkeypatch.setattr(bl, "compiler_can_drop_amx", lambda *a, **k: False)
    monkeypatch.setattr(bl, "cuda_toolkit_lib_dirs", lambda *a, **k: [])
    monkeypatch.setattr(bl.sys, "path", [str(tmp_path / "site")])
    out = dry(capsys, tmp_path, "--backend", "cuda", "--cuda-arch", "90")
    got = defines(option_lines(out))
    assert got["CUDA_cublas_LIBRARY"] == str(pkg / "lib" / "libcublas.so.13")
    assert "cuBLAS from a pip wheel" in out


def test_run_step_shows_progress(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cmd = [sys.executable, "-c", "print('[1/2] compile a'); print('[2/2] link b')"]
    out = bl.run_step("build", cmd, tmp_path / "b.log", progress=True, heartbeat=0.0)
    assert "[2/2] link b" in out
    printed = capsys.readouterr().out
    assert "build: [" in printed
    log = (tmp_path / "b.log").read_text()
    assert "[1/2] compile a" in log and "[exit 0]" in log


def test_run_step_missing_program(tmp_path: Path) -> None:
    with pytest.raises(bl.BuildError, match="cannot run"):
        bl.run_step("build", ["/nonexistent/cmake"], tmp_path / "x.log")


# --------------------------------------------------------------------------- configure stamp


def test_configure_stamp(tmp_path: Path) -> None:
    build = tmp_path / "b"
    build.mkdir()
    stamp = bl.configure_stamp(["cmake", "-DA=1"], tmp_path / "src", "Ninja")
    assert bl.configure_needed(build, stamp) == "not configured yet"
    (build / "CMakeCache.txt").write_text(f"CMAKE_HOME_DIRECTORY:INTERNAL={tmp_path / 'src'}\n")
    (build / "build.ninja").write_text("")
    bl.write_json_atomic(build / bl.STAMP_NAME, stamp)
    assert bl.configure_needed(build, stamp) is None
    changed = bl.configure_stamp(["cmake", "-DA=2"], tmp_path / "src", "Ninja")
    assert bl.configure_needed(build, changed) == "options changed"
    bl.prepare_reconfigure(build, changed)
    assert not (build / "CMakeCache.txt").exists()  # dropped options must not linger
    assert (build / "build.ninja").exists()  # but the objects stay
    moved = bl.configure_stamp(["cmake"], tmp_path / "elsewhere", "Ninja")
    (build / "CMakeCache.txt").write_text(f"CMAKE_HOME_DIRECTORY:INTERNAL={tmp_path / 'src'}\n")
    bl.prepare_reconfigure(build, moved)
    assert list(build.iterdir()) == []


# --------------------------------------------------------------------------- install


def fake_build_bin(tmp_path: Path, content: bytes = b"v1") -> Path:
    bin_dir = tmp_path / "build" / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in ("libllama.so.0.5.0", "libggml.so.0.9.0", "llama-quantize", "test-thing"):
        (bin_dir / name).write_bytes(content + name.encode())
    for link, target in (
        ("libllama.so.0", "libllama.so.0.5.0"),
        ("libllama.so", "libllama.so.0"),
        ("libggml.so.0", "libggml.so.0.9.0"),
        ("libggml.so", "libggml.so.0"),
    ):
        if not (bin_dir / link).is_symlink():
            os.symlink(target, bin_dir / link)
    return bin_dir


@pytest.mark.skipif(os.name == "nt", reason="symlinks")
def test_install_keeps_links_skips_unchanged_and_removes_stale(tmp_path: Path) -> None:
    bin_dir = fake_build_bin(tmp_path)
    prefix = tmp_path / "prefix"
    prefix.mkdir()
    (prefix / "libold.so.1").write_bytes(b"stale")
    (prefix / "notes.txt").write_text("kept")
    result = bl.install_outputs(bin_dir, prefix, ["llama-quantize"])
    assert result.copied == 7 and result.removed == 1
    assert os.readlink(prefix / "libllama.so") == "libllama.so.0"
    assert os.readlink(prefix / "libllama.so.0") == "libllama.so.0.5.0"
    assert (prefix / "bin" / "llama-quantize").is_file()
    assert not (prefix / "test-thing").exists()
    assert not (prefix / "libold.so.1").exists() and (prefix / "notes.txt").exists()
    assert set(result.files) == {"libllama.so.0.5.0", "libggml.so.0.9.0", "bin/llama-quantize"}
    assert result.files["libllama.so.0.5.0"] == hashlib.sha256(b"v1libllama.so.0.5.0").hexdigest()
    assert bl.library_map([*result.files, *result.links]) == {
        "ggml": "libggml.so",
        "llama": "libllama.so",
    }

    mtime = (prefix / "libllama.so.0.5.0").stat().st_mtime_ns
    again = bl.install_outputs(bin_dir, prefix, ["llama-quantize"])
    assert (again.copied, again.unchanged, again.removed) == (0, 7, 0)
    assert (prefix / "libllama.so.0.5.0").stat().st_mtime_ns == mtime

    # A later build without tools drops the tool recorded in the old manifest.
    previous = {"files": result.files, "links": result.links}
    third = bl.install_outputs(bin_dir, prefix, [], previous)
    assert third.removed == 1 and not (prefix / "bin").exists()


def test_install_without_libraries_fails(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    with pytest.raises(bl.BuildError, match="no shared libraries"):
        bl.install_outputs(tmp_path / "bin", tmp_path / "p")


def test_library_names() -> None:
    assert bl.library_map(["libllama.0.dylib", "libllama.dylib", "libggml-base.0.9.0.dylib"]) == {
        "ggml-base": "libggml-base.0.9.0.dylib",
        "llama": "libllama.dylib",
    }
    assert bl.library_map(["llama.dll", "ggml-cpu.dll", "llama-quantize"]) == {
        "ggml-cpu": "ggml-cpu.dll",
        "llama": "llama.dll",
    }
    assert not bl.is_library_name("llama-embedding")
    assert bl.is_library_name("libggml-cpu.so")


def test_manifest_written_by_a_previous_real_build_is_consistent() -> None:
    manifest_path = bl.default_prefix("cpu") / "manifest.json"
    if not manifest_path.is_file():
        pytest.skip("no build in embellama/_lib/cpu")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["format"] == 1 and manifest["builder"] == "build_llama.py"
    prefix = manifest_path.parent
    for rel, digest in manifest["files"].items():
        assert hashlib.sha256((prefix / rel).read_bytes()).hexdigest() == digest, rel
    for rel, target in manifest["links"].items():
        assert os.readlink(prefix / rel) == target
    assert (prefix / manifest["libraries"]["llama"]).exists()
    cdef = (ROOT / "include" / "llama.cdef.h").read_bytes()
    if hashlib.sha256(cdef).hexdigest() == manifest["cdef_sha256"]:
        structs = bl.parse_cdef_structs(cdef.decode())
        assert {k: list(v["fields"]) for k, v in manifest["layout"].items()} == structs


def test_install_failing_while_copying_leaves_the_prefix_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = tmp_path / "prefix"
    result = bl.install_outputs(fake_build_bin(tmp_path), prefix, ["llama-quantize"])
    bl.write_json_atomic(prefix / "manifest.json", {"files": result.files, "links": result.links})
    before = snapshot(prefix)
    bin_dir = fake_build_bin(tmp_path, b"v2")  # every file changed
    real_copy2, copies = shutil.copy2, []

    def copy2_failing_on_the_second(src: Any, dst: Any, **kw: Any) -> Any:
        copies.append(dst)
        if len(copies) == 2:
            raise OSError(28, "No space left on device")
        return real_copy2(src, dst, **kw)

    monkeypatch.setattr(bl.shutil, "copy2", copy2_failing_on_the_second)
    with pytest.raises(bl.BuildError, match="left as it was"):
        bl.install_outputs(bin_dir, prefix, ["llama-quantize"], read_json(prefix / "manifest.json"))
    assert len(copies) == 2
    assert snapshot(prefix) == before  # the manifest too; no staging folder left behind


@pytest.mark.skipif(os.name == "nt", reason="symlinks")
def test_install_failing_halfway_through_the_renames_drops_the_old_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = tmp_path / "prefix"
    result = bl.install_outputs(fake_build_bin(tmp_path), prefix)
    bl.write_json_atomic(prefix / "manifest.json", {"files": result.files, "links": result.links})
    bin_dir = fake_build_bin(tmp_path, b"v2")
    real_replace, renames = os.replace, []

    def replace_failing_on_the_second(src: Any, dst: Any) -> None:
        renames.append(dst)
        if len(renames) == 2:
            raise OSError(5, "Input/output error")
        real_replace(src, dst)

    monkeypatch.setattr(bl.os, "replace", replace_failing_on_the_second)
    with pytest.raises(bl.BuildError, match="failed halfway.*no manifest.json now"):
        bl.install_outputs(bin_dir, prefix, [], read_json(prefix / "manifest.json"))
    # one library is new, one old: the old manifest, which describes neither mix, is gone
    assert not (prefix / "manifest.json").exists()
    assert not (prefix / bl.STAGING_NAME).exists()


def test_install_clears_a_staging_folder_left_by_an_interrupted_install(tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    (prefix / bl.STAGING_NAME / "bin").mkdir(parents=True)
    (prefix / bl.STAGING_NAME / "libllama.so.0.5.0").write_bytes(b"half")
    result = bl.install_outputs(fake_build_bin(tmp_path), prefix)
    assert result.copied == 6 and not (prefix / bl.STAGING_NAME).exists()
    assert (prefix / "libllama.so.0.5.0").read_bytes() == b"v1libllama.so.0.5.0"


# --------------------------------------------------------------------------- the steps, end to end


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def snapshot(folder: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry under ``folder``: links with their target, files with content and mtime."""
    out: dict[str, tuple[Any, ...]] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            out[rel] = ("dir",)
        else:
            out[rel] = ("file", path.read_bytes(), path.stat().st_mtime_ns)
    return out


PAIR_CDEF = "struct pair {\n    int32_t a;\n    const char * b;\n};\n"
PAIR_LAYOUT = {"pair": {"size": 16, "align": 8, "fields": {"a": 0, "b": 8}}}


class FakeTools:
    """Stands in for cmake (run_step) and the probe (run_probe), recording the calls.

    ``fail`` names the step that fails; ``content`` is what the fake build writes.
    Each call also records whether the prefix had a manifest at that moment.
    """

    def __init__(self, tmp_path: Path) -> None:
        self.src = fake_tree(tmp_path)
        self.build = tmp_path / "build"
        self.prefix = tmp_path / "prefix"
        self.cdef = tmp_path / "pair.cdef.h"
        self.cdef.write_text(PAIR_CDEF)
        self.tmp_path = tmp_path
        self.calls: list[str] = []
        self.manifest_seen: list[bool] = []
        self.fail: str | None = None
        self.content = b"v1"
        self.compilers: list[list[str]] = []

    def argv(self, *extra: str) -> list[str]:
        paths = ["--build-dir", str(self.build), "--prefix", str(self.prefix), "--cdef", str(self.cdef)]
        return ["--source", str(self.src), *paths, *extra]

    def _called(self, name: str) -> None:
        self.calls.append(name)
        self.manifest_seen.append((self.prefix / "manifest.json").is_file())

    def run_step(self, name: str, cmd: list[str], log: Path, **kw: Any) -> str:
        self._called(name)
        if name == self.fail:
            raise bl.StepFailed(name, 2, log)
        if name == "configure":
            (self.build / "CMakeCache.txt").write_text(f"CMAKE_HOME_DIRECTORY:INTERNAL={self.src}\n")
            (self.build / "build.ninja").write_text("")
        elif name == "build":
            fake_build_bin(self.tmp_path, self.content)
        return ""

    def run_probe(self, source_dir: Path, work_dir: Path, structs: Any, compiler: Any, *rest: Any) -> Any:
        self._called("probe")
        self.compilers.append(list(compiler))
        assert source_dir == self.src and dict(structs) == {"pair": ["a", "b"]}
        if self.fail == "probe":
            raise bl.BuildError("include/llama.cdef.h declares fields that llama.h at x does not have")
        return PAIR_LAYOUT


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeTools:
    fake = FakeTools(tmp_path)
    monkeypatch.setattr(bl, "run_step", fake.run_step)
    monkeypatch.setattr(bl, "run_probe", fake.run_probe)
    # cmake "is installed"; no ninja, git or compiler is looked for or run
    monkeypatch.setattr(bl.shutil, "which", lambda name, **kw: "/usr/bin/cmake" if name == "cmake" else None)
    monkeypatch.setenv("CC", "fake-cc")
    return fake


@pytest.mark.skipif(os.name == "nt", reason="symlinks")
def test_a_build_probes_first_and_writes_the_manifest_last(
    tools: FakeTools, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bl.main(tools.argv()) == 0, capsys.readouterr().err
    # the probe (llama.h only, seconds) comes before the configure and the long compile
    assert tools.calls == ["probe", "configure", "build"]
    assert tools.compilers == [["fake-cc"]]
    manifest = read_json(tools.prefix / "manifest.json")
    assert manifest["layout"] == PAIR_LAYOUT
    assert manifest["builder"] == "build_llama.py" and manifest["build_seconds"] >= 0
    for rel, digest in manifest["files"].items():
        assert hashlib.sha256((tools.prefix / rel).read_bytes()).hexdigest() == digest
    assert manifest["libraries"] == {"ggml": "libggml.so", "llama": "libllama.so"}
    out = capsys.readouterr().out
    timed = [line.split()[1] for line in out.splitlines() if re.search(r"\(\d+\.\d s\)$", line)]
    assert timed == ["source", "cdef", "probe", "configure", "build", "install", "manifest"]


@pytest.mark.skipif(os.name == "nt", reason="symlinks")
def test_a_server_build_installs_the_server_and_its_libraries_and_records_them(
    tools: FakeTools, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    commands: dict[str, list[str]] = {}
    fake_step = tools.run_step

    def run_step(name: str, cmd: list[str], log: Path, **kw: Any) -> str:
        commands[name] = cmd
        out = fake_step(name, cmd, log, **kw)
        if name == "build":  # what llama.cpp's server build adds to the tools build
            bin_dir = tools.tmp_path / "build" / "bin"
            for built in ("llama-embedding", "llama-server", "libllama-server-impl.so", "libllama-common.so"):
                (bin_dir / built).write_bytes(b"v1" + built.encode())
        return out

    monkeypatch.setattr(bl, "run_step", run_step)
    assert bl.main(tools.argv("--with-server")) == 0, capsys.readouterr().err
    assert commands["build"][commands["build"].index("--target") + 1 :][:4] == bl.build_targets(True, True)
    assert "-DLLAMA_BUILD_SERVER=ON" in commands["configure"]
    manifest = read_json(tools.prefix / "manifest.json")
    assert manifest["tools"] == ["bin/llama-embedding", "bin/llama-quantize", "bin/llama-server"]
    assert "-DLLAMA_BUILD_SERVER=ON" in manifest["cmake_options"]
    assert {"llama-server-impl", "llama-common"} <= set(manifest["libraries"])
    assert (tools.prefix / "bin" / "llama-server").read_bytes() == b"v1llama-server"
    assert (tools.build / bl.RPATH_INCLUDE_NAME).read_text() == bl.RPATH_INCLUDE_TEXT

    # a later tools build in the same folders removes the server and its libraries, as recorded
    monkeypatch.setattr(bl, "run_step", fake_step)
    assert bl.main(tools.argv("--with-tools")) == 0
    manifest = read_json(tools.prefix / "manifest.json")
    assert manifest["tools"] == ["bin/llama-embedding", "bin/llama-quantize"]
    assert not (tools.prefix / "bin" / "llama-server").exists()
    assert "-DLLAMA_BUILD_SERVER=OFF" in manifest["cmake_options"]


@pytest.mark.skipif(os.name == "nt", reason="symlinks")
def test_a_rerun_with_nothing_changed_keeps_the_manifest_and_replaces_it_atomically(
    tools: FakeTools, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bl.main(tools.argv()) == 0
    libraries = {k: v for k, v in snapshot(tools.prefix).items() if k != "manifest.json"}
    tools.calls.clear()
    tools.manifest_seen.clear()
    capsys.readouterr()
    replaced: list[tuple[Path, Path]] = []
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        replaced.append((Path(src), Path(dst)))
        assert (tools.prefix / "manifest.json").is_file(), "the manifest was gone before its replacement"
        real_replace(src, dst)

    monkeypatch.setattr(bl.os, "replace", replace)
    assert bl.main(tools.argv()) == 0
    assert tools.calls == ["probe", "build"]  # configure skipped
    assert all(tools.manifest_seen), "the previous manifest went away during the rerun"
    assert "0 copied, 6 unchanged, 0 removed" in capsys.readouterr().out
    assert {k: v for k, v in snapshot(tools.prefix).items() if k != "manifest.json"} == libraries
    # the only write into the prefix: a temporary file beside the manifest, renamed over it
    assert [dst for _, dst in replaced] == [tools.prefix / "manifest.json"]
    tmp = replaced[0][0]
    assert tmp.parent == tools.prefix and not tmp.exists()
    assert read_json(tools.prefix / "manifest.json")["layout"] == PAIR_LAYOUT


@pytest.mark.skipif(os.name == "nt", reason="symlinks")
def test_changed_libraries_are_renamed_into_place_before_the_manifest(
    tools: FakeTools, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert bl.main(tools.argv()) == 0
    tools.content = b"v2"
    tools.manifest_seen.clear()
    replaced: list[Path] = []
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        replaced.append(Path(dst))
        real_replace(src, dst)

    monkeypatch.setattr(bl.os, "replace", replace)
    assert bl.main(tools.argv()) == 0
    assert tools.manifest_seen == [True, True]  # the old manifest stays through probe and build
    assert replaced[-1] == tools.prefix / "manifest.json"
    assert tools.prefix / "libllama.so.0.5.0" in replaced[:-1]
    manifest = read_json(tools.prefix / "manifest.json")
    assert manifest["files"]["libllama.so.0.5.0"] == hashlib.sha256(b"v2libllama.so.0.5.0").hexdigest()
    assert (tools.prefix / "libllama.so.0.5.0").read_bytes() == b"v2libllama.so.0.5.0"
    assert not (tools.prefix / bl.STAGING_NAME).exists()


@pytest.mark.skipif(os.name == "nt", reason="symlinks")
@pytest.mark.parametrize("failing", ["probe", "configure", "build", "install"])
def test_a_failing_step_leaves_the_previous_install_whole(
    tools: FakeTools,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    failing: str,
) -> None:
    assert bl.main(tools.argv()) == 0
    before = snapshot(tools.prefix)
    assert "manifest.json" in before and "libllama.so" in before
    tools.calls.clear()
    tools.content = b"v2"  # what the build would install
    if failing == "install":

        def copy2(*args: Any, **kw: Any) -> Any:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(bl.shutil, "copy2", copy2)
    else:
        tools.fail = failing
    capsys.readouterr()
    # a new option, so that configure runs again
    assert bl.main(tools.argv("--cmake-arg=-DGGML_LTO=ON")) == 1
    assert snapshot(tools.prefix) == before
    err = capsys.readouterr().err
    expected = {
        "probe": (["probe"], "declares fields"),  # fails in seconds: no configure, no build
        "configure": (["probe", "configure"], "step 'configure' failed"),
        "build": (["probe", "configure", "build"], "step 'build' failed"),
        "install": (["probe", "configure", "build"], "left as it was"),
    }[failing]
    assert tools.calls == expected[0]
    assert expected[1] in err


def test_probe_compiler_is_the_one_cmake_uses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build = tmp_path / "b"
    build.mkdir()
    monkeypatch.setattr(bl.shutil, "which", lambda name, **kw: f"/usr/bin/{name}" if name == "gcc" else None)
    assert bl.probe_compiler([], build, {}) == ["/usr/bin/gcc"]
    assert bl.probe_compiler([], build, {"CC": "ccache clang -m64"}) == ["ccache", "clang", "-m64"]
    (build / "CMakeCache.txt").write_text("CMAKE_C_COMPILER:FILEPATH=/opt/cc/bin/cc\n")
    assert bl.probe_compiler([], build, {"CC": "clang"}) == ["/opt/cc/bin/cc"]
    options = ["-DCMAKE_C_COMPILER=clang-17", "-DX=1", "-DCMAKE_C_COMPILER:FILEPATH=/usr/bin/icx"]
    assert bl.probe_compiler(options, build, {}) == ["/usr/bin/icx"]
    (build / "CMakeCache.txt").unlink()
    monkeypatch.setattr(bl.shutil, "which", lambda name, **kw: None)
    with pytest.raises(bl.BuildError, match="no C compiler"):
        bl.probe_compiler([], build, {})


def test_configure_after_a_wipe_still_finds_the_tools_rpath_include(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bl, "compiler_can_drop_amx", lambda *a, **k: False)
    build = tmp_path / "b"
    plan = bl.make_plan(
        bl.parse_args(["--source", str(fake_tree(tmp_path)), "--build-dir", str(build), "--with-tools"])
    )
    # configured before from a source elsewhere: the configure step empties the folder
    build.mkdir()
    (build / "CMakeCache.txt").write_text(f"CMAKE_HOME_DIRECTORY:INTERNAL={tmp_path / 'elsewhere'}\n")
    (build / "stale.o").write_text("")
    seen: list[bool] = []

    def fake_step(name: str, cmd: list[str], log: Path, **kw: Any) -> str:
        seen.append((build / bl.RPATH_INCLUDE_NAME).read_text() == bl.RPATH_INCLUDE_TEXT)
        return ""

    monkeypatch.setattr(bl, "run_step", fake_step)
    bl.configure_step(plan, build / "logs", False)
    assert seen == [True]
    assert not (build / "stale.o").exists()


def test_compare_probe_layout() -> None:
    # build_llama.py's check has its own name: embellama._native.lib.check_layout is another check
    assert not hasattr(bl, "check_layout")
    structs = {"pair": ["a", "b"]}
    assert bl.compare_probe_layout(structs, PAIR_LAYOUT) == PAIR_LAYOUT
    swapped = {"pair": {"size": 16, "align": 8, "fields": {"a": 8, "b": 0}}}
    with pytest.raises(bl.BuildError, match="another order than llama.h"):
        bl.compare_probe_layout(structs, swapped)
    with pytest.raises(bl.BuildError, match="lacks struct pair"):
        bl.compare_probe_layout(structs, {})


def _functions(tree: ast.AST) -> list[ast.FunctionDef]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)]


def test_build_llama_reads_as_its_steps() -> None:
    tree = ast.parse((ROOT / "build_llama.py").read_text(encoding="utf-8"))
    too_long = {
        f.name: f"{f.end_lineno - f.lineno + 1} lines" for f in _functions(tree) if (f.end_lineno or 0) - f.lineno >= 60
    }
    assert not too_long, f"functions over 60 lines: {too_long}"
    do_nothing = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and all(isinstance(b, ast.Pass) for b in node.body)
    ]
    assert not do_nothing, f"'if ...: pass' at lines {do_nothing}"
    run_build = next(f for f in _functions(tree) if f.name == "run_build")
    called = [
        node.func.id for node in ast.walk(run_build) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    ]
    steps = [name for name in called if name.endswith("_step")]
    assert steps == [
        "fetch_step",
        "declarations_step",
        "probe_step",
        "configure_step",
        "build_step",
        "install_step",
        "manifest_step",
    ]


# --------------------------------------------------------------------------- other llama.cpp versions


CHANGELOG = """\
## [Unreleased]

## [0.3.31]

- fix: something else

## [0.3.30]

- feat: update llama.cpp to ggml-org/llama.cpp@e3a74b299

## [0.3.29]

- feat: Update llama.cpp to ggml-org/llama.cpp@f05cf4676 by @abetlen in #2290
"""


def test_changelog_names_the_vendored_commit() -> None:
    assert bl.changelog_commit(CHANGELOG, "0.3.30") == "e3a74b299"
    assert bl.changelog_commit(CHANGELOG, "0.3.31") == "e3a74b299"  # a release without an update keeps the last one
    assert bl.changelog_commit(CHANGELOG, "0.3.29") == "f05cf4676"
    assert bl.changelog_commit(CHANGELOG, "0.1.0") is None


def test_another_llama_cpp_gets_its_own_folders(tmp_path: Path) -> None:
    args = bl.parse_args(["--llama-cpp-python", "0.3.30", "--cache-dir", str(tmp_path), "--dry-run"])
    plan = bl.make_plan(args)
    assert plan.key == "llama-cpp-python-0.3.30"
    assert plan.prefix == tmp_path / "lib" / "llama-cpp-python-0.3.30-cpu"
    assert plan.prefix != bl.default_prefix("cpu")
    assert plan.build_dir == tmp_path / "build" / "llama-cpp-python-0.3.30-cpu"
    assert plan.source_dir == tmp_path / "src" / "llama-cpp-python-0.3.30"
    assert not any(o.startswith("-DLLAMA_BUILD_COMMIT=") for o in plan.options)
    pinned = bl.make_plan(bl.parse_args(["--llama-cpp-python", bl.SDIST_VERSION, "--cache-dir", str(tmp_path)]))
    assert pinned.key is None and pinned.prefix == bl.default_prefix("cpu")
    # a checkout whose llama.h is not the pinned one is keyed too
    src = fake_tree(tmp_path)
    checkout = bl.make_plan(bl.parse_args(["--source", str(src), "--cache-dir", str(tmp_path)]))
    assert checkout.key is not None and checkout.key.startswith("path-")
    assert checkout.prefix == tmp_path / "lib" / f"{checkout.key}-cpu"
    with pytest.raises(SystemExit):
        bl.parse_args(["--llama-cpp-python", "0.3.30", "--source", "git"])


@needs_cc
def test_declarations_are_generated_for_another_llama_h(tmp_path: Path) -> None:
    header = "#include <stdint.h>\nstruct llama_batch { int32_t n_tokens; float * embd; };\n"
    header += "struct llama_batch llama_batch_init(int32_t n_tokens, int32_t embd, int32_t n_seq_max);\n"
    src = fake_tree(tmp_path, header)
    plan = bl.make_plan(bl.parse_args(["--source", str(src), "--cache-dir", str(tmp_path)]))
    source = bl.path_source(src)
    decls = bl.declarations_step(plan, source, bl.CDEF_PATH)
    assert decls.generated and decls.structs == {"llama_batch": ["n_tokens", "embd"]}
    assert "struct llama_batch llama_batch_init(int32_t n_tokens, int32_t embd, int32_t n_seq_max);" in decls.text
    # --cdef FILE is used as it is
    copy = tmp_path / "pinned.cdef.h"
    copy.write_text((ROOT / "include" / "llama.cdef.h").read_text())
    pinned = bl.declarations_step(plan, source, copy)
    assert not pinned.generated and "llama_context_params" in pinned.structs


def test_rewrite_pins_replaces_exactly_the_named_pins() -> None:
    script = (ROOT / "build_llama.py").read_text(encoding="utf-8")
    moved = bl.rewrite_pins(script, {"SDIST_VERSION": "0.3.99", "LLAMA_CPP_COMMIT": "abc1234"})
    assert 'SDIST_VERSION = "0.3.99"' in moved and 'LLAMA_CPP_COMMIT = "abc1234"' in moved
    assert f'SDIST_SHA256 = "{bl.SDIST_SHA256}"' in moved
    assert len(moved.splitlines()) == len(script.splitlines())
    with pytest.raises(bl.BuildError, match="no pin NOT_A_PIN"):
        bl.rewrite_pins(script, {"NOT_A_PIN": "x"})


@needs_cc
def test_update_pin_to_the_same_llama_cpp_shows_no_difference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = json.loads((bl.default_prefix("cpu") / "manifest.json").read_text())
    pinned = Path(manifest["source"]["directory"])
    fetched = bl.Source("pypi", pinned, "llama-cpp-python==0.3.36:vendor/llama.cpp", bl.LLAMA_CPP_COMMIT, "0" * 64)
    monkeypatch.setattr(bl, "fetch_sdist_version", lambda *a, **k: fetched)
    monkeypatch.setattr(bl, "write_text_atomic", lambda *a: pytest.fail("a dry run writes nothing"))
    report = bl.update_pin(bl.SDIST_VERSION, tmp_path, write=False)
    assert report.splitlines()[0] == f"layout of llama.cpp {bl.LLAMA_CPP_COMMIT[:12]}: " + ", ".join(
        f"{name} {entry['size']} B" for name, entry in manifest["layout"].items()
    )


@needs_cc
def test_update_pin_rewrites_every_pin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a copy of the files it rewrites, moved to a (pretend) newer release of the same llama.cpp
    repo = tmp_path / "repo"
    for rel in (*bl.PIN_FILES, bl.COMPAT_FILE, "embellama/_native/cdefgen.py", "build_llama.py", "noxfile.py"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text((ROOT / rel).read_text(encoding="utf-8"), encoding="utf-8")
    manifest = json.loads((bl.default_prefix("cpu") / "manifest.json").read_text())
    pinned = Path(manifest["source"]["directory"])
    commit = "f" * 40
    fetched = bl.Source("pypi", pinned, "llama-cpp-python==0.3.99:vendor/llama.cpp", commit, "1" * 64)
    monkeypatch.setattr(bl, "fetch_sdist_version", lambda *a, **k: fetched)
    monkeypatch.setattr(bl, "REPO_ROOT", repo)
    bl.update_pin("0.3.99", tmp_path / "cache")
    script = (repo / "build_llama.py").read_text()
    assert f'LLAMA_CPP_COMMIT = "{commit}"' in script and 'SDIST_VERSION = "0.3.99"' in script
    assert 'SDIST_SHA256 = "' + "1" * 64 + '"' in script
    assert '"llama-cpp-python==0.3.99"' in (repo / "noxfile.py").read_text()
    compat = (repo / bl.COMPAT_FILE).read_text()
    assert 'PIN_VERSION = "0.3.99"' in compat and f'PIN_COMMIT = "{commit[:12]}"' in compat
    assert 'OLDEST_VERSION = "0.3.27"' in compat  # the window's start stays
    cdefs = [(repo / rel).read_text() for rel in bl.PIN_FILES]
    assert cdefs[0] == cdefs[1] and bl.pinned_label(commit) in cdefs[0]


@needs_cc
def test_the_probe_records_the_enum_values_of_llama_h(tmp_path: Path) -> None:
    manifest = json.loads((bl.default_prefix("cpu") / "manifest.json").read_text())
    names = bl.parse_cdef_enums((ROOT / "include" / "llama.cdef.h").read_text())
    assert names[:2] == ["GGML_TYPE_F32", "GGML_TYPE_F16"] and "LLAMA_POOLING_TYPE_RANK" in names
    values = bl.run_enum_probe(Path(manifest["source"]["directory"]), tmp_path, names, [CC], tmp_path / "log")
    assert list(values) == names
    assert (values["LLAMA_POOLING_TYPE_RANK"], values["GGML_TYPE_BF16"], values["LLAMA_FTYPE_GUESSED"]) == (4, 30, 1024)
    assert values["LLAMA_FLASH_ATTN_TYPE_AUTO"] == -1
    assert bl.run_enum_probe(tmp_path, tmp_path, [], [CC], tmp_path / "log") == {}


def test_the_pinned_build_needs_only_the_standard_library(tmp_path: Path) -> None:
    # python -S: no site-packages, so no pycparser; the pinned declarations need none
    code = (
        "import sys, build_llama as bl\n"
        "text, structs = bl.read_cdef(bl.CDEF_PATH)\n"
        "assert 'llama_context_params' in structs and 'pycparser' not in sys.modules\n"
        "try:\n"
        f"    bl.generate_cdef(bl.Path({str(tmp_path / 'llama.h')!r}), 'x')\n"
        "except bl.BuildError as exc:\n"
        "    print(exc)\n"
    )
    (tmp_path / "llama.h").write_text("int f(void);\n")
    run = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "are generated with pycparser" in run.stdout and "pip install pycparser" in run.stdout
