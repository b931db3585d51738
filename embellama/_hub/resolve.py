# SPDX-License-Identifier: Apache-2.0
"""A Hub file by name to a local path, offline first: the cache when it has the file (no network call, no
huggingface_hub), else a download (:mod:`embellama._hub.download`) unless ``HF_HUB_OFFLINE`` forbids it."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from embellama._exceptions import HubNotFoundError
from embellama._hub import cache as _cache
from embellama._hub.reference import (
    HubFile,
    check_filename,
    check_repo_id,
    check_revision,
    choose,
    is_reference,
    parse_reference,
    pick_one,
)

__all__ = ["resolve", "resolve_path", "snapshot_folder"]

logger = logging.getLogger("embellama")


def resolve(
    repo_id: str,
    filename: str | None = None,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> HubFile:
    """The local file of ``repo_id``'s ``filename`` (a name, a glob, or None for its one GGUF).

    The cache first: when it holds the revision and exactly one file matches, that is the answer and nothing
    touches the network (huggingface_hub is not even imported). Otherwise, unless ``HF_HUB_OFFLINE=1``, the
    repository is listed on the Hub and the file downloaded into the cache, its sha256 checked.

    Raises
    ------
    ConfigurationError
        A malformed repository id, file name or revision; or several files match (they are listed).
    HubNotFoundError
        No such repository, revision or file; or not cached while offline.
    HubAccessError
        A gated or private repository (401, 403).
    HubDownloadError
        The download failed or its sha256 differs from the Hub's.
    MissingExtraError
        A download is needed and huggingface_hub (the extra ``embellama[hub]``) is not installed.
    """
    check_repo_id(repo_id)
    if filename is not None:
        check_filename(filename, repo_id)
    check_revision(revision, repo_id)
    cache = _cache.hub_cache_dir(cache_dir)
    commit = _cache.cached_commit(cache, repo_id, revision)
    if commit is not None:
        files = _cache.snapshot_files(cache, repo_id, commit)
        found = pick_one(choose(files, filename, repo_id), filename, repo_id, revision, f"in the cache ({cache})")
        if found is not None:
            path = _cache.repo_folder(cache, repo_id) / "snapshots" / commit / found
            logger.debug("hf://%s/%s: cached at %s", repo_id, found, path)
            return HubFile(repo_id, found, revision, commit, path)
    if _cache.is_offline():
        raise HubNotFoundError(
            repo_id,
            f"not in the Hugging Face cache ({cache}), and HF_HUB_OFFLINE forbids downloading it",
            filename,
            revision,
        )
    from embellama._hub import download  # huggingface_hub, only now

    return download.download(repo_id, filename, revision=revision, cache=cache)


def resolve_path(path: str | os.PathLike[str]) -> tuple[Path, HubFile | None]:
    """A model path as it is (with None), or an ``hf://`` reference resolved (see :func:`resolve`)."""
    if not is_reference(path):
        return Path(path), None
    ref = parse_reference(path)
    found = resolve(ref.repo_id, ref.filename, revision=ref.revision)
    return found.path, found


def snapshot_folder(
    repo_id: str, *, revision: str | None = None, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """A repository in the Hugging Face format as a folder (for llama.cpp's converter), offline first: the cached
    snapshot of ``revision`` when it has a ``config.json``; else, unless ``HF_HUB_OFFLINE=1``, its configs,
    tokenizer and safetensors files downloaded into the cache.

    Raises
    ------
    HubNotFoundError
        Not cached (or without its config.json) while offline; or not on the Hub.
    ConfigurationError, HubAccessError, HubDownloadError, MissingExtraError
        As :func:`resolve`.
    """
    check_repo_id(repo_id)
    check_revision(revision, repo_id)
    cache = _cache.hub_cache_dir(cache_dir)
    commit = _cache.cached_commit(cache, repo_id, revision)
    if commit is not None:
        folder = _cache.repo_folder(cache, repo_id) / "snapshots" / commit
        if (folder / "config.json").is_file():
            return folder
    if _cache.is_offline():
        raise HubNotFoundError(
            repo_id,
            f"no cached snapshot with a config.json in {cache}, and HF_HUB_OFFLINE forbids downloading it",
            None,
            revision,
        )
    from embellama._hub import download  # huggingface_hub, only now

    return download.snapshot(repo_id, revision=revision, cache=cache)
