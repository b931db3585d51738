# SPDX-License-Identifier: Apache-2.0
"""References for long texts, from sentence-transformers on all-MiniLM-L6-v2 (child process, cached by content).

For each text: the token vectors ``SentenceTransformer.encode(output_value="token_embeddings")`` gives (the last
hidden state, at most 256 tokens) with the Hugging Face tokenizer's character offsets, and the un-normalized mean
pooled vector of each window of ``chunk_tokens`` tokens ``chunk_tokens - chunk_overlap`` apart over the whole
text's tokens, each run alone with [CLS] and [SEP] around it.

    python -m tests.support.long_reference TEXTS.json OUT.npz CHUNK_TOKENS CHUNK_OVERLAP   # from the repository root
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

MAX_SEQ_LENGTH = 256


def reference(texts: list[str], chunk_tokens: int, chunk_overlap: int) -> dict[str, np.ndarray]:
    """The references for ``texts`` (see the module's docstring), cached under the model cache."""
    digest = hashlib.sha256(json.dumps([texts, chunk_tokens, chunk_overlap]).encode())
    digest.update(Path(__file__).read_bytes())
    out = make_model.cache_dir() / "reference" / f"long-{make_model.weights_key()}-{digest.hexdigest()[:16]}.npz"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        texts_file = out.with_suffix(".json")
        texts_file.write_text(json.dumps(texts), encoding="utf-8")
        cmd = [sys.executable, "-m", "tests.support.long_reference", str(texts_file), str(out)]
        proc = subprocess.run([*cmd, str(chunk_tokens), str(chunk_overlap)], capture_output=True, text=True,
                              cwd=make_model.REPO)  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"the reference child process failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    with np.load(out) as data:
        return {key: data[key] for key in data.files}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("texts", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("chunk_tokens", type=int)
    parser.add_argument("chunk_overlap", type=int)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(1)
    texts = json.loads(args.texts.read_text(encoding="utf-8"))
    st = SentenceTransformer(str(make_model.hf_model_dir()), device="cpu")
    st.max_seq_length = MAX_SEQ_LENGTH
    tok = st.tokenizer
    result: dict[str, list[np.ndarray]] = {"tokens": [], "offsets": [], "ids": [], "chunks": []}
    lengths, ids_lengths, n_chunks = [], [], []
    for text in texts:
        vectors = st.encode(text, output_value="token_embeddings", convert_to_numpy=True)
        enc = tok(text, truncation=True, max_length=MAX_SEQ_LENGTH, return_offsets_mapping=True)
        assert len(enc["input_ids"]) == len(vectors)
        result["tokens"].append(np.asarray(vectors, dtype=np.float32))
        result["offsets"].append(np.asarray(enc["offset_mapping"], dtype=np.int64))
        lengths.append(len(vectors))
        body = tok(text, add_special_tokens=False)["input_ids"]
        result["ids"].append(np.asarray(body, dtype=np.int64))
        ids_lengths.append(len(body))
        stride = args.chunk_tokens - args.chunk_overlap
        count = 1 + max(0, -(-(len(body) - args.chunk_tokens) // stride))
        windows = [[tok.cls_token_id, *body[k * stride : k * stride + args.chunk_tokens], tok.sep_token_id]
                   for k in range(count)]  # fmt: skip
        with torch.no_grad():
            for window in windows:
                hidden = st[0].auto_model(input_ids=torch.tensor([window])).last_hidden_state[0]
                result["chunks"].append(hidden.mean(0).numpy()[None].astype(np.float32))
        n_chunks.append(count)
    out = {key: np.concatenate(value) for key, value in result.items()}
    out.update(lengths=np.array(lengths), ids_lengths=np.array(ids_lengths), n_chunks=np.array(n_chunks))
    tmp = args.out.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **out)
    tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
