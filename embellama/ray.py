# SPDX-License-Identifier: Apache-2.0
"""Embeddings of a whole Ray Data dataset: one model per actor, as many actors as the cluster holds.

``ray[data]`` is an optional extra (``pip install "embellama[ray]"``); nothing here imports
ray before it is needed, and ``import embellama`` never does.

>>> import ray.data  # doctest: +SKIP
>>> from embellama import ModelConfig
>>> from embellama.ray import embed_dataset
>>> ds = ray.data.read_parquet("passages/")  # doctest: +SKIP
>>> embed_dataset(ds, ModelConfig(model_path="/shared/minilm.gguf")).write_parquet("vectors/")  # doctest: +SKIP

Each actor owns one :class:`~embellama.EmbeddingModel` (inside an
:class:`~embellama.EmbeddingEngine`, so the llama.cpp context stays on one thread whatever thread
Ray calls the actor from), reads a text column and appends a ``fixed_size_list<float32>[dim]``
column, keeping every other column and the row order of each batch.

With ``output_kind="sparse"`` (a SPLADE or bge-m3 sparse model) the actor appends two list columns,
``<output_column>_indices`` (``list<int32>``) and ``<output_column>_values`` (``list<float32>``); with
``output_kind="multi"`` (a ColBERT model) one ``list<fixed_size_list<float32>[dim]>`` column: each row's token
vectors.

:func:`rerank_dataset` does the same with a reranker: each actor (a :class:`RerankScorer`) owns one
:class:`~embellama.Reranker` and appends the score of each row's (query, document) pair.

>>> from embellama.ray import rerank_dataset
>>> pairs = ray.data.read_parquet("candidates/")  # doctest: +SKIP
>>> rerank_dataset(pairs, ModelConfig(model_path="/shared/reranker.gguf")).write_parquet("scored/")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import socket
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt

from embellama._compute import output as _output
from embellama._config import ModelConfig, PoolingStrategy
from embellama._engine import EmbeddingEngine
from embellama._exceptions import (
    ConfigurationError,
    EmbellamaError,
    InvalidInputError,
    LibraryError,
    ModelLoadError,
    ModelNotFoundError,
)
from embellama._models import DEFAULT_CTX_CAP, Reranker, context_params, is_reranker, resolve_config
from embellama._native import ENV_LIB, Library, load_library
from embellama.llama import Model

if TYPE_CHECKING:
    from ray.data import Dataset

__all__ = [
    "ActorPlan",
    "Embedder",
    "RerankScorer",
    "ShippedModel",
    "embed_dataset",
    "embedding_matrix",
    "plan_actors",
    "rerank_dataset",
    "ship_model",
]

logger = logging.getLogger("embellama")
T = TypeVar("T")

DEFAULT_TEXTS_PER_CALL = 256
"""Rows per Ray batch when the model's packing cannot be read on the driver (llama.cpp's sequence limit)."""
_GPU_BACKENDS = ("cuda", "metal", "vulkan", "gpu")
_INSTALL_HINT = 'embellama.ray needs Ray Data: pip install "embellama[ray]" (or "ray[data]")'


def _ray() -> Any:
    """The ``ray`` module, imported on first use."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ImportError(f"{_INSTALL_HINT} ({exc})") from exc
    return ray


def _as_config(config: ModelConfig | Mapping[str, Any] | None, fields: Mapping[str, Any]) -> ModelConfig:
    """A ModelConfig from a config, a mapping of its fields, or keyword fields (which override)."""
    if config is None:
        return ModelConfig(**fields)
    if isinstance(config, ModelConfig):
        return dataclasses.replace(config, **fields) if fields else config
    if isinstance(config, Mapping):
        return ModelConfig(**{**config, **fields})
    raise ConfigurationError(f"expected a ModelConfig or a mapping of its fields, got {type(config).__name__}")


def _check_column(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{what} must be a non-empty str, got {value!r}")
    return value


def embedding_matrix(column: Any) -> npt.NDArray[np.float32]:
    """An embedding column as one ``(rows, dim)`` float32 array.

    Takes what the readers give back: a pyarrow ``fixed_size_list`` (Chunked)Array (``pyarrow.parquet``,
    ``Dataset.to_arrow_refs``), a numpy object array of vectors (Ray's numpy batches), a 2-D array
    (Ray's tensor columns) or a list of vectors (``take_all`` rows).

    Parameters
    ----------
    column : pyarrow.Array, pyarrow.ChunkedArray, numpy.ndarray or list
        The embedding column, as a reader returned it.

    Returns
    -------
    numpy.ndarray
        float32 (int8/uint8 for a column of such, from ``precision=``), shape ``(rows, dim)``, C-contiguous.

    Raises
    ------
    InvalidInputError
        The column has null rows.
    """
    if hasattr(column, "combine_chunks"):
        column = column.combine_chunks()
    if hasattr(column, "flatten") and hasattr(column, "type") and hasattr(column.type, "list_size"):
        if column.null_count:
            raise InvalidInputError(f"the embedding column has {column.null_count} null row(s)")
        flat = column.flatten().to_numpy(zero_copy_only=False)
        kind = flat.dtype if flat.dtype in (np.int8, np.uint8) else np.float32  # precision= columns keep their type
        return np.ascontiguousarray(flat, dtype=kind).reshape(len(column), column.type.list_size)
    if isinstance(column, np.ndarray) and column.dtype != object:
        return np.ascontiguousarray(column, dtype=np.float32)
    rows = list(column)
    if not rows:
        return np.empty((0, 0), dtype=np.float32)
    return np.stack([np.asarray(row, dtype=np.float32) for row in rows])


# -- shipping the model through the object store -------------------------------------------


@dataclasses.dataclass(frozen=True)
class ShippedModel:
    """A GGUF file put in Ray's object store by :func:`ship_model`.

    The first actor on each node writes it to a node-local cache file (checked against
    ``sha256``, written atomically); the other actors of that node reuse the file.

    Parameters
    ----------
    ref : ray.ObjectRef
        The file's bytes (a uint8 array) in the object store.
    file_name : str
        The file's name, kept in the node-local copy's name.
    sha256 : str
        Hex digest of the bytes, checked on every node before the file is used.
    size : int
        Bytes.
    """

    ref: Any
    file_name: str
    sha256: str
    size: int


def ship_model(path: str | os.PathLike[str]) -> ShippedModel:
    """Put the GGUF at ``path`` (a file the driver can read) into Ray's object store.

    The object store of every node that runs an actor then holds a copy while the job
    runs: fine for models of a few GB; beyond that, use shared storage.

    Parameters
    ----------
    path : str or os.PathLike
        The GGUF file.

    Returns
    -------
    ShippedModel
        What :class:`Embedder` takes as ``shipped``.

    Raises
    ------
    ModelNotFoundError
        ``path`` is not a file.
    """
    return _put_model(path)


def _put_model(path: str | os.PathLike[str]) -> ShippedModel:
    ray = _ray()
    file = Path(path)
    if not file.is_file():
        raise ModelNotFoundError(str(file))
    data = np.fromfile(file, dtype=np.uint8)
    digest = hashlib.sha256(data.data).hexdigest()
    return ShippedModel(ref=ray.put(data), file_name=file.name, sha256=digest, size=int(data.size))


def _materialize(shipped: ShippedModel, cache_dir: str | os.PathLike[str] | None) -> Path:
    """The node-local file of a shipped model, written from the object store if missing."""
    folder = Path(cache_dir) if cache_dir is not None else Path(tempfile.gettempdir()) / "embellama-ray"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{shipped.sha256[:16]}-{shipped.file_name}"
    if target.is_file() and target.stat().st_size == shipped.size:
        return target  # written whole by an earlier actor (renamed into place only once complete)
    data = _ray().get(shipped.ref)
    view = np.ascontiguousarray(data, dtype=np.uint8).data
    if hashlib.sha256(view).hexdigest() != shipped.sha256:
        raise ModelLoadError(str(target), "the shipped bytes do not match their sha256", None)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    with open(partial, "wb") as f:
        f.write(view)
    os.replace(partial, target)
    return target


OUTPUT_KINDS = ("dense", "sparse", "multi")
"""What :class:`Embedder` appends: one vector per text, a sparse vector (two list columns) or token vectors."""
_KINDS = {"dense": "embedding", "sparse": "sparse", "multi": "multi_vector"}


def _check_output_kind(value: object) -> str:
    if value not in OUTPUT_KINDS:
        raise ConfigurationError(f"output_kind must be one of {', '.join(OUTPUT_KINDS)}, got {value!r}")
    return str(value)


def output_names(output_column: str, output_kind: str) -> list[str]:
    """The columns :class:`Embedder` appends: ``output_column``, or for sparse output its ``_indices`` and
    ``_values`` columns."""
    if output_kind == "sparse":
        return [f"{output_column}_indices", f"{output_column}_values"]
    return [output_column]


class Ragged(NamedTuple):
    """A column of one array per row, stored flat: row ``i`` is ``values[offsets[i]:offsets[i + 1]]``."""

    offsets: npt.NDArray[np.int32]
    values: npt.NDArray[Any]  # (total,) or (total, width)

    @classmethod
    def of(cls, rows: Sequence[npt.NDArray[Any]], dtype: Any, tail: tuple[int, ...]) -> Ragged:
        """The rows (each ``(n_i, *tail)``) joined."""
        offsets = np.zeros(len(rows) + 1, dtype=np.int32)
        np.cumsum([len(r) for r in rows], out=offsets[1:])
        flat = np.concatenate(rows).astype(dtype, copy=False) if rows else np.zeros((0, *tail), dtype=dtype)
        return cls(offsets, flat)

    def rows(self) -> list[npt.NDArray[Any]]:
        """One array per row."""
        return np.split(self.values, self.offsets[1:-1]) if len(self.offsets) > 1 else []

    def arrow(self) -> Any:
        """A pyarrow ``list<...>`` array: of the values' type, or of ``fixed_size_list<...>[width]`` rows."""
        import pyarrow as pa

        flat = pa.array(self.values.reshape(-1), type=pa.from_numpy_dtype(self.values.dtype))
        if self.values.ndim == 2:
            flat = pa.FixedSizeListArray.from_arrays(flat, self.values.shape[1])
        return pa.ListArray.from_arrays(pa.array(self.offsets, type=pa.int32()), flat)


# -- the callable class for map_batches ------------------------------------------------------


class Embedder:
    """Callable class for ``Dataset.map_batches``: one embedding model per actor.

    >>> ds.map_batches(Embedder, fn_constructor_kwargs={"config": config}, batch_format="pyarrow",
    ...                compute=ray.data.ActorPoolStrategy(size=4), num_cpus=1)  # doctest: +SKIP

    Takes a ModelConfig, a mapping of its fields, or the fields as keywords (``model_path=...``;
    keywords override the config's). Batches may be ``pyarrow.Table`` (what :func:`embed_dataset`
    uses: the new column is ``fixed_size_list<float32>[dim]``), ``dict[str, numpy.ndarray]`` (a
    ``(rows, dim)`` float32 array) or ``pandas.DataFrame`` (one float32 array per row). Every other
    column is kept, and the rows keep their order.

    Errors name the model, the column and, with ``id_column``, the row's id; ``input #i`` is the
    row's position in its batch. The library (``$EMBELLAMA_LIB`` on the worker) is loaded and
    ABI-checked, and the model loaded, when the actor starts, so a worker that cannot do either
    fails the job with embellama's message.

    Parameters
    ----------
    config : ModelConfig or mapping, optional
        The model, or a mapping of ``ModelConfig`` fields.
    text_column : str, optional
        The column of texts.
    output_column : str, optional
        The column to add; it must not exist yet.
    id_column : str, optional
        A column that identifies rows in error messages.
    texts_per_call : int, optional
        Most texts per llama.cpp call; default: as many as fit.
    shipped : ShippedModel, optional
        The model file from :func:`ship_model`, written once per node to ``cache_dir`` and used instead
        of ``config.model_path``.
    cache_dir : str or os.PathLike, optional
        Where shipped models are written; default: a folder in the system temp folder.
    prompt_name, prompt : str, optional
        The prompt prepended to every text, as for :meth:`embellama.EmbeddingModel.embed_batch`.
    output_kind : {"dense", "sparse", "multi"}, optional
        One vector per text (default); a sparse model's vectors as two list columns ``<output_column>_indices``
        and ``<output_column>_values`` (:meth:`embellama.EmbeddingEngine.embed_sparse`); or a multi-vector model's
        token vectors, a list of ``dim``-wide arrays per row (:meth:`embellama.EmbeddingEngine.embed_multi`, as
        documents). Ragged outputs are lists of arrays in numpy and pandas batches.
    **fields
        ``ModelConfig`` fields, overriding ``config``'s (``truncate_dim``, ``precision`` among them: the column is
        then ``fixed_size_list<int8 or uint8>`` for the quantized types, ``ceil(dim / 8)`` wide for the binary ones).

    Raises
    ------
    ConfigurationError
        A bad column name, ``texts_per_call`` or config, pooling NONE (one vector per token), an unknown prompt, or
        precision int8/uint8 (each batch would get its own ranges).
    LibraryError
        No usable libllama on this node (the message names the node).
    ModelNotFoundError
        The GGUF is not at ``config.model_path`` on this node (the message says how to make it visible).
    ModelLoadError
        llama.cpp could not load it, or a shipped file's bytes do not match their sha256.
    """

    def __init__(
        self,
        config: ModelConfig | Mapping[str, Any] | None = None,
        *,
        text_column: str = "text",
        output_column: str = "embedding",
        id_column: str | None = None,
        texts_per_call: int | None = None,
        shipped: ShippedModel | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        output_kind: str = "dense",
        **fields: Any,
    ) -> None:
        self.text_column = _check_column(text_column, "text_column")
        self.output_column = _check_column(output_column, "output_column")
        self.output_kind = _check_output_kind(output_kind)
        self.output_columns = output_names(self.output_column, self.output_kind)
        self.id_column = None if id_column is None else _check_column(id_column, "id_column")
        if texts_per_call is not None and (not isinstance(texts_per_call, int) or texts_per_call < 1):
            raise ConfigurationError(f"texts_per_call must be a positive int or None, got {texts_per_call!r}")
        self.texts_per_call = texts_per_call
        cfg = _as_config(config, fields)
        _refuse_calibrated(cfg)
        self.prompts: dict[str, Any] = {"prompt_name": prompt_name, "prompt": prompt}
        self.library, cfg = _on_node(cfg, shipped, cache_dir, "embed_dataset")
        self.config = cfg
        self._engine = EmbeddingEngine()
        self.info = self._engine.load_model(cfg, kind=_KINDS[self.output_kind])
        if self.info["pooling"] == "none" and self.output_kind == "dense":
            self._engine.close()
            raise ConfigurationError(
                f"model {cfg.name!r}: pooling NONE gives one vector per token; a dataset column needs one per text"
            )
        self.dimensions: int = _output.output_width(
            int(self.info["embedding_dimensions"]), cfg.truncate_dim, cfg.precision
        )
        self._dtype = np.dtype({"float32": np.float32, "int8": np.int8, "binary": np.int8}.get(cfg.precision, np.uint8))
        if prompt_name is not None or prompt is not None:  # an unknown prompt_name fails as the actor starts
            self._compute(["x"])
        logger.info("embellama.ray actor on %s: %s from %s", socket.gethostname(), cfg.name, self.library.path)

    @property
    def name(self) -> str:
        """The model's name."""
        return self.config.name

    def close(self) -> None:
        """Free the model (Ray does it when the actor ends)."""
        self._engine.close()

    def __call__(self, batch: Any) -> Any:
        """The batch with the embedding column appended (same type as given).

        Parameters
        ----------
        batch : pyarrow.Table, dict of numpy.ndarray or pandas.DataFrame
            One Ray Data batch.

        Returns
        -------
        pyarrow.Table, dict of numpy.ndarray or pandas.DataFrame
            The batch with ``output_column`` added, rows in the same order.

        Raises
        ------
        ConfigurationError
            An unsupported batch type, a missing text or id column, or an existing output column.
        InvalidInputError
            A text is empty, not a str or too long with ``truncate=False`` (the message names the row).
        EmbeddingError
            llama.cpp failed.
        """
        return _map_batch(self, batch, (self.text_column,), self._embed)

    def _embed(self, values: Mapping[str, list[Any]], ids: Callable[[], list[Any]]) -> Any:
        """Vectors of the text column's values (an array, or for ragged outputs ``{column: Ragged}``); ``ids()``
        gives the id column."""
        texts = values[self.text_column]
        _check_texts(self, self.text_column, texts, ids)
        if not texts and self.output_kind == "dense":
            return np.empty((0, self.dimensions), dtype=self._dtype)
        try:
            return self._compute(texts)
        except InvalidInputError as exc:  # empty, undecodable or (with truncate=False) too long
            raise _bad_row(self, f"column {self.text_column!r}", exc.reason, exc.index, ids) from None

    def _compute(self, texts: list[str]) -> Any:
        if self.output_kind == "dense":
            vectors = self._engine.embed_batch(
                texts, batch_size=self.texts_per_call, show_progress_bar=False, **self.prompts
            )
            return np.ascontiguousarray(vectors, dtype=self._dtype)
        if self.output_kind == "sparse":
            sparse = self._engine.embed_sparse(texts, **self.prompts) if texts else []
            indices, values = self.output_columns
            return {
                indices: Ragged.of([e.indices for e in sparse], np.int32, ()),
                values: Ragged.of([e.values for e in sparse], np.float32, ()),
            }
        matrices = self._engine.embed_multi(texts, **self.prompts) if texts else []
        return {self.output_column: Ragged.of(matrices, np.float32, (self.dimensions,))}


class RerankScorer:
    """Callable class for ``Dataset.map_batches``: one reranker (:class:`~embellama.Reranker`) per actor, which
    scores each row's (query, document) pair.

    >>> ds.map_batches(RerankScorer, fn_constructor_kwargs={"config": config}, batch_format="pyarrow",
    ...                compute=ray.data.ActorPoolStrategy(size=4), num_cpus=1)  # doctest: +SKIP

    Takes a ModelConfig, a mapping of its fields, or the fields as keywords, as :class:`Embedder` does, and the
    same batch types: the new column is float32 (``fixed_size_list<float32>[num_labels]`` for a head with several
    outputs; a ``(rows, num_labels)`` array in numpy batches). Every other column is kept, and the rows keep their
    order. The scores are those of :meth:`embellama.Reranker.predict`; the model lives on a thread of its own
    (llama.cpp's context belongs to the thread that loaded it, whatever thread Ray calls the actor from).

    Parameters
    ----------
    config : ModelConfig or mapping, optional
        The reranker, or a mapping of ``ModelConfig`` fields.
    query_column, document_column : str, optional
        The columns of queries and of documents.
    output_column : str, optional
        The column to add; it must not exist yet.
    id_column : str, optional
        A column that identifies rows in error messages.
    pairs_per_call : int, optional
        Most pairs per llama.cpp call; default: as many as fit.
    activation : str, optional
        "sigmoid", "identity" (raw logits) or "softmax"; default: the model's (see :class:`embellama.Reranker`).
    shipped : ShippedModel, optional
        The model file from :func:`ship_model`, written once per node to ``cache_dir`` and used instead
        of ``config.model_path``.
    cache_dir : str or os.PathLike, optional
        Where shipped models are written; default: a folder in the system temp folder.
    **fields
        ``ModelConfig`` fields, overriding ``config``'s.

    Raises
    ------
    ConfigurationError
        A bad column name, ``pairs_per_call``, ``activation`` or config, or a model without a classification
        head (an embedding model).
    LibraryError
        No usable libllama on this node (the message names the node).
    ModelNotFoundError
        The GGUF is not at ``config.model_path`` on this node (the message says how to make it visible).
    ModelLoadError
        llama.cpp could not load it, or a shipped file's bytes do not match their sha256.
    """

    def __init__(
        self,
        config: ModelConfig | Mapping[str, Any] | None = None,
        *,
        query_column: str = "query",
        document_column: str = "document",
        output_column: str = "score",
        id_column: str | None = None,
        pairs_per_call: int | None = None,
        activation: str | None = None,
        shipped: ShippedModel | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        **fields: Any,
    ) -> None:
        self.query_column = _check_column(query_column, "query_column")
        self.document_column = _check_column(document_column, "document_column")
        if self.query_column == self.document_column:
            raise ConfigurationError(f"query_column and document_column are both {query_column!r}")
        self.output_column = _check_column(output_column, "output_column")
        self.id_column = None if id_column is None else _check_column(id_column, "id_column")
        if pairs_per_call is not None and (not isinstance(pairs_per_call, int) or pairs_per_call < 1):
            raise ConfigurationError(f"pairs_per_call must be a positive int or None, got {pairs_per_call!r}")
        self.pairs_per_call = pairs_per_call
        cfg = _as_config(config, fields)
        Reranker(cfg, activation=activation)  # checks the config and the activation before the node's files
        self.library, cfg = _on_node(cfg, shipped, cache_dir, "rerank_dataset")
        self.config = cfg
        self._model = Reranker(cfg, activation=activation)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"embellama-rerank-{cfg.name}")
        try:
            self._on_thread(self._model.load)
            self.num_labels: int = self._on_thread(lambda: self._model.num_labels)
            self.activation: str = self._on_thread(lambda: self._model.activation)
        except BaseException:
            self.close()
            raise
        logger.info("embellama.ray reranker on %s: %s from %s", socket.gethostname(), cfg.name, self.library.path)

    def _on_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return self._thread.submit(fn, *args, **kwargs).result()

    @property
    def name(self) -> str:
        """The model's name."""
        return self.config.name

    def close(self) -> None:
        """Free the model (Ray does it when the actor ends)."""
        try:
            self._on_thread(self._model.unload)
        finally:
            self._thread.shutdown()

    def __call__(self, batch: Any) -> Any:
        """The batch with the score column appended (same type as given).

        Parameters
        ----------
        batch : pyarrow.Table, dict of numpy.ndarray or pandas.DataFrame
            One Ray Data batch.

        Returns
        -------
        pyarrow.Table, dict of numpy.ndarray or pandas.DataFrame
            The batch with ``output_column`` added, rows in the same order.

        Raises
        ------
        ConfigurationError
            An unsupported batch type, a missing query, document or id column, or an existing output column.
        InvalidInputError
            A query or document is empty or not a str, or a pair is too long with ``truncate=False`` (the message
            names the column and the row).
        EmbeddingError
            llama.cpp failed.
        """
        return _map_batch(self, batch, (self.query_column, self.document_column), self._score)

    def _score(self, values: Mapping[str, list[Any]], ids: Callable[[], list[Any]]) -> npt.NDArray[np.float32]:
        """Scores of the rows' pairs; ``ids()`` gives the id column."""
        queries, documents = values[self.query_column], values[self.document_column]
        _check_texts(self, self.query_column, queries, ids, nonempty=True)
        _check_texts(self, self.document_column, documents, ids, nonempty=True)
        if not queries:
            return np.empty((0,) if self.num_labels == 1 else (0, self.num_labels), dtype=np.float32)
        pairs = list(zip(queries, documents, strict=True))
        try:
            scores = self._on_thread(
                self._model.predict, pairs, batch_size=self.pairs_per_call, show_progress_bar=False
            )
        except InvalidInputError as exc:  # too long with truncate=False, undecodable
            where = f"columns {self.query_column!r} and {self.document_column!r}"
            raise _bad_row(self, where, exc.reason, exc.index, ids) from None
        return np.ascontiguousarray(scores, dtype=np.float32)


# -- one batch, for either class ----------------------------------------------------------------------


def _map_batch(
    actor: Embedder | RerankScorer,
    batch: Any,
    inputs: tuple[str, ...],
    compute: Callable[[Mapping[str, list[Any]], Callable[[], list[Any]]], npt.NDArray[Any]],
) -> Any:
    """``batch`` with ``actor.output_column`` appended: ``compute({column: values}, ids)`` of the ``inputs``
    columns, as a column of the batch's own type."""
    id_column = actor.id_column
    if isinstance(batch, dict):
        _check_batch_columns(actor, list(batch), inputs)
        values = {c: list(batch[c].tolist()) for c in inputs}
        columns = _columns(actor, compute(values, lambda: batch[str(id_column)].tolist()))
        return {**batch, **{name: _as_numpy(column) for name, column in columns.items()}}
    kind = type(batch).__module__.split(".")[0]
    if kind == "pyarrow":
        import pyarrow as pa

        _check_batch_columns(actor, batch.column_names, inputs)
        values = {c: batch.column(c).to_pylist() for c in inputs}
        columns = _columns(actor, compute(values, lambda: batch.column(id_column).to_pylist()))
        for name, array in columns.items():
            if isinstance(array, Ragged):
                column = array.arrow()
            elif array.ndim == 1:
                column = pa.array(array)
            else:
                flat = pa.array(array.reshape(-1), type=pa.from_numpy_dtype(array.dtype))
                column = pa.FixedSizeListArray.from_arrays(flat, array.shape[1])
            batch = batch.append_column(pa.field(name, column.type), column)
        return batch
    if kind == "pandas":
        _check_batch_columns(actor, [str(c) for c in batch.columns], inputs)
        values = {c: batch[c].tolist() for c in inputs}
        columns = _columns(actor, compute(values, lambda: batch[id_column].tolist()))
        return batch.assign(
            **{
                name: array.rows() if isinstance(array, Ragged) else array if array.ndim == 1 else list(array)
                for name, array in columns.items()
            }
        )
    raise ConfigurationError(
        f"model {actor.name!r}: unsupported batch type {type(batch).__name__}; "
        'use batch_format="pyarrow", "numpy" or "pandas"'
    )


def _columns(actor: Embedder | RerankScorer, result: Any) -> dict[str, Any]:
    """The columns a ``compute`` gave: one array for ``actor.output_column``, or ``{column: Ragged}``."""
    return dict(result) if isinstance(result, dict) else {actor.output_column: result}


def _as_numpy(column: Any) -> Any:
    """A numpy batch's column: the array itself, or an object array of a ragged column's rows."""
    if not isinstance(column, Ragged):
        return column
    rows = column.rows()
    out = np.empty(len(rows), dtype=object)
    for i, row in enumerate(rows):  # one per row (not per token): numpy would stack equal-length rows
        out[i] = row
    return out


def _check_batch_columns(actor: Embedder | RerankScorer, names: Sequence[str], inputs: tuple[str, ...]) -> None:
    for column in inputs:
        if column not in names:
            raise ConfigurationError(f"model {actor.name!r}: no column {column!r} in the batch; columns: {list(names)}")
    for output in getattr(actor, "output_columns", [actor.output_column]):
        if output in names:
            raise ConfigurationError(
                f"model {actor.name!r}: the batch already has a column {output!r}; drop it or choose another "
                "output_column"
            )
    if actor.id_column is not None and actor.id_column not in names:
        raise ConfigurationError(
            f"model {actor.name!r}: no id column {actor.id_column!r} in the batch; columns: {list(names)}"
        )


def _bad_row(
    actor: Embedder | RerankScorer, where: str, reason: str, index: int | None, ids: Callable[[], list[Any]]
) -> InvalidInputError:
    """The error for row ``index`` of a batch: the model, the column(s), the reason and, with an id column, the id."""
    text = f"{where}: {reason}"
    if actor.id_column is not None and index is not None:
        text += f"; row {actor.id_column}={ids()[index]!r}"
    return InvalidInputError(text, actor.name, index)


def _check_texts(
    actor: Embedder | RerankScorer,
    column: str,
    values: Sequence[Any],
    ids: Callable[[], list[Any]],
    *,
    nonempty: bool = False,
) -> None:
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise _bad_row(actor, f"column {column!r}", f"expected str, got {type(value).__name__}", i, ids)
        if nonempty and not value:
            raise _bad_row(actor, f"column {column!r}", "text is empty", i, ids)


def _on_node(
    config: ModelConfig, shipped: ShippedModel | None, cache_dir: str | os.PathLike[str] | None, helper: str
) -> tuple[Library, ModelConfig]:
    """On the actor's node: the library (loaded and ABI-checked) and the config with the model file this node
    reads (a shipped one written here first); errors name the node."""
    node = socket.gethostname()
    try:
        library = load_library()  # $EMBELLAMA_LIB (a runtime_env env var) or the built library
    except LibraryError as exc:
        raise LibraryError(f"on node {node}: {exc}") from exc
    if shipped is not None:
        config = dataclasses.replace(config, model_path=_materialize(shipped, cache_dir))
    else:
        config = resolve_config(config)  # an hf:// reference: this node's Hugging Face cache (or a download)
    path = Path(config.model_path)
    if not path.is_file():
        err = ModelNotFoundError(str(path), config.name)
        err.args = (
            f"{err} on node {node} (working directory {os.getcwd()}). Every worker must see the GGUF at "
            "this path: put it on storage every node mounts at the same path, or ship it with the job "
            f"({helper}(..., ship_model=True), or the job's runtime_env working_dir with a relative "
            "model_path)",
        )
        raise err
    return library, config


def _refuse_calibrated(config: ModelConfig) -> None:
    if config.precision in _output.CALIBRATED:
        raise ConfigurationError(
            f"model {config.name!r}: precision {config.precision!r} would calibrate each Ray batch on its own ranges; "
            "embed float32 and quantize with embellama.quantize_embeddings(..., ranges=...) over the whole set"
        )


# -- resources -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ActorPlan:
    """What :func:`embed_dataset` asks Ray for (see :func:`plan_actors`).

    Parameters
    ----------
    concurrency : int or tuple of int
        Actors: a fixed count, or (min, max) for an autoscaling pool.
    n_threads : int
        llama.cpp threads per actor.
    num_cpus : float
        Logical CPUs each actor reserves.
    num_gpus : float
        GPUs each actor reserves (1 with a GPU build on a cluster with GPUs, else 0).
    batch_size : int
        Rows per Ray batch.
    backend : str
        The library's backend as the driver sees it ("cpu", "cuda", ... or "unknown").
    """

    concurrency: int | tuple[int, int]
    n_threads: int
    num_cpus: float
    num_gpus: float
    batch_size: int
    backend: str


def _library_backend(library: str | os.PathLike[str] | None) -> str:
    """Backend of the library the workers will load, read on the driver ("unknown" if it cannot be)."""
    if library is not None:
        folder = Path(library)
        manifest = (folder if folder.is_dir() else folder.parent) / "manifest.json"
        try:
            return str(json.loads(manifest.read_text(encoding="utf-8")).get("backend", "unknown"))
        except (OSError, ValueError):
            return "unknown"
    try:
        return load_library().backend
    except EmbellamaError:
        return "unknown"


def _texts_per_call(config: ModelConfig) -> int:
    """The most texts one llama.cpp call of this model takes (its ``n_seq_max``).

    Read from the GGUF's metadata (vocabulary-only load) when the driver sees the file;
    otherwise :data:`DEFAULT_TEXTS_PER_CALL`.
    """
    if config.n_seq_max is not None:
        return config.n_seq_max
    try:
        with Model(config.model_path, vocab_only=True, name=config.name) as model:
            trained = int(model.metadata_value(f"{model.architecture}.context_length") or 0)
            n_ctx = config.n_ctx or min(trained, DEFAULT_CTX_CAP) or None
            sized = dataclasses.replace(config, n_ctx=n_ctx)
            params = context_params(sized, model, PoolingStrategy.MEAN)
            return params.n_seq_max
    except (EmbellamaError, ValueError) as exc:
        logger.info(
            "model %r: packing not readable on the driver (%s); %d rows per batch",
            config.name,
            exc,
            DEFAULT_TEXTS_PER_CALL,
        )
        return DEFAULT_TEXTS_PER_CALL


def plan_actors(
    config: ModelConfig,
    *,
    n_threads: int | None = None,
    concurrency: int | tuple[int, int] | None = None,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    batch_size: int | None = None,
    library: str | os.PathLike[str] | None = None,
) -> ActorPlan:
    """The defaults of :func:`embed_dataset`, from the running cluster (``ray.init()`` first if needed).

    - **GPU build** (the driver's library, or ``library``'s manifest) on a cluster with GPUs:
      one actor per GPU, each with ``num_gpus=1`` and one CPU.
    - **CPU build:** ``n_threads`` (default: the config's, else 1) llama.cpp threads per actor and
      ``cpus // n_threads`` actors on each node (or ``concurrency``, spread evenly). Each actor reserves
      ``n_threads`` logical CPUs, less where that would take the node's last one: one CPU per node stays
      free for Ray Data's own read and write tasks, which otherwise wait forever for the actors.
    - **Rows per batch:** the most texts one llama.cpp call takes (``n_seq_max``: 256 for most models).

    Parameters
    ----------
    config : ModelConfig
        The model.
    n_threads, concurrency, num_cpus, num_gpus, batch_size, library
        As for :func:`embed_dataset`; a value given is kept as it is.

    Returns
    -------
    ActorPlan
        Actors, threads, CPUs and GPUs per actor, and rows per batch.

    Raises
    ------
    ConfigurationError
        A bad ``n_threads`` or ``batch_size``, or a cluster without a node that has a CPU.
    """
    ray = _ray()
    if not ray.is_initialized():
        ray.init()
    threads = n_threads or config.n_threads or 1
    if not isinstance(threads, int) or threads < 1:
        raise ConfigurationError(f"n_threads must be a positive int, got {threads!r}")
    backend = _library_backend(library)
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    cpus = [float(r.get("CPU", 0)) for r in nodes if r.get("CPU", 0) >= 1]
    total_gpus = sum(float(r.get("GPU", 0)) for r in nodes)
    if num_gpus is None:
        num_gpus = 1.0 if backend in _GPU_BACKENDS and total_gpus >= 1 else 0.0
    if num_gpus > 0:
        auto_size = max(1, int(total_gpus // num_gpus))
        auto_cpus = 1.0
    elif cpus:
        per_node = [max(1, int(c // threads)) for c in cpus]
        auto_size = sum(per_node)
        if concurrency is not None:  # the actors asked for, spread evenly over the nodes
            most = concurrency[1] if isinstance(concurrency, tuple) else concurrency
            per_node = [max(1, math.ceil(most / len(cpus)))] * len(cpus)
        share = min(min(float(threads), (c - 1) / k) for c, k in zip(cpus, per_node, strict=True))
        auto_cpus = share if share > 0 else min(float(threads), min(cpus)) / 2
        auto_cpus = math.floor(auto_cpus * 1000) / 1000
    else:
        raise ConfigurationError(f"the Ray cluster has no node with a CPU: {nodes}")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ConfigurationError(f"batch_size must be a positive int, got {batch_size!r}")
    return ActorPlan(
        concurrency=concurrency if concurrency is not None else auto_size,
        n_threads=threads,
        num_cpus=float(num_cpus) if num_cpus is not None else auto_cpus,
        num_gpus=float(num_gpus),
        batch_size=batch_size or _texts_per_call(config),
        backend=backend,
    )


def embed_dataset(
    ds: Dataset,
    config: ModelConfig | Mapping[str, Any],
    text_column: str = "text",
    output_column: str = "embedding",
    *,
    id_column: str | None = None,
    n_threads: int | None = None,
    concurrency: int | tuple[int, int] | None = None,
    batch_size: int | None = None,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    library: str | os.PathLike[str] | None = None,
    ship_model: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    runtime_env: Mapping[str, Any] | None = None,
    split_blocks: bool = True,
    prompt_name: str | None = None,
    prompt: str | None = None,
    truncate_dim: int | None = None,
    precision: str | None = None,
    output_kind: str = "dense",
    **ray_remote_args: Any,
) -> Dataset:
    """``ds`` with an embedding column: ``fixed_size_list<float32>[dim]``, L2-normalized by default (or a sparse
    model's two list columns, or a multi-vector model's token vectors: ``output_kind``).

    Lazy, like every Ray Data transform: the work runs when the result is consumed
    (``write_parquet``, ``take_all``, ``materialize``...). Defaults come from :func:`plan_actors`;
    ``concurrency`` may be a (min, max) pair for an autoscaling pool.

    Parameters
    ----------
    ds : ray.data.Dataset
        The dataset, with a column of texts.
    config : ModelConfig or mapping
        The model, or a mapping of ``ModelConfig`` fields.
    text_column, output_column, id_column
        The column of texts, the column to add, and a column that identifies rows in errors.
    n_threads : int, optional
        llama.cpp threads per actor; default: the config's, else 1.
    concurrency : int or tuple of int, optional
        Actors, or (min, max) for an autoscaling pool; default: see :func:`plan_actors`.
    batch_size : int, optional
        Rows per Ray batch; default: the most texts one llama.cpp call takes.
    num_cpus, num_gpus : float, optional
        What each actor reserves; default: see :func:`plan_actors`.
    library : str or os.PathLike, optional
        libllama file or folder *on the workers*, set as ``$EMBELLAMA_LIB`` in the actors'
        runtime_env (default: what the workers find themselves).
    ship_model : bool, optional
        Put the GGUF (read on the driver) in Ray's object store; each node writes it once to
        ``cache_dir``. Otherwise ``config.model_path`` must be readable on every worker (shared
        storage, or relative to a runtime_env ``working_dir``).
    cache_dir : str or os.PathLike, optional
        Where the nodes write a shipped model; default: the system temp folder.
    runtime_env : mapping, optional
        Passed to ``map_batches`` (with ``$EMBELLAMA_LIB`` added for ``library``).
    split_blocks : bool, optional
        Split blocks larger than a batch (a streaming ``repartition``), so that every actor gets work.
    prompt_name, prompt, truncate_dim, precision
        As for :meth:`embellama.EmbeddingModel.embed_batch` (``truncate_dim``, ``precision`` default to the
        config's); precision "binary"/"ubinary" make an int8/uint8 column of ``ceil(dim / 8)``; int8/uint8 are
        refused (each batch would be calibrated on its own).
    output_kind : {"dense", "sparse", "multi"}, optional
        As for :class:`Embedder`: "sparse" adds ``<output_column>_indices`` (``list<int32>``) and
        ``<output_column>_values`` (``list<float32>``), "multi" a ``list<fixed_size_list<float32>[dim]>`` column.
    **ray_remote_args
        Passed to ``map_batches`` as they are.

    Returns
    -------
    ray.data.Dataset
        The lazy dataset with ``output_column`` added.

    Raises
    ------
    ConfigurationError
        A bad column name or setting, a missing text column, or an output column that exists already.
    ModelNotFoundError
        With ``ship_model=True``: the GGUF is not a file on the driver.
    """
    cfg = _as_config(config, {})
    overrides: dict[str, Any] = {"truncate_dim": truncate_dim, "precision": precision}
    cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    _refuse_calibrated(cfg)
    kwargs = {"text_column": text_column, "id_column": id_column, "prompt_name": prompt_name, "prompt": prompt,
              "output_kind": _check_output_kind(output_kind)}  # fmt: skip
    return _map_dataset(
        ds,
        cfg,
        Embedder,
        {"text_column": text_column},
        output_column,
        kwargs,
        _Resources(n_threads, concurrency, batch_size, num_cpus, num_gpus, library, runtime_env),
        ship_model=ship_model,
        cache_dir=cache_dir,
        split_blocks=split_blocks,
        ray_remote_args=ray_remote_args,
    )


def rerank_dataset(
    ds: Dataset,
    config: ModelConfig | Mapping[str, Any],
    query_column: str = "query",
    document_column: str = "document",
    output_column: str = "score",
    *,
    id_column: str | None = None,
    activation: str | None = None,
    n_threads: int | None = None,
    concurrency: int | tuple[int, int] | None = None,
    batch_size: int | None = None,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    library: str | os.PathLike[str] | None = None,
    ship_model: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    runtime_env: Mapping[str, Any] | None = None,
    split_blocks: bool = True,
    **ray_remote_args: Any,
) -> Dataset:
    """``ds`` with a reranker's score of each row's (query, document) pair: a float32 column (a
    ``fixed_size_list<float32>[num_labels]`` for a head with several outputs).

    The scores are :meth:`embellama.Reranker.predict`'s, with the model's activation unless ``activation`` says
    otherwise. Lazy, like :func:`embed_dataset`, and planned the same way (:func:`plan_actors`: actors, threads,
    CPUs, GPUs and rows per batch); each actor is a :class:`RerankScorer`. To rank, sort or group the result by
    query, e.g. ``ds.sort(["query_id", "score"], descending=[False, True])``.

    Parameters
    ----------
    ds : ray.data.Dataset
        The dataset, with a column of queries and a column of documents (one pair per row).
    config : ModelConfig or mapping
        The reranker, or a mapping of ``ModelConfig`` fields.
    query_column, document_column, output_column, id_column
        The columns of queries and documents, the column to add, and a column that identifies rows in errors.
    activation : str, optional
        "sigmoid", "identity" (raw logits) or "softmax"; default: the model's.
    n_threads, concurrency, batch_size, num_cpus, num_gpus, library, ship_model, cache_dir, runtime_env, split_blocks
        As for :func:`embed_dataset` (``batch_size`` counts pairs).
    **ray_remote_args
        Passed to ``map_batches`` as they are.

    Returns
    -------
    ray.data.Dataset
        The lazy dataset with ``output_column`` added.

    Raises
    ------
    ConfigurationError
        A bad column name, setting or activation, a missing query or document column, an output column that
        exists already, or a model file (readable on the driver) that is not a reranker.
    ModelNotFoundError
        With ``ship_model=True``: the GGUF is not a file on the driver.
    """
    cfg = _as_config(config, {})
    Reranker(cfg, activation=activation)  # the config and the activation, checked here rather than on every actor
    if Path(cfg.model_path).is_file() and not is_reranker(cfg):
        raise ConfigurationError(
            f"model {cfg.name!r}: {cfg.model_path} is not a reranker (it has no classification head); "
            "embed with it: embed_dataset"
        )
    columns = {"query_column": query_column, "document_column": document_column}
    if query_column == document_column:
        raise ConfigurationError(f"query_column and document_column are both {query_column!r}")
    kwargs = {**columns, "id_column": id_column, "activation": activation}
    return _map_dataset(
        ds,
        cfg,
        RerankScorer,
        columns,
        output_column,
        kwargs,
        _Resources(n_threads, concurrency, batch_size, num_cpus, num_gpus, library, runtime_env),
        ship_model=ship_model,
        cache_dir=cache_dir,
        split_blocks=split_blocks,
        ray_remote_args=ray_remote_args,
    )


class _Resources(NamedTuple):
    """What the caller asked of the cluster (None: :func:`plan_actors` decides)."""

    n_threads: int | None
    concurrency: int | tuple[int, int] | None
    batch_size: int | None
    num_cpus: float | None
    num_gpus: float | None
    library: str | os.PathLike[str] | None
    runtime_env: Mapping[str, Any] | None


def _map_dataset(
    ds: Dataset,
    cfg: ModelConfig,
    actor: type[Embedder | RerankScorer],
    inputs: Mapping[str, str],
    output_column: str,
    kwargs: Mapping[str, Any],
    asked: _Resources,
    *,
    ship_model: bool,
    cache_dir: str | os.PathLike[str] | None,
    split_blocks: bool,
    ray_remote_args: dict[str, Any],
) -> Dataset:
    """``ds.map_batches(actor, ...)`` as :func:`plan_actors` plans it, once the columns (``inputs``: argument
    name -> column) are checked against the dataset's schema where it is known."""
    ray = _ray()
    for what, column in inputs.items():
        _check_column(column, what)
    output_column = _check_column(output_column, "output_column")
    schema = ds.schema(fetch_if_missing=False)
    if schema is not None:
        names = list(schema.names)
        for column in inputs.values():
            if column not in names:
                raise ConfigurationError(f"model {cfg.name!r}: the dataset has no column {column!r}; columns: {names}")
        for output in output_names(output_column, kwargs.get("output_kind", "dense")):
            if output in names:
                raise ConfigurationError(f"model {cfg.name!r}: the dataset already has a column {output!r}")
    plan = plan_actors(
        cfg,
        n_threads=asked.n_threads,
        concurrency=asked.concurrency,
        num_cpus=asked.num_cpus,
        num_gpus=asked.num_gpus,
        batch_size=asked.batch_size,
        library=asked.library,
    )
    cfg = dataclasses.replace(cfg, n_threads=plan.n_threads)
    env: dict[str, Any] = dict(asked.runtime_env or {})
    if asked.library is not None:
        env["env_vars"] = {**dict(env.get("env_vars") or {}), ENV_LIB: os.fspath(asked.library)}
    if isinstance(plan.concurrency, tuple):
        compute = ray.data.ActorPoolStrategy(min_size=plan.concurrency[0], max_size=plan.concurrency[1])
    else:
        compute = ray.data.ActorPoolStrategy(size=plan.concurrency)
    constructor: dict[str, Any] = {
        **kwargs,
        "config": cfg,
        "output_column": output_column,
        "shipped": _put_model(resolve_config(cfg).model_path) if ship_model else None,
        "cache_dir": None if cache_dir is None else os.fspath(cache_dir),
    }
    if plan.num_gpus > 0:
        ray_remote_args.setdefault("num_gpus", plan.num_gpus)
    logger.info("embellama.ray: %s", plan)
    if split_blocks:
        ds = ds.repartition(target_num_rows_per_block=plan.batch_size)
    return ds.map_batches(
        actor,
        batch_format="pyarrow",
        batch_size=plan.batch_size,
        compute=compute,
        fn_constructor_kwargs=constructor,
        num_cpus=plan.num_cpus,
        runtime_env=env or None,
        **ray_remote_args,
    )
