# SPDX-License-Identifier: Apache-2.0
"""Bring your own libllama: declarations from its llama.h, checked by a probe; the compatibility seam."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from embellama import LibraryError
from embellama._native import abi, declarations
from embellama._native import compat as _compat

ROOT = Path(__file__).resolve().parents[2]

# A libllama is opened in a child process: one process holds one libllama.
_OPEN = """
import json, os, sys
from embellama import LibraryError
from embellama._native import discovery
folder, header = sys.argv[1], sys.argv[2] or None
try:
    lib = discovery.open_library(folder, header=header)
    print(json.dumps({"declarations": lib.declarations, "load_mode": lib.caps.load_mode,
                      "functions": len(lib.caps.functions), "warnings": lib.warnings}))
except LibraryError as exc:
    print(json.dumps({"error": str(exc)}))
"""


def _open(folder: Path, header: Path | str = "", env: dict[str, str] | None = None) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _OPEN, str(folder), str(header)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def pinned_headers(library, tmp_path_factory) -> Path:
    """A copy of the pinned llama.cpp's include folders, laid out as CMake installs them."""
    source = Path(library.manifest["source"]["directory"])
    prefix = tmp_path_factory.mktemp("install")
    (prefix / "include").mkdir()
    for folder in (source / "include", source / "ggml" / "include"):
        for header in folder.glob("*.h"):
            shutil.copy(header, prefix / "include" / header.name)
    return prefix


@pytest.fixture()
def isolated_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("EMBELLAMA_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_library_loads_with_the_header_it_was_built_from(library, pinned_headers, isolated_cache):
    header = pinned_headers / "include" / "llama.h"
    opened = _open(library.path.parent, header)
    assert opened["declarations"] == f"the declarations generated from {header}"
    assert opened["load_mode"] is library.caps.load_mode and opened["functions"] >= 70
    # generated and measured once, then cached by the headers' sha256
    (cached,) = (isolated_cache / "headers").glob("*.json")
    data = json.loads(cached.read_text())
    assert data["layout"]["llama_context_params"]["size"] == library.ffi.sizeof("struct llama_context_params")
    assert data["enums"]["LLAMA_POOLING_TYPE_MEAN"] == 1
    # $EMBELLAMA_LLAMA_H does the same; so does the include folder itself
    env = {**os.environ, "EMBELLAMA_LLAMA_H": str(pinned_headers / "include")}
    assert _open(library.path.parent, env=env)["declarations"] == f"the declarations generated from {header}"


def test_the_include_folder_cmake_installs_beside_lib_is_found(library, pinned_headers, isolated_cache):
    lib_dir = pinned_headers / "lib"
    shutil.copytree(library.path.parent, lib_dir, symlinks=True, ignore=shutil.ignore_patterns("manifest.json", "bin"))
    opened = _open(lib_dir)
    assert opened["declarations"] == f"the declarations generated from {pinned_headers / 'include' / 'llama.h'}"
    assert not any("no build manifest" in w for w in opened["warnings"])  # the probe measured the layout


def test_a_header_that_does_not_match_the_library_raises_naming_the_difference(
    library, pinned_headers, tmp_path, isolated_cache
):
    other = tmp_path / "other"
    shutil.copytree(pinned_headers / "include", other)
    text = (other / "llama.h").read_text()
    field = "        uint32_t n_rs_seq;"
    assert field in text
    (other / "llama.h").write_text(text.replace(field, "", 1))  # a field the library has, gone
    opened = _open(library.path.parent, other / "llama.h")
    assert (
        "ABI mismatch" in opened["error"] and f"the declarations generated from {other / 'llama.h'}" in opened["error"]
    )
    assert "llama_context_params." in opened["error"] and "expected default" in opened["error"]  # fields moved


def test_enum_values_are_checked_against_the_measured_ones(library):
    abi.check_enums(library.lib, {"LLAMA_POOLING_TYPE_CLS": 2, "LLAMA_NOT_DECLARED_HERE": 5}, library.path)
    with pytest.raises(LibraryError) as info:
        abi.check_enums(library.lib, {"LLAMA_POOLING_TYPE_CLS": 7}, library.path, "the test's declarations")
    assert "enum values differ between the test's declarations and" in str(info.value)
    assert "LLAMA_POOLING_TYPE_CLS is 2 here but 7 in llama.h" in str(info.value)
    with pytest.raises(LibraryError, match="LLAMA_TOKEN_NULL is -1 here but -2 in llama.h"):
        abi.check_enums(library.lib, {"LLAMA_TOKEN_NULL": -2}, library.path)  # a #define constant too


def test_a_missing_header_is_a_library_error(library, tmp_path):
    assert "no llama.h at" in _open(library.path.parent, tmp_path / "nowhere" / "llama.h")["error"]


# -- the compatibility seam -----------------------------------------------------------------------

OLD_MODEL_FIELDS = "    bool use_mmap;\n    bool use_direct_io;\n    bool use_mlock;\n"


def _older_ffi():
    """The pinned declarations with llama_model_params as llama-cpp-python 0.3.30 has it (whatever is loaded)."""
    text = declarations.read_cdef()
    for line in (
        "    enum llama_load_mode load_mode;\n",
        "    enum llama_lazy_mode lazy_mode;\n",
        "    bool load_mtp;\n",
    ):
        assert line in text
        text = text.replace(line, "")
    text = text.replace("    bool check_tensors;\n", OLD_MODEL_FIELDS + "    bool check_tensors;\n", 1)
    return declarations.make_ffi(text)


def test_capabilities_follow_the_declarations(library):
    caps = library.caps
    fields = {name for name, _ in library.ffi.typeof("struct llama_model_params").fields}
    assert caps.load_mode is ("load_mode" in fields)
    params = library.ffi.new("struct llama_model_params *", library.lib.llama_model_default_params())
    caps.disable_mmap(params[0], library.lib)
    if caps.load_mode:
        assert params.load_mode == library.lib.LLAMA_LOAD_MODE_NONE
    else:
        assert params.use_mmap is False

    older_ffi = _older_ffi()
    functions = caps.functions - {"llama_version", "llama_model_ftype"}
    older = _compat.decide(older_ffi, functions, functions, "old-libllama.so")
    assert not older.load_mode and not older.has("llama_model_ftype")
    old_params = older_ffi.new("struct llama_model_params *", {"use_mmap": True})
    older.disable_mmap(old_params[0], None)
    assert old_params.use_mmap is False
    assert older.version(None, older_ffi, "e3a74b299") == "e3a74b299"
    assert older.version(None, older_ffi, None) == "unknown"
    cparams = older_ffi.new("struct llama_context_params *")
    older.set_flash_attn(cparams[0], True)
    assert cparams.flash_attn_type == 1


def test_older_flash_attention_and_memory_api(library):
    text = declarations.read_cdef().replace(
        "    enum llama_flash_attn_type flash_attn_type;\n", "    bool flash_attn;\n"
    )
    ffi = declarations.make_ffi(text)
    functions = (library.caps.functions - {"llama_memory_clear", "llama_get_memory"}) | {"llama_kv_self_clear"}
    caps = _compat.decide(ffi, functions, functions, "old.so")
    cparams = ffi.new("struct llama_context_params *")
    caps.set_flash_attn(cparams[0], True)
    assert cparams.flash_attn is True
    cleared = []

    class Lib:
        def llama_kv_self_clear(self, ctx):
            cleared.append(ctx)

    assert caps.memory_of(Lib(), "ctx") is None
    caps.clear_memory(Lib(), "ctx", None, ffi.NULL)
    assert cleared == ["ctx"]


def test_a_missing_needed_function_names_the_supported_range(library):
    functions = library.caps.functions - {"llama_tokenize"}
    with pytest.raises(LibraryError) as info:
        _compat.decide(library.ffi, functions, library.caps.functions, "old-libllama.so")
    message = str(info.value)
    assert "old-libllama.so lacks llama_tokenize" in message and _compat.SUPPORTED in message
    assert "0.3.27" in _compat.SUPPORTED
    no_memory = library.caps.functions - {"llama_memory_clear"}
    with pytest.raises(LibraryError, match="clear a context's memory"):
        _compat.decide(library.ffi, no_memory, no_memory, "x.so")
