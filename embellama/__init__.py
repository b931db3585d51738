# SPDX-License-Identifier: Apache-2.0
"""embellama: text embeddings with llama.cpp, through a checked cffi binding.

>>> from embellama import EmbeddingModel, ModelConfig  # doctest: +SKIP
>>> model = EmbeddingModel(ModelConfig(model_path="all-MiniLM-L6-v2.F16.gguf"))  # doctest: +SKIP
>>> model.embed_batch(["a cat", "a dog"]).shape  # doctest: +SKIP
(2, 384)
"""

from __future__ import annotations

import inspect as _inspect

from embellama._compute.output import quantize_embeddings
from embellama._compute.pooling import Normalization, PoolingStrategy, normalize
from embellama._compute.similarity import semantic_search
from embellama._config import EngineConfig, ModelConfig
from embellama._engine import EmbeddingEngine
from embellama._exceptions import (
    ApproximationWarning,
    ConfigurationError,
    EmbeddingError,
    EmbellamaError,
    EngineBusyError,
    HubAccessError,
    HubDownloadError,
    HubNotFoundError,
    InvalidInputError,
    LibraryError,
    MissingExtraError,
    ModelLoadError,
    ModelNotFoundError,
    ResourceClosedError,
    ThreadAffinityError,
    TruncationWarning,
)
from embellama._models import Classifier, EmbeddingModel, Reranker
from embellama._models.multivector import MultiVectorEncoder
from embellama._models.sparse import SparseEmbedding, SparseEncoder
from embellama._native import Library, get_library, load_library
from embellama._version import __version__

__all__ = [
    "ApproximationWarning",
    "Classifier",
    "ConfigurationError",
    "EmbeddingEngine",
    "EmbeddingError",
    "EmbeddingModel",
    "EmbellamaError",
    "EngineBusyError",
    "EngineConfig",
    "HubAccessError",
    "HubDownloadError",
    "HubNotFoundError",
    "InvalidInputError",
    "Library",
    "LibraryError",
    "MissingExtraError",
    "ModelConfig",
    "ModelLoadError",
    "ModelNotFoundError",
    "MultiVectorEncoder",
    "Normalization",
    "PoolingStrategy",
    "Reranker",
    "ResourceClosedError",
    "SparseEmbedding",
    "SparseEncoder",
    "ThreadAffinityError",
    "TruncationWarning",
    "__version__",
    "get_library",
    "load_library",
    "normalize",
    "quantize_embeddings",
    "semantic_search",
]

# The public classes and functions say where users import them from (as httpx does): their
# reprs, tracebacks, pickles and the API reference name ``embellama.X``, not a private module.
for _name in __all__:
    _obj = globals()[_name]
    if _inspect.isclass(_obj) or _inspect.isfunction(_obj):
        _obj.__module__ = __name__
del _name, _obj
