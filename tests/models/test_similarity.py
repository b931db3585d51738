# SPDX-License-Identifier: Apache-2.0
"""similarity(), similarity_pairwise() and semantic_search() against sentence-transformers on the same vectors:
every similarity function, float and quantized (int8, uint8, binary) inputs, shapes and values from hypothesis;
then the model methods on the MiniLM GGUF's own embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sentence_transformers import SimilarityFunction, util

import embellama
from embellama import ConfigurationError, EmbeddingModel, InvalidInputError, ModelConfig, quantize_embeddings
from embellama._compute import similarity as sim

FNS = ("cosine", "dot", "euclidean", "manhattan")
TEXTS = ["A man is playing a guitar.", "Someone plays the guitar.", "A cat sleeps on a sofa.", "Markets fell today.",
         "The stock market dropped.", "A kitten naps on the couch.", "It rained all day.", "Weather was wet."]  # fmt: skip


def st_scores(a: np.ndarray, b: np.ndarray, fn: str, pairwise: bool = False) -> np.ndarray:
    """sentence-transformers' own functions (float64 tensors, as our computation)."""
    f = SimilarityFunction(fn)
    func = SimilarityFunction.to_similarity_pairwise_fn(f) if pairwise else SimilarityFunction.to_similarity_fn(f)
    return func(torch.from_numpy(a.astype(np.float64)), torch.from_numpy(b.astype(np.float64))).numpy()


def tolerance(a: np.ndarray, b: np.ndarray) -> float:
    scale = float(np.abs(a).max(initial=1.0) * np.abs(b).max(initial=1.0) * a.shape[-1])
    return 1e-6 * scale


matrices = st.integers(1, 6).flatmap(
    lambda n: st.tuples(st.integers(1, 5), st.integers(1, 5)).flatmap(
        lambda rows: st.tuples(
            hnp.arrays(np.float32, (rows[0], n), elements=st.floats(-100, 100, width=32)),
            hnp.arrays(np.float32, (rows[1], n), elements=st.floats(-100, 100, width=32)),
        )
    )
)


@settings(max_examples=40, deadline=None)
@given(matrices, st.sampled_from(FNS))
def test_similarity_matches_sentence_transformers(pair, fn):
    a, b = pair
    ours = sim.similarity(a, b, fn)
    assert ours.shape == (len(a), len(b)) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, st_scores(a, b, fn), rtol=1e-5, atol=tolerance(a, b))
    rows = min(len(a), len(b))
    pairwise = sim.pairwise_similarity(a[:rows], b[:rows], fn)
    np.testing.assert_allclose(pairwise, st_scores(a[:rows], b[:rows], fn, True), rtol=1e-5, atol=tolerance(a, b))


@settings(max_examples=20, deadline=None)
@given(
    hnp.arrays(np.float32, st.tuples(st.integers(4, 12), st.integers(1, 20)), elements=st.floats(-1, 1, width=32)),
    st.sampled_from(["int8", "uint8", "binary", "ubinary"]),
    st.sampled_from(FNS),
)
def test_quantized_outputs(vectors, precision, fn):
    q = quantize_embeddings(vectors, precision)
    packed = precision in ("binary", "ubinary")
    ours = sim.similarity(q, q, fn, precision=precision if packed else None)
    if packed:  # each dimension's sign from the float vectors, as +1/-1 (padding to a byte: -1 in both)
        width = q.shape[1] * 8
        signs = -np.ones((len(vectors), width))
        signs[:, : vectors.shape[1]] = np.where(vectors > 0, 1.0, -1.0)
        expected = st_scores(signs, signs, fn)
        if fn == "dot":  # width - 2 * the Hamming distance of the packed bytes
            raw = q.view(np.uint8)
            hamming = np.unpackbits(raw[:, None] ^ raw[None], axis=2).sum(-1)
            np.testing.assert_allclose(ours, width - 2 * hamming)
    else:  # the integers as numbers
        expected = st_scores(q.astype(np.float64), q.astype(np.float64), fn)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-3)


searches = st.tuples(st.integers(1, 8), st.integers(1, 4), st.integers(1, 30)).flatmap(
    lambda s: st.tuples(
        hnp.arrays(np.float64, (s[1], s[0]), elements=st.floats(-10, 10)),
        hnp.arrays(np.float64, (s[2], s[0]), elements=st.floats(-10, 10)),
    )
)


@settings(max_examples=25, deadline=None)
@given(searches, st.integers(1, 30), st.sampled_from(FNS), st.integers(1, 7))
def test_semantic_search_matches_sentence_transformers(pair, top_k, fn, chunk):
    queries, corpus = pair
    corpus = corpus + np.arange(len(corpus))[:, None] * 1e-3  # no two rows score alike: an order to compare
    ours = embellama.semantic_search(queries, corpus, top_k=top_k, score_function=fn, corpus_chunk_size=chunk)
    scorer = SimilarityFunction.to_similarity_fn(SimilarityFunction(fn))
    theirs = util.semantic_search(torch.from_numpy(queries), torch.from_numpy(corpus), top_k=top_k,
                                  score_function=scorer, corpus_chunk_size=chunk)  # fmt: skip
    for mine, ref in zip(ours, theirs, strict=True):
        assert len(mine) == len(ref) == min(top_k, len(corpus))
        np.testing.assert_allclose([h["score"] for h in mine], [h["score"] for h in ref], rtol=1e-6, atol=1e-6)
        scores = {h["corpus_id"]: h["score"] for h in ref}
        for hit in mine:  # the same ids, up to ties at the cut
            assert hit["corpus_id"] in scores or np.isclose(hit["score"], mine[-1]["score"], atol=1e-6)


def test_bad_inputs_are_refused():
    with pytest.raises(ConfigurationError, match="similarity_fn_name"):
        sim.similarity([[1.0]], [[1.0]], "jaccard")
    with pytest.raises(InvalidInputError, match="dimensions"):
        sim.similarity(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(InvalidInputError, match="NaN"):
        sim.similarity([[np.nan]], [[1.0]])
    with pytest.raises(InvalidInputError, match="rows"):
        sim.pairwise_similarity(np.ones((2, 3)), np.ones((3, 3)))
    with pytest.raises(InvalidInputError, match="packed bits"):
        sim.similarity(np.ones((2, 3)), np.ones((2, 3)), precision="binary")
    with pytest.raises(ConfigurationError, match="top_k"):
        embellama.semantic_search(np.ones((1, 2)), np.ones((3, 2)), top_k=0)
    assert embellama.semantic_search(np.ones((2, 2)), np.ones((0, 2))) == [[], []]


@pytest.fixture(scope="module")
def minilm(minilm_f16):
    with EmbeddingModel(ModelConfig(model_path=minilm_f16, n_threads=1, compute_type="off")) as model:
        yield model


@pytest.mark.parametrize("fn", FNS)
def test_model_similarity_matches_sentence_transformers_similarity(minilm_f16, fn):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize

    config = ModelConfig(model_path=minilm_f16, n_threads=1, compute_type="off", similarity_fn_name=fn)
    with EmbeddingModel(config) as m:
        a, b = m.embed_batch(TEXTS[:4]), m.embed_batch(TEXTS[4:])
        ref = SentenceTransformer(modules=[Normalize()], similarity_fn_name=fn, device="cpu")  # only similarity used
        np.testing.assert_allclose(m.similarity(a, b), ref.similarity(a, b).numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(
            m.similarity_pairwise(a, b), ref.similarity_pairwise(a, b).numpy(), rtol=1e-5, atol=1e-5
        )


def test_model_similarity_of_quantized_outputs(minilm):
    floats = minilm.embed_batch(TEXTS)
    for precision in ("int8", "binary", "ubinary"):
        q = minilm.embed_batch(TEXTS, precision=precision)  # the config says float32: the width tells packed bits
        if precision == "int8":
            expected = st_scores(q.astype(float), q.astype(float), "cosine")
        else:
            signs = np.where(floats > 0, 1.0, -1.0)  # 384 dimensions: no padding
            expected = st_scores(signs, signs, "cosine")
        np.testing.assert_allclose(minilm.similarity(q, q), expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(minilm.similarity_pairwise(q, q[::-1]), np.diag(expected[:, ::-1]), atol=1e-5)
        # related texts stay closest after quantization: the guitar pair, the cat pair
        scores = minilm.similarity(q, q) - np.eye(len(TEXTS)) * 10
        assert scores[0].argmax() == 1 and scores[2].argmax() == 5
