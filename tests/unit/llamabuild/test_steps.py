# SPDX-License-Identifier: Apache-2.0
"""llamabuild.build: the steps of a whole build, with fake cmake and probe: order, manifest last, failures."""

from __future__ import annotations

import ast
import hashlib
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from llamabuild import build, cdef, cli, cmake, cuda, paths, process
from tests.unit.llamabuild.helpers import PAIR_LAYOUT, ROOT, FakeTools, failing_cmd, fake_tree, read_json, snapshot


def test_main_reports_a_failing_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    src = fake_tree(tmp_path)
    monkeypatch.setattr(cmake, "configure_command", lambda *a: failing_cmd())

    def which(name: str) -> str | None:
        return "/usr/bin/cmake" if name == "cmake" else None

    monkeypatch.setattr(shutil, "which", which)
    monkeypatch.setattr(build, "probe_step", lambda *a, **k: {})  # the probe runs before configure
    monkeypatch.setattr(build, "declarations_step", lambda *a, **k: cdef.Declarations("", {}, "test"))
    code = cli.main(
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
    monkeypatch.setattr(cmake, "configure_command", lambda *a: failing)
    monkeypatch.setattr(shutil, "which", lambda name, **kw: "/usr/bin/cmake" if name == "cmake" else None)
    monkeypatch.setattr(cuda, "find_pip_cublas", lambda *a, **k: None)
    monkeypatch.setattr(build, "probe_step", lambda *a, **k: {})  # the probe runs before configure
    monkeypatch.setattr(build, "declarations_step", lambda *a, **k: cdef.Declarations("", {}, "test"))
    argv = ["--source", str(src), "--build-dir", str(tmp_path / "b"), "--prefix", str(tmp_path / "p")]
    assert cli.main([*argv, "--backend", "cuda", "--cuda-arch", "90"]) == 1
    assert "hint: ggml-cuda links cuBLAS" in capsys.readouterr().err
    assert cli.main([*argv, "--backend", "vulkan", "--build-dir", str(tmp_path / "v")]) == 1
    assert "hint:" not in capsys.readouterr().err


@pytest.mark.skipif(os.name == "nt", reason="symlinks")
def test_a_build_probes_first_and_writes_the_manifest_last(
    tools: FakeTools, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(tools.argv()) == 0, capsys.readouterr().err
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

    monkeypatch.setattr(process, "run_step", run_step)
    assert cli.main(tools.argv("--with-server")) == 0, capsys.readouterr().err
    assert commands["build"][commands["build"].index("--target") + 1 :][:4] == cmake.build_targets(True, True)
    assert "-DLLAMA_BUILD_SERVER=ON" in commands["configure"]
    manifest = read_json(tools.prefix / "manifest.json")
    assert manifest["tools"] == ["bin/llama-embedding", "bin/llama-quantize", "bin/llama-server"]
    assert "-DLLAMA_BUILD_SERVER=ON" in manifest["cmake_options"]
    assert {"llama-server-impl", "llama-common"} <= set(manifest["libraries"])
    assert (tools.prefix / "bin" / "llama-server").read_bytes() == b"v1llama-server"
    assert (tools.build / paths.RPATH_INCLUDE_NAME).read_text() == cmake.RPATH_INCLUDE_TEXT

    # a later tools build in the same folders removes the server and its libraries, as recorded
    monkeypatch.setattr(process, "run_step", fake_step)
    assert cli.main(tools.argv("--with-tools")) == 0
    manifest = read_json(tools.prefix / "manifest.json")
    assert manifest["tools"] == ["bin/llama-embedding", "bin/llama-quantize"]
    assert not (tools.prefix / "bin" / "llama-server").exists()
    assert "-DLLAMA_BUILD_SERVER=OFF" in manifest["cmake_options"]


@pytest.mark.skipif(os.name == "nt", reason="symlinks")
def test_a_rerun_with_nothing_changed_keeps_the_manifest_and_replaces_it_atomically(
    tools: FakeTools, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(tools.argv()) == 0
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

    monkeypatch.setattr(os, "replace", replace)
    assert cli.main(tools.argv()) == 0
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
    assert cli.main(tools.argv()) == 0
    tools.content = b"v2"
    tools.manifest_seen.clear()
    replaced: list[Path] = []
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        replaced.append(Path(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    assert cli.main(tools.argv()) == 0
    assert tools.manifest_seen == [True, True]  # the old manifest stays through probe and build
    assert replaced[-1] == tools.prefix / "manifest.json"
    assert tools.prefix / "libllama.so.0.5.0" in replaced[:-1]
    manifest = read_json(tools.prefix / "manifest.json")
    assert manifest["files"]["libllama.so.0.5.0"] == hashlib.sha256(b"v2libllama.so.0.5.0").hexdigest()
    assert (tools.prefix / "libllama.so.0.5.0").read_bytes() == b"v2libllama.so.0.5.0"
    assert not (tools.prefix / paths.STAGING_NAME).exists()


@pytest.mark.skipif(os.name == "nt", reason="symlinks")
@pytest.mark.parametrize("failing", ["probe", "configure", "build", "install"])
def test_a_failing_step_leaves_the_previous_install_whole(
    tools: FakeTools,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    failing: str,
) -> None:
    assert cli.main(tools.argv()) == 0
    before = snapshot(tools.prefix)
    assert "manifest.json" in before and "libllama.so" in before
    tools.calls.clear()
    tools.content = b"v2"  # what the build would install
    if failing == "install":

        def copy2(*args: Any, **kw: Any) -> Any:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(shutil, "copy2", copy2)
    else:
        tools.fail = failing
    capsys.readouterr()
    # a new option, so that configure runs again
    assert cli.main(tools.argv("--cmake-arg=-DGGML_LTO=ON")) == 1
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


def _functions(tree: ast.AST) -> list[ast.FunctionDef]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)]


PACKAGE = ROOT / "build_backend" / "llamabuild"


def test_the_build_package_reads_as_its_steps() -> None:
    """Short modules and functions, no do-nothing branches, and run_build a list of the steps."""
    too_long: dict[str, str] = {}
    for file in sorted(PACKAGE.glob("*.py")):
        text = file.read_text(encoding="utf-8")
        assert len(text.splitlines()) <= 800, f"{file.name}: {len(text.splitlines())} lines"
        tree = ast.parse(text)
        for f in _functions(tree):
            if (f.end_lineno or 0) - f.lineno >= 60:
                too_long[f"{file.name}:{f.name}"] = f"{(f.end_lineno or 0) - f.lineno + 1} lines"
        do_nothing = [
            node.lineno
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and all(isinstance(b, ast.Pass) for b in node.body)
        ]
        assert not do_nothing, f"{file.name}: 'if ...: pass' at lines {do_nothing}"
    assert not too_long, f"functions over 60 lines: {too_long}"
    tree = ast.parse((PACKAGE / "build.py").read_text(encoding="utf-8"))
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
