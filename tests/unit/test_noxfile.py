# SPDX-License-Identifier: Apache-2.0
"""The nox sessions: GPU sessions refuse to run (and so to pass) where their device is missing."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

NOXFILE = Path(__file__).resolve().parents[2] / "noxfile.py"


class _Stop(Exception):
    pass


class FakeSession:
    def __init__(self, posargs=()):
        self.installed = []
        self.warnings = []
        self.ran = []
        self.ran_kwargs = []
        self.posargs = list(posargs)

    def install(self, *args, **kwargs):
        self.installed.append((args, kwargs))

    def commands(self):
        return [" ".join(map(str, args)) for args in self.ran]

    def error(self, message):
        raise _Stop(message)

    def warn(self, message):
        self.warnings.append(message)

    def log(self, message):
        pass

    def run(self, *args, **kwargs):
        self.ran.append(args)
        self.ran_kwargs.append(kwargs)


@pytest.fixture
def noxfile(monkeypatch, tmp_path):
    fake = types.ModuleType("nox")
    fake.options = types.SimpleNamespace()
    fake.Session = FakeSession
    fake.session = lambda *a, **k: a[0] if a and callable(a[0]) else (lambda f: f)
    fake.parametrize = lambda *a, **k: lambda f: f
    monkeypatch.setitem(sys.modules, "nox", fake)
    spec = importlib.util.spec_from_file_location("embellama_noxfile", NOXFILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # The sessions must never touch the checkout's .whl/ from a test (the wheel tests read it).
    module.WHEEL_DIR = tmp_path / "whl"
    return module


def test_cuda_session_stops_without_nvidia_smi(noxfile, monkeypatch):
    monkeypatch.setattr(noxfile.shutil, "which", lambda name: None)
    session = FakeSession()
    with pytest.raises(_Stop, match="needs an NVIDIA GPU.*nvidia-smi is not installed"):
        noxfile.tests(session, "cuda")
    assert session.ran == []  # nothing was built or tested


def test_cuda_session_stops_when_no_gpu_is_listed(noxfile, monkeypatch):
    monkeypatch.setattr(noxfile.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(noxfile.subprocess, "run", lambda *a, **k: types.SimpleNamespace(stdout=""))
    with pytest.raises(_Stop, match="lists no GPU"):
        noxfile.tests(FakeSession(), "cuda")


def test_metal_session_needs_macos(noxfile, monkeypatch):
    monkeypatch.setattr(noxfile.sys, "platform", "linux")
    with pytest.raises(_Stop, match="needs macOS"):
        noxfile.tests(FakeSession(), "metal")


def test_cpu_session_builds_then_runs_pytest(noxfile, tmp_path, monkeypatch):
    sts = tmp_path / "sts-test.csv"
    sts.write_text("")
    monkeypatch.setenv("EMBELLAMA_STS_FILE", str(sts))
    session = FakeSession()
    noxfile.tests(session, "cpu")
    commands = session.commands()
    # the portable libllama that the wheel ships (and whose build folder the wheel's build reuses)
    assert "build_llama.py --backend cpu --portable" in commands[0]
    # the sdist and wheel, built and repaired before pytest, which gets their folders
    build = next(i for i, c in enumerate(commands) if "-m build --sdist --wheel" in c)
    assert commands[build].endswith(str(noxfile.ROOT)) and str(tmp_path / "whl" / "dist") in commands[build]
    assert any(c.startswith("python -m pip download") and "numpy cffi pycparser" in c for c in commands[build:])
    # the main run: nothing beside the checkout, no skip but the gold-score tests', the coverage gate
    assert commands[-2].startswith("pytest")
    env = session.ran_kwargs[-2]["env"]
    assert env["EMBELLAMA_WHEELHOUSE"] == str(tmp_path / "whl" / "wheelhouse")
    assert env["EMBELLAMA_SDIST"] == str(tmp_path / "whl" / "dist")
    assert env["EMBELLAMA_HIDE_SHARED"] == "1" and env["EMBELLAMA_STRICT_SKIPS"] == "1"
    assert "--cov=embellama" in commands[-2] and "--cov-fail-under=80" in commands[-2]
    # then the gold-score tests alone, with the STS file, failing rather than skipping without it
    assert commands[-1] == "pytest -q -m sts_gold"
    gold = session.ran_kwargs[-1]["env"]
    assert gold["EMBELLAMA_STS_FILE"] == str(sts) and gold["EMBELLAMA_REQUIRE_STS"] == "1"
    assert "EMBELLAMA_HIDE_SHARED" not in gold


def test_without_an_sts_file_the_gold_score_tests_are_named_not_run(noxfile, tmp_path, monkeypatch):
    monkeypatch.delenv("EMBELLAMA_STS_FILE", raising=False)
    monkeypatch.setattr(noxfile, "ROOT", tmp_path / "clone")  # a clone with nothing beside it
    session = FakeSession()
    noxfile.tests(session, "cpu")
    assert "--cov=embellama" in session.commands()[-1]  # the main run is the last
    assert len(session.warnings) == 1 and "sts_gold" in session.warnings[0]
    # a file named but missing: the gold-score run goes ahead and fails instead of skipping
    monkeypatch.setenv("EMBELLAMA_STS_FILE", str(tmp_path / "missing.csv"))
    session = FakeSession()
    noxfile.tests(session, "cpu")
    assert session.commands()[-1] == "pytest -q -m sts_gold" and session.warnings == []


def test_a_selection_after_dashes_runs_as_given_without_the_gate(noxfile):
    session = FakeSession(["tests/unit/test_config.py", "-x"])
    noxfile.tests(session, "cpu")
    assert session.commands()[-1] == "pytest tests/unit/test_config.py -x"


def test_cuda_session_runs_the_suite_then_compares_with_the_cpu_build(noxfile, monkeypatch):
    monkeypatch.setattr(noxfile.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    gpu = types.SimpleNamespace(stdout="GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)")
    monkeypatch.setattr(noxfile.subprocess, "run", lambda *a, **k: gpu)
    session = FakeSession()
    noxfile.tests(session, "cuda")
    commands = session.commands()
    assert "build_llama.py --backend cuda" in commands[0]
    last_pytest = max(i for i, c in enumerate(commands) if c.startswith("pytest"))
    assert "build_llama.py --backend cpu" in commands[last_pytest + 1]
    assert commands[-1].endswith("compare_backends.py cpu cuda --min-cos 0.999")


def test_gpu_bench_refuses_without_the_device(noxfile, monkeypatch):
    monkeypatch.setattr(noxfile.shutil, "which", lambda name: None)
    session = FakeSession(["--backend", "cuda"])
    with pytest.raises(_Stop, match="needs an NVIDIA GPU"):
        noxfile.bench(session)
    assert session.ran == []


def test_llama_window_session_builds_that_version_and_runs_the_real_model_tests(noxfile):
    assert noxfile.LLAMA_WINDOW[0] == "0.3.27" and noxfile.LLAMA_WINDOW[-1] == "0.3.36"
    session = FakeSession()
    noxfile.llama(session, "0.3.27")
    commands = session.commands()
    assert commands[0].endswith("build_llama.py --llama-cpp-python 0.3.27")
    assert commands[-1].startswith("pytest -q tests/models/test_sts_exact.py tests/models/test_exactness.py")
    prefix = noxfile._window_prefix("0.3.27")
    assert prefix.name == "llama-cpp-python-0.3.27-cpu" and prefix.parent.name == "lib"


def test_the_supported_range_names_the_pin_and_the_oldest_tested_version(noxfile):
    from embellama._native import compat as _compat
    from llamabuild import pins

    assert (pins.SDIST_VERSION, pins.LLAMA_CPP_COMMIT[:12]) == (_compat.PIN_VERSION, _compat.PIN_COMMIT)
    assert noxfile.LLAMA_CPP_PYTHON.split("==") == ["llama-cpp-python", pins.SDIST_VERSION]
    assert noxfile.LLAMA_WINDOW[0] == _compat.OLDEST_VERSION and noxfile.LLAMA_WINDOW[-1] == _compat.PIN_VERSION
    assert _compat.PIN_VERSION in _compat.SUPPORTED and _compat.OLDEST_COMMIT in _compat.SUPPORTED


def test_cpu_bench_compiles_embellama_like_an_installed_wheel_before_measuring(noxfile):
    session = FakeSession(["--rounds", "1"])
    noxfile.bench(session)
    commands = session.commands()
    compiled = commands.index("python -m compileall -q embellama")
    assert commands[compiled + 1] == "python benchmarks/bench.py --rounds 1"


def test_only_the_bench_session_builds_llama_server(noxfile, monkeypatch):
    monkeypatch.setattr(noxfile.shutil, "rmtree", lambda *a, **k: None)  # the docs session's fresh output folder
    ci = {
        "lint": noxfile.lint,
        "docs": noxfile.docs,
        "unit": noxfile.unit,
        "tests(backend='cpu')": lambda s: noxfile.tests(s, "cpu"),
        "llama(version='0.3.27')": lambda s: noxfile.llama(s, "0.3.27"),
    }
    assert set(ci) == set(noxfile.nox.options.sessions)
    for name, session_function in ci.items():
        if name == "docs" and sys.version_info < (3, 11):
            continue
        session = FakeSession()
        session_function(session)
        assert not any("--with-server" in c for c in session.commands()), name
    # nox -s bench: the server build, before bench_serve.py (which finds <prefix>/bin/llama-server)
    session = FakeSession(["--rounds", "1"])
    noxfile.bench(session)
    commands = session.commands()
    built = next(i for i, c in enumerate(commands) if "build_llama.py" in c)
    assert commands[built].endswith("--backend cpu --with-server")
    assert built < next(i for i, c in enumerate(commands) if "bench_serve.py" in c)
    assert any("bench_rerank.py" in c for c in commands)
    # with --only, bench.py alone: the tools build, no server, no reranker bench
    session = FakeSession(["--only", "llama-cpp-python"])
    noxfile.bench(session)
    commands = session.commands()
    assert any(c.endswith("--backend cpu --with-tools") for c in commands)
    assert not any("--with-server" in c or "bench_serve.py" in c or "bench_rerank.py" in c for c in commands)


def test_the_unit_session_runs_tests_unit_without_libllama(noxfile):
    session = FakeSession()
    noxfile.unit(session)
    assert session.commands() == ["pytest -q -m not libllama tests/unit"]
    lib = session.ran_kwargs[-1]["env"]["EMBELLAMA_LIB"]
    assert lib and not Path(lib).exists()  # names no library: a test that loads one fails, not passes
    installed = " ".join(" ".join(map(str, args)) for args, _ in session.installed)
    assert "torch" not in installed and "-e ." in installed
