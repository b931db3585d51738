# SPDX-License-Identifier: Apache-2.0
"""The ABI checks: do the declarations match the opened libllama?

Before anything uses a library, :func:`~embellama._native.discovery.open_library` runs them:

1. :func:`check_symbols`: every declared function resolves;
2. :func:`check_layout`: struct sizes and field offsets equal the layout that ``build_llama.py``
   measured against the real ``llama.h`` (``manifest.json`` beside the library), or that a probe
   measured against the header the declarations were generated from;
3. :func:`check_enums`: enum constants and ``#define`` values equal those measured;
4. :func:`check_defaults`: the known defaults of ``llama_context_default_params()`` and
   ``llama_model_default_params()`` land in the declared fields. The defaults are read into an
   oversized buffer first, so a wrong declaration cannot overrun memory. On x86-64 the number of
   bytes the constructors write is measured too, which catches a field appended at the end.

A mismatch raises :class:`~embellama.LibraryError` naming what differs.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from embellama._exceptions import LibraryError
from embellama._native.declarations import PINNED_CDEF_NAME, make_ffi
from embellama._native.paths import ENV_HEADER

__all__ = ["check_defaults", "check_enums", "check_layout", "check_symbols"]

# Known defaults over the supported llama.cpp versions: (field, expected value), checked for
# the fields the declarations have. A declaration that is out of step with the library
# moves these fields, and the values stop matching.
CONTEXT_DEFAULTS: tuple[tuple[str, Any], ...] = (
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
MODEL_DEFAULTS: tuple[tuple[str, Any], ...] = (
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
# struct: (the function returning its defaults, the known defaults)
_SENTINELS = {
    "llama_context_params": ("llama_context_default_params", CONTEXT_DEFAULTS),
    "llama_model_params": ("llama_model_default_params", MODEL_DEFAULTS),
}
_RAW_SIZE = 4096  # far larger than any params struct: the callee cannot overrun it


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
        raw_bytes = bytes(raw_ffi.buffer(raw_ffi.addressof(raw, "bytes"), size))
        problems.extend(_wrong_defaults(ffi, struct, raw_bytes, expected))
    problems.extend(_check_sizes_x86_64(ffi, lib_path))
    if problems:
        raise LibraryError(
            f"ABI mismatch: the defaults of {file} do not land where {what} "
            "declares them (a field added, removed or reordered):\n  " + "\n  ".join(problems)
        )


def _wrong_defaults(ffi: Any, struct: str, raw_bytes: bytes, expected: tuple[tuple[str, Any], ...]) -> list[str]:
    """The known defaults of ``struct`` that the bytes a constructor returned do not hold."""
    spelling = f"struct {struct}"
    value = ffi.new(f"{spelling} *")
    ffi.memmove(value, raw_bytes, len(raw_bytes))
    declared = dict(ffi.typeof(spelling).fields or ())
    problems = []
    for fname, want in expected:
        if fname not in declared:
            continue  # a field of another llama.cpp version
        ctype = declared[fname].type
        if ctype.kind == "primitive" and ctype.cname == "_Bool":
            got: Any = raw_bytes[ffi.offsetof(spelling, fname)]  # any byte: 2..255 is a mismatch too
            want = int(want)
        else:
            got = getattr(value[0], fname)
            if ctype.kind in ("pointer", "function"):
                got = None if got == ffi.NULL else "non-NULL"
            elif ctype.kind == "enum":
                got = int(ffi.cast("int", got))
        if got != want:
            problems.append(f"{struct}.{fname}: expected default {want!r}, found {got!r}")
    return problems


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


def _struct_fields(ffi: Any, name: str) -> list[str] | None:
    """The fields of ``struct name`` (or the typedef ``name``), None where it is not declared."""
    for spelling in (f"struct {name}", name):
        try:
            ctype = ffi.typeof(spelling)
        except ffi.error:
            continue
        return [fname for fname, _ in (ctype.fields or [])]
    return None
