# SPDX-License-Identifier: Apache-2.0
"""Long texts on MiniLM (256-token limit): ``overflow="chunk"`` against sentence-transformers' model run on the
same token windows, and late chunking (``embed_spans``) against the mean of sentence-transformers' token
embeddings (``output_value="token_embeddings"``) over the same spans (tests/support/long_reference.py)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from embellama import ConfigurationError, EmbeddingModel, InvalidInputError, ModelConfig, TruncationWarning
from tests.support import corpus, long_reference

LIMIT = 256
CHUNK, OVERLAP = 64, 16
MIN_COS = 0.999  # as tests/models/test_exactness.py: the F16 GGUF against the float32 model


@pytest.fixture(scope="module")
def docs() -> list[str]:
    """Documents of Python's documentation: 98, 190, 317 and 897 tokens, sentences of several kinds."""
    sentences = [s for topic in corpus.docs_sentences() for s in topic if s.endswith(".")]
    short = " ".join(sentences[:3])
    fits = " ".join(sentences[3:12])
    near = " ".join(sentences[12:23]) + "\n\nA new paragraph! Does it end here? Yes."
    long = " ".join(sentences[23:80])[:3500]
    return [short, fits, near, long]


@pytest.fixture(scope="module")
def ref(docs) -> dict[str, np.ndarray]:
    return long_reference.reference(docs, CHUNK, OVERLAP)


@pytest.fixture(scope="module")
def model(minilm_f16):
    with EmbeddingModel(ModelConfig(model_path=minilm_f16, max_tokens=LIMIT, model_name="minilm", n_threads=1)) as m:
        yield m


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _split(flat: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    return np.split(flat, np.cumsum(lengths)[:-1])


def test_tokens_are_the_hf_tokenizers(model, docs, ref):
    lengths = [len(model.model.tokenize(d, add_special=False)) for d in docs]
    assert lengths == ref["ids_lengths"].tolist()
    assert lengths[-1] > 2 * LIMIT and lengths[1] < LIMIT - 2  # one text needs many windows, one fits
    for doc, ids in zip(docs, _split(ref["ids"], ref["ids_lengths"]), strict=True):
        assert model.model.tokenize(doc, add_special=False).tolist() == ids.tolist()


@pytest.mark.parametrize("pooling", ["mean", "weighted"])
def test_chunks_equal_sentence_transformers_windows(model, docs, ref, pooling):
    result = model.embed_chunked(
        docs, chunk_tokens=CHUNK, chunk_overlap=OVERLAP, chunk_pooling=pooling, return_chunks=True
    )
    windows = _split(ref["chunks"], ref["n_chunks"])
    ids = _split(ref["ids"], ref["ids_lengths"])
    worst = 1.0
    for chunks, theirs, body in zip(result.chunks, windows, ids, strict=True):
        assert len(chunks.embeddings) == len(theirs) == len(chunks.spans) == len(chunks.tokens)
        worst = min(worst, float((_unit(chunks.embeddings) * _unit(theirs)).sum(1).min()))
        stride = CHUNK - OVERLAP
        want_tokens = [min(CHUNK, len(body) - k * stride) for k in range(len(theirs))]
        assert chunks.tokens.tolist() == want_tokens
    assert worst >= MIN_COS
    weights = [np.asarray(c.tokens, dtype=np.float64) if pooling == "weighted" else np.ones(len(c.tokens))
               for c in result.chunks]  # fmt: skip
    want = np.stack([(w[:, None] * t).sum(0) / w.sum() for w, t in zip(weights, windows, strict=True)])
    cos = (_unit(result.embeddings) * _unit(want)).sum(1)
    print(f"\nchunking ({pooling}): min cos of windows {worst:.6f}, of pooled vectors {cos.min():.6f}")
    assert cos.min() >= MIN_COS
    assert np.allclose(np.linalg.norm(result.embeddings, axis=1), 1, atol=1e-5)
    plain = model.embed_batch(docs, overflow="chunk", chunk_tokens=CHUNK, chunk_overlap=OVERLAP)
    if pooling == "mean":
        np.testing.assert_allclose(plain, result.embeddings, atol=1e-6)


def test_chunk_spans_hold_their_windows_words(model, docs):
    result = model.embed_chunked(docs, chunk_tokens=CHUNK, chunk_overlap=OVERLAP, return_chunks=True)
    for doc, chunks in zip(docs, result.chunks, strict=True):
        body = model.model.tokenize(doc, add_special=False)
        spans = chunks.spans
        assert spans[0, 0] == 0 and spans[-1, 1] == len(doc.rstrip())
        assert (np.diff(spans[:, 0]) > 0).all() and (spans[:, 0] < spans[:, 1]).all()
        stride = CHUNK - OVERLAP
        for k, (s, e) in enumerate(spans.tolist()):
            window = model.model.detokenize(body[k * stride : k * stride + CHUNK])
            squeeze = re.compile(r"\s+")
            assert squeeze.sub("", window.lower()) in squeeze.sub("", doc[s:e].lower())


def test_a_text_that_fits_is_one_window(model, docs):
    chunked = model.embed_batch(docs[:2], overflow="chunk", return_truncation=True)
    plain = model.embed_batch(docs[:2])
    assert chunked.truncated_tokens.tolist() == [0, 0]
    np.testing.assert_allclose(chunked.embeddings, plain, atol=2e-4)  # other texts share the call: float rounding
    long_default = model.embed_chunked(docs[3:], return_chunks=True)
    assert len(long_default.chunks[0].tokens) == -(-len(model.model.tokenize(docs[3], add_special=False)) // 254)


def test_chunk_options_are_checked(model, docs):
    with pytest.raises(ConfigurationError, match="chunk_overlap .* must be less than chunk_tokens"):
        model.embed_chunked(docs, chunk_tokens=32, chunk_overlap=32)
    with pytest.raises(ConfigurationError, match="more than the 254 tokens"):
        model.embed_chunked(docs, chunk_tokens=255)
    with pytest.raises(ConfigurationError, match="unknown chunk_pooling"):
        model.embed_chunked(docs, chunk_pooling="max")
    with pytest.raises(InvalidInputError, match=r"text is empty \(input #1\)"):
        model.embed_chunked(["fine", ""])


def _ref_span_means(tokens: np.ndarray, offsets: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """The mean of the reference token vectors whose characters overlap each span (special tokens left out)."""
    real = offsets[:, 1] > offsets[:, 0]
    out = []
    for s, e in spans.tolist():
        pick = real & (offsets[:, 0] < e) & (offsets[:, 1] > s)
        out.append(tokens[pick].mean(0))
    return np.stack(out)


@pytest.mark.filterwarnings("ignore::embellama.TruncationWarning")  # the third text is 317 tokens
def test_late_chunking_equals_sentence_transformers_token_means(model, docs, ref):
    tokens = _split(ref["tokens"], ref["lengths"])
    offsets = _split(ref["offsets"], ref["lengths"])
    worst = 1.0
    for k in (0, 1, 2):
        result = model.embed_spans(docs[k])
        spans = result.spans
        assert len(spans) >= 3 and spans[0, 0] == 0
        assert [docs[k][s:e][-1] for s, e in spans.tolist()] == [docs[k][e - 1] for _, e in spans.tolist()]
        want = _ref_span_means(tokens[k], offsets[k], spans)
        worst = min(worst, float((_unit(result.embeddings) * _unit(want)).sum(1).min()))
        given = np.array([[0, spans[1, 1]], [spans[1, 0], spans[-1, 1]]])  # across sentences, at word bounds
        mine = model.embed_spans(docs[k], given).embeddings
        worst = min(worst, float((_unit(mine) * _unit(_ref_span_means(tokens[k], offsets[k], given))).sum(1).min()))
        by_tokens = model.embed_spans(docs[k], by="tokens", span_tokens=16)
        n = len(tokens[k]) - 2
        want = np.stack([tokens[k][1 + j : 1 + min(j + 16, n)].mean(0) for j in range(0, n, 16)])
        worst = min(worst, float((_unit(by_tokens.embeddings) * _unit(want)).sum(1).min()))
    print(f"\nlate chunking: min cos {worst:.6f}")
    assert worst >= MIN_COS
    # the late-chunked vector of a sentence is not its vector embedded alone (the context shows)
    alone = model.embed_batch([docs[1][s:e] for s, e in model.embed_spans(docs[1]).spans.tolist()])
    assert (alone * model.embed_spans(docs[1]).embeddings).sum(1).min() < 0.99


def test_late_chunking_of_a_long_text_covers_its_first_tokens(model, docs, ref):
    doc = docs[3]
    with pytest.warns(TruncationWarning, match="1 of 1 text"):
        result = model.embed_spans(doc)
    tokens = _split(ref["tokens"], ref["lengths"])[3]
    offsets = _split(ref["offsets"], ref["lengths"])[3]
    assert len(tokens) == LIMIT
    reached = offsets[-2, 1]  # the last text token the model reads
    assert result.spans[-1, 0] < reached <= len(doc)
    want = _ref_span_means(tokens, offsets, result.spans)
    assert (_unit(result.embeddings) * _unit(want)).sum(1).min() >= MIN_COS
    with pytest.warns(TruncationWarning), pytest.raises(InvalidInputError, match="covers no token"):
        model.embed_spans(doc, [(0, 10), (len(doc) - 10, len(doc))])
    with pytest.raises(InvalidInputError, match="not within the text"):
        model.embed_spans(docs[0], [(5, 5)])
    with pytest.raises(InvalidInputError, match=r"\(start, end\)"):
        model.embed_spans(docs[0], [(0.5, 3)])
    with pytest.raises(ConfigurationError, match="by must be"):
        model.embed_spans(docs[0], by="paragraph")


def test_the_engine_chunks_and_warns(minilm_f16, model, docs):
    from embellama import EmbeddingEngine

    want = model.embed_chunked(docs, chunk_tokens=CHUNK, chunk_overlap=OVERLAP)
    config = ModelConfig(model_path=minilm_f16, max_tokens=LIMIT, model_name="minilm", n_threads=1)
    with EmbeddingEngine([config]) as engine:
        got = engine.embed_batch(docs, overflow="chunk", chunk_tokens=CHUNK, chunk_overlap=OVERLAP)
        with pytest.warns(TruncationWarning, match="2 of 4 text"):  # raised on the model's worker thread
            engine.embed_batch(docs)
        with pytest.raises(InvalidInputError, match="the limit is 256"):
            engine.embed_batch(docs, overflow="error")
    np.testing.assert_allclose(got, want, atol=1e-5)
