# SPDX-License-Identifier: Apache-2.0
"""llama.cpp's vocabulary test files: vocabulary-only GGUFs (``models/ggml-vocab-*.gguf``) with inputs
(``.inp``) and the token ids its reference tokenizers produce (``.out``), in the llama.cpp source."""

from __future__ import annotations

from pathlib import Path

from tests.support import make_model

SEPARATOR = "\n__ggml_vocab_test__\n"  # between the inputs of a .inp file
VOCABS_WITH_TESTS = [
    "bert-bge", "command-r", "deepseek-coder", "deepseek-llm", "falcon", "gpt-2", "llama-bpe",
    "llama-spm", "mpt", "phi-3", "qwen2", "refact", "starcoder",
]  # fmt: skip
VOCABS_USED = [*VOCABS_WITH_TESTS, "nomic-bert-moe"]  # every vocabulary the tests load (the offline pack keeps them)


def vocab_dir() -> Path:
    """The ``models`` folder of the llama.cpp source that build_llama.py fetched."""
    return make_model.llama_source() / "models"


def vocab_path(name: str) -> Path:
    """The vocabulary-only GGUF ``ggml-vocab-<name>.gguf``."""
    return vocab_dir() / f"ggml-vocab-{name}.gguf"
