# SPDX-License-Identifier: Apache-2.0
"""PyLate's own ColBERT checkpoint and outputs for tests/models/test_peers_sparse_multi.py (tiny random weights).

- ``pylate``: a PyLate ``ColBERT`` built and saved by PyLate itself: a ``BertModel`` (hidden 64, 2 layers) with
  all-MiniLM-L6-v2's WordPiece, the ``[Q] ``/``[D] `` marker tokens that PyLate adds to the vocabulary (and to
  the embeddings), a random ``Dense`` projection (64 to 32, no bias) in ``1_Dense``, and PyLate's defaults in
  ``config_sentence_transformers.json`` (query length 32, document length 180, query expansion with ``[MASK]``,
  expansion tokens not attended to, the punctuation skiplist). ``reference.npz`` holds PyLate's query and
  document vectors of :func:`tests.support.sparse_models.texts` and its ``rank.rerank`` scores, with the
  expansion tokens attended to and not.

PyLate 1.6 pins sentence-transformers 5.3 and transformers <= 5.3 (it loads and saves checkpoints through their
private methods, which sentence-transformers 6 renamed), so it runs here in a child process over a folder of
its own pins (:data:`PYLATE_SITE`, ``pip install --no-deps --target``, built once into the model cache) in front
of the test environment's torch and numpy. bge-m3 (FlagEmbedding's ``BGEM3FlagModel``, which runs on the test
environment's transformers) comes from :mod:`tests.support.sparse_models`.

    python -m tests.support.peer_models [NAME ...]   # from the repository root: build what is missing
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tests.support import arch_models, make_model, rerank_models, sparse_models

NAMES = ("pylate",)
EMBEDDING_SIZE = 32
# PyLate at its own pins (its dependencies that the test environment has at other versions), no dependencies
# resolved: torch, numpy, safetensors and the rest come from the test environment.
PYLATE_SITE = [
    "pylate==1.6.0",
    "sentence-transformers==5.3.0",
    "transformers==5.3.0",
    "huggingface_hub==1.33.0",
    "tokenizers==0.22.2",
    "datasets==5.2.0",  # imported by pylate.utils (training data); not on the encode path
    "dill==0.4.1",
    "multiprocess==0.70.19",
]
# transformers 5.3 imports the hub kernels package where it is installed, and the test environment's (for
# transformers 5.25) has another API; kernels only fetch optimized layers from the Hub, never used here.
_KERNELS_STUB = 'raise ImportError("kernels is hidden from transformers 5.3 in this folder")\n'


def folder_for(name: str) -> Path:
    """The model's folder in the cache, keyed by this file and the architecture tests' recipe."""
    key = hashlib.sha256(Path(__file__).read_bytes() + arch_models.recipe_key().encode()).hexdigest()[:12]
    return make_model.cache_dir() / "peers" / f"{name}-{key}"


def reference(name: str) -> dict[str, np.ndarray]:
    """The peer's outputs (built first where missing): ``model.F32.gguf``, ``model.F32.heads.npz`` and the
    peer's ``hf/`` lie beside them."""
    arch_models.build_missing("tests.support.peer_models", {n: folder_for(n) / "reference.npz" for n in NAMES})
    with np.load(folder_for(name) / "reference.npz") as data:
        return dict(data)


def pylate_site() -> Path:
    """The folder with PyLate's pins (:data:`PYLATE_SITE`), installed on first use."""
    key = hashlib.sha256(json.dumps(PYLATE_SITE).encode()).hexdigest()[:12]
    site = make_model.cache_dir() / "peers" / f"pylate-site-{key}"
    if (site / "kernels" / "__init__.py").is_file():
        return site
    tmp = site.with_name(site.name + f".{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(tmp), *PYLATE_SITE]
    subprocess.run(cmd, check=True)
    (tmp / "kernels").mkdir()
    (tmp / "kernels" / "__init__.py").write_text(_KERNELS_STUB)
    shutil.rmtree(site, ignore_errors=True)
    tmp.replace(site)
    return site


def _in_site(step: str, folder: Path) -> None:
    """Run ``step`` of this module in a child with PyLate's pins in front of the path."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(pylate_site()), str(make_model.REPO)]))
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    cmd = [sys.executable, "-m", "tests.support.peer_models", "--step", step, str(folder)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=make_model.REPO, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"PyLate's {step} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")


# -- in the child with PyLate's pins ---------------------------------------------------------------------------


def _pylate_checkpoint(folder: Path) -> None:
    import torch
    import transformers as tf
    from pylate import models

    base = folder / "base"
    vocab_size = arch_models.TOKENIZERS["wordpiece"](base)
    config = tf.BertConfig(vocab_size=vocab_size, hidden_size=arch_models.HIDDEN, num_hidden_layers=2,
                           num_attention_heads=4, intermediate_size=128, max_position_embeddings=512)  # fmt: skip
    torch.manual_seed(arch_models.SEED)
    bert = tf.BertModel(config, add_pooling_layer=False).eval()
    arch_models._spread(bert, arch_models.SEED + 21)
    bert.save_pretrained(base)
    torch.manual_seed(arch_models.SEED + 22)
    colbert = models.ColBERT(str(base), embedding_size=EMBEDDING_SIZE, device="cpu")  # adds [Q] and [D]
    with torch.no_grad():  # the marker tokens' rows (appended by PyLate's resize) and the projection: spread too
        gen = torch.Generator().manual_seed(arch_models.SEED + 23)
        embeddings = colbert[0].auto_model.get_input_embeddings().weight
        embeddings[vocab_size:] = torch.randn(embeddings[vocab_size:].shape, generator=gen).half().float()
        dense = colbert[1].linear.weight
        dense.copy_((torch.randn(dense.shape, generator=gen) / dense.shape[1] ** 0.5).half().float())
    colbert.save(str(folder / "hf"))
    shutil.rmtree(base)


def _pylate_reference(folder: Path) -> None:
    from pylate import models, rank

    texts = sparse_models.texts()
    out: dict[str, np.ndarray] = {}
    for attend in (False, True):
        model = models.ColBERT(str(folder / "hf"), device="cpu", attend_to_expansion_tokens=attend)
        queries = model.encode(texts[:10], is_query=True, batch_size=8)
        docs = model.encode(texts, is_query=False, batch_size=8)
        ids = [list(range(len(texts)))] * len(queries)
        ranked = rank.rerank(documents_ids=ids, queries_embeddings=queries, documents_embeddings=[docs] * len(queries))
        scores = np.zeros((len(queries), len(texts)), np.float32)
        for row, results in zip(scores, ranked, strict=True):
            for r in results:
                row[int(r["id"])] = float(r["score"])
        tag = "attend" if attend else "default"
        out[f"queries_{tag}"] = np.concatenate(queries).astype(np.float32)
        out[f"query_ids_{tag}"] = model.tokenize(texts[:10], is_query=True)["input_ids"].numpy()
        out[f"scores_{tag}"] = scores
        out[f"order_{tag}"] = np.array([[int(r["id"]) for r in results] for results in ranked])
    out["query_lengths"] = np.array([len(q) for q in queries])
    out["documents"] = np.concatenate(docs).astype(np.float32)
    out["document_lengths"] = np.array([len(d) for d in docs])
    np.savez(folder / "peer.npz", **out)


# -- building ---------------------------------------------------------------------------------------------------


def build(name: str) -> Path:
    folder = folder_for(name)
    tmp = folder.with_name(folder.name + f".{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _in_site("checkpoint", tmp)
    rerank_models._convert_embellama(tmp / "hf", tmp / "model.F32.gguf", "f32", make_model.llama_source())
    if not (tmp / "model.F32.heads.npz").is_file():
        raise RuntimeError(f"embellama convert wrote no heads for {name}")
    _in_site("reference", tmp)
    (tmp / "info.json").write_text(json.dumps({"name": name, "site": PYLATE_SITE}))
    (tmp / "peer.npz").replace(tmp / "reference.npz")
    shutil.rmtree(folder, ignore_errors=True)
    return tmp.replace(folder)


def main(argv: list[str] | None = None) -> int:
    """Build the missing models named (all by default); ``--step STEP FOLDER`` in the child with PyLate's pins."""
    args = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args[:1] == ["--step"]:
        {"checkpoint": _pylate_checkpoint, "reference": _pylate_reference}[args[1]](Path(args[2]))
        return 0
    for name in args or NAMES:
        if not (folder_for(name) / "reference.npz").is_file():
            started = time.perf_counter()
            print(f"{name}\t{build(name)}\t{time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
