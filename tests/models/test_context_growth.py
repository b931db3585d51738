# SPDX-License-Identifier: Apache-2.0
"""A causal model's context starts small and grows when a text needs it (issue 28: the seed's memory target).

A causal model's KV cache holds n_ctx tokens and is resident from the start, so with the default n_ctx (the
training context, at most 8,192 tokens) it outweighed a 0.6 B model's weights. Left to the defaults, the context
now starts at 512 tokens and is made again, larger, only when a text needs more. These tests run the tiny Qwen3
with its training context set to 4,096 tokens, against the same file with the whole context asked for.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from embellama import EmbeddingEngine, EmbeddingModel, ModelConfig
from embellama._models.base import FIRST_CTX
from tests.support import arch_models, corpus

TRAINED = 4096
MIN_COS = 0.99999


@pytest.fixture(scope="module")
def qwen3_4k(library, tmp_path_factory):
    """The architecture matrix's tiny Qwen3 (F32), its GGUF saying it was trained on 4,096 tokens (RoPE: any
    position computes)."""
    import gguf

    path = tmp_path_factory.mktemp("growth") / "qwen3-4k.F32.gguf"
    shutil.copyfile(arch_models.ensure("qwen3").gguf("f32"), path)
    reader = gguf.GGUFReader(path, "r+")
    field = reader.fields["qwen3.context_length"]
    field.parts[field.data[0]][0] = TRAINED
    reader.data.flush()
    del reader
    return path


def _config(path, **kwargs):
    return ModelConfig(model_path=path, n_threads=1, compute_type="off", **kwargs)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def texts():
    first, second = corpus.sentence_pairs()
    short = first[:30] + second[:30]
    longs = [" ".join(first[:80]), " ".join(first[80:380])]  # about 700 and 2,600 tokens
    return short, longs


def test_the_context_starts_small_and_grows_only_for_a_text_that_needs_it(qwen3_4k, texts):
    short, longs = texts
    with EmbeddingModel(_config(qwen3_4k)) as grown, EmbeddingModel(_config(qwen3_4k, n_ctx=TRAINED)) as whole:
        assert grown.context.n_ctx == FIRST_CTX and whole.context.n_ctx == TRAINED  # asked for: made whole
        assert grown.max_sequence_length == whole.max_sequence_length == TRAINED  # the limit is the whole's
        sizes = [len(grown.tokenize(t)) for t in longs]
        assert FIRST_CTX < sizes[0] <= 2 * FIRST_CTX and 4 * FIRST_CTX < sizes[1] <= TRAINED
        before = grown.embed_batch(short)
        assert grown.context.n_ctx == FIRST_CTX  # short texts never grow it
        assert _cos(before, whole.embed_batch(short)).min() >= MIN_COS

        one = grown.embed(longs[0])
        assert grown.context.n_ctx == 2 * FIRST_CTX  # twice the size at least
        assert float(one @ whole.embed(longs[0])) >= MIN_COS
        mixed = grown.embed_batch([longs[1], *short, longs[0]])
        assert grown.context.n_ctx == -(-sizes[1] // FIRST_CTX) * FIRST_CTX  # as large as the text asks, then
        assert _cos(mixed, whole.embed_batch([longs[1], *short, longs[0]])).min() >= MIN_COS
        assert _cos(grown.embed_batch(short), before).min() >= MIN_COS  # a grown context computes the same


def test_late_chunking_and_the_engine_grow_it_too(qwen3_4k, texts):
    _, longs = texts
    with EmbeddingModel(_config(qwen3_4k)) as grown, EmbeddingModel(_config(qwen3_4k, n_ctx=TRAINED)) as whole:
        spans = grown.embed_spans(longs[1])
        assert grown.context.n_ctx > 2 * FIRST_CTX
        expected = whole.embed_spans(longs[1])
        assert len(spans.embeddings) == len(expected.embeddings) > 1
        assert _cos(spans.embeddings, expected.embeddings).min() >= MIN_COS
        reference = whole.embed_batch(longs)
    with EmbeddingEngine([_config(qwen3_4k, model_name="q")]) as eng:
        assert eng.submit(lambda m: m.context.n_ctx).result(60) == FIRST_CTX
        assert _cos(np.stack([eng.embed(t) for t in longs]), reference).min() >= MIN_COS
        assert eng.submit(lambda m: m.context.n_ctx).result(60) > 2 * FIRST_CTX


def test_settings_of_its_own_keep_the_context_whole(qwen3_4k, minilm_f16):
    with EmbeddingModel(_config(qwen3_4k, n_ubatch=512)) as model:
        assert model.context.n_ctx == TRAINED
    with EmbeddingModel(_config(minilm_f16)) as encoder:  # not causal: no KV cache to spare
        assert encoder.context.n_ctx == encoder.model.n_ctx_train
