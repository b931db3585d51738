# SPDX-License-Identifier: Apache-2.0
"""EmbeddingEngine: named models on worker threads, with admission, dynamic batching and a cache.

``engine`` is the facade; ``base`` holds the models and the engine's lifetime, ``calls`` the
argument checks and call preparation that the sync, async and iterator forms share,
``replicas`` a model's copies, routing and admission, ``worker`` the worker threads and
dynamic batching, ``cache`` the embedding cache.
"""

from embellama._engine.cache import CacheInfo
from embellama._engine.engine import EmbeddingEngine
from embellama._engine.worker import CLASSIFIER, EMBEDDING, KINDS, MULTI_VECTOR, RERANKER, SPARSE

__all__ = ["CLASSIFIER", "EMBEDDING", "KINDS", "MULTI_VECTOR", "RERANKER", "SPARSE", "CacheInfo", "EmbeddingEngine"]
