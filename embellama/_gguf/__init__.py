# SPDX-License-Identifier: Apache-2.0
"""GGUF files: the header reader and its metadata, prompts in files, and conversion from Hugging Face folders."""
