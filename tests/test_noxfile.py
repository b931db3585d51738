"""The GPU test sessions refuse to run (and so to pass) where their device is missing."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

NOXFILE = Path(__file__).resolve().parent.parent / "noxfile.py"


class _Stop(Exception):
    pass


class FakeSession:
    def __init__(self):
        self.ran = []

    def error(self, message):
        raise _Stop(message)

    def run(self, *args, **kwargs):
        self.ran.append(args)


@pytest.fixture
def noxfile(monkeypatch):
    fake = types.ModuleType("nox")
    fake.options = types.SimpleNamespace()
    fake.Session = FakeSession
    fake.session = lambda *a, **k: a[0] if a and callable(a[0]) else (lambda f: f)
    fake.parametrize = lambda *a, **k: lambda f: f
    monkeypatch.setitem(sys.modules, "nox", fake)
    spec = importlib.util.spec_from_file_location("embellama_noxfile", NOXFILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
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


def test_cpu_session_builds_then_runs_pytest(noxfile, monkeypatch):
    session = FakeSession()
    session.posargs = []
    session.install = lambda *a, **k: None
    noxfile.tests(session, "cpu")
    commands = [" ".join(map(str, args)) for args in session.ran]
    assert "build_llama.py --backend cpu" in commands[0]
    assert commands[-1].startswith("pytest")
