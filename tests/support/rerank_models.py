# SPDX-License-Identifier: Apache-2.0
"""The reranker tests' models: tiny random-weight cross-encoders with real tokenizers, cached.

- ``bert``: ``BertForSequenceClassification`` (hidden 64, 2 layers, two token types, one label) with
  all-MiniLM-L6-v2's WordPiece, the kind of the ms-marco MiniLM cross-encoders;
- ``bert3``: the same with three labels (an NLI head);
- ``xlm-roberta``: ``XLMRobertaForSequenceClassification`` (one token type, dense + tanh + out_proj head)
  with a SentencePiece unigram trained on the corpus (as the architecture tests'), the kind of bge-reranker-v2-m3;
- ``modernbert``: ``ModernBertForSequenceClassification`` (GeGLU, alternating global and local attention,
  a dense + GELU + norm head on the mean of the tokens, ``classifier_pooling="mean"``) with ModernBERT's
  byte-level BPE, the kind of gte-reranker-modernbert-base; its config names ``norm_eps`` as published ones do,
  which ``embellama convert`` turns into the epsilon llama.cpp's loader needs;
- ``qwen3``: a ``Qwen3ForCausalLM`` named as Qwen3-Reranker (its README), with Qwen2's byte-level BPE: the
  pinned converter keeps the "yes" and "no" rows of the LM head and writes the rerank prompt; its reference
  is P(yes) from transformers' logits at the prompt's last token, as Qwen3-Reranker's own code computes it.

Each is saved by sentence-transformers' ``CrossEncoder`` (so its config carries the activation) and converted
twice: by ``embellama convert`` (the path users take) and by llama.cpp's own ``convert_hf_to_gguf.py`` alone
(what the tests show to be wrong for BERT). A child process computes the references on the same weights:
``CrossEncoder.predict`` logits and default-activation scores for :func:`pairs`, and the Hugging Face
tokenizer's pair encoding.

    python -m tests.support.rerank_models [NAME ...]   # from the repository root
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tests.support import arch_models, corpus, make_model

N_QUERIES, N_DOCS = 200, 20
LABELS3 = {0: "contradiction", 1: "entailment", 2: "neutral"}


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    hf_class: str
    tokenizer: str
    num_labels: int


RECIPES = {
    r.name: r
    for r in (
        Recipe("bert", "BertForSequenceClassification", "wordpiece", 1),
        Recipe("bert3", "BertForSequenceClassification", "wordpiece", 3),
        Recipe("xlm-roberta", "XLMRobertaForSequenceClassification", "unigram", 1),
        Recipe("modernbert", "ModernBertForSequenceClassification", "neox-bpe", 1),
        Recipe("qwen3", "Qwen3ForCausalLM", "qwen2-bpe", 1),  # Qwen3-Reranker's kind: P(yes) at the last token
    )
}


def pairs() -> tuple[list[str], list[list[int]], list[str]]:
    """200 queries, the 20 document indices of each (its own partner in the corpus first) and the documents."""
    s1, s2 = corpus.sentence_pairs()
    rng = random.Random(7)
    queries = s1[:N_QUERIES]
    docs = s2[: N_QUERIES * 5]
    chosen = [[i, *rng.sample([j for j in range(len(docs)) if j != i], N_DOCS - 1)] for i in range(N_QUERIES)]
    return queries, chosen, docs


def flat_pairs() -> list[tuple[str, str]]:
    queries, chosen, docs = pairs()
    return [(q, docs[j]) for q, row in zip(queries, chosen, strict=True) for j in row]


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

    def gguf(self, outtype: str) -> Path:
        """The file ``embellama convert`` wrote."""
        return self.folder / f"{self.recipe.name}.{outtype.upper()}.gguf"

    @property
    def decoder(self) -> bool:
        return self.recipe.hf_class.endswith("ForCausalLM")

    @property
    def stock(self) -> Path:
        """The F32 file llama.cpp's converter alone wrote."""
        return self.folder / f"{self.recipe.name}.stock.F32.gguf"

    def reference(self) -> dict[str, np.ndarray]:
        with np.load(self.folder / "reference.npz") as data:
            return {key: data[key] for key in data.files}


def folder_for(name: str) -> Path:
    return make_model.cache_dir() / "rerank" / f"{name}-{recipe_key()}"


def ensure(name: str) -> Built:
    """The built model ``name``, building every missing one in a child process first (under a lock)."""
    arch_models.build_missing("tests.support.rerank_models", {n: folder_for(n) / "reference.npz" for n in RECIPES})
    return Built(RECIPES[name], folder_for(name))


# -- building (child process) ---------------------------------------------------------------------------------


def _config(recipe: Recipe, vocab_size: int):  # type: ignore[no-untyped-def]
    import transformers as tf

    small = dict(hidden_size=arch_models.HIDDEN, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
    labels = LABELS3 if recipe.num_labels == 3 else {0: "LABEL_0"}
    common = dict(num_labels=recipe.num_labels, id2label=labels, label2id={v: k for k, v in labels.items()})
    if recipe.hf_class.startswith("ModernBert"):
        config = arch_models._config(arch_models.ARCHS["modernbert"], vocab_size)
        config.update(dict(classifier_pooling="mean", **common))
        return config
    if recipe.hf_class.startswith("Bert"):
        return tf.BertConfig(vocab_size=vocab_size, max_position_embeddings=512, type_vocab_size=2, **small, **common)
    return tf.XLMRobertaConfig(vocab_size=vocab_size, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
                               bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5, **small, **common)  # fmt: skip


def _convert_embellama(hf_dir: Path, out: Path, outtype: str, src: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "embellama",
        "convert",
        str(hf_dir),
        str(out),
        "--type",
        outtype,
        "--llama-src",
        str(src),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=make_model.REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"embellama convert failed for {hf_dir} ({outtype}):\n{proc.stdout}\n{proc.stderr[-4000:]}")


def _convert_stock(hf_dir: Path, out: Path, src: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(src / "gguf-py"), HF_HUB_OFFLINE="1")
    cmd = [sys.executable, str(src / "convert_hf_to_gguf.py"), str(hf_dir), "--outtype", "f32", "--outfile", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"convert_hf_to_gguf.py failed for {hf_dir}:\n{proc.stderr[-4000:]}")


def _references(hf_dir: Path) -> dict[str, np.ndarray]:
    import torch
    from sentence_transformers import CrossEncoder

    torch.set_num_threads(1)
    ce = CrossEncoder(str(hf_dir), device="cpu")
    items = flat_pairs()
    logits = ce.predict(items, batch_size=64, activation_fn=torch.nn.Identity(), show_progress_bar=False)
    scores = ce.predict(items, batch_size=64, show_progress_bar=False)
    enc = ce.tokenizer([q for q, _ in items[:400]], [d for _, d in items[:400]])
    ids = enc["input_ids"]
    types = enc.get("token_type_ids") or [[0] * len(row) for row in ids]
    return {
        "logits": np.asarray(logits, dtype=np.float32).reshape(len(items), -1),
        "scores": np.asarray(scores, dtype=np.float32),
        "ids_flat": np.array([i for row in ids for i in row], dtype=np.int32),
        "types_flat": np.array([t for row in types for t in row], dtype=np.int32),
        "ids_len": np.array([len(row) for row in ids], dtype=np.int64),
    }


def _decoder_references(hf_dir: Path, gguf_file: Path) -> dict[str, np.ndarray]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from embellama._gguf import reader as _gguf

    torch.set_num_threads(1)
    template = _gguf.read_header(gguf_file).metadata["tokenizer.chat_template.rerank"]
    tok = AutoTokenizer.from_pretrained(hf_dir)
    model = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
    prompts = [template.replace("{query}", q).replace("{document}", d) for q, d in flat_pairs()]
    ids = [tok(text, add_special_tokens=False)["input_ids"] for text in prompts]
    scores = []
    with torch.no_grad():
        for k in range(0, len(ids), 100):
            rows = ids[k : k + 100]
            width = max(map(len, rows))
            batch = torch.tensor([r + [0] * (width - len(r)) for r in rows])
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
            hidden = model.model(input_ids=batch, attention_mask=mask).last_hidden_state
            last = hidden[torch.arange(len(rows)), torch.tensor([len(r) - 1 for r in rows])]
            logits = last @ model.lm_head.weight[[yes, no]].T  # the two rows of the LM head the score reads
            scores.append(torch.softmax(logits.double(), dim=-1)[:, 0].numpy())
    p_yes = np.concatenate(scores).astype(np.float32)
    return {
        "logits": p_yes[:, None],
        "scores": p_yes,
        "ids_flat": np.array([i for row in ids[:400] for i in row], dtype=np.int32),
        "types_flat": np.zeros(sum(map(len, ids[:400])), dtype=np.int32),
        "ids_len": np.array([len(row) for row in ids[:400]], dtype=np.int64),
    }


def _build_decoder(recipe: Recipe, tmp: Path, hf_dir: Path) -> None:
    import torch
    import transformers as tf

    vocab_size = arch_models.TOKENIZERS[recipe.tokenizer](hf_dir)
    config = arch_models._config(arch_models.ARCHS["qwen3"], vocab_size)
    config.architectures = [recipe.hf_class]
    torch.manual_seed(arch_models.SEED)
    model = tf.Qwen3ForCausalLM(config).eval()
    arch_models._spread(model, arch_models.SEED + 3)
    model.save_pretrained(hf_dir)
    (hf_dir / "README.md").write_text("# Qwen3-Reranker\n\nA tiny random-weight model of its kind.\n")
    src = make_model.llama_source()
    built = Built(recipe, tmp)
    for outtype in ("f32", "f16"):
        _convert_embellama(hf_dir, built.gguf(outtype), outtype, src)
    np.savez(tmp / "reference.npz", **_decoder_references(hf_dir, built.gguf("f32")))


def build(name: str) -> Built:
    import torch
    import transformers as tf
    from sentence_transformers import CrossEncoder

    recipe = RECIPES[name]
    folder = folder_for(name)
    tmp = folder.with_name(folder.name + f".{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    raw, hf_dir = tmp / "raw", tmp / "hf"
    if recipe.hf_class.endswith("ForCausalLM"):
        _build_decoder(recipe, tmp, hf_dir)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.replace(folder)
        return Built(recipe, folder)
    vocab_size = arch_models.TOKENIZERS[recipe.tokenizer](raw)
    config = _config(recipe, vocab_size)
    config.architectures = [recipe.hf_class]
    torch.manual_seed(arch_models.SEED)
    model = getattr(tf, recipe.hf_class)(config).eval()
    arch_models._spread(model, arch_models.SEED + len(name))
    model.save_pretrained(raw)
    CrossEncoder(str(raw), device="cpu").save_pretrained(str(hf_dir))  # as users have it: with its activation
    for extra in raw.iterdir():  # the tokenizer's own files a published folder has (sentencepiece.bpe.model ...)
        if not (hf_dir / extra.name).exists():
            shutil.copy(extra, hf_dir / extra.name)
    shutil.rmtree(raw)
    if recipe.hf_class.startswith("ModernBert"):  # the converter reads the pre-5.0 field, as published configs have
        config_file = hf_dir / "config.json"
        config_file.write_text(json.dumps(dict(json.loads(config_file.read_text()), global_attn_every_n_layers=2)))
    src = make_model.llama_source()
    built = Built(recipe, tmp)
    for outtype in ("f32", "f16"):
        _convert_embellama(hf_dir, built.gguf(outtype), outtype, src)
    _convert_stock(hf_dir, built.stock, src)
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
