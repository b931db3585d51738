# SPDX-License-Identifier: Apache-2.0
"""llamabuild.cdef: reading the declarations' structs and constants, and generating them for another llama.h."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from llamabuild import build, cdef, cli, paths
from llamabuild import source as sources
from llamabuild.plan import make_plan
from tests.unit.llamabuild.helpers import ROOT, SYNTHETIC, fake_tree, needs_cc


def test_parse_real_cdef() -> None:
    structs = cdef.parse_cdef_structs((ROOT / "include" / "llama.cdef.h").read_text())
    assert {
        "llama_batch",
        "llama_model_params",
        "llama_context_params",
        "llama_model_quantize_params",
    } <= set(structs)
    ctx = structs["llama_context_params"]
    assert ctx[0] == "n_ctx"
    assert ctx[-1] == "ctx_other"
    assert len(ctx) == 37
    assert structs["llama_batch"] == [
        "n_tokens",
        "token",
        "embd",
        "pos",
        "n_seq_id",
        "seq_id",
        "logits",
    ]
    assert "cb_eval" in ctx and "abort_callback" in ctx


def test_parse_synthetic_cdef() -> None:
    assert cdef.parse_cdef_structs(SYNTHETIC) == {
        "pair": ["a", "b"],
        "holder": ["p", "callback", "name", "big", "ptrs"],
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("    int a, b;\n", "one field per line"),
        ("    int a; int b;\n", "one 'type name;' per line"),
        ("    unsigned flag : 1;\n", "bit-fields"),
        ("    int a;\n    int a;\n", "twice"),
        ("    a;\n", "cannot read a field"),
    ],
)
def test_parse_rejects_what_it_cannot_probe(body: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cdef.parse_cdef_structs("struct s {\n" + body + "};\n")


@needs_cc
def test_declarations_are_generated_for_another_llama_h(tmp_path: Path) -> None:
    header = "#include <stdint.h>\nstruct llama_batch { int32_t n_tokens; float * embd; };\n"
    header += "struct llama_batch llama_batch_init(int32_t n_tokens, int32_t embd, int32_t n_seq_max);\n"
    src = fake_tree(tmp_path, header)
    plan = make_plan(cli.parse_args(["--source", str(src), "--cache-dir", str(tmp_path)]))
    source = sources.path_source(src)
    decls = build.declarations_step(plan, source, paths.CDEF_PATH)
    assert decls.generated and decls.structs == {"llama_batch": ["n_tokens", "embd"]}
    assert "struct llama_batch llama_batch_init(int32_t n_tokens, int32_t embd, int32_t n_seq_max);" in decls.text
    # --cdef FILE is used as it is
    copy = tmp_path / "pinned.cdef.h"
    copy.write_text((ROOT / "include" / "llama.cdef.h").read_text())
    pinned = build.declarations_step(plan, source, copy)
    assert not pinned.generated and "llama_context_params" in pinned.structs


def test_the_pinned_build_needs_only_the_standard_library(tmp_path: Path) -> None:
    # python -S: no site-packages, so no pycparser (nor numpy or cffi); the pinned declarations need none
    code = (
        "import sys\n"
        "sys.path.insert(0, 'build_backend')\n"
        "from llamabuild import cdef, cli, paths, report\n"
        "from pathlib import Path\n"
        "text, structs = cdef.read_cdef(paths.CDEF_PATH)\n"
        "assert 'llama_context_params' in structs\n"
        "assert not {'pycparser', 'numpy', 'cffi', 'embellama'} & set(sys.modules), sorted(sys.modules)\n"
        "try:\n"
        f"    cdef.generate_cdef(Path({str(tmp_path / 'llama.h')!r}), 'x')\n"
        "except report.BuildError as exc:\n"
        "    print(exc)\n"
    )
    (tmp_path / "llama.h").write_text("int f(void);\n")
    run = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "are generated with pycparser" in run.stdout and "pip install pycparser" in run.stdout


def test_parse_enums_lists_enum_constants_then_defines() -> None:
    text = "enum e { A, B = 4, };\n/* enum f { X }; */\n#define LLAMA_TOKEN_NULL -1\nenum g { C };\n"
    assert cdef.parse_cdef_enums(text) == ["A", "B", "C", "LLAMA_TOKEN_NULL"]
