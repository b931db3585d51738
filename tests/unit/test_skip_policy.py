# SPDX-License-Identifier: Apache-2.0
"""The skip policy of tests/support/skips.py and sts.py: gold-score tests skip without the STS file, the
switches hide it or require it, strict mode fails a run with any other skip; and the stand-in corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import corpus, sts

pytest_plugins = ["pytester"]

CONFTEST = """
from tests.support.skips import SkipPolicy

def pytest_configure(config):
    config.pluginmanager.register(SkipPolicy(config), "embellama-skip-policy")
"""
TESTS = """
import pytest

def test_passes():
    pass

def test_skips():
    pytest.skip("no widget here")

@pytest.mark.xfail(reason="known")
def test_expected_failure():
    raise AssertionError

@pytest.mark.sts_gold
def test_gold():
    from tests.support import sts
    assert sts.sts_file() is not None
"""
UNMARKED = """
import pytest

@pytest.fixture
def sts_gold():
    return 1

def test_reads_gold_unmarked(sts_gold):
    pass
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    for name in (sts.FILE_VAR, sts.HIDE_VAR, sts.REQUIRE_VAR, sts.STRICT_VAR):
        monkeypatch.delenv(name, raising=False)
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nmarkers =\n    sts_gold: gold scores\n")
    pytester.makepyfile(test_some=TESTS)
    return pytester


@pytest.fixture
def sts_csv(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "sts-test.csv"
    path.parent.mkdir()
    path.write_text("main-captions\tMSRvid\t2012test\t0001\t5.000\tA man runs.\tA man is running.\n")
    return path


def _run(project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *args: str, **switches: str):
    for name, value in switches.items():
        monkeypatch.setenv(name, value)
    return project.runpytest("-p", "no:cacheprovider", "-rs", *args)


def test_hidden_sts_file_skips_the_gold_test_with_its_reason(project, monkeypatch, sts_csv):
    result = _run(project, monkeypatch, "-k", "gold", EMBELLAMA_STS_FILE=str(sts_csv), EMBELLAMA_HIDE_SHARED="1")
    result.assert_outcomes(skipped=1, deselected=3)
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        ["SKIPPED *needs the STS Benchmark's gold scores, and EMBELLAMA_HIDE_SHARED=1 hides the STS file"]
    )


def test_a_named_sts_file_runs_the_gold_test(project, monkeypatch, sts_csv):
    result = _run(project, monkeypatch, "-k", "gold", EMBELLAMA_STS_FILE=str(sts_csv), EMBELLAMA_STRICT_SKIPS="1")
    result.assert_outcomes(passed=1, deselected=3)
    assert result.ret == 0


def test_a_missing_sts_file_is_named_in_the_reason(project, monkeypatch, tmp_path):
    nowhere = tmp_path / "nowhere.csv"
    result = _run(project, monkeypatch, "-k", "gold", EMBELLAMA_STS_FILE=str(nowhere))
    result.assert_outcomes(skipped=1, deselected=3)
    assert f"$EMBELLAMA_STS_FILE names {nowhere}, which is no file" in result.stdout.str()


def test_required_sts_file_fails_the_gold_test_instead(project, monkeypatch):
    result = _run(project, monkeypatch, "-k", "gold", EMBELLAMA_HIDE_SHARED="1", EMBELLAMA_REQUIRE_STS="1")
    result.assert_outcomes(errors=1, deselected=3)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "EMBELLAMA_REQUIRE_STS=1 asks for these tests to run" in result.stdout.str()


def test_strict_mode_fails_a_run_with_another_skip_and_names_it(project, monkeypatch):
    lenient = _run(project, monkeypatch, EMBELLAMA_HIDE_SHARED="1")
    lenient.assert_outcomes(passed=1, skipped=2, xfailed=1)
    assert lenient.ret == 0

    strict = _run(project, monkeypatch, EMBELLAMA_STRICT_SKIPS="1")
    strict.assert_outcomes(passed=1, skipped=2, xfailed=1)
    assert strict.ret == pytest.ExitCode.TESTS_FAILED
    section = strict.stdout.str().split("EMBELLAMA_STRICT_SKIPS=1: skipped tests fail the run", 1)[1]
    assert "SKIPPED test_some.py::test_skips: no widget here" in section
    assert "test_gold" not in section and "test_expected_failure" not in section  # allowed: gold, xfail
    assert "1 skipped test(s) not marked sts_gold" in section


def test_strict_mode_passes_when_only_gold_tests_skip(project, monkeypatch):
    result = _run(project, monkeypatch, "-k", "not test_skips", EMBELLAMA_HIDE_SHARED="1", EMBELLAMA_STRICT_SKIPS="1")
    result.assert_outcomes(passed=1, skipped=1, xfailed=1, deselected=1)
    assert result.ret == 0


def test_strict_mode_counts_a_skipped_module(project, monkeypatch):
    project.makepyfile(test_gone="import pytest\npytest.skip('gone', allow_module_level=True)\n")
    result = _run(project, monkeypatch, "test_gone.py", EMBELLAMA_STRICT_SKIPS="1")
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # not "no tests collected"
    assert "SKIPPED test_gone.py: gone" in result.stdout.str()


def test_a_test_reading_gold_scores_must_carry_the_marker(project, monkeypatch):
    project.makepyfile(test_some=UNMARKED)
    result = _run(project, monkeypatch)
    result.assert_outcomes(errors=1)
    assert "reads the STS gold scores: mark it @pytest.mark.sts_gold" in result.stdout.str()


def test_hide_switch_hides_a_named_file_too(sts_csv, monkeypatch):
    monkeypatch.setenv(sts.FILE_VAR, str(sts_csv))
    monkeypatch.setenv(sts.HIDE_VAR, "0")
    assert sts.sts_file() == sts_csv
    assert sts.comparison_pairs() == sts.SentencePairs(["A man runs."], ["A man is running."], [5.0])
    monkeypatch.setenv(sts.HIDE_VAR, "1")
    assert sts.sts_file() is None
    pairs = sts.comparison_pairs()
    assert pairs.gold is None and (pairs.first, pairs.second) == corpus.sentence_pairs()


def test_the_stand_in_corpus_is_the_size_and_spread_of_the_sts_benchmark():
    first, second = corpus.sentence_pairs()
    texts = first + second
    assert len(first) == len(second) == corpus.N_PAIRS == 1379
    assert len(set(texts)) == len(texts)  # distinct: the token tests key references by text
    words = sorted(len(t.split()) for t in texts)
    assert words[0] >= 3 and words[-1] <= 30
    assert 7 <= words[len(words) // 2] <= 13  # the STS Benchmark's median: 8 words
    assert words[int(0.95 * len(words))] >= 18  # and a long tail (its 95th percentile: 21)
    assert sum("  " in t for t in texts) == corpus.DOUBLE_SPACED == 4
    assert not any("\n" in t or "\t" in t or t != t.strip() for t in texts)
    prose = {sentence for topic in corpus.docs_sentences() for sentence in topic}
    assert sum(t in prose for t in texts) >= 1000  # prose, not only generated captions
    assert corpus.digest() == corpus.digest() and len(corpus.digest()) == 16
    first[0] = "changed"  # callers get their own lists
    assert corpus.sentence_pairs()[0][0] != "changed"
