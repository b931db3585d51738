# SPDX-License-Identifier: Apache-2.0
"""Prompts, truncate_dim and precision against sentence-transformers 6.2 on the same MiniLM weights,
quantization bit for bit against its quantize_embeddings, and prompts carried in GGUF metadata."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import embellama
from embellama import (
    ConfigurationError,
    EmbeddingEngine,
    EmbeddingModel,
    EngineConfig,
    InvalidInputError,
    ModelConfig,
    quantize_embeddings,
)
from embellama._cli import main as _cli
from embellama._compute import prompts as _prompts
from embellama._gguf import convert as _convert
from embellama._gguf import prompts as _gguf_prompts
from tests.support import make_model
from tests.support.reference import ST_MAX_SEQ_LENGTH
from tests.support.st_server import PRECISIONS, STServer

PROMPTS = {"query": "query: ", "passage": "passage: ", "classification": "Classify the topic of this text: "}
LONG = " ".join(f"word{i % 50} and some more text number {i}" for i in range(120))  # far over 256 tokens
TEXTS = [
    "A man is playing a guitar.",
    "Someone is playing an instrument.",
    "A woman is slicing an onion.",
    "How do I reset my password?",
    "The stock market fell sharply today.",
    "Café, naïve, résumé, façade.",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "short",
]
LONGS = [LONG, "An over-long passage: " + " ".join(f"token{i}" for i in range(400))]  # cut at 256 tokens
MIN_COS = 0.99999  # the suite's bar for MiniLM F16 against sentence-transformers


@pytest.fixture(scope="module")
def server():
    srv = STServer()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def model(minilm_f16):
    with EmbeddingModel(_config(model_path=minilm_f16, prompts=PROMPTS, max_tokens=ST_MAX_SEQ_LENGTH)) as m:
        yield m


def _config(model_path, **fields) -> ModelConfig:
    """F16 as the file is (compute_type="auto" would run F32 on Intel CPUs with AVX512_BF16), cut as ST cuts MiniLM."""
    fields.setdefault("max_tokens", ST_MAX_SEQ_LENGTH)
    return ModelConfig(model_path=model_path, compute_type="off", **fields)


def _cos_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return (a64 * b64).sum(1) / np.linalg.norm(a64, axis=1) / np.linalg.norm(b64, axis=1)


def _same(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    assert _cos_rows(ours, theirs).min() >= MIN_COS
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), np.linalg.norm(theirs, axis=1), rtol=3e-3)  # F16 weights


def _main(argv: list[str]) -> int:
    """The ``embellama`` command in this process, leaving llama.cpp's logger level as it found it."""
    llama_logger = logging.getLogger("embellama.llama_cpp")
    level = llama_logger.level
    try:
        return _cli.main(argv)
    finally:
        llama_logger.setLevel(level)


# -- prompts ----------------------------------------------------------------------------------


def test_prompts_match_sentence_transformers(model, server):
    kw = {"prompts": PROMPTS}
    _same(model.encode_query(TEXTS), server.encode(TEXTS, method="encode_query", **kw))
    _same(model.encode_document(TEXTS), server.encode(TEXTS, method="encode_document", **kw))
    _same(model.encode(TEXTS, prompt_name="passage"), server.encode(TEXTS, prompt_name="passage", **kw))
    _same(model.encode(TEXTS, prompt="Represent this: "), server.encode(TEXTS, prompt="Represent this: ", **kw))
    # over-long texts: prompt and text are cut together at 256 tokens, the prompt whole, as there
    for name in ("query", "classification"):
        _same(model.encode(LONGS, prompt_name=name), server.encode(LONGS, prompt_name=name, **kw))
    # prompt wins over prompt_name, as there
    both = {"prompt": "Represent this: ", "prompt_name": "query"}
    _same(model.embed_batch(TEXTS, **both), server.encode(TEXTS, **both, **kw))
    # a prompt changes the vectors; without one they are the plain ones
    plain = server.encode(TEXTS, **kw)
    _same(model.encode(TEXTS), plain)
    assert _cos_rows(model.encode_query(TEXTS), plain).min() < 0.99
    # one text: (dim,), the same vector
    one = model.encode_query(TEXTS[3])
    assert one.shape == (384,) and _cos_rows(one[None], model.encode_query(TEXTS)[3:4])[0] >= MIN_COS


def test_default_prompt_name_and_document_prompt_fallback(minilm_f16, server):
    prompts = {"passage": "passage: ", "classification": "Classify: "}
    config = _config(
        model_path=minilm_f16, prompts=prompts, default_prompt_name="classification", max_tokens=ST_MAX_SEQ_LENGTH
    )
    kw = {"prompts": prompts, "default_prompt_name": "classification"}
    with EmbeddingModel(config) as m:
        assert m.prompts == {"query": "", "document": "", **prompts} and m.default_prompt_name == "classification"
        _same(m.encode(TEXTS), server.encode(TEXTS, **kw))  # the default prompt applies
        _same(m.embed_batch(TEXTS), server.encode(TEXTS, **kw))
        # encode_query/encode_document use their own (empty) prompts, which override the default one
        _same(m.encode_query(TEXTS), server.encode(TEXTS, method="encode_query", **kw))
        _same(m.encode_document(TEXTS), server.encode(TEXTS, method="encode_document", **kw))
        _same(m.encode(TEXTS, prompt=""), server.encode(TEXTS, prompt="", **kw))


def test_prompts_count_toward_max_tokens_and_are_never_cut(model):
    prompt_ids = model.model.tokenize(PROMPTS["classification"], add_special=False)
    ids = model.tokenize(PROMPTS["classification"] + LONG)
    assert len(ids) == ST_MAX_SEQ_LENGTH  # prompt + text cut together at max_tokens
    assert (ids[1 : 1 + len(prompt_ids)] == prompt_ids).all()  # right after [CLS]: the prompt is whole
    assert ids[-1] == model.model.special_tokens.suffix[-1]  # [SEP] kept
    # the prompt's tokens take the place of text tokens: the vector equals the one of the pre-joined text
    joined = model.embed_batch([PROMPTS["classification"] + LONG], prompt="")
    np.testing.assert_array_equal(model.embed_batch([LONG], prompt_name="classification"), joined)


def test_prompt_errors_name_the_model_and_the_rule(model, minilm_f16):
    with pytest.raises(ConfigurationError, match=r"model '.*': unknown prompt_name 'qury'; the model's prompts: "):
        model.embed("x", prompt_name="qury")
    with pytest.raises(ConfigurationError, match=r"'classification', 'document', 'passage', 'query'"):
        model.embed_batch(["x"], prompt_name="nope")
    with pytest.raises(ConfigurationError, match=r"leaving no room for text within max_tokens \(256\)"):
        model.embed("x", prompt="word " * 300)
    with pytest.raises(ConfigurationError, match="prompt must be a str"):
        model.embed("x", prompt=3)
    with pytest.raises(ConfigurationError, match=r"model 'm': default_prompt_name 'nope' is not among its prompts"):
        EmbeddingModel(_config(model_path=minilm_f16, model_name="m", default_prompt_name="nope")).load()
    with pytest.raises(ConfigurationError, match="prompts must be a mapping of prompt name to prompt text"):
        _config(model_path=minilm_f16, prompts={"query": 1})
    with pytest.raises(InvalidInputError, match="text is empty"):  # an empty text stays an error with a prompt
        model.embed("", prompt_name="query")


# -- truncate_dim -------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [32, 128, 384])
def test_truncate_dim_matches_sentence_transformers(model, server, minilm_f16, dim):
    # sentence-transformers cuts after the model's Normalize module; normalize_embeddings=True normalizes the
    # cut vectors, which is what embellama gives: the cut is made before ModelConfig.normalize.
    ours = model.encode(TEXTS, truncate_dim=dim)
    assert ours.shape == (len(TEXTS), dim) and ours.dtype == np.float32
    _same(ours, server.encode(TEXTS, prompts=PROMPTS, truncate_dim=dim, normalize_embeddings=True))
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1, rtol=1e-6)
    # without a Normalize module: the raw pooled vectors, cut
    with EmbeddingModel(_config(model_path=minilm_f16, normalize=False, max_tokens=256, truncate_dim=dim)) as raw:
        _same(raw.encode(TEXTS), server.encode(TEXTS, truncate_dim=dim, normalize_module=False))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dim=st.integers(1, 384), norm=st.sampled_from([True, False, "l1", "max_abs", 3.0]))
def test_truncate_dim_cuts_before_normalizing(model, dim, norm):
    texts = TEXTS[:4]
    full = model.embed_batch(texts, normalize=False)
    expected = embellama.normalize(np.ascontiguousarray(full[:, :dim]), norm)
    np.testing.assert_array_equal(model.embed_batch(texts, normalize=norm, truncate_dim=dim), expected)
    single = embellama.normalize(model.embed(texts[0], normalize=False)[:dim].copy(), norm)  # one text: embed's path
    np.testing.assert_array_equal(model.embed(texts[0], normalize=norm, truncate_dim=dim), single)


def test_truncate_dim_from_the_config_and_its_errors(minilm_f16, model):
    with EmbeddingModel(_config(model_path=minilm_f16, truncate_dim=64, max_tokens=256)) as m:
        assert m.embed("hello").shape == (64,)
        np.testing.assert_array_equal(m.embed_batch(TEXTS), model.embed_batch(TEXTS, prompt="", truncate_dim=64))
        assert m.embed("hello", truncate_dim=384).shape == (384,)  # a call's own wins
    with pytest.raises(ConfigurationError, match=r"model 'big': truncate_dim \(500\) is larger than the model's 384"):
        EmbeddingModel(_config(model_path=minilm_f16, model_name="big", truncate_dim=500)).load()
    with pytest.raises(ConfigurationError, match=r"truncate_dim \(385\) is larger than the model's 384 dimensions"):
        model.embed("x", truncate_dim=385)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ConfigurationError, match="truncate_dim must be a positive int or None"):
            _config(model_path=minilm_f16, truncate_dim=bad)


# -- precision --------------------------------------------------------------------------------

finite = st.floats(-4, 4, allow_nan=False, width=32)
matrices = hnp.arrays(
    np.float32,
    st.tuples(st.integers(2, 12), st.integers(1, 70)),
    elements=st.one_of(finite, st.sampled_from([0.0, -0.0, 1.0, -1.0])),  # ties and zeros on purpose
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(embeddings=matrices, data=st.data())
def test_quantize_embeddings_is_bit_for_bit_sentence_transformers(server, embeddings, data):
    calibration = data.draw(
        st.one_of(
            st.none(), hnp.arrays(np.float32, (data.draw(st.integers(1, 6)), embeddings.shape[1]), elements=finite)
        )
    )
    extra = {} if calibration is None else {"calibration_embeddings": calibration}
    theirs = server.quantize(embeddings, **extra)
    for precision in PRECISIONS:
        ours = quantize_embeddings(embeddings, precision, **extra)
        assert ours.dtype == theirs[precision].dtype and ours.shape == theirs[precision].shape, precision
        assert ours.tobytes() == theirs[precision].tobytes(), precision
    ranges = np.vstack([embeddings.min(0) - 0.5, embeddings.max(0) + 0.25])
    theirs = server.quantize(embeddings, ranges=ranges)
    for precision in ("int8", "uint8"):
        assert quantize_embeddings(embeddings, precision, ranges=ranges).tobytes() == theirs[precision].tobytes()


def test_precision_through_the_model_is_quantize_embeddings_of_its_floats(model, server):
    for truncate_dim in (None, 100):
        floats = model.encode(TEXTS, truncate_dim=truncate_dim)
        theirs = server.quantize(floats)
        for precision in PRECISIONS:
            ours = model.encode(TEXTS, precision=precision, truncate_dim=truncate_dim)
            assert ours.dtype == theirs[precision].dtype and ours.tobytes() == theirs[precision].tobytes()
    # sentence-transformers' own encode(precision=...) on its own floats agrees where the floats round alike
    for precision in ("binary", "ubinary"):
        theirs = server.encode(TEXTS, prompts=PROMPTS, precision=precision)
        assert theirs.shape == (len(TEXTS), 48)
        assert np.mean(model.encode(TEXTS, precision=precision) == theirs) > 0.99
    # one text: binary kinds work, int8 has nothing to calibrate on (sentence-transformers raises too)
    assert model.embed("hello", precision="ubinary").shape == (48,)
    with pytest.raises(InvalidInputError, match=r"cannot compute int8 ranges from a single embedding"):
        model.encode("hello", precision="int8")


def test_precision_from_the_config_and_its_errors(minilm_f16, model):
    with EmbeddingModel(_config(model_path=minilm_f16, precision="uint8", truncate_dim=64, max_tokens=256)) as m:
        np.testing.assert_array_equal(
            m.embed_batch(TEXTS), quantize_embeddings(model.encode(TEXTS[:], truncate_dim=64, prompt=""), "uint8")
        )
        assert m.embed_batch(TEXTS, precision="float32").dtype == np.float32
        with pytest.raises(ConfigurationError, match="embed_iter cannot give uint8"):
            next(m.embed_iter(iter(TEXTS)))
    with pytest.raises(
        ConfigurationError, match=r"model 'q': unknown precision 'int4'; expected one of: float32, int8"
    ):
        _config(model_path=minilm_f16, model_name="q", precision="int4")
    with pytest.raises(ConfigurationError, match="unknown precision 'fp16'"):
        model.embed("x", precision="fp16")
    with pytest.raises(ConfigurationError, match="unknown precision"):
        quantize_embeddings(np.ones((2, 3)), "int4")
    with pytest.raises(InvalidInputError, match="must be float"):
        quantize_embeddings(np.ones((2, 3), np.int8), "binary")
    chunks = list(model.embed_iter(iter(TEXTS), chunk_size=4, precision="binary", truncate_dim=64))
    np.testing.assert_array_equal(np.concatenate(chunks), model.encode(TEXTS, precision="binary", truncate_dim=64))


def test_pooling_none_refuses_truncate_dim_and_precision(minilm_f16):
    with (
        EmbeddingModel(_config(model_path=minilm_f16, pooling="none")) as m,
        pytest.raises(ConfigurationError, match="need one vector per text, not pooling NONE"),
    ):
        m.embed_batch(["a b"], truncate_dim=8)


# -- the engine -------------------------------------------------------------------------------


def test_engine_passes_prompts_truncate_dim_and_precision_through(minilm_f16, model):
    config = _config(model_path=minilm_f16, prompts=PROMPTS, max_tokens=256)
    with EmbeddingEngine(EngineConfig(cache_size=100, cache_batches=True), models=[config]) as engine:
        info = engine.info()
        assert info["prompts"]["query"] == "query: " and info["default_prompt_name"] is None
        np.testing.assert_array_equal(engine.encode_query(TEXTS), model.encode_query(TEXTS))
        np.testing.assert_array_equal(engine.encode_document(TEXTS), model.encode_document(TEXTS))
        cached = model.embed_batch(TEXTS, prompt_name="query")[0]  # cache_batches: from the batch above
        np.testing.assert_array_equal(engine.encode_query(TEXTS[0]), cached)
        # the cache keeps prompts, cuts and types apart
        plain, query = engine.embed("hello"), engine.embed("hello", prompt_name="query")
        assert engine.embed("hello", prompt_name="query").tobytes() == query.tobytes()
        assert _cos_rows(plain[None], query[None])[0] < 0.99
        assert engine.embed("hello", truncate_dim=16).shape == (16,)
        assert engine.embed("hello", precision="binary").dtype == np.int8
        # int8 is calibrated on the batch computed together, never on cached pieces
        engine.embed_batch(TEXTS[:3])
        np.testing.assert_array_equal(
            engine.embed_batch(TEXTS, precision="int8"), model.encode(TEXTS, precision="int8")
        )
        with pytest.raises(ConfigurationError, match="unknown prompt_name"):
            engine.embed("x", prompt_name="nope")
        with pytest.raises(ConfigurationError, match="embed_iter cannot give int8"):
            engine.embed_iter(TEXTS, precision="int8")
        streamed = np.concatenate(list(engine.embed_iter(TEXTS, chunk_size=3, prompt_name="query")))
        np.testing.assert_allclose(streamed, model.encode_query(TEXTS), atol=1e-6)


# -- prompts in the GGUF ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prompted_gguf(minilm_f16, tmp_path_factory):
    out = tmp_path_factory.mktemp("prompted") / "minilm-prompts.gguf"
    _gguf_prompts.write_prompts(minilm_f16, out, {"query": "query: ", "passage": "passage: "}, "passage")
    return out


def test_a_gguf_carries_its_prompts(prompted_gguf, minilm_f16, model):
    with EmbeddingModel(_config(model_path=prompted_gguf, max_tokens=256)) as m:
        assert m.prompts == {"query": "query: ", "document": "", "passage": "passage: "}
        assert m.default_prompt_name == "passage"
        texts = TEXTS[:4]
        np.testing.assert_array_equal(m.embed_batch(texts), model.embed_batch(texts, prompt_name="passage"))
        np.testing.assert_array_equal(m.encode_query(texts), model.encode_query(texts))
        # everything else in the file is unchanged: no prompt gives the original file's vectors, bit for bit
        np.testing.assert_array_equal(m.embed_batch(texts, prompt=""), model.embed_batch(texts, prompt=""))
        assert m.model.metadata_value("general.architecture") == "bert" and m.model.n_params == model.model.n_params
    # the config's prompts and default win over the file's
    config = _config(model_path=prompted_gguf, prompts={"query": "q: "}, default_prompt_name="query")
    with EmbeddingModel(config) as m:
        assert m.prompts["query"] == "q: " and m.prompts["passage"] == "passage: " and m.default_prompt_name == "query"


@pytest.mark.parametrize("kind", ["f16", "q8_0"])
def test_writing_prompts_keeps_every_other_key_and_tensor(minilm_paths, tmp_path, kind):
    source = minilm_paths[kind]
    out = tmp_path / "p.gguf"
    _gguf_prompts.write_prompts(source, out, {"query": "query: "})
    texts = TEXTS[:3]
    with EmbeddingModel(_config(model_path=source)) as before, EmbeddingModel(_config(model_path=out)) as after:
        old, new = before.model.metadata(), after.model.metadata()
        assert new == {**old, _prompts.PROMPTS_KEY: '{"query": "query: "}'}
        assert after.model.n_params == before.model.n_params and after.model.ftype == before.model.ftype
        np.testing.assert_array_equal(after.embed_batch(texts), before.embed_batch(texts))
        assert after.default_prompt_name is None and after.prompts["query"] == "query: "


def test_prompts_command_shows_and_sets_a_gguf_s_prompts(prompted_gguf, tmp_path, capsys):
    assert _main(["prompts", str(prompted_gguf)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown == {"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": "passage"}
    copy = tmp_path / "copy.gguf"
    shutil.copy(prompted_gguf, copy)
    assert _main(["prompts", str(copy), "--set", "query=Represent the query: ", "--default", "query"]) == 0
    capsys.readouterr()
    assert _main(["prompts", str(copy)]) == 0  # written in place
    shown = json.loads(capsys.readouterr().out)
    assert shown["prompts"]["query"] == "Represent the query: " and shown["prompts"]["passage"] == "passage: "
    assert shown["default_prompt_name"] == "query"
    assert _main(["prompts", str(copy), "--set", "oops"]) == 1
    assert "--set expects NAME=TEXT" in capsys.readouterr().err


def test_convert_carries_the_hugging_face_prompts(tmp_path, minilm_f16):
    """``embellama convert`` of a sentence-transformers folder writes its prompts into the GGUF. The llama.cpp
    converter is stood in for by a script that copies the MiniLM GGUF (the real one is tested elsewhere)."""
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    prompts = {"query": "search_query: ", "document": "search_document: "}
    (hf / "config_sentence_transformers.json").write_text(json.dumps({"prompts": prompts, "default_prompt_name": None}))
    tree = tmp_path / "llama.cpp"
    tree.mkdir()
    (tree / "convert_hf_to_gguf.py").write_text(
        textwrap.dedent(f"""
            import shutil, sys
            shutil.copy({str(minilm_f16)!r}, sys.argv[sys.argv.index("--outfile") + 1])
        """)
    )
    out = tmp_path / "out.gguf"
    _convert.convert_hf(hf, out, "f16", tree)
    with EmbeddingModel(_config(model_path=out)) as m:
        assert m.prompts == prompts and m.default_prompt_name is None
    assert _gguf_prompts.hf_prompts(make_model.hf_model_dir()) == ({}, None)  # MiniLM's own folder has none


# -- the command line -------------------------------------------------------------------------


def test_embed_command_with_prompt_truncate_dim_and_precision(minilm_f16, model, tmp_path, capsys):
    out = tmp_path / "v.npy"
    args = [
        "embed",
        str(minilm_f16),
        *TEXTS[:4],
        "--prompt",
        "query: ",
        "--truncate-dim",
        "100",
        "--compute-type",
        "off",
    ]
    assert _main([*args, "--precision", "ubinary", "-o", str(out)]) == 0
    np.testing.assert_array_equal(
        np.load(out), model.encode(TEXTS[:4], prompt_name="query", truncate_dim=100, precision="ubinary")
    )
    assert _main([*args, "--precision", "int8", "-o", str(out)]) == 0
    np.testing.assert_array_equal(
        np.load(out), model.encode(TEXTS[:4], prompt="query: ", truncate_dim=100, precision="int8")
    )
    assert _main([*args, "--format", "jsonl"]) == 0
    rows = [json.loads(line)["embedding"] for line in capsys.readouterr().out.splitlines()]
    np.testing.assert_allclose(np.array(rows), model.encode(TEXTS[:4], prompt="query: ", truncate_dim=100), atol=1e-6)


def test_embedder_for_ray_writes_quantized_columns(minilm_f16, model):
    pa = pytest.importorskip("pyarrow")
    from embellama.ray import Embedder, embedding_matrix

    embedder = Embedder(
        _config(model_path=minilm_f16, max_tokens=256), precision="binary", truncate_dim=128, prompt="query: "
    )
    try:
        table = embedder(pa.table({"text": TEXTS}))
        column = table.column("embedding")
        assert str(column.type) == "fixed_size_list<item: int8>[16]"
        expected = model.encode(TEXTS, prompt_name="query", truncate_dim=128, precision="binary")
        np.testing.assert_array_equal(embedding_matrix(column), expected)
    finally:
        embedder.close()
    with pytest.raises(ConfigurationError, match="precision 'uint8' would calibrate each Ray batch"):
        Embedder(_config(model_path=minilm_f16), precision="uint8")


def test_the_guides_memory_table_is_what_the_outputs_take(model):
    page = (make_model.REPO / "docs/guide/prompts.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(\w+)` \| (\w+) \| (\d+) \| ([\d.]+ [MG]B) \| (\d+) \| (\d+)× \|$", page, re.M)
    assert [r[0] for r in rows] == list(PRECISIONS)
    for precision, dtype, full, million, cut, saving in rows:
        vectors = model.encode(TEXTS[:3], precision=precision)
        assert vectors.dtype == np.dtype(dtype) and vectors[0].nbytes == int(full)
        assert model.encode(TEXTS[:3], precision=precision, truncate_dim=128)[0].nbytes == int(cut)
        number, unit = million.split()
        assert round(int(full) * 1e6 / {"MB": 1e6, "GB": 1e9}[unit], 2) == float(number)
        assert 1536 // int(full) == int(saving)


def test_model_config_keeps_a_copy_of_its_prompts_and_still_hashes():
    source = {"query": "query: "}
    a = ModelConfig(model_path="m.gguf", prompts=source, default_prompt_name="query", truncate_dim=64, precision="int8")
    source["query"] = "changed: "
    assert a.prompts == {"query": "query: "}
    b = ModelConfig(
        model_path="m.gguf",
        prompts={"query": "query: "},
        default_prompt_name="query",
        truncate_dim=64,
        precision="int8",
    )
    assert a == b and hash(a) == hash(b)
    assert dataclasses.replace(a, prompts={"query": "q: "}) != a
    with pytest.raises(ConfigurationError, match="default_prompt_name must be a non-empty str or None"):
        ModelConfig(model_path="m.gguf", default_prompt_name="")
