# SPDX-License-Identifier: Apache-2.0
"""llamabuild.source: the pinned sdist checked and unpacked, the cache, pip download, CHANGELOG commits."""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from llamabuild import paths, pins, process, report
from llamabuild import source as sources


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
    with pytest.raises(report.BuildError, match="sha256 mismatch"):
        sources.extract_sdist(sdist, dest)  # the pinned hash
    with pytest.raises(report.BuildError, match="sha256 mismatch"):
        sources.extract_sdist(sdist, dest, expected_sha256="0" * 64)
    assert not dest.exists()


def test_sdist_extracts_only_the_vendored_tree(tmp_path: Path) -> None:
    sdist = tmp_path / "pkg-1.tar.gz"
    digest = make_sdist(sdist, SDIST_FILES)
    dest = tmp_path / "out"
    assert sources.extract_sdist(sdist, dest, expected_sha256=digest) == digest
    found = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert found == ["CMakeLists.txt", "include/llama.h"]  # no setup.py, no .git gitlink


def test_sdist_path_traversal_is_refused(tmp_path: Path) -> None:
    sdist = tmp_path / "evil.tar.gz"
    digest = make_sdist(sdist, {"pkg-1/vendor/llama.cpp/../../../../escaped": b"x"})
    with pytest.raises(report.BuildError, match="cannot extract"):
        sources.extract_sdist(sdist, tmp_path / "a" / "b" / "out", expected_sha256=digest)
    assert not any(p.name == "escaped" for p in tmp_path.rglob("*"))


def test_fetch_source_from_a_local_sdist_caches_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sdist = tmp_path / "pkg-1.tar.gz"
    monkeypatch.setattr(pins, "SDIST_SHA256", make_sdist(sdist, SDIST_FILES))
    cache = tmp_path / "cache"
    source = sources.fetch_source("pypi", cache, tmp_path / "log", sdist=sdist)
    assert source.directory == paths.cached_source_dir(cache)
    assert (source.directory / "CMakeLists.txt").is_file()
    assert source.kind == "pypi" and source.commit == pins.LLAMA_CPP_COMMIT
    again = sources.load_cached_source(source.directory)
    assert again is not None and again.sdist_sha256 == pins.SDIST_SHA256
    assert [p.name for p in (cache / "src").iterdir()] == [source.directory.name]


def test_pip_download_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def fake_step(name: str, cmd: list[str], log: Path, **kw: Any) -> str:
        seen.append(cmd)
        (Path(cmd[cmd.index("-d") + 1]) / "llama_cpp_python-0.3.36.tar.gz").write_bytes(b"")
        return ""

    monkeypatch.setattr(process, "run_step", fake_step)
    got = sources.pip_download_sdist(tmp_path, tmp_path / "log")
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
    monkeypatch.setattr(sys, "executable", str(fake))
    (tmp_path / "d").mkdir()
    with pytest.raises(report.BuildError, match="--sdist FILE"):
        sources.pip_download_sdist(tmp_path / "d", tmp_path / "log")


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
    assert sources.changelog_commit(CHANGELOG, "0.3.30") == "e3a74b299"
    assert (
        sources.changelog_commit(CHANGELOG, "0.3.31") == "e3a74b299"
    )  # a release without an update keeps the last one
    assert sources.changelog_commit(CHANGELOG, "0.3.29") == "f05cf4676"
    assert sources.changelog_commit(CHANGELOG, "0.1.0") is None
