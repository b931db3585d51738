# SPDX-License-Identifier: Apache-2.0
"""The measured side of bench.py: one process per (tool, corpus, round), plus the ONNX export.

    python benchmarks/_bench_workers.py run JOB.json      # writes JOB's "result" JSON (and "save" .npy)
    python benchmarks/_bench_workers.py export-onnx HF_DIR OUT_DIR
    python benchmarks/_bench_workers.py ceiling N_EMBD N_FF TOKENS   # run with OPENBLAS_NUM_THREADS set

Only the standard library is imported before the clock starts, so "start-up" is the
tool's own ``import`` → model load → first embedding.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Embed = Callable[[Sequence[str]], Any]
"""Texts → the tool's own result (array or list): converting it is not timed."""
EmbedOne = Callable[[str], Any]
Loaded = tuple[Embed, EmbedOne, str]
"""(embed a list, embed one text, version)"""

ONNX_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def peak_rss_mb() -> float:
    """VmHWM, this process image's peak resident set (ru_maxrss would count what the parent had at the fork)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def load_embellama(job: dict[str, Any], marks: dict[str, float]) -> Loaded:
    import embellama
    from embellama import EmbeddingModel, ModelConfig

    marks["import"] = time.perf_counter()
    extra: dict[str, Any] = {"max_tokens": job["max_len"]} if job["set_max_tokens"] else {}
    if job.get("compute_type"):
        extra["compute_type"] = job["compute_type"]
    model = EmbeddingModel(ModelConfig(model_path=job["model"], n_threads=job["threads"], **extra)).load()
    return lambda texts: model.embed_batch(texts, show_progress_bar=False), model.embed, embellama.__version__


def load_llama_cpp_python(job: dict[str, Any], marks: dict[str, float]) -> Loaded:
    import llama_cpp

    marks["import"] = time.perf_counter()
    n = job["n_ctx"]
    llm = llama_cpp.Llama(
        model_path=job["model"],
        embedding=True,
        n_ctx=n,
        n_batch=n,
        n_ubatch=n,
        n_threads=job["threads"],
        n_threads_batch=job["threads"],
        flash_attn=True,
        verbose=False,
    )
    return (lambda texts: llm.embed(list(texts))), (lambda text: llm.embed(text)), llama_cpp.__version__


def load_sentence_transformers(job: dict[str, Any], marks: dict[str, float]) -> Loaded:
    import sentence_transformers
    import torch

    marks["import"] = time.perf_counter()
    torch.set_num_threads(job["threads"])
    st = sentence_transformers.SentenceTransformer(job["hf_dir"], device="cpu")
    st.max_seq_length = job["max_len"]

    def embed(texts: Sequence[str]) -> Any:
        return st.encode(list(texts), batch_size=64, normalize_embeddings=True)

    def one(text: str) -> Any:
        return st.encode(text, normalize_embeddings=True)

    return embed, one, f"{sentence_transformers.__version__} + torch {torch.__version__}"


def load_onnxruntime(job: dict[str, Any], marks: dict[str, float]) -> Loaded:
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    marks["import"] = time.perf_counter()
    folder = Path(job["onnx_dir"])
    options = ort.SessionOptions()
    options.intra_op_num_threads = job["threads"]
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(job["max_len"])
    tokenizer.no_padding()  # the export's tokenizer.json may pad to a fixed length: batches pad themselves below

    def forward(encoded: list[Any]) -> Any:
        # One batch padded to its longest member, as sentence-transformers and fastembed do.
        width = max(len(e.ids) for e in encoded)
        ids = np.zeros((len(encoded), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, e in enumerate(encoded):  # per text, not per token
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = session.run(["last_hidden_state"], feeds)[0]
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    def embed(texts: Sequence[str]) -> Any:
        # Its best configuration: tokenized once, sorted by token count, batches of 64 padded to their longest.
        encoded = tokenizer.encode_batch(list(texts))
        order = sorted(range(len(texts)), key=lambda i: -len(encoded[i].ids))
        out = np.empty((len(texts), 384), dtype=np.float32)
        for start in range(0, len(order), 64):
            chunk = order[start : start + 64]
            out[chunk] = forward([encoded[i] for i in chunk])
        return out

    return embed, lambda text: forward([tokenizer.encode(text)])[0], ort.__version__


def load_fastembed(job: dict[str, Any], marks: dict[str, float]) -> Loaded:
    import fastembed

    marks["import"] = time.perf_counter()
    model = fastembed.TextEmbedding(
        "sentence-transformers/all-MiniLM-L6-v2", specific_model_path=job["onnx_dir"], threads=job["threads"]
    )
    return (
        lambda texts: list(model.embed(list(texts), batch_size=256)),
        lambda text: next(iter(model.embed([text]))),
        fastembed.__version__,
    )


LOADERS: dict[str, Callable[[dict[str, Any], dict[str, float]], Loaded]] = {
    "embellama": load_embellama,
    "llama-cpp-python": load_llama_cpp_python,
    "sentence-transformers": load_sentence_transformers,
    "onnxruntime": load_onnxruntime,
    "fastembed": load_fastembed,
}


def run(job_file: str) -> None:
    job = json.loads(Path(job_file).read_text(encoding="utf-8"))
    texts: list[str] = json.loads(Path(job["texts"]).read_text(encoding="utf-8"))
    probe = Path(job["probe"]).read_text(encoding="utf-8").strip()
    latency_texts: list[str] = json.loads(Path(job["latency"]).read_text(encoding="utf-8")) if job["latency"] else []
    marks: dict[str, float] = {}
    t0 = time.perf_counter()
    embed, one, version = LOADERS[job["kind"]](job, marks)
    t_load = time.perf_counter()
    one(probe)
    t_first = time.perf_counter()
    vectors = embed(texts)
    t_done = time.perf_counter()
    latencies = []
    for text in latency_texts:
        started = time.perf_counter()
        one(text)
        latencies.append(time.perf_counter() - started)
    result: dict[str, Any] = {
        "embed_s": t_done - t_first,
        "startup_s": t_first - t0,
        "import_s": marks["import"] - t0,
        "load_s": t_load - marks["import"],
        "first_s": t_first - t_load,
        "rss_mb": peak_rss_mb(),
        "version": version,
    }
    if latencies:
        import statistics

        cuts = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else latencies * 19
        result["latency_ms_median"] = statistics.median(latencies) * 1e3
        result["latency_ms_p95"] = cuts[18] * 1e3
    if job["save"]:
        import numpy as np

        np.save(job["save"], np.asarray([np.asarray(v, dtype=np.float32) for v in vectors]))
    Path(job["result"]).write_text(json.dumps(result), encoding="utf-8")


def export_onnx(hf_dir: str, out_dir: str) -> None:
    """all-MiniLM-L6-v2 as fp32 ONNX (last_hidden_state), with its tokenizer files beside it."""
    import torch
    from transformers import AutoModel

    class Positional(torch.nn.Module):  # transformers 5's BertModel.forward wants keyword arguments
        def __init__(self, bert: torch.nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return out.last_hidden_state

    src, dst = Path(hf_dir), Path(out_dir)
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    bert = AutoModel.from_pretrained(str(src)).eval()
    example = torch.ones((2, 16), dtype=torch.int64)
    axes = {0: "batch", 1: "sequence"}
    torch.onnx.export(
        Positional(bert),
        (example, example, torch.zeros_like(example)),
        str(tmp / "model.onnx"),
        input_names=["input_ids", "attention_mask", "token_type_ids"],
        output_names=["last_hidden_state"],
        dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes, "last_hidden_state": axes},
        opset_version=17,
        dynamo=False,
    )
    for name in ONNX_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, tmp / name)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.replace(dst)


def ceiling(n_embd: int, n_ff: int, tokens: int, repeats: int = 20) -> None:
    """Print JSON: numpy's import time and its fp32 matrix-multiply rate on a layer's shapes.

    numpy's own BLAS (OpenBLAS in its wheels), on as many threads as OPENBLAS_NUM_THREADS,
    multiplies ``tokens`` rows by the weights of one encoder layer: Q/K/V/O (``n_embd`` x
    ``n_embd``), FFN up (``n_embd`` x ``n_ff``) and down (``n_ff`` x ``n_embd``). Best of
    ``repeats`` per shape, FLOP-weighted: what a tuned fp32 GEMM does on these cores.
    """
    t0 = time.perf_counter()
    import numpy as np

    import_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    shapes = [(n_embd, n_embd)] * 4 + [(n_embd, n_ff), (n_ff, n_embd)]
    flops = seconds = 0.0
    for k, n in shapes:
        a = rng.standard_normal((tokens, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        out = np.empty((tokens, n), dtype=np.float32)
        np.matmul(a, b, out=out)  # warm
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            np.matmul(a, b, out=out)
            best = min(best, time.perf_counter() - started)
        flops += 2.0 * tokens * k * n
        seconds += best
    print(json.dumps({"numpy_import_s": import_s, "sgemm_gflops": flops / seconds / 1e9, "numpy": np.__version__}))


if __name__ == "__main__":
    if sys.argv[1] == "run":
        run(sys.argv[2])
    elif sys.argv[1] == "ceiling":
        ceiling(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    elif sys.argv[1] == "export-onnx":
        export_onnx(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(__doc__)
