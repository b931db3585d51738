# SPDX-License-Identifier: Apache-2.0
"""Shared fixtures: the library, the real MiniLM GGUF files and reference outputs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.support import make_model
from tests.support.reference import STS_FILE, read_sts, reference_outputs
from tests.support.texts import varied_texts


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
def sts():
    """STS Benchmark test pairs from ../shared; required in CI, optional elsewhere."""
    if not STS_FILE.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{STS_FILE} is missing in CI")
        pytest.skip(f"{STS_FILE} not present (it lives beside the checkout)")
    return read_sts()


@pytest.fixture(scope="session")
def sts_reference(sts) -> dict[str, np.ndarray]:
    s1, s2, _ = sts
    return reference_outputs(s1 + s2, "sts", modes="")
