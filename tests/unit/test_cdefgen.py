# SPDX-License-Identifier: Apache-2.0
"""The cdef generator: the pinned llama.h gives include/llama.cdef.h exactly; its rules on small headers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embellama._native import cdefgen as _cdefgen
from llamabuild import pins
from llamabuild.cdef import parse_cdef_enums
from llamabuild.update import pinned_label

ROOT = Path(__file__).resolve().parents[2]
PINNED_LABEL = pinned_label(pins.LLAMA_CPP_COMMIT)  # what --update-pin writes


def pinned_source() -> Path:
    """The pinned llama.cpp source the CPU build was made from (its manifest names it)."""
    manifest = json.loads((ROOT / "embellama" / "_lib" / "cpu" / "manifest.json").read_text())
    folder = Path(manifest["source"]["directory"])
    assert (folder / "include" / "llama.h").is_file(), f"the build's source is gone: {folder}"
    return folder


@pytest.mark.libllama  # the pinned llama.h of the build's source (named by its manifest)
def test_the_pinned_header_regenerates_the_shipped_declarations():
    result = _cdefgen.generate_from_source(pinned_source() / "include" / "llama.h", PINNED_LABEL)
    assert result.text == (ROOT / "include" / "llama.cdef.h").read_text(encoding="utf-8")
    # the older names of llama_memory_clear and of llama_set_adapters_lora's single-adapter forms
    older = ["llama_kv_self_clear", "llama_set_adapter_lora", "llama_clear_adapter_lora", "llama_rm_adapter_lora"]
    assert result.missing == older
    assert set(result.functions) == set(_cdefgen.FUNCTIONS) - set(older)
    assert list(result.structs) == [
        "llama_batch",
        "llama_model_params",
        "llama_context_params",
        "llama_model_quantize_params",
    ]
    assert result.enums["llama_pooling_type"] == {
        "LLAMA_POOLING_TYPE_UNSPECIFIED": -1,
        "LLAMA_POOLING_TYPE_NONE": 0,
        "LLAMA_POOLING_TYPE_MEAN": 1,
        "LLAMA_POOLING_TYPE_CLS": 2,
        "LLAMA_POOLING_TYPE_LAST": 3,
        "LLAMA_POOLING_TYPE_RANK": 4,
    }


def test_the_pinned_constants_come_from_the_header_and_are_checked_at_load(library):
    result = _cdefgen.generate_from_source(pinned_source() / "include" / "llama.h", PINNED_LABEL)
    assert result.constants == {"LLAMA_DEFAULT_SEED": 0xFFFFFFFF, "LLAMA_TOKEN_NULL": -1}
    assert (library.lib.LLAMA_TOKEN_NULL, library.lib.LLAMA_DEFAULT_SEED) == (-1, 0xFFFFFFFF)
    # the build's probe measured them in llama.h, so the loader compares them like enum values
    assert library.manifest["enums"]["LLAMA_TOKEN_NULL"] == -1
    assert parse_cdef_enums(result.text)[-2:] == ["LLAMA_DEFAULT_SEED", "LLAMA_TOKEN_NULL"]


def test_constants_are_written_as_defines_in_any_integer_form(tmp_path):
    header = """
        #define LLAMA_DEFAULT_SEED (0x10u << 4)
        #define LLAMA_TOKEN_NULL -(7)
        int f(void);
    """
    result = _generate(tmp_path, header)
    assert result.constants == {"LLAMA_DEFAULT_SEED": 256, "LLAMA_TOKEN_NULL": -7}
    assert "#define LLAMA_DEFAULT_SEED 256\n#define LLAMA_TOKEN_NULL -7\n" in result.text
    # a header without them (an older or a trimmed one) gets none, not invented values
    assert _generate(tmp_path, "int f(void);").constants == {}


def _generate(tmp_path: Path, text: str, functions=("f",), enums=()) -> _cdefgen.Declarations:
    header = tmp_path / "llama.h"
    header.write_text(text)
    return _cdefgen.generate(_cdefgen.preprocess(header), "test", functions, enums)


def test_by_value_structs_are_written_in_full_and_pointed_to_ones_stay_opaque(tmp_path):
    result = _generate(
        tmp_path,
        """
        #include <stdint.h>
        #include <stdbool.h>
        struct hidden { int secret; };
        enum mode { MODE_A = 1 << 2, MODE_B, MODE_C = MODE_A | 1, MODE_D = -(3) };
        typedef struct params { int32_t n; enum mode m; bool flag; struct hidden * h; } params;
        typedef int32_t token;
        struct unused { int x; };
        #ifdef __GNUC__
        #error the generator preprocesses without compiler extensions
        #endif
        extern params f(token t, const struct hidden * h);
        static inline int helper(void) { return 1; }
        """,
    )
    assert result.structs == {"params": ["n", "m", "flag", "h"]}
    assert result.enums == {"mode": {"MODE_A": 4, "MODE_B": 5, "MODE_C": 5, "MODE_D": -3}}
    text = result.text
    assert "struct hidden;" in text and "secret" not in text and "unused" not in text and "helper" not in text
    assert (
        "typedef struct params {\n    int32_t n;\n    enum mode m;\n    bool flag;\n    struct hidden *h;\n} params;"
        in text
    )
    assert "typedef int32_t token;" in text and "typedef int int32_t" not in text
    assert text.rstrip().endswith("params f(token t, const struct hidden *h);")  # no extern
    # the header's order: the enum before the struct that uses it
    assert text.index("enum mode {") < text.index("typedef struct params {") < text.index("params f(")


def test_missing_functions_are_reported_not_invented(tmp_path):
    result = _generate(tmp_path, "void f(void);\n", functions=("f", "g"))
    assert result.functions == ["f"] and result.missing == ["g"]


def test_an_unparsable_header_raises_generator_error(tmp_path):
    with pytest.raises(_cdefgen.GeneratorError, match="pycparser cannot parse"):
        _generate(tmp_path, "void f(void) oops;\n")
    with pytest.raises(_cdefgen.GeneratorError, match="preprocessing .* failed"):
        _generate(tmp_path, '#include "nowhere.h"\n')
    with pytest.raises(_cdefgen.GeneratorError, match="no such header"):
        _cdefgen.preprocess(tmp_path / "absent.h")
