# SPDX-License-Identifier: Apache-2.0
"""llamabuild.probe: the one C layout probe, which the build and embellama's cdefgen both run."""

from __future__ import annotations

import ast
import json
import shutil
import sys
from pathlib import Path

import pytest

from embellama._native import cdefgen
from llamabuild import cdef, probe, report
from tests.unit.llamabuild.helpers import CC, PAIR_LAYOUT, ROOT, SYNTHETIC, fake_tree, needs_cc


def pinned_source() -> Path:
    """The llama.cpp source the CPU build was made from (its manifest names it)."""
    manifest = json.loads((ROOT / "embellama" / "_lib" / "cpu" / "manifest.json").read_text())
    folder = Path(manifest["source"]["directory"])
    assert (folder / "include" / "llama.h").is_file(), f"the build's source is gone: {folder}"
    return folder


def test_the_probe_program_lists_every_field_and_constant() -> None:
    src = probe.probe_program({"pair": ["a", "b"], "holder": ["p"]}, ["MODE_A", "LLAMA_TOKEN_NULL"])
    assert '#include "llama.h"' in src
    assert "sizeof(struct pair)" in src and "_Alignof(struct holder)" in src
    assert "offsetof(struct pair, a)" in src and "offsetof(struct pair, b)" in src
    assert "offsetof(struct holder, p)" in src
    assert "(long long)(MODE_A)" in src and "(long long)(LLAMA_TOKEN_NULL)" in src
    # one access per line, so that a compiler error names the field or the constant
    assert sum("offsetof(" in line for line in src.splitlines()) == 3


def _python_files() -> list[Path]:
    """The Python sources of the package and the build (not the tests)."""
    files = [ROOT / "build_llama.py", ROOT / "noxfile.py"]
    for folder in ("embellama", "build_backend"):
        files += [p for p in (ROOT / folder).rglob("*.py") if "_lib" not in p.parts]
    return files


def test_the_probe_is_defined_once() -> None:
    """One program that prints offsetof/sizeof as JSON, in llamabuild.probe; cdefgen imports it."""
    writers = []
    for file in _python_files():
        tree = ast.parse(file.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "offsetof(struct" in node.value:
                writers.append(file.relative_to(ROOT).as_posix())
    assert sorted(set(writers)) == ["build_backend/llamabuild/probe.py"]
    assert cdefgen.probe_program is probe.probe_program
    cdefgen_tree = ast.parse((ROOT / "embellama" / "_native" / "cdefgen.py").read_text(encoding="utf-8"))
    defined = {n.name for n in ast.walk(cdefgen_tree) if isinstance(n, ast.FunctionDef)}
    assert "probe_program" not in defined  # imported, not written again


@needs_cc
def test_cdefgen_measures_with_the_build_probe(tmp_path: Path) -> None:
    """embellama's cdefgen (a header brought at run time) gets the same numbers as the build's probe."""
    src = fake_tree(
        tmp_path, "#include <stdint.h>\nstruct pair { int32_t a; const char * b; };\nenum { MODE_A = 4 };\n"
    )
    measured = cdefgen.measure(src / "include" / "llama.h", {"pair": ["a", "b"]}, ["MODE_A"], [str(CC)])
    layout, enums = probe.run_probe(
        src, tmp_path / "w", {"pair": ["a", "b"]}, ["MODE_A"], [str(CC)], "x", tmp_path / "l"
    )
    assert measured == {"layout": layout, "enums": enums} and enums == {"MODE_A": 4}
    # its failures stay cdefgen's own error, which the loader turns into a LibraryError
    with pytest.raises(cdefgen.GeneratorError, match="declares fields"):
        cdefgen.measure(src / "include" / "llama.h", {"pair": ["a", "gone"]}, [], [str(CC)])


@needs_cc
def test_probe_compiles_and_measures(tmp_path: Path) -> None:
    structs = cdef.parse_cdef_structs(SYNTHETIC)
    src, work, log = fake_tree(tmp_path), tmp_path / "w", tmp_path / "probe.log"
    layout, enums = probe.run_probe(src, work, structs, [], [str(CC)], "test", log)
    assert enums == {}
    ptr = 8 if sys.maxsize > 2**32 else 4
    assert layout["pair"] == {"size": 2 * ptr, "align": ptr, "fields": {"a": 0, "b": ptr}}
    holder = layout["holder"]["fields"]
    assert list(holder) == ["p", "callback", "name", "big", "ptrs"]
    assert holder["callback"] == 2 * ptr and holder["name"] == 3 * ptr


@needs_cc
def test_probe_reports_fields_missing_from_the_header(tmp_path: Path) -> None:
    text = "struct pair {\n    int32_t a;\n    int32_t renamed;\n};\n"
    with pytest.raises(report.BuildError) as exc:
        probe.run_probe(
            fake_tree(tmp_path),
            tmp_path / "w",
            cdef.parse_cdef_structs(text),
            [],
            [str(CC)],
            "abc123",
            tmp_path / "probe.log",
        )
    text = str(exc.value)
    assert "include/llama.cdef.h declares fields that llama.h at abc123 does not have" in text
    assert "renamed" in text


@needs_cc
def test_probe_reports_fields_in_the_wrong_order(tmp_path: Path) -> None:
    text = "struct pair {\n    const char * b;\n    int32_t a;\n};\n"
    with pytest.raises(report.BuildError, match="another order"):
        probe.run_probe(
            fake_tree(tmp_path),
            tmp_path / "w",
            cdef.parse_cdef_structs(text),
            [],
            [str(CC)],
            "x",
            tmp_path / "probe.log",
        )


@needs_cc
@pytest.mark.libllama
def test_probe_against_the_pinned_llama_h(tmp_path: Path) -> None:
    structs = cdef.parse_cdef_structs((ROOT / "include" / "llama.cdef.h").read_text())
    layout, _ = probe.run_probe(pinned_source(), tmp_path, structs, [], [str(CC)], "pinned", tmp_path / "probe.log")
    assert set(layout) == set(structs)
    ctx = layout["llama_context_params"]
    assert ctx["fields"]["n_ctx"] == 0
    assert list(ctx["fields"]) == structs["llama_context_params"]
    if sys.maxsize > 2**32:
        assert layout["llama_batch"]["size"] == 56


def test_compare_probe_layout() -> None:
    # the probe's check has its own name: embellama's check_layout (the loader's) is another check
    assert not hasattr(probe, "check_layout")
    structs = {"pair": ["a", "b"]}
    assert probe.compare_probe_layout(structs, PAIR_LAYOUT) == PAIR_LAYOUT
    swapped = {"pair": {"size": 16, "align": 8, "fields": {"a": 8, "b": 0}}}
    with pytest.raises(report.BuildError, match="another order than llama.h"):
        probe.compare_probe_layout(structs, swapped)
    with pytest.raises(report.BuildError, match="lacks struct pair"):
        probe.compare_probe_layout(structs, {})


def test_probe_compiler_is_the_one_cmake_uses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build = tmp_path / "b"
    build.mkdir()
    monkeypatch.setattr(shutil, "which", lambda name, **kw: f"/usr/bin/{name}" if name == "gcc" else None)
    assert probe.probe_compiler([], build, {}) == ["/usr/bin/gcc"]
    assert probe.probe_compiler([], build, {"CC": "ccache clang -m64"}) == ["ccache", "clang", "-m64"]
    (build / "CMakeCache.txt").write_text("CMAKE_C_COMPILER:FILEPATH=/opt/cc/bin/cc\n")
    assert probe.probe_compiler([], build, {"CC": "clang"}) == ["/opt/cc/bin/cc"]
    options = ["-DCMAKE_C_COMPILER=clang-17", "-DX=1", "-DCMAKE_C_COMPILER:FILEPATH=/usr/bin/icx"]
    assert probe.probe_compiler(options, build, {}) == ["/usr/bin/icx"]
    (build / "CMakeCache.txt").unlink()
    monkeypatch.setattr(shutil, "which", lambda name, **kw: None)
    with pytest.raises(report.BuildError, match="no C compiler"):
        probe.probe_compiler([], build, {})


@needs_cc
@pytest.mark.libllama
def test_the_probe_records_the_enum_values_of_llama_h(tmp_path: Path) -> None:
    text = (ROOT / "include" / "llama.cdef.h").read_text()
    names = cdef.parse_cdef_enums(text)
    assert names[:2] == ["GGML_TYPE_F32", "GGML_TYPE_F16"] and "LLAMA_POOLING_TYPE_RANK" in names
    structs = cdef.parse_cdef_structs(text)
    _, values = probe.run_probe(pinned_source(), tmp_path, structs, names, [str(CC)], "pinned", tmp_path / "log")
    assert list(values) == names
    assert (values["LLAMA_POOLING_TYPE_RANK"], values["GGML_TYPE_BF16"], values["LLAMA_FTYPE_GUESSED"]) == (4, 30, 1024)
    assert values["LLAMA_FLASH_ATTN_TYPE_AUTO"] == -1


@needs_cc
def test_a_constant_llama_h_lacks_is_named(tmp_path: Path) -> None:
    with pytest.raises(probe.ProbeError) as exc:
        probe.run_probe(fake_tree(tmp_path), tmp_path / "w", {}, ["LLAMA_GONE"], [str(CC)], "abc123", tmp_path / "l")
    assert "include/llama.cdef.h declares constants that llama.h at abc123 does not have" in str(exc.value)
    assert "LLAMA_GONE" in str(exc.value)
