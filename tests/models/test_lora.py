# SPDX-License-Identifier: Apache-2.0
"""LoRA adapters and tasks against transformers on the same weights.

A tiny random BERT and random PEFT LoRAs of it (``tests/support/lora_models.py``), converted by the pinned
``convert_lora_to_gguf.py``; two carry the task metadata llama.cpp's converter writes for jina-embeddings-v3's
adapters. The reference is transformers' model with the adapter merged (``merge_and_unload``): mean-pooled,
L2-normalized vectors, the task's prompt prepended. F32 weights (``compute_type="off"``), one thread.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from embellama import (
    ConfigurationError,
    EmbeddingEngine,
    EmbeddingModel,
    LibraryError,
    ModelConfig,
    ModelLoadError,
    ModelNotFoundError,
)
from embellama._engine import calls
from embellama._native import compat
from tests.support import lora_models

QUERY, PASSAGE = "retrieval.query", "retrieval.passage"
COS = 0.9999


@pytest.fixture(scope="module")
def built(library):
    return lora_models.ensure()


@pytest.fixture(scope="module")
def ref(built):
    return lora_models.reference()


@pytest.fixture(scope="module")
def texts():
    return lora_models.texts()


def _config(built, lora=None, **kwargs):
    return ModelConfig(
        model_path=built / "base.F32.gguf", model_name="tiny", pooling="mean", n_threads=1, compute_type="off",
        lora=lora, **kwargs,
    )  # fmt: skip


def _cos(a, b):
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _close(got, want):
    """The vectors match the reference at cos >= 0.9999; returns the lowest cosine."""
    lowest = float(_cos(got, want).min())
    assert lowest >= COS, lowest
    return lowest


@pytest.fixture(scope="module")
def tasks_model(built):
    with EmbeddingModel(_config(built, [built / "query.gguf", built / "passage.gguf"])) as model:
        yield model


def test_an_adapter_matches_transformers_with_it_merged(built, ref, texts):
    with EmbeddingModel(_config(built, [built / "plain.gguf"])) as model:
        got = model.embed_batch(texts)
        assert model.tasks == []  # convert_lora_to_gguf.py writes no task: the adapter applies to every call
        one = model.embed(texts[5])
    low = _close(got, ref["plain"])
    _close(one, ref["plain"][5])
    # the adapter moves every vector far from the base model's: a dropped adapter could not pass
    assert float(_cos(ref["plain"], ref["base"]).max()) < 0.9
    print(f"plain adapter: lowest cos {low:.7f} over {len(texts)} texts")


def test_tasks_select_their_adapter_and_prompt_per_call(tasks_model, ref, texts):
    model = tasks_model
    assert model.tasks == [PASSAGE, QUERY]
    lows = {}
    for task, key in [(QUERY, "query"), (PASSAGE, "passage"), (None, "base"), (QUERY, "query"), (PASSAGE, "passage")]:
        lows[key] = _close(model.embed_batch(texts, task=task), ref[key])
        _close(model.embed(texts[7], task=task), ref[key][7])
    # every API form takes the task
    _close(model.encode(texts, task=QUERY), ref["query"])
    _close(model.encode_query(texts[:4], task=QUERY), ref["query"][:4])
    _close(model.encode_document(texts[:4], task=PASSAGE), ref["passage"][:4])
    _close(np.vstack(list(model.embed_iter(texts, chunk_size=16, task=PASSAGE))), ref["passage"])
    _close(model.embed_chunked(texts, task=QUERY), ref["query"])
    # a prompt the call names wins over the task's: the adapter alone
    _close(model.embed_batch(texts, task=QUERY, prompt=""), ref["query-bare"])
    assert float(_cos(ref["query"], ref["passage"]).max()) < 0.9  # the two tasks differ far beyond the tolerance
    print("lowest cos per task:", {k: round(v, 7) for k, v in lows.items()})


def test_adapters_are_set_on_the_context_only_when_the_task_changes(tasks_model, texts, monkeypatch):
    seen = []
    original = compat.Capabilities.set_adapters

    def spy(self, lib, ffi, ctx, adapters, scales):
        seen.append(len(adapters))
        return original(self, lib, ffi, ctx, adapters, scales)

    monkeypatch.setattr(compat.Capabilities, "set_adapters", spy)
    model = tasks_model
    model.embed_batch(texts[:3], task=QUERY)  # whatever the last test left, this task now
    seen.clear()
    for task in [QUERY, QUERY, QUERY, PASSAGE, PASSAGE, None, None, QUERY]:
        model.embed(texts[0], task=task)
    assert seen == [1, 0, 1]  # to PASSAGE, to none, to QUERY: three changes, three calls into llama.cpp
    assert [(a.name, s) for a, s in model.context.adapters] == [("query", 1.0)]


def test_a_task_less_adapter_applies_with_every_task(built, ref, texts):
    with EmbeddingModel(_config(built, [built / "plain.gguf", built / "query.gguf"])) as model:
        assert model.tasks == [QUERY]
        _close(model.embed_batch(texts, task=QUERY), ref["plain+query"])
        _close(model.embed_batch(texts), ref["plain"])


def test_a_dict_names_the_tasks(built, ref, texts):
    with EmbeddingModel(_config(built, {"mine": built / "plain.gguf", "q": built / "query.gguf"})) as model:
        assert model.tasks == ["mine", "q"]  # the dict's names win over the GGUF's
        _close(model.embed_batch(texts, task="mine"), ref["plain"])
        _close(model.embed_batch(texts), ref["base"])
        _close(model.embed_batch(texts, task="q"), ref["query"])  # the GGUF's prompt still comes with it


def test_an_unknown_task_is_refused_naming_the_tasks(tasks_model, built):
    with pytest.raises(ConfigurationError, match=r"model 'tiny': unknown task 'retrieval\.qeury'") as info:
        tasks_model.embed("text", task="retrieval.qeury")
    assert f"'{PASSAGE}', '{QUERY}'" in str(info.value)
    with pytest.raises(ConfigurationError, match="unknown task"):
        tasks_model.embed_batch(["text"], task=3)  # type: ignore[arg-type]
    with (
        EmbeddingModel(_config(built)) as plain,
        pytest.raises(ConfigurationError, match="no LoRA adapter with a task is loaded"),
    ):
        plain.embed("text", task=QUERY)


def test_a_lora_of_another_model_is_refused_with_what_differs(built, tmp_path):
    import gguf

    from embellama._gguf.reader import rewrite

    cases = [
        ([built / "other.gguf"], ModelLoadError, r"does not fit model 'tiny''s \[64, 64\]: a LoRA of another base"),
        ([built / "base.F32.gguf"], ModelLoadError, "not a LoRA adapter GGUF"),
        ([tmp_path / "absent.gguf"], ModelNotFoundError, "absent.gguf"),
        ([built / "query.gguf", built / "query.gguf"], ConfigurationError, "two LoRA adapters for the task"),
    ]
    string = gguf.GGUFValueType.STRING
    nomic = rewrite(built / "plain.gguf", tmp_path / "nomic.gguf", why="test",
                    set_keys={"general.architecture": ("nomic-bert", string)})  # fmt: skip
    cases.append(([nomic], ModelLoadError, "a LoRA adapter of a 'nomic-bert' model; model 'tiny' is 'bert'"))
    for lora, error, message in cases:
        with pytest.raises(error, match=message):
            EmbeddingModel(_config(built, lora)).load()


@pytest.mark.parametrize(
    ("lora", "message"),
    [
        ("a.gguf", "lora must be a list of GGUF paths"),
        ([3], "lora must hold GGUF paths"),
        ([""], "lora must hold GGUF paths"),
        ({"": "a.gguf"}, "task names must be non-empty"),
        (42, "lora must be a list"),
    ],
)
def test_the_lora_field_is_checked(lora, message):
    with pytest.raises(ConfigurationError, match=message):
        ModelConfig(model_path="m.gguf", lora=lora)


def test_the_lora_field_keeps_hf_references():
    config = ModelConfig(model_path="m.gguf", lora=["hf://org/repo/a.gguf", "b.gguf"])
    assert config.lora == ("hf://org/repo/a.gguf", __import__("pathlib").Path("b.gguf"))


def test_the_engine_never_joins_requests_of_different_tasks(built, ref, texts, monkeypatch):
    from tests.engine.test_engine_batching import WAIT, _block, _queue

    seen: list[tuple[int, str | None]] = []
    original = EmbeddingModel.embed_batch

    def recording(self, texts, **kwargs):
        seen.append((len(texts), kwargs.get("task")))
        return original(self, texts, **kwargs)

    monkeypatch.setattr(EmbeddingModel, "embed_batch", recording)
    keys = {calls._join_key({"prompt_name": None, "task": t}) for t in (QUERY, PASSAGE, None)}
    assert len(keys) == 3
    order = [QUERY, QUERY, QUERY, PASSAGE, PASSAGE, None, QUERY]  # queued behind a busy worker, in this order
    config = _config(built, [built / "query.gguf", built / "passage.gguf"])
    with EmbeddingEngine([config]) as eng, ThreadPoolExecutor(len(order)) as pool:
        release, _ = _block(eng)
        futures = _queue(eng, [lambda i=i, t=t: eng.embed(texts[i], task=t) for i, t in enumerate(order)], pool)
        release.set()
        results = [f.result(WAIT) for f in futures]
        joined = eng.stats()["joined_calls"]
        got = asyncio.run(eng.aembed_batch(texts[:5], task=PASSAGE))
        streamed = np.vstack(list(eng.embed_iter(texts[:5], chunk_size=2, task=QUERY)))
    keys_of = {QUERY: "query", PASSAGE: "passage", None: "base"}
    for i, (task, vector) in enumerate(zip(order, results, strict=True)):
        _close(vector, ref[keys_of[task]][i])
    # requests of one task waiting together share a call; a request of another task starts a new one
    assert seen[:4] == [(3, QUERY), (2, PASSAGE), (1, None), (1, QUERY)] and joined == 2
    _close(got, ref["passage"][:5])
    _close(streamed, ref["query"][:5])


def test_a_library_without_the_lora_functions_loads_and_refuses_adapters_by_name(library):
    have = library.caps.functions - set(compat.LORA_FUNCTIONS)
    caps = compat.decide(library.ffi, have, have, "libold.so")  # optional: the library still loads
    assert not caps.lora and library.caps.lora
    with pytest.raises(LibraryError, match="model 'm': the loaded libllama cannot use LoRA adapters") as info:
        caps.check_lora("model 'm'")
    assert "llama_adapter_lora_init" in str(info.value) and "llama_set_adapters_lora" in str(info.value)
    older = compat.Capabilities(have | {*compat.LORA_FUNCTIONS[:5], "llama_set_adapter_lora",
                                        "llama_clear_adapter_lora"}, caps.model_fields, caps.context_fields)  # fmt: skip
    assert older.lora


def test_the_older_single_adapter_setter_is_used_where_the_array_one_is_missing(library):
    log = []

    class Lib:
        def llama_clear_adapter_lora(self, ctx):
            log.append(("clear", ctx))

        def llama_set_adapter_lora(self, ctx, adapter, scale):
            log.append(("set", adapter, scale))
            return 0

    older = compat.Capabilities(frozenset({"llama_set_adapter_lora", "llama_clear_adapter_lora"}), frozenset(),
                                frozenset())  # fmt: skip
    older.set_adapters(Lib(), library.ffi, "ctx", ["a", "b"], [1.0, 0.5])
    older.set_adapters(Lib(), library.ffi, "ctx", [], [])
    assert log == [("clear", "ctx"), ("set", "a", 1.0), ("set", "b", 0.5), ("clear", "ctx")]


def test_adapters_belong_to_their_model_and_scales_are_checked(built, ref, texts):
    with (
        EmbeddingModel(_config(built, [built / "plain.gguf"])) as one,
        EmbeddingModel(_config(built, [built / "query.gguf"])) as two,
    ):
        context = one.context
        ((adapter, scale),) = context.adapters
        assert scale == 1.0 and adapter.metadata_value("adapter.lora.alpha") == "8.000000"
        assert adapter.metadata()["adapter.type"] == "lora"
        assert two.context.adapters == ()  # a task adapter waits for its task
        with pytest.raises(ConfigurationError, match="is not an adapter of this model"):
            context.set_adapters([two.model.load_lora(built / "query.gguf")])
        with pytest.raises(ConfigurationError, match="finite number"):
            context.set_adapters([adapter], [float("nan")])
        with pytest.raises(ConfigurationError, match="1 adapters but 2 scales"):
            context.set_adapters([adapter], [1.0, 2.0])
        assert context.set_adapters([adapter], [0.5]) is True and context.adapters == ((adapter, 0.5),)
        _close(one.embed_batch(texts[:6]), ref["plain"][:6])  # the model sets its own adapters back for its calls
        assert context.adapters == ((adapter, 1.0),) and context.set_adapters([adapter]) is False


def test_an_adapter_keeps_its_model_alive_and_goes_with_it(built):
    """llama.cpp frees a model's adapters with the model, so an adapter is never freed alone: one kept after the
    model is closed keeps the weights (and itself) valid, and both go when the last reference does."""
    import gc

    model = EmbeddingModel(_config(built, [built / "plain.gguf"]))
    model.load()
    adapter = model.context.adapters[0][0]
    low = model.model
    model.unload()
    assert low.closed
    assert adapter.metadata_value("adapter.type") == "lora"  # its llama.cpp object is still valid
    del adapter, low, model
    gc.collect()  # the model goes, and llama.cpp deletes its adapter with it: no double free, no crash


def test_jina_v3_s_layout_converts_and_each_task_equals_its_merged_weights(library, texts):
    """The pinned convert_hf_to_gguf.py takes jina-embeddings-v3's layout (LoRA parametrizations inside the model's
    safetensors, ``lora_adaptations`` and ``task_instructions`` in its config): it writes the base GGUF
    (jina-bert-v3) and one adapter GGUF per task with its name and prompt. Each task with its adapter equals the
    checkpoint with that task's LoRA merged into the weights (numpy, alpha / rank as jina's LoRAParametrization),
    converted and run with no adapter."""
    folder = lora_models.ensure_jina()
    run = {"pooling": "mean", "n_threads": 1, "compute_type": "off"}
    adapters = sorted(folder.glob("lora-*-jina.F32.gguf"))
    with EmbeddingModel(ModelConfig(model_path=folder / "jina.F32.gguf", lora=adapters, **run)) as model:
        assert model.model.architecture == "jina-bert-v3"
        assert model.tasks == sorted(lora_models.JINA_TASKS)
        got = {task: model.embed_batch(texts, task=task) for task in lora_models.JINA_TASKS}
        base = model.embed_batch(texts)
    for task, prompt in lora_models.JINA_TASKS.items():
        with EmbeddingModel(ModelConfig(model_path=folder / f"merged-{task}.F32.gguf", **run)) as merged:
            want = merged.embed_batch([prompt + t for t in texts])  # the task's prompt came with its adapter
        low = _close(got[task], want)
        assert float(_cos(base, want).max()) < 0.95  # without the adapter (and prompt): far from it
        print(f"jina-v3 layout, {task}: lowest cos {low:.7f}")
