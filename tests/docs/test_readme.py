# SPDX-License-Identifier: Apache-2.0
"""The README's Python examples run, with MODEL set to the test model, and print what they say."""

from __future__ import annotations

import re

import pytest

from tests.docs import examples

README = examples.REPO / "README.md"
EXAMPLES = examples.examples(README)

EXPECTED = {
    "README.md:Embed": ["(3, 384) (384,)"],
    "README.md:Rerank": ["2 ['corpus_id', 'score', 'text']"],
    "README.md:Many threads and asyncio: `EmbeddingEngine`": ["3 (384,) (2, 384)"],
}


def test_every_example_is_checked():
    assert sorted(EXAMPLES) == sorted(EXPECTED)


def test_the_readme_is_a_front_page():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert 100 <= len(lines) <= 260, len(lines)


def test_the_readme_links_to_pages_that_exist():
    text = README.read_text(encoding="utf-8")
    links = re.findall(r"\]\((docs/[^)#]+)(?:#[^)]*)?\)", text)
    assert len(links) >= 10
    missing = sorted({link for link in links if not (examples.REPO / link).is_file()})
    assert missing == []


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_readme_example(key, minilm_f16):
    names = {"MODEL": str(minilm_f16)}
    if "RERANKER" in EXAMPLES[key]:
        from tests.support import rerank_models

        names["RERANKER"] = str(rerank_models.ensure("bert").gguf("f16"))
    printed = examples.run(EXAMPLES[key], key, **names)
    for expected in EXPECTED[key]:
        assert expected in printed, f"{key}: {expected!r} not in {printed!r}"
