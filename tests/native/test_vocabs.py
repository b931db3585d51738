# SPDX-License-Identifier: Apache-2.0
"""Tokenization across vocabulary families, with llama.cpp's own vocabulary test files.

llama.cpp ships vocabulary-only GGUFs (``models/ggml-vocab-*.gguf``) with inputs and the
token ids its reference tokenizers produce (``.inp``/``.out``). They cover SPM (llama),
BPE (GPT-2, llama 3, qwen), WPM (BERT) and UGM (T5-style) vocabularies.
"""

from __future__ import annotations

import numpy as np
import pytest

from embellama._models.base import truncate_tokens
from embellama.llama import Model
from tests.support.vocabs import SEPARATOR, VOCABS_WITH_TESTS, vocab_path


def load_vocab(name: str) -> Model:
    return Model(vocab_path(name), vocab_only=True)


@pytest.mark.parametrize("name", VOCABS_WITH_TESTS)
def test_token_ids_equal_llama_cpp_reference_files(library, name):
    path = vocab_path(name)
    inputs = path.with_name(path.name + ".inp").read_text(encoding="utf-8").split(SEPARATOR)
    outputs = path.with_name(path.name + ".out").read_text(encoding="utf-8").split("\n")
    with load_vocab(name) as model:
        for text, expected in zip(inputs, outputs, strict=False):
            ids = model.tokenize(text, add_special=False).tolist()
            assert ids == [int(x) for x in expected.split()], f"{name}: {text!r}"
    assert len(inputs) >= 40


@pytest.mark.parametrize(
    ("name", "vocab_type", "prefix", "suffix"),
    [
        ("llama-spm", "spm", (1,), ()),  # llama-style: BOS only
        ("llama-bpe", "bpe", (128000,), ()),  # llama 3: BOS only
        ("qwen2", "bpe", (), ()),  # nothing added
        ("bert-bge", "wpm", (101,), (102,)),  # BERT: [CLS] ... [SEP]
        ("nomic-bert-moe", "ugm", (0,), (2,)),  # adds BOS and EOS
    ],
)
def test_special_tokens_per_vocabulary(library, name, vocab_type, prefix, suffix):
    with load_vocab(name) as model:
        special = model.special_tokens
        assert model.vocab_type == vocab_type
        assert (special.prefix, special.suffix) == (prefix, suffix)
        body = model.tokenize("Hello world, this is a test.", add_special=False).tolist()
        full = model.tokenize("Hello world, this is a test.").tolist()
        assert full == [*prefix, *body, *suffix]
        if prefix:
            assert special.add_bos
        if name == "nomic-bert-moe":
            assert special.add_eos and special.eos == 2


@pytest.mark.parametrize("name", ["llama-spm", "nomic-bert-moe", "bert-bge"])
def test_truncation_keeps_start_and_end_specials(library, name):
    with load_vocab(name) as model:
        special = model.special_tokens
        ids = model.tokenize("one two three four five six seven eight nine ten " * 5)
        cut = truncate_tokens(ids, 8, special.suffix)
    assert len(cut) == 8
    assert tuple(cut[: len(special.prefix)]) == special.prefix
    assert tuple(cut[len(cut) - len(special.suffix) :]) == special.suffix
    body = 8 - len(special.suffix)
    assert np.array_equal(cut[:body], ids[:body])
    assert (
        truncate_tokens(ids[:5], 8, special.suffix) is not None
        and len(truncate_tokens(ids[:5], 8, special.suffix)) == 5
    )
