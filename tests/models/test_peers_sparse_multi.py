# SPDX-License-Identifier: Apache-2.0
"""Sparse and multi-vector output against the peers themselves, on tiny random models (issue 31, items 1 and 2).

- FlagEmbedding's ``BGEM3FlagModel`` (1.4.2) on a tiny random XLM-R with random ``sparse_linear.pt`` and
  ``colbert_linear.pt`` where it reads them (:mod:`tests.support.sparse_models`): end to end (its torch forward
  against llama.cpp's), and on the same hidden states (its backbone swapped for one that returns llama.cpp's
  token vectors, so everything after the encoder is FlagEmbedding's own code: tokenization, the heads, the
  special tokens dropped, the max per token id, the CLS vector dropped, normalization, ``colbert_score``);
- PyLate's ``ColBERT`` (1.6.0) on a tiny random BERT with its Dense projection and its ``[Q] ``/``[D] `` marker
  tokens, run at PyLate's own pins in a child (:mod:`tests.support.peer_models`): token ids, per-token vectors
  and ``rank.rerank``'s MaxSim rankings.

Figures on the tiny models (F32 GGUF, llama.cpp's CPU kernels against torch's) are in docs/guide/sparse.md.
FlagEmbedding is installed by the nox test session without its dependencies (noxfile.py's PEER_DEPS:
``pip install --no-deps FlagEmbedding==1.4.2 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19``); PyLate's
folder is installed by :func:`tests.support.peer_models.pylate_site` on first use.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from embellama import ApproximationWarning, ModelConfig, MultiVectorEncoder, SparseEncoder
from tests.support import peer_models, sparse_models

TEXTS = sparse_models.texts()


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _split(rows: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return [rows[bounds[i] : bounds[i + 1]] for i in range(len(lengths))]


# -- FlagEmbedding: bge-m3 -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bge_folder():
    return sparse_models.ensure("bge-m3")


@pytest.fixture(scope="module")
def flag(bge_folder):
    from FlagEmbedding import BGEM3FlagModel

    return BGEM3FlagModel(str(bge_folder / "hf"), use_fp16=False, devices="cpu", normalize_embeddings=True)


@pytest.fixture(scope="module")
def mine(bge_folder):
    config = ModelConfig(model_path=bge_folder / "model.F32.gguf", compute_type="off", n_threads=1)
    with SparseEncoder(config) as sparse, MultiVectorEncoder(config) as multi:
        yield sparse, multi


def _flag_encode(flag, texts):
    out = flag.encode(texts, batch_size=8, return_dense=False, return_sparse=True, return_colbert_vecs=True)
    return out["lexical_weights"], out["colbert_vecs"]


class _LlamaBackbone(torch.nn.Module):
    """Stands in for FlagEmbedding's XLM-R: the same call, llama.cpp's token vectors as ``last_hidden_state``.

    The vectors are those embellama's encoders computed for the same texts in one call (llama.cpp packs a call's
    texts into batches, and a text's vectors differ with its batch in the last bits).
    """

    def __init__(self, encoder: SparseEncoder, config) -> None:
        super().__init__()
        ids = [encoder.model.tokenize(t) for t in TEXTS]
        self.hidden = {tuple(row.tolist()): h for row, h in zip(ids, encoder.model.embed_token_ids(ids), strict=True)}
        self.config = config
        self.calls = 0

    def forward(self, input_ids, attention_mask, **_):
        rows = [tuple(ids[mask.bool()].tolist()) for ids, mask in zip(input_ids, attention_mask, strict=True)]
        out = torch.zeros(*input_ids.shape, next(iter(self.hidden.values())).shape[1])
        for i, row in enumerate(rows):
            out[i, : len(row)] = torch.from_numpy(self.hidden[row])
        self.calls += 1
        return type("Output", (), {"last_hidden_state": out})()


@pytest.fixture(scope="module")
def flag_on_llama(mine, bge_folder):
    """FlagEmbedding's outputs over llama.cpp's hidden states."""
    from FlagEmbedding import BGEM3FlagModel

    peer = BGEM3FlagModel(str(bge_folder / "hf"), use_fp16=False, devices="cpu", normalize_embeddings=True)
    backbone = _LlamaBackbone(mine[0], peer.model.model.config)
    peer.model.model = backbone
    weights, colbert = _flag_encode(peer, TEXTS)
    assert backbone.calls > 0  # the peer's encoder never ran
    return peer, weights, colbert


def test_bge_m3_token_ids_are_flagembeddings(flag, mine):
    for text in TEXTS:
        assert mine[0].model.tokenize(text).tolist() == flag.tokenizer(text)["input_ids"]


def test_bge_m3_sparse_same_hidden_states_exact(mine, flag_on_llama):
    """FlagEmbedding's sparse rule over llama.cpp's hidden states: the same ids, values within 1e-4 relative."""
    _, weights, _ = flag_on_llama
    for got, ref in zip(mine[0].encode(TEXTS), weights, strict=True):
        ref_ids = np.array(sorted(int(k) for k in ref), dtype=np.int64)
        assert got.indices.tolist() == ref_ids.tolist()
        np.testing.assert_allclose(got.values, [ref[str(k)] for k in ref_ids], rtol=1e-4)


def test_bge_m3_sparse_end_to_end(flag, mine):
    """Against FlagEmbedding's own forward: the same ids wherever a weight is clear of zero (1e-2), values within
    2e-3 absolute (llama.cpp's and torch's kernels differ in the last bits of every layer)."""
    weights, _ = _flag_encode(flag, TEXTS)
    for got, ref in zip(mine[0].encode(TEXTS), weights, strict=True):
        mine_dict = dict(zip(got.indices.tolist(), got.values.tolist(), strict=True))
        ref_dict = {int(k): float(v) for k, v in ref.items()}
        assert {k for k, v in ref_dict.items() if v > 1e-2} <= set(mine_dict)
        assert {k for k, v in mine_dict.items() if v > 1e-2} <= set(ref_dict)
        for k in set(mine_dict) | set(ref_dict):
            assert abs(mine_dict.get(k, 0.0) - ref_dict.get(k, 0.0)) < 2e-3, (k, mine_dict.get(k), ref_dict.get(k))
    lexical = flag.compute_lexical_matching_score(weights[0], weights[1])
    encoded = mine[0].encode(TEXTS[:2])
    assert encoded[0].dot(encoded[1]) == pytest.approx(lexical, abs=1e-2)


def test_bge_m3_colbert_same_hidden_states(mine, flag_on_llama):
    _, _, colbert = flag_on_llama
    for got, ref in zip(mine[1].encode(TEXTS), colbert, strict=True):
        assert got.shape == ref.shape
        assert _cos(got, ref).min() >= 0.99999


def test_bge_m3_colbert_end_to_end_and_rankings(flag, mine):
    """Per-token cos >= 0.9999 against FlagEmbedding's forward, and the same MaxSim (``colbert_score``) rankings."""
    _, colbert = _flag_encode(flag, TEXTS)
    queries, docs = mine[1].encode_query(TEXTS[:10]), mine[1].encode_document(TEXTS)
    for got, ref in zip(docs, colbert, strict=True):
        assert got.shape == ref.shape
        assert _cos(got, ref).min() >= 0.9999
    want = np.array([[float(flag.colbert_score(q, d)) for d in colbert] for q in colbert[:10]])
    scores = mine[1].maxsim(queries, docs)
    np.testing.assert_allclose(scores, want, atol=1e-4)
    np.testing.assert_array_equal(np.argsort(-scores, axis=1)[:, :10], np.argsort(-want, axis=1)[:, :10])


# -- PyLate: ColBERT -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pylate():
    ref = peer_models.reference("pylate")
    config = ModelConfig(
        model_path=peer_models.folder_for("pylate") / "model.F32.gguf", compute_type="off", n_threads=1
    )
    with MultiVectorEncoder(config) as enc:
        yield enc, ref


def test_pylate_settings_read_from_its_checkpoint(pylate):
    enc, _ = pylate
    s = enc.settings
    assert (enc.style, enc.score_reduce, enc.dimension) == ("colbert", "sum", peer_models.EMBEDDING_SIZE)
    markers = (s["query_prefix"], s["document_prefix"])
    assert markers == ("[Q] ", "[D] ") and (s["query_length"], s["document_length"]) == (32, 180)
    assert s["do_query_expansion"] and not s["attend_to_expansion_tokens"] and len(s["skiplist_words"]) == 32


def test_pylate_query_ids_are_pylates(pylate):
    """The ``[Q] `` marker PyLate added to the vocabulary (one token, not its pieces), after CLS; ``[MASK]``
    padding to the query length."""
    enc, ref = pylate
    ids = np.stack(enc._ids(TEXTS[:10], "", True))
    np.testing.assert_array_equal(ids, ref["query_ids_default"])
    assert (ids[:, 1] == enc.vocabulary.index("[Q] ")).all()


def test_pylate_documents(pylate):
    """Documents: the ``[D] `` marker, the punctuation skiplist dropped, the Dense projection, normalized."""
    enc, ref = pylate
    docs = enc.encode_document(TEXTS)
    for got, want in zip(docs, _split(ref["documents"], ref["document_lengths"]), strict=True):
        assert got.shape == want.shape
        assert _cos(got, want).min() >= 0.9999
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)


def test_pylate_queries_and_rankings_with_expansion_attended(pylate):
    """PyLate with ``attend_to_expansion_tokens=True``: per-token cos >= 0.9999, rank.rerank's scores and order."""
    enc, ref = pylate
    queries = enc.encode_query(TEXTS[:10])
    for got, want in zip(queries, _split(ref["queries_attend"], ref["query_lengths"]), strict=True):
        assert got.shape == want.shape == (32, peer_models.EMBEDDING_SIZE)
        assert _cos(got, want).min() >= 0.9999
    scores = enc.maxsim(queries, enc.encode_document(TEXTS))
    np.testing.assert_allclose(scores, ref["scores_attend"], atol=2e-3)
    np.testing.assert_array_equal(np.argsort(-scores, axis=1, kind="stable"), ref["order_attend"])
    assert [r["corpus_id"] for r in enc.rank(TEXTS[4], TEXTS)] == ref["order_attend"][4].tolist()


def test_pylate_default_expansion_is_attended_by_llama_cpp(pylate):
    """PyLate's default (and Stanford ColBERT's) keeps the ``[MASK]`` expansion out of the other tokens' attention
    (a key mask: the expansion tokens read the query, the query never reads them). llama.cpp's encoder masks by
    sequence only, symmetrically, so embellama's query vectors are those of ``attend_to_expansion_tokens=True``
    whatever the checkpoint says: this pins the difference (docs/guide/sparse.md gives its size), and the
    ApproximationWarning that says so, once per model, for queries only."""
    _, ref = pylate
    config = ModelConfig(
        model_path=peer_models.folder_for("pylate") / "model.F32.gguf", compute_type="off", n_threads=1
    )
    with MultiVectorEncoder(config) as enc:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            enc.encode_document(TEXTS[:3])  # documents have no expansion: exact, nothing to say
        with pytest.warns(ApproximationWarning, match="attend_to_expansion_tokens=False") as told:
            queries = enc.encode_query(TEXTS[:10])
        assert len(told) == 1 and told[0].message.model_name == enc.name
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            enc.encode_query(TEXTS[:2])  # once per model
    attended = _split(ref["queries_attend"], ref["query_lengths"])
    default = _split(ref["queries_default"], ref["query_lengths"])
    assert min(_cos(g, w).min() for g, w in zip(queries, attended, strict=True)) >= 0.9999
    assert min(_cos(g, w).min() for g, w in zip(queries, default, strict=True)) < 0.999


def test_colbert_markers_are_vocabulary_entries(pylate, tmp_path):
    """Stanford ColBERT's ``[unused0]``/``[unused1]`` markers are vocabulary entries too (one id each, as
    ``convert_tokens_to_ids`` gives), and an empty marker inserts nothing."""
    import json
    import shutil

    folder = peer_models.folder_for("pylate")
    shutil.copy(folder / "model.F32.gguf", tmp_path / "m.gguf")
    with np.load(folder / "model.F32.heads.npz") as data:
        arrays = {k: data[k] for k in data.files if k != "meta"}
        meta = json.loads(str(data["meta"]))
    meta["colbert"].update(query_prefix="", document_prefix="[unused1]")
    np.savez(tmp_path / "m.heads.npz", meta=np.array(json.dumps(meta)), **arrays)
    enc, _ = pylate
    plain = enc.model.tokenize(TEXTS[0])
    with MultiVectorEncoder(ModelConfig(model_path=tmp_path / "m.gguf", n_threads=1)) as stanford:
        assert stanford._ids(TEXTS[:1], "", True)[0][: len(plain)].tolist() == plain.tolist()
        doc = stanford._ids(TEXTS[:1], "", False)[0]
        assert doc.tolist() == [plain[0], stanford.vocabulary.index("[unused1]"), *plain[1:]]
