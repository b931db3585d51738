# SPDX-License-Identifier: Apache-2.0
"""Low-level classes over the binding: :class:`Model`, :class:`Context`, :class:`Batch`.

Each owns one C object and frees it exactly once: ``close()``, a ``with`` block, or,
as a safety net, the garbage collector (``ffi.gc``). Use after close raises
:class:`~embellama.ResourceClosedError`.

A :class:`Context` belongs to the thread that created it; a call from any other thread
raises :class:`~embellama.ThreadAffinityError`. Everything that would make llama.cpp
abort the process (a ``GGML_ASSERT``) is checked here first and raised as an exception.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
import threading
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from embellama._exceptions import (
    ConfigurationError,
    EmbeddingError,
    InvalidInputError,
    ModelLoadError,
    ModelNotFoundError,
    ResourceClosedError,
    ThreadAffinityError,
)
from embellama._native import Library, enum_names, get_library

__all__ = ["Batch", "Context", "ContextParams", "LoraAdapter", "Model", "ModelLoadOptions", "SpecialTokens", "quantize"]

logger = logging.getLogger("embellama")


@functools.cache
def _pooling_names() -> dict[int, str]:
    """llama.cpp's ``enum llama_pooling_type``: code -> name (-1 "unspecified", 0 "none", 1 "mean", 2 "cls" ...)."""
    return {code: name for name, code in enum_names("llama_pooling_type", "LLAMA_POOLING_TYPE_").items()}


@functools.cache
def _rope_codes() -> dict[str, int]:
    """llama.cpp's ``enum llama_rope_scaling_type`` by name ("unspecified" -1, "none" 0, "linear" 1, "yarn" 2)."""
    names = enum_names("llama_rope_scaling_type", "LLAMA_ROPE_SCALING_TYPE_")
    return {name: code for name, code in names.items() if name != "max_value"}


@functools.cache
def _pooling_codes() -> dict[str, int]:
    return {name: code for code, name in _pooling_names().items()}


@functools.cache
def _split_modes() -> dict[str, int]:
    """llama.cpp's ``llama_split_mode``: how layers are spread over several GPUs."""
    return enum_names("llama_split_mode", "LLAMA_SPLIT_MODE_")


def __getattr__(name: str) -> Any:
    """``POOLING_NAMES`` and ``_split_modes()``, read from the C declarations on first use, not at import."""
    if name == "POOLING_NAMES":
        return _pooling_names()
    if name == "SPLIT_MODES":
        return _split_modes()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class SpecialTokens:
    """The special tokens a vocabulary wraps around text (ids are -1, llama.h's ``LLAMA_TOKEN_NULL``, when absent).

    Parameters
    ----------
    bos, eos, sep, pad : int
        Token ids of the beginning-of-sequence, end-of-sequence, separator and padding tokens.
    add_bos, add_eos, add_sep : bool
        Whether the vocabulary adds BOS, EOS and SEP to a text.
    prefix : tuple of int
        Tokens ``tokenize(add_special=True)`` puts before the text.
    suffix : tuple of int
        Tokens ``tokenize(add_special=True)`` puts after the text.
    """

    bos: int
    eos: int
    sep: int
    pad: int
    add_bos: bool
    add_eos: bool
    add_sep: bool
    prefix: tuple[int, ...]
    suffix: tuple[int, ...]


@dataclass(frozen=True)
class ModelLoadOptions:
    """How a :class:`Model` was asked to load (the GPU placement of its layers).

    Parameters
    ----------
    n_gpu_layers : int, optional
        Layers to offload to GPUs: -1 all, 0 none (CPU builds ignore it).
    main_gpu : int, optional
        With ``split_mode="none"``: index of the GPU that holds the model (-1: none).
    split_mode : str, optional
        Over several GPUs: "none" (main_gpu only), "layer", "row" or "tensor".
    tensor_split : tuple of float, optional
        Share of the model per GPU, e.g. (3, 1); None splits by free memory.
    vocab_only : bool, optional
        Load the vocabulary only (tokenization, no weights).
    use_mmap : bool, optional
        Memory-map the file.
    """

    n_gpu_layers: int = -1
    main_gpu: int = 0
    split_mode: str = "layer"
    tensor_split: tuple[float, ...] | None = None
    vocab_only: bool = False
    use_mmap: bool = True


def _gpu_devices(library: Library) -> list[dict[str, Any]]:
    return [d for d in library.devices() if d["type"] in ("GPU", "IGPU")]


def _model_params(library: Library, opts: ModelLoadOptions, name: str) -> tuple[Any, Any]:
    """A ``llama_model_params`` for ``opts`` and the C buffers it points to (keep them alive)."""
    ffi, lib = library.ffi, library.lib
    if opts.split_mode not in _split_modes():
        raise ConfigurationError(
            f"model {name!r}: unknown split_mode {opts.split_mode!r}; expected one of: {', '.join(_split_modes())}"
        )
    if isinstance(opts.n_gpu_layers, bool) or not isinstance(opts.n_gpu_layers, int) or opts.n_gpu_layers < -1:
        raise ConfigurationError(f"model {name!r}: n_gpu_layers must be an int >= -1, got {opts.n_gpu_layers!r}")
    gpus = _gpu_devices(library)
    if isinstance(opts.main_gpu, bool) or not isinstance(opts.main_gpu, int) or opts.main_gpu < -1:
        raise ConfigurationError(f"model {name!r}: main_gpu must be an int >= -1, got {opts.main_gpu!r}")
    if opts.split_mode == "none" and gpus and opts.main_gpu >= len(gpus):
        names = ", ".join(d["name"] for d in gpus)
        raise ConfigurationError(f"model {name!r}: main_gpu={opts.main_gpu} but the GPUs are {len(gpus)}: {names}")
    params = lib.llama_model_default_params()
    params.n_gpu_layers = opts.n_gpu_layers
    params.vocab_only = bool(opts.vocab_only)
    if library.has_amx_kernels:
        params.use_extra_bufts = False  # keeps weights out of the AMX buffer type (see Library)
    if not opts.use_mmap:
        library.caps.disable_mmap(params, lib)
    keep = None
    if opts.tensor_split is not None:
        shares = opts.tensor_split
        n_max = library.limits.max_devices
        if not shares or len(shares) > n_max or any(not math.isfinite(x) or x < 0 for x in shares) or sum(shares) <= 0:
            raise ConfigurationError(
                f"model {name!r}: tensor_split must be 1 to {n_max} non-negative shares with a positive sum, "
                f"got {shares!r}"
            )
        keep = ffi.new("float[]", list(shares) + [0.0] * (n_max - len(shares)))
    if gpus:
        # Without GPUs there is nothing to place and the GPU options are ignored
        # (llama.cpp itself would refuse split_mode "tensor" then).
        params.main_gpu = opts.main_gpu
        params.split_mode = _split_modes()[opts.split_mode]
        if keep is not None:
            params.tensor_split = keep
    return params, keep


class Model:
    """A GGUF model loaded by llama.cpp.

    A model is read-only once loaded and may be shared by contexts, but each context
    stays on its own thread. The weights are freed when the model is closed and the
    last context made from it is gone.

    Parameters
    ----------
    path : str or os.PathLike
        The GGUF file.
    n_gpu_layers, main_gpu, split_mode, tensor_split, vocab_only, use_mmap
        See :class:`ModelLoadOptions` (kept as ``load_options``).
    name : str, optional
        Name used in errors; default: the file's stem.
    library : Library, optional
        The libllama to use; default: :func:`embellama.get_library`.

    Raises
    ------
    ModelNotFoundError
        ``path`` is not a file.
    ModelLoadError
        Not a GGUF file, or llama.cpp could not load it.
    ConfigurationError
        A GPU option out of range (e.g. a ``main_gpu`` beyond the GPUs present).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        n_gpu_layers: int = -1,
        main_gpu: int = 0,
        split_mode: str = "layer",
        tensor_split: Sequence[float] | None = None,
        vocab_only: bool = False,
        use_mmap: bool = True,
        name: str | None = None,
        library: Library | None = None,
    ) -> None:
        self._lib = library or get_library()
        ffi, lib = self._lib.ffi, self._lib.lib
        self.path = Path(path)
        self.name = name or self.path.stem
        if not self.path.is_file():
            raise ModelNotFoundError(str(self.path), self.name)
        if not _looks_like_gguf(self.path):
            raise ModelLoadError(str(self.path), "not a GGUF file (bad magic)", self.name)
        self.load_options = ModelLoadOptions(
            n_gpu_layers=n_gpu_layers,
            main_gpu=main_gpu,
            split_mode=split_mode,
            tensor_split=None if tensor_split is None else tuple(float(x) for x in tensor_split),
            vocab_only=vocab_only,
            use_mmap=use_mmap,
        )
        params, keep = _model_params(self._lib, self.load_options, self.name)
        raw = lib.llama_model_load_from_file(os.fsencode(self.path), params)
        del keep  # llama.cpp copies tensor_split while loading
        if raw == ffi.NULL:
            raise ModelLoadError(
                str(self.path),
                "llama.cpp could not load it (see the 'embellama.llama_cpp' log for details)",
                self.name,
            )
        self._ptr: Any = ffi.gc(raw, lib.llama_model_free)
        self._vocab = lib.llama_model_get_vocab(raw)
        self._special: SpecialTokens | None = None
        # BERT-uncased tokenizers (Hugging Face's BasicTokenizer) decompose text (NFD)
        # and drop nonspacing marks before WordPiece. llama.cpp's WPM lowercases but
        # does not decompose Hangul syllables, so do that step here, as HF does.
        self._strip_accents = (
            self.vocab_type == "wpm" and self.metadata_value("tokenizer.ggml.normalizer.lowercase") == "true"
        )

    # -- lifetime --------------------------------------------------------------

    def close(self) -> None:
        """Release the model; the weights go once no context uses them. Idempotent."""
        self._ptr = None

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._ptr is None

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _handle(self) -> Any:
        if self._ptr is None:
            raise ResourceClosedError(f"model {self.name!r} is closed")
        return self._ptr

    # -- metadata --------------------------------------------------------------

    @property
    def n_embd(self) -> int:
        """Size of the output embedding vectors."""
        return self._lib.caps.n_embd(self._lib.lib, self._handle())

    @property
    def n_cls_out(self) -> int:
        """Outputs of the classification head (a reranker's scores per pair; llama.cpp says 1 for other models)."""
        return self._lib.caps.n_cls_out(self._lib.lib, self._handle(), self.metadata_value)

    @property
    def n_ctx_train(self) -> int:
        """The context length the model was trained with."""
        return int(self._lib.lib.llama_model_n_ctx_train(self._handle()))

    @property
    def has_rope(self) -> bool:
        """Whether the model's positions are rotary (its GGUF has ``<arch>.rope.*`` keys), so that ``n_ctx`` may
        exceed the training context; a learned position table cannot."""
        arch = self.architecture
        return any(self.metadata_value(f"{arch}.rope.{key}") is not None for key in ("freq_base", "dimension_count"))

    @property
    def n_layer(self) -> int:
        """Number of layers."""
        return int(self._lib.lib.llama_model_n_layer(self._handle()))

    @property
    def size(self) -> int:
        """Bytes of all tensors."""
        return int(self._lib.lib.llama_model_size(self._handle()))

    @property
    def ftype(self) -> int:
        """The weights' type as llama.cpp's ``enum llama_ftype`` (0 F32, 1 F16, 7 Q8_0, 32 BF16 …)."""
        code = self._lib.caps.model_ftype(self._lib.lib, self._lib.ffi, self._handle())
        return code if code < 0 else code & ~1024  # without LLAMA_FTYPE_GUESSED

    @property
    def n_params(self) -> int:
        """Number of parameters."""
        return int(self._lib.lib.llama_model_n_params(self._handle()))

    @property
    def n_vocab(self) -> int:
        """Number of tokens in the vocabulary."""
        self._handle()
        return int(self._lib.lib.llama_vocab_n_tokens(self._vocab))

    @property
    def vocab_type(self) -> str:
        """The tokenizer family: "spm", "bpe", "wpm" (BERT), "ugm" (T5), ..."""
        self._handle()
        kinds = ["none", "spm", "bpe", "wpm", "ugm", "rwkv", "plamo2", "test"]
        value = int(self._lib.lib.llama_vocab_type(self._vocab))
        return kinds[value] if 0 <= value < len(kinds) else str(value)

    @property
    def architecture(self) -> str:
        """``general.architecture`` from the GGUF metadata (e.g. "bert", "llama")."""
        return self.metadata_value("general.architecture") or "unknown"

    @property
    def description(self) -> str:
        """llama.cpp's one-line description (architecture, size, type)."""
        buf = self._lib.ffi.new("char[256]")
        n = self._lib.lib.llama_model_desc(self._handle(), buf, 256)
        return self._lib.ffi.string(buf, max(n, 0)).decode("utf-8", "replace")

    @property
    def has_encoder(self) -> bool:
        """True for encoder-decoder models (T5); BERT-like models report False."""
        return bool(self._lib.lib.llama_model_has_encoder(self._handle()))

    @property
    def has_decoder(self) -> bool:
        """True when the model has a decoder stack (BERT counts as one in llama.cpp)."""
        return bool(self._lib.lib.llama_model_has_decoder(self._handle()))

    @property
    def pooling_type(self) -> str | None:
        """The pooling named by ``<arch>.pooling_type`` in the GGUF metadata, if any."""
        value = self.metadata_value(f"{self.architecture}.pooling_type")
        if value is None:
            return None
        try:
            return _pooling_names().get(int(value), value)
        except ValueError:
            return value

    @property
    def is_causal(self) -> bool:
        """Whether llama.cpp runs this model with causal attention.

        As llama.cpp decides it: ``<arch>.attention.causal`` from the metadata (default
        true), except for the architectures whose loader forces bidirectional attention.
        """
        if self.architecture in _FORCED_NON_CAUSAL_ARCHS:
            return False
        value = self.metadata_value(f"{self.architecture}.attention.causal")
        return value is None or value.lower() == "true"

    def metadata_value(self, key: str) -> str | None:
        """One GGUF metadata value as text, or None when the key is absent.

        Parameters
        ----------
        key : str
            The metadata key, e.g. ``"general.name"``.

        Returns
        -------
        str or None
            The value as llama.cpp prints it.
        """
        return _meta_value(self._lib.ffi, self._lib.lib.llama_model_meta_val_str, self._handle(), key)

    def metadata(self) -> dict[str, str]:
        """All GGUF metadata as text (large arrays are summarised by llama.cpp).

        Returns
        -------
        dict of str to str
            Key to value, in the file's order.
        """
        lib = self._lib.lib
        functions = (
            lib.llama_model_meta_count,
            lib.llama_model_meta_key_by_index,
            lib.llama_model_meta_val_str_by_index,
        )
        return _meta_all(self._lib.ffi, functions, self._handle())

    def load_lora(self, path: str | os.PathLike[str], *, name: str | None = None) -> LoraAdapter:
        """Load a LoRA adapter of this model (see :class:`LoraAdapter`).

        Parameters
        ----------
        path : str or os.PathLike
            The adapter's GGUF file (``convert_lora_to_gguf.py``'s output).
        name : str, optional
            Name used in errors; default: the file's stem.

        Returns
        -------
        LoraAdapter
            The adapter, owned by this model.

        Raises
        ------
        ModelNotFoundError, ModelLoadError, LibraryError
            As for :class:`LoraAdapter`.
        """
        return LoraAdapter(self, path, name=name)

    # -- tokens ----------------------------------------------------------------

    @property
    def special_tokens(self) -> SpecialTokens:
        """BOS/EOS/SEP ids, whether the vocabulary adds them, and what it adds where."""
        if self._special is None:
            lib, vocab = self._lib.lib, self._vocab
            self._handle()
            bare = self.tokenize("a", add_special=False)
            full = self.tokenize("a", add_special=True)
            start = _find_subsequence(full, bare)
            prefix = tuple(int(t) for t in full[:start]) if start >= 0 else ()
            suffix = tuple(int(t) for t in full[start + len(bare) :]) if start >= 0 else ()
            self._special = SpecialTokens(
                bos=int(lib.llama_vocab_bos(vocab)),
                eos=int(lib.llama_vocab_eos(vocab)),
                sep=int(lib.llama_vocab_sep(vocab)),
                pad=int(lib.llama_vocab_pad(vocab)),
                add_bos=bool(lib.llama_vocab_get_add_bos(vocab)),
                add_eos=bool(lib.llama_vocab_get_add_eos(vocab)),
                add_sep=bool(lib.llama_vocab_get_add_sep(vocab)),
                prefix=prefix,
                suffix=suffix,
            )
        return self._special

    def tokenize(
        self, text: str | bytes, *, add_special: bool = True, parse_special: bool = False
    ) -> npt.NDArray[np.int32]:
        """Token ids of ``text`` (UTF-8).

        Parameters
        ----------
        text : str or bytes
            The text (bytes: already UTF-8).
        add_special : bool, optional
            Add what the vocabulary asks for (BERT: ``[CLS] … [SEP]``; llama: BOS).
        parse_special : bool, optional
            Turn text like ``"<s>"`` into control tokens; leave it off for user text.

        Returns
        -------
        numpy.ndarray
            int32 token ids, special tokens included when ``add_special`` is set.

        Raises
        ------
        InvalidInputError
            Not a str or bytes, not valid Unicode, or too large for llama.cpp.
        ResourceClosedError
            The model is closed.
        """
        ffi, lib = self._lib.ffi, self._lib.lib
        self._handle()
        if isinstance(text, str):
            if self._strip_accents and not text.isascii():
                text = _strip_accents(text)
            try:
                data = text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise InvalidInputError(f"text is not valid Unicode ({exc.reason})", self.name) from exc
        elif isinstance(text, bytes):
            data = text
        else:
            raise InvalidInputError(f"expected str, got {type(text).__name__}", self.name)
        if len(data) >= 2**31 - 16:
            raise InvalidInputError(f"text of {len(data)} bytes is too large", self.name)
        capacity = len(data) + 8
        while True:
            out = np.empty(capacity, dtype=np.int32)
            n = lib.llama_tokenize(
                self._vocab,
                data,
                len(data),
                ffi.from_buffer("llama_token[]", out),
                capacity,
                add_special,
                parse_special,
            )
            if n >= 0:
                return out[:n].copy() if n < capacity // 2 else out[:n]
            if n == -(2**31):
                raise InvalidInputError("text produces too many tokens", self.name)
            capacity = -n

    def detokenize(self, tokens: npt.ArrayLike, *, remove_special: bool = False) -> str:
        """Text of token ids.

        Parameters
        ----------
        tokens : array_like of int
            Token ids.
        remove_special : bool, optional
            Drop BOS, EOS and the like.

        Returns
        -------
        str
            The text (invalid UTF-8 replaced).

        Raises
        ------
        InvalidInputError
            An id outside the vocabulary.
        """
        ffi, lib = self._lib.ffi, self._lib.lib
        self._handle()
        ids = np.ascontiguousarray(tokens, dtype=np.int32)
        n_vocab = self.n_vocab
        if ids.size and (ids.min() < 0 or ids.max() >= n_vocab):
            raise InvalidInputError(f"token ids must lie in [0, {n_vocab})", self.name)
        size = max(16, ids.size * 8)
        while True:
            buf = ffi.new("char[]", size)
            n = lib.llama_detokenize(
                self._vocab, ffi.from_buffer("llama_token[]", ids), ids.size, buf, size, remove_special, False
            )
            if n >= 0:
                return ffi.string(buf, n).decode("utf-8", "replace")
            size = -n + 1

    def token_text(self, token: int) -> str:
        """The vocabulary's text for one token id.

        Parameters
        ----------
        token : int
            The id.

        Returns
        -------
        str
            Its text as the vocabulary stores it (e.g. ``"##ing"``).

        Raises
        ------
        InvalidInputError
            An id outside the vocabulary.
        """
        if not 0 <= token < self.n_vocab:
            raise InvalidInputError(f"token id {token} is outside [0, {self.n_vocab})", self.name)
        text = self._lib.lib.llama_vocab_get_text(self._vocab, int(token))
        return self._lib.ffi.string(text).decode("utf-8", "replace")

    def __repr__(self) -> str:
        state = "closed" if self.closed else self.description
        return f"<Model {self.name!r} {state}>"


def _meta_value(ffi: Any, fn: Any, handle: Any, key: str) -> str | None:
    """One metadata value read with ``fn`` (llama.cpp's ``*_meta_val_str``), None when absent."""
    size = 256
    while True:
        buf = ffi.new("char[]", size)
        n = fn(handle, key.encode(), buf, size)
        if n < 0:
            return None
        if n < size:
            return str(ffi.string(buf, n).decode("utf-8", "replace"))
        size = n + 1


def _meta_all(ffi: Any, functions: tuple[Any, Any, Any], handle: Any) -> dict[str, str]:
    """Every metadata value, with llama.cpp's ``*_meta_count``, ``*_meta_key_by_index``, ``*_val_str_by_index``."""
    count, key_at, value_at = functions
    out = {}
    buf = ffi.new("char[]", 4096)
    for i in range(count(handle)):
        n = key_at(handle, i, buf, 4096)
        key = ffi.string(buf, max(n, 0)).decode("utf-8", "replace")
        n = value_at(handle, i, buf, 4096)
        out[key] = ffi.string(buf, max(min(n, 4095), 0)).decode("utf-8", "replace")
    return out


class LoraAdapter:
    """A LoRA adapter loaded for one :class:`Model` (llama.cpp's ``llama_adapter_lora``).

    The adapter belongs to its model: llama.cpp frees a model's adapters with the model, so an adapter is never
    freed on its own (a context may still use it); it keeps its model's weights alive while it is referenced.
    Set it on a context with :meth:`Context.set_adapters`. Load adapters before creating the model's contexts:
    llama.cpp sizes a context's compute graph for the adapters its model has then.

    Parameters
    ----------
    model : Model
        The base model the adapter was made for.
    path : str or os.PathLike
        The adapter's GGUF file (``general.type`` ``adapter``, ``adapter.type`` ``lora``).
    name : str, optional
        Name used in errors; default: the file's stem.

    Raises
    ------
    ModelNotFoundError
        ``path`` is not a file.
    ModelLoadError
        Not a GGUF file, or llama.cpp refused it (another architecture, a tensor the model lacks or of another
        shape: the reason is in the ``embellama.llama_cpp`` log).
    LibraryError
        The loaded libllama has no LoRA functions.
    """

    def __init__(self, model: Model, path: str | os.PathLike[str], *, name: str | None = None) -> None:
        library = model._lib
        library.caps.check_lora(f"model {model.name!r}")
        self.model = model
        self.path = Path(path)
        self.name = name or self.path.stem
        if not self.path.is_file():
            raise ModelNotFoundError(str(self.path), model.name)
        if not _looks_like_gguf(self.path):
            raise ModelLoadError(str(self.path), "not a GGUF file (bad magic)", model.name)
        self._model_ptr = model._handle()  # the model (and so this adapter) lives while this object does
        raw = library.lib.llama_adapter_lora_init(self._model_ptr, os.fsencode(self.path))
        if raw == library.ffi.NULL:
            raise ModelLoadError(
                str(self.path),
                "llama.cpp could not load it as a LoRA adapter of this model (see the 'embellama.llama_cpp' log)",
                model.name,
            )
        self._ptr: Any = raw

    def metadata_value(self, key: str) -> str | None:
        """One GGUF metadata value of the adapter as text, None when absent.

        Parameters
        ----------
        key : str
            The metadata key, e.g. ``"adapter.lora.task_name"``.

        Returns
        -------
        str or None
            The value as llama.cpp prints it.
        """
        return _meta_value(self.model._lib.ffi, self.model._lib.lib.llama_adapter_meta_val_str, self._ptr, key)

    def metadata(self) -> dict[str, str]:
        """The adapter's GGUF metadata as text (scalars only: llama.cpp keeps no arrays of an adapter).

        Returns
        -------
        dict of str to str
            Key to value.
        """
        lib = self.model._lib.lib
        functions = (
            lib.llama_adapter_meta_count,
            lib.llama_adapter_meta_key_by_index,
            lib.llama_adapter_meta_val_str_by_index,
        )
        return _meta_all(self.model._lib.ffi, functions, self._ptr)

    def __repr__(self) -> str:
        return f"<LoraAdapter {self.name!r} of {self.model.name!r}>"


# Architectures whose llama.cpp loader sets causal_attn = false whatever the metadata says.
_FORCED_NON_CAUSAL_ARCHS = frozenset({"gemma-embedding", "rnd1", "dream", "llada", "llada-moe"})


_MN_TABLE: dict[int, None] | None = None


def _strip_accents(text: str) -> str:
    """NFD, then drop every nonspacing mark (category Mn), at C speed via str.translate."""
    global _MN_TABLE
    if _MN_TABLE is None:
        _MN_TABLE = {cp: None for cp in range(0x110000) if unicodedata.category(chr(cp)) == "Mn"}
    return unicodedata.normalize("NFD", text).translate(_MN_TABLE)


def _looks_like_gguf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False


def _find_subsequence(haystack: npt.NDArray[np.int32], needle: npt.NDArray[np.int32]) -> int:
    n = len(needle)
    for start in range(len(haystack) - n + 1):
        if np.array_equal(haystack[start : start + n], needle):
            return start
    return -1


@dataclass(frozen=True)
class ContextParams:
    """What a :class:`Context` is created with (validated before reaching C).

    Parameters
    ----------
    n_ctx : int
        Tokens of context (per sequence, at most the model's training context).
    n_batch, n_ubatch : int
        Most tokens per call, and per micro-batch computed at once.
    n_seq_max : int
        Most sequences per call; it must divide the micro-batch llama.cpp reserves.
    n_threads : int
        CPU threads (at most 512).
    pooling : str, optional
        llama.cpp pooling: "unspecified" (the model's), "none", "mean", "cls", "last" or "rank" (a
        classification head's scores).
    flash_attn : bool, optional
        None lets llama.cpp decide (on for the CPU).
    offload_kqv : bool, optional
        Keep the KV cache and attention on the GPU with the offloaded layers.
    embeddings : bool, optional
        Compute embeddings (what embellama is for).
    rope_scaling : str, optional
        "unspecified" (the model's), "none", "linear" or "yarn". With rope scaling, or a model whose positions are
        rotary (its GGUF has rope keys), ``n_ctx`` may exceed the training context (with a warning).
    rope_freq_base, rope_freq_scale, yarn_ext_factor, yarn_attn_factor, yarn_beta_fast, yarn_beta_slow : float, optional
        llama.cpp's rope and YaRN settings; None keeps ``llama_context_default_params()``' value (the model's).
    yarn_orig_ctx : int, optional
        YaRN's original context; None: the model's.
    """

    n_ctx: int
    n_batch: int
    n_ubatch: int
    n_seq_max: int
    n_threads: int
    pooling: str = "unspecified"
    flash_attn: bool | None = None
    offload_kqv: bool = True
    embeddings: bool = True
    rope_scaling: str = "unspecified"
    rope_freq_base: float | None = None
    rope_freq_scale: float | None = None
    yarn_ext_factor: float | None = None
    yarn_attn_factor: float | None = None
    yarn_beta_fast: float | None = None
    yarn_beta_slow: float | None = None
    yarn_orig_ctx: int | None = None


_ROPE_FLOATS = (
    "rope_freq_base",
    "rope_freq_scale",
    "yarn_ext_factor",
    "yarn_attn_factor",
    "yarn_beta_fast",
    "yarn_beta_slow",
)


def _context_params(library: Library, params: ContextParams) -> Any:
    """The ``llama_context_params`` for ``params`` (already validated)."""
    cparams = library.lib.llama_context_default_params()
    cparams.n_ctx = params.n_ctx
    cparams.n_batch = params.n_batch
    cparams.n_ubatch = params.n_ubatch
    cparams.n_seq_max = params.n_seq_max
    cparams.n_threads = params.n_threads
    cparams.n_threads_batch = params.n_threads
    cparams.embeddings = params.embeddings
    cparams.pooling_type = _pooling_codes()[params.pooling]
    cparams.kv_unified = True
    if params.flash_attn is not None:
        library.caps.set_flash_attn(cparams, params.flash_attn)
    cparams.offload_kqv = bool(params.offload_kqv)
    cparams.rope_scaling_type = _rope_codes()[params.rope_scaling]
    for key in _ROPE_FLOATS:  # in llama_context_params across the supported versions (compat.py's window)
        if (value := getattr(params, key)) is not None:
            setattr(cparams, key, float(value))
    if params.yarn_orig_ctx is not None:
        cparams.yarn_orig_ctx = params.yarn_orig_ctx
    return cparams


class Context:
    """A llama.cpp context: the working memory for computing embeddings.

    Not thread-safe: only the thread that created it may use it.

    Parameters
    ----------
    model : Model
        The loaded model (kept alive while the context lives).
    params : ContextParams
        Its settings, checked against the model and the library first.

    Raises
    ------
    ConfigurationError
        A setting llama.cpp would abort the process on, or llama.cpp could not create the context.
    ThreadAffinityError
        Any later use from another thread than the creating one.
    """

    def __init__(self, model: Model, params: ContextParams) -> None:
        self._lib = model._lib
        ffi, lib = self._lib.ffi, self._lib.lib
        self.model = model
        self.params = params
        self._owner = threading.get_ident()
        _validate_context_params(params, model, self._lib.max_parallel_sequences())
        cparams = _context_params(self._lib, params)
        model_ptr = model._handle()
        raw = lib.llama_init_from_model(model_ptr, cparams)
        if raw == ffi.NULL:
            raise ConfigurationError(
                f"model {model.name!r}: llama.cpp could not create a context with {params} "
                "(see the 'embellama.llama_cpp' log)"
            )
        free = lib.llama_free

        def destroy(ptr: Any, _keep_model: Any = model_ptr) -> None:
            free(ptr)  # the model pointer stays referenced until the context is freed

        self._ptr: Any = ffi.gc(raw, destroy)
        self.n_ctx = int(lib.llama_n_ctx(raw))
        self.n_batch = int(lib.llama_n_batch(raw))
        self.n_ubatch = int(lib.llama_n_ubatch(raw))
        self.n_seq_max = int(lib.llama_n_seq_max(raw))
        self.pooling = _pooling_names().get(int(lib.llama_pooling_type(raw)), "unknown")
        # With rank pooling llama.cpp returns the classification head's n_cls_out scores per sequence.
        self.n_embd = model.n_cls_out if self.pooling == "rank" else model.n_embd
        self._memory = self._lib.caps.memory_of(lib, raw)
        self._use_encode = model.has_encoder and not model.has_decoder
        self._last_n_seqs = 0
        self._adapters: tuple[tuple[LoraAdapter, float], ...] = ()

    # -- lifetime and ownership --------------------------------------------------

    def _handle(self) -> Any:
        if threading.get_ident() != self._owner:
            raise ThreadAffinityError(
                f"context of model {self.model.name!r} belongs to thread {self._owner}; "
                f"it was used from thread {threading.get_ident()}. Give each thread its own "
                "context (or use EmbeddingEngine, which does)"
            )
        if self._ptr is None:
            raise ResourceClosedError(f"context of model {self.model.name!r} is closed")
        return self._ptr

    @property
    def owner_thread(self) -> int:
        """``threading.get_ident()`` of the thread that owns this context."""
        return self._owner

    def close(self) -> None:
        """Free the context now (only from its own thread). Idempotent."""
        if self._ptr is None:
            return
        ptr = self._handle()
        self._ptr = None
        self._lib.ffi.release(ptr)

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._ptr is None

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- LoRA adapters ----------------------------------------------------------

    @property
    def adapters(self) -> tuple[tuple[LoraAdapter, float], ...]:
        """The LoRA adapters set on this context, with their scales (empty: the base model)."""
        return self._adapters

    def set_adapters(self, adapters: Sequence[LoraAdapter], scales: Sequence[float] | None = None) -> bool:
        """Make ``adapters`` the context's LoRA adapters (replacing any set before); none: the base model.

        Setting the adapters already set does nothing (no call into llama.cpp).

        Parameters
        ----------
        adapters : sequence of LoraAdapter
            Adapters of this context's model.
        scales : sequence of float, optional
            One scale per adapter (default 1.0 each); llama.cpp multiplies it by the adapter's alpha / rank.

        Returns
        -------
        bool
            Whether the adapters changed.

        Raises
        ------
        ConfigurationError
            An adapter of another model, or a scale that is not a finite number, or one scale per adapter missing.
        ThreadAffinityError, ResourceClosedError
            Used from another thread, or after :meth:`close`.
        """
        ptr = self._handle()
        chosen = list(adapters)
        weights = [1.0] * len(chosen) if scales is None else list(scales)
        if len(weights) != len(chosen):
            raise ConfigurationError(f"model {self.model.name!r}: {len(chosen)} adapters but {len(weights)} scales")
        for adapter, scale in zip(chosen, weights, strict=True):
            if not isinstance(adapter, LoraAdapter) or adapter._model_ptr != self.model._handle():
                raise ConfigurationError(f"model {self.model.name!r}: {adapter!r} is not an adapter of this model")
            if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
                raise ConfigurationError(
                    f"model {self.model.name!r}: a LoRA scale must be a finite number, got {scale!r}"
                )
        wanted = tuple((adapter, float(scale)) for adapter, scale in zip(chosen, weights, strict=True))
        if wanted == self._adapters:
            return False
        self._lib.caps.set_adapters(
            self._lib.lib, self._lib.ffi, ptr, [a._ptr for a, _ in wanted], [w for _, w in wanted]
        )
        self._adapters = wanted
        return True

    # -- computing ------------------------------------------------------------

    def process(self, batch: Batch) -> None:
        """Run the model over every sequence in ``batch`` (the memory is cleared first).

        Parameters
        ----------
        batch : Batch
            Filled with :meth:`Batch.set_sequences` or :meth:`Batch.fill`.

        Raises
        ------
        InvalidInputError
            The batch is empty or exceeds the context's tokens, sequences or ``n_ctx``.
        EmbeddingError
            llama.cpp failed (its return code is in the message).
        ThreadAffinityError, ResourceClosedError
            Used from another thread, or after :meth:`close`.
        """
        ptr = self._handle()
        lib = self._lib.lib
        n = batch.n_tokens
        if n <= 0:
            raise InvalidInputError("the batch is empty", self.model.name)
        # These would be GGML_ASSERTs (process abort) inside llama.cpp.
        if n > self.n_batch or n > self.n_ubatch:
            raise InvalidInputError(
                f"batch of {n} tokens exceeds the context's n_batch={self.n_batch}/n_ubatch={self.n_ubatch}",
                self.model.name,
            )
        if batch.n_seqs > self.n_seq_max:
            raise InvalidInputError(
                f"batch holds {batch.n_seqs} sequences; the context allows {self.n_seq_max}",
                self.model.name,
            )
        if batch.max_seq_len > self.n_ctx:
            raise InvalidInputError(
                f"a sequence of {batch.max_seq_len} tokens exceeds n_ctx={self.n_ctx}", self.model.name
            )
        self._lib.caps.clear_memory(lib, ptr, self._memory, self._lib.ffi.NULL)
        fn = lib.llama_encode if self._use_encode else lib.llama_decode
        self._last_n_seqs = 0
        rc = fn(ptr, batch._struct[0])
        if rc != 0:
            raise EmbeddingError(
                "llama.cpp failed to process the batch", self.model.name, text_length=n, return_code=int(rc)
            )
        self._last_n_seqs = batch.n_seqs

    def sequence_embeddings(self, n_seqs: int) -> npt.NDArray[np.float32]:
        """Pooled embeddings of the first sequences of the last batch.

        Parameters
        ----------
        n_seqs : int
            How many: sequences ``0 .. n_seqs-1``.

        Returns
        -------
        numpy.ndarray
            float32, shape ``(n_seqs, n_embd)``.

        Raises
        ------
        EmbeddingError
            The context does not pool, or llama.cpp has no vector for a sequence.
        """
        ptr = self._handle()
        ffi, lib = self._lib.ffi, self._lib.lib
        if self.pooling in ("none", "unknown"):
            raise EmbeddingError("this context does not pool (pooling 'none')", self.model.name)
        out = np.empty((n_seqs, self.n_embd), dtype=np.float32)
        nbytes = self.n_embd * 4
        for seq in range(n_seqs):
            row = lib.llama_get_embeddings_seq(ptr, seq)
            if row == ffi.NULL:
                raise EmbeddingError(f"llama.cpp returned no embedding for sequence {seq}", self.model.name)
            ffi.memmove(out[seq], row, nbytes)
        return out

    def copy_sequence_embeddings(self, out: npt.NDArray[np.float32], rows: npt.ArrayLike) -> None:
        """Copy the pooled embedding of sequence ``k`` of the last batch into ``out[rows[k]]``.

        One ``memmove`` per sequence from llama.cpp's buffer into the caller's array: the
        only copy the pooled vectors make.

        Parameters
        ----------
        out : numpy.ndarray
            Writable C-contiguous float32 array of shape ``(n, n_embd)``.
        rows : array_like of int
            The row of ``out`` for each sequence of the last batch, in sequence order.

        Raises
        ------
        EmbeddingError
            ``out`` or ``rows`` do not fit, the context does not pool, or llama.cpp has no vector.
        """
        ptr = self._handle()
        ffi, lib = self._lib.ffi, self._lib.lib
        if self.pooling in ("none", "unknown"):
            raise EmbeddingError("this context does not pool (pooling 'none')", self.model.name)
        targets = np.asarray(rows, dtype=np.intp)
        if not (
            isinstance(out, np.ndarray)
            and out.dtype == np.float32
            and out.ndim == 2
            and out.shape[1] == self.n_embd
            and out.flags.c_contiguous
            and out.flags.writeable
        ):
            raise EmbeddingError(f"out must be a writable C-contiguous float32 (n, {self.n_embd}) array")
        if targets.ndim != 1 or len(targets) > self._last_n_seqs:
            raise EmbeddingError(
                f"asked for {len(targets)} sequences; the last batch held {self._last_n_seqs}", self.model.name
            )
        if len(targets) and (targets.min() < 0 or targets.max() >= len(out)):
            raise EmbeddingError(f"rows must lie in [0, {len(out)})", self.model.name)
        nbytes = self.n_embd * 4
        for seq, row in enumerate(targets.tolist()):
            src = lib.llama_get_embeddings_seq(ptr, seq)
            if src == ffi.NULL:
                raise EmbeddingError(f"llama.cpp returned no embedding for sequence {seq}", self.model.name)
            ffi.memmove(out[row], src, nbytes)

    def token_embeddings(self, n_tokens: int) -> npt.NDArray[np.float32]:
        """Token-level embeddings of the last batch (a context with pooling "none").

        Parameters
        ----------
        n_tokens : int
            Tokens of the last batch.

        Returns
        -------
        numpy.ndarray
            float32, shape ``(n_tokens, n_embd)``.

        Raises
        ------
        EmbeddingError
            The context pools, or llama.cpp has no token vectors.
        """
        ptr = self._handle()
        ffi, lib = self._lib.ffi, self._lib.lib
        if self.pooling != "none":
            raise EmbeddingError("token embeddings need a context with pooling 'none'", self.model.name)
        base = lib.llama_get_embeddings(ptr)
        if base == ffi.NULL:
            raise EmbeddingError("llama.cpp returned no token embeddings", self.model.name)
        out = np.empty((n_tokens, self.n_embd), dtype=np.float32)
        ffi.memmove(out, base, out.nbytes)
        return out

    def __repr__(self) -> str:
        return (
            f"<Context model={self.model.name!r} n_ctx={self.n_ctx} n_batch={self.n_batch} "
            f"n_seq_max={self.n_seq_max} pooling={self.pooling}>"
        )


GGML_MAX_N_THREADS = 512
"""ggml.h's ``GGML_MAX_N_THREADS``: ggml's per-thread tables have this many entries."""


def _pad(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple


def reserve_tokens(params: ContextParams, causal: bool) -> int:
    """Tokens of the micro-batch llama.cpp reserves its worst-case graph for.

    ``llama_init_from_model`` lays out ``n_seq_max`` sequences of equal length in
    ``min(n_ctx rounded up to 256, n_ubatch)`` tokens (with ``n_batch`` first capped at
    ``n_ctx`` for causal models, ``n_ubatch`` at ``n_batch``). Unless ``n_seq_max``
    divides that number, the token count is rounded up, the pooling matrices stop
    matching and ``GGML_ASSERT(ggml_can_mul_mat(a, b))`` aborts the process.
    """
    n_batch = min(params.n_ctx, params.n_batch) if causal else params.n_batch
    n_ubatch = min(n_batch, params.n_ubatch)
    return min(_pad(params.n_ctx, 256), n_ubatch)


def sequences_for(tokens: int, limit: int) -> int:
    """The largest ``n_seq_max`` up to ``limit`` that divides ``tokens`` (see :func:`reserve_tokens`)."""
    best = 1
    for d in range(1, min(tokens, limit) + 1):
        if tokens % d == 0:
            best = d
    return best


def _validate_context_params(params: ContextParams, model: Model, max_seq: int) -> None:
    """Refuse, with the reason, every setting llama.cpp would abort the process on."""
    name = model.name
    for key in ("n_ctx", "n_batch", "n_ubatch", "n_seq_max", "n_threads"):
        value = getattr(params, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigurationError(f"model {name!r}: {key} must be a positive int, got {value!r}")
    if params.n_batch > 2**31 - 1:
        raise ConfigurationError(f"model {name!r}: n_batch ({params.n_batch}) does not fit llama.cpp's int32")
    if params.n_threads > GGML_MAX_N_THREADS:
        raise ConfigurationError(
            f"model {name!r}: n_threads ({params.n_threads}) > {GGML_MAX_N_THREADS}, ggml's GGML_MAX_N_THREADS"
        )
    if params.pooling not in _pooling_codes():
        raise ConfigurationError(f"model {name!r}: unsupported llama.cpp pooling {params.pooling!r}")
    if params.n_ubatch > params.n_batch:
        raise ConfigurationError(f"model {name!r}: n_ubatch ({params.n_ubatch}) > n_batch ({params.n_batch})")
    if params.n_seq_max > max_seq:
        raise ConfigurationError(f"model {name!r}: n_seq_max ({params.n_seq_max}) > llama.cpp's limit {max_seq}")
    if params.rope_scaling not in _rope_codes():
        raise ConfigurationError(f"model {name!r}: unknown rope_scaling {params.rope_scaling!r}")
    if params.yarn_orig_ctx is not None and not 1 <= params.yarn_orig_ctx <= 2**31 - 1:
        raise ConfigurationError(f"model {name!r}: yarn_orig_ctx must be a positive int32, got {params.yarn_orig_ctx}")
    for key in _ROPE_FLOATS:
        value = getattr(params, key)
        if value is not None and not math.isfinite(value):
            raise ConfigurationError(f"model {name!r}: {key} must be finite, got {value!r}")
    if params.rope_freq_base is not None and params.rope_freq_base <= 0:
        raise ConfigurationError(f"model {name!r}: rope_freq_base must be > 0, got {params.rope_freq_base}")
    if params.rope_freq_scale is not None and params.rope_freq_scale <= 0:
        raise ConfigurationError(f"model {name!r}: rope_freq_scale must be > 0, got {params.rope_freq_scale}")
    if model.n_ctx_train > 0 and params.n_ctx > model.n_ctx_train:
        if not model.has_rope:
            # Learned position embeddings have n_ctx_train rows: a later position reads past the table and
            # llama.cpp aborts the process.
            raise ConfigurationError(
                f"model {name!r}: n_ctx ({params.n_ctx}) exceeds the {model.n_ctx_train} positions "
                "the model was trained with (its positions are a learned table, not rotary: it cannot go further)"
            )
        logger.warning(
            "model %r: n_ctx (%d) exceeds the %d tokens it was trained with (rope scaling %s); quality may drop "
            "beyond them",
            name,
            params.n_ctx,
            model.n_ctx_train,
            params.rope_scaling,
        )
    tokens = reserve_tokens(params, model.is_causal)
    if tokens % params.n_seq_max:
        raise ConfigurationError(
            f"model {name!r}: n_seq_max ({params.n_seq_max}) must divide the {tokens} tokens of llama.cpp's "
            f"micro-batch (min(n_ctx rounded up to 256, n_ubatch) = min({_pad(params.n_ctx, 256)}, "
            f"{params.n_ubatch})), or llama.cpp aborts the process; the largest that fits is "
            f"{sequences_for(tokens, max_seq)}"
        )


class Batch:
    """Token buffers for one llama.cpp call, filled from numpy without per-token loops.

    Holds up to ``capacity`` tokens in up to ``max_seqs`` sequences; every token is an
    output (embeddings need them all). The buffers C reads are private; ``tokens``,
    ``positions`` and ``sequence_ids`` are read-only views of the filled part, and only
    :meth:`set_sequences` and :meth:`clear` change what C sees.

    Parameters
    ----------
    capacity : int
        Most tokens.
    max_seqs : int
        Most sequences.
    library : Library, optional
        The libllama to use; default: :func:`embellama.get_library`.

    Raises
    ------
    ConfigurationError
        ``capacity`` or ``max_seqs`` is not an int >= 1.
    """

    def __init__(self, capacity: int, max_seqs: int, *, library: Library | None = None) -> None:
        for key, value in (("capacity", capacity), ("max_seqs", max_seqs)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"batch {key} must be an int >= 1, got {value!r}")
        self._lib = library or get_library()
        ffi = self._lib.ffi
        self._capacity = capacity
        self._max_seqs = max_seqs
        self._token = np.zeros(capacity, dtype=np.int32)
        self._pos = np.zeros(capacity, dtype=np.int32)
        self._n_seq_id = np.ones(capacity, dtype=np.int32)
        self._seq_id = np.zeros(capacity, dtype=np.int32)
        self._logits = np.ones(capacity, dtype=np.int8)
        # seq_id is an array of pointers, one per token; each points at that token's
        # entry of self._seq_id, so filling self._seq_id is all a fill needs to do.
        base = int(ffi.cast("uintptr_t", ffi.from_buffer(self._seq_id)))
        self._seq_ptrs = (base + 4 * np.arange(capacity, dtype=np.uint64)).astype(np.uintp)
        self._struct = ffi.new("llama_batch *")
        s = self._struct
        s.n_tokens = 0
        s.token = ffi.cast("llama_token *", ffi.from_buffer(self._token))
        s.embd = ffi.NULL
        s.pos = ffi.cast("llama_pos *", ffi.from_buffer(self._pos))
        s.n_seq_id = ffi.cast("int32_t *", ffi.from_buffer(self._n_seq_id))
        s.seq_id = ffi.cast("llama_seq_id **", ffi.from_buffer(self._seq_ptrs))
        s.logits = ffi.cast("int8_t *", ffi.from_buffer(self._logits))
        self._lengths: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self._n_tokens = 0
        self._max_seq_len = 0

    @property
    def capacity(self) -> int:
        """Most tokens the batch holds."""
        return self._capacity

    @property
    def max_seqs(self) -> int:
        """Most sequences the batch holds."""
        return self._max_seqs

    @property
    def n_tokens(self) -> int:
        """Tokens in the batch now."""
        return self._n_tokens

    @property
    def n_seqs(self) -> int:
        """Sequences in the batch now."""
        return int(self._lengths.size)

    @property
    def max_seq_len(self) -> int:
        """Tokens of the longest sequence in the batch."""
        return self._max_seq_len

    @property
    def lengths(self) -> npt.NDArray[np.int64]:
        """Token count of each sequence, by seq_id (read-only)."""
        return _read_only(self._lengths)

    @property
    def tokens(self) -> npt.NDArray[np.int32]:
        """The token ids of the batch, sequences one after another (read-only view)."""
        return _read_only(self._token[: self._n_tokens])

    @property
    def positions(self) -> npt.NDArray[np.int32]:
        """Each token's position within its sequence (read-only view)."""
        return _read_only(self._pos[: self._n_tokens])

    @property
    def sequence_ids(self) -> npt.NDArray[np.int32]:
        """Each token's sequence id (read-only view)."""
        return _read_only(self._seq_id[: self._n_tokens])

    def set_sequences(self, tokens: npt.ArrayLike, lengths: npt.ArrayLike) -> None:
        """Fill with sequences given as one flat token array and their lengths.

        Sequence ``i`` gets seq_id ``i`` and positions ``0..len-1``.

        Parameters
        ----------
        tokens : array_like of int
            All sequences' token ids, one after another.
        lengths : array_like of int
            The length of each sequence.

        Raises
        ------
        InvalidInputError
            Not 1-D integer arrays, lengths that do not sum to the tokens, ids beyond int32, or more
            tokens or sequences than the batch holds.
        """
        ids = np.asarray(tokens)
        lens = np.asarray(lengths)
        if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
            raise InvalidInputError(f"tokens must be a 1-D array of ints, got {ids.dtype} with shape {ids.shape}")
        if lens.ndim != 1 or lens.size == 0 or lens.dtype.kind not in "iu" or (lens <= 0).any():
            raise InvalidInputError("lengths must be a non-empty 1-D array of positive ints")
        lens = lens.astype(np.int64)
        total = int(lens.sum())
        if total != len(ids):
            raise InvalidInputError(f"lengths sum to {total} but {len(ids)} tokens were given")
        if total > self._capacity or lens.size > self._max_seqs:
            raise InvalidInputError(
                f"{lens.size} sequences / {total} tokens exceed the batch's "
                f"{self._max_seqs} sequences / {self._capacity} tokens"
            )
        if ids.size and (int(ids.min()) < -(2**31) or int(ids.max()) >= 2**31):
            raise InvalidInputError("token ids must fit in int32")
        self._token[:total] = ids
        self._layout(lens, total)

    def fill(self, sequences: Sequence[npt.NDArray[np.integer[Any]]], seq_ids: npt.ArrayLike | None = None) -> None:
        """Fill with one token array per sequence, copied straight into the buffer C reads.

        The sequences lie one after another in the given order; sequence ``i`` gets seq_id
        ``seq_ids[i]`` (default ``i``) and positions ``0..len-1``. The loop runs per sequence,
        never per token.

        Parameters
        ----------
        sequences : sequence of numpy.ndarray
            One 1-D integer array of token ids per sequence.
        seq_ids : array_like of int, optional
            The seq_id of each sequence: a permutation of ``0..len(sequences)-1``. Packing uses
            it to lay sequences out in the order that suits the attention kernel while the
            pooled vectors keep their numbering.

        Raises
        ------
        InvalidInputError
            An empty or non-integer sequence, ``seq_ids`` not a permutation, or more tokens or
            sequences than the batch holds.
        """
        lens = np.fromiter((len(seq) for seq in sequences), dtype=np.int64, count=len(sequences))
        if lens.size == 0 or (lens <= 0).any():
            raise InvalidInputError("every sequence needs at least one token")
        ids = None
        if seq_ids is not None:
            ids = np.asarray(seq_ids)
            if (
                ids.shape != lens.shape
                or ids.dtype.kind not in "iu"
                or not np.array_equal(np.sort(ids), np.arange(lens.size))
            ):
                raise InvalidInputError("seq_ids must be a permutation of 0..len(sequences)-1")
        total = int(lens.sum())
        if total > self._capacity or lens.size > self._max_seqs:
            raise InvalidInputError(
                f"{lens.size} sequences / {total} tokens exceed the batch's "
                f"{self._max_seqs} sequences / {self._capacity} tokens"
            )
        at = 0
        buffer = self._token
        for seq, n in zip(sequences, lens.tolist(), strict=True):
            if not isinstance(seq, np.ndarray) or seq.ndim != 1 or seq.dtype.kind not in "iu":
                raise InvalidInputError("each sequence must be a 1-D numpy array of token ids")
            buffer[at : at + n] = seq
            at += n
        self._layout(lens, total, ids)

    def _layout(self, lens: npt.NDArray[np.int64], total: int, ids: npt.NDArray[Any] | None = None) -> None:
        starts = np.cumsum(lens) - lens
        self._pos[:total] = np.arange(total, dtype=np.int32) - np.repeat(starts, lens).astype(np.int32)
        order = np.arange(lens.size, dtype=np.int32) if ids is None else ids.astype(np.int32)
        self._seq_id[:total] = np.repeat(order, lens)
        self._n_tokens = total
        self._max_seq_len = int(lens.max())
        self._lengths = lens if ids is None else lens[np.argsort(order)]  # by seq_id
        self._struct.n_tokens = total

    def clear(self) -> None:
        """Empty the batch (the buffers are kept)."""
        self._n_tokens = self._max_seq_len = 0
        self._lengths = np.zeros(0, dtype=np.int64)
        self._struct.n_tokens = 0

    def __repr__(self) -> str:
        return f"<Batch {self.n_seqs} seqs, {self._n_tokens}/{self._capacity} tokens>"


def _read_only(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    view = array.view()
    view.flags.writeable = False
    return view


# llama.cpp's enum llama_ftype without its ALL_/MOSTLY_ prefixes: {"f32": 0, "f16": 1, "q8_0": 7, "bf16": 32, ...}
_FTYPES = {
    re.sub(r"^(all|mostly)_", "", name): code
    for name, code in enum_names("llama_ftype", "LLAMA_FTYPE_").items()
    if name != "guessed"
}


def quantize(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    ftype: str = "q8_0",
    *,
    n_threads: int = 0,
    library: Library | None = None,
) -> Path:
    """Write a copy of a GGUF model with its weights converted to ``ftype`` (llama_model_quantize).

    Parameters
    ----------
    source : str or os.PathLike
        The GGUF to read.
    destination : str or os.PathLike
        The GGUF to write.
    ftype : str, optional
        The weight type, e.g. "q8_0", "f16", "bf16".
    n_threads : int, optional
        Threads for the quantizer; 0: llama.cpp's choice.
    library : Library, optional
        The libllama to use; default: :func:`embellama.get_library`.

    Returns
    -------
    pathlib.Path
        ``destination``.

    Raises
    ------
    ModelNotFoundError
        ``source`` is not a file.
    ConfigurationError
        An unknown ``ftype``.
    ModelLoadError
        llama.cpp's quantization failed (its return code is in the message).
    """
    lib_ = library or get_library()
    ffi, lib = lib_.ffi, lib_.lib
    src, dst = Path(source), Path(destination)
    if not src.is_file():
        raise ModelNotFoundError(str(src))
    key = ftype.lower()
    if key not in _FTYPES:
        raise ConfigurationError(f"unknown ftype {ftype!r}; expected one of {', '.join(_FTYPES)}")
    params = ffi.new("llama_model_quantize_params *", lib.llama_model_quantize_default_params())
    params.nthread = int(n_threads)
    params.ftype = _FTYPES[key]
    rc = lib.llama_model_quantize(os.fsencode(src), os.fsencode(dst), params)
    if rc != 0:
        raise ModelLoadError(str(src), f"quantization to {key} failed (code {rc})")
    return dst
