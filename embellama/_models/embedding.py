# SPDX-License-Identifier: Apache-2.0
"""EmbeddingModel: text in, numpy vectors out."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, NamedTuple, TypeVar, overload

import numpy as np
import numpy.typing as npt

from embellama._compute import output as _output
from embellama._compute import packing as _batch
from embellama._compute import prompts as _prompts
from embellama._compute.packing import ProgressCallback
from embellama._compute.pooling import Normalization, NormalizeSpec, PoolingStrategy, parse_normalization
from embellama._compute.pooling import normalize as _normalize
from embellama._config import ModelConfig
from embellama._exceptions import ConfigurationError, InvalidInputError, ModelNotFoundError, ResourceClosedError
from embellama._gguf import convert as _convert
from embellama._gguf import reader as _gguf
from embellama._native.lib import get_library
from embellama.llama import (
    GGML_MAX_N_THREADS,
    Batch,
    Context,
    ContextParams,
    Model,
    _gpu_devices,
    reserve_tokens,
    sequences_for,
)

__all__ = ["EmbeddingModel", "LlamaModel"]

logger = logging.getLogger("embellama")

_FIRST_ROW = np.zeros(1, dtype=np.intp)

DEFAULT_CTX_CAP = 8192
"""Default n_ctx is the model's training context, but at most this many tokens."""


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class _Options(NamedTuple):
    """What one call asks beyond the texts: the prompt text, truncate_dim and precision in effect."""

    prompt: str | None
    truncate_dim: int | None
    precision: str

    @property
    def plain(self) -> bool:
        """Whether the vectors leave as they are pooled and normalized (no cut, float32)."""
        return self.truncate_dim is None and self.precision == "float32"


_PLAIN = _Options(None, None, "float32")


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
        model = self._open_weights()
        context: Context | None = None
        try:
            pooling = self._choose_pooling(model)
            context = Context(model, self._context_params(model, pooling))
            # Never more tokens per call than llama.cpp reserved its compute buffers for.
            budget = reserve_tokens(context.params, model.is_causal)
            n_ctx = context.params.n_ctx  # as asked: llama.cpp rounds its own up to a multiple of 256
            max_tokens = min(cfg.max_tokens or n_ctx, n_ctx, budget)
            if max_tokens <= len(model.special_tokens.prefix) + len(model.special_tokens.suffix):
                raise ConfigurationError(f"model {cfg.name!r}: max_tokens {max_tokens} leaves no room for text")
            batch = Batch(budget, context.n_seq_max, library=model._lib)
            prepared = self._prepare(model, context, max_tokens)
        except BaseException:
            if context is not None:
                context.close()
            model.close()
            raise
        self._budget, self._max_tokens = budget, max_tokens
        self._adopt(prepared)
        # Tokenize with several threads only while a GPU computes: on the CPU, inference already
        # keeps every core busy and tokenization is 0.3 % of embed_batch (benchmarks/bench_pipeline.py).
        on_gpu = cfg.n_gpu_layers != 0 and bool(_gpu_devices(model._lib))
        self._tokenize_threads = min(_cpu_count(), 8) if on_gpu else 1
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
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise ConfigurationError(f"model {self.name!r}: batch_size must be a positive int, got {batch_size!r}")

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
        library = get_library()
        offloaded = cfg.n_gpu_layers != 0 and bool(_gpu_devices(library))
        target = _convert.target_type(cfg.compute_type, library, offloaded=offloaded)
        if target is None:
            return self._open(cfg.model_path)
        if not Path(cfg.model_path).is_file():
            raise ModelNotFoundError(str(cfg.model_path), cfg.name)
        cached = _convert.converted_path(cfg.model_path, target, library)
        if cached.is_file():
            return self._open(cached)
        model = self._open(cfg.model_path)
        if not _convert.wants_conversion(cfg.compute_type, model.ftype, target):
            return model
        model.close()
        logger.info("model %r: converting its weights to %s once (compute_type=%r)", cfg.name, target, cfg.compute_type)
        try:
            _convert.convert_gguf(cfg.model_path, cached, target, library, n_threads=cfg.n_threads or 0)
        except OSError as exc:
            if cfg.compute_type != "auto":
                raise
            # auto is a speed-up, not a promise: with no writable cache, run the file as it is.
            logger.warning(
                "model %r: cannot cache its %s weights (%s); running the file as it is", cfg.name, target, exc
            )
            return self._open(cfg.model_path)
        return self._open(cached)

    @property
    def weights_path(self) -> Path:
        """The GGUF file in use: the model file, or its converted copy in the cache."""
        return self._require()[0].path

    def _context_params(self, model: Model, pooling: PoolingStrategy) -> ContextParams:
        """Context settings: the config's, and for the rest values llama.cpp accepts.

        Unset ``n_seq_max`` becomes the largest count up to llama.cpp's limit that divides
        the reserved micro-batch (see :func:`embellama.llama.reserve_tokens`); an explicit
        one that does not is refused when the context is created.
        """
        cfg = self.config
        causal = model.is_causal
        n_ctx = cfg.n_ctx or min(model.n_ctx_train, DEFAULT_CTX_CAP) or 512
        if cfg.n_batch:
            n_batch = cfg.n_batch
        elif causal:
            n_batch = n_ctx  # the KV cache of a causal model holds n_ctx tokens in all
        else:
            n_batch = max(-(-n_ctx // 256) * 256, 512)  # a multiple of 256 leaves room for many texts
        if n_batch < n_ctx:
            raise ConfigurationError(f"model {cfg.name!r}: n_batch ({n_batch}) < n_ctx ({n_ctx})")
        n_ubatch = cfg.n_ubatch or n_batch
        if n_ubatch > n_batch:
            raise ConfigurationError(f"model {cfg.name!r}: n_ubatch ({n_ubatch}) > n_batch ({n_batch})")
        params = ContextParams(
            n_ctx=n_ctx,
            n_batch=n_batch,
            n_ubatch=n_ubatch,
            n_seq_max=1,
            n_threads=cfg.n_threads or min(_cpu_count(), GGML_MAX_N_THREADS),
            pooling=pooling.native,
            flash_attn=cfg.flash_attn,
            offload_kqv=cfg.offload_kqv,
        )
        limit = model._lib.max_parallel_sequences()
        n_seq_max = cfg.n_seq_max or sequences_for(reserve_tokens(params, causal), limit)
        return dataclasses.replace(params, n_seq_max=n_seq_max)

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

    # -- information ------------------------------------------------------------

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
        """The low-level :class:`~embellama.llama.Context`."""
        return self._require()[1]


class EmbeddingModel(LlamaModel):
    """One GGUF embedding model with its llama.cpp context.

    >>> with EmbeddingModel(ModelConfig(model_path="all-MiniLM-L6-v2.gguf")) as m:  # doctest: +SKIP
    ...     m.embed("Hello world").shape
    (384,)

    The context belongs to the thread that loads the model (``load()``, or the first
    ``embed``); use it from that thread only, or through :class:`EmbeddingEngine`.

    Parameters
    ----------
    config : ModelConfig
        Which model and how to run it. Nothing is loaded until :meth:`load` or the first embedding.

    Raises
    ------
    ConfigurationError
        ``config`` is not a :class:`ModelConfig`.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self._norm: Normalization | float = parse_normalization(config.normalize)
        self._prompts: dict[str, str] = {}
        self._default_prompt_name: str | None = None
        self._prompt_tokens: dict[str, int] = {}

    # -- embedding-specific loading and information ------------------------------------

    def _load_prompts(self, model: Model) -> tuple[dict[str, str], str | None]:
        """The prompts in effect and the default prompt name: the GGUF's, overridden by the config's."""
        cfg, who = self.config, f"model {self.config.name!r}"
        saved_default = model.metadata_value(_prompts.DEFAULT_PROMPT_KEY)
        saved = _prompts.parse_saved_prompts(model.metadata_value(_prompts.PROMPTS_KEY), who)
        prompts = _prompts.effective_prompts(saved, cfg.prompts)
        default = cfg.default_prompt_name if cfg.default_prompt_name is not None else saved_default
        if default is not None and default not in prompts:
            raise ConfigurationError(
                f"{who}: default_prompt_name {default!r} is not among its prompts {sorted(prompts)}"
            )
        return prompts, default

    def _prepare(self, model: Model, context: Context, max_tokens: int) -> tuple[dict[str, str], str | None]:
        prompts = self._load_prompts(model)
        _output.check_truncate_dim(self.config.truncate_dim, f"model {self.name!r}", model.n_embd)
        return prompts

    def _adopt(self, prepared: tuple[dict[str, str], str | None]) -> None:
        self._prompts, self._default_prompt_name = prepared
        self._prompt_tokens = {}

    def _choose_pooling(self, model: Model) -> PoolingStrategy:
        if self.config.pooling is PoolingStrategy.RANK:
            raise ConfigurationError(
                f"model {self.name!r}: pooling 'rank' gives a cross-encoder's scores, not embeddings; use Reranker"
            )
        if self.config.pooling is not None:
            return PoolingStrategy.parse(self.config.pooling)
        named = model.pooling_type
        if named in ("mean", "cls", "last"):
            return PoolingStrategy.parse(named)
        if named == "rank":
            raise ConfigurationError(
                f"model {self.name!r} is a reranker (pooling 'rank'): score pairs with Reranker, or pass "
                "pooling= explicitly to embed with its hidden states anyway"
            )
        labels = f"{model.architecture}.classifier.output_labels"  # llama.cpp's metadata API omits arrays
        if _gguf.read_header(model.path).array_length(labels) is not None:
            raise ConfigurationError(
                f"model {self.name!r} is a reranker (it has a classification head's labels): score pairs with "
                "Reranker, or pass pooling= explicitly to embed with its hidden states anyway"
            )
        fallback = PoolingStrategy.LAST if model.is_causal else PoolingStrategy.MEAN
        logger.warning("model %r names no pooling in its metadata; using %s", self.name, fallback.value)
        return fallback

    @property
    def embedding_dimensions(self) -> int:
        """Length of each embedding vector."""
        return self._require()[0].n_embd

    @property
    def prompts(self) -> dict[str, str]:
        """The prompts in effect (name to text): ``query`` and ``document`` (empty unless set), the GGUF's
        (``embellama.prompts``), then ``ModelConfig.prompts``."""
        self._require()
        return dict(self._prompts)

    @property
    def default_prompt_name(self) -> str | None:
        """The prompt applied when a call names none (``ModelConfig.default_prompt_name``, else the GGUF's)."""
        self._require()
        return self._default_prompt_name

    # -- tokens -------------------------------------------------------------------

    def tokenize(self, text: str, *, truncate: bool | None = None) -> npt.NDArray[np.int32]:
        """Token ids exactly as :meth:`embed` feeds them to the model (special tokens included).

        Parameters
        ----------
        text : str
            The text.
        truncate : bool, optional
            Cut at ``max_sequence_length`` instead of raising; default ``ModelConfig.truncate``.

        Returns
        -------
        numpy.ndarray
            int32 token ids.

        Raises
        ------
        InvalidInputError
            The text is empty, not a str, or too long with ``truncate=False``.
        """
        model, _, _ = self._require()
        return self._tokenize(model, text, None, self.config.truncate if truncate is None else truncate)

    def _tokenize(
        self, model: Model, text: Any, index: int | None, truncate: bool, prompt: str | None = None
    ) -> npt.NDArray[np.int32]:
        if not isinstance(text, str):
            raise InvalidInputError(f"expected str, got {type(text).__name__}", self.name, index)
        if not text:
            raise InvalidInputError("text is empty", self.name, index)
        if prompt:
            text = prompt + text  # as sentence-transformers: the prompt is part of the text, cut last
        try:
            ids = model.tokenize(text, add_special=True, parse_special=self.config.parse_special)
        except InvalidInputError as exc:
            raise InvalidInputError(exc.reason, self.name, index) from None
        limit = self._max_tokens
        if len(ids) > limit:
            if not truncate:
                raise InvalidInputError(
                    f"text has {len(ids)} tokens; the limit is {limit} (set truncate=True to cut it)",
                    self.name,
                    index,
                )
            ids = truncate_tokens(ids, limit, model.special_tokens.suffix)
        return ids

    # -- embeddings -----------------------------------------------------------------

    def embed(
        self,
        text: str,
        *,
        normalize: NormalizeSpec | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        truncate_dim: int | None = None,
        precision: str | None = None,
    ) -> npt.NDArray[Any]:
        """Embedding of one text: shape ``(dim,)``, or ``(n_tokens, dim)`` with pooling NONE.

        Parameters
        ----------
        text : str
            The text.
        normalize : bool, str or float, optional
            Normalization instead of ``ModelConfig.normalize`` (the same values).
        prompt_name, prompt, truncate_dim, precision
            As for :meth:`embed_batch` (int8/uint8 need several texts to calibrate on).

        Returns
        -------
        numpy.ndarray
            float32 vector (of ``truncate_dim`` dimensions when given); int8/uint8 with ``precision``.

        Raises
        ------
        InvalidInputError, ModelNotFoundError, ModelLoadError, ThreadAffinityError, EmbeddingError, ConfigurationError
            As for :meth:`embed_batch`.
        """
        model, context, batch = self._require()
        norm = self._norm if normalize is None else parse_normalization(normalize)
        options = self._options(prompt_name, prompt, truncate_dim, precision)
        assert self._pooling is not None
        if self._pooling.native == "none":  # pooled in numpy, or token vectors: the batch pipeline
            return self._run([text], 0, None, norm, _batch.Progress(1, self.name, False), options)[0]  # type: ignore[no-any-return]
        # One text, one llama.cpp call: the batch pipeline's steps without its packing and bookkeeping.
        ids = self._tokenize(model, text, None, self.config.truncate, options.prompt)
        batch.fill((ids,))
        context.process(batch)
        out = np.empty((1, context.n_embd), dtype=np.float32)
        context.copy_sequence_embeddings(out, _FIRST_ROW)
        if options.plain:
            return _normalize(out, norm)[0]
        return _output.finish(out, options.truncate_dim, norm, options.precision, self.name)[0]  # type: ignore[no-any-return]

    def _options(
        self, prompt_name: str | None, prompt: str | None, truncate_dim: int | None, precision: str | None
    ) -> _Options:
        """A call's prompt text, truncate_dim and precision: its own, else the config's (model loaded)."""
        who = f"model {self.name!r}"
        text = _prompts.resolve_prompt(self._prompts, self._default_prompt_name, prompt, prompt_name, who)
        if text:
            self._check_prompt(text)
        dim = self._model.n_embd if self._model is not None else None
        cut = _output.check_truncate_dim(self.config.truncate_dim if truncate_dim is None else truncate_dim, who, dim)
        kind = _output.check_precision(self.config.precision if precision is None else precision, who)
        return _Options(text or None, None if cut == dim else cut, kind)

    def _check_prompt(self, prompt: str) -> None:
        """A prompt must leave room for text within max_tokens: truncation never cuts into it."""
        count = self._prompt_tokens.get(prompt)
        if count is None:
            assert self._model is not None
            count = len(self._model.tokenize(prompt, add_special=True, parse_special=self.config.parse_special))
            self._prompt_tokens[prompt] = count
        if count >= self._max_tokens:
            raise ConfigurationError(
                f"model {self.name!r}: the prompt {prompt[:40]!r} takes {count} tokens with the special tokens, "
                f"leaving no room for text within max_tokens ({self._max_tokens})"
            )

    def embed_batch(
        self,
        texts: Sequence[str],
        *,
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
        normalize: NormalizeSpec | None = None,
        progress: ProgressCallback | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        truncate_dim: int | None = None,
        precision: str | None = None,
    ) -> Any:
        """Embeddings of several texts, in order: float32 array of shape ``(n, dim)``.

        Every text is checked and tokenized before any inference; the texts are then packed
        into llama.cpp calls by length. With pooling NONE the result is a list of
        ``(n_tokens_i, dim)`` arrays instead. ``batch_size`` caps the texts per llama.cpp call
        (default: as many as fit). ``progress(done, total)`` is called after each call, the
        last time with ``(total, total)``; ``show_progress_bar`` draws a bar (tqdm if installed).

        Parameters
        ----------
        texts : sequence of str
            The texts (a list or tuple; not a single str).
        batch_size : int, optional
            Most texts per llama.cpp call; default: as many as fit.
        show_progress_bar : bool, optional
            Draw a progress bar on stderr; default: when the ``embellama`` logger shows INFO.
        normalize : bool, str or float, optional
            Normalization instead of ``ModelConfig.normalize`` (the same values).
        progress : callable, optional
            ``progress(done, total)``, called on this thread after each llama.cpp call.
        prompt_name : str, optional
            Prepend the model's prompt of that name (see :attr:`prompts`); default: ``default_prompt_name``'s.
        prompt : str, optional
            Prepend this text (wins over ``prompt_name``). Prompts count toward ``max_tokens`` and are never cut.
        truncate_dim : int, optional
            Keep the first dimensions, cut before normalization; default ``ModelConfig.truncate_dim``.
        precision : str, optional
            "float32", "int8", "uint8", "binary" or "ubinary" (as sentence-transformers' ``quantize_embeddings``:
            int8/uint8 ranges from these texts' vectors); default ``ModelConfig.precision``.

        Returns
        -------
        numpy.ndarray or list of numpy.ndarray
            float32, shape ``(len(texts), dim)`` (int8/uint8 with ``precision``, ``ceil(dim / 8)`` columns for the
            binary kinds, ``truncate_dim`` for ``dim``); with pooling NONE one ``(n_tokens_i, dim)`` array per text.

        Raises
        ------
        InvalidInputError
            A text is empty, not a str, not valid Unicode, or too long with ``truncate=False`` (the message
            names the model and the text's index).
        ModelNotFoundError, ModelLoadError
            The first call loads the model, and it could not be loaded.
        ThreadAffinityError
            Called from another thread than the one that loaded the model.
        EmbeddingError
            llama.cpp failed (its return code and the text's length are in the message).
        ConfigurationError
            A bad ``batch_size``, ``normalize``, ``truncate_dim`` (above the dimensions) or ``precision``, an unknown
            ``prompt_name`` (the message lists the model's), a prompt that leaves no room for text, or
            ``truncate_dim``/``precision`` with pooling NONE.
        """
        if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
            raise InvalidInputError(f"embed_batch expects a sequence of str, got {type(texts).__name__}", self.name)
        self._require()
        options = self._options(prompt_name, prompt, truncate_dim, precision)
        return self._run(
            texts,
            0,
            batch_size,
            normalize,
            _batch.Progress(len(texts), self.name, show_progress_bar, progress),
            options,
        )

    def embed_iter(
        self,
        texts: Iterable[str],
        *,
        chunk_size: int = 1024,
        batch_size: int | None = None,
        normalize: NormalizeSpec | None = None,
        show_progress_bar: bool | None = None,
        progress: ProgressCallback | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        truncate_dim: int | None = None,
        precision: str | None = None,
    ) -> Iterator[Any]:
        """Stream embeddings: one ``(chunk, dim)`` array per ``chunk_size`` texts, in input order.

        For inputs that do not fit in memory: at most two chunks of texts (while a GPU computes,
        the next one is tokenized on a second thread as this one runs) and one of vectors are held. A bad
        text raises :class:`InvalidInputError` with its index in the whole stream when its
        chunk is reached (earlier chunks have been yielded by then).

        Parameters
        ----------
        texts : iterable of str
            Any iterable, read lazily, ``chunk_size`` texts at a time.
        chunk_size : int, optional
            Texts per yielded array.
        batch_size, normalize, show_progress_bar, progress, prompt_name, prompt, truncate_dim, precision
            As for :meth:`embed_batch`; ``progress`` gets ``total=None`` while the stream's length is unknown.
            ``precision`` int8/uint8 is refused: each chunk would get its own ranges (quantize the float32
            chunks with :func:`embellama.quantize_embeddings` and fixed ``ranges`` instead).

        Yields
        ------
        numpy.ndarray
            float32, shape ``(len(chunk), dim)`` (with pooling NONE, a list of per-token arrays).

        Raises
        ------
        ConfigurationError
            A bad ``chunk_size``, ``batch_size``, ``normalize``, prompt, ``truncate_dim`` or ``precision``.
        InvalidInputError
            ``texts`` is a str itself, or a text is invalid (its index in the whole stream).
        ModelNotFoundError, ModelLoadError, ThreadAffinityError, EmbeddingError
            As for :meth:`embed_batch`.
        """
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ConfigurationError(f"model {self.name!r}: chunk_size must be a positive int, got {chunk_size!r}")
        if isinstance(texts, (str, bytes)):
            raise InvalidInputError(f"embed_iter expects an iterable of str, got {type(texts).__name__}", self.name)
        total = len(texts) if isinstance(texts, Sized) else None
        self._require()  # loads the model on this thread, which then owns its context
        self._check_batch_size(batch_size)
        norm = self._norm if normalize is None else parse_normalization(normalize)
        options = self._options(prompt_name, prompt, truncate_dim, precision)
        if options.precision in _output.CALIBRATED:
            raise ConfigurationError(
                f"model {self.name!r}: embed_iter cannot give {options.precision}: each chunk would be calibrated on "
                "its own ranges; embed float32 and use quantize_embeddings(..., ranges=...), or embed_batch"
            )
        tracker = _batch.Progress(total, self.name, show_progress_bar, progress)
        source = iter(texts)
        finished = False
        # While a GPU computes, chunk k+1 is tokenized on a second thread as chunk k runs (always
        # finished before chunk k is yielded: nothing runs while the caller holds the stream). On
        # the CPU the overlap measured 0.91-1.02x (benchmarks/bench_pipeline.py): one thread does both.
        pool: Any = _Inline()
        if self._tokenize_threads > 1:
            pool = ThreadPoolExecutor(1, thread_name_prefix="embellama-tokenize")
        try:
            chunk = list(itertools.islice(source, chunk_size))
            pending = pool.submit(self._tokens, chunk, 0, 1, options.prompt) if chunk else None
            offset = 0
            while pending is not None:
                tokens = pending.result()  # a bad text raises here, once the chunks before it are out
                offset += len(tokens)
                source_error: BaseException | None = None
                try:
                    chunk = list(itertools.islice(source, chunk_size))
                except Exception as exc:  # the caller's iterable failed: first hand out what is done
                    source_error, chunk = exc, []
                pending = pool.submit(self._tokens, chunk, offset, 1, options.prompt) if chunk else None
                try:
                    result = self._infer(tokens, batch_size, norm, tracker, options)
                finally:
                    if pending is not None:
                        wait([pending])
                yield result
                if source_error is not None:
                    raise source_error
            finished = True
        finally:
            pool.shutdown(wait=True)
            tracker.close(report=finished)  # a stream stopped early closes its bar without a final report

    def _run(
        self,
        texts: Sequence[Any],
        offset: int,
        batch_size: int | None,
        normalize: NormalizeSpec | None,
        progress: _batch.Progress,
        options: _Options,
    ) -> Any:
        """Check, tokenize and embed ``texts`` (indices in errors count from ``offset``)."""
        self._require()
        self._check_batch_size(batch_size)
        norm = self._norm if normalize is None else parse_normalization(normalize)
        tokens = self._tokens(texts, offset, self._tokenize_threads, options.prompt)
        result = self._infer(tokens, batch_size, norm, progress, options)
        progress.close()
        return result

    def _tokens(
        self, texts: Sequence[Any], offset: int, threads: int, prompt: str | None = None
    ) -> list[npt.NDArray[np.int32]]:
        """Every text checked and tokenized; reads only the vocabulary, so any thread may call it."""
        model, truncate = self._model, self.config.truncate
        if model is None:
            raise ResourceClosedError(f"model {self.name!r} was unloaded")
        return _batch.tokenize_all(
            texts, lambda text, i: self._tokenize(model, text, offset + i, truncate, prompt), threads
        )

    def embed_token_ids(self, token_ids: Sequence[npt.NDArray[np.int32]]) -> Any:
        """Embed texts given as token ids, with the model's pooling and normalization.

        Parameters
        ----------
        token_ids : sequence of array_like
            One array of token ids per text, special tokens included: non-empty, each id in
            ``[0, n_vocab)`` and at most :attr:`max_sequence_length` ids.

        Returns
        -------
        numpy.ndarray or list of numpy.ndarray
            ``(len(token_ids), dim)`` float32 vectors; with pooling NONE, one ``(tokens, dim)``
            array per text.

        Raises
        ------
        InvalidInputError
            An array is empty, longer than the limit, or holds an id outside the vocabulary
            (naming the model and the array's index).
        ResourceClosedError
            The model was closed.
        """
        model, _, _ = self._require()
        n_vocab, limit = model.n_vocab, self._max_tokens
        arrays = []
        for i, ids in enumerate(token_ids):
            array = np.asarray(ids)
            if array.ndim != 1 or array.size == 0 or not np.issubdtype(array.dtype, np.integer):
                raise InvalidInputError("token ids must be a non-empty 1-D array of ints", self.name, i)
            if int(array.min()) < 0 or int(array.max()) >= n_vocab:
                raise InvalidInputError(f"token ids must be in [0, {n_vocab})", self.name, i)
            if array.size > limit:
                raise InvalidInputError(f"token array has {array.size} tokens; the limit is {limit}", self.name, i)
            arrays.append(array.astype(np.int32))
        return self._infer(arrays, None, self._norm, _batch.Progress(len(arrays), self.name, False))

    def _infer(
        self,
        tokens: Sequence[npt.NDArray[np.int32]],
        batch_size: int | None,
        norm: Normalization | float,
        progress: _batch.Progress,
        options: _Options = _PLAIN,
    ) -> Any:
        _, context, batch = self._require()
        assert self._pooling is not None
        if not options.plain and self._pooling is PoolingStrategy.NONE:
            raise ConfigurationError(
                f"model {self.name!r}: truncate_dim and precision need one vector per text, not pooling NONE"
            )
        result = _batch.run_batch(
            tokens,
            context=context,
            batch=batch,
            pooling=self._pooling,
            norm=norm if options.plain else Normalization.NONE,  # else: cut first, then normalize
            budget=self._budget,
            max_seqs=min(context.n_seq_max, batch_size or context.n_seq_max),
            progress=progress,
        )
        if options.plain:
            return result
        return _output.finish(result, options.truncate_dim, norm, options.precision, self.name)

    @overload
    def encode(
        self,
        sentences: str,
        batch_size: int | None = ...,
        show_progress_bar: bool | None = ...,
        normalize_embeddings: bool = ...,
        progress: ProgressCallback | None = ...,
        *,
        prompt_name: str | None = ...,
        prompt: str | None = ...,
        precision: str | None = ...,
        truncate_dim: int | None = ...,
    ) -> npt.NDArray[Any]: ...

    @overload
    def encode(
        self,
        sentences: Sequence[str],
        batch_size: int | None = ...,
        show_progress_bar: bool | None = ...,
        normalize_embeddings: bool = ...,
        progress: ProgressCallback | None = ...,
        *,
        prompt_name: str | None = ...,
        prompt: str | None = ...,
        precision: str | None = ...,
        truncate_dim: int | None = ...,
    ) -> npt.NDArray[Any]: ...

    def encode(
        self,
        sentences: str | Sequence[str],
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
        normalize_embeddings: bool = False,
        progress: ProgressCallback | None = None,
        *,
        prompt_name: str | None = None,
        prompt: str | None = None,
        precision: str | None = None,
        truncate_dim: int | None = None,
    ) -> npt.NDArray[Any]:
        """sentence-transformers-style ``encode``: a str gives ``(dim,)``, a list ``(n, dim)``.

        As in sentence-transformers, the model's own pipeline decides the output (here
        ``ModelConfig.normalize``, like a Normalize module), and ``normalize_embeddings=True``
        L2-normalizes on top of it. ``prompt_name``/``prompt`` pick the prompt as there (``prompt`` wins; else
        ``default_prompt_name``'s), ``truncate_dim`` cuts before normalizing, ``precision`` quantizes last.

        Parameters
        ----------
        sentences : str or sequence of str
            One text or several.
        batch_size, show_progress_bar, progress
            As for :meth:`embed_batch`.
        normalize_embeddings : bool, optional
            L2-normalize the model's output once more.
        prompt_name, prompt, precision, truncate_dim
            As for :meth:`embed_batch`.

        Returns
        -------
        numpy.ndarray
            float32 (or the ``precision``'s type), shape ``(dim,)`` for a str, ``(len(sentences), dim)`` for a sequence.

        Raises
        ------
        ConfigurationError
            ``normalize_embeddings`` is not a bool, the pooling is NONE (no single vector per text), or a bad prompt,
            ``truncate_dim`` or ``precision``.
        InvalidInputError, ModelNotFoundError, ModelLoadError, ThreadAffinityError, EmbeddingError
            As for :meth:`embed_batch`.
        """
        if not isinstance(normalize_embeddings, bool):
            raise ConfigurationError(
                f"model {self.name!r}: normalize_embeddings must be a bool, got {normalize_embeddings!r}"
            )
        norm: NormalizeSpec | None = Normalization.L2 if normalize_embeddings else None
        options: dict[str, Any] = {
            "normalize": norm,
            "prompt_name": prompt_name,
            "prompt": prompt,
            "truncate_dim": truncate_dim,
            "precision": precision,
        }
        if isinstance(sentences, str):
            return self.embed(sentences, **options)
        result = self.embed_batch(
            sentences, batch_size=batch_size, show_progress_bar=show_progress_bar, progress=progress, **options
        )
        if isinstance(result, list):
            raise ConfigurationError(f"model {self.name!r}: encode() needs a pooling other than NONE")
        return result  # type: ignore[no-any-return]

    def encode_query(
        self,
        sentences: str | Sequence[str],
        *,
        prompt_name: str | None = None,
        prompt: str | None = None,
        **kwargs: Any,
    ) -> npt.NDArray[Any]:
        """:meth:`encode` with the model's ``query`` prompt, as sentence-transformers' ``encode_query``.

        With neither ``prompt_name`` nor ``prompt``, the ``query`` prompt is used (an empty one unless the GGUF or
        ``ModelConfig.prompts`` set it; it then overrides ``default_prompt_name``).

        Parameters
        ----------
        sentences : str or sequence of str
            One query or several.
        prompt_name, prompt : str, optional
            As for :meth:`encode`, to use another prompt.
        **kwargs
            The other arguments of :meth:`encode`.

        Returns
        -------
        numpy.ndarray
            As :meth:`encode` returns.

        Raises
        ------
        ConfigurationError, InvalidInputError, ModelNotFoundError, ModelLoadError, ThreadAffinityError, EmbeddingError
            As for :meth:`encode`.
        """
        self._require()
        if prompt_name is None and prompt is None and "query" in self._prompts:
            prompt_name = "query"
        return self.encode(sentences, prompt_name=prompt_name, prompt=prompt, **kwargs)

    def encode_document(
        self,
        sentences: str | Sequence[str],
        *,
        prompt_name: str | None = None,
        prompt: str | None = None,
        **kwargs: Any,
    ) -> npt.NDArray[Any]:
        """:meth:`encode` with the model's document prompt, as sentence-transformers' ``encode_document``.

        With neither ``prompt_name`` nor ``prompt``, the first of the prompts ``document``, ``passage`` and
        ``corpus`` the model has is used (``document`` is always there: empty unless set).

        Parameters
        ----------
        sentences : str or sequence of str
            One document or several.
        prompt_name, prompt : str, optional
            As for :meth:`encode`, to use another prompt.
        **kwargs
            The other arguments of :meth:`encode`.

        Returns
        -------
        numpy.ndarray
            As :meth:`encode` returns.

        Raises
        ------
        ConfigurationError, InvalidInputError, ModelNotFoundError, ModelLoadError, ThreadAffinityError, EmbeddingError
            As for :meth:`encode`.
        """
        self._require()
        if prompt_name is None and prompt is None:
            prompt_name = _prompts.document_prompt_name(self._prompts)
        return self.encode(sentences, prompt_name=prompt_name, prompt=prompt, **kwargs)

    def __repr__(self) -> str:
        state = "loaded" if self.is_loaded else "not loaded"
        return f"<EmbeddingModel {self.name!r} {state}>"


class _Inline:
    """The part of an executor ``embed_iter`` uses, running each call at once on the calling thread."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True) -> None:
        pass


def truncate_tokens(ids: npt.NDArray[np.int32], limit: int, suffix: Sequence[int]) -> npt.NDArray[np.int32]:
    """Cut ``ids`` to ``limit`` tokens, keeping the vocabulary's trailing specials ([SEP], EOS)."""
    if len(ids) <= limit:
        return ids
    tail = np.asarray(suffix, dtype=np.int32)
    return np.concatenate([ids[: limit - len(tail)], tail])
