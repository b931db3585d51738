# SPDX-License-Identifier: Apache-2.0
"""EmbeddingEngine serving rerankers (issue 22): rerank/predict equal Reranker's on the same file and
sentence-transformers' CrossEncoder within llama.cpp's rounding, split among copies in input order, async,
errors, kind mismatches, max_pending, cancellation and close."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time

import numpy as np
import pytest

from embellama import (
    ConfigurationError,
    EmbeddingEngine,
    EngineBusyError,
    EngineConfig,
    InvalidInputError,
    ModelConfig,
    Reranker,
    ResourceClosedError,
)
from embellama._engine.calls import SPLIT_MIN
from tests.support import rerank_models

WAIT = 60
LOGITS_TOL = 1e-3  # llama.cpp's CPU GELU goes through an F16 table: logits agree with CrossEncoder to ~5e-4..9e-4


def _config(name: str, model_name: str, **kwargs) -> ModelConfig:
    # compute_type "off": the F32 file as it is, the same weights on every CPU, for exactness against the reference
    return ModelConfig(
        model_path=rerank_models.ensure(name).gguf("f32"),
        model_name=model_name,
        compute_type="off",
        n_threads=1,
        **kwargs,
    )


@pytest.fixture(scope="module")
def engine(minilm_f16):
    with EmbeddingEngine(
        [
            _config("bert", "bert"),
            _config("xlm-roberta", "xlm"),
            _config("bert3", "bert3"),
            ModelConfig(model_path=minilm_f16, model_name="minilm", n_threads=1),
        ]
    ) as eng:
        yield eng


@pytest.fixture(scope="module")
def direct():
    """A loaded Reranker per model name (used from this thread only), the engine's models on the same files."""
    models = {
        "bert": Reranker(_config("bert", "bert")),
        "xlm": Reranker(_config("xlm-roberta", "xlm")),
        "bert3": Reranker(_config("bert3", "bert3")),
    }
    for model in models.values():
        model.load()
    yield models
    for model in models.values():
        model.unload()


@pytest.fixture(scope="module")
def pairs():
    return rerank_models.flat_pairs()


def test_info_says_which_kind_each_model_is(engine, direct):
    bert, bert3, minilm = engine.info("bert"), engine.info("bert3"), engine.info("minilm")
    assert bert["kind"] == "reranker" and bert["num_labels"] == 1 and bert["activation"] == "sigmoid"
    assert bert["pooling"] == "rank" and bert["exact_token_types"] is True and "embedding_dimensions" not in bert
    assert bert3["num_labels"] == 3 and bert3["labels"] == list(direct["bert3"].labels)
    assert bert3["activation"] == "identity"
    assert minilm["kind"] == "embedding" and minilm["embedding_dimensions"] == 384 and "num_labels" not in minilm
    assert engine.info("xlm")["kind"] == "reranker"


@pytest.mark.parametrize(("recipe", "name"), [("bert", "bert"), ("xlm-roberta", "xlm")])
def test_scores_equal_reranker_predict_and_cross_encoder(engine, direct, pairs, recipe, name):
    reference = rerank_models.ensure(recipe).reference()
    logits = engine.predict(pairs, model=name, activation="identity")
    assert logits.dtype == np.float32 and logits.shape == (len(pairs),)
    # one copy: the same llama.cpp calls as Reranker.predict, so the same bits
    np.testing.assert_array_equal(logits, direct[name].predict(pairs, activation="identity"))
    np.testing.assert_allclose(logits, reference["logits"][:, 0], atol=LOGITS_TOL, rtol=0)
    scores = engine.predict(pairs[:300], model=name)  # the default activation: sigmoid, as CrossEncoder's
    np.testing.assert_allclose(scores, reference["scores"][:300], atol=LOGITS_TOL / 4, rtol=0)
    one = engine.predict(pairs[5], model=name)  # a pair given alone: a scalar, as Reranker.predict gives
    assert np.ndim(one) == 0 and one == direct[name].predict(pairs[5])


def test_rerank_equals_reranker_rank_best_first(engine, direct):
    queries, chosen, docs = rerank_models.pairs()
    reference = rerank_models.ensure("bert").reference()["logits"][:, 0]
    for q in (0, 17, 123):
        documents = [docs[j] for j in chosen[q]]
        got = engine.rerank(queries[q], documents, model="bert")
        assert got == direct["bert"].rank(queries[q], documents)
        assert sorted(r["corpus_id"] for r in got) == list(range(len(documents)))
        scores = [r["score"] for r in got]
        assert scores == sorted(scores, reverse=True)
        logits = engine.rerank(queries[q], documents, model="bert", activation="identity")
        for r in logits:  # each score is its own document's (CrossEncoder's logit, within rounding)
            assert abs(r["score"] - reference[q * rerank_models.N_DOCS + r["corpus_id"]]) < LOGITS_TOL
        top = engine.rerank(queries[q], documents, model="bert", top_k=3, return_documents=True)
        assert [r["corpus_id"] for r in top] == [r["corpus_id"] for r in got[:3]]
        assert [r["text"] for r in top] == [documents[r["corpus_id"]] for r in top]
    assert engine.rerank("a query", ["only one"], model="xlm", top_k=5)[0]["corpus_id"] == 0


def test_a_three_label_head_predicts_rows_and_cannot_rerank(engine, direct, pairs):
    reference = rerank_models.ensure("bert3").reference()
    logits = engine.predict(pairs[:200], model="bert3")  # its default activation: identity
    assert logits.shape == (200, 3)
    np.testing.assert_array_equal(logits, direct["bert3"].predict(pairs[:200]))
    np.testing.assert_allclose(logits, reference["logits"][:200], atol=LOGITS_TOL, rtol=0)
    probs = engine.predict(pairs[:20], model="bert3", activation="softmax")
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    with pytest.raises(ConfigurationError, match=r"'bert3' has 3 outputs per pair; rerank needs one score"):
        engine.rerank("q", ["d"], model="bert3")


def test_copies_split_a_large_request_and_keep_input_order(direct, pairs):
    n, copies = 200, 3
    threads: set[str] = set()
    reports: list[tuple[int, int | None]] = []

    def progress(done, total):
        threads.add(threading.current_thread().name)
        reports.append((done, total))

    with EmbeddingEngine(EngineConfig(workers_per_model=copies), models=[_config("bert", "bert")]) as eng:
        got = eng.predict(pairs[:n], activation="identity", progress=progress)
        # each copy scored one contiguous part, packed by length on its own: each part equals Reranker.predict of it
        bounds = [n * i // copies for i in range(copies + 1)]
        expected = np.concatenate(
            [direct["bert"].predict(pairs[a:b], activation="identity") for a, b in itertools.pairwise(bounds)]
        )
        np.testing.assert_array_equal(got, expected)
        whole = direct["bert"].predict(pairs[:n], activation="identity")  # other calls: equal to rounding only
        np.testing.assert_allclose(got, whole, atol=LOGITS_TOL, rtol=0)
        assert threads == {f"embellama:bert#{i}" for i in range(copies)}
        assert reports[-1] == (n, n) and [d for d, _ in reports] == sorted(d for d, _ in reports)
        small = eng.predict(pairs[: 2 * SPLIT_MIN - 1], activation="identity")  # too few to split
        np.testing.assert_array_equal(small, direct["bert"].predict(pairs[: 2 * SPLIT_MIN - 1], activation="identity"))
        documents = [d for _, d in pairs[:60]]
        query = pairs[0][0]
        ranked = eng.rerank(query, documents)
        assert sorted(r["corpus_id"] for r in ranked) == list(range(60))
        for r in ranked:
            assert abs(r["score"] - float(eng.predict((query, documents[r["corpus_id"]])))) < LOGITS_TOL
        assert eng.stats()["pending"] == 0


def test_async_calls_equal_the_sync_ones(engine, pairs):
    queries, chosen, docs = rerank_models.pairs()

    async def main():
        ranked = asyncio.gather(
            *[engine.arerank(queries[q], [docs[j] for j in chosen[q]], model="xlm", top_k=5) for q in range(6)]
        )
        scores = engine.apredict(pairs[:50], model="bert", activation="identity")
        return await ranked, await scores

    ranked, scores = asyncio.run(main())
    for q, got in enumerate(ranked):
        assert got == engine.rerank(queries[q], [docs[j] for j in chosen[q]], model="xlm", top_k=5)
    np.testing.assert_array_equal(scores, engine.predict(pairs[:50], model="bert", activation="identity"))


@pytest.mark.parametrize(
    ("call", "error", "message", "index"),
    [
        (lambda e: e.rerank("q", [], model="bert"), InvalidInputError, "rerank got no documents", None),
        (lambda e: e.rerank("q", "a document", model="bert"), InvalidInputError, "sequence of documents", None),
        (lambda e: e.rerank("q", ["a", "b", 3], model="bert"), InvalidInputError, "document of pair 2 is int", 2),
        (lambda e: e.rerank("q", ["a", ""], model="xlm"), InvalidInputError, "document of pair 1 is empty", 1),
        (lambda e: e.rerank("", ["a", "b"], model="bert"), InvalidInputError, "query of pair 0 is empty", 0),
        (lambda e: e.rerank("q", ["a"], model="bert", top_k=0), ConfigurationError, "top_k must be", None),
        (lambda e: e.rerank("q", ["a"], model="bert", top_k=True), ConfigurationError, "top_k must be", None),
        (lambda e: e.predict("q", model="bert"), InvalidInputError, "sequence of (query, document) pairs", None),
        (lambda e: e.predict([("q", "d"), "qd"], model="bert"), InvalidInputError, "pair 1 must be", 1),
        (lambda e: e.predict([("q", "d")], model="bert", activation="relu"), ConfigurationError, "relu", None),
        (lambda e: e.predict([("q", "d")], model="bert", batch_size=0), ConfigurationError, "batch_size", None),
        (lambda e: e.predict([("q", "d")], model="nope"), ConfigurationError, "no model named 'nope'", None),
    ],
)
def test_bad_input_names_the_model_and_the_pair(engine, call, error, message, index):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        call(engine)
    if error is InvalidInputError:
        assert info.value.model_name in ("bert", "xlm")
        assert info.value.index == index


def test_errors_name_the_pair_by_its_place_in_a_split_request(pairs):
    long_doc = "word " * 600  # longer than the model's 512 tokens
    with EmbeddingEngine(EngineConfig(workers_per_model=2), models=[_config("bert", "strict", truncate=False)]) as eng:
        batch = list(pairs[:100])
        batch[73] = (batch[73][0], long_doc)  # a valid pair, too long: found by the copy of the second part
        with pytest.raises(InvalidInputError, match="pair 73 has") as info:
            eng.predict(batch)
        assert info.value.index == 73
        batch[90] = (batch[90][0], "")  # a bad pair: the request goes whole to one copy, which names the first
        batch[20] = (batch[20][0], 5)
        with pytest.raises(InvalidInputError, match="document of pair 20 is int") as info:
            eng.predict(batch)
        assert info.value.index == 20
        assert eng.predict(batch[:20]).shape == (20,)  # the engine is fine afterwards
        assert eng.stats()["pending"] == 0


def test_kind_mismatch_is_a_configuration_error_naming_the_model(engine):
    embedding = "'minilm' is an embedding model, not a reranker"
    for call in (
        lambda: engine.rerank("q", ["d"], model="minilm"),
        lambda: engine.predict([("q", "d")], model="minilm"),
        lambda: asyncio.run(engine.arerank("q", ["d"], model="minilm")),
        lambda: asyncio.run(engine.apredict([("q", "d")], model="minilm")),
    ):
        with pytest.raises(ConfigurationError, match=embedding):
            call()
    reranker = "'bert' is a reranker, not an embedding model: it scores"
    for call in (
        lambda: engine.embed("text", model="bert"),
        lambda: engine.embed_batch(["a", "b"], model="bert"),
        lambda: asyncio.run(engine.aembed("text", model="bert")),
        lambda: asyncio.run(engine.aembed_batch(["a"], model="bert")),
        lambda: list(engine.embed_iter(["a"], model="bert")),
        lambda: engine.encode_query("text", model="bert"),
        lambda: engine.encode_document(["text"], model="bert"),
    ):
        with pytest.raises(ConfigurationError, match=reranker):
            call()
    assert engine.embed("still fine", model="minilm").shape == (384,)  # nothing else broke
    assert engine.submit(lambda m: type(m).__name__, model="bert").result(WAIT) == "Reranker"


def test_a_reranker_config_with_embedding_options_fails_its_load():
    with pytest.raises(ConfigurationError, match="truncate_dim applies to embeddings"):
        EmbeddingEngine([_config("bert", "bert", truncate_dim=8)])


def _blocked(eng: EmbeddingEngine, model: str):
    """Keep the model's (one) worker busy until the returned event is set."""
    release, started = threading.Event(), threading.Event()

    def hold(_):
        started.set()
        release.wait(WAIT)

    future = eng.submit(hold, model=model)
    assert started.wait(WAIT)
    return release, future


def test_max_pending_counts_a_split_request_once_and_refuses_when_full(pairs):
    config = EngineConfig(workers_per_model=2, max_pending=1)
    with EmbeddingEngine(config, models=[_config("bert", "bert")]) as eng:
        assert eng.predict(pairs[:64]).shape == (64,)  # two parts, one place among max_pending
        release, held = _blocked(eng, "bert")
        with pytest.raises(EngineBusyError):
            eng.rerank("q", ["d"])
        with pytest.raises(EngineBusyError):
            asyncio.run(eng.apredict([("q", "d")]))
        release.set()
        held.result(WAIT)
        assert len(eng.rerank("q", ["d", "e"])) == 2


async def _cancel_queued(eng: EmbeddingEngine, documents: list[str]) -> None:
    queued = asyncio.create_task(eng.arerank("q", documents))
    while eng.stats()["pending"] < 2:  # queued behind the blocked worker
        await asyncio.sleep(0.01)
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued


def test_a_cancelled_async_request_gives_its_place_back(pairs):
    with EmbeddingEngine(EngineConfig(max_pending=2), models=[_config("bert", "bert")]) as eng:
        release, held = _blocked(eng, "bert")
        asyncio.run(_cancel_queued(eng, [d for _, d in pairs[:40]]))
        deadline = time.monotonic() + WAIT
        while eng.stats()["pending"] > 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        second = eng.submit(lambda m: "ran", model="bert")  # room again: the cancelled request gave its place back
        release.set()
        assert held.result(WAIT) is None and second.result(WAIT) == "ran"


def test_close_answers_queued_requests_and_refuses_new_ones(pairs):
    eng = EmbeddingEngine([_config("bert", "bert")])
    release, held = _blocked(eng, "bert")
    outcomes: list[object] = []

    def call():
        try:
            outcomes.append(eng.rerank("q", ["d", "e"]))
        except Exception as exc:
            outcomes.append(exc)

    callers = [threading.Thread(target=call) for _ in range(3)]
    for t in callers:
        t.start()
    deadline = time.monotonic() + WAIT
    while eng.stats()["pending"] < 4:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    worker = eng._workers["bert"].workers[0]
    closer = threading.Thread(target=eng.close)
    closer.start()
    while not worker.stopping:  # close() has stopped the worker; its running request goes on
        assert time.monotonic() < deadline
        time.sleep(0.005)
    assert outcomes == []
    release.set()
    closer.join(WAIT)
    for t in callers:
        t.join(WAIT)
    assert held.result(WAIT) is None
    assert len(outcomes) == 3 and all(isinstance(o, ResourceClosedError) for o in outcomes), outcomes
    with pytest.raises(ResourceClosedError):
        eng.rerank("q", ["d"])
    with pytest.raises(ResourceClosedError):
        eng.predict([("q", "d")])


def test_scores_are_not_cached_and_the_decoder_kind_is_served(pairs):
    """With a cache, reranking leaves it untouched (a score belongs to a pair, not a text); a decoder reranker
    (Qwen3-Reranker's kind) serves P(yes) as Reranker does."""
    config = EngineConfig(cache_size=64, cache_batches=True)
    qwen = ModelConfig(model_path=rerank_models.ensure("qwen3").gguf("f32"), model_name="qwen", compute_type="off")
    with EmbeddingEngine(config, models=[_config("bert", "bert"), qwen]) as eng:
        query, docs = pairs[0][0], [doc for _, doc in pairs[:5]]
        first = eng.rerank(query, docs, model="bert")
        assert eng.rerank(query, docs, model="bert") == first
        info = eng.cache_info()
        assert (info.hits, info.misses, info.currsize) == (0, 0, 0), info
        assert eng.info("qwen")["kind"] == "reranker"
        served = eng.predict(pairs[:5], model="qwen")
    with Reranker(qwen) as direct_qwen:
        np.testing.assert_allclose(served, direct_qwen.predict(pairs[:5]), atol=1e-5)
