# SPDX-License-Identifier: Apache-2.0
"""The LoRA tests' models: a tiny random BERT, random PEFT LoRA adapters of it, converted by llama.cpp, cached.

- ``base.F32.gguf``: a ``BertModel`` (hidden 64, 2 layers) with all-MiniLM-L6-v2's WordPiece, by the pinned
  ``convert_hf_to_gguf.py``;
- three random PEFT LoRAs of it (rank 4, alpha 8, on the attention's query/key/value and every ``dense`` layer,
  ``init_lora_weights=False`` so that B is random too), each converted by the pinned ``convert_lora_to_gguf.py``:
  ``plain.gguf`` as the converter writes it (no task), and ``query.gguf`` and ``passage.gguf`` with the task
  metadata llama.cpp's converter writes for jina-embeddings-v3's adapters (``adapter.lora.task_name``,
  ``adapter.lora.prompt_prefix``; ``convert_lora_to_gguf.py`` has no option for them, so gguf-py adds them);
- ``other.gguf``: a LoRA of another BERT (hidden 32): the wrong base model;
- ``reference.npz``: transformers' mean-pooled, L2-normalized vectors of :func:`texts` on the base model and on
  each adapter merged into it (``merge_and_unload``), the task adapters' prompts prepended to the texts (and the
  query adapter's without its prompt), and on the task-less and the query adapter merged together.

    python -m tests.support.lora_models   # from the repository root: build (or find) and print the folder
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.support import arch_models, corpus, make_model

RANK, ALPHA = 4, 8
TASKS = {"query": ("retrieval.query", "Represent the query for retrieval: "),
         "passage": ("retrieval.passage", "Represent the document for retrieval: ")}  # fmt: skip
TARGETS = ["query", "key", "value", "dense"]


def texts() -> list[str]:
    """The texts the references are computed for: corpus sentences and a few odd ones."""
    s1, s2 = corpus.sentence_pairs()
    return [*s1[:20], *s2[:17], "A", "Ünïcödé and émojis 🙂 too.", "  spaced   out  "]


def recipe_key() -> str:
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(arch_models.recipe_key().encode())
    return h.hexdigest()[:12]


def folder() -> Path:
    return make_model.cache_dir() / "lora" / f"tiny-bert-{recipe_key()}"


def ensure() -> Path:
    """The built folder, building it in a child process first (under a lock)."""
    arch_models.build_missing("tests.support.lora_models", {"tiny-bert": folder() / "reference.npz"})
    return folder()


def reference() -> dict[str, np.ndarray]:
    with np.load(ensure() / "reference.npz") as data:
        return {key: data[key] for key in data.files}


# -- building (child process) ---------------------------------------------------------------------------------


def _bert(hf_dir: Path, hidden: int, seed: int) -> None:
    import torch
    import transformers as tf

    vocab_size = arch_models.TOKENIZERS["wordpiece"](hf_dir)
    config = tf.BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=2 * hidden, max_position_embeddings=512, type_vocab_size=2)  # fmt: skip
    config.architectures = ["BertModel"]
    torch.manual_seed(seed)
    model = tf.BertModel(config, add_pooling_layer=False).eval()
    arch_models._spread(model, seed)
    model.save_pretrained(hf_dir)


def _lora(hf_dir: Path, out_dir: Path, seed: int) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    base = AutoModel.from_pretrained(hf_dir).eval()
    torch.manual_seed(seed)
    config = LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=TARGETS, init_lora_weights=False)
    peft_model = get_peft_model(base, config)  # B random too: the adapter moves every vector far from the base's
    peft_model.save_pretrained(out_dir)


def _convert_lora(lora_dir: Path, hf_dir: Path, out: Path) -> None:
    src = make_model.llama_source()
    env = dict(os.environ, PYTHONPATH=str(src / "gguf-py"), HF_HUB_OFFLINE="1", NO_LOCAL_GGUF="")
    cmd = [sys.executable, str(src / "convert_lora_to_gguf.py"), "--base", str(hf_dir), "--outtype", "f32",
           "--outfile", str(out), str(lora_dir)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"convert_lora_to_gguf.py failed for {lora_dir}:\n{proc.stderr[-4000:]}")


def _vectors(model, tok, items: list[str]) -> np.ndarray:  # type: ignore[no-untyped-def]
    import torch

    with torch.no_grad():
        enc = tok(items, padding=True, return_tensors="pt")
        hidden = model(**enc).last_hidden_state.double()
        mask = enc["attention_mask"].unsqueeze(-1).double()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        return (pooled / pooled.norm(dim=1, keepdim=True)).numpy().astype(np.float32)


def _merged(hf_dir: Path, lora_dirs: list[Path]):  # type: ignore[no-untyped-def]
    from peft import PeftModel
    from transformers import AutoModel

    model = AutoModel.from_pretrained(hf_dir).eval()
    for lora_dir in lora_dirs:  # each adapter's delta B @ A * alpha / r adds to the weights
        model = PeftModel.from_pretrained(model, lora_dir).merge_and_unload().eval()
    return model


def build() -> Path:
    import gguf
    import torch
    from transformers import AutoModel, AutoTokenizer

    from embellama._gguf.reader import rewrite

    torch.set_num_threads(1)
    final = folder()
    tmp = final.with_name(final.name + f".{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    hf_dir, other_dir = tmp / "hf", tmp / "other-hf"
    _bert(hf_dir, arch_models.HIDDEN, arch_models.SEED)
    _bert(other_dir, 32, arch_models.SEED + 1)
    proc = arch_models.convert(arch_models.ARCHS["distilbert"], hf_dir, tmp / "base.F32.gguf", "f32")
    if proc.returncode != 0:
        raise RuntimeError(f"convert_hf_to_gguf.py failed:\n{proc.stderr[-4000:]}")
    loras = {}
    for k, name in enumerate(("plain", "query", "passage", "other")):
        loras[name] = tmp / f"lora-{name}"
        _lora(other_dir if name == "other" else hf_dir, loras[name], arch_models.SEED + 10 + k)
        _convert_lora(loras[name], other_dir if name == "other" else hf_dir, tmp / f"{name}.gguf")
    string = gguf.GGUFValueType.STRING
    for name, (task, prompt) in TASKS.items():
        keys = {"adapter.lora.task_name": (task, string), "adapter.lora.prompt_prefix": (prompt, string)}
        rewrite(tmp / f"{name}.gguf", tmp / f"{name}.gguf", why="the test's task adapters", set_keys=keys)
    tok = AutoTokenizer.from_pretrained(hf_dir)
    items = texts()
    refs = {"base": _vectors(AutoModel.from_pretrained(hf_dir).eval(), tok, items)}
    refs["plain"] = _vectors(_merged(hf_dir, [loras["plain"]]), tok, items)
    for name, (_, prompt) in TASKS.items():
        refs[name] = _vectors(_merged(hf_dir, [loras[name]]), tok, [prompt + t for t in items])
    refs["query-bare"] = _vectors(_merged(hf_dir, [loras["query"]]), tok, items)  # no prompt
    refs["plain+query"] = _vectors(_merged(hf_dir, [loras["plain"], loras["query"]]), tok,
                                   [TASKS["query"][1] + t for t in items])  # fmt: skip
    np.savez(tmp / "reference.npz", **refs)
    shutil.rmtree(final, ignore_errors=True)
    tmp.replace(final)
    return final


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    built = build() if not (folder() / "reference.npz").is_file() else folder()
    print(built)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
