# SPDX-License-Identifier: Apache-2.0
"""The C declarations handed to cffi: which ones a library is opened with, parsed once and cached.

The pinned declarations ship as ``llama.cdef.h`` beside this module. A libllama of another
llama.cpp is opened with declarations generated from its own ``llama.h`` (by
:mod:`embellama._native.cdefgen`, with the layout a compiled probe measures), or with the
``cdef`` its ``build_llama.py`` manifest names. Whatever the source, the text is parsed by
:func:`make_ffi`, which keeps the result as an out-of-line cffi module in the cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cffi

from embellama._exceptions import LibraryError
from embellama._native.paths import ENV_HEADER, cache_dir

__all__ = [
    "CDEF_FILE",
    "PINNED_CDEF_NAME",
    "Declarations",
    "declarations_for",
    "declarations_from_header",
    "enum_names",
    "make_ffi",
    "needed_functions",
    "pinned_ffi",
    "read_cdef",
]

logger = logging.getLogger("embellama")

PINNED_CDEF_NAME = "include/llama.cdef.h"
"""How errors name the pinned declarations."""
CDEF_FILE = Path(__file__).resolve().parent / "llama.cdef.h"
"""The declarations of the pinned llama.cpp, shipped with the package (``include/llama.cdef.h``
in a checkout holds the same text; a test keeps them identical)."""


def make_ffi(declarations: str) -> Any:
    """An FFI for ``declarations``, parsed once and kept as an out-of-line module in the cache.

    pycparser takes about a tenth of a second for the llama.cpp declarations; cffi's
    out-of-line ABI mode (``set_source(name, None)``, as python-soundfile ships it) stores
    the parsed types in a small Python module that loads in a millisecond. The module is
    named by the sha256 of the declarations and cffi's version, so an edit makes a new one;
    where the cache cannot be written, the declarations are parsed every time.

    Raises
    ------
    LibraryError
        The declarations do not parse.
    """
    key = hashlib.sha256(f"{cffi.__version__}\0{declarations}".encode()).hexdigest()[:20]
    name = f"_embellama_ffi_{key}"
    file = cache_dir() / "cffi" / f"{name}.py"
    if file.is_file():
        try:
            return _load_cached(name, file)
        except Exception as exc:  # a damaged cache file: parse again and rewrite it
            logger.debug("ignoring cached declarations %s: %s", file, exc)
    builder = cffi.FFI()
    try:
        builder.cdef(declarations)
    except cffi.CDefError as exc:
        raise LibraryError(f"the C declarations do not parse: {exc}") from exc
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        builder.set_source(name, None)
        tmp = file.with_name(f".{name}.{os.getpid()}.{threading.get_ident()}.tmp")
        with contextlib.redirect_stdout(io.StringIO()):  # cffi announces "generating ..."
            builder.emit_python_code(str(tmp))
        os.replace(tmp, file)
        _compile_cached(file)
    except OSError as exc:
        logger.debug("cannot cache the parsed declarations in %s: %s", file.parent, exc)
    return builder


def _load_cached(name: str, file: Path) -> Any:
    """The ``ffi`` of the cached module ``file`` (its bytecode written first if missing)."""
    if not os.path.exists(importlib.util.cache_from_source(str(file))):
        _compile_cached(file)
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ffi


def _compile_cached(file: Path) -> None:
    """Write the bytecode of a cached module beside it, even under ``PYTHONDONTWRITEBYTECODE``.

    Compiling the module's source on every start costs more than loading it: the cache is
    embellama's own, so its bytecode is too.
    """
    import py_compile

    try:
        py_compile.compile(str(file), doraise=True)
    except (OSError, py_compile.PyCompileError) as exc:
        logger.debug("cannot write the bytecode of %s: %s", file, exc)


def read_cdef() -> str:
    """The C declarations embellama hands to cffi (those of the pinned llama.cpp)."""
    try:
        return CDEF_FILE.read_text(encoding="utf-8")
    except OSError as exc:
        raise LibraryError(f"embellama's C declarations are missing: {CDEF_FILE} ({exc})") from exc


_pinned: Any = None
_needed: frozenset[str] | None = None


def pinned_ffi() -> Any:
    """The FFI of the pinned declarations (parsed once, then from the cache module)."""
    global _pinned
    if _pinned is None:
        _pinned = make_ffi(read_cdef())
    return _pinned


def needed_functions() -> frozenset[str]:
    """The functions embellama calls: those the pinned declarations declare."""
    global _needed
    if _needed is None:
        _needed = frozenset(re.findall(r"\b(\w+)\(", re.sub(r"\(\*\w+\)", "", read_cdef())))
    return _needed


def enum_names(enum: str, prefix: str, ffi: Any = None) -> dict[str, int]:
    """A C enum's constants as ``{name: value}``: the one source of llama.cpp's constants.

    Parameters
    ----------
    enum
        The enum's tag, e.g. ``"llama_pooling_type"``.
    prefix
        The prefix its constants share, dropped from the names (which are lower-cased).
    ffi
        The declarations to read (default: the pinned ones).

    Returns
    -------
    dict of str to int
        In the order of the values: ``enum_names("llama_pooling_type", "LLAMA_POOLING_TYPE_")``
        is ``{"unspecified": -1, "none": 0, "mean": 1, "cls": 2, "last": 3, "rank": 4}``.

    Raises
    ------
    ffi.error
        The declarations have no such enum (cffi's ``FFI.error``).
    """
    ffi = pinned_ffi() if ffi is None else ffi
    elements = ffi.typeof(f"enum {enum}").relements
    found = sorted((value, name) for name, value in elements.items() if name.startswith(prefix))
    return {name[len(prefix) :].lower(): value for value, name in found}


@dataclass
class Declarations:
    """The declarations a library is opened with, and what they are checked against."""

    text: str
    name: str
    """How errors name them: the pinned file, a header, a build's cdef."""
    layout: dict[str, Any] | None = None
    """Measured against the header (a probe); None: the manifest's layout applies."""
    enums: dict[str, int] | None = None
    """Enum and constant values measured against the header; None: the manifest's apply."""


def declarations_for(
    file: Path, manifest: dict[str, Any] | None, cdef: str | None, header: str | os.PathLike[str] | None
) -> Declarations:
    """The declarations for the libllama ``file``: given, from a header, a build's cdef, or the pinned ones.

    In that order: ``cdef`` (text), ``header`` (else ``$EMBELLAMA_LLAMA_H``), the ``cdef`` the
    build's ``manifest`` names, the ``include/llama.h`` CMake installs beside ``lib/`` (for a
    library without a manifest), else the pinned declarations.
    """
    if cdef is not None:
        return Declarations(cdef, "the given declarations")
    explicit = header if header is not None else os.environ.get(ENV_HEADER) or None
    if explicit is not None:
        return declarations_from_header(Path(explicit))
    named = (manifest or {}).get("cdef")
    if isinstance(named, str):
        path = file.parent / named
        try:
            return Declarations(path.read_text(encoding="utf-8"), str(path))
        except OSError as exc:
            raise LibraryError(f"{file}: its manifest names declarations {path} that cannot be read: {exc}") from exc
    installed = file.parent.parent / "include" / "llama.h"  # CMake's install: <prefix>/lib, <prefix>/include
    if manifest is None and installed.is_file():
        return declarations_from_header(installed)
    return Declarations(read_cdef(), PINNED_CDEF_NAME)


def declarations_from_header(header: Path) -> Declarations:
    """Declarations generated from a ``llama.h`` (or its folder), with the layout a probe measures.

    A ``*.cdef.h`` file is taken as declarations already generated. The result for a
    header is cached under :func:`~embellama._native.paths.cache_dir` by the sha256 of the
    headers it includes.
    """
    from embellama._native import cdefgen  # pycparser: only for another llama.cpp than the pinned one

    if header.is_dir():
        header = next((c for c in (header / "llama.h", header / "include" / "llama.h") if c.is_file()), header)
    if not header.is_file():
        raise LibraryError(f"no llama.h at {header} (from the header argument or ${ENV_HEADER})")
    if header.name.endswith(".cdef.h"):
        return Declarations(header.read_text(encoding="utf-8"), str(header))
    try:
        key = cdefgen.header_digest(header)
        cached = cache_dir() / "headers" / f"{key[:24]}.json"
        try:
            data = json.loads(cached.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = _measure_header(cdefgen, header)
            with contextlib.suppress(OSError):
                cached.parent.mkdir(parents=True, exist_ok=True)
                tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
                tmp.write_text(json.dumps(data), encoding="utf-8")
                os.replace(tmp, cached)
    except cdefgen.GeneratorError as exc:
        raise LibraryError(f"cannot make declarations from {header}: {exc}") from exc
    return Declarations(data["cdef"], f"the declarations generated from {header}", data["layout"], data["enums"])


def _measure_header(gen: Any, header: Path) -> dict[str, Any]:
    result = gen.generate_from_source(header, str(header))
    constants = [name for values in result.enums.values() for name in values] + list(result.constants)
    measured = gen.measure(header, result.structs, constants)
    return {"cdef": result.text, "layout": measured["layout"], "enums": measured["enums"]}
