# SPDX-License-Identifier: Apache-2.0
"""Reranker against sentence-transformers' CrossEncoder on the same weights.

Tiny random-weight cross-encoders with real tokenizers (``tests/support/rerank_models.py``): BERT with two
token types and a pooler (one label, and three), XLM-RoBERTa with its dense + tanh + out_proj head, ModernBERT
with its dense + GELU + norm head on the mean of the tokens. Each
is converted by ``embellama convert`` as users convert theirs, and by llama.cpp's converter alone. The
references are CrossEncoder's logits and default scores for 200 queries x 20 documents.

llama.cpp's CPU backend computes GELU through an F16 table (ggml-cpu's ``GGML_GELU_FP16``), so logits
agree within about 1e-3, not bit for bit; rankings are compared wherever the reference separates two
documents by more than that.
"""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embellama import (
    ConfigurationError,
    EmbeddingModel,
    InvalidInputError,
    ModelConfig,
    ModelLoadError,
    PoolingStrategy,
    Reranker,
)
from embellama._models import is_reranker
from embellama._models.reranker import _activate
from tests.support import make_model, rerank_models
from tests.support.rerank_models import N_DOCS, N_QUERIES

TOL = 1e-3  # max abs difference on logits
TOLS = {"modernbert": 3e-3}
"""ModernBERT's GeGLU layers carry more of the F16 GELU table's rounding (measured: 0.0018 on F32, 0.0025 on F16,
on logits of std 0.69): 0.3 % of the spread, as BERT's 0.0004 is of its own."""
NAMES = [name for name, recipe in rerank_models.RECIPES.items() if not recipe.hf_class.endswith("ForCausalLM")]
"""The cross-encoders (the decoder reranker has tests of its own, at the end)."""


@pytest.fixture(scope="module")
def built(library) -> dict[str, rerank_models.Built]:
    return {name: rerank_models.ensure(name) for name in rerank_models.RECIPES}


@pytest.fixture(scope="module")
def items() -> list[tuple[str, str]]:
    return rerank_models.flat_pairs()


@pytest.fixture(scope="module")
def bert(built):
    with Reranker(ModelConfig(model_path=built["bert"].gguf("f32"), compute_type="off")) as model:
        yield model


def _logits(model: Reranker, items: list[tuple[str, str]]) -> np.ndarray:
    return np.asarray(model.predict(items, activation="identity")).reshape(len(items), -1)


@pytest.mark.parametrize("outtype", ["f32", "f16"])
@pytest.mark.parametrize("name", NAMES)
def test_scores_equal_crossencoder(built, items, name, outtype):
    ref, tol = built[name].reference(), TOLS.get(name, TOL)
    with Reranker(ModelConfig(model_path=built[name].gguf(outtype), compute_type="off")) as model:
        logits = _logits(model, items)
        scores = model.predict(items)
        assert model.exact_token_types
        assert model.num_labels == ref["logits"].shape[1] == (3 if name == "bert3" else 1)
        assert model.activation == ("identity" if name == "bert3" else "sigmoid")  # as the CrossEncoder saved it
    # The random weights spread the logits far beyond the tolerance: a wrong head or token type shows.
    assert ref["logits"].std() > 50 * tol
    assert np.abs(logits - ref["logits"]).max() <= tol
    assert np.abs(scores.reshape(ref["scores"].shape) - ref["scores"]).max() <= tol
    assert scores.shape == ((len(items), 3) if name == "bert3" else (len(items),))


@pytest.mark.parametrize("name", ["bert", "xlm-roberta", "modernbert"])
def test_ranking_equals_crossencoder(built, items, name):
    """Every two documents the reference separates by more than twice the tolerance are ranked alike."""
    ref, tol = built[name].reference()["logits"][:, 0].reshape(N_QUERIES, N_DOCS), TOLS.get(name, TOL)
    with Reranker(ModelConfig(model_path=built[name].gguf("f32"), compute_type="off")) as model:
        ours = model.predict(items, activation="identity").reshape(N_QUERIES, N_DOCS)
        queries, chosen, docs = rerank_models.pairs()
        ranked = model.rank(queries[0], [docs[j] for j in chosen[0]], return_documents=True, activation="identity")
    gap = ref[:, :, None] - ref[:, None, :]
    ours_gap = ours[:, :, None] - ours[:, None, :]
    separated = gap > 2 * tol
    assert separated.sum() > 0.9 * N_QUERIES * N_DOCS * (N_DOCS - 1) / 2  # nearly every pair is compared
    assert (ours_gap[separated] > 0).all()
    identical = sum(
        np.array_equal(np.argsort(-ref[i], kind="stable"), np.argsort(-ours[i], kind="stable"))
        for i in range(N_QUERIES)
    )
    assert identical >= 0.8 * N_QUERIES  # the rest differ only in near-ties (measured: 88-90 %)
    # rank(): every document once, best first, with its text and its score (another packing: within 1e-4; for
    # ModernBERT, whose GeGLU rounds more, 5e-4)
    got = np.array([r["score"] for r in ranked])
    assert sorted(r["corpus_id"] for r in ranked) == list(range(N_DOCS))
    assert (np.diff(got) <= 0).all()
    assert np.abs(got - ours[0][[r["corpus_id"] for r in ranked]]).max() <= (5e-4 if name == "modernbert" else 1e-4)
    assert [r["text"] for r in ranked] == [docs[chosen[0][r["corpus_id"]]] for r in ranked]


def test_single_pairs_and_streams_equal_batches(bert, built, items):
    ref = built["bert"].reference()["logits"][:, 0]
    some = items[:: len(items) // 40]
    single = np.array([bert.predict(pair, activation="identity") for pair in some])
    assert single.shape == (len(some),)
    assert np.abs(single - ref[:: len(items) // 40][: len(some)]).max() <= TOL
    streamed = np.concatenate(list(bert.predict_iter(iter(items[:300]), chunk_size=64, activation="identity")))
    # Another packing sums in another order; the F16 GELU table turns last bits into up to ~1e-4.
    assert np.abs(streamed - bert.predict(items[:300], activation="identity")).max() <= 5e-4
    small = bert.predict(items[:300], batch_size=3, activation="identity")
    assert np.abs(small - ref[:300]).max() <= TOL


def test_tokens_equal_huggingface(built, items):
    """The joined pair is the HF tokenizer's ``tokenizer(q, d)``; BERT's document carries token type 1."""
    for name in ("bert", "xlm-roberta", "modernbert"):
        ref = built[name].reference()
        ids = np.split(ref["ids_flat"], np.cumsum(ref["ids_len"])[:-1])
        types = np.split(ref["types_flat"], np.cumsum(ref["ids_len"])[:-1])
        with Reranker(ModelConfig(model_path=built[name].gguf("f16"), compute_type="off")) as model:
            offset = model.model.n_vocab // 2 if name == "bert" else 0
            for k, (hf, tt) in enumerate(zip(ids, types, strict=True)):
                assert model.tokenize_pair(*items[k]).tolist() == (hf + tt * offset).tolist(), (name, items[k])
            if name == "bert":
                assert set(np.concatenate(types).tolist()) == {0, 1}


def test_stock_conversion_of_bert_is_wrong_and_says_so(built, items, caplog):
    """llama.cpp's converter alone drops BERT's pooler and token type 1: the scores are far off, with a warning.
    XLM-RoBERTa (one token type, its head mapped) is right either way."""
    ref = built["bert"].reference()["logits"]
    stock = ModelConfig(model_path=built["bert"].stock, compute_type="off")
    with caplog.at_level(logging.WARNING, logger="embellama"), Reranker(stock) as model:
        off = np.abs(_logits(model, items) - ref).max()
        assert not model.exact_token_types
    assert off > 100 * TOL
    assert any("token types" in r.getMessage() and "embellama convert" in r.getMessage() for r in caplog.records)
    with Reranker(ModelConfig(model_path=built["xlm-roberta"].stock, compute_type="off")) as model:
        assert np.abs(_logits(model, items) - built["xlm-roberta"].reference()["logits"]).max() <= TOL


def test_stock_conversion_of_modernbert_is_refused_at_load(built):
    """llama.cpp's converter alone writes no layer-norm epsilon for ModernBERT: llama.cpp refuses the file, with
    a ModelLoadError naming it (``embellama convert`` writes the epsilon: the tests above load its files)."""
    with pytest.raises(ModelLoadError, match="modernbert.stock"):
        Reranker(ModelConfig(model_path=built["modernbert"].stock, compute_type="off")).load()


def test_modernbert_epsilon_fix_applies_to_any_modernbert(built, items, tmp_path):
    """The epsilon fix is not only for cross-encoders: a ModernBERT embedding model's config gets it too. The stock
    file with only the epsilon added scores exactly as the file ``embellama convert`` wrote."""
    import json
    import shutil

    from embellama._gguf.convert import converter_fixes

    folder = tmp_path / "modernbert-embedder"
    folder.mkdir()
    config = json.loads((built["modernbert"].hf_dir / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(config, architectures=["ModernBertModel"], norm_eps=2e-5)))
    fixed = shutil.copy(built["modernbert"].stock, tmp_path / "fixed.gguf")
    assert converter_fixes(folder, fixed) == ["the layer-norm epsilon 2e-05 (config.json's norm_eps)"]
    assert converter_fixes(folder, fixed) == []  # written once
    config = dict(config, architectures=["ModernBertModel"], norm_eps=1e-5)
    (folder / "config.json").write_text(json.dumps(config))
    fixed = shutil.copy(built["modernbert"].stock, tmp_path / "fixed.gguf")
    converter_fixes(folder, fixed)
    with Reranker(ModelConfig(model_path=fixed, compute_type="off")) as model:
        ours = _logits(model, items[:200])
    with Reranker(ModelConfig(model_path=built["modernbert"].gguf("f32"), compute_type="off")) as model:
        np.testing.assert_array_equal(ours, _logits(model, items[:200]))


def test_a_folder_without_weights_is_refused_not_converted_to_an_empty_model(built, tmp_path):
    import shutil

    folder = shutil.copytree(
        built["modernbert"].hf_dir, tmp_path / "no-weights", ignore=shutil.ignore_patterns("*.safetensors")
    )
    proc = subprocess.run(
        [sys.executable, "-m", "embellama", "convert", str(folder), str(tmp_path / "empty.gguf"),
         "--llama-src", str(make_model.llama_source())],
        capture_output=True, text=True, cwd=make_model.REPO,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "wrote no tensors: the folder holds no weights" in proc.stderr and str(folder) in proc.stderr
    assert not (tmp_path / "empty.gguf").exists()


def test_without_token_type_shift_the_scores_are_wrong(bert, built, items):
    """The token-type rows matter: scoring the document with type 0 instead falls far outside the tolerance."""
    ref = built["bert"].reference()["logits"][:400, 0]
    head = bert._head
    try:
        bert._head = head._replace(offset=0)
        wrong = bert.predict(items[:400], activation="identity")
    finally:
        bert._head = head
    assert np.abs(wrong - ref).max() > 50 * TOL


def test_multi_label_head(built, items):
    ref = built["bert3"].reference()["logits"]
    with Reranker(ModelConfig(model_path=built["bert3"].gguf("f32"), compute_type="off")) as model:
        probs = model.predict(items[:50], activation="softmax")
        row = model.predict(items[0])
        assert model.labels == tuple(rerank_models.LABELS3[i] for i in range(3))  # the id2label it was saved with
        with pytest.raises(ConfigurationError, match="3 outputs per pair; rank needs one"):
            model.rank("q", ["d"])
    expected = np.exp(ref[:50]) / np.exp(ref[:50]).sum(axis=1, keepdims=True)
    assert np.abs(probs - expected).max() <= TOL
    assert row.shape == (3,) and np.abs(row - ref[0]).max() <= TOL


def test_activation_is_stable_for_large_logits():
    logits = np.array([[1000.0], [-1000.0], [0.0]], dtype=np.float32)
    assert _activate(logits, "sigmoid").tolist() == [1.0, 0.0, 0.5]
    soft = _activate(np.array([[1000.0, 0.0, -1000.0]], dtype=np.float32), "softmax")
    assert np.isfinite(soft).all() and soft[0, 0] == 1.0


def test_kinds_are_told_apart(built, minilm_f16):
    assert is_reranker(ModelConfig(model_path=built["bert"].gguf("f16")))
    assert is_reranker(ModelConfig(model_path=built["xlm-roberta"].stock))  # labels, no pooling type
    assert not is_reranker(ModelConfig(model_path=minilm_f16))
    assert is_reranker(ModelConfig(model_path=minilm_f16, pooling="rank"))
    with pytest.raises(ConfigurationError, match="no classification head.*use EmbeddingModel"):
        Reranker(ModelConfig(model_path=minilm_f16, model_name="mini")).load()
    for path in (built["bert"].gguf("f16"), built["xlm-roberta"].stock):
        with pytest.raises(ConfigurationError, match="is a reranker.*Reranker"):
            EmbeddingModel(ModelConfig(model_path=path)).load()
    with pytest.raises(ConfigurationError, match="not embeddings; use Reranker"):
        EmbeddingModel(ModelConfig(model_path=minilm_f16, pooling=PoolingStrategy.RANK)).load()


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"pooling": "mean"}, "scores with pooling 'rank', not 'mean'"),
        ({"truncate_dim": 8}, "truncate_dim applies to embeddings"),
        ({"precision": "int8"}, "precision applies to embeddings"),
        ({"prompts": {"query": "q: "}}, "prompts applies to embeddings"),
    ],
)
def test_embedding_options_are_refused(built, fields, match):
    with pytest.raises(ConfigurationError, match=match):
        Reranker(ModelConfig(model_path=built["bert"].gguf("f16"), model_name="ce", **fields))


def test_bad_input_names_the_model_and_the_pair(bert):
    name = bert.name
    cases = [
        (lambda: bert.predict([("q", "d"), ("q", 3)]), "document of pair 1 is int"),
        (lambda: bert.predict([("q", "d"), ("", "d")]), "query of pair 1 is empty"),
        (lambda: bert.predict([("q", "d"), ("q",)]), "pair 1 must be a \\(query, document\\) tuple"),
        (lambda: bert.predict("q"), "expects a sequence of \\(query, document\\) pairs"),
        (lambda: bert.predict([("q", "d\ud800")]), "document of pair 0: text is not valid Unicode"),
        (lambda: bert.rank("q", []), "rank got no documents"),
        (lambda: bert.rank("q", "doc"), "rank expects a sequence of documents"),
        (lambda: bert.rank("", ["d"]), "query of pair 0 is empty"),
        (lambda: bert.rank("q", ["d", None]), "document of pair 1 is NoneType"),
        (lambda: list(bert.predict_iter([("q", "d"), ("q", 1.5)])), "document of pair 1 is float"),
    ]
    for call, match in cases:
        with pytest.raises(InvalidInputError, match=match) as info:
            call()
        assert f"'{name}'" in str(info.value)
    with pytest.raises(ConfigurationError, match="unknown activation 'relu'"):
        bert.predict([("q", "d")], activation="relu")
    with pytest.raises(ConfigurationError, match="top_k must be a positive int"):
        bert.rank("q", ["d"], top_k=0)
    assert bert.predict([]).shape == (0,)


def test_long_pairs_keep_the_query_and_cut_the_document(built, caplog):
    config = ModelConfig(model_path=built["bert"].gguf("f16"), model_name="ce", max_tokens=32, compute_type="off")
    with Reranker(config) as model:
        query, doc = "a short question about cats", "cats sleep " * 40
        with pytest.raises(InvalidInputError, match="pair 0 has .* tokens; the limit is 32"):
            model.tokenize_pair(query, doc, truncate=False)
        with caplog.at_level(logging.WARNING, logger="embellama"):
            ids = model.tokenize_pair(query, doc, truncate=True)
            scores = model.predict([(query, doc)] * 3)
    assert any("cut, the document first" in r.getMessage() for r in caplog.records)
    with Reranker(ModelConfig(model_path=built["bert"].gguf("f16"), compute_type="off")) as whole:
        full = whole.tokenize_pair(query, doc)
        n_query = len(whole.model.tokenize(query))  # [CLS] query [SEP]
    assert len(ids) == 32 < len(full)
    assert ids[:n_query].tolist() == full[:n_query].tolist()  # the query is whole
    assert ids[-1] == full[-1]  # the closing [SEP] (of type 1) stays
    assert np.isfinite(scores).all() and np.ptp(scores) == 0


texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=200)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=texts, doc=texts, limit=st.integers(8, 64))
def test_truncation_keeps_the_query_whole_where_it_fits(built, query, doc, limit):
    """Drawn pairs and limits: a pair never exceeds max_tokens, and a query that fits is never cut."""
    model = _limited(built, limit)
    try:
        q_ids = model.model.tokenize(query, add_special=False)
        d_ids = model.model.tokenize(doc, add_special=False)
    except InvalidInputError:
        return
    if not len(q_ids) or not len(d_ids):  # the text is only characters the vocabulary drops
        return
    ids = model.tokenize_pair(query, doc, truncate=True)
    assert len(ids) <= limit
    assert ids[0] == 101 and ids[-1] == 102 + model.model.n_vocab // 2  # [CLS] ... [SEP] of type 1
    if len(q_ids) + 3 <= limit:
        assert ids[1 : 1 + len(q_ids)].tolist() == q_ids.tolist()
    if len(q_ids) + len(d_ids) + 3 <= limit:
        assert len(ids) == len(q_ids) + len(d_ids) + 3


_LIMITED: dict[int, Reranker] = {}


def _limited(built, limit: int) -> Reranker:
    if limit not in _LIMITED:
        path = built["bert"].gguf("f16")
        _LIMITED[limit] = Reranker(ModelConfig(model_path=path, max_tokens=limit, compute_type="off")).load()
    return _LIMITED[limit]


def test_decoder_reranker_equals_transformers(built, items):
    """Qwen3-Reranker's kind: the GGUF's rerank prompt, llama.cpp's softmax over the yes/no rows, P(yes).
    A decoder carries more rounding than the encoders (F32 within 2e-3, F16 within 5e-3 of the probability)."""
    ref = rerank_models.ensure("qwen3").reference()
    # llama.cpp runs the whole 151k-row output matrix on every token of a decoder, so 20 queries are enough here.
    n_queries = 20
    items, scores_ref = items[: n_queries * N_DOCS], ref["scores"][: n_queries * N_DOCS]
    for outtype, tol in (("f32", 2e-3), ("f16", 5e-3)):
        with Reranker(ModelConfig(model_path=rerank_models.ensure("qwen3").gguf(outtype), compute_type="off")) as model:
            scores = model.predict(items)
            ids = np.split(ref["ids_flat"], np.cumsum(ref["ids_len"])[:-1])
            assert all(
                model.tokenize_pair(*items[k]).tolist() == row.tolist() for k, row in enumerate(ids[: len(items)])
            )
            assert (model.num_labels, model.activation) == (1, "identity")
        assert scores_ref.std() > 20 * tol
        assert np.abs(scores - scores_ref).max() <= tol
        r, ours = scores_ref.reshape(n_queries, N_DOCS), scores.reshape(n_queries, N_DOCS)
        separated = (r[:, :, None] - r[:, None, :]) > 2 * tol
        assert ((ours[:, :, None] - ours[:, None, :])[separated] > 0).all()


def test_decoder_reranker_truncates_inside_the_prompt(caplog):
    """An over-long pair loses the end of its document inside the template (the prompt's end stays); with
    truncate=False it raises; a query that contains a template slot is not filled twice."""
    recipe = rerank_models.ensure("qwen3")
    config = ModelConfig(model_path=recipe.gguf("f16"), max_tokens=128, compute_type="off")
    with Reranker(config) as model:
        full = model.tokenize_pair("why?", "hair")
        suffix = full[-6:]  # the template's closing tokens after the document
        doc = " ".join(["hair"] * 300)
        with caplog.at_level(logging.WARNING, logger="embellama"):
            cut = model.tokenize_pair("why?", doc)
        assert len(full) < len(cut) <= 128
        assert cut[-6:].tolist() == suffix.tolist()
        assert any("were cut" in r.getMessage() for r in caplog.records)
        with pytest.raises(InvalidInputError, match="limit is 128"):
            model.tokenize_pair("why?", doc, truncate=False)
        assert "a {document} b" in model.model.detokenize(model.tokenize_pair("a {document} b", "x"))
        assert model.predict([("why?", doc)]).shape == (1,)
