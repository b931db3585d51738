# SPDX-License-Identifier: Apache-2.0
"""EmbeddingEngine: named models on worker threads, with admission, dynamic batching and a cache."""
