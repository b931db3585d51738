# SPDX-License-Identifier: Apache-2.0
"""Finding, loading and checking libllama (cffi ABI mode).

One ``ffi.cdef`` from ``include/llama.cdef.h``, one ``dlopen``. Before anything else
uses the library, :func:`load_library` checks that the declarations match it:

1. every declared function resolves;
2. struct sizes and field offsets equal the layout that ``build_llama.py`` measured
   against the real ``llama.h`` (``manifest.json`` beside the library);
3. the known defaults of ``llama_context_default_params()`` and
   ``llama_model_default_params()`` land in the declared fields. The defaults are read
   into an oversized buffer first, so a wrong declaration cannot overrun memory.

A mismatch raises :class:`~embellama.LibraryError` naming what differs.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import logging
import os
import platform
import re
import sys
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cffi

from embellama._exceptions import LibraryError
from embellama._native.compat import PIN_COMMIT, Capabilities, decide

__all__ = ["Library", "Limits", "enum_names", "find_library_candidates", "get_library", "load_library"]

logger = logging.getLogger("embellama")
# llama.cpp's own log lines: a channel of their own, not this module's name. llama.cpp is chatty at
# INFO, so until a level is set on this logger itself, only its warnings and errors are passed on.
LLAMA_LOGGER_NAME = "embellama.llama_cpp"
llama_logger = logging.getLogger(LLAMA_LOGGER_NAME)
logging.getLogger("embellama").addHandler(logging.NullHandler())

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # embellama/
LIB_ROOT = PACKAGE_DIR / "_lib"
BACKENDS = ("cuda", "metal", "vulkan", "cpu")
ENV_LIB = "EMBELLAMA_LIB"
ENV_BACKEND = "EMBELLAMA_BACKEND"
ENV_HEADER = "EMBELLAMA_LLAMA_H"
PINNED_CDEF_NAME = "include/llama.cdef.h"
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


def _preferred_cache_dir() -> Path | None:
    explicit = os.environ.get("EMBELLAMA_CACHE_DIR")
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


def make_ffi(declarations: str) -> Any:
    """An FFI for ``declarations``, parsed once and kept as an out-of-line module in the cache.

    pycparser takes about a tenth of a second for the llama.cpp declarations; cffi's
    out-of-line ABI mode (``set_source(name, None)``, as python-soundfile ships it) stores
    the parsed types in a small Python module that loads in a millisecond. The module is
    named by the sha256 of the declarations and cffi's version, so an edit makes a new one;
    where the cache cannot be written, the declarations are parsed every time.
    """
    key = hashlib.sha256(f"{cffi.__version__}\0{declarations}".encode()).hexdigest()[:20]
    name = f"_embellama_ffi_{key}"
    file = cache_dir() / "cffi" / f"{name}.py"
    if file.is_file():
        try:
            if not os.path.exists(importlib.util.cache_from_source(str(file))):
                _compile_cached(file)
            spec = importlib.util.spec_from_file_location(name, file)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module.ffi
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


CDEF_FILE = Path(__file__).resolve().parent / "llama.cdef.h"
"""The declarations of the pinned llama.cpp, shipped with the package (``include/llama.cdef.h``
in a checkout holds the same text; a test keeps them identical)."""


def read_cdef() -> str:
    """The C declarations embellama hands to cffi (those of the pinned llama.cpp)."""
    try:
        return CDEF_FILE.read_text(encoding="utf-8")
    except OSError as exc:
        raise LibraryError(f"embellama's C declarations are missing: {CDEF_FILE} ({exc})") from exc


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


def pinned_ffi() -> Any:
    """The FFI of the pinned declarations (parsed once, then from the cache module)."""
    global _PINNED_FFI
    if _PINNED_FFI is None:
        _PINNED_FFI = make_ffi(read_cdef())
    return _PINNED_FFI


_PINNED_FFI: Any = None


@dataclass(frozen=True)
class Limits:
    """llama.cpp's compile-time limits, asked of the loaded library (:attr:`Library.limits`)."""

    max_devices: int
    """``llama_max_devices()``: the entries of ``tensor_split``."""
    max_sequences: int
    """``llama_max_parallel_sequences()`` (``LLAMA_MAX_SEQ``): sequences per context."""


if sys.platform == "darwin":
    _LIB_NAMES = ("libllama.dylib", "libllama.0.dylib")
elif sys.platform == "win32":
    _LIB_NAMES = ("llama.dll", "libllama.dll")
else:
    _LIB_NAMES = ("libllama.so", "libllama.so.0")

# Loaded before libllama, with RTLD_GLOBAL, so that a copied build whose RUNPATH
# points elsewhere still finds its own ggml libraries.
_GGML_PRELOAD = ("ggml-base", "ggml-cpu", "ggml")

# Known defaults over the supported llama.cpp versions: (field, expected value), checked for
# the fields the declarations have. A declaration that is out of step with the library
# moves these fields, and the values stop matching.
_CONTEXT_DEFAULTS: tuple[tuple[str, Any], ...] = (
    ("n_ctx", 512),
    ("n_batch", 2048),
    ("n_ubatch", 512),
    ("n_seq_max", 1),
    ("n_rs_seq", 0),
    ("n_outputs_max", 0),
    ("n_outputs_max_per_seq", 1),
    ("ctx_type", 0),
    ("rope_scaling_type", -1),
    ("pooling_type", -1),
    ("attention_type", -1),
    ("flash_attn_type", -1),
    ("rope_freq_base", 0.0),
    ("rope_freq_scale", 0.0),
    ("yarn_ext_factor", -1.0),
    ("yarn_attn_factor", -1.0),
    ("yarn_beta_fast", -1.0),
    ("yarn_beta_slow", -1.0),
    ("yarn_orig_ctx", 0),
    ("defrag_thold", -1.0),
    ("cb_eval", None),
    ("cb_eval_user_data", None),
    ("type_k", 1),
    ("type_v", 1),
    ("abort_callback", None),
    ("abort_callback_data", None),
    ("embeddings", False),
    ("offload_kqv", True),
    ("no_perf", True),
    ("op_offload", True),
    ("swa_full", True),
    ("kv_unified", False),
    ("samplers", None),
    ("n_samplers", 0),
    ("ctx_other", None),
)
_MODEL_DEFAULTS: tuple[tuple[str, Any], ...] = (
    ("devices", None),
    ("tensor_buft_overrides", None),
    ("n_gpu_layers", -1),
    ("split_mode", 1),
    ("load_mode", -1),
    ("lazy_mode", 1),
    ("main_gpu", 0),
    ("tensor_split", None),
    ("progress_callback", None),
    ("progress_callback_user_data", None),
    ("kv_overrides", None),
    ("vocab_only", False),
    ("use_mmap", True),  # use_mmap, use_direct_io, use_mlock: before load_mode (llama-cpp-python <= 0.3.30)
    ("use_direct_io", False),
    ("use_mlock", False),
    ("check_tensors", False),
    ("use_extra_bufts", True),
    ("no_host", False),
    ("no_alloc", False),
    ("load_mtp", False),
)
_SENTINELS = {
    "llama_context_params": ("llama_context_default_params", _CONTEXT_DEFAULTS),
    "llama_model_params": ("llama_model_default_params", _MODEL_DEFAULTS),
}
_RAW_SIZE = 4096  # far larger than any params struct: the callee cannot overrun it


@dataclass
class Library:
    """A loaded and checked libllama: the ``ffi``, the ``lib`` and where it came from.

    Made by :func:`load_library` (one per process; :func:`get_library` returns it), not by hand.

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
    _callback: Any = None
    _preloaded: list[Any] = field(default_factory=list)  # ggml handles kept open with the library
    _watch: list[str] | None = None  # log text collected while the backends load

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

    def _route_logs(self) -> None:
        levels = {1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}
        # llama.cpp logs from several threads; each assembles its own lines.
        local = threading.local()

        def on_log(level: int, text: Any, _user_data: Any) -> None:
            try:
                if self._watch is not None:  # while backends load: which module ggml chose
                    self._watch.append(self.ffi.string(text).decode("utf-8", "replace"))
                partial: list[str] | None = getattr(local, "partial", None)
                if partial is None:
                    partial = local.partial = []
                    local.level = logging.INFO
                if level != 5:  # GGML_LOG_LEVEL_CONT continues the previous line
                    local.level = levels.get(level, logging.INFO)
                py_level = local.level
                quiet = llama_logger.level == logging.NOTSET and py_level < logging.WARNING
                if quiet or not llama_logger.isEnabledFor(py_level):
                    partial.clear()
                    return
                chunk = self.ffi.string(text).decode("utf-8", "replace")
                partial.append(chunk)
                if not chunk.endswith("\n"):
                    return
                line = "".join(partial).rstrip()
                partial.clear()
                if line:
                    llama_logger.log(py_level, "%s", line)
            except Exception:  # never let an exception cross into C
                pass

        self._callback = self.ffi.callback("ggml_log_callback", on_log)
        self.lib.llama_log_set(self._callback, self.ffi.NULL)

    def _unroute_logs(self) -> None:
        """Give llama.cpp back its default logger before the callback can be freed."""
        if self._callback is not None:
            self.lib.llama_log_set(self.ffi.NULL, self.ffi.NULL)
            self._callback = None


_lock = threading.Lock()
_library: Library | None = None


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
            if path is not None and _same_file(Path(path), _library.path) is False:
                raise LibraryError(
                    f"libllama is already loaded from {_library.path}; a process can load only one (asked for {path})"
                )
            return _library
        lib = open_library(path, backend=backend, header=header)
        lib._route_logs()  # first, so that backend start-up messages reach logging too
        try:
            _start_backend(lib)
        except BaseException:
            lib._unroute_logs()  # C must not keep a pointer to a callback that is about to be freed
            raise
        for message in lib.warnings:
            logger.warning("%s", message)
        logger.info("loaded libllama %s from %s (%s)", lib.version, lib.path, lib.source)
        _library = lib
        return lib


def _start_backend(lib: Library) -> None:
    """``llama_backend_init`` and the device checks of a freshly opened library."""
    lib.lib.llama_backend_init()
    if lib.lib.ggml_backend_dev_count() == 0:
        # A build with GGML_BACKEND_DL: its backends are separate modules, of which ggml picks the
        # best for this machine (for the CPU: the variant of the highest level the CPU runs); its
        # log says which file it loaded.
        lib._watch = []
        try:
            lib.lib.ggml_backend_load_all_from_path(str(lib.path.parent).encode())
        finally:
            text, lib._watch = "".join(lib._watch), None
        lib.backend_modules = {name: Path(path) for name, path in _LOADED_RE.findall(text)}
    if lib.lib.ggml_backend_dev_count() == 0:
        raise LibraryError(f"{lib.path}: llama.cpp found no compute backend (no ggml device)")
    built_for = (lib.manifest or {}).get("backend", "cpu")
    if built_for != "cpu" and not any(d["type"] in ("GPU", "IGPU") for d in lib.devices()):
        lib.warnings.append(
            f"{lib.path} is a {built_for} build but llama.cpp sees no {built_for} device (no GPU, or "
            f"its driver is missing; see the 'embellama.llama_cpp' log): everything runs on the CPU. "
            f"Set {ENV_BACKEND}=cpu to use the CPU build"
        )
    if lib.has_amx_kernels:
        lib.warnings.append(
            f"{lib.path} has ggml's AMX kernels, which crash on quantized weights (llama.cpp issue "
            "20824): embellama loads models without llama.cpp's extra CPU buffer types (AMX, weight "
            "repacking). build_llama.py builds without AMX"
        )


_LOADED_RE = re.compile(r"loaded (\S+) backend from (.+?)\s*$", re.MULTILINE)
_CPU_MODULE_RE = re.compile(r"^(?:lib)?ggml-cpu-(.+?)\.(?:so|dylib|dll)$")


def find_library_candidates(
    path: str | os.PathLike[str] | None = None, *, backend: str | None = None
) -> list[tuple[str, Path, bool]]:
    """Where :func:`load_library` looks, in order: ``(source, path, explicit)`` tuples."""
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


def user_build_dir(backend: str) -> Path:
    """Where ``embellama build --backend BACKEND`` installs: ``<cache>/lib/embellama-<pin>-<backend>``.

    Named by the pinned llama.cpp commit, so an embellama with another pin never picks up a build
    of the old one. Looked at before the package's own ``_lib/<backend>`` (see :func:`load_library`).
    """
    return cache_dir() / "lib" / f"embellama-{PIN_COMMIT}-{backend}"


def _same_file(path: Path, loaded: Path) -> bool:
    try:
        return _resolve_file(path) == loaded
    except FileNotFoundError:
        return False


def _resolve_file(path: Path) -> Path:
    if path.is_dir():
        for name in _LIB_NAMES:
            if (path / name).exists():
                return (path / name).resolve()
        raise FileNotFoundError(f"no {' or '.join(_LIB_NAMES)} in folder {path}")
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    return path.resolve()


def open_library(
    path: str | os.PathLike[str] | None = None,
    *,
    backend: str | None = None,
    cdef: str | None = None,
    header: str | os.PathLike[str] | None = None,
) -> Library:
    """Find, ``dlopen`` and check a libllama without initialising it.

    ``header`` as for :func:`load_library`; ``cdef`` replaces the declarations with this
    text (the tests use it to prove that a mismatched declaration is caught).
    """
    tried: list[str] = []
    for source, candidate, explicit in find_library_candidates(path, backend=backend):
        try:
            file = _resolve_file(candidate)
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


def _preload_ggml(ffi: Any, folder: Path) -> list[Any]:
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


def _read_manifest(file: Path) -> tuple[dict[str, Any] | None, list[str]]:
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


@dataclass
class _Declarations:
    """The declarations a library is opened with, and what they are checked against."""

    text: str
    name: str
    layout: dict[str, Any] | None = None
    """Measured against the header (a probe); None: the manifest's layout applies."""
    enums: dict[str, int] | None = None


def _declarations(
    file: Path, manifest: dict[str, Any] | None, cdef: str | None, header: str | os.PathLike[str] | None
) -> _Declarations:
    """The declarations for ``file``: given, from a header, a build's cdef, or the pinned ones."""
    if cdef is not None:
        return _Declarations(cdef, "the given declarations")
    explicit = header if header is not None else os.environ.get(ENV_HEADER) or None
    if explicit is not None:
        return declarations_from_header(Path(explicit))
    named = (manifest or {}).get("cdef")
    if isinstance(named, str):
        path = file.parent / named
        try:
            return _Declarations(path.read_text(encoding="utf-8"), str(path))
        except OSError as exc:
            raise LibraryError(f"{file}: its manifest names declarations {path} that cannot be read: {exc}") from exc
    installed = file.parent.parent / "include" / "llama.h"  # CMake's install: <prefix>/lib, <prefix>/include
    if manifest is None and installed.is_file():
        return declarations_from_header(installed)
    return _Declarations(read_cdef(), PINNED_CDEF_NAME)


def declarations_from_header(header: Path) -> _Declarations:
    """Declarations generated from a ``llama.h`` (or its folder), with the layout a probe measures.

    A ``*.cdef.h`` file is taken as declarations already generated. The result for a
    header is cached under :func:`cache_dir` by the sha256 of the headers it includes.
    """
    from embellama._native import cdefgen as _cdefgen  # pycparser: only for another llama.cpp than the pinned one

    if header.is_dir():
        header = next((c for c in (header / "llama.h", header / "include" / "llama.h") if c.is_file()), header)
    if not header.is_file():
        raise LibraryError(f"no llama.h at {header} (from the header argument or ${ENV_HEADER})")
    if header.name.endswith(".cdef.h"):
        return _Declarations(header.read_text(encoding="utf-8"), str(header))
    try:
        key = _cdefgen.header_digest(header)
        cached = cache_dir() / "headers" / f"{key[:24]}.json"
        try:
            data = json.loads(cached.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = _measure_header(_cdefgen, header)
            with contextlib.suppress(OSError):
                cached.parent.mkdir(parents=True, exist_ok=True)
                tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
                tmp.write_text(json.dumps(data), encoding="utf-8")
                os.replace(tmp, cached)
    except _cdefgen.GeneratorError as exc:
        raise LibraryError(f"cannot make declarations from {header}: {exc}") from exc
    return _Declarations(data["cdef"], f"the declarations generated from {header}", data["layout"], data["enums"])


def _measure_header(gen: Any, header: Path) -> dict[str, Any]:
    result = gen.generate_from_source(header, str(header))
    constants = [name for values in result.enums.values() for name in values] + list(result.constants)
    measured = gen.measure(header, result.structs, constants)
    return {"cdef": result.text, "layout": measured["layout"], "enums": measured["enums"]}


def _open_checked(file: Path, source: str, cdef: str | None, header: str | os.PathLike[str] | None = None) -> Library:
    manifest, warnings = _read_manifest(file)
    decls = _declarations(file, manifest, cdef, header)
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
    compat = decide(ffi, functions, _needed_functions(), str(file))
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


def _needed_functions() -> frozenset[str]:
    """The functions embellama calls: those the pinned declarations declare."""
    global _NEEDED
    if _NEEDED is None:
        _NEEDED = frozenset(re.findall(r"\b(\w+)\(", re.sub(r"\(\*\w+\)", "", read_cdef())))
    return _NEEDED


_NEEDED: frozenset[str] | None = None


def check_enums(lib: Any, measured: dict[str, int], file: Path, what: str = PINNED_CDEF_NAME) -> None:
    """Every enum constant of the declarations must have the value the probe measured in llama.h."""
    problems = []
    for name, value in sorted(measured.items()):
        ours = getattr(lib, name, None)
        if ours is None:
            continue  # not declared here
        if int(ours) != int(value):
            problems.append(f"{name} is {int(ours)} here but {value} in llama.h")
    if problems:
        raise LibraryError(f"enum values differ between {what} and {file}:\n  " + "\n  ".join(problems))


def check_symbols(ffi: Any, lib: Any, file: Path, what: str = PINNED_CDEF_NAME) -> set[str]:
    """Every declared function must resolve in the library; returns the functions."""
    missing = []
    found = set()
    not_found = (AttributeError, getattr(ffi, "error", AttributeError))  # in-line and out-of-line FFIs differ
    for name in dir(lib):
        try:
            value = getattr(lib, name)
        except not_found:
            missing.append(name)
            continue
        if not isinstance(value, int):
            found.add(name)
    if missing:
        raise LibraryError(
            f"{file} lacks {len(missing)} declared function(s): {', '.join(sorted(missing))}. "
            f"It is from another llama.cpp version than {what}: load it with the llama.h it was built "
            f"from (load_library(path, header=...) or ${ENV_HEADER})"
        )
    return found


def _struct_fields(ffi: Any, name: str) -> list[str] | None:
    for spelling in (f"struct {name}", name):
        try:
            ctype = ffi.typeof(spelling)
        except ffi.error:
            continue
        return [fname for fname, _ in (ctype.fields or [])]
    return None


def check_layout(ffi: Any, layout: dict[str, Any], file: Path, what: str = PINNED_CDEF_NAME) -> None:
    """Struct sizes and field offsets of the declarations must equal the measured layout."""
    problems = []
    for struct, measured in sorted(layout.items()):
        fields = _struct_fields(ffi, struct)
        if fields is None:
            continue
        spelling = f"struct {struct}"
        size = ffi.sizeof(spelling)
        if size != measured.get("size"):
            problems.append(f"sizeof({struct}) is {size} here but {measured.get('size')} in llama.h")
        offsets = measured.get("fields") or {}
        for fname in fields:
            ours = ffi.offsetof(spelling, fname)
            theirs = offsets.get(fname)
            if theirs is None:
                problems.append(f"{struct}.{fname} is not in the measured layout")
            elif ours != theirs:
                problems.append(f"{struct}.{fname} is at offset {ours} here but {theirs} in llama.h")
    for struct in ("llama_batch", "llama_context_params", "llama_model_params"):
        if struct not in layout:
            problems.append(f"the manifest has no layout for {struct}")
    if problems:
        raise LibraryError(f"ABI mismatch between {what} and {file}:\n  " + "\n  ".join(problems))


def check_defaults(ffi: Any, lib_path: str, file: Path, what: str = PINNED_CDEF_NAME) -> None:
    """The known defaults of the params constructors must land in the declared fields."""
    raw_ffi = make_ffi(
        f"typedef struct {{ unsigned char bytes[{_RAW_SIZE}]; }} embellama_raw;\n"
        + "".join(f"embellama_raw {fn}(void);\n" for fn, _ in _SENTINELS.values())
    )
    raw_lib = raw_ffi.dlopen(lib_path)
    problems = []
    for struct, (function, expected) in _SENTINELS.items():
        spelling = f"struct {struct}"
        size = ffi.sizeof(spelling)
        if size > _RAW_SIZE:
            problems.append(f"sizeof({struct}) = {size} is implausible")
            continue
        raw = getattr(raw_lib, function)()
        value = ffi.new(f"{spelling} *")
        ffi.memmove(value, raw_ffi.buffer(raw_ffi.addressof(raw, "bytes"), size), size)
        raw_bytes = bytes(raw_ffi.buffer(raw_ffi.addressof(raw, "bytes"), size))
        declared = set(_struct_fields(ffi, struct) or ())
        for fname, want in expected:
            if fname not in declared:
                continue  # a field of another llama.cpp version
            ctype = dict(ffi.typeof(spelling).fields)[fname].type
            if ctype.kind == "primitive" and ctype.cname == "_Bool":
                got = raw_bytes[ffi.offsetof(spelling, fname)]  # any byte: 2..255 is a mismatch too
                want = int(want)
            else:
                got = getattr(value[0], fname)
                if ctype.kind in ("pointer", "function"):
                    got = None if got == ffi.NULL else "non-NULL"
                elif ctype.kind == "enum":
                    got = int(ffi.cast("int", got))
            if got != want:
                problems.append(f"{struct}.{fname}: expected default {want!r}, found {got!r}")
    problems.extend(_check_sizes_x86_64(ffi, lib_path))
    if problems:
        raise LibraryError(
            f"ABI mismatch: the defaults of {file} do not land where {what} "
            "declares them (a field added, removed or reordered):\n  " + "\n  ".join(problems)
        )


def _check_sizes_x86_64(ffi: Any, lib_path: str) -> list[str]:
    """Measure how many bytes the params constructors really write (x86-64 only).

    On x86-64 (System V and Windows alike) a large struct is returned through a hidden
    pointer passed as the first argument, so ``T f(void)`` can be called as
    ``void *f(void *out)`` with a buffer we own. Filling it twice with different
    patterns shows which bytes the library writes, hence the struct's real size; a
    field appended to the end, which no default value reveals, is caught this way.
    """
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return []
    sret_ffi = make_ffi("".join(f"void * {fn}(void * out);\n" for fn, _ in _SENTINELS.values()))
    sret_lib = sret_ffi.dlopen(lib_path)
    problems = []
    for struct, (function, _) in _SENTINELS.items():
        last = -1  # the last byte the call wrote: it differs from the fill under one of the patterns
        for pattern in (b"\x00", b"\xff"):
            buf = sret_ffi.new(f"unsigned char[{_RAW_SIZE}]", pattern * _RAW_SIZE)
            getattr(sret_lib, function)(buf)
            last = max(last, len(sret_ffi.buffer(buf)[:].rstrip(pattern)) - 1)
        align = ffi.alignof(f"struct {struct}")
        real = (last + align) // align * align
        ours = ffi.sizeof(f"struct {struct}")
        if real != ours:
            problems.append(f"{function}() writes {real} bytes but struct {struct} is declared as {ours}")
    return problems
