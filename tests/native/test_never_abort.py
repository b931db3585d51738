# SPDX-License-Identifier: Apache-2.0
"""No ModelConfig and no text kills the interpreter: property tests run in a child process.

Hypothesis draws whole configurations (every numeric field in and out of range, together,
plus the GPU fields, which a CPU build ignores) and random Unicode texts. A long-lived
child process (``tests/support/child.py``) loads and embeds each; it may answer with one of
embellama's exceptions, but it must never die by a signal (a ``GGML_ASSERT`` abort, a
segfault) or stop answering. A dead child fails the test with the input that killed it.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from tests.support.child import Child

CONFIG_EXAMPLES = int(os.environ.get("EMBELLAMA_CONFIG_EXAMPLES", "150"))
TEXT_EXAMPLES = int(os.environ.get("EMBELLAMA_TEXT_EXAMPLES", "150"))
NAME = "probe"


@pytest.fixture(scope="module")
def child(library):
    proc = Child()
    yield proc
    proc.close()


def _sizes(low_max: int) -> st.SearchStrategy[object]:
    """A token count: unset, small, around the model's limits, huge, or not an int at all."""
    return st.one_of(
        st.none(),
        st.integers(-2, low_max),
        st.sampled_from([1, 2, 3, 7, 63, 64, 100, 255, 256, 257, 511, 512, 513, 1024, 4096]),
        st.sampled_from([2**31 - 1, 2**31, 10**12]),
        st.sampled_from([1.5, True, "64"]),
    )


configs = st.fixed_dictionaries(
    {"model_name": st.just(NAME)},
    optional={
        "n_ctx": _sizes(1100),
        "n_batch": _sizes(2048),
        "n_ubatch": _sizes(2048),
        "n_seq_max": _sizes(300),
        "max_tokens": _sizes(1100),
        # Many threads on two cores are slow but legal; out of range must be refused.
        "n_threads": st.one_of(st.none(), st.integers(1, 3), st.sampled_from([-1, 0, 24, 513, 100_000, 2**31])),
        "n_gpu_layers": st.one_of(st.integers(-3, 40), st.sampled_from([2**31, 10**12])),
        "main_gpu": st.integers(-3, 20),
        "split_mode": st.sampled_from(["none", "layer", "row", "tensor", "rows", ""]),
        "tensor_split": st.one_of(
            st.none(),
            st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=20),
            st.lists(st.floats(0, 10), min_size=1, max_size=4),
        ),
        "offload_kqv": st.booleans(),
        "flash_attn": st.sampled_from([None, True, False]),
        "pooling": st.sampled_from([None, "mean", "cls", "max", "mean_sqrt", "last", "none", "rank", "median"]),
        "normalize": st.sampled_from([True, False, "l2", "l1", "max_abs", 3.0, 0.5, 0, -1, "l7"]),
        "truncate": st.booleans(),
        "parse_special": st.booleans(),
        "use_mmap": st.booleans(),
    },
)

LONG = "embedding " * 700  # over every token limit the strategies can reach


@settings(
    max_examples=CONFIG_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(config=configs)
def test_no_config_kills_the_process(child, minilm_f16, config):
    fields = {**config, "model_path": str(minilm_f16)}
    reply = child.call({"op": "load", "config": fields, "texts": ["A man plays a guitar.", LONG, "x"]})
    event("ran" if reply["ok"] else f"refused with {reply['error']}")
    if not reply["ok"]:
        assert reply["ours"], f"{reply['error']} is not an embellama exception: {reply['message']}"
        assert f"'{NAME}'" in reply["message"], f"the error does not name the model: {reply['message']}"
        return
    # It ran: the derived settings obey llama.cpp's rules, and the vectors are sound.
    assert reply["n_seq_max"] <= reply["n_ubatch"] <= reply["n_batch"]
    assert reply["max_tokens"] <= reply["n_ctx"]
    if config.get("n_seq_max") is None:
        assert reply["n_seq_max"] >= 1
    if "shapes" in reply:
        assert reply["finite"]
        if config.get("pooling") == "none":
            assert all(len(s) == 2 and s[1] == 384 and 1 <= s[0] <= reply["max_tokens"] for s in reply["shapes"])
        else:
            assert reply["shapes"] == [[384]] * 3


def test_the_reported_configs_run(child, minilm_f16):
    """The configs of the issue: a small micro-batch used to abort in llama_init_from_model."""
    for fields in ({"n_ubatch": 64}, {"n_ubatch": 100}, {"n_ubatch": 3}, {"n_ctx": 8}, {"split_mode": "tensor"}):
        reply = child.call({"op": "load", "config": {"model_path": str(minilm_f16), **fields}, "texts": ["a b c"]})
        assert reply["ok"], (fields, reply)
        assert reply["shapes"] == [[384]]
    reply = child.call({"op": "load", "config": {"model_path": str(minilm_f16), "n_ubatch": 1}})
    assert reply["error"] == "ConfigurationError" and "no room for text" in reply["message"]
    reply = child.call({"op": "load", "config": {"model_path": str(minilm_f16), "n_seq_max": 100}})
    assert reply["error"] == "ConfigurationError" and "must divide the 512 tokens" in reply["message"]


# -- text ----------------------------------------------------------------------------------

# Every code point, surrogates and controls included, weighted towards the troublesome ones.
any_char = st.characters(codec=None, exclude_categories=())
awkward = st.sampled_from(
    ["\x00", "\ufeff", "\u200d", "\u0301", "\ud800", "\udfff", "\U0010ffff", "[CLS]", "[SEP]", "<s>", "</s>", "##"]
)
texts = st.one_of(
    st.text(any_char, max_size=60),
    st.lists(st.one_of(awkward, st.text(any_char, max_size=8)), max_size=30).map("".join),
    st.tuples(st.sampled_from(["a", "é", "語", "\U0001f600", "\u0915\u093e"]), st.integers(1, 3000)).map(
        lambda p: p[0] * p[1]  # a very long "word"
    ),
    st.lists(st.sampled_from(["Hello", "мир", "世界", "مرحبا", "שלום", "🙂", "\t", "\n", " "]), max_size=60).map(
        " ".join
    ),
)


@settings(
    max_examples=TEXT_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=texts, batch=st.lists(texts, min_size=1, max_size=6), parse_special=st.booleans())
@example(text="\ud800\udfff", batch=["\ud800\udfff", ""], parse_special=False)  # a pair of lone surrogates
def test_no_text_kills_the_process(child, minilm_f16, text, batch, parse_special):
    config = {"model_path": str(minilm_f16), "model_name": NAME, "n_threads": 1, "parse_special": parse_special}
    calls = [{"op": "tokenize", "text": text}, {"op": "embed", "text": text}, {"op": "embed_batch", "texts": batch}]
    reply = child.call({"op": "embed", "config": config, "calls": calls})
    assert reply["ok"], reply
    tokenized, single, many = reply["results"]
    valid = bool(text) and not any(0xD800 <= ord(c) <= 0xDFFF for c in text)
    for result in (tokenized, single):
        if valid:
            assert result["ok"], (text, result)
        else:
            assert not result["ok"] and result["error"] == "InvalidInputError", (text, result)
            assert f"'{NAME}'" in result["message"]
    if valid:
        assert tokenized["n"] >= 2 and tokenized["in_vocab"]
        assert single["shape"] == [384] and single["finite"]
    bad = [i for i, t in enumerate(batch) if not t or any(0xD800 <= ord(c) <= 0xDFFF for c in t)]
    if bad:
        assert many["error"] == "InvalidInputError" and f"(input #{bad[0]})" in many["message"], many
    else:
        assert many["ok"] and many["shape"] == [len(batch), 384] and many["finite"], many


# -- rerankers ------------------------------------------------------------------------------

# A pair item: text, or what a caller might pass by mistake (JSON-able: None, a number, a list).
pair_item = st.one_of(texts, texts, st.none(), st.integers(), st.lists(st.text(max_size=3), max_size=2))


@pytest.fixture(scope="module")
def reranker_f16(library) -> str:
    from tests.support import rerank_models

    return str(rerank_models.ensure("bert").gguf("f16"))


@settings(
    max_examples=CONFIG_EXAMPLES // 3,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(config=configs)
def test_no_reranker_config_kills_the_process(child, reranker_f16, config):
    fields = {**config, "model_path": reranker_f16}
    texts_ = ["A man plays a guitar.", LONG, "x"]
    reply = child.call({"op": "load", "kind": "rerank", "config": fields, "texts": texts_})
    if not reply["ok"]:
        assert reply["ours"], f"{reply['error']} is not an embellama exception: {reply['message']}"
        assert f"'{NAME}'" in reply["message"], f"the error does not name the model: {reply['message']}"
        return
    if "shapes" in reply:
        assert reply["shapes"] == [[3]] and reply["finite"]


@settings(
    max_examples=TEXT_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    pairs=st.lists(st.tuples(pair_item, pair_item), max_size=5),
    query=pair_item,
    documents=st.one_of(st.lists(pair_item, max_size=5), st.none(), st.text(max_size=5)),
    max_tokens=st.sampled_from([None, 8, 9, 16, 512]),
    truncate=st.booleans(),
)
def test_no_pair_kills_the_process(child, reranker_f16, pairs, query, documents, max_tokens, truncate):
    config = {"model_path": reranker_f16, "model_name": NAME, "n_threads": 1, "truncate": truncate}
    if max_tokens is not None:
        config["max_tokens"] = max_tokens
    calls = [{"op": "predict", "pairs": pairs}, {"op": "rank", "query": query, "documents": documents}]
    reply = child.call({"op": "rerank", "config": config, "calls": calls})
    if not reply["ok"]:  # the model refused the config itself (max_tokens too small for a pair)
        assert reply["error"] == "ConfigurationError" and f"'{NAME}'" in reply["message"], reply
        return
    predicted, ranked = reply["results"]

    def valid(item: object) -> bool:
        return isinstance(item, str) and bool(item) and not any(0xD800 <= ord(c) <= 0xDFFF for c in item)

    long_ok = truncate  # without it, a long text may be refused (InvalidInputError, checked above)
    for result in (predicted, ranked):
        if result["ok"]:
            assert result["finite"], result
        else:
            assert result["error"] in ("InvalidInputError", "ConfigurationError"), result
            assert f"'{NAME}'" in result["message"], result
    if all(valid(q) and valid(d) for q, d in pairs) and long_ok:
        assert predicted["ok"] and predicted["shape"] == [len(pairs)], (pairs, predicted)
    elif not predicted["ok"]:
        assert predicted["error"] == "InvalidInputError", predicted
    if isinstance(documents, list) and documents and valid(query) and all(map(valid, documents)) and long_ok:
        assert ranked["ok"] and ranked["n"] == len(documents), ranked


# -- classifiers, sparse and multi-vector encoders ---------------------------------------------------------

# A text item for the output kinds: text, or what a caller might pass by mistake (JSON-able).
text_item = st.one_of(texts, texts, texts, st.none(), st.integers(), st.lists(st.text(max_size=3), max_size=2))


@pytest.fixture(scope="module")
def output_models(library) -> dict[str, str]:
    from tests.support import classify_models, sparse_models

    return {
        "classifier": str(classify_models.ensure("bert3").gguf),
        "sparse": str(sparse_models.ensure("splade") / "model.F32.gguf"),
        "multi": str(sparse_models.ensure("bge-m3") / "model.F32.gguf"),
    }


@settings(
    max_examples=TEXT_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    kind=st.sampled_from(["classifier", "sparse", "multi"]),
    batch=st.one_of(st.lists(text_item, max_size=5), text_item),
    query=st.booleans(),
    top_k=st.sampled_from([None, 1, 2]),
    max_tokens=st.sampled_from([None, 8, 16, 512]),
    truncate=st.booleans(),
)
def test_no_text_kills_a_classifier_sparse_or_multi_vector_model(
    child, output_models, kind, batch, query, top_k, max_tokens, truncate
):
    """Whatever a caller passes to ``predict`` or ``encode_query``/``encode_document``: a result for valid texts,
    an embellama exception naming the model otherwise, never a dead interpreter."""
    config = {"model_path": output_models[kind], "model_name": NAME, "n_threads": 1, "truncate": truncate}
    config["compute_type"] = "off"
    if max_tokens is not None:
        config["max_tokens"] = max_tokens
    call = {"texts": batch, "query": query, "top_k": top_k}
    reply = child.call({"op": "outputs", "kind": kind, "config": config, "calls": [call]})
    if not reply["ok"]:  # the model refused the config itself
        assert reply["ours"] and f"'{NAME}'" in reply["message"], reply
        return
    (result,) = reply["results"]

    def valid(item: object) -> bool:
        return isinstance(item, str) and bool(item) and not any(0xD800 <= ord(c) <= 0xDFFF for c in item)

    items = batch if isinstance(batch, list) else [batch]
    event(f"{kind}: {'ok' if result['ok'] else result['error']}")
    if result["ok"]:
        assert result["finite"] and result["n"] == len(items), result
    else:
        assert result["error"] in ("InvalidInputError", "ConfigurationError"), result
        assert f"'{NAME}'" in result["message"], result
    if all(map(valid, items)) and truncate:
        assert result["ok"], (batch, result)


# -- models llama.cpp aborts on --------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        (7, "fewer than its sliding-window pattern's 7"),  # as a Gemma3 embedding model of fewer than 6 layers
        (0, "sliding_window_pattern is 0"),
        ([True] * 6, "marks every one of its 6 layers"),
    ],
)
def test_an_encoder_with_every_layer_sliding_window_is_refused_not_aborted(child, tmp_path, pattern, why):
    """llama.cpp aborts the process at the first decode of such a model (GGML_ASSERT(buffer)); embellama refuses
    it, naming why, and a model with one full-attention layer in six still runs."""
    import gguf

    from embellama._gguf import reader
    from tests.support import arch_models

    built = arch_models.ensure("gemma3")  # 6 layers: five sliding-window, the last full attention
    array = (gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.BOOL)
    kind = gguf.GGUFValueType.UINT32 if isinstance(pattern, int) else array
    value = pattern
    key = "gemma-embedding.attention.sliding_window_pattern"
    broken = reader.rewrite(built.gguf("f32"), tmp_path / "all-swa.gguf", why="test", set_keys={key: (value, kind)})
    reply = child.call({"op": "load", "config": {"model_path": str(broken), "n_threads": 1}, "texts": ["a b c"]})
    assert reply.get("error") == "ConfigurationError", reply
    assert why in reply["message"] and "full-attention layer" in reply["message"]
    one_full = {key: (6, gguf.GGUFValueType.UINT32)}
    fine = reader.rewrite(built.gguf("f32"), tmp_path / "one-full.gguf", why="test", set_keys=one_full)
    reply = child.call({"op": "load", "config": {"model_path": str(fine), "n_threads": 1}, "texts": ["a b c"]})
    assert reply["ok"] and reply["shapes"] == [[64]], reply
