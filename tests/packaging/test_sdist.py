# SPDX-License-Identifier: Apache-2.0
"""The sdist: it carries build_llama.py, the build package (llamabuild) and the pinned llama.cpp source,
and ``pip install`` builds from it.

The ``tests`` nox session makes it (``python -m build --sdist``) and names its folder in ``$EMBELLAMA_SDIST``.
The install test unpacks it into a fixed folder of the cache and runs ``pip install`` on that folder
(pip builds a local folder in place) into a fresh venv, with ``-C portable=false`` (a build for this
CPU, as a user installing from source gets with that switch) and ``-C build-dir`` in the cache: the
first run compiles llama.cpp from the sdist's own source (about 3 minutes on 2 cores), a later one
with an unchanged source is incremental. The libllama that install made must be the one the venv
loads, built from the sdist's source, and embed as the checkout's build does.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from embellama import EmbeddingModel, ModelConfig
from llamabuild import paths, pins
from tests.support.artifacts import artifact

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sdist() -> Path:
    folder = artifact("EMBELLAMA_SDIST", "the sdist")
    found = sorted(folder.glob("embellama-*.tar.gz"))
    assert len(found) == 1, f"expected one embellama sdist in {folder}, found {found}"
    return found[0]


@pytest.fixture(scope="module")
def unpacked(sdist) -> Path:
    folder = paths.default_cache_dir() / "sdist-test"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    with tarfile.open(sdist) as tar:
        tar.extractall(folder, filter="data")  # keeps the files' times: an unchanged source stays unchanged
    (root,) = folder.iterdir()
    return root


def test_sdist_carries_build_llama_and_the_pinned_source(unpacked):
    assert (unpacked / "build_llama.py").read_bytes() == (REPO / "build_llama.py").read_bytes()
    # the build package, whole, with its pins: the same files as the checkout's
    package = REPO / "build_backend" / "llamabuild"
    shipped = sorted(p.relative_to(unpacked).as_posix() for p in (unpacked / "build_backend" / "llamabuild").iterdir())
    expected = sorted(f"build_backend/llamabuild/{p.name}" for p in package.iterdir() if p.suffix in (".py", ".json"))
    assert shipped == expected and "build_backend/llamabuild/pins.json" in shipped
    assert all((unpacked / rel).read_bytes() == (REPO / rel).read_bytes() for rel in shipped)
    assert (unpacked / "build_backend" / "embellama_build.py").is_file()
    source = unpacked / "llama.cpp"
    meta = json.loads((source / ".embellama-source.json").read_text(encoding="utf-8"))
    assert meta["commit"] == pins.LLAMA_CPP_COMMIT and meta["sdist_sha256"] == pins.SDIST_SHA256
    assert hashlib.sha256((source / "include" / "llama.h").read_bytes()).hexdigest() == pins.LLAMA_H_SHA256
    files = sorted(p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file())
    files.remove(".embellama-source.json")
    assert files == sorted(meta["files_sha256"]), "the recorded checksums cover exactly the files shipped"
    changed = [f for f in files if hashlib.sha256((source / f).read_bytes()).hexdigest() != meta["files_sha256"][f]]
    assert not changed
    # What a build and `embellama convert` need; not the models, docs and tools.
    assert (source / "convert_hf_to_gguf.py").is_file() and (source / "ggml" / "CMakeLists.txt").is_file()
    assert not (source / "models").exists() and not (source / "docs").exists()


def test_pip_install_of_the_sdist_builds_libllama(unpacked, tmp_path, minilm_f16, library):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    build_dir = paths.default_cache_dir() / "build" / "sdist-test-cpu"
    command = [sys.executable, "-m", "pip", "--python", str(python), "install", str(unpacked)]
    command += ["-C", "portable=false", "-C", f"build-dir={build_dir}", "--progress-bar", "off"]
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "EMBELLAMA_LIB": "", "EMBELLAMA_BACKEND": ""}
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    script = (
        "import json, sys, embellama\n"
        "m = embellama.EmbeddingModel(embellama.ModelConfig(model_path=sys.argv[1]))\n"
        "v = m.embed('A man is playing a guitar.')\n"
        "lib = embellama.get_library()\n"
        "print(json.dumps({'v': v.tolist(), 'lib': str(lib.path), 'manifest': lib.manifest}))\n"
    )
    run = subprocess.run(
        [str(python), "-I", "-c", script, str(minilm_f16)], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert Path(report["lib"]).is_relative_to(venv), report["lib"]
    manifest = report["manifest"]
    assert manifest["portable"] is False and manifest["llama_cpp_commit"] == pins.LLAMA_CPP_COMMIT
    assert manifest["source"]["location"].endswith("llama.cpp"), manifest["source"]  # the sdist's own source
    with EmbeddingModel(ModelConfig(model_path=minilm_f16)) as model:
        ours = model.embed("A man is playing a guitar.")
    assert float(np.dot(ours, np.asarray(report["v"], dtype=np.float32))) >= 0.999999
