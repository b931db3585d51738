# SPDX-License-Identifier: Apache-2.0
"""The process-wide libllama: loaded once (:func:`load_library`), then handed out (:func:`get_library`).

Loading opens and checks the library (:mod:`embellama._native.discovery`), routes its log into
Python logging, starts llama.cpp's backends and says what it found.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path

from embellama._exceptions import LibraryError
from embellama._native.discovery import open_library, same_file
from embellama._native.library import Library
from embellama._native.logs import LogRoute
from embellama._native.paths import ENV_BACKEND

__all__ = ["get_library", "load_library", "loaded_library"]

logger = logging.getLogger("embellama")

# ggml's log line for each backend module it loads (a build with GGML_BACKEND_DL).
_LOADED_RE = re.compile(r"loaded (\S+) backend from (.+?)\s*$", re.MULTILINE)

_lock = threading.Lock()
_library: Library | None = None


def loaded_library() -> Library | None:
    """The process-wide library if it is loaded already, else None (loads nothing)."""
    return _library


def get_library() -> Library:
    """The process-wide library, loaded (and checked) on first use.

    Returns
    -------
    Library
        What :func:`load_library` loaded, or loads now with its defaults.

    Raises
    ------
    LibraryError
        As for :func:`load_library`.
    """
    if _library is None:
        return load_library()
    return _library


def load_library(
    path: str | os.PathLike[str] | None = None,
    *,
    backend: str | None = None,
    header: str | os.PathLike[str] | None = None,
) -> Library:
    """Load libllama once per process, check it against its declarations, and return it.

    Parameters
    ----------
    path
        A libllama file or the folder holding it. Default: ``$EMBELLAMA_LIB``, else for each
        backend in turn (cuda, metal, vulkan, cpu) what ``embellama build`` installed in the user
        cache (:func:`user_build_dir`), then the package's own ``embellama/_lib/<backend>/`` (the
        wheel's libllama, or ``build_llama.py``'s in a checkout).
    backend
        Which of those backends (default ``$EMBELLAMA_BACKEND``, else cuda, metal, vulkan, cpu).
    header
        The ``llama.h`` the library was built from (or its ``include`` folder, or a cdef
        that ``python -m embellama._native.cdefgen`` wrote), for a libllama of another llama.cpp
        than the pinned one. Default: ``$EMBELLAMA_LLAMA_H``, else the ``llama.cdef.h`` a
        ``build_llama.py`` manifest names, else the ``include/llama.h`` that CMake installs
        beside ``lib/``, else the pinned declarations. Declarations made from a header are
        checked against a probe compiled with it (this needs a C compiler once; the result
        is cached).

    Returns
    -------
    Library
        The process-wide library.

    Raises
    ------
    LibraryError
        No usable libllama; its functions, struct layout, defaults or enum values differ
        from the declarations; it lacks a function embellama needs (the message names the
        supported llama.cpp range); or another library is already loaded.
    """
    global _library
    with _lock:
        if _library is not None:
            if path is not None and not same_file(Path(path), _library.path):
                raise LibraryError(
                    f"libllama is already loaded from {_library.path}; a process can load only one (asked for {path})"
                )
            return _library
        lib = open_library(path, backend=backend, header=header)
        logs = lib._route_logs()  # first, so that backend start-up messages reach logging too
        try:
            _start_backend(lib, logs)
        except BaseException:
            lib._unroute_logs()  # C must not keep a pointer to a callback that is about to be freed
            raise
        for message in lib.warnings:
            logger.warning("%s", message)
        logger.info("loaded libllama %s from %s (%s)", lib.version, lib.path, lib.source)
        _library = lib
        return lib


def _start_backend(lib: Library, logs: LogRoute) -> None:
    """``llama_backend_init`` and the device checks of a freshly opened library (its log routed by ``logs``)."""
    lib.lib.llama_backend_init()
    if lib.lib.ggml_backend_dev_count() == 0:
        # A build with GGML_BACKEND_DL: its backends are separate modules, of which ggml picks the
        # best for this machine (for the CPU: the variant of the highest level the CPU runs); its
        # log says which file it loaded.
        with logs.collect() as collected:
            lib.lib.ggml_backend_load_all_from_path(str(lib.path.parent).encode())
        lib.backend_modules = {name: Path(path) for name, path in _LOADED_RE.findall("".join(collected))}
    if lib.lib.ggml_backend_dev_count() == 0:
        raise LibraryError(f"{lib.path}: llama.cpp found no compute backend (no ggml device)")
    built_for = (lib.manifest or {}).get("backend", "cpu")
    if built_for != "cpu" and not any(d["type"] in ("GPU", "IGPU") for d in lib.devices()):
        lib.warnings.append(
            f"{lib.path} is a {built_for} build but llama.cpp sees no {built_for} device (no GPU, or "
            f"its driver is missing; see the 'embellama.llama_cpp' log): everything runs on the CPU. "
            f"Set {ENV_BACKEND}=cpu to use the CPU build"
        )
    warning = amx_warning(lib)
    if warning:
        lib.warnings.append(warning)


def amx_warning(lib: Library) -> str | None:
    """What to say of a library with ggml's AMX kernels (``llama.py`` then loads models without them).

    A warning for a native or custom build; an info line only for the portable build (the wheel's), whose
    AMX CPU module is expected on an AMX CPU. None without AMX kernels.
    """
    if not lib.has_amx_kernels:
        return None
    amx = (
        f"{lib.path} has ggml's AMX kernels, which crash on quantized weights (llama.cpp issue "
        "20824): embellama loads models without llama.cpp's extra CPU buffer types (AMX, weight "
        "repacking)"
    )
    if (lib.manifest or {}).get("portable"):
        logger.info("%s; a native build (embellama build) has neither the kernels nor this limit", amx)
        return None
    return f"{amx}. build_llama.py builds without AMX"
