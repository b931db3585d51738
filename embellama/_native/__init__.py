# SPDX-License-Identifier: Apache-2.0
"""The native layer: the only code that imports cffi.

The modules, bottom up: :mod:`~embellama._native.paths` (the cache and library folders),
:mod:`~embellama._native.compat` (what differs between llama.cpp versions),
:mod:`~embellama._native.declarations` (the C declarations, parsed once),
:mod:`~embellama._native.abi` (the checks that they match the library),
:mod:`~embellama._native.logs` (llama.cpp's log into Python logging),
:mod:`~embellama._native.library` (the :class:`Library`),
:mod:`~embellama._native.discovery` (finding and opening a libllama) and
:mod:`~embellama._native.loader` (the process-wide library). :mod:`~embellama._native.cdefgen`
writes declarations from a ``llama.h``. The layers above import the names below from here.
"""

from embellama._native.declarations import enum_names
from embellama._native.library import Library, Limits
from embellama._native.loader import get_library, load_library, loaded_library
from embellama._native.logs import LLAMA_LOGGER_NAME
from embellama._native.paths import ENV_LIB, cache_dir, user_build_dir

__all__ = [
    "ENV_LIB",
    "LLAMA_LOGGER_NAME",
    "Library",
    "Limits",
    "cache_dir",
    "enum_names",
    "get_library",
    "load_library",
    "loaded_library",
    "user_build_dir",
]
