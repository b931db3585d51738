# SPDX-License-Identifier: Apache-2.0
"""The install step: the built libraries (and tools) into the prefix, staged first and renamed into
place, unchanged files skipped, stale ones removed, symlinks kept.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from llamabuild.files import sha256_file
from llamabuild.paths import MANIFEST_NAME, STAGING_NAME
from llamabuild.report import BuildError

_LIB_NAME_RE = re.compile(r"^(?:lib)?([A-Za-z0-9_+-]+?)(?:\.\d+)*\.(?:so|dylib|dll)(?:\.\d+)*$")


def is_library_name(name: str) -> bool:
    """Whether ``name`` is a shared library's (``libllama.so.0``, ``ggml.dll``, ``libggml.dylib``)."""
    return bool(_LIB_NAME_RE.match(name))


def library_map(names: Iterable[str]) -> dict[str, str]:
    """``{"llama": "libllama.so", ...}``: the shortest installed name per library."""
    best: dict[str, str] = {}
    for name in sorted(names):
        match = _LIB_NAME_RE.match(name)
        if not match:
            continue
        stem = match.group(1)
        if stem not in best or len(name) < len(best[stem]):
            best[stem] = name
    return dict(sorted(best.items()))


_CPU_VARIANT_RE = re.compile(r"^(?:lib)?ggml-cpu-([A-Za-z0-9_.]+?)\.(?:so|dylib|dll)$")


def cpu_variant_names(names: Iterable[str]) -> list[str]:
    """The CPU variants among installed file names (``libggml-cpu-haswell.so`` -> ``haswell``), sorted."""
    found = {m.group(1) for name in names if (m := _CPU_VARIANT_RE.match(name))}
    return sorted(found)


@dataclasses.dataclass
class InstallResult:
    """What an install put into the prefix: files with their sha256, links with their target, and tallies."""

    files: dict[str, str]  # relative path -> sha256 (regular files)
    links: dict[str, str]  # relative path -> link target
    copied: int = 0
    unchanged: int = 0
    removed: int = 0


@dataclasses.dataclass
class _Outputs:
    """What an install puts into the prefix, by path relative to it."""

    files: dict[str, Path]  # -> the built file to copy
    links: dict[str, str]  # -> the symlink's target, a name in the same folder


def install_outputs(
    build_bin: Path,
    prefix: Path,
    tools: Sequence[str] = (),
    previous: Mapping[str, Any] | None = None,
) -> InstallResult:
    """Copy the shared libraries in ``build_bin`` into ``prefix`` and ``tools`` into
    ``prefix/bin``, keeping symlinks (libllama.so -> libllama.so.0 -> ...) as symlinks,
    skipping files whose sha256 is unchanged and removing stale ones.

    ``previous`` is the old manifest: files it lists that are not installed now are
    removed, as is any other library file at the top of ``prefix``.

    The new and changed files are first copied into a staging folder inside
    ``prefix`` (the slow part; a failure there leaves ``prefix`` as it was), then
    renamed into place.  The old manifest is removed just before the first rename,
    and only when something changes: it never describes files other than those beside
    it.  The caller writes the new one.
    """
    outputs = _collect_outputs(build_bin, tools)
    result = InstallResult(files={}, links={})
    staging = prefix / STAGING_NAME
    committing = False
    try:
        prefix.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)  # left by an interrupted install
        staging.mkdir()
        staged = _stage_outputs(outputs, prefix, staging, result)
        stale = _stale_names(prefix, previous, {*result.files, *result.links, MANIFEST_NAME})
        committing = True
        _commit_install(prefix, staging, staged, stale)
    except OSError as exc:
        if committing:
            why = f"install into {prefix} failed halfway: {exc}"
            raise BuildError(f"{why}; it has no {MANIFEST_NAME} now: run the build again") from exc
        raise BuildError(f"install into {prefix} failed, which is left as it was: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result.copied, result.removed = len(staged), len(stale)
    return result


def _collect_outputs(build_bin: Path, tools: Sequence[str]) -> _Outputs:
    if not build_bin.is_dir():
        raise BuildError(f"{build_bin} does not exist: the build produced nothing")
    entries = sorted(p for p in build_bin.iterdir() if is_library_name(p.name))
    if not any(p.is_file() and not p.is_symlink() for p in entries):
        raise BuildError(f"no shared libraries found in {build_bin}")
    outputs = _Outputs(files={}, links={})
    for entry in entries:
        if entry.is_symlink():
            target = os.readlink(entry)
            if os.sep in target or "/" in target or not (build_bin / target).exists():
                outputs.files[entry.name] = entry.resolve()  # unusual link: copy what it points to
            else:
                outputs.links[entry.name] = target
        elif entry.is_file():
            outputs.files[entry.name] = entry
    exe_suffix = ".exe" if os.name == "nt" else ""
    for tool in tools:
        built = build_bin / (tool + exe_suffix)
        if not built.is_file():
            raise BuildError(f"the build did not produce {built}")
        outputs.files[f"bin/{built.name}"] = built
    return outputs


def _stage_outputs(outputs: _Outputs, prefix: Path, staging: Path, result: InstallResult) -> list[str]:
    """Copy into ``staging`` what differs from ``prefix``; record every output in ``result``.

    Returns the staged paths (relative to both folders).
    """
    staged: list[str] = []
    for rel, src in outputs.files.items():
        digest = sha256_file(src)
        result.files[rel] = digest
        dest = prefix / rel
        if dest.is_file() and not dest.is_symlink() and sha256_file(dest) == digest:
            result.unchanged += 1
            continue
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, staging / rel)
        staged.append(rel)
    for rel, target in outputs.links.items():
        result.links[rel] = target
        dest = prefix / rel
        if dest.is_symlink() and os.readlink(dest) == target:
            result.unchanged += 1
            continue
        os.symlink(target, staging / rel)
        staged.append(rel)
    return staged


def _stale_names(prefix: Path, previous: Mapping[str, Any] | None, keep: set[str]) -> list[str]:
    """Files in ``prefix`` to remove: listed in the old manifest, or libraries, and not kept."""
    names: set[str] = set()
    for key in ("files", "links"):
        old = (previous or {}).get(key)
        if isinstance(old, dict):
            names.update(str(name) for name in old)
    names.update(p.name for p in prefix.iterdir() if is_library_name(p.name))
    root = prefix.resolve()
    stale: list[str] = []
    for rel in sorted(names - keep):
        path = prefix / rel
        if path.parent.resolve() not in (root, root / "bin"):
            continue  # never touch anything outside the prefix
        if path.is_symlink() or path.is_file():
            stale.append(rel)
    return stale


def _commit_install(prefix: Path, staging: Path, staged: Sequence[str], stale: Sequence[str]) -> None:
    """Rename the staged files into ``prefix`` and remove the stale ones, manifest first."""
    if staged or stale:
        (prefix / MANIFEST_NAME).unlink(missing_ok=True)
    for rel in staged:
        (prefix / rel).parent.mkdir(exist_ok=True)
        # A rename, never a rewrite of a library that a running process has mapped.
        os.replace(staging / rel, prefix / rel)
    for rel in stale:
        (prefix / rel).unlink()
    bin_dir = prefix / "bin"
    if bin_dir.is_dir() and not any(bin_dir.iterdir()):
        bin_dir.rmdir()


# --------------------------------------------------------------------------- manifest
