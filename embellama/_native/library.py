# SPDX-License-Identifier: Apache-2.0
"""The :class:`Library`: a libllama that was found, opened and checked, and what it can tell."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embellama._exceptions import LibraryError
from embellama._native.compat import Capabilities
from embellama._native.declarations import PINNED_CDEF_NAME, enum_names
from embellama._native.logs import LogRoute

__all__ = ["Library", "Limits"]

_CPU_MODULE_RE = re.compile(r"^(?:lib)?ggml-cpu-(.+?)\.(?:so|dylib|dll)$")


@dataclass(frozen=True)
class Limits:
    """llama.cpp's compile-time limits, asked of the loaded library (:attr:`Library.limits`)."""

    max_devices: int
    """``llama_max_devices()``: the entries of ``tensor_split``."""
    max_sequences: int
    """``llama_max_parallel_sequences()`` (``LLAMA_MAX_SEQ``): sequences per context."""


@dataclass
class Library:
    """A loaded and checked libllama: the ``ffi``, the ``lib`` and where it came from.

    Made by :func:`~embellama.load_library` (one per process; :func:`~embellama.get_library` returns it), not by
    hand.

    Attributes
    ----------
    ffi : cffi.FFI
        The FFI of the declarations (an out-of-line FFI when loaded from the cache).
    lib : object
        The opened library: ``lib.llama_*`` are its C functions.
    path : pathlib.Path
        The libllama file.
    manifest : dict or None
        The ``manifest.json`` of a ``build_llama.py`` build (commit, backend, layout, checksums); None for
        a custom build.
    source : str
        How it was found: the path given, ``$EMBELLAMA_LIB`` or a build of ``build_llama.py``.
    warnings : list of str
        What the checks found worth saying but not fatal (also logged).
    compat : Capabilities or None
        What this llama.cpp can do where versions differ (decided at load).
    declarations : str
        Where the declarations came from: the pinned ``llama.cdef.h``, a header, a build's cdef.
    backend_modules : dict of str to pathlib.Path
        For a build whose backends are modules (``GGML_BACKEND_DL``: the wheel, ``build_llama.py
        --portable``): the module ggml loaded per backend, e.g. ``{"CPU": .../libggml-cpu-haswell.so}``.
        Empty when the backends are linked into the library.
    """

    ffi: Any
    lib: Any
    path: Path
    manifest: dict[str, Any] | None
    source: str
    warnings: list[str] = field(default_factory=list)
    compat: Capabilities | None = None
    declarations: str = PINNED_CDEF_NAME
    backend_modules: dict[str, Path] = field(default_factory=dict)
    _preloaded: list[Any] = field(default_factory=list)  # ggml handles kept open with the library
    _log_route: LogRoute | None = None  # llama.cpp's log into Python logging, once loaded

    @property
    def caps(self) -> Capabilities:
        """:attr:`compat`, which every checked library has."""
        if self.compat is None:
            raise LibraryError(f"{self.path}: the library was not checked")
        return self.compat

    @property
    def backend(self) -> str:
        """The backend named in the manifest ("cpu", "cuda", ...), else guessed from devices."""
        if self.manifest and "backend" in self.manifest:
            return str(self.manifest["backend"])
        kinds = {d["type"] for d in self.devices()}
        return "gpu" if "GPU" in kinds or "IGPU" in kinds else "cpu"

    @property
    def version(self) -> str:
        """``llama_version()`` of the loaded library (older ones lack it: the build's commit)."""
        return self.caps.version(self.lib, self.ffi, self.commit)

    @property
    def commit(self) -> str | None:
        """The llama.cpp commit the manifest records, if any."""
        return None if self.manifest is None else self.manifest.get("llama_cpp_commit")

    def system_info(self) -> str:
        """``llama_print_system_info()``: the CPU features the build uses.

        Returns
        -------
        str
            llama.cpp's line, e.g. ``"CPU : SSE3 = 1 | AVX2 = 1 | ..."``.
        """
        return self.ffi.string(self.lib.llama_print_system_info()).decode().strip()

    def devices(self) -> list[dict[str, Any]]:
        """The ggml devices the library sees.

        Returns
        -------
        list of dict
            One dict per device: ``name``, ``description``, ``type`` ("CPU", "GPU", "IGPU", "ACCEL"),
            ``memory_total`` and ``memory_free`` (bytes).
        """
        types = enum_names("ggml_backend_dev_type", "GGML_BACKEND_DEVICE_TYPE_", self.ffi)
        kinds = {code: name.upper() for name, code in types.items()}
        out = []
        for i in range(self.lib.ggml_backend_dev_count()):
            dev = self.lib.ggml_backend_dev_get(i)
            free = self.ffi.new("size_t *")
            total = self.ffi.new("size_t *")
            self.lib.ggml_backend_dev_memory(dev, free, total)
            kind = int(self.lib.ggml_backend_dev_type(dev))
            out.append(
                {
                    "name": self.ffi.string(self.lib.ggml_backend_dev_name(dev)).decode(),
                    "description": self.ffi.string(self.lib.ggml_backend_dev_description(dev)).decode(),
                    "type": kinds.get(kind, str(kind)),
                    "memory_total": int(total[0]),
                    "memory_free": int(free[0]),
                }
            )
        return out

    @property
    def cpu_variant(self) -> str | None:
        """The CPU variant ggml chose for this CPU (``"haswell"``, ``"zen4"``, ...), or None.

        A portable build (the wheel) carries one ``libggml-cpu-<variant>`` module per x86-64 or
        arm64 instruction-set level, and ggml loads the best one the CPU can run; a build for one
        CPU (``build_llama.py`` without ``--portable``) has its CPU code linked in: None.
        """
        module = self.backend_modules.get("CPU")
        if module is None:
            return None
        match = _CPU_MODULE_RE.match(module.name)
        return match.group(1) if match else module.name

    @property
    def has_amx_kernels(self) -> bool:
        """Whether the CPU backend was compiled with ggml's AMX kernels.

        They crash the process on quantized weights (llama.cpp issue 20824), so models
        loaded through embellama then keep their weights out of llama.cpp's extra CPU
        buffer types (AMX and weight repacking).
        """
        return "AMX_INT8 = 1" in self.system_info()

    def supports_gpu_offload(self) -> bool:
        """Whether llama.cpp can offload layers to a device.

        Returns
        -------
        bool
            ``llama_supports_gpu_offload()``.
        """
        return bool(self.lib.llama_supports_gpu_offload())

    @property
    def limits(self) -> Limits:
        """llama.cpp's limits (devices, sequences), asked of the library: the one place they come from."""
        return Limits(int(self.lib.llama_max_devices()), int(self.lib.llama_max_parallel_sequences()))

    def max_parallel_sequences(self) -> int:
        """``LLAMA_MAX_SEQ``: the most sequences one context can hold.

        Returns
        -------
        int
            Asked of the library (``llama_max_parallel_sequences()``).
        """
        return self.limits.max_sequences

    # -- llama.cpp log lines into Python logging ------------------------------

    def _route_logs(self) -> LogRoute:
        """Install the library's log callback (see :mod:`embellama._native.logs`) and return it."""
        self._log_route = LogRoute(self.ffi, self.lib)
        self._log_route.install()
        return self._log_route

    def _unroute_logs(self) -> None:
        """Give llama.cpp back its default logger before the callback can be freed."""
        if self._log_route is not None:
            self._log_route.uninstall()
