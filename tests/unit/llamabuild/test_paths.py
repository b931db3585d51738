# SPDX-License-Identifier: Apache-2.0
"""llamabuild.paths: the cache, build and install folders, and where llamabuild finds embellama."""

from __future__ import annotations

from pathlib import Path

from llamabuild import paths, pins


def test_build_dir_names() -> None:
    assert paths.build_dir_name("cpu") == pins.LLAMA_CPP_COMMIT[:12] + "-cpu"
    assert paths.build_dir_name("cuda", True, True).endswith("-cuda-portable-tools")
    # a server build (tools included) has a folder of its own
    assert paths.build_dir_name("cpu", False, True, with_server=True) == pins.LLAMA_CPP_COMMIT[:12] + "-cpu-server"
    assert paths.build_dir_name("cpu", True, with_server=True).endswith("-cpu-portable-server")
    assert paths.build_dir_name("cpu", source_path=Path("/x")).startswith("path-")


def test_default_cache_dir_precedence(tmp_path: Path) -> None:
    home = Path.home()
    assert paths.default_cache_dir({"EMBELLAMA_CACHE_DIR": str(tmp_path)}) == tmp_path
    assert paths.default_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "embellama"
    assert paths.default_cache_dir({"XDG_CACHE_HOME": "relative"}) == home / ".cache/embellama"
    assert paths.default_cache_dir({}) == home / ".cache" / "embellama"


def test_in_a_checkout_llamabuild_serves_the_embellama_beside_it() -> None:
    """build_backend/llamabuild/ in a source tree: embellama/ and include/ are in the folder above."""
    root = Path(__file__).resolve().parents[3]
    assert paths.SOURCE_TREE and root == paths.ROOT
    assert root / "embellama" == paths.PACKAGE_DIR and root / "include" / "llama.cdef.h" == paths.CDEF_PATH
    assert paths.default_prefix("cpu") == root / "embellama" / "_lib" / "cpu"
    assert paths.default_prefix("cpu", "k", Path("/c")) == Path("/c/lib/k-cpu")  # another llama.cpp: never there
    assert paths.display_path(paths.CDEF_PATH) == "include/llama.cdef.h"
    assert paths.display_path(Path("/elsewhere/x.h")) == "/elsewhere/x.h"
