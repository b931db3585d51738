# SPDX-License-Identifier: Apache-2.0
"""Every STS Benchmark sentence against sentence-transformers, vector by vector, with the libllama loaded.

Part of the llama.cpp version window (``nox -s "llama(version='0.3.30')"`` runs it against
an older libllama): any supported llama.cpp must give the same vectors.
"""

from __future__ import annotations

import numpy as np

from embellama import EmbeddingModel, ModelConfig

ST_LIMIT = 256  # sentence-transformers cuts all-MiniLM-L6-v2 at 256 tokens
MIN_COSINE = 0.99999


def test_sts_sentences_match_sentence_transformers(library, minilm_f16, sts, sts_reference, record_property):
    s1, s2, _ = sts
    texts = s1 + s2
    # The file's own F16 weights (compute_type="auto" runs them as F32 on Intel CPUs with AVX512_BF16, which
    # test_compute_type.py holds to the same bound; an explicit "bf16" gives 0.99995, measured on a Zen 4).
    with EmbeddingModel(ModelConfig(model_path=minilm_f16, max_tokens=ST_LIMIT, compute_type="off")) as model:
        ours = model.embed_batch(texts, show_progress_bar=False)
    theirs = sts_reference["emb_st"]
    assert ours.shape == theirs.shape == (len(texts), 384)
    cos = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    record_property("sts_min_cos", float(cos.min()))
    print(
        f"\nlibllama {library.version} ({library.declarations}): {len(texts)} sentences of the STS pairs (or their stand-ins), "
        f"min cos {cos.min():.7f}, mean {cos.mean():.8f}"
    )
    assert cos.min() >= MIN_COSINE, f"worst sentence: {texts[int(cos.argmin())]!r} ({cos.min():.7f})"
