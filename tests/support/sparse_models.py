# SPDX-License-Identifier: Apache-2.0
"""The sparse and multi-vector tests' models: tiny random-weight checkpoints with real tokenizers, cached.

- ``splade``: a ``BertForMaskedLM`` (hidden 64, 2 layers) with all-MiniLM-L6-v2's WordPiece; its reference is
  sentence-transformers' ``SparseEncoder`` (MLM head + ``SpladePooling``) on the same folder;
- ``bge-m3``: an ``XLMRobertaModel`` with a SentencePiece unigram (as the architecture tests') and random
  ``sparse_linear.pt`` (hidden to 1) and ``colbert_linear.pt`` (hidden to hidden) as bge-m3 ships them; its
  reference is FlagEmbedding's rules (``BGEM3FlagModel``: ReLU(sparse_linear(h)) per token, the largest weight
  per token id without CLS/EOS/PAD/UNK; ``colbert_linear(h[1:])`` normalized) on transformers' hidden states.

Each is converted by ``embellama convert`` (which writes ``<model>.heads.npz`` beside the GGUF).

    python -m tests.support.sparse_models [NAME ...]   # from the repository root
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from tests.support import arch_models, corpus, make_model, rerank_models

NAMES = ("splade", "bge-m3")
N_TEXTS = 40


def texts() -> list[str]:
    """40 corpus sentences, a repeated word and a punctuation-heavy line."""
    s1, s2 = corpus.sentence_pairs()
    return [*s1[:20], *s2[:18], "the the the cat sat on the mat, the end.", "Hello, world! (yes) -- ok?"]


def recipe_key() -> str:
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(arch_models.recipe_key().encode())
    return h.hexdigest()[:12]


def folder_for(name: str) -> Path:
    return make_model.cache_dir() / "sparse" / f"{name}-{recipe_key()}"


def ensure(name: str) -> Path:
    """The built model's folder (``model.F32.gguf``, its heads, ``hf/``, ``reference.npz``)."""
    arch_models.build_missing("tests.support.sparse_models", {n: folder_for(n) / "reference.npz" for n in NAMES})
    return folder_for(name)


def reference(name: str) -> dict[str, np.ndarray]:
    with np.load(ensure(name) / "reference.npz") as data:
        return {key: data[key] for key in data.files}


# -- building (child process) ---------------------------------------------------------------------------------


def _splade(hf_dir: Path) -> dict[str, np.ndarray]:
    import torch
    import transformers as tf
    from sentence_transformers import SparseEncoder

    vocab_size = arch_models.TOKENIZERS["wordpiece"](hf_dir)
    config = tf.BertConfig(vocab_size=vocab_size, hidden_size=arch_models.HIDDEN, num_hidden_layers=2,
                           num_attention_heads=4, intermediate_size=128, max_position_embeddings=512)  # fmt: skip
    config.architectures = ["BertForMaskedLM"]
    torch.manual_seed(arch_models.SEED)
    model = tf.BertForMaskedLM(config).eval()
    arch_models._spread(model, arch_models.SEED + 11)
    tok = tf.AutoTokenizer.from_pretrained(hf_dir)
    with torch.no_grad():  # a real SPLADE's sparsity: about 1 % of the vocabulary above zero per token
        logits = model(**tok(texts()[:8], return_tensors="pt", padding=True)).logits
        model.cls.predictions.bias.sub_(torch.quantile(logits.flatten()[::7], 0.99))
    model.save_pretrained(hf_dir)
    encoder = SparseEncoder(str(hf_dir), device="cpu")
    dense = encoder.encode(texts(), convert_to_tensor=True, convert_to_sparse_tensor=False)
    return {"dense": np.asarray(dense.to_dense() if dense.is_sparse else dense, dtype=np.float32)}


def _bge_m3(hf_dir: Path) -> dict[str, np.ndarray]:
    import torch
    import transformers as tf

    vocab_size = arch_models.TOKENIZERS["unigram"](hf_dir)
    config = arch_models._config(arch_models.ARCHS["xlm-roberta"], vocab_size)
    config.architectures = ["XLMRobertaModel"]
    torch.manual_seed(arch_models.SEED)
    model = tf.XLMRobertaModel(config, add_pooling_layer=False).eval()
    arch_models._spread(model, arch_models.SEED + 12)
    model.save_pretrained(hf_dir)
    gen = torch.Generator().manual_seed(arch_models.SEED + 13)
    hidden_size = config.hidden_size
    sparse = torch.nn.Linear(hidden_size, 1)
    colbert = torch.nn.Linear(hidden_size, hidden_size)
    with torch.no_grad():
        for layer in (sparse, colbert):
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) / hidden_size**0.5)
            layer.bias.copy_(0.1 * torch.randn(layer.bias.shape, generator=gen))
    torch.save(sparse.state_dict(), hf_dir / "sparse_linear.pt")
    torch.save(colbert.state_dict(), hf_dir / "colbert_linear.pt")
    tok = tf.AutoTokenizer.from_pretrained(hf_dir)
    unused = {tok.cls_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id}
    ids, weights, lengths, colbert_vecs, colbert_lengths = [], [], [], [], []
    with torch.no_grad():
        for text in texts():  # FlagEmbedding's rules, one text at a time (no padding to mask)
            enc = tok(text, return_tensors="pt")
            hidden = model(**enc).last_hidden_state[0]
            token_weights = torch.relu(sparse(hidden))[:, 0].numpy()
            best: dict[int, float] = {}
            for t, w in zip(enc["input_ids"][0].tolist(), token_weights.tolist(), strict=True):
                if t in unused or w <= 0:
                    continue
                best[t] = max(best.get(t, 0.0), w)
            keys = sorted(best)
            ids += keys
            weights += [best[k] for k in keys]
            lengths.append(len(keys))
            vecs = torch.nn.functional.normalize(colbert(hidden[1:]), dim=-1).numpy()
            colbert_vecs.append(vecs)
            colbert_lengths.append(len(vecs))
    return {
        "ids": np.array(ids, dtype=np.int64),
        "weights": np.array(weights, dtype=np.float32),
        "lengths": np.array(lengths, dtype=np.int64),
        "colbert": np.concatenate(colbert_vecs).astype(np.float32),
        "colbert_lengths": np.array(colbert_lengths, dtype=np.int64),
    }


def build(name: str) -> Path:
    folder = folder_for(name)
    tmp = folder.with_name(folder.name + f".{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    hf_dir = tmp / "hf"
    hf_dir.mkdir(parents=True)
    ref = _splade(hf_dir) if name == "splade" else _bge_m3(hf_dir)
    rerank_models._convert_embellama(hf_dir, tmp / "model.F32.gguf", "f32", make_model.llama_source())
    if not (tmp / "model.F32.heads.npz").is_file():
        raise RuntimeError(f"embellama convert wrote no heads for {name}")
    np.savez(tmp / "reference.npz", **ref)
    (tmp / "info.json").write_text(json.dumps({"name": name, "texts": len(texts())}))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.replace(folder)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", default=list(NAMES))
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for name in args.names:
        started = time.perf_counter()
        folder = build(name) if not (folder_for(name) / "reference.npz").is_file() else folder_for(name)
        print(f"{name}\t{folder}\t{time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
