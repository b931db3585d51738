# SPDX-License-Identifier: Apache-2.0
"""embellama serve: an OpenAI-compatible HTTP server over EmbeddingEngine (the server extra)."""
