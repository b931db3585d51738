# SPDX-License-Identifier: Apache-2.0
"""llamabuild.manifest: the manifest.json of a real build describes exactly what it installed."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from llamabuild import cdef, manifest, paths
from tests.unit.llamabuild.helpers import ROOT


@pytest.mark.libllama
def test_manifest_written_by_a_previous_real_build_is_consistent() -> None:
    manifest_path = paths.default_prefix("cpu") / paths.MANIFEST_NAME
    assert manifest_path.is_file(), "no build in embellama/_lib/cpu"
    written = json.loads(manifest_path.read_text())
    assert written["format"] == manifest.MANIFEST_FORMAT and written["builder"] == manifest.BUILDER == "build_llama.py"
    prefix = manifest_path.parent
    for rel, digest in written["files"].items():
        assert hashlib.sha256((prefix / rel).read_bytes()).hexdigest() == digest, rel
    for rel, target in written["links"].items():
        assert os.readlink(prefix / rel) == target
    assert (prefix / written["libraries"]["llama"]).exists()
    text = (ROOT / "include" / "llama.cdef.h").read_bytes()
    if hashlib.sha256(text).hexdigest() == written["cdef_sha256"]:
        structs = cdef.parse_cdef_structs(text.decode())
        assert {k: list(v["fields"]) for k, v in written["layout"].items()} == structs
        assert list(written["enums"]) == cdef.parse_cdef_enums(text.decode())


def test_compiler_version_names_the_compiler_or_nothing() -> None:
    assert manifest.compiler_version(None) is None
    assert manifest.compiler_version("/nonexistent/cc") is None
