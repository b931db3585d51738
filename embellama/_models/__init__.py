# SPDX-License-Identifier: Apache-2.0
"""The models users hold: the shared llama.cpp model base, EmbeddingModel and Reranker."""
