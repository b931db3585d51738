# SPDX-License-Identifier: Apache-2.0
"""The 1 GB benchmark model's arithmetic (tests/support/big_model.py): its configuration is Qwen3-Embedding-0.6B's
size, about 1.2 GB in F16. Nothing is built here (the benchmark builds it)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import big_model


def _tensor_shapes(cfg: dict[str, int | bool]) -> dict[str, tuple[int, ...]]:
    """The tensors llama.cpp's converter writes for a Qwen3 of ``cfg``, by their GGUF names."""
    d, heads, kv, hd = (int(cfg[k]) for k in ("hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim"))
    ff, vocab = int(cfg["intermediate_size"]), int(cfg["vocab_size"])
    shapes: dict[str, tuple[int, ...]] = {"token_embd.weight": (vocab, d), "output_norm.weight": (d,)}
    if not cfg["tie_word_embeddings"]:
        shapes["output.weight"] = (vocab, d)
    for i in range(int(cfg["num_hidden_layers"])):
        shapes.update(
            {
                f"blk.{i}.attn_q.weight": (heads * hd, d),
                f"blk.{i}.attn_k.weight": (kv * hd, d),
                f"blk.{i}.attn_v.weight": (kv * hd, d),
                f"blk.{i}.attn_output.weight": (d, heads * hd),
                f"blk.{i}.attn_q_norm.weight": (hd,),
                f"blk.{i}.attn_k_norm.weight": (hd,),
                f"blk.{i}.attn_norm.weight": (d,),
                f"blk.{i}.ffn_norm.weight": (d,),
                f"blk.{i}.ffn_gate.weight": (ff, d),
                f"blk.{i}.ffn_up.weight": (ff, d),
                f"blk.{i}.ffn_down.weight": (d, ff),
            }
        )
    return shapes


def test_the_config_is_qwen3_embedding_06b() -> None:
    # 595,776,512: Qwen3-Embedding-0.6B's parameter count (its safetensors), and what transformers counted when
    # the benchmark built the model from this config.
    assert big_model.parameter_count() == 595_776_512
    assert big_model.parameter_count() == sum(math.prod(s) for s in _tensor_shapes(big_model.CONFIG).values())


def test_about_one_gigabyte_in_f16() -> None:
    size = big_model.f16_bytes()
    assert 1.15e9 < size < 1.25e9, size
    untied = dict(big_model.CONFIG, tie_word_embeddings=False)  # an untied output matrix would add 311 MB
    assert big_model.f16_bytes(untied) - size == 2 * 151_669 * 1024


@settings(max_examples=50, deadline=None)
@given(
    d=st.integers(1, 4096),
    layers=st.integers(1, 64),
    heads=st.integers(1, 64),
    kv=st.integers(1, 64),
    hd=st.integers(1, 256),
    ff=st.integers(1, 16384),
    vocab=st.integers(1, 300_000),
    tied=st.booleans(),
)
def test_parameter_count_is_the_sum_of_the_tensors(
    d: int, layers: int, heads: int, kv: int, hd: int, ff: int, vocab: int, tied: bool
) -> None:
    cfg = dict(
        big_model.CONFIG, hidden_size=d, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv, head_dim=hd, intermediate_size=ff, vocab_size=vocab, tie_word_embeddings=tied,
    )  # fmt: skip
    assert big_model.parameter_count(cfg) == sum(math.prod(s) for s in _tensor_shapes(cfg).values())
