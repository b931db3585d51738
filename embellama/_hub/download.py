# SPDX-License-Identifier: Apache-2.0
"""Downloads from the Hub through huggingface_hub (the extra ``embellama[hub]``): the repository's file list,
the file into the standard cache with progress and resume, and its sha256 checked against the Hub's."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from embellama._exceptions import HubAccessError, HubDownloadError, HubNotFoundError, MissingExtraError
from embellama._hub import cache as _cache
from embellama._hub.reference import HubFile, choose, pick_one

__all__ = ["SNAPSHOT_PATTERNS", "download", "file_digest", "require_hub", "snapshot"]

logger = logging.getLogger("embellama")

EXTRA = "hub"

SNAPSHOT_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken"]
"""The files of a repository the converter reads: configs (sentence-transformers' modules too), weights,
tokenizers."""


def require_hub(needed_for: str) -> Any:
    """The huggingface_hub module, or MissingExtraError naming the extra."""
    try:
        import huggingface_hub
    except ImportError:
        raise MissingExtraError(EXTRA, ["huggingface_hub"], needed_for) from None
    return huggingface_hub


def _endpoint() -> str | None:
    """``$HF_ENDPOINT`` now (huggingface_hub reads it once, at its import)."""
    return os.environ.get("HF_ENDPOINT") or None


def file_digest(path: Path, algorithm: str = "sha256", *, git_blob: bool = False) -> str:
    """The hex digest of a file, read in 8 MiB blocks (``git_blob``: git's object id, sha1 of a header and it)."""
    digest = hashlib.new(algorithm)
    if git_blob:
        digest.update(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def _translate(exc: Exception, hub: Any, repo_id: str, filename: str | None, revision: str | None) -> Exception:
    """huggingface_hub's error as embellama's."""
    from huggingface_hub import errors

    status = getattr(getattr(exc, "response", None), "status_code", None)
    refused = status in (401, 403) and not isinstance(exc, errors.RepositoryNotFoundError)
    if isinstance(exc, errors.GatedRepoError) or refused:
        return HubAccessError(
            repo_id,
            f"access refused ({status}): the repository is gated or private; accept its terms on the Hub and "
            "set HF_TOKEN to a token with access",
            filename,
            revision,
        )
    if isinstance(exc, errors.RevisionNotFoundError):
        return HubNotFoundError(repo_id, f"no such revision on the Hub ({status})", filename, revision)
    if isinstance(exc, errors.RemoteEntryNotFoundError):
        return HubNotFoundError(repo_id, f"no such file on the Hub ({status})", filename, revision)
    if isinstance(exc, errors.RepositoryNotFoundError):
        return HubNotFoundError(
            repo_id, f"no such repository on the Hub ({status}), or it is private (set HF_TOKEN)", filename, revision
        )
    return HubDownloadError(repo_id, f"{type(exc).__name__}: {exc}", filename, revision)


def _remove(pointer: Path) -> None:
    """Drop a downloaded file from the cache: the blob and the snapshot's link to it."""
    blob = pointer.resolve()
    pointer.unlink(missing_ok=True)
    if blob != pointer:
        blob.unlink(missing_ok=True)


def download(repo_id: str, filename: str | None, *, revision: str | None, cache: Path) -> HubFile:
    """List the repository at ``revision`` on the Hub, choose the file, download it into ``cache`` and check it.

    huggingface_hub shows the progress (``HF_HUB_DISABLE_PROGRESS_BARS=1`` hides it) and resumes a transfer
    cut midway with a Range request. The file's sha256 is compared with the one the Hub lists for it (git's
    object id for a file outside LFS); a mismatch removes the file from the cache and raises.

    Raises
    ------
    MissingExtraError
        huggingface_hub is not installed.
    HubNotFoundError, HubAccessError, HubDownloadError, ConfigurationError
        As :func:`embellama._hub.resolve.resolve` says.
    """
    hub = require_hub(f"downloading hf://{repo_id}")
    endpoint = _endpoint()
    try:
        info = hub.HfApi(endpoint=endpoint).model_info(repo_id, revision=revision, files_metadata=True)
    except Exception as exc:
        raise _translate(exc, hub, repo_id, filename, revision) from exc
    siblings = {s.rfilename: s for s in info.siblings or []}
    chosen = pick_one(choose(sorted(siblings), filename, repo_id), filename, repo_id, revision, "on the Hub")
    if chosen is None:
        ggufs = [f for f in sorted(siblings) if f.lower().endswith(".gguf")]
        listed = f"; its GGUF files: {', '.join(ggufs)}" if ggufs else "; it has no GGUF file"
        what = f"no file matches {filename!r}" if filename else "no GGUF file"
        raise HubNotFoundError(repo_id, what + (listed if filename else ""), filename, revision)
    sibling = siblings[chosen]
    commit = str(info.sha)
    logger.info("downloading hf://%s/%s (%s bytes) into %s", repo_id, chosen, sibling.size, cache)
    try:
        local = hub.hf_hub_download(
            repo_id,
            chosen,
            revision=commit,  # the commit listed: the file and the sha256 below belong together
            cache_dir=str(cache),
            endpoint=endpoint,
        )
    except Exception as exc:
        raise _translate(exc, hub, repo_id, chosen, revision) from exc
    pointer = Path(local)
    folder = _cache.repo_folder(cache, repo_id)
    if revision != commit:  # a branch or tag: record its commit, as huggingface_hub does for the name it was given
        ref = folder / "refs" / (revision or "main")
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(commit, encoding="utf-8")
    if sibling.lfs is not None:
        expected, got = str(sibling.lfs.sha256), file_digest(pointer)
        what = "sha256"
    elif sibling.blob_id:
        expected, got = str(sibling.blob_id), file_digest(pointer, "sha1", git_blob=True)
        what = "git object id"
    else:
        expected = got = ""
        what = ""
    if expected != got:
        _remove(pointer)
        raise HubDownloadError(
            repo_id,
            f"the downloaded file's {what} is {got}, the Hub lists {expected}: corrupted in transfer or storage; "
            "it was removed from the cache (try again)",
            chosen,
            revision,
        )
    return HubFile(repo_id, chosen, revision, commit, pointer)


def snapshot(repo_id: str, *, revision: str | None, cache: Path) -> Path:
    """Download what llama.cpp's converter reads of a repository (:data:`SNAPSHOT_PATTERNS`) into ``cache``;
    the snapshot folder. huggingface_hub checks each file's size; this is for converting, not for loading.

    Raises
    ------
    MissingExtraError
        huggingface_hub is not installed.
    HubNotFoundError, HubAccessError, HubDownloadError
        As :func:`download`.
    """
    hub = require_hub(f"downloading hf://{repo_id} to convert it")
    try:
        folder = hub.snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=str(cache),
            endpoint=_endpoint(),
            allow_patterns=SNAPSHOT_PATTERNS,
        )
    except Exception as exc:
        raise _translate(exc, hub, repo_id, None, revision) from exc
    return Path(folder)
