# SPDX-License-Identifier: Apache-2.0
"""Finding and opening a libllama: where to look, its build manifest, ``dlopen``, then the ABI checks.

A library that cannot be found or fails its checks raises :class:`~embellama.LibraryError`
naming every place looked at and how to build one.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from embellama._exceptions import LibraryError
from embellama._native.abi import check_defaults, check_enums, check_layout, check_symbols
from embellama._native.compat import decide
from embellama._native.declarations import declarations_for, make_ffi, needed_functions
from embellama._native.library import Library
from embellama._native.paths import BACKENDS, BUILD_HINT, ENV_BACKEND, ENV_LIB, LIB_ROOT, user_build_dir

__all__ = ["find_library_candidates", "open_library", "read_manifest", "resolve_library_file", "same_file"]

# The names a libllama file has in a folder, looked for in this order.
if sys.platform == "darwin":
    LIB_NAMES = ("libllama.dylib", "libllama.0.dylib")
elif sys.platform == "win32":
    LIB_NAMES = ("llama.dll", "libllama.dll")
else:
    LIB_NAMES = ("libllama.so", "libllama.so.0")

# Loaded before libllama, with RTLD_GLOBAL, so that a copied build whose RUNPATH
# points elsewhere still finds its own ggml libraries.
_GGML_PRELOAD = ("ggml-base", "ggml-cpu", "ggml")


def find_library_candidates(
    path: str | os.PathLike[str] | None = None, *, backend: str | None = None
) -> list[tuple[str, Path, bool]]:
    """Where :func:`~embellama.load_library` looks, in order: ``(source, path, explicit)`` tuples.

    An explicit candidate (the argument, ``$EMBELLAMA_LIB``) is the only one: when it is
    missing or fails its checks, nothing else is tried.
    """
    if path is not None:
        return [("argument", Path(path), True)]
    env = os.environ.get(ENV_LIB)
    if env:
        return [(f"${ENV_LIB}", Path(env), True)]
    backend = backend or os.environ.get(ENV_BACKEND) or None
    if backend is not None:
        if backend not in BACKENDS:
            raise LibraryError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
        names: Iterable[str] = (backend,)
    else:
        names = BACKENDS
    found: list[tuple[str, Path, bool]] = []
    for name in names:
        found.append((f"embellama build --backend {name}", user_build_dir(name), False))
        found.append((f"built {name} library", LIB_ROOT / name, False))
    return found


def resolve_library_file(path: Path) -> Path:
    """The libllama file ``path`` names: itself, or the libllama in that folder.

    Raises
    ------
    FileNotFoundError
        Nothing there, or a folder without a libllama.
    """
    if path.is_dir():
        for name in LIB_NAMES:
            if (path / name).exists():
                return (path / name).resolve()
        raise FileNotFoundError(f"no {' or '.join(LIB_NAMES)} in folder {path}")
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    return path.resolve()


def same_file(path: Path, loaded: Path) -> bool:
    """Whether ``path`` (a file or folder) names the libllama ``loaded``."""
    try:
        return resolve_library_file(path) == loaded
    except FileNotFoundError:
        return False


def open_library(
    path: str | os.PathLike[str] | None = None,
    *,
    backend: str | None = None,
    cdef: str | None = None,
    header: str | os.PathLike[str] | None = None,
) -> Library:
    """Find, ``dlopen`` and check a libllama without initialising it.

    ``path``, ``backend`` and ``header`` as for :func:`~embellama.load_library`; ``cdef``
    replaces the declarations with this text (the tests use it to prove that a mismatched
    declaration is caught).

    Raises
    ------
    LibraryError
        An explicit candidate is missing or fails its checks, or no candidate passes; the
        message lists each place looked at and why it was passed over.
    """
    tried: list[str] = []
    for source, candidate, explicit in find_library_candidates(path, backend=backend):
        try:
            file = resolve_library_file(candidate)
        except FileNotFoundError as exc:
            tried.append(f"  {source}: {exc}")
            if explicit:
                break
            continue
        try:
            return _open_checked(file, source, cdef, header)
        except LibraryError as exc:
            if explicit:
                raise
            tried.append(f"  {source}: {file}: {exc}")
    raise LibraryError(
        "could not find a usable libllama. Looked in:\n"
        + "\n".join(tried)
        + f"\nBuild one with:  {BUILD_HINT}\nor point ${ENV_LIB} at a libllama file or folder."
    )


def read_manifest(file: Path) -> tuple[dict[str, Any] | None, list[str]]:
    """The ``manifest.json`` beside the libllama ``file``, and warnings about it.

    A manifest that cannot be read, or whose checksum of ``file`` differs, is ignored (None)
    with a warning: the library is then checked at run time only.
    """
    manifest_path = file.parent / "manifest.json"
    if not manifest_path.is_file():
        return None, []
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return None, [f"{manifest_path}: unreadable manifest ({exc}); using the runtime check only"]
    recorded = (manifest.get("files") or {}).get(file.name)
    if recorded is None:
        # files maps names to sha256; libllama may be recorded under its SONAME.
        real = file.resolve().name
        recorded = (manifest.get("files") or {}).get(real)
    if isinstance(recorded, str) and not recorded.startswith("->"):
        actual = hashlib.sha256(file.read_bytes()).hexdigest()
        if actual != recorded:
            return None, [
                f"{file} is not the file {manifest_path} describes (sha256 differs); using the runtime check only"
            ]
    return manifest, []


def _open_checked(file: Path, source: str, cdef: str | None, header: str | os.PathLike[str] | None = None) -> Library:
    """Open ``file`` with its declarations and run every ABI check on it."""
    manifest, warnings = read_manifest(file)
    decls = declarations_for(file, manifest, cdef, header)
    ffi = make_ffi(decls.text)
    preloaded = _preload_ggml(ffi, file.parent)
    try:
        lib = ffi.dlopen(str(file), ffi.RTLD_NOW | ffi.RTLD_GLOBAL)
    except OSError as exc:
        raise LibraryError(f"cannot load {file}: {exc}") from exc
    functions = check_symbols(ffi, lib, file, decls.name)
    if decls.layout is not None:
        check_layout(ffi, decls.layout, file, decls.name)
    elif manifest is not None:
        check_layout(ffi, manifest.get("layout") or {}, file, decls.name)
    else:
        warnings.append(
            f"{file} has no build manifest: its struct layout was checked only against known "
            "default values, not field by field"
        )
    enums = decls.enums if decls.enums is not None else (manifest or {}).get("enums")
    if enums:
        check_enums(lib, enums, file, decls.name)
    check_defaults(ffi, str(file), file, decls.name)
    compat = decide(ffi, functions, needed_functions(), str(file))
    return Library(
        ffi=ffi,
        lib=lib,
        path=file,
        manifest=manifest,
        source=source,
        warnings=warnings,
        compat=compat,
        declarations=decls.name,
        _preloaded=preloaded,
    )


def _preload_ggml(ffi: Any, folder: Path) -> list[Any]:
    """Open the ggml libraries in ``folder`` globally; the handles stay open with the library."""
    handles = []
    flags = ffi.RTLD_NOW | ffi.RTLD_GLOBAL
    for stem in _GGML_PRELOAD:
        for name in (f"lib{stem}.so", f"lib{stem}.dylib", f"{stem}.dll"):
            candidate = folder / name
            if candidate.exists():
                try:
                    handles.append(ffi.dlopen(str(candidate), flags))
                except OSError:
                    pass  # libllama's own dependency lookup gets its chance next
                break
    return handles
