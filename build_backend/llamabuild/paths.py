# SPDX-License-Identifier: Apache-2.0
"""Where the build finds and puts things: the embellama tree it serves, the cache, build and install folders.

llamabuild lives in one of two places, and each says where embellama is:

* a **source tree** (a checkout or an unpacked sdist; an editable install imports it from there):
  ``<root>/build_backend/llamabuild/`` beside ``<root>/embellama/`` and the pinned declarations
  ``<root>/include/llama.cdef.h``;
* an **installation** (the wheel): ``<site>/llamabuild/`` beside ``<site>/embellama/``, whose
  ``_native/llama.cdef.h`` is the same declarations.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

from llamabuild import pins

HERE = Path(__file__).resolve().parent
#: True in a checkout or an unpacked sdist, False in an installation.
SOURCE_TREE = HERE.parent.name == "build_backend"
#: The folder that holds ``embellama/``: the checkout, or site-packages.
ROOT = HERE.parent.parent if SOURCE_TREE else HERE.parent
PACKAGE_DIR = ROOT / "embellama"
#: The pinned declarations (the default of ``--cdef``).
CDEF_PATH = ROOT / "include" / "llama.cdef.h" if SOURCE_TREE else PACKAGE_DIR / "_native" / "llama.cdef.h"

MANIFEST_NAME = "manifest.json"
CDEF_NAME = "llama.cdef.h"  # a non-pinned build's generated declarations, beside its manifest
SOURCE_META = ".embellama-source.json"  # a fetched source's record, inside it
STAMP_NAME = "embellama-configure.json"  # the configure step's record, in the build folder
STAGING_NAME = ".embellama-staging"  # inside the prefix, during an install
RPATH_INCLUDE_NAME = "embellama-tools-rpath.cmake"  # in the build folder, for --with-tools


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$EMBELLAMA_CACHE_DIR``, else ``$XDG_CACHE_HOME/embellama``, else ``~/.cache/embellama``."""
    env = os.environ if environ is None else environ
    explicit = env.get("EMBELLAMA_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = env.get("XDG_CACHE_HOME")
    if xdg and Path(xdg).is_absolute():  # the XDG spec says to ignore relative paths
        return Path(xdg) / "embellama"
    return Path.home() / ".cache" / "embellama"


def cached_source_dir(cache_dir: Path, commit: str = pins.LLAMA_CPP_COMMIT) -> Path:
    """Where the pinned llama.cpp source is kept once fetched."""
    return cache_dir / "src" / f"llama.cpp-{commit}"


def sdist_source_dir(cache_dir: Path, version: str) -> Path:
    """Where ``--llama-cpp-python VERSION`` keeps that sdist's llama.cpp."""
    return cache_dir / "src" / f"{pins.PROJECT}-{version}"


def default_prefix(backend: str, key: str | None = None, cache_dir: Path | None = None) -> Path:
    """``embellama/_lib/<backend>`` for the pinned llama.cpp; ``<cache>/lib/<key>-<backend>`` for another.

    A build of another llama.cpp never lands where the pinned build (and the test suite) looks.
    """
    if key is None:
        return PACKAGE_DIR / "_lib" / backend
    return (cache_dir or default_cache_dir()) / "lib" / f"{key}-{backend}"


def build_dir_name(
    backend: str,
    portable: bool = False,
    with_tools: bool = False,
    commit: str = pins.LLAMA_CPP_COMMIT,
    source_path: Path | None = None,
    with_server: bool = False,
) -> str:
    """``<commit12>-<backend>[-portable][-tools|-server]``; in-place sources get ``path-<hash>``.

    A server build (which has the tools too) gets a folder of its own, so that switching
    between it and a tools build never reconfigures either.
    """
    head = path_key(source_path) if source_path is not None else commit[:12]
    name = f"{head}-{backend}"
    if portable:
        name += "-portable"
    if with_server:
        name += "-server"
    elif with_tools:
        name += "-tools"
    return name


def path_key(source_path: Path) -> str:
    """``path-<hash>``: what the folders of a source used in place are named by."""
    return "path-" + hashlib.sha256(str(source_path).encode()).hexdigest()[:8]


def display_path(path: Path) -> str:
    """``path`` relative to :data:`ROOT` when it is inside it (``include/llama.cdef.h``)."""
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)
