# SPDX-License-Identifier: Apache-2.0
"""The STS Benchmark file, where there is one, and the switches that hide it and police skips.

Only the tests that need the STS Benchmark's gold scores (the Spearman figure) read the file; they carry
the ``sts_gold`` marker and skip, saying why, where there is no file. Every other test runs on what the
checkout has: the exactness tests that compare "every STS sentence" take the STS pairs where the file is
there and :mod:`tests.support.corpus`'s stand-in pairs where it is not.

Environment switches (read on each call, so a test may set them):

``EMBELLAMA_STS_FILE``
    The STS Benchmark's ``sts-test.csv``; else ``../shared/data/stsbenchmark/sts-test.csv`` beside the checkout.
``EMBELLAMA_HIDE_SHARED=1``
    The tests act as if nothing were beside the checkout: no ``../shared``, and ``$EMBELLAMA_STS_FILE``
    ignored too (so a run with the switch proves that the suite needs no data from outside the checkout,
    whatever the environment names). The gold-score tests skip.
``EMBELLAMA_REQUIRE_STS=1``
    The gold-score tests fail instead of skipping when there is no STS file (or it is hidden): for the run
    of those tests alone, which must not pass by skipping them.
``EMBELLAMA_STRICT_SKIPS=1``
    Any skipped test that does not carry the ``sts_gold`` marker fails the run (pytest exits non-zero and
    names the skipped tests; see :mod:`tests.support.skips`).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[2]
MARKER = "sts_gold"
FILE_VAR = "EMBELLAMA_STS_FILE"
HIDE_VAR = "EMBELLAMA_HIDE_SHARED"
REQUIRE_VAR = "EMBELLAMA_REQUIRE_STS"
STRICT_VAR = "EMBELLAMA_STRICT_SKIPS"
SHARED = REPO.parent / "shared"
DEFAULT_FILE = SHARED / "data" / "stsbenchmark" / "sts-test.csv"


class SentencePairs(NamedTuple):
    """Pairs of sentences: the first ones, the second ones, and the gold scores (``None`` for the stand-in)."""

    first: list[str]
    second: list[str]
    gold: list[float] | None


def _on(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


def shared_hidden() -> bool:
    """Whether ``EMBELLAMA_HIDE_SHARED`` asks the tests to act as if nothing were beside the checkout."""
    return _on(HIDE_VAR)


def strict_skips() -> bool:
    return _on(STRICT_VAR)


def sts_required() -> bool:
    return _on(REQUIRE_VAR)


def sts_file() -> Path | None:
    """The STS Benchmark test file: ``$EMBELLAMA_STS_FILE`` or the one in ``../shared``; ``None`` where there
    is none or ``EMBELLAMA_HIDE_SHARED`` hides it."""
    if shared_hidden():
        return None
    named = os.environ.get(FILE_VAR)
    path = Path(named).expanduser() if named else DEFAULT_FILE
    return path if path.is_file() else None


def missing_reason() -> str:
    """Why there is no STS file, in one line (the gold-score tests' skip reason)."""
    if shared_hidden():
        return f"needs the STS Benchmark's gold scores, and {HIDE_VAR}=1 hides the STS file"
    named = os.environ.get(FILE_VAR)
    where = f"${FILE_VAR} names {named}, which is no file" if named else f"no ${FILE_VAR} and no {DEFAULT_FILE}"
    return f"needs the STS Benchmark's gold scores: {where}"


def read_sts(path: Path) -> SentencePairs:
    """The STS Benchmark pairs of ``path`` (tab-separated: genre, file, year, id, score, sentence 1, sentence 2)."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return SentencePairs([r[5] for r in rows], [r[6] for r in rows], [float(r[4]) for r in rows])


def comparison_pairs() -> SentencePairs:
    """The pairs the exactness tests compare: the STS Benchmark's where its file is there, else the stand-in
    of :mod:`tests.support.corpus` (the same number of pairs and a like spread of lengths, no gold scores)."""
    path = sts_file()
    if path is not None:
        return read_sts(path)
    from tests.support import corpus

    first, second = corpus.sentence_pairs()
    return SentencePairs(first, second, None)
