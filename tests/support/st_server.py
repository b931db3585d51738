# SPDX-License-Identifier: Apache-2.0
"""sentence-transformers in a child process that answers requests, so torch stays out of the test process
and is imported once per test module (hypothesis sends many small requests).

    server = STServer()                               # starts ``python -m tests.support.st_server``
    server.quantize(matrix, ranges=None)              # {precision: quantize_embeddings(matrix, precision)}
    server.encode(texts, prompts={...}, method="encode_query", prompt_name=..., truncate_dim=...)
    server.close()

Each request is one line of JSON on the child's stdin naming an ``.npz`` file with its arrays; the
child writes the answer to ``<file>.out.npz`` and prints one line (``ok`` or the error).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from tests.support import make_model
from tests.support.reference import ST_MAX_SEQ_LENGTH

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")


class STServer:
    """The client: one child process, requests one at a time."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="embellama-st-"))
        self._count = 0
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.st_server"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=make_model.REPO,
            env=env,
        )

    def _ask(self, request: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._count += 1
        path = self._dir / f"req{self._count}.npz"
        np.savez(path, **arrays)
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps({**request, "path": str(path)}) + "\n")
        self._proc.stdin.flush()
        answer = self._proc.stdout.readline().strip()
        if answer != "ok":
            raise RuntimeError(f"the sentence-transformers child failed: {answer or 'it exited'}")
        with np.load(f"{path}.out.npz") as data:
            return {key: data[key] for key in data.files}

    def quantize(self, embeddings: np.ndarray, **kwargs: np.ndarray) -> dict[str, np.ndarray]:
        """``quantize_embeddings(embeddings, p, **kwargs)`` for every precision p (kwargs: ranges, calibration_embeddings)."""
        return self._ask({"op": "quantize", "kwargs": sorted(kwargs)}, {"embeddings": embeddings, **kwargs})

    def encode(
        self,
        texts: list[str],
        *,
        prompts: dict[str, str] | None = None,
        default_prompt_name: str | None = None,
        method: str = "encode",
        normalize_module: bool = True,
        **kwargs: Any,
    ) -> np.ndarray:
        """``SentenceTransformer(<MiniLM>, prompts=..., default_prompt_name=...).<method>(texts, **kwargs)``;
        ``normalize_module=False`` drops the model's Normalize module (Transformer + Pooling only)."""
        request = {
            "op": "encode",
            "texts": texts,
            "prompts": prompts,
            "default_prompt_name": default_prompt_name,
            "method": method,
            "normalize_module": normalize_module,
            "kwargs": kwargs,
        }
        return self._ask(request, {})["embeddings"]

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait(timeout=60)
        for file in self._dir.iterdir():
            file.unlink()
        self._dir.rmdir()


def main() -> int:
    import torch
    from sentence_transformers import SentenceTransformer, models
    from sentence_transformers.util.quantization import quantize_embeddings

    torch.set_num_threads(1)
    model_dir = str(make_model.hf_model_dir())
    loaded: dict[str, Any] = {}

    def model(prompts: dict[str, str] | None, default: str | None, normalize_module: bool) -> Any:
        key = json.dumps([prompts, default, normalize_module])
        if key not in loaded:
            if normalize_module:
                st = SentenceTransformer(model_dir, device="cpu", prompts=prompts, default_prompt_name=default)
            else:
                word = models.Transformer(model_dir, max_seq_length=ST_MAX_SEQ_LENGTH)
                pool = models.Pooling(word.get_word_embedding_dimension(), pooling_mode="mean")
                st = SentenceTransformer(
                    modules=[word, pool], device="cpu", prompts=prompts, default_prompt_name=default
                )
            st.max_seq_length = ST_MAX_SEQ_LENGTH
            loaded[key] = st
        return loaded[key]

    for line in sys.stdin:
        request = json.loads(line)
        try:
            with np.load(request["path"]) as data:
                arrays = {key: data[key] for key in data.files}
            if request["op"] == "quantize":
                extra = {name: arrays[name] for name in request["kwargs"]}
                out = {p: quantize_embeddings(arrays["embeddings"], p, **extra) for p in PRECISIONS}
            else:
                st = model(request["prompts"], request["default_prompt_name"], request["normalize_module"])
                method = getattr(st, request["method"])
                out = {"embeddings": np.asarray(method(request["texts"], batch_size=64, **request["kwargs"]))}
            np.savez(request["path"] + ".out.npz", **out)
            print("ok", flush=True)
        except Exception as exc:  # reported to the test, which fails with it
            print(f"{type(exc).__name__}: {' '.join(str(exc).split())}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
