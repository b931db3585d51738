# SPDX-License-Identifier: Apache-2.0
"""Model references by name: ``hf://org/repo[@revision]/file-or-glob``, parsed and checked; the file a name or
glob chooses among a repository's files; :class:`HubFile`, where a model loaded by name came from."""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass
from pathlib import Path

from embellama._exceptions import ConfigurationError

__all__ = ["HubFile", "HubReference", "choose", "is_glob", "is_reference", "parse_reference", "pick_one"]

SCHEME = "hf://"
_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_GLOB = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class HubReference:
    """A file (or a glob of files) of a Hugging Face Hub model repository.

    Attributes
    ----------
    repo_id : str
        ``org/repo``.
    revision : str or None
        A branch, tag or commit; None is ``main``.
    filename : str or None
        A file path in the repository, or a glob (``*Q8_0.gguf``); None takes the repository's one GGUF.
    """

    repo_id: str
    revision: str | None = None
    filename: str | None = None

    def __str__(self) -> str:
        rev = f"@{self.revision}" if self.revision else ""
        file = f"/{self.filename}" if self.filename else ""
        return f"{SCHEME}{self.repo_id}{rev}{file}"


def is_glob(pattern: str) -> bool:
    """Whether a file name has glob characters (``*``, ``?``, ``[``)."""
    return bool(_GLOB.search(pattern))


def _text(value: str | os.PathLike[str]) -> str:
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def is_reference(value: object) -> bool:
    """Whether ``value`` (a str or path) is an ``hf://`` reference.

    A ``pathlib.Path`` made of one reads ``hf:/org/repo/...`` (the path collapses the double slash): that counts too.
    """
    if not isinstance(value, (str, os.PathLike)):
        return False
    text = _text(value)
    return isinstance(text, str) and (text.startswith(SCHEME) or text.startswith("hf:/"))


def check_repo_id(repo_id: object) -> str:
    """``repo_id`` if it is ``org/repo`` of allowed characters; else ConfigurationError."""
    if not isinstance(repo_id, str):
        raise ConfigurationError(f"a Hub repository id must be a str 'org/repo', got {type(repo_id).__name__}")
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(_PART.match(p) and ".." not in p for p in parts):
        raise ConfigurationError(f"not a Hub repository id (expected 'org/repo'): {repo_id!r}")
    return repo_id


def check_filename(filename: object, repo_id: str) -> str:
    """A file path (or glob) inside a repository: relative, no ``..`` part."""
    if not isinstance(filename, str) or not filename.strip("/"):
        raise ConfigurationError(f"repository {repo_id!r}: the file name must be a non-empty str, got {filename!r}")
    parts = filename.split("/")
    if filename.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in filename:
        raise ConfigurationError(f"repository {repo_id!r}: not a file path inside the repository: {filename!r}")
    return filename


def check_revision(revision: object, repo_id: str) -> str | None:
    """A revision name (branch, tag or commit), or None."""
    if revision is None:
        return None
    if not isinstance(revision, str) or not revision or ".." in revision or revision.startswith("/"):
        raise ConfigurationError(f"repository {repo_id!r}: not a revision: {revision!r}")
    return revision


def parse_reference(value: str | os.PathLike[str]) -> HubReference:
    """Parse ``hf://org/repo[@revision][/file-or-glob]``.

    Raises
    ------
    ConfigurationError
        Not an ``hf://`` reference, or a malformed one (the message shows the expected form).
    """
    text = _text(value)
    if not is_reference(text):
        raise ConfigurationError(f"not an hf:// reference: {text!r}")
    rest = text[len(SCHEME) :] if text.startswith(SCHEME) else text[len("hf:/") :]
    parts = rest.split("/")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ConfigurationError(f"{text!r}: expected hf://org/repo[@revision]/file-or-glob")
    name, _, revision = parts[1].partition("@")
    repo_id = check_repo_id(f"{parts[0]}/{name}")
    if "@" in parts[1] and not revision:
        raise ConfigurationError(f"{text!r}: empty revision after '@'")
    filename = "/".join(parts[2:]) or None
    if filename is not None:
        check_filename(filename, repo_id)
    return HubReference(repo_id, check_revision(revision or None, repo_id), filename)


@dataclass(frozen=True)
class HubFile:
    """Where a model loaded by name came from: its Hub repository and file (``model.source``).

    Attributes
    ----------
    repo_id : str
        ``org/repo``.
    filename : str
        The file's path in the repository (a glob resolved to the one file it matched).
    revision : str or None
        The revision asked for (None: ``main``).
    commit : str
        The commit the file is from.
    path : pathlib.Path
        The file in the Hugging Face cache.
    """

    repo_id: str
    filename: str
    revision: str | None
    commit: str
    path: Path

    @property
    def reference(self) -> str:
        """The ``hf://`` reference of this file at its commit."""
        return str(HubReference(self.repo_id, self.commit, self.filename))


def choose(files: list[str], pattern: str | None, repo_id: str, suffix: str = ".gguf") -> list[str]:
    """The files of ``files`` that ``pattern`` names: itself, the glob's matches, or with no pattern every
    ``*.gguf``. An exact name also matches a file of that name in a subfolder only when it has no ``/``."""
    if pattern is None:
        return [f for f in files if f.lower().endswith(suffix)]
    if not is_glob(pattern):
        return [f for f in files if f == pattern]
    return [f for f in files if fnmatch.fnmatchcase(f, pattern)]


def pick_one(matches: list[str], pattern: str | None, repo_id: str, revision: str | None, where: str) -> str | None:
    """The one match; None for none; ConfigurationError listing them for several."""
    if len(matches) > 1:
        what = f"{pattern!r} matches" if pattern else "it has"
        raise ConfigurationError(
            f"Hub repository {repo_id!r}: {what} {len(matches)} GGUF files {where}: {', '.join(matches)}; "
            "name one (filename=, or hf://org/repo/FILE)"
        )
    return matches[0] if matches else None
