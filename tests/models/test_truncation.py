# SPDX-License-Identifier: Apache-2.0
"""No text is cut silently: the tokens cut per text (against the Hugging Face tokenizer of MiniLM), one
TruncationWarning per call, ``truncate=False``/``overflow="error"`` naming the text, and the server's usage."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embellama import ConfigurationError, EmbeddingModel, InvalidInputError, ModelConfig, TruncationWarning
from embellama._server.schemas import EmbeddingsRequest, ServedModel, ServerLimits
from tests.support import corpus, make_model

LIMIT = 256  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2


@pytest.fixture(scope="module")
def words() -> list[str]:
    return " ".join(s for topic in corpus.docs_sentences()[:40] for s in topic).split()


@pytest.fixture(scope="module")
def hf_tokenizer():
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(make_model.hf_model_dir() / "tokenizer.json"))
    tok.no_truncation()
    return tok


@pytest.fixture(scope="module")
def model(minilm_f16):
    with EmbeddingModel(ModelConfig(model_path=minilm_f16, max_tokens=LIMIT, model_name="minilm", n_threads=1)) as m:
        yield m


def _hf_cut(tokenizer, texts: list[str]) -> np.ndarray:
    lengths = np.array([len(e.ids) for e in tokenizer.encode_batch(texts)])
    return np.maximum(lengths - LIMIT, 0)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_counts_equal_the_hf_tokenizers_excess(model, words, hf_tokenizer, data):
    sizes = data.draw(st.lists(st.integers(1, 600), min_size=1, max_size=6), label="words per text")
    starts = data.draw(st.lists(st.integers(0, 2000), min_size=len(sizes), max_size=len(sizes)), label="starts")
    texts = [" ".join(words[s : s + n]) for s, n in zip(starts, sizes, strict=True)]
    want = _hf_cut(hf_tokenizer, texts)
    assert model.count_truncated(texts).tolist() == want.tolist()


def test_embed_batch_returns_the_counts_and_warns_once(model, words, hf_tokenizer):
    texts = [" ".join(words[k * 7 : k * 7 + n]) for k, n in enumerate((5, 300, 40, 700, 257))]
    want = _hf_cut(hf_tokenizer, texts)
    assert (want > 0).sum() == 3
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plain = model.embed_batch(texts)
        result = model.embed_batch(texts, return_truncation=True)
    emb, cut = result  # a named tuple: unpacks, and has names
    assert cut is result.truncated_tokens and cut.dtype == np.int64
    assert cut.tolist() == want.tolist()
    np.testing.assert_array_equal(emb, plain)
    assert isinstance(plain, np.ndarray) and plain.shape == (5, 384)  # the default return type is unchanged
    found = [w for w in caught if issubclass(w.category, TruncationWarning)]
    assert len(found) == 2  # one per call
    message = found[0].message
    assert isinstance(message, TruncationWarning)
    assert (message.model_name, message.texts, message.tokens) == ("minilm", 3, int(want.sum()))
    assert "'minilm': 3 of 5 text(s)" in str(message) and f"losing {int(want.sum())} token(s)" in str(message)
    assert found[0].filename == __file__  # it points at the caller's line


def test_no_warning_when_everything_fits(model, words):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = model.embed_batch([" ".join(words[:50]), "a cat"], return_truncation=True)
        model.embed("a short text")
    assert result.truncated_tokens.tolist() == [0, 0]


def test_embed_and_embed_iter_warn(model, words):
    long = " ".join(words[:400])
    with pytest.warns(TruncationWarning, match="1 of 1 text"):
        model.embed(long)
    with pytest.warns(TruncationWarning, match="1 of 2 text"):
        chunks = list(model.embed_iter(["short", long, "also short"], chunk_size=2))
    assert [c.shape[0] for c in chunks] == [2, 1]
    with pytest.warns(TruncationWarning, match=r"1 of 1 text.*\(text #2 lost"):  # its index in the stream
        list(model.embed_iter(["short", "also short", long], chunk_size=2))


def test_truncate_false_raises_naming_the_text(minilm_f16, model, words):
    long = "Zebras " + " ".join(words[:400])
    config = ModelConfig(model_path=minilm_f16, max_tokens=LIMIT, truncate=False, model_name="strict")
    with EmbeddingModel(config) as strict, pytest.raises(InvalidInputError) as info:
        strict.embed_batch(["fine", long])
    assert info.value.index == 1
    assert "'strict'" in str(info.value) and "the limit is 256: 'Zebras " in str(info.value)
    with pytest.raises(InvalidInputError, match=r"the limit is 256: 'Zebras .*input #0"):
        model.embed_batch([long], overflow="error")
    with pytest.raises(ConfigurationError, match="unknown overflow"):
        model.embed_batch([long], overflow="drop")
    with pytest.raises(ConfigurationError, match="need overflow='chunk'"):
        model.embed_batch([long], chunk_tokens=64)


class _Vocab:
    """A vocabulary of one token a word, with [CLS] and [SEP]."""

    n_vocab = 1000
    special_tokens = SimpleNamespace(prefix=(101,), suffix=(102,))

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = False) -> list[int]:
        words = [7] * len(text.split())
        return [101, *words, 102] if add_special else words


def test_server_usage_counts_the_cut_tokens():
    config = SimpleNamespace(truncate=True, parse_special=False)
    served = ServedModel(name="m", config=config, vocab=_Vocab(), dimensions=4, max_tokens=8, norm=2.0, created=0)  # type: ignore[arg-type]
    req = EmbeddingsRequest.parse({"input": ["a b", "a b c d e f g h i j"]}, served, ServerLimits())
    assert (req.usage, req.truncated) == (4 + 8, 12 - 8)
