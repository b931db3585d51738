# SPDX-License-Identifier: Apache-2.0
"""Reference outputs from sentence-transformers and the Hugging Face tokenizer.

:func:`reference_outputs` returns them for a list of texts, cached by content; they are computed in a
child process (torch stays out of the test process):

    python -m tests.support.reference TEXTS.json OUT.npz [--max-seq-length 256]   # from the repository root

TEXTS.json is a JSON list of str. OUT.npz gets ``ids_flat``/``ids_len`` (token ids of
the HF tokenizer, truncated at max-seq-length) and ``emb_<mode>`` for the pooling modes
mean, cls, max and mean_sqrt (un-normalized, float32), plus ``emb_st`` (the packaged
model as published: mean pooling and its Normalize module).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.support import make_model

MODES = {
    "mean": "mean",
    "cls": "cls",
    "max": "max",
    "mean_sqrt": "mean_sqrt_len_tokens",
}
ST_MAX_SEQ_LENGTH = 256  # sentence_bert_config.json of all-MiniLM-L6-v2


def reference_outputs(texts: list[str], tag: str, modes: str = "mean,cls,max,mean_sqrt") -> dict[str, np.ndarray]:
    """sentence-transformers / HF tokenizer outputs for ``texts``, cached by content under the model cache."""
    digest = hashlib.sha256(json.dumps([texts, ST_MAX_SEQ_LENGTH, modes]).encode()).hexdigest()[:16]
    out = make_model.cache_dir() / "reference" / f"{tag}-{make_model.weights_key()}-{digest}.npz"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        texts_file = out.with_suffix(".json")
        texts_file.write_text(json.dumps(texts), encoding="utf-8")
        cmd = [sys.executable, "-m", "tests.support.reference", str(texts_file), str(out)]
        cmd += ["--max-seq-length", str(ST_MAX_SEQ_LENGTH), "--modes", modes]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=make_model.REPO)
        if proc.returncode != 0:
            raise RuntimeError(f"the reference child process failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    with np.load(out) as data:
        return {key: data[key] for key in data.files}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("texts", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--modes", default=",".join(MODES), help="pooling modes to compute ('' for none)")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer, models

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    texts = json.loads(args.texts.read_text(encoding="utf-8"))
    model_dir = str(make_model.hf_model_dir())
    result: dict[str, np.ndarray] = {}

    published = SentenceTransformer(model_dir, device="cpu")
    published.max_seq_length = args.max_seq_length
    result["emb_st"] = published.encode(texts, batch_size=64, convert_to_numpy=True).astype(np.float32)
    ids = published.tokenizer(texts, truncation=True, max_length=args.max_seq_length)["input_ids"]
    result["ids_flat"] = np.array([i for seq in ids for i in seq], dtype=np.int32)
    result["ids_len"] = np.array([len(seq) for seq in ids], dtype=np.int64)

    for name in filter(None, args.modes.split(",")):
        mode = MODES[name]
        word = models.Transformer(model_dir, max_seq_length=args.max_seq_length)
        pool = models.Pooling(word.get_word_embedding_dimension(), pooling_mode=mode)
        st = SentenceTransformer(modules=[word, pool], device="cpu")
        result[f"emb_{name}"] = st.encode(texts, batch_size=64, convert_to_numpy=True).astype(np.float32)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **result)
    tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
