# SPDX-License-Identifier: Apache-2.0
"""Known-model defaults on real GGUFs: a file whose metadata names nomic-embed-text v1.5 gets its prompts with no
configuration, a file outside the table (the MiniLM GGUF, named after its base model) gets none, the GGUF's and
the config's prompts win over the table, the similarity function comes from the config, the GGUF, the table,
and ``embellama info`` / ``info --check`` report them."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from embellama import EmbeddingModel, ModelConfig
from embellama._cli import main as _cli
from embellama._compute import prompts as _prompts
from embellama._exceptions import ConfigurationError
from embellama._gguf import known
from embellama._gguf import prompts as _gguf_prompts
from embellama._gguf import reader as _reader
from embellama._models.defaults import SIMILARITY_KEY

TEXTS = ["What is TSNE?", "Who is Laurens van der Maaten?", "A cat sat on the mat.", "Stocks fell sharply today."]


def _main(argv: list[str]) -> int:
    """The ``embellama`` command in this process, leaving llama.cpp's logger level as it found it."""
    llama_logger = logging.getLogger("embellama.llama_cpp")
    level = llama_logger.level
    try:
        return _cli.main(argv)
    finally:
        llama_logger.setLevel(level)


def _config(**kw: object) -> ModelConfig:
    return ModelConfig(**{"n_threads": 1, "n_gpu_layers": 0, "compute_type": "off", **kw})  # type: ignore[arg-type]


def renamed(source: Path, out: Path, name: str, **keys: str) -> Path:
    """A copy of ``source`` whose general.name is ``name`` (and string keys set), everything else unchanged."""
    import gguf

    string = gguf.GGUFValueType.STRING
    sets = {"general.name": (name, string), **{k.replace("__", "."): (v, string) for k, v in keys.items()}}
    return _reader.rewrite(source, out, why="test", set_keys=sets)


@pytest.fixture(scope="module")
def nomic_gguf(minilm_f16, tmp_path_factory) -> Path:
    return renamed(minilm_f16, tmp_path_factory.mktemp("known") / "named-nomic.gguf", "nomic-embed-text-v1.5")


@pytest.fixture(scope="module")
def plain(minilm_f16):
    with EmbeddingModel(_config(model_path=minilm_f16)) as model:
        yield model


def test_a_gguf_named_nomic_v1_5_gets_its_prompts_with_no_configuration(nomic_gguf, plain):
    with EmbeddingModel(_config(model_path=nomic_gguf)) as m:
        assert m.known_model is not None and m.known_model.id == "nomic-ai/nomic-embed-text-v1.5"
        assert m.prompts["query"] == "search_query: " and m.prompts["document"] == "search_document: "
        assert m.default_prompt_name is None
        np.testing.assert_array_equal(m.encode_query(TEXTS), plain.embed_batch(TEXTS, prompt="search_query: "))
        np.testing.assert_array_equal(m.encode_document(TEXTS), plain.embed_batch(TEXTS, prompt="search_document: "))
        np.testing.assert_array_equal(m.embed_batch(TEXTS), plain.embed_batch(TEXTS))  # no default prompt
        assert m.similarity_fn_name == "cosine"


def test_a_model_outside_the_table_gets_no_prompts(plain):
    # "MiniLM L6 H384 Uncased" is the base model of all-MiniLM-L6-v2, and also of multi-qa-MiniLM-L6-dot-v1 (which
    # scores by dot product) and other fine-tunes: the name does not say which, so it matches nothing.
    assert plain.model.metadata_value("general.name") == "MiniLM L6 H384 Uncased"
    assert plain.known_model is None
    assert plain.prompts == {"query": "", "document": ""} and plain.similarity_fn_name == "cosine"
    np.testing.assert_array_equal(plain.encode_query(TEXTS[:2]), plain.embed_batch(TEXTS[:2]))


@pytest.mark.parametrize("name", ["nomic-embed-text-v1.5-finetuned", "nomic embed text", "e5-base-v3"])
def test_near_miss_names_get_no_prompts(minilm_f16, tmp_path, name):
    with EmbeddingModel(_config(model_path=renamed(minilm_f16, tmp_path / "m.gguf", name))) as m:
        assert m.known_model is None and m.prompts == {"query": "", "document": ""}


def test_the_gguf_s_and_the_config_s_prompts_win_over_the_table(nomic_gguf, tmp_path):
    carried = _gguf_prompts.write_prompts(nomic_gguf, tmp_path / "carried.gguf", {"query": "mine: "})
    with EmbeddingModel(_config(model_path=carried)) as m:
        assert m.known_model is not None  # still known (similarity, rope), but the file's prompts are used whole
        assert m.prompts == {"query": "mine: ", "document": ""}
    with EmbeddingModel(_config(model_path=nomic_gguf, prompts={"query": "q: "}, default_prompt_name="query")) as m:
        assert m.prompts["query"] == "q: " and m.prompts["document"] == "search_document: "
        assert m.default_prompt_name == "query"
    with EmbeddingModel(_config(model_path=nomic_gguf, use_known_defaults=False)) as m:
        assert m.known_model is None and m.prompts == {"query": "", "document": ""}


def test_similarity_fn_name_from_config_gguf_and_table(minilm_f16, tmp_path, plain):
    tas_b = renamed(minilm_f16, tmp_path / "tas-b.gguf", "msmarco-distilbert-base-tas-b")
    with EmbeddingModel(_config(model_path=tas_b)) as m:
        assert m.similarity_fn_name == "dot" and m.prompts == {"query": "", "document": ""}
        a, b = m.embed_batch(TEXTS[:2], normalize=False), m.embed_batch(TEXTS[2:], normalize=False)
        np.testing.assert_allclose(m.similarity(a, b), a @ b.T, rtol=1e-5)
    with EmbeddingModel(_config(model_path=tas_b, similarity_fn_name="euclidean")) as m:
        assert m.similarity_fn_name == "euclidean"
    saved = renamed(minilm_f16, tmp_path / "saved.gguf", "anything", **{SIMILARITY_KEY.replace(".", "__"): "manhattan"})
    with EmbeddingModel(_config(model_path=saved)) as m:
        assert m.similarity_fn_name == "manhattan"
    bad = renamed(minilm_f16, tmp_path / "bad.gguf", "anything", **{SIMILARITY_KEY.replace(".", "__"): "jaccard"})
    with pytest.raises(ConfigurationError, match="jaccard"):
        EmbeddingModel(_config(model_path=bad)).load()
    with pytest.raises(ConfigurationError, match="similarity_fn_name"):
        _config(model_path=minilm_f16, similarity_fn_name="angle")


def test_a_user_table_names_a_model(minilm_f16, tmp_path, monkeypatch):
    table = tmp_path / "mine.json"
    entry = {"id": "me/minilm", "names": ["MiniLM-L6-H384-uncased"], "prompts": {"query": "Q: "},
             "default_prompt_name": "query", "similarity_fn_name": "dot"}  # fmt: skip
    table.write_text(json.dumps({"models": [entry]}))
    with EmbeddingModel(_config(model_path=minilm_f16, known_models=table)) as m:
        assert m.known_model is not None and m.known_model.origin == str(table)
        assert m.prompts["query"] == "Q: " and m.default_prompt_name == "query" and m.similarity_fn_name == "dot"
    # a vocabulary hash in the entry: the MiniLM GGUF's own matches, another does not
    digest = known.tokenizer_sha256(minilm_f16)
    for hashes, matched in (([digest], True), (["0" * 64], False)):
        table.write_text(json.dumps({"models": [{**entry, "tokenizer_sha256": hashes}]}))
        with EmbeddingModel(_config(model_path=minilm_f16, known_models=table)) as m:
            assert (m.known_model is not None) is matched
    table.write_text("{not json")
    with pytest.raises(ConfigurationError, match="not JSON"):
        EmbeddingModel(_config(model_path=minilm_f16, known_models=table)).load()


def test_info_names_the_entry_and_check_warns(nomic_gguf, minilm_f16, tmp_path, capsys):
    assert _main(["info", str(nomic_gguf), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["known_model"]["id"] == "nomic-ai/nomic-embed-text-v1.5"
    assert report["known_model"]["matched_by"] == "general.name 'nomic-embed-text-v1.5'"
    assert _main(["info", str(minilm_f16), "--check"]) == 0
    out = capsys.readouterr().out
    assert "known_model: none" in out and "check: no problems found" in out
    # a known model that needs prompts and carries none, a missing EOS and pooling type: each a warning, status 1
    stripped = _reader.rewrite(
        nomic_gguf,
        tmp_path / "stripped.gguf",
        why="test",
        drop_keys=("tokenizer.ggml.eos_token_id", "bert.pooling_type"),
    )
    assert _main(["info", str(stripped), "--check", "--json"]) == 1
    warnings = json.loads(capsys.readouterr().out)["warnings"]
    assert len(warnings) == 3
    assert any("no EOS token" in w for w in warnings) and any("no pooling type" in w for w in warnings)
    assert any("trained with prompts" in w for w in warnings)
    with_prompts = _gguf_prompts.write_prompts(nomic_gguf, tmp_path / "p.gguf", {"query": "search_query: "})
    assert _main(["info", str(with_prompts), "--check"]) == 0
    assert _prompts.PROMPTS_KEY in capsys.readouterr().out


def test_a_model_loaded_by_name_matches_by_its_repository_and_file(minilm_f16, tmp_path, monkeypatch, plain):
    """The MiniLM GGUF's own name matches nothing; cached as nomic's GGUF repository, the source names it."""
    repo, filename, commit = (
        "nomic-ai/nomic-embed-text-v1.5-GGUF",
        "nomic-embed-text-v1.5.f16.gguf",
        "c0ffee" * 6 + "0000",
    )
    folder = tmp_path / "hub" / ("models--" + repo.replace("/", "--"))
    (folder / "blobs").mkdir(parents=True)
    (folder / "blobs" / ("0" * 64)).symlink_to(minilm_f16.resolve())
    (folder / "snapshots" / commit).mkdir(parents=True)
    (folder / "snapshots" / commit / filename).symlink_to(Path("../../blobs") / ("0" * 64))
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with EmbeddingModel(_config(model_path=f"hf://{repo}/{filename}")) as m:
        assert m.known_model is not None and m.known_model.id == "nomic-ai/nomic-embed-text-v1.5"
        assert m.known_model.matched_by.startswith("source")
        np.testing.assert_array_equal(m.encode_query(TEXTS[:2]), plain.embed_batch(TEXTS[:2], prompt="search_query: "))
