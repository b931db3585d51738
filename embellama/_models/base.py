# SPDX-License-Identifier: Apache-2.0
"""LlamaModel, the base of EmbeddingModel and Reranker: loading a GGUF with its context, one owning thread,
the token budget, and the checks and the llama.cpp call both model kinds share."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from embellama._compute import packing as _batch
from embellama._compute.pooling import Normalization, PoolingStrategy
from embellama._config import ModelConfig
from embellama._exceptions import ConfigurationError, ModelNotFoundError
from embellama._gguf import convert as _convert
from embellama._gguf.known import KnownModel
from embellama._models import defaults as _defaults
from embellama._models import pretrained as _pretrained
from embellama._models.kinds import check_runnable
from embellama._models.lora import Tasks
from embellama._native import Library, get_library
from embellama.llama import (
    GGML_MAX_N_THREADS,
    Batch,
    Context,
    ContextParams,
    Model,
    reserve_tokens,
    sequences_for,
)

__all__ = ["DEFAULT_CTX_CAP", "LlamaModel", "context_params", "is_positive_int", "truncate_tokens"]

logger = logging.getLogger("embellama")

DEFAULT_CTX_CAP = 8192
"""Default n_ctx is the model's training context, but at most this many tokens."""

FIRST_CTX = 512
"""Tokens a causal model's context starts with when n_ctx is left to the default: its KV cache grows (by
recreating the context) only when a text needs more, up to the default n_ctx (see LlamaModel._grow)."""


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _gpu_devices(library: Library) -> list[dict[str, Any]]:
    return [d for d in library.devices() if d["type"] in ("GPU", "IGPU")]


def is_positive_int(value: Any) -> bool:
    """Whether ``value`` is an int of at least 1 (a bool is not)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def truncate_tokens(ids: npt.NDArray[np.int32], limit: int, suffix: Sequence[int]) -> npt.NDArray[np.int32]:
    """Cut ``ids`` to ``limit`` tokens, keeping the vocabulary's trailing specials ([SEP], EOS)."""
    if len(ids) <= limit:
        return ids
    tail = np.asarray(suffix, dtype=np.int32)
    return np.concatenate([ids[: limit - len(tail)], tail])


def context_params(
    config: ModelConfig,
    model: Model,
    pooling: PoolingStrategy,
    known: KnownModel | None = None,
    n_ctx: int | None = None,
) -> ContextParams:
    """Context settings for ``model``: the config's, and for the rest values llama.cpp accepts.

    ``n_ctx`` replaces the default context size (a causal model's context that starts small and grows).

    Rope settings are the config's, else, for an ``n_ctx`` beyond the training context, the ``known`` entry's.

    Unset ``n_seq_max`` becomes the largest count up to llama.cpp's limit that divides
    the reserved micro-batch (see :func:`embellama.llama.reserve_tokens`); an explicit
    one that does not is refused when the context is created.
    """
    causal = model.is_causal
    n_ctx = n_ctx or config.n_ctx or min(model.n_ctx_train, DEFAULT_CTX_CAP) or 512
    if config.n_batch:
        n_batch = config.n_batch
    elif causal:
        n_batch = n_ctx  # the KV cache of a causal model holds n_ctx tokens in all
    else:
        n_batch = max(-(-n_ctx // 256) * 256, 512)  # a multiple of 256 leaves room for many texts
    if n_batch < n_ctx:
        raise ConfigurationError(f"model {config.name!r}: n_batch ({n_batch}) < n_ctx ({n_ctx})")
    n_ubatch = config.n_ubatch or n_batch
    if n_ubatch > n_batch:
        raise ConfigurationError(f"model {config.name!r}: n_ubatch ({n_ubatch}) > n_batch ({n_batch})")
    params = ContextParams(
        n_ctx=n_ctx,
        n_batch=n_batch,
        n_ubatch=n_ubatch,
        n_seq_max=1,
        n_threads=config.n_threads or min(_cpu_count(), GGML_MAX_N_THREADS),
        pooling=pooling.native,
        flash_attn=config.flash_attn,
        offload_kqv=config.offload_kqv,
        **_defaults.rope_settings(config, model, n_ctx, known),
    )
    limit = get_library().max_parallel_sequences()  # the library every Model here is opened with
    n_seq_max = config.n_seq_max or sequences_for(reserve_tokens(params, causal), limit)
    return dataclasses.replace(params, n_seq_max=n_seq_max)


SHORT_CALL_TOKENS = 256
"""Tokens of a llama.cpp call of short texts on the CPU (benchmarks/bench_packing.py measured 128 to 512)."""


def tile_layout(config: ModelConfig, library: Library, *, on_gpu: bool, budget: int) -> _batch.TileLayout | None:
    """How to lay out calls for the attention kernel that will run them; None for plain length packing.

    Tiles where ggml's CPU flash attention runs: the model is not offloaded, and flash attention
    is on (asked for, or left to llama.cpp, whose "auto" resolves to on for the CPU). A GPU's
    kernels tile differently, and attention without flash attention is dense: there, packing by
    length is as good and pads nothing.
    """
    if on_gpu or config.flash_attn is False:
        return None
    tile = library.caps.cpu_attention_tile
    call_tokens = min(SHORT_CALL_TOKENS, budget) // tile * tile
    return _batch.TileLayout(tile, call_tokens) if call_tokens else None


def _first_ctx(config: ModelConfig, model: Model, full: ContextParams, tasks: Tasks) -> int | None:
    """The n_ctx a causal model's context starts with, or None to create it whole.

    A causal model's KV cache holds n_ctx tokens and llama.cpp clears it when the context is made, so it is
    resident from the start: 896 MiB for the default 8,192 tokens of a 0.6 B Qwen3, more than its F16 weights'
    2x budget (benchmarks/results/seed.md). Left to the defaults, the context starts at ``FIRST_CTX`` tokens and
    grows when a text needs it. Any context setting of the config's, or LoRA adapters, keep it whole.
    """
    settings = (config.n_ctx, config.n_batch, config.n_ubatch, config.n_seq_max)
    if not model.is_causal or any(settings) or tasks.names or full.n_ctx <= FIRST_CTX:
        return None
    return FIRST_CTX


_M = TypeVar("_M", bound="LlamaModel")


class LlamaModel:
    """What every model class shares: one GGUF model with its llama.cpp context, owned by one thread.

    Subclasses choose the pooling (:meth:`_choose_pooling`) and check what the loaded model must have
    (:meth:`_prepare`, whose result :meth:`_adopt` keeps once loading succeeded).
    """

    def __init__(self, config: ModelConfig) -> None:
        if not isinstance(config, ModelConfig):
            raise ConfigurationError(f"expected a ModelConfig, got {type(config).__name__}")
        self.config = config
        self._model: Model | None = None
        self._context: Context | None = None
        self._batch: Batch | None = None
        self._pooling: PoolingStrategy | None = None
        self._max_tokens = 0
        self._budget = 0
        self._tokenize_threads = 1
        self._known: KnownModel | None = None
        self._source: _pretrained.HubFile | None = None
        self._layout: _batch.TileLayout | None = None
        self._tasks = Tasks([], config.name)  # ModelConfig.lora's adapters, once loaded
        self._before_call: Callable[[], None] | None = None  # see before_llama_calls
        self._full_ctx: int | None = None  # the n_ctx a context that started small may grow to (see _grow)
        self._on_gpu = False

    @classmethod
    def from_pretrained(
        cls: type[_M],
        repo_id: str,
        filename: str | None = None,
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        **config: Any,
    ) -> _M:
        """A model of a Hugging Face Hub repository's GGUF, from the cache, downloading it only if missing.

        As llama-cpp-python's ``Llama.from_pretrained``. The Hugging Face cache is read first, without
        huggingface_hub: a cached file loads with no network call (nor with ``HF_HUB_OFFLINE=1``). A missing
        file is downloaded into that cache (needs ``embellama[hub]``), its sha256 checked against the Hub's.
        The model is not loaded yet (as the constructor); :attr:`source` says where it came from.

        Parameters
        ----------
        repo_id : str
            The repository, ``org/repo``.
        filename : str, optional
            The GGUF's path in it, or a glob such as ``"*Q8_0.gguf"`` that must match one file; default: the
            repository's one GGUF (several are refused, and listed).
        revision : str, optional
            A branch, tag or commit; default ``main``.
        cache_dir : str or os.PathLike, optional
            The Hugging Face cache; default ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
            ``~/.cache/huggingface/hub``.
        **config
            :class:`~embellama.ModelConfig` fields (all but ``model_path``).

        Returns
        -------
        EmbeddingModel or Reranker
            The model, to load (``with``, :meth:`load`, or its first call).

        Raises
        ------
        HubNotFoundError
            No such repository, revision or file (or not cached while ``HF_HUB_OFFLINE=1``).
        HubAccessError
            The repository is gated or private.
        HubDownloadError
            The download failed, or its sha256 differs from the Hub's (the file is not kept).
        MissingExtraError
            A download is needed and huggingface_hub is not installed.
        ConfigurationError
            Several files match, or a bad repository id, file name or config field.
        """
        return _pretrained.from_pretrained(
            cls, repo_id, filename, revision=revision, cache_dir=cache_dir, config=config
        )

    @property
    def source(self) -> _pretrained.HubFile | None:
        """Where a model loaded by name came from (repository, file, revision, commit, cached path); None for a
        model given by path. Known once :meth:`from_pretrained` returns, or for an ``hf://`` model_path once
        the model loads."""
        return self._source

    # -- lifetime ---------------------------------------------------------------

    @property
    def name(self) -> str:
        """The model's name (from the config)."""
        return self.config.name

    @property
    def is_loaded(self) -> bool:
        """Whether the model and its context are in memory."""
        return self._context is not None

    def load(self: _M) -> _M:
        """Load the model and create its context in the calling thread. Idempotent.

        Returns
        -------
        EmbeddingModel or Reranker
            This model, loaded (so that ``EmbeddingModel(config).load()`` reads well).

        Raises
        ------
        ModelNotFoundError
            The GGUF file does not exist.
        ModelLoadError
            llama.cpp could not load it (the message has its path and reason).
        ConfigurationError
            A setting does not fit the model (the message names the model, the field and the rule).
        LibraryError
            No usable libllama.
        ThreadAffinityError
            It is already loaded by another thread.
        """
        if self._context is not None:
            self._context._handle()  # raises if another thread owns it
            return self
        cfg = self.config
        started = time.perf_counter()
        library = get_library()  # the one every Model here is opened with
        model = self._open_weights()
        context: Context | None = None
        try:
            check_runnable(model, cfg.name)
            pooling = self._choose_pooling(model)
            kind = "reranker" if pooling is PoolingStrategy.RANK else "embedding"
            known = _defaults.known_entry(model, cfg, getattr(self, "_source", None), kind)
            tasks = Tasks.load(model, cfg)  # before the context: llama.cpp sizes its graph for the model's adapters
            full = context_params(self.config, model, pooling, known)
            first = _first_ctx(cfg, model, full, tasks)
            params = full if first is None else context_params(self.config, model, pooling, known, n_ctx=first)
            context = Context(model, params)
            tasks.activate(context, None)
            # Never more tokens per call than llama.cpp reserved its compute buffers for.
            budget = reserve_tokens(context.params, model.is_causal)
            n_ctx = full.n_ctx  # as asked: llama.cpp rounds its own up to a multiple of 256
            max_tokens = min(cfg.max_tokens or n_ctx, n_ctx, reserve_tokens(full, model.is_causal))
            if max_tokens <= len(model.special_tokens.prefix) + len(model.special_tokens.suffix):
                raise ConfigurationError(f"model {cfg.name!r}: max_tokens {max_tokens} leaves no room for text")
            batch = Batch(budget, context.n_seq_max, library=library)
            self._known = known  # what _prepare reads (prompts, similarity)
            prepared = self._prepare(model, context, max_tokens)
        except BaseException:
            if context is not None:
                context.close()
            model.close()
            raise
        self._budget, self._max_tokens, self._tasks = budget, max_tokens, tasks
        self._full_ctx = None if first is None else full.n_ctx
        self._adopt(prepared)
        # Tokenize with several threads only while a GPU computes: on the CPU, inference already
        # keeps every core busy and tokenization is 0.3 % of embed_batch (benchmarks/bench_pipeline.py).
        on_gpu = self._on_gpu = cfg.n_gpu_layers != 0 and bool(_gpu_devices(library))
        self._tokenize_threads = min(_cpu_count(), 8) if on_gpu else 1
        self._layout = tile_layout(cfg, library, on_gpu=on_gpu, budget=budget)
        self._model, self._context, self._batch, self._pooling = model, context, batch, pooling
        logger.info(
            "loaded %s (%s, %d outputs, pooling %s, n_ctx %d, n_seq_max %d) in %.2f s",
            cfg.name,
            model.description,
            context.n_embd,
            pooling.value,
            context.n_ctx,
            context.n_seq_max,
            time.perf_counter() - started,
        )
        return self

    def _choose_pooling(self, model: Model) -> PoolingStrategy:
        raise NotImplementedError

    def _prepare(self, model: Model, context: Context, max_tokens: int) -> Any:
        """Check the loaded model for this class (raise to refuse it); the result goes to :meth:`_adopt`."""
        return None

    def _adopt(self, prepared: Any) -> None:
        """Keep what :meth:`_prepare` found, once loading has succeeded."""

    def _check_batch_size(self, batch_size: int | None) -> None:
        if batch_size is not None and not is_positive_int(batch_size):
            raise ConfigurationError(f"model {self.name!r}: batch_size must be a positive int, got {batch_size!r}")

    def _check_chunk_size(self, chunk_size: int) -> None:
        if not is_positive_int(chunk_size):
            raise ConfigurationError(f"model {self.name!r}: chunk_size must be a positive int, got {chunk_size!r}")

    def _open(self, path: str | os.PathLike[str]) -> Model:
        cfg = self.config
        return Model(
            path,
            n_gpu_layers=cfg.n_gpu_layers,
            main_gpu=cfg.main_gpu,
            split_mode=cfg.split_mode,
            tensor_split=cfg.tensor_split,
            use_mmap=cfg.use_mmap,
            name=cfg.name,
        )

    def _open_weights(self) -> Model:
        """The model in the weight type ``compute_type`` asks for (a cached conversion, made once)."""
        cfg = self.config
        path, source = _pretrained.model_file(cfg)  # an hf:// reference: its file in the Hugging Face cache
        self._source = source or self._source
        library = get_library()
        offloaded = cfg.n_gpu_layers != 0 and bool(_gpu_devices(library))
        target = _convert.target_type(cfg.compute_type, library, offloaded=offloaded, source=path)
        if target is None:
            return self._open(path)
        if not Path(path).is_file():
            raise ModelNotFoundError(str(path), cfg.name)
        cached = _convert.converted_path(path, target, library)
        if cached.is_file():
            return self._open(cached)
        model = self._open(path)
        if not _convert.wants_conversion(cfg.compute_type, model.ftype, target):
            return model
        model.close()
        logger.info("model %r: converting its weights to %s once (compute_type=%r)", cfg.name, target, cfg.compute_type)
        try:
            _convert.convert_gguf(path, cached, target, library, n_threads=cfg.n_threads or 0)
        except OSError as exc:
            if cfg.compute_type != "auto":
                raise
            # auto is a speed-up, not a promise: with no writable cache, run the file as it is.
            logger.warning(
                "model %r: cannot cache its %s weights (%s); running the file as it is", cfg.name, target, exc
            )
            return self._open(path)
        return self._open(cached)

    @property
    def weights_path(self) -> Path:
        """The GGUF file in use: the model file, or its converted copy in the cache."""
        return self._require()[0].path

    def unload(self) -> None:
        """Free the context and the model (from the thread that loaded it). Idempotent."""
        if self._context is not None:
            self._context.close()
        if self._model is not None:
            self._model.close()
        self._context = self._model = self._batch = None

    close = unload

    def __enter__(self: _M) -> _M:
        return self.load()

    def __exit__(self, *exc: object) -> None:
        self.unload()

    def _require(self) -> tuple[Model, Context, Batch]:
        if self._context is None:
            self.load()
        assert self._model is not None and self._context is not None and self._batch is not None
        self._context._handle()  # thread affinity and closed checks before any work
        return self._model, self._context, self._batch

    def before_llama_calls(self, hook: Callable[[], None] | None) -> None:
        """Have ``hook()`` called on the model's thread just before the first llama.cpp call of each batch.

        The engine's workers hand out the answers of the last joined call there: the callers they wake then run
        while llama.cpp computes (it releases the GIL), not while the worker prepares the batch.

        Parameters
        ----------
        hook : callable or None
            Called with no arguments on the model's thread; None removes it.

        :meta private:
        """
        self._before_call = hook

    def _run_batch(
        self,
        tokens: Sequence[npt.NDArray[np.int32]],
        pooling: PoolingStrategy,
        norm: Normalization | float,
        batch_size: int | None,
        progress: _batch.Progress,
    ) -> Any:
        """Tokenized texts or pairs through llama.cpp, packed by length into calls of at most ``batch_size``."""
        if self._full_ctx is not None:  # only a context that started small measures the batch's longest text
            self._fit(max((len(t) for t in tokens), default=0))
        _, context, batch = self._require()
        return _batch.run_batch(
            tokens,
            context=context,
            batch=batch,
            pooling=pooling,
            norm=norm,
            budget=self._budget,
            max_seqs=min(context.n_seq_max, batch_size or context.n_seq_max),
            progress=progress,
            layout=self._layout,
            started=self._before_call,
        )

    def _fit(self, tokens: int) -> None:
        """Grow a context that started small (see :func:`_first_ctx`) until one call takes ``tokens`` tokens."""
        if self._full_ctx is not None and tokens > self._budget:
            self._grow(tokens)

    def _grow(self, tokens: int) -> None:
        """Recreate the context with room for ``tokens`` tokens a call: twice the size at least, the whole at most.

        Results do not change: each llama.cpp call starts from an empty KV cache, whatever its size.
        """
        model, old, _ = self._require()
        assert self._full_ctx is not None and self._pooling is not None
        full = self._full_ctx
        n_ctx = min(full, max(2 * old.params.n_ctx, -(-tokens // FIRST_CTX) * FIRST_CTX))
        params = context_params(self.config, model, self._pooling, self._known, n_ctx=None if n_ctx >= full else n_ctx)
        library = get_library()
        context = Context(model, params)
        try:
            budget = reserve_tokens(context.params, model.is_causal)
            batch = Batch(budget, context.n_seq_max, library=library)
        except BaseException:
            context.close()
            raise
        old.close()
        self._context, self._batch, self._budget = context, batch, budget
        self._layout = tile_layout(self.config, library, on_gpu=self._on_gpu, budget=budget)
        self._full_ctx = None if n_ctx >= full else full
        self._grown()
        logger.info("model %s: context grown to n_ctx %d for a text of %d tokens", self.name, context.n_ctx, tokens)

    def _grown(self) -> None:
        """Called once the context has grown: drop what was made for the old one."""

    # -- information ------------------------------------------------------------

    @property
    def token_budget(self) -> int:
        """Most tokens of one llama.cpp call (the model loaded): what the engine packs joined requests to.

        :meta private:
        """
        self._require()
        return self._budget

    @property
    def call_tokens(self) -> int:
        """Tokens of one llama.cpp call of short texts: the tile layout's call, else the token budget.

        :meta private:
        """
        self._require()
        return self._layout.call_tokens if self._layout is not None else self._budget

    def call_plan(self, lengths: Sequence[int]) -> list[tuple[npt.NDArray[np.intp], float]]:
        """The llama.cpp calls a batch of texts with these token counts makes, and how full each is.

        What the engine's workers read to leave a joined call's underfull tail for the next one.

        Parameters
        ----------
        lengths : sequence of int
            Each text's tokens.

        Returns
        -------
        list of (numpy.ndarray, float)
            Per call, in the order they run: the indices of its texts into ``lengths``, and its tokens over a
            call of short texts' size (the tile layout's call, else the token budget).

        :meta private:
        """
        _, context, _ = self._require()
        counts = np.asarray(lengths, dtype=np.int64)
        size = self.call_tokens
        plan = []
        for slots in _batch.plan_calls(counts, self._budget, context.n_seq_max, self._layout):
            texts = slots[slots >= 0]
            plan.append((texts, float(counts[texts].sum()) / size))
        return plan

    @property
    def tasks(self) -> list[str]:
        """The tasks of the model's LoRA adapters (``ModelConfig.lora``), sorted: what a call's ``task=`` takes."""
        self._require()
        return self._tasks.names

    @property
    def known_model(self) -> KnownModel | None:
        """The known-model table's entry this GGUF matched (its prompts, similarity, rope defaults), or None."""
        self._require()
        return self._known

    @property
    def max_sequence_length(self) -> int:
        """Most tokens of one text (special tokens included) before truncation or error."""
        self._require()
        return self._max_tokens

    @property
    def model_size(self) -> int:
        """Bytes of the model's tensors."""
        return self._require()[0].size

    @property
    def pooling(self) -> PoolingStrategy:
        """The pooling strategy in use."""
        self._require()
        assert self._pooling is not None
        return self._pooling

    @property
    def model(self) -> Model:
        """The low-level :class:`~embellama.llama.Model`."""
        return self._require()[0]

    @property
    def context(self) -> Context:
        """The low-level :class:`~embellama.llama.Context` (a causal model's default context is made again,
        larger, when a text needs more room: read it anew)."""
        return self._require()[1]
