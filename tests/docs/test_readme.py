# SPDX-License-Identifier: Apache-2.0
"""The README's Python examples run, with MODEL set to the test model, and print what they say."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)

EXPECTED = {
    "Embed text": ["(384,) (3, 384) 384 512"],
    "Configure": ["PoolingStrategy.CLS (384,)"],
    "Handle errors": [
        "model 'minilm': text is empty",
        "model 'minilm': expected str, got NoneType",
        "model 'minilm': text has 1002 tokens; the limit is 512",
        "model 'missing': model file not found: missing.gguf",
    ],
    "Embed many texts": ["(1000, 384) (1000, 1000)", "[1000, 1000, 500]"],
    "Serve several models": [
        "['minilm'] 384 3",
        "CacheInfo(hits=1, misses=1, maxsize=10000, currsize=1) True",
        "((384,), (2, 384))",
        "[(100, 384), (100, 384), (50, 384)]",
        "['minilm', 'cls'] cls 2",
    ],
    "Tokens and the low-level": ["bert 384 30522 mean (101,)", "(2, 384)"],
    "Rerank: cross-encoders": ["(3,) 1 sigmoid 2 ['corpus_id', 'score', 'text']"],
    "Prompts, truncate_dim and precision": [
        "{'query': 'query: ', 'document': '', 'passage': 'passage: '}",
        "(3, 128) [1. 1. 1.] uint8 (3, 48) int8",
    ],
}


# "Many machines" needs a Ray cluster: tests/ray/test_ray.py::test_readme_many_machines_example runs it.
# "Serve over HTTP" needs a running server: tests/server/test_serve.py::test_readme_openai_example runs it.
ELSEWHERE = ["Many machines", "Serve over HTTP"]


def test_every_example_is_checked():
    assert len(BLOCKS) == len(EXPECTED) + len(ELSEWHERE)


@pytest.mark.parametrize("title", list(EXPECTED))
def test_readme_example(title, minilm_f16):
    names = {"MODEL": str(minilm_f16)}
    if title.startswith("Rerank"):
        from tests.support import rerank_models

        names["RERANKER"] = str(rerank_models.ensure("bert").gguf("f16"))
    text = README.read_text(encoding="utf-8")
    heading = text.index(title)
    block = next(b for b in BLOCKS if text.index(b) > heading)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, f"README:{title}", "exec"), names)
    for expected in EXPECTED[title]:
        assert expected in out.getvalue()
