# SPDX-License-Identifier: Apache-2.0
"""The classifier tests' models: tiny random-weight ``*ForSequenceClassification`` models with real tokenizers,
cached (built as tests/support/rerank_models.py builds the cross-encoders).

- ``bert1``, ``bert2``, ``bert3``, ``bert5``: ``BertForSequenceClassification`` (hidden 64, 2 layers, a pooler)
  with all-MiniLM-L6-v2's WordPiece and 1, 2, 3 and 5 labels; ``bert2`` keeps transformers' default label names
  (``LABEL_0``, ``LABEL_1``), which llama.cpp's converter drops and ``embellama convert`` writes back;
- ``roberta3``: ``RobertaForSequenceClassification`` (dense + tanh + out_proj head) with RoBERTa's byte-level BPE,
  three labels;
- ``modernbert5``: ``ModernBertForSequenceClassification`` (a dense + GELU + norm head on the mean of the tokens)
  with ModernBERT's BPE, five labels.

Each is converted to F32 by ``embellama convert``; a child process computes the reference: transformers' logits
for :func:`texts`.

    python -m tests.support.classify_models [NAME ...]   # from the repository root
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from tests.support import arch_models, corpus, make_model, rerank_models

N_TEXTS = 200
LABELS = {
    1: {0: "toxic"},
    2: {0: "LABEL_0", 1: "LABEL_1"},
    3: {0: "negative", 1: "neutral", 2: "positive"},
    5: {0: "1 star", 1: "2 stars", 2: "3 stars", 3: "4 stars", 4: "5 stars"},
}


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    hf_class: str
    tokenizer: str
    num_labels: int


RECIPES = {
    r.name: r
    for r in (
        Recipe("bert1", "BertForSequenceClassification", "wordpiece", 1),
        Recipe("bert2", "BertForSequenceClassification", "wordpiece", 2),
        Recipe("bert3", "BertForSequenceClassification", "wordpiece", 3),
        Recipe("bert5", "BertForSequenceClassification", "wordpiece", 5),
        Recipe("roberta3", "RobertaForSequenceClassification", "gpt2-bpe", 3),
        Recipe("modernbert5", "ModernBertForSequenceClassification", "neox-bpe", 5),
    )
}


def texts() -> list[str]:
    """The texts the references are computed for: corpus sentences of every length, and a few odd ones."""
    s1, s2 = corpus.sentence_pairs()
    return [*s1[: N_TEXTS // 2], *s2[: N_TEXTS // 2 - 3], "A", "Ünïcödé and émojis 🙂 too.", "  spaced   out  "]


def recipe_key() -> str:
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(arch_models.recipe_key().encode())
    return h.hexdigest()[:12]


@dataclasses.dataclass(frozen=True)
class Built:
    recipe: Recipe
    folder: Path

    @property
    def hf_dir(self) -> Path:
        return self.folder / "hf"

    @property
    def gguf(self) -> Path:
        """The F32 file ``embellama convert`` wrote."""
        return self.folder / f"{self.recipe.name}.F32.gguf"

    @property
    def labels(self) -> list[str]:
        return [LABELS[self.recipe.num_labels][i] for i in range(self.recipe.num_labels)]

    def logits(self) -> np.ndarray:
        with np.load(self.folder / "reference.npz") as data:
            return data["logits"]


def folder_for(name: str) -> Path:
    return make_model.cache_dir() / "classify" / f"{name}-{recipe_key()}"


def ensure(name: str) -> Built:
    """The built model ``name``, building every missing one in a child process first (under a lock)."""
    arch_models.build_missing("tests.support.classify_models", {n: folder_for(n) / "reference.npz" for n in RECIPES})
    return Built(RECIPES[name], folder_for(name))


# -- building (child process) ---------------------------------------------------------------------------------


def _config(recipe: Recipe, vocab_size: int):  # type: ignore[no-untyped-def]
    import transformers as tf

    labels = LABELS[recipe.num_labels]
    common = dict(num_labels=recipe.num_labels, id2label=labels, label2id={v: k for k, v in labels.items()})
    if recipe.hf_class.startswith("Bert"):
        small = dict(hidden_size=arch_models.HIDDEN, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
        return tf.BertConfig(vocab_size=vocab_size, max_position_embeddings=512, type_vocab_size=2, **small, **common)
    arch = "modernbert" if recipe.hf_class.startswith("ModernBert") else "roberta"
    config = arch_models._config(arch_models.ARCHS[arch], vocab_size)
    config.update(dict(common, classifier_pooling="mean") if arch == "modernbert" else common)
    return config


def _references(hf_dir: Path) -> dict[str, np.ndarray]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(hf_dir)
    model = AutoModelForSequenceClassification.from_pretrained(hf_dir).eval()
    out = []
    with torch.no_grad():
        items = texts()
        for k in range(0, len(items), 50):
            enc = tok(items[k : k + 50], padding=True, return_tensors="pt")
            out.append(model(**enc).logits.double().numpy())
    return {"logits": np.concatenate(out).astype(np.float32)}


def build(name: str) -> Built:
    import torch
    import transformers as tf

    recipe = RECIPES[name]
    folder = folder_for(name)
    tmp = folder.with_name(folder.name + f".{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    hf_dir = tmp / "hf"
    vocab_size = arch_models.TOKENIZERS[recipe.tokenizer](hf_dir)
    config = _config(recipe, vocab_size)
    config.architectures = [recipe.hf_class]
    torch.manual_seed(arch_models.SEED)
    model = getattr(tf, recipe.hf_class)(config).eval()
    arch_models._spread(model, arch_models.SEED + len(name) + recipe.num_labels)
    model.save_pretrained(hf_dir)
    if recipe.hf_class.startswith("ModernBert"):  # the converter reads the pre-5.0 field, as published configs have
        config_file = hf_dir / "config.json"
        config_file.write_text(json.dumps(dict(json.loads(config_file.read_text()), global_attn_every_n_layers=2)))
    built = Built(recipe, tmp)
    if recipe.tokenizer == "gpt2-bpe":
        # llama.cpp's converter does not know this BPE's pre-tokenizer hash: convert as the architecture tests do
        # (naming it), then write what `embellama convert` adds after the converter.
        from embellama._gguf.convert import converter_fixes

        proc = arch_models.convert(arch_models.ARCHS["roberta"], hf_dir, built.gguf, "f32")
        if proc.returncode != 0:
            raise RuntimeError(f"convert_hf_to_gguf.py failed for {hf_dir}:\n{proc.stderr[-4000:]}")
        converter_fixes(hf_dir, built.gguf)
    else:
        rerank_models._convert_embellama(hf_dir, built.gguf, "f32", make_model.llama_source())
    np.savez(tmp / "reference.npz", **_references(hf_dir))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.replace(folder)
    return Built(recipe, folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", default=list(RECIPES))
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for name in args.names:
        started = time.perf_counter()
        built = (
            build(name)
            if not (folder_for(name) / "reference.npz").is_file()
            else Built(RECIPES[name], folder_for(name))
        )
        print(f"{name}\t{built.folder}\t{time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
