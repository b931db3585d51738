# SPDX-License-Identifier: Apache-2.0
"""What the loaded libllama can do, decided once at load from its declarations.

llama.cpp renames and replaces parts of its C API every few weeks. Everything in
embellama that depends on such a difference asks the :class:`Capabilities` of its
:class:`~embellama.Library` here, instead of testing versions where it calls C:

==========================  =====================================  =================================
difference                  newer llama.cpp (the pin, 0.3.36)      older (llama-cpp-python 0.3.27-0.3.30)
==========================  =====================================  =================================
model loading options       ``llama_model_params.load_mode`` enum  ``use_mmap`` / ``use_mlock`` bools
weight type of a model      ``llama_model_ftype()``                GGUF key ``general.file_type``
library version string      ``llama_version()``                    the build's manifest, else "unknown"
memory clearing             ``llama_memory_clear(mem, data)``      ``llama_kv_self_clear(ctx)`` (older still)
flash attention setting     ``flash_attn_type`` enum               ``flash_attn`` bool (older still)
embedding size              ``llama_model_n_embd_out()``           ``llama_model_n_embd()``
dynamic backends            ``ggml_backend_load_all_from_path()``  not loaded (static backends)
LoRA adapters on a context  ``llama_set_adapters_lora()`` (arrays)  ``llama_set_adapter_lora()`` one at
                                                                   a time, ``llama_clear_adapter_lora()``
==========================  =====================================  =================================

The LoRA functions are optional: a library without them loads, and only asking for an adapter
raises :class:`~embellama.LibraryError` (:meth:`Capabilities.check_lora`).

A function that embellama needs and has no replacement for makes the load fail with a
:class:`~embellama.LibraryError` naming it and the supported llama.cpp range.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from embellama._exceptions import LibraryError
from llamabuild import pins

__all__ = ["LORA_FUNCTIONS", "OPTIONAL_FUNCTIONS", "SUPPORTED", "Capabilities", "decide"]

# The pin and the oldest llama.cpp supported (tested in CI by ``nox -s "llama(version='0.3.27')"``):
# build_backend/llamabuild/pins.json, which ``python build_llama.py --update-pin VERSION`` rewrites.
PIN_VERSION = pins.SDIST_VERSION
PIN_COMMIT = pins.LLAMA_CPP_COMMIT[:12]
OLDEST_VERSION = pins.OLDEST_VERSION
OLDEST_COMMIT = pins.OLDEST_COMMIT
CPU_ATTENTION_TILE = 64  # ggml-cpu's GGML_FA_TILE_Q/_KV from the oldest to the pinned llama.cpp

SUPPORTED = (
    f"llama.cpp from the commit llama-cpp-python {OLDEST_VERSION} vendors ({OLDEST_COMMIT}) to the pinned one "
    f"of {PIN_VERSION} ({PIN_COMMIT}), and newer ones that keep the same C functions"
)

#: LoRA adapters: loading one and reading its metadata, then the setters (the newer array form, or the older
#: single-adapter ones).
LORA_FUNCTIONS = (
    "llama_adapter_lora_init",
    "llama_adapter_meta_val_str",
    "llama_adapter_meta_count",
    "llama_adapter_meta_key_by_index",
    "llama_adapter_meta_val_str_by_index",
    "llama_set_adapters_lora",
    "llama_set_adapter_lora",
    "llama_clear_adapter_lora",
    "llama_rm_adapter_lora",
)
_LORA_LOAD = LORA_FUNCTIONS[:5]

#: Functions embellama uses when they are there, each with a replacement (see the table above).
OPTIONAL_FUNCTIONS = frozenset(
    {
        "llama_version",
        "llama_model_ftype",
        "llama_model_n_embd_out",
        "llama_memory_clear",
        "llama_get_memory",
        "llama_kv_self_clear",
        "llama_n_ctx_seq",
        "llama_model_n_cls_out",
        "llama_model_is_recurrent",
        "ggml_backend_load_all_from_path",
        "ggml_backend_reg_count",
        "ggml_backend_reg_get",
        "ggml_backend_reg_name",
        *LORA_FUNCTIONS,
    }
)
# GGUF general.file_type uses llama.cpp's enum llama_ftype.
_FILE_TYPE_KEY = "general.file_type"


def _fields(ffi: Any, struct: str) -> frozenset[str]:
    try:
        return frozenset(name for name, _ in ffi.typeof(f"struct {struct}").fields or ())
    except ffi.error:
        return frozenset()


@dataclass(frozen=True)
class Capabilities:
    """The parts of llama.cpp's API that differ between the supported versions."""

    functions: frozenset[str]
    """The declared functions that the library exports."""
    model_fields: frozenset[str]
    """The fields of ``struct llama_model_params``."""
    context_fields: frozenset[str]
    """The fields of ``struct llama_context_params``."""

    @property
    def cpu_attention_tile(self) -> int:
        """Tokens per side of the blocks ggml's CPU flash attention computes or skips whole.

        ``GGML_FA_TILE_Q`` and ``GGML_FA_TILE_KV`` in ``ggml/src/ggml-cpu/common.h``: a build-time
        constant that no function reports, 64 in every llama.cpp of the supported window (the pin's
        and the oldest's sources are checked by ``tests/native/test_packing_tiles.py``). A library
        outside the window is refused at load, so this never guesses for one.
        """
        return CPU_ATTENTION_TILE

    def has(self, function: str) -> bool:
        """Whether the library has ``function``."""
        return function in self.functions

    @property
    def load_mode(self) -> bool:
        """Model loading is chosen by ``load_mode`` (an enum), not by ``use_mmap``/``use_mlock``."""
        return "load_mode" in self.model_fields

    def disable_mmap(self, params: Any, lib: Any) -> None:
        """Read the weights into memory instead of mapping the file."""
        if self.load_mode:
            params.load_mode = lib.LLAMA_LOAD_MODE_NONE
        else:
            params.use_mmap = False

    def set_flash_attn(self, cparams: Any, enabled: bool) -> None:
        """Flash attention on or off (``None`` in :class:`~embellama.llama.ContextParams` leaves the default)."""
        if "flash_attn_type" in self.context_fields:
            cparams.flash_attn_type = 1 if enabled else 0  # LLAMA_FLASH_ATTN_TYPE_ENABLED / _DISABLED
        else:
            cparams.flash_attn = bool(enabled)

    def clear_memory(self, lib: Any, ctx: Any, memory: Any, null: Any) -> None:
        """Forget every sequence of the context (``memory`` from :meth:`memory_of`)."""
        if memory is not None and memory != null:
            lib.llama_memory_clear(memory, True)
        elif self.has("llama_kv_self_clear"):
            lib.llama_kv_self_clear(ctx)

    def memory_of(self, lib: Any, ctx: Any) -> Any:
        """The context's memory handle, or ``None`` where llama.cpp has no memory API."""
        if self.has("llama_get_memory") and self.has("llama_memory_clear"):
            return lib.llama_get_memory(ctx)
        return None

    def n_embd(self, lib: Any, model: Any) -> int:
        """The size of the model's output vectors."""
        if self.has("llama_model_n_embd_out"):
            return int(lib.llama_model_n_embd_out(model))
        return int(lib.llama_model_n_embd(model))

    def n_cls_out(self, lib: Any, model: Any, metadata_value: Any) -> int:
        """Outputs of the classification head: llama.cpp's count, else the GGUF's label count, else 1."""
        if self.has("llama_model_n_cls_out"):
            return int(lib.llama_model_n_cls_out(model))
        arch = metadata_value("general.architecture") or ""
        labels = metadata_value(f"{arch}.classifier.output_labels")
        return max(1, labels.count(",") + 1) if labels else 1

    def model_ftype(self, lib: Any, ffi: Any, model: Any) -> int:
        """The weights' ``enum llama_ftype`` (-1 when neither llama.cpp nor the file says)."""
        if self.has("llama_model_ftype"):
            return int(lib.llama_model_ftype(model))
        buf = ffi.new("char[32]")
        n = lib.llama_model_meta_val_str(model, _FILE_TYPE_KEY.encode(), buf, 32)
        try:
            return int(ffi.string(buf, n).decode()) if n > 0 else -1
        except ValueError:
            return -1

    @property
    def lora(self) -> bool:
        """Whether LoRA adapters can be loaded and set on a context (either form of the setter)."""
        setter = self.has("llama_set_adapters_lora") or {"llama_set_adapter_lora", "llama_clear_adapter_lora"} <= (
            self.functions
        )
        return setter and all(self.has(f) for f in _LORA_LOAD)

    def check_lora(self, where: str) -> None:
        """Raise :class:`~embellama.LibraryError` naming the missing functions unless :attr:`lora`."""
        if self.lora:
            return
        wanted = [*_LORA_LOAD, "llama_set_adapters_lora"]
        missing = [f for f in wanted if not self.has(f)]
        raise LibraryError(
            f"{where}: the loaded libllama cannot use LoRA adapters (it lacks {', '.join(missing)}): use a llama.cpp "
            f"of the supported range ({SUPPORTED}), or open it with its own llama.h (header= or $EMBELLAMA_LLAMA_H)"
        )

    def set_adapters(self, lib: Any, ffi: Any, ctx: Any, adapters: list[Any], scales: list[float]) -> None:
        """Make ``adapters`` (with their ``scales``) the context's LoRA adapters; none: the base model alone."""
        if self.has("llama_set_adapters_lora"):
            n = len(adapters)
            if n == 0:  # llama.cpp asserts a NULL array has no adapters, so pass NULL for none
                rc = lib.llama_set_adapters_lora(ctx, ffi.NULL, 0, ffi.NULL)
            else:
                array = ffi.new("struct llama_adapter_lora *[]", adapters)
                weights = ffi.new("float[]", [float(s) for s in scales])
                rc = lib.llama_set_adapters_lora(ctx, array, n, weights)
        else:  # older llama.cpp: one adapter at a time
            lib.llama_clear_adapter_lora(ctx)
            rc = 0
            for adapter, scale in zip(adapters, scales, strict=True):
                rc = rc or lib.llama_set_adapter_lora(ctx, adapter, float(scale))
        if rc != 0:
            raise LibraryError(f"llama.cpp could not set the LoRA adapters on the context (return code {int(rc)})")

    def version(self, lib: Any, ffi: Any, fallback: str | None) -> str:
        """``llama_version()``, else ``fallback`` (the build's commit), else "unknown"."""
        if self.has("llama_version"):
            return str(ffi.string(lib.llama_version()).decode())
        return fallback or "unknown"


def decide(ffi: Any, functions: Iterable[str], needed: Iterable[str], where: str) -> Capabilities:
    """The :class:`Capabilities` of a library exporting ``functions`` (declared and resolved).

    ``needed`` are the functions embellama calls (the generator's list); each one not in
    :data:`OPTIONAL_FUNCTIONS` must be there, else :class:`~embellama.LibraryError` names
    the missing ones, ``where`` (the library) and the supported range.
    """
    have = frozenset(functions)
    missing = sorted(set(needed) - have - OPTIONAL_FUNCTIONS)
    if missing:
        raise LibraryError(
            f"{where} lacks {', '.join(missing)}, which embellama needs: it is a llama.cpp outside the "
            f"supported range ({SUPPORTED})"
        )
    if not ({"llama_get_memory", "llama_memory_clear"} <= have or "llama_kv_self_clear" in have):
        raise LibraryError(f"{where} has no way to clear a context's memory, which embellama needs ({SUPPORTED})")
    caps = Capabilities(have, _fields(ffi, "llama_model_params"), _fields(ffi, "llama_context_params"))
    if not ({"load_mode", "use_mmap"} & caps.model_fields):
        raise LibraryError(f"{where}: struct llama_model_params has neither load_mode nor use_mmap ({SUPPORTED})")
    if not ({"flash_attn_type", "flash_attn"} & caps.context_fields):
        raise LibraryError(f"{where}: struct llama_context_params has no flash attention setting ({SUPPORTED})")
    return caps
