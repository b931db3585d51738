# SPDX-License-Identifier: Apache-2.0
"""Shared fixtures: the library, the real MiniLM GGUF files and reference outputs; the skip policy.

The sentence pairs of the exactness tests (``sts``) are the STS Benchmark's where its file is there, and the
stand-in pairs of :mod:`tests.support.corpus` where it is not: nothing beside the checkout is needed. Only
tests marked ``sts_gold`` read the gold scores (``sts_gold``); they skip without the file. The switches
(``EMBELLAMA_HIDE_SHARED``, ``EMBELLAMA_STS_FILE``, ``EMBELLAMA_REQUIRE_STS``, ``EMBELLAMA_STRICT_SKIPS``)
are described in :mod:`tests.support.sts`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.support import make_model
from tests.support import sts as sts_data
from tests.support.reference import reference_outputs
from tests.support.skips import SkipPolicy
from tests.support.texts import varied_texts


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(SkipPolicy(config), "embellama-skip-policy")


@pytest.fixture(scope="session")
def library():
    """The process-wide libllama (built by build_llama.py or named by $EMBELLAMA_LIB)."""
    import embellama

    try:
        lib = embellama.load_library()
    except embellama.LibraryError as exc:
        pytest.fail(f"libllama is required for this test: {exc}")
    wanted = os.environ.get("EMBELLAMA_BACKEND")
    if wanted and lib.backend != wanted:
        pytest.fail(f"asked for the {wanted} backend but loaded a {lib.backend} build from {lib.path}")
    if wanted in ("cuda", "metal", "vulkan") and not any(d["type"] in ("GPU", "IGPU") for d in lib.devices()):
        pytest.fail(f"the {wanted} build sees no GPU device: {lib.devices()}")
    return lib


@pytest.fixture(scope="session")
def minilm_paths(library) -> dict[str, Path]:
    """{"f16": path, "q8_0": path} of all-MiniLM-L6-v2 in GGUF (made once, cached)."""
    return make_model.ensure_models()


@pytest.fixture(scope="session")
def minilm_f16(minilm_paths) -> Path:
    return minilm_paths["f16"]


@pytest.fixture(scope="session")
def minilm_q8(minilm_paths) -> Path:
    return minilm_paths["q8_0"]


@pytest.fixture(scope="session")
def varied() -> list[str]:
    return varied_texts()


@pytest.fixture(scope="session")
def varied_reference(varied) -> dict[str, np.ndarray]:
    return reference_outputs(varied, "varied")


@pytest.fixture(scope="session")
def sts() -> sts_data.SentencePairs:
    """The 1,379 sentence pairs the exactness tests compare: the STS Benchmark's where its file is there (and
    not hidden), else the stand-in pairs of the same size made from what every checkout has (no gold scores)."""
    return sts_data.comparison_pairs()


@pytest.fixture(scope="session")
def sts_reference(sts) -> dict[str, np.ndarray]:
    s1, s2, _ = sts
    return reference_outputs(s1 + s2, "sts", modes="")


@pytest.fixture(scope="session")
def sts_gold() -> sts_data.SentencePairs:
    """The STS Benchmark test pairs with their gold scores, for tests marked ``sts_gold`` only (they skip
    before this runs where there is no file)."""
    path = sts_data.sts_file()
    if path is None:
        pytest.fail(sts_data.missing_reason())
    return sts_data.read_sts(path)


@pytest.fixture(scope="session")
def sts_gold_reference(sts_gold) -> dict[str, np.ndarray]:
    s1, s2, _ = sts_gold
    return reference_outputs(s1 + s2, "sts", modes="")
