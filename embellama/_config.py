# SPDX-License-Identifier: Apache-2.0
"""ModelConfig and the pooling and normalization choices."""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from embellama._compute.output import check_precision, check_truncate_dim
from embellama._compute.pooling import Normalization, NormalizeSpec, PoolingStrategy, parse_normalization
from embellama._compute.prompts import check_prompts
from embellama._compute.similarity import check_similarity_fn_name
from embellama._exceptions import ConfigurationError
from embellama._native import enum_names

__all__ = ["ModelConfig", "Normalization", "PoolingStrategy"]

_COMPUTE_TYPES = ("auto", "off", "f32", "f16", "bf16", "q8_0")
_MAX_THREADS = 512  # ggml.h GGML_MAX_N_THREADS
_INT32_MAX = 2**31 - 1
ROPE_SCALING_TYPES = ("none", "linear", "yarn")
"""The rope scaling types ``ModelConfig.rope_scaling`` takes (llama.cpp's ``llama_rope_scaling_type``)."""
# llama.cpp's limits on sequences per context and devices in tensor_split are asked of the
# loaded library (Library.limits) when the model loads, not hard-coded here.


@functools.cache
def _split_modes() -> tuple[str, ...]:
    """llama.cpp's split modes, read from the declarations on first use (importing embellama parses nothing)."""
    return tuple(enum_names("llama_split_mode", "LLAMA_SPLIT_MODE_"))


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """How to load and run one embedding model. Validated on construction.

    Change a field with ``dataclasses.replace(config, n_threads=4)``. Fields left at
    None are derived from the model when it loads. Every argument is keyword-only.

    Parameters
    ----------
    model_path : str or os.PathLike
        Path of the GGUF file.
    model_name : str, optional
        Name used in errors, logs and by EmbeddingEngine; default: the file's stem.
    n_ctx : int, optional
        Context length (tokens per text); default: the model's training context, at most 8,192. Left to the
        default, a causal model's context (and its KV cache) starts at 512 tokens and grows when a text needs
        more; a value given here is made whole at load.
    n_threads : int, optional
        CPU threads (at most 512); default: the number of CPUs this process may use.
    n_gpu_layers : int, optional
        Layers to offload to a GPU (-1: all, 0: none); ignored by CPU builds.
    main_gpu : int, optional
        With ``split_mode="none"``, the GPU (index among the GPUs) that holds the model; -1: none.
    split_mode : str, optional
        How several GPUs share the model: "none" (main_gpu only), "layer", "row" or "tensor".
    tensor_split : tuple of float, optional
        Share of the model per GPU, e.g. (3, 1); default: by free memory.
    offload_kqv : bool, optional
        Keep the KV cache and attention on the GPU with the offloaded layers.
    pooling : PoolingStrategy or str, optional
        Pooling strategy; default: the one the GGUF metadata names (else MEAN). "rank" is a cross-encoder's
        classification head, for :class:`Reranker` (which takes it by default).
    normalize : bool, str, float or Normalization, optional
        L2 by default; False, "l1", "max_abs" or a p-norm exponent.
    n_batch : int, optional
        Most tokens per llama.cpp call; default: max(n_ctx, 512).
    n_ubatch : int, optional
        Most tokens llama.cpp computes at once (default: n_batch); n_seq_max must divide it.
    n_seq_max : int, optional
        Most texts per llama.cpp call; default: the most (up to 256) that divide the micro-batch.
    truncate : bool, optional
        Cut over-long texts (keeping the end tokens like [SEP]) instead of raising.
    max_tokens : int, optional
        Token limit per text, e.g. 256 to match sentence-transformers; default: n_ctx.
    parse_special : bool, optional
        Treat markup like "[CLS]" or "<s>" in the text as special tokens (Hugging Face does).
    flash_attn : bool, optional
        Flash attention; None lets llama.cpp choose (on for CPU).
    use_mmap : bool, optional
        Memory-map the model file.
    compute_type : str, optional
        Weight type to compute with: "auto" (the fastest exact type for the CPU: F32 for models of up to 268 M
        weights on Intel CPUs with AVX512_BF16, elsewhere the file's type), "off" (the file as it is), or "f32",
        "f16", "bf16", "q8_0" (converted once, cached). "bf16" is fastest on AMD CPUs with AVX512_BF16 (Zen 4:
        1.4 times F16), at min cosine 0.99995 against sentence-transformers instead of 0.99999.
    prompts : dict of str to str, optional
        Prompt name to text prepended to every text embedded with that ``prompt_name`` (e.g.
        ``{"query": "query: "}``); added to, and overriding, the prompts the GGUF carries (``embellama.prompts``).
    default_prompt_name : str, optional
        The prompt used when a call names none; default: the GGUF's ``embellama.default_prompt_name``, else none.
    truncate_dim : int, optional
        Keep the first ``truncate_dim`` dimensions of each vector (Matryoshka models), cut before normalization.
    precision : str, optional
        Output type: "float32" (default), "int8", "uint8", "binary" or "ubinary", as sentence-transformers'
        ``quantize_embeddings`` (int8/uint8 calibrated on the embeddings of each call).
    similarity_fn_name : str, optional
        How :meth:`EmbeddingModel.similarity` scores: "cosine", "dot", "euclidean" or "manhattan"; default: the
        GGUF's ``embellama.similarity_fn_name``, else the known-model table's, else cosine.
    rope_scaling : str, optional
        RoPE scaling for contexts beyond the training length: "none", "linear" or "yarn"; default: the model's (or
        the known-model table's when ``n_ctx`` exceeds the training context).
    rope_freq_base, rope_freq_scale : float, optional
        RoPE base frequency, and the position scale (linear: 1 / factor); default: the model's.
    yarn_orig_ctx : int, optional
        YaRN: the context the model was trained with; default: the model's.
    yarn_ext_factor, yarn_attn_factor, yarn_beta_fast, yarn_beta_slow : float, optional
        YaRN's extrapolation mix, attention magnitude, and correction range; default: llama.cpp's.
    lora : sequence of str or os.PathLike, or dict of str to str or os.PathLike, optional
        LoRA adapters (GGUF files or ``hf://`` references) loaded with the model. An adapter whose GGUF names a task
        (``adapter.lora.task_name``, as jina-embeddings-v3's) applies only to calls with that ``task=``; one
        without a task applies to every call. A dict names each adapter's task itself: ``{"retrieval.query":
        "query.gguf"}``. See docs/guide/lora.md.
    known_models : str or os.PathLike, optional
        A JSON file of known-model entries that extend (and come before) the built-in table; also
        ``$EMBELLAMA_KNOWN_MODELS``. See docs/guide/known-models.md.
    use_known_defaults : bool, optional
        Take prompts, the similarity function and rope settings from the known-model table when the GGUF
        names a model in it (True by default).
    extra : dict, optional
        Free-form settings for tools built on embellama; ignored by the library, but for ``"kind"``, which
        :class:`EmbeddingEngine` (and ``embellama serve --config``) reads as the kind of model to serve the file
        as (``"classifier"``, ``"sparse"``, ``"multi_vector"``, ...) when its files do not say it.

    Raises
    ------
    ConfigurationError
        A value is of the wrong type, out of range, or contradicts another (the message names the model,
        the field and the rule); llama.cpp would otherwise abort the process on some of them.
    """

    model_path: str | os.PathLike[str]
    model_name: str | None = None
    n_ctx: int | None = None
    n_threads: int | None = None
    n_gpu_layers: int = -1
    main_gpu: int = 0
    split_mode: str = "layer"
    tensor_split: tuple[float, ...] | None = None
    offload_kqv: bool = True
    pooling: PoolingStrategy | str | None = None
    normalize: NormalizeSpec = True
    n_batch: int | None = None
    n_ubatch: int | None = None
    n_seq_max: int | None = None
    truncate: bool = True
    max_tokens: int | None = None
    parse_special: bool = False
    flash_attn: bool | None = None
    use_mmap: bool = True
    compute_type: str = "auto"
    prompts: dict[str, str] | None = field(default=None, hash=False)
    default_prompt_name: str | None = None
    truncate_dim: int | None = None
    precision: str = "float32"
    similarity_fn_name: str | None = None
    rope_scaling: str | None = None
    rope_freq_base: float | None = None
    rope_freq_scale: float | None = None
    yarn_orig_ctx: int | None = None
    yarn_ext_factor: float | None = None
    yarn_attn_factor: float | None = None
    yarn_beta_fast: float | None = None
    yarn_beta_slow: float | None = None
    lora: Sequence[str | os.PathLike[str]] | Mapping[str, str | os.PathLike[str]] | None = field(
        default=None, hash=False
    )
    known_models: str | os.PathLike[str] | None = None
    use_known_defaults: bool = True
    extra: dict[str, object] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        path = self.model_path
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            raise ConfigurationError(f"model_path must be a non-empty path, got {path!r}")
        object.__setattr__(self, "model_path", Path(path))
        name = self.model_name
        if name is None:
            object.__setattr__(self, "model_name", Path(path).stem)
        elif not isinstance(name, str) or not name.strip():
            raise ConfigurationError(f"model_name must be a non-empty str, got {name!r}")
        who = f"model {self.model_name!r}"
        for key in ("n_ctx", "n_threads", "n_batch", "n_ubatch", "n_seq_max", "max_tokens"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigurationError(f"{who}: {key} must be a positive int or None, got {value!r}")
        if not isinstance(self.n_gpu_layers, int) or isinstance(self.n_gpu_layers, bool) or self.n_gpu_layers < -1:
            raise ConfigurationError(f"{who}: n_gpu_layers must be an int >= -1, got {self.n_gpu_layers!r}")
        if isinstance(self.main_gpu, bool) or not isinstance(self.main_gpu, int) or self.main_gpu < -1:
            raise ConfigurationError(f"{who}: main_gpu must be an int >= -1, got {self.main_gpu!r}")
        for key in ("n_ctx", "n_threads", "n_batch", "n_ubatch", "n_seq_max", "max_tokens", "n_gpu_layers", "main_gpu"):
            if (value := getattr(self, key)) is not None and value > _INT32_MAX:
                raise ConfigurationError(f"{who}: {key} ({value}) does not fit llama.cpp's int32")
        if self.split_mode not in _split_modes():
            raise ConfigurationError(
                f"{who}: unknown split_mode {self.split_mode!r}; expected one of: {', '.join(_split_modes())}"
            )
        if self.tensor_split is not None:
            shares = self.tensor_split
            ok = isinstance(shares, (tuple, list)) and len(shares) > 0
            ok = ok and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in shares)
            if not ok or any(not math.isfinite(x) or x < 0 for x in shares) or sum(shares) <= 0:
                raise ConfigurationError(
                    f"{who}: tensor_split must be non-negative numbers with a positive sum, got {shares!r}"
                )
            object.__setattr__(self, "tensor_split", tuple(float(x) for x in shares))
        if self.pooling is not None:
            try:
                object.__setattr__(self, "pooling", PoolingStrategy.parse(self.pooling))
            except ConfigurationError as exc:
                raise ConfigurationError(f"{who}: {exc}") from None
        try:
            parse_normalization(self.normalize)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{who}: {exc}") from None
        if self.compute_type not in _COMPUTE_TYPES:
            raise ConfigurationError(
                f"{who}: unknown compute_type {self.compute_type!r}; expected one of: {', '.join(_COMPUTE_TYPES)}"
            )
        for key in ("truncate", "use_mmap", "parse_special", "offload_kqv"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigurationError(f"{who}: {key} must be a bool, got {getattr(self, key)!r}")
        if self.flash_attn is not None and not isinstance(self.flash_attn, bool):
            raise ConfigurationError(f"{who}: flash_attn must be a bool or None, got {self.flash_attn!r}")
        if self.n_ubatch is not None and self.n_batch is not None and self.n_ubatch > self.n_batch:
            raise ConfigurationError(f"{who}: n_ubatch ({self.n_ubatch}) > n_batch ({self.n_batch})")
        if self.n_threads is not None and self.n_threads > _MAX_THREADS:
            raise ConfigurationError(f"{who}: n_threads ({self.n_threads}) > {_MAX_THREADS}, ggml's limit")
        if self.n_seq_max is not None:
            for key in ("n_ubatch", "n_batch"):
                value = getattr(self, key)
                if value is not None and self.n_seq_max > value:
                    # llama.cpp lays out n_seq_max sequences of at least one token in a micro-batch
                    raise ConfigurationError(f"{who}: n_seq_max ({self.n_seq_max}) > {key} ({value})")
        if self.n_ctx is not None and self.n_batch is not None and self.n_batch < self.n_ctx:
            # A text of n_ctx tokens must fit one call: sequences are never split.
            raise ConfigurationError(f"{who}: n_batch ({self.n_batch}) < n_ctx ({self.n_ctx})")
        if self.max_tokens is not None and self.n_ctx is not None and self.max_tokens > self.n_ctx:
            raise ConfigurationError(f"{who}: max_tokens ({self.max_tokens}) > n_ctx ({self.n_ctx})")
        object.__setattr__(self, "prompts", check_prompts(self.prompts, who))
        name = self.default_prompt_name
        if name is not None and (not isinstance(name, str) or not name):
            raise ConfigurationError(f"{who}: default_prompt_name must be a non-empty str or None, got {name!r}")
        check_truncate_dim(self.truncate_dim, who)
        check_precision(self.precision, who)
        if self.similarity_fn_name is not None:
            object.__setattr__(self, "similarity_fn_name", check_similarity_fn_name(self.similarity_fn_name, who))
        self._check_rope(who)
        object.__setattr__(self, "lora", _check_lora(self.lora, who))
        if self.known_models is not None:
            if not isinstance(self.known_models, (str, os.PathLike)) or not str(self.known_models):
                raise ConfigurationError(f"{who}: known_models must be a path, got {self.known_models!r}")
            object.__setattr__(self, "known_models", Path(self.known_models))
        if not isinstance(self.use_known_defaults, bool):
            raise ConfigurationError(f"{who}: use_known_defaults must be a bool, got {self.use_known_defaults!r}")

    def _check_rope(self, who: str) -> None:
        """The rope settings: a known scaling type, finite positive frequencies, sane YaRN factors."""
        if self.rope_scaling is not None and self.rope_scaling not in ROPE_SCALING_TYPES:
            raise ConfigurationError(
                f"{who}: unknown rope_scaling {self.rope_scaling!r}; expected one of: {', '.join(ROPE_SCALING_TYPES)}"
            )
        for key, low, high in (
            ("rope_freq_base", 0.0, 1e12),
            ("rope_freq_scale", 0.0, 1e6),
            ("yarn_attn_factor", 0.0, 1e6),
            ("yarn_beta_fast", 0.0, 1e6),
            ("yarn_beta_slow", 0.0, 1e6),
            ("yarn_ext_factor", -1.0, 1e6),
        ):
            value = getattr(self, key)
            if value is None:
                continue
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            strict = key not in ("yarn_ext_factor", "yarn_beta_slow")  # 0 is a value for these two
            if not ok or value < low or (strict and value <= low) or value > high:
                bound = f"> {low:g}" if strict else f">= {low:g}"
                raise ConfigurationError(f"{who}: {key} must be a finite number {bound} and <= {high:g}, got {value!r}")
            object.__setattr__(self, key, float(value))
        orig = self.yarn_orig_ctx
        if orig is not None and (not isinstance(orig, int) or isinstance(orig, bool) or not 1 <= orig <= _INT32_MAX):
            raise ConfigurationError(f"{who}: yarn_orig_ctx must be a positive int or None, got {orig!r}")

    @property
    def name(self) -> str:
        """The model's name (``model_name`` or the file's stem)."""
        return str(self.model_name)


def _check_lora(value: object, who: str) -> tuple[str | Path, ...] | dict[str, str | Path] | None:
    """``ModelConfig.lora`` checked: a sequence of paths, or a dict of task name to path (an ``hf://`` reference
    stays a str)."""

    def path(item: object) -> str | Path:
        if not isinstance(item, (str, os.PathLike)) or not str(item):
            raise ConfigurationError(f"{who}: lora must hold GGUF paths or hf:// references, got {item!r}")
        return item if isinstance(item, str) and item.startswith("hf://") else Path(item)

    if value is None:
        return None
    if isinstance(value, Mapping):
        for task in value:
            if not isinstance(task, str) or not task:
                raise ConfigurationError(f"{who}: lora's task names must be non-empty str, got {task!r}")
        return {task: path(item) for task, item in value.items()}
    if isinstance(value, (str, os.PathLike)) or not isinstance(value, Sequence):
        raise ConfigurationError(f"{who}: lora must be a list of GGUF paths (or a dict of task to path), got {value!r}")
    return tuple(path(item) for item in value)


@dataclass(frozen=True, kw_only=True)
class EngineConfig:
    """How an :class:`~embellama.EmbeddingEngine` serves its models. Validated on construction.

    Change a field with ``dataclasses.replace(config, cache_size=10_000)``. Every argument is keyword-only.

    Parameters
    ----------
    default_model : str, optional
        The model used when a call names none; default: the first model loaded.
    workers_per_model : int, optional
        Copies of each model, each loaded and run by its own worker thread; requests go to the least busy.
    cache_size : int, optional
        Capacity of the LRU cache of single-text embeddings (entries); 0 turns it off.
    cache_batches : bool, optional
        Also serve and fill the cache from batches of several texts. Results then equal uncached ones only to float
        rounding: llama.cpp's output for a text moves in the last bits with the texts sharing its call.
    max_pending : int, optional
        Most requests submitted and not yet answered, over all models (queued or running); 0: no limit.
    submit_timeout : float, optional
        When ``max_pending`` requests are pending: seconds a new request waits for room before ``EngineBusyError``
        (0: raise at once). Async calls wait without blocking the event loop.
    max_batch_texts : int, optional
        Dynamic batching: requests waiting for the same copy of a model are joined into one llama.cpp call of at
        most this many texts (and at most the model's ``n_seq_max`` texts and micro-batch of tokens). 0: as many
        as one call holds; 1: off, every request runs on its own.
    max_batch_wait_ms : float, optional
        Dynamic batching: once a copy is free, milliseconds it waits for more requests to join the ones already
        waiting. 0 (the default, measured best on the CPU): only requests that are already queued are joined, so
        a lone request never waits.

    Raises
    ------
    ConfigurationError
        A value is of the wrong type or out of range (the message names the field).
    """

    default_model: str | None = None
    workers_per_model: int = 1
    cache_size: int = 0
    cache_batches: bool = False
    max_pending: int = 0
    submit_timeout: float = 0.0
    max_batch_texts: int = 0
    max_batch_wait_ms: float = 0.0

    def __post_init__(self) -> None:
        who = "EngineConfig"
        name = self.default_model
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ConfigurationError(f"{who}: default_model must be a non-empty str or None, got {name!r}")
        for key, low in (("workers_per_model", 1), ("cache_size", 0), ("max_pending", 0), ("max_batch_texts", 0)):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                kind = "a positive int" if low else "an int >= 0"
                raise ConfigurationError(f"{who}: {key} must be {kind}, got {value!r}")
        if self.workers_per_model > _MAX_THREADS:
            raise ConfigurationError(f"{who}: workers_per_model ({self.workers_per_model}) > {_MAX_THREADS}")
        if not isinstance(self.cache_batches, bool):
            raise ConfigurationError(f"{who}: cache_batches must be a bool, got {self.cache_batches!r}")
        wait = self.submit_timeout
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not math.isfinite(wait) or wait < 0:
            raise ConfigurationError(f"{who}: submit_timeout must be a finite number of seconds >= 0, got {wait!r}")
        object.__setattr__(self, "submit_timeout", float(wait))
        wait = self.max_batch_wait_ms
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not math.isfinite(wait) or wait < 0:
            raise ConfigurationError(f"{who}: max_batch_wait_ms must be a finite number >= 0, got {wait!r}")
        object.__setattr__(self, "max_batch_wait_ms", float(wait))
