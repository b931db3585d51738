# SPDX-License-Identifier: Apache-2.0
"""``compute_type="auto"`` only ever picks an exact weight type (the README's "Exact" promise), on every CPU.

The choice is drawn over its whole input space: the CPU's maker, whether the library has a BF16 kernel, the
model's size (or no readable size), and GPU offload. Exact types are the file's own (None) and F32; BF16 and Q8_0
round the weights or activations (min cosine 0.99995 and 0.998 against sentence-transformers).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from embellama._gguf import convert


class _FakeLibrary:
    def __init__(self, bf16: bool) -> None:
        self._info = "CPU : SSE3 = 1 | AVX2 = 1 | " + ("AVX512_BF16 = 1 | " if bf16 else "")

    def system_info(self) -> str:
        return self._info


@given(
    vendor=st.sampled_from(["intel", "amd", ""]),
    bf16=st.booleans(),
    weights=st.one_of(st.none(), st.integers(1, 2**40)),
    offloaded=st.booleans(),
    has_source=st.booleans(),
)
def test_auto_picks_only_exact_types(
    vendor: str, bf16: bool, weights: int | None, offloaded: bool, has_source: bool
) -> None:
    library: Any = _FakeLibrary(bf16)
    source = "model.gguf" if has_source else None
    with pytest.MonkeyPatch.context() as patch:  # undone after each drawn case
        patch.setattr(convert, "cpu_vendor", lambda: vendor)
        patch.setattr(convert, "weight_count", lambda path: weights)
        chosen = convert.target_type("auto", library, offloaded=offloaded, source=source)
    assert chosen in (None, "f32")
    # F32 exactly where it is the fastest exact type: a small model of known size, on an Intel BF16 CPU, not offloaded
    small_intel = vendor == "intel" and bf16 and not offloaded and has_source and weights is not None
    assert (chosen == "f32") == (small_intel and weights <= convert.F32_MAX_WEIGHTS)
    # an explicit type is obeyed, lossy or not
    assert convert.target_type("bf16", library, offloaded=offloaded, source=source) == "bf16"
