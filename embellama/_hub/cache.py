# SPDX-License-Identifier: Apache-2.0
"""The standard Hugging Face cache, read without huggingface_hub: where it is, a repository's commits and files.

The layout (written by huggingface_hub, ``huggingface-cli``, llama.cpp's ``-hf`` and sentence-transformers)::

    <cache>/models--org--repo/refs/<revision>          the commit a branch or tag pointed at when last fetched
    <cache>/models--org--repo/snapshots/<commit>/<file> a symlink (or a copy) of the file at that commit
    <cache>/models--org--repo/blobs/<etag>              the file's content, named by the Hub's ETag (its sha256)

``<cache>`` is ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CachedFile",
    "cached_commit",
    "hub_cache_dir",
    "is_offline",
    "repo_folder",
    "scan_cache",
    "snapshot_files",
]

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_TRUE = {"1", "ON", "YES", "TRUE"}


@dataclass(frozen=True)
class CachedFile:
    """A file of a Hub repository in the cache.

    Attributes
    ----------
    repo_id : str
        ``org/repo``.
    filename : str
        Its path in the repository.
    revisions : tuple of str
        The branches and tags of the cache that point at its commit (empty: the commit only).
    commit : str
        The commit's hash.
    path : pathlib.Path
        The file in the snapshot folder.
    size : int
        Bytes.
    """

    repo_id: str
    filename: str
    revisions: tuple[str, ...]
    commit: str
    path: Path
    size: int


def hub_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The Hugging Face cache: ``cache_dir``, else ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
    ``~/.cache/huggingface/hub`` (read now, not when huggingface_hub was imported)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path("~/.cache/huggingface/hub").expanduser()


def is_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) forbids the network, as huggingface_hub reads it."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in _TRUE


def repo_folder(cache: Path, repo_id: str) -> Path:
    """A model repository's folder in the cache (``models--org--repo``)."""
    return cache / ("models--" + repo_id.replace("/", "--"))


def cached_commit(cache: Path, repo_id: str, revision: str | None) -> str | None:
    """The commit of ``revision`` (None: ``main``) as the cache knows it, or None when it does not."""
    folder = repo_folder(cache, repo_id)
    rev = revision or "main"
    if _COMMIT.match(rev):
        return rev if (folder / "snapshots" / rev).is_dir() else None
    ref = folder / "refs" / rev
    try:
        commit = ref.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return commit if _COMMIT.match(commit) and (folder / "snapshots" / commit).is_dir() else None


def snapshot_files(cache: Path, repo_id: str, commit: str) -> list[str]:
    """The files of a cached commit (repository-relative, ``/``-separated, sorted): only those whose content
    is there (a dangling symlink, left by a removed blob, is not a file)."""
    root = repo_folder(cache, repo_id) / "snapshots" / commit
    found: list[str] = []
    for dirpath, _dirs, names in os.walk(root, followlinks=True):
        for name in names:
            path = Path(dirpath) / name
            if path.is_file():
                found.append(path.relative_to(root).as_posix())
    return sorted(found)


def _refs(folder: Path) -> dict[str, list[str]]:
    """Commit -> the branch and tag names that point at it."""
    by_commit: dict[str, list[str]] = {}
    refs = folder / "refs"
    if not refs.is_dir():
        return by_commit
    for ref in sorted(p for p in refs.rglob("*") if p.is_file()):
        try:
            commit = ref.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            continue
        by_commit.setdefault(commit, []).append(ref.relative_to(refs).as_posix())
    return by_commit


def scan_cache(cache: Path, suffix: str = ".gguf") -> list[CachedFile]:
    """Every cached file of every model repository whose name ends with ``suffix`` (case-insensitive)."""
    files: list[CachedFile] = []
    if not cache.is_dir():
        return files
    for folder in sorted(cache.glob("models--*--*")):
        repo_id = folder.name[len("models--") :].replace("--", "/", 1)
        refs = _refs(folder)
        snapshots = folder / "snapshots"
        for snap in sorted(p for p in snapshots.iterdir() if p.is_dir()) if snapshots.is_dir() else ():
            for name in snapshot_files(cache, repo_id, snap.name):
                if name.lower().endswith(suffix):
                    path = snap / name
                    revisions = tuple(refs.get(snap.name, ()))
                    files.append(CachedFile(repo_id, name, revisions, snap.name, path, path.stat().st_size))
    return files
