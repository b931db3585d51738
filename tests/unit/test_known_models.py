# SPDX-License-Identifier: Apache-2.0
"""The known-model table and its matcher (embellama._gguf.known): names as converters write them match, near
misses and models outside the table do not, user tables extend it, and the built-in table is well formed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from embellama._exceptions import ConfigurationError
from embellama._gguf import known
from embellama._gguf.known import match, normalize_name


def meta(name: str | None = None, arch: str = "nomic-bert", **extra: str) -> dict[str, str]:
    data = {"general.architecture": arch, **extra}
    if name is not None:
        data["general.name"] = name
    return data


@pytest.mark.parametrize(
    "name",
    [
        "nomic-embed-text-v1.5",
        "Nomic Embed Text v1.5",
        "nomic_embed_text_v1_5",
        "NOMIC-EMBED-TEXT-V1.5",
        "nomic-embed-text-v1.5.Q8_0",
        "nomic-embed-text-v1.5.f16.gguf",
        "  nomic embed  text v1 5 ",
    ],
)
def test_spellings_of_a_name_match(name: str) -> None:
    entry = match(meta(name))
    assert entry is not None and entry.id == "nomic-ai/nomic-embed-text-v1.5"
    assert entry.prompts["query"] == "search_query: " and entry.prompts["document"] == "search_document: "
    assert "general.name" in entry.matched_by


@pytest.mark.parametrize(
    "name",
    [
        "nomic-embed-text-v1.51",
        "nomic-embed-text-v1.5-finetuned-legal",
        "my-nomic-embed-text-v1.5",
        "nomic-embed-text",
        "nomic-embed-text-v15",
        "e5-base-v3",
        "bge-small-en",
        "MiniLM L6 H384 Uncased",  # the base model of all-MiniLM-L6-v2 *and* of multi-qa-MiniLM-L6-dot-v1 (dot)
        "Hf",
        "",
    ],
)
def test_near_misses_and_unknown_models_do_not_match(name: str) -> None:
    assert match(meta(name, arch="bert")) is None


def test_v1_and_v1_5_are_different_entries() -> None:
    one, other = match(meta("nomic-embed-text-v1")), match(meta("nomic-embed-text-v1.5"))
    assert one is not None and other is not None and one.id != other.id
    assert one.matryoshka_dims == () and other.matryoshka_dims[0] == 768


def test_basename_version_and_size_label() -> None:
    entry = match(meta(None, arch="bert", **{"general.basename": "bge", "general.size_label": "small",
                                             "general.finetune": "en", "general.version": "v1.5"}))  # fmt: skip
    assert entry is not None and entry.id == "BAAI/bge-small-en-v1.5"
    # a fine-tune's basename names the base model plus its finetune: not the base model
    assert match(meta(None, arch="bert", **{"general.basename": "e5-base-v2", "general.finetune": "legal"})) is None


def test_source_repo_and_file_names() -> None:
    entry = match(meta("Hf", arch="bert"), "nomic-ai/nomic-embed-text-v1.5-GGUF/nomic-embed-text-v1.5.Q4_K_M.gguf")
    assert entry is not None and entry.id == "nomic-ai/nomic-embed-text-v1.5" and entry.matched_by.startswith("source")
    entry = match(meta("Hf", arch="bert"), "someone/gguf-collection/e5-small-v2-q8_0.gguf")
    assert entry is not None and entry.id == "intfloat/e5-small-v2"
    assert match(meta("Hf", arch="bert"), "someone/embeddings-GGUF/model-q8_0.gguf") is None


def test_kind_filters_entries() -> None:
    assert match(meta("bge-reranker-v2-m3", arch="bert"), kind="embedding") is None
    entry = match(meta("bge-reranker-v2-m3", arch="bert"), kind="reranker")
    assert entry is not None and entry.kind == "reranker"


def test_architecture_chooses_among_entries_with_one_name(tmp_path: Path) -> None:
    entries = known.load_table(
        {"models": [
            {"id": "a/for-bert", "names": ["twin"], "architectures": ["bert"], "similarity_fn_name": "dot"},
            {"id": "b/for-qwen3", "names": ["twin"], "architectures": ["qwen3"]},
        ]},
        "test",
    )  # fmt: skip
    assert match(meta("twin", arch="qwen3"), entries=entries).id == "b/for-qwen3"  # type: ignore[union-attr]
    assert match(meta("twin", arch="bert"), entries=entries).id == "a/for-bert"  # type: ignore[union-attr]


def test_a_tokenizer_hash_tells_apart_models_that_share_a_name() -> None:
    one, two = "1" * 64, "2" * 64
    entries = known.load_table(
        {"models": [
            {"id": "a/twin-one", "names": ["twin"], "tokenizer_sha256": [one]},
            {"id": "b/twin-two", "names": ["twin"], "tokenizer_sha256": [two]},
            {"id": "c/single", "names": ["single"], "tokenizer_sha256": [one]},
        ]},
        "test",
    )  # fmt: skip
    asked: list[str] = []

    def hashed(value: str):  # type: ignore[no-untyped-def]
        return lambda: asked.append(value) or value

    assert match(meta("twin"), entries=entries, tokenizer_hash=hashed(two)).id == "b/twin-two"  # type: ignore[union-attr]
    assert match(meta("twin"), entries=entries, tokenizer_hash=hashed(one)).id == "a/twin-one"  # type: ignore[union-attr]
    assert match(meta("single"), entries=entries, tokenizer_hash=hashed(two)) is None
    assert match(meta("twin"), entries=entries) is None  # hashes listed and none to compare: no match
    assert match(meta("other"), entries=entries, tokenizer_hash=hashed(one)) is None
    assert asked == [two, one, two]  # the vocabulary is hashed only when a named entry lists hashes
    with pytest.raises(ConfigurationError, match="tokenizer_sha256"):
        known.load_table({"models": [{"id": "x/y", "names": ["x"], "tokenizer_sha256": ["abc"]}]}, "test")


def test_user_table_comes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"models": [{"id": "me/my-nomic", "names": ["nomic-embed-text-v1.5"],
                                            "prompts": {"query": "q: "}}]}))  # fmt: skip
    entry = match(meta("nomic-embed-text-v1.5"), entries=known.table([path]))
    assert entry is not None and entry.id == "me/my-nomic" and entry.origin == str(path)
    monkeypatch.setenv(known.ENV_VAR, str(path))
    assert match(meta("nomic-embed-text-v1.5")).prompts == {"query": "q: "}  # type: ignore[union-attr]
    monkeypatch.setenv(known.ENV_VAR, str(tmp_path / "missing.json"))
    with pytest.raises(ConfigurationError, match="missing.json"):
        known.table()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"names": ["x"]}, "no 'id'"),
        ({"id": "a/b", "names": ["x"], "promts": {}}, "unknown field 'promts'"),
        ({"id": "a/b", "names": ["x"], "similarity_fn_name": "cos"}, "similarity_fn_name"),
        ({"id": "a/b", "names": ["x"], "prompts": {"q": 1}}, "prompts"),
        ({"id": "a/b", "names": ["x"], "prompts": {}, "default_prompt_name": "q"}, "default_prompt_name"),
        ({"id": "a/b", "names": []}, "names"),
        ({"id": "a/b", "names": ["x"], "rope": {"rope_scale": 2}}, "rope"),
        ({"id": "a/b", "names": ["x"], "matryoshka_dims": [0]}, "matryoshka_dims"),
        ({"id": "a/b", "names": ["x"], "max_seq_length": True}, "max_seq_length"),
    ],
)
def test_malformed_entries_are_refused(entry: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        known.load_table({"models": [entry]}, "test")


def test_builtin_table_is_well_formed() -> None:
    entries = known.table()
    ids = [e.id for e in entries]
    assert len(ids) == len(set(ids)) and len(ids) >= 60
    names = [n for e in entries for n in e.names]
    assert len(names) == len(set(names)), "a name in two entries would make a match depend on the order"
    for entry in entries:
        assert entry.source, entry.id
        if entry.needs_prompts:
            assert any(entry.prompts.values()), entry.id
    covered = " ".join(ids).lower()
    for family in ("nomic-embed-text-v1.5", "nomic-embed-text-v2", "multilingual-e5", "bge-m3", "mxbai-embed-large",
                   "snowflake-arctic-embed", "gte-qwen2", "qwen3-embedding", "embeddinggemma", "jina-embeddings-v2",
                   "jina-embeddings-v3", "all-minilm", "all-mpnet", "msmarco", "bge-reranker", "jina-reranker",
                   "qwen3-reranker"):  # fmt: skip
        assert family in covered, family
    tas_b = match(meta("msmarco-distilbert-base-tas-b", arch="bert"))
    assert tas_b is not None and tas_b.similarity_fn_name == "dot"


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=40))
def test_normalize_is_idempotent_and_never_fails(name: str) -> None:
    once = normalize_name(name)
    assert normalize_name(once) == once
    assert once == once.lower()
