# SPDX-License-Identifier: Apache-2.0
"""Where embellama keeps things: its cache folder, the folders of built libraries, and the
environment variables that point elsewhere.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from embellama._native.compat import PIN_COMMIT

__all__ = [
    "BACKENDS",
    "BUILD_HINT",
    "ENV_BACKEND",
    "ENV_CACHE",
    "ENV_HEADER",
    "ENV_LIB",
    "LIB_ROOT",
    "PACKAGE_DIR",
    "cache_dir",
    "user_build_dir",
]

logger = logging.getLogger("embellama")

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # embellama/
LIB_ROOT = PACKAGE_DIR / "_lib"
"""The package's own built libraries, one folder per backend (``_lib/<backend>/``)."""
BACKENDS = ("cuda", "metal", "vulkan", "cpu")
"""The backends in the order they are looked for."""
ENV_LIB = "EMBELLAMA_LIB"
ENV_BACKEND = "EMBELLAMA_BACKEND"
ENV_HEADER = "EMBELLAMA_LLAMA_H"
ENV_CACHE = "EMBELLAMA_CACHE_DIR"
BUILD_HINT = "embellama build  (in a checkout: python build_llama.py; --help lists the backends)"


def cache_dir() -> Path:
    """Where embellama caches what it makes (parsed declarations, converted weights, builds).

    ``$EMBELLAMA_CACHE_DIR``, else ``$XDG_CACHE_HOME/embellama``, else ``~/.cache/embellama``. Where
    that folder cannot be made or written (a read-only or missing HOME, a read-only image), the
    per-user ``<tmp>/embellama-<uid>`` instead; where neither can be written, each cache is skipped
    and its work done again on every start (see the README's "Constrained machines").

    Returns
    -------
    pathlib.Path
        The folder (it may not exist yet when nothing could be written).
    """
    preferred = _preferred_cache_dir()
    if preferred is not None and _writable(preferred):
        return preferred
    fallback = Path(tempfile.gettempdir()) / f"embellama-{_user_id()}"
    if _writable(fallback, private=True):
        if preferred is not None:
            logger.debug("cache %s is not writable: using %s", preferred, fallback)
        return fallback
    return preferred if preferred is not None else fallback


def user_build_dir(backend: str) -> Path:
    """Where ``embellama build --backend BACKEND`` installs: ``<cache>/lib/embellama-<pin>-<backend>``.

    Named by the pinned llama.cpp commit, so an embellama with another pin never picks up a build
    of the old one. Looked at before the package's own ``_lib/<backend>`` (see
    :func:`~embellama.load_library`).
    """
    return cache_dir() / "lib" / f"embellama-{PIN_COMMIT}-{backend}"


def _preferred_cache_dir() -> Path | None:
    explicit = os.environ.get(ENV_CACHE)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and Path(xdg).is_absolute():  # the XDG spec says to ignore relative paths
        return Path(xdg) / "embellama"
    try:
        return Path.home() / ".cache" / "embellama"
    except RuntimeError:  # no HOME and no password entry
        return None


def _user_id() -> str:
    getuid = getattr(os, "getuid", None)
    return str(getuid()) if getuid is not None else (os.environ.get("USERNAME") or "user")


def _writable(folder: Path, private: bool = False) -> bool:
    """Whether ``folder`` exists (made now if needed) as a folder this process can write.

    ``private``: a shared parent (the temp folder): it must be this user's own and not a link.
    """
    try:
        folder.mkdir(mode=0o700 if private else 0o777, parents=not private, exist_ok=True)
        if private and (folder.is_symlink() or (hasattr(os, "getuid") and folder.stat().st_uid != os.getuid())):
            return False
        return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)
    except OSError:
        return False
