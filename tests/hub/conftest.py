# SPDX-License-Identifier: Apache-2.0
"""The Hub tests' fixtures: an empty Hugging Face cache of their own, no offline switch inherited, a network
that can be cut, and the MiniLM GGUF placed in the cache layout."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ID = "acme/minilm-gguf"
FILENAME = "all-MiniLM-L6-v2.F16.gguf"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def place(cache: Path, repo_id: str, files: dict[str, Path], commit: str = COMMIT, ref: str | None = "main") -> Path:
    """Put ``files`` (name in the repository -> file) into ``cache`` as huggingface_hub lays them out: blobs
    (here symlinks to the files), snapshot links to them, and ``refs/<ref>``. Returns the snapshot folder."""
    folder = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = folder / "snapshots" / commit
    for i, (name, source) in enumerate(sorted(files.items())):
        blob = folder / "blobs" / f"{i:064x}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            blob.symlink_to(source.resolve())
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    if ref is not None:
        (folder / "refs").mkdir(parents=True, exist_ok=True)
        (folder / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache in ``$HF_HUB_CACHE``; HF_HUB_OFFLINE and HF_ENDPOINT unset."""
    cache = tmp_path / "hf-hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT", "HF_HOME"):
        monkeypatch.delenv(name, raising=False)
    return cache


@pytest.fixture
def cached_minilm(hf_cache: Path, minilm_f16: Path) -> Path:
    """The MiniLM F16 GGUF as ``acme/minilm-gguf``'s one GGUF at ``main``, beside a README."""
    readme = hf_cache.parent / "README.md"
    readme.write_text("a model card\n")
    return place(hf_cache, REPO_ID, {FILENAME: minilm_f16, "README.md": readme}) / FILENAME


class NetworkUsed(AssertionError):
    """A socket tried to connect while the network was cut."""


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Every socket connect raises (and is recorded); ``import huggingface_hub`` fails."""
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise NetworkUsed(f"the network is cut: connect to {address!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    yield attempts
