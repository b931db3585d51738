# SPDX-License-Identifier: Apache-2.0
"""The 1 GB test model: a random-weight Qwen3 of Qwen3-Embedding-0.6B's shape in F16 GGUF, cached.

The seed's targets (start-up under 5 s for a 1 GB model, memory under 2x its size) bite only on a model that
size; MiniLM is 45 MB. This builds one from :data:`CONFIG` (hidden 1024, 28 layers, 16 heads, 8 KV heads,
intermediate 3072, vocabulary 151,669: Qwen3-Embedding-0.6B's published shape, 595,776,512 parameters, 1.19 GB
in F16) with transformers' own initialisation, Qwen2's byte-level BPE tokenizer rebuilt from llama.cpp's
vocabulary file (:func:`tests.support.arch_models.tokenizer_qwen3_embedding`), last-token pooling, and
llama.cpp's ``convert_hf_to_gguf.py`` writing the F16 GGUF. Only ``benchmarks/bench_seed.py`` builds it (the
test suite does not: it takes a minute or more and 3.3 GB of memory on the way).

    python -m tests.support.big_model   # from the repository root: build (or find) and print the GGUF's path

It lands in ``<model cache>/big/qwen3-0.6b-random-<key>/``; the key hashes :data:`CONFIG`, :data:`SEED` and
the llama.cpp source's name. Building needs torch, transformers and tokenizers.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.support import make_model

SEED = 20261207
NAME = "qwen3-0.6b-random"
CONFIG: dict[str, Any] = {
    "hidden_size": 1024,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "intermediate_size": 3072,
    "vocab_size": 151669,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": True,
    "bos_token_id": 151643,
    "eos_token_id": 151643,
}
"""Qwen3-Embedding-0.6B's ``config.json`` (the fields that set its size and its graph)."""


def parameter_count(cfg: dict[str, Any] = CONFIG) -> int:
    """The parameters of a Qwen3 model of ``cfg``: embeddings (tied to the output), per layer Q/K/V/O, the
    Q and K RMS norms, the gated MLP and two RMS norms, and the final norm."""
    d, heads, kv, hd = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    attention = d * heads * hd + 2 * d * kv * hd + heads * hd * d + 2 * hd
    mlp = 3 * d * cfg["intermediate_size"]
    layer = attention + mlp + 2 * d
    output = 0 if cfg["tie_word_embeddings"] else cfg["vocab_size"] * d
    return int(cfg["vocab_size"] * d + cfg["num_hidden_layers"] * layer + d + output)


def f16_bytes(cfg: dict[str, Any] = CONFIG) -> int:
    """The weights' size in F16 (two bytes a parameter; the GGUF adds its header and vocabulary)."""
    return 2 * parameter_count(cfg)


def recipe_key() -> str:
    """12 hex digits over the config, the seed and the llama.cpp source's name (not this file: a comment edit
    must not rebuild 1.2 GB)."""
    h = hashlib.sha256(json.dumps([CONFIG, SEED, NAME], sort_keys=True).encode())
    h.update(make_model.llama_source().name.encode())
    return h.hexdigest()[:12]


def folder() -> Path:
    return make_model.cache_dir() / "big" / f"{NAME}-{recipe_key()}"


def gguf_path() -> Path:
    """Where the F16 GGUF is (or will be)."""
    return folder() / f"{NAME}.F16.gguf"


def ensure(timeout_s: float = 3600.0) -> Path:
    """The F16 GGUF, built first in a child process (``python -m tests.support.big_model``) if missing."""
    path = gguf_path()
    if path.is_file():
        return path
    parent = path.parent.parent
    parent.mkdir(parents=True, exist_ok=True)
    with open(parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.is_file():
            env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
            cmd = [sys.executable, "-m", "tests.support.big_model"]
            proc = subprocess.run(
                cmd, capture_output=True, text=True, cwd=make_model.REPO, env=env, timeout=timeout_s, check=False
            )
            if proc.returncode != 0:
                raise RuntimeError(f"building {NAME} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return path


# -- building (child process) ---------------------------------------------------------------------------------


def _write_st_modules(out: Path) -> None:
    """modules.json, 1_Pooling (last token, as Qwen3-Embedding) and Normalize: the converter reads the pooling."""
    pool = {
        "word_embedding_dimension": CONFIG["hidden_size"],
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": False,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": True,
        "include_prompt": True,
    }
    (out / "1_Pooling").mkdir()
    (out / "1_Pooling" / "config.json").write_text(json.dumps(pool, indent=2))
    (out / "2_Normalize").mkdir()
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (out / "modules.json").write_text(json.dumps(modules, indent=2))
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 8192, "do_lower_case": False}))


def build() -> Path:
    """Weights (transformers' initialisation, seeded, saved in F16), tokenizer, modules, the F16 GGUF, info."""
    import torch
    import transformers as tf

    from tests.support import arch_models

    target = folder()
    tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    hf_dir = tmp / "hf"
    hf_dir.mkdir(parents=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    arch_models.tokenizer_qwen3_embedding(hf_dir)
    config = tf.Qwen3Config(**CONFIG)
    config.architectures = ["Qwen3ForCausalLM"]
    torch.manual_seed(SEED)
    model = tf.Qwen3ForCausalLM(config).eval().half()  # type: ignore[no-untyped-call]
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(hf_dir)
    del model
    _write_st_modules(hf_dir)
    timings["make"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = tmp / gguf_path().name
    proc = arch_models.convert(arch_models.ARCHS["qwen3"], hf_dir, out, "f16")
    if proc.returncode != 0:
        raise RuntimeError(f"convert_hf_to_gguf.py failed for {NAME}:\n{proc.stderr[-4000:]}")
    timings["convert"] = time.perf_counter() - t0
    for heavy in hf_dir.glob("*.safetensors"):  # the GGUF is what the benchmark reads
        heavy.unlink()
    info = {
        "name": NAME,
        "config": CONFIG,
        "parameters": params,
        "parameters_computed": parameter_count(),
        "gguf_bytes": out.stat().st_size,
        "timings": timings,
    }
    (tmp / "info.json").write_text(json.dumps(info, indent=2))
    shutil.rmtree(target, ignore_errors=True)
    tmp.replace(target)
    return gguf_path()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    path = gguf_path() if gguf_path().is_file() else build()
    print(path)
    print(f"{NAME}\t{path.stat().st_size / 1e9:.2f} GB\t{time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
