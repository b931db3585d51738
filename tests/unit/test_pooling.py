# SPDX-License-Identifier: Apache-2.0
"""Pooling and normalization in numpy, against straightforward per-sequence references."""

from __future__ import annotations

import numpy as np
import pytest

from embellama import ConfigurationError, Normalization, PoolingStrategy, normalize
from embellama._compute.pooling import pool_tokens
from embellama._config import parse_normalization


@pytest.fixture
def ragged():
    rng = np.random.default_rng(0)
    lengths = np.array([1, 4, 7, 2, 13], dtype=np.int64)
    tokens = rng.normal(size=(int(lengths.sum()), 16)).astype(np.float32)
    seqs = np.split(tokens, np.cumsum(lengths)[:-1])
    return tokens, lengths, seqs


@pytest.mark.parametrize(
    ("strategy", "reference"),
    [
        (PoolingStrategy.MEAN, lambda s: s.mean(axis=0)),
        (PoolingStrategy.MAX, lambda s: s.max(axis=0)),
        (PoolingStrategy.MEAN_SQRT, lambda s: s.sum(axis=0) / np.sqrt(len(s))),
        (PoolingStrategy.CLS, lambda s: s[0]),
        (PoolingStrategy.LAST, lambda s: s[-1]),
    ],
)
def test_pool_tokens_matches_per_sequence_reference(ragged, strategy, reference):
    tokens, lengths, seqs = ragged
    pooled = pool_tokens(tokens, lengths, strategy)
    expected = np.stack([reference(s) for s in seqs])
    assert pooled.shape == (len(lengths), tokens.shape[1])
    assert pooled.dtype == np.float32
    np.testing.assert_allclose(pooled, expected, rtol=1e-5, atol=1e-6)


def test_mean_sqrt_differs_from_mean_by_sqrt_of_length(ragged):
    tokens, lengths, _ = ragged
    mean = pool_tokens(tokens, lengths, PoolingStrategy.MEAN)
    msqrt = pool_tokens(tokens, lengths, PoolingStrategy.MEAN_SQRT)
    np.testing.assert_allclose(msqrt, mean * np.sqrt(lengths)[:, None], rtol=1e-5)


def test_pool_tokens_rejects_none(ragged):
    tokens, lengths, _ = ragged
    with pytest.raises(ValueError):
        pool_tokens(tokens, lengths, PoolingStrategy.NONE)


@pytest.mark.parametrize(
    ("mode", "norm"),
    [
        (True, lambda v: np.linalg.norm(v)),
        ("l2", lambda v: np.linalg.norm(v)),
        ("l1", lambda v: np.abs(v).sum()),
        (1, lambda v: np.abs(v).sum()),
        ("max_abs", lambda v: np.abs(v).max()),
        (3.0, lambda v: (np.abs(v) ** 3).sum() ** (1 / 3)),
    ],
)
def test_normalize_modes(mode, norm):
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(5, 32)).astype(np.float32)
    out = normalize(vectors.copy(), parse_normalization(mode))
    for row in out:
        assert norm(row) == pytest.approx(1.0, rel=1e-5)
    # direction is kept
    cos = (out * vectors).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(vectors, axis=1)
    np.testing.assert_allclose(cos, 1.0, rtol=1e-5)


def test_normalize_off_and_zero_rows():
    vectors = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    assert normalize(vectors.copy(), Normalization.NONE).tolist() == [[3.0, 4.0], [0.0, 0.0]]
    out = normalize(vectors.copy(), Normalization.L2)
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]], rtol=1e-6)
    assert np.isfinite(out).all()


@pytest.mark.parametrize("bad", ["l3", "cosine", -1, 0, float("nan"), None, [2]])
def test_parse_normalization_rejects(bad):
    with pytest.raises(ConfigurationError, match="normalization"):
        parse_normalization(bad)


@pytest.mark.parametrize(
    ("text", "member"),
    [
        ("mean", PoolingStrategy.MEAN),
        ("CLS", PoolingStrategy.CLS),
        ("max", PoolingStrategy.MAX),
        ("mean_sqrt_len_tokens", PoolingStrategy.MEAN_SQRT),
        ("mean-sqrt", PoolingStrategy.MEAN_SQRT),
        ("lasttoken", PoolingStrategy.LAST),
        ("none", PoolingStrategy.NONE),
    ],
)
def test_pooling_parse(text, member):
    assert PoolingStrategy.parse(text) is member


def test_pooling_parse_lists_valid_values():
    with pytest.raises(ConfigurationError, match="mean, cls, max, mean_sqrt, last, none"):
        PoolingStrategy.parse("weightedmean")


def test_native_pooling_mapping():
    assert PoolingStrategy.MEAN.native == "mean"
    assert PoolingStrategy.CLS.native == "cls"
    assert PoolingStrategy.LAST.native == "last"
    assert PoolingStrategy.MAX.native == "none"
    assert PoolingStrategy.MEAN_SQRT.native == "none"
    assert PoolingStrategy.NONE.native == "none"


def test_normalize_takes_what_model_config_takes():
    v = np.array([[3.0, -4.0], [0.0, 0.0]], dtype=np.float32)
    # True is L2 (not p=1 because bool is an int), False leaves the vectors alone
    np.testing.assert_allclose(normalize(v.copy(), True), [[0.6, -0.8], [0.0, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(normalize(v.copy(), "l2"), [[0.6, -0.8], [0.0, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(normalize(v.copy(), Normalization.L1), [[3 / 7, -4 / 7], [0.0, 0.0]], rtol=1e-6)
    np.testing.assert_array_equal(normalize(v.copy(), False), v)
    np.testing.assert_allclose(normalize(v.copy()), [[0.6, -0.8], [0.0, 0.0]], rtol=1e-6)
    for bad in ("l7", -1.0, float("nan"), None):
        with pytest.raises(ConfigurationError, match="normalization"):
            normalize(v.copy(), bad)
