# SPDX-License-Identifier: Apache-2.0
"""``embellama embed`` (texts to JSON, JSON lines, CSV or .npy, chunk by chunk) and ``embellama demo``."""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from embellama._cli.common import (
    FORMATS,
    Subparsers,
    add_io_options,
    add_run_options,
    deliver,
    model_config,
    output_format,
    read_texts,
    whole_file,
)
from embellama._cli.heads import OUTPUT_KINDS, embed_heads
from embellama._compute import output as compute_output
from embellama._config import PoolingStrategy
from embellama._exceptions import ConfigurationError
from embellama._models import EmbeddingModel
from embellama._native import load_library

__all__ = ["DEMO_SENTENCES", "add_parsers", "demo_command", "embed_command"]

DEMO_SENTENCES = [
    "A man is playing a guitar.",
    "Someone is playing an instrument.",
    "A woman is slicing an onion.",
    "A chef is chopping vegetables in the kitchen.",
    "The stock market fell sharply today.",
]


def embed_command(args: argparse.Namespace) -> int:
    """``embellama embed``."""
    fmt = output_format(args)
    texts = read_texts(args)
    config = model_config(args)
    if getattr(args, "output_kind", "dense") != "dense":  # sparse or ColBERT token vectors: _cli/heads
        if args.task is not None or config.lora:
            raise ConfigurationError(f"--task and --lora apply to dense vectors, not --output-kind {args.output_kind}")
        return embed_heads(args, fmt, texts, config)
    if fmt in ("npy", "csv") and config.pooling is PoolingStrategy.NONE:
        raise ConfigurationError(
            f"--pooling none gives one vector per token, which {fmt} cannot hold; use json or jsonl"
        )
    with EmbeddingModel(config) as model:
        prompts = {"prompt_name": args.prompt_name, "prompt": args.prompt, "task": args.task}
        if config.precision in ("int8", "uint8"):  # calibrated on every text together, as one batch
            whole = model.embed_batch(texts, show_progress_bar=args.progress, **prompts)
            chunks: Iterator[Any] = iter([whole])
        else:
            chunks = model.embed_iter(texts, chunk_size=args.chunk_size, show_progress_bar=args.progress, **prompts)
        if fmt == "npy":
            with whole_file(args.output) as part:
                write_embeddings(fmt, None, part, model, texts, chunks)
        else:
            deliver(args.output, lambda f: write_embeddings(fmt, f, None, model, texts, chunks))
    return 0


def write_embeddings(
    fmt: str, f: IO[str] | None, path: Path | None, model: EmbeddingModel, texts: list[str], chunks: Iterator[Any]
) -> None:
    """Write the embeddings chunk by chunk: only one chunk of vectors is in memory at a time."""
    cfg = model.config
    dim = compute_output.output_width(model.embedding_dimensions, cfg.truncate_dim, cfg.precision)
    dtype = {"float32": np.float32, "int8": np.int8, "binary": np.int8}.get(cfg.precision, np.uint8)
    if fmt == "npy":
        assert path is not None
        if not texts:
            with open(path, "wb") as empty:
                np.save(empty, np.empty((0, dim), dtype))
            return
        array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(len(texts), dim))
        start = 0
        for vectors in chunks:
            array[start : start + len(vectors)] = vectors
            start += len(vectors)
        array.flush()
        del array
        return
    assert f is not None
    rows = (row for vectors in chunks for row in vectors)
    if fmt == "json":
        f.write(f'{{"model": {json.dumps(model.name)}, "embeddings": [')
        for i, row in enumerate(rows):
            f.write((", " if i else "") + json.dumps(row.tolist()))
        f.write("]}\n")
    elif fmt == "jsonl":
        for text, row in zip(texts, rows, strict=True):
            f.write(json.dumps({"text": text, "embedding": row.tolist()}, ensure_ascii=False) + "\n")
    else:
        writer = csv.writer(f)
        writer.writerow(["text", *(f"dim_{i}" for i in range(dim))])
        for text, row in zip(texts, rows, strict=True):
            writer.writerow([text, *(repr(x.item()) for x in row)])


def demo_command(args: argparse.Namespace) -> int:
    """``embellama demo``: embed a few sentences and print their similarities."""
    sentences = list(args.text) or DEMO_SENTENCES
    if args.pooling is not None and PoolingStrategy.parse(args.pooling) is PoolingStrategy.NONE:
        raise ConfigurationError(
            "demo compares one vector per sentence; --pooling none gives one per token "
            "(use mean, cls, max, mean_sqrt or last, or 'embellama embed --pooling none')"
        )
    started = time.perf_counter()
    with EmbeddingModel(model_config(args)) as model:
        loaded = time.perf_counter()
        vectors = model.embed_batch(sentences)
        done = time.perf_counter()
        print(
            f"model: {model.name} ({model.model.description}), {model.embedding_dimensions} dims, "
            f"pooling {model.pooling.value}"
        )
    lib = load_library()
    print(f"libllama {lib.version} ({lib.backend}) from {lib.path}")
    print(f"loaded in {loaded - started:.2f} s, embedded {len(sentences)} sentences in {(done - loaded) * 1000:.1f} ms")
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = vectors @ vectors.T
    print("\ncosine similarity:")
    for i, text in enumerate(sentences):
        row = "  ".join(f"{s:5.2f}" for s in sims[i])
        print(f"  [{i}] {row}   {text}")
    print()
    for i in range(len(sentences)):
        j = int(np.argsort(-sims[i])[1])
        print(f"  closest to [{i}] is [{j}] ({sims[i, j]:.2f}): {sentences[j]}")
    return 0


def add_parsers(sub: Subparsers) -> None:
    """The ``embed`` and ``demo`` subcommands."""
    for name, func, help_text in (
        (
            "embed",
            embed_command,
            "embed texts (arguments, --input FILE or stdin lines) into JSON on stdout, or .npy, .jsonl or .csv",
        ),
        ("demo", demo_command, "embed a few sentences and print their similarities"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("model", type=Path, help="GGUF model file")
        p.add_argument("text", nargs="*", help="texts (default: stdin lines for embed, examples for demo)")
        if name == "embed":
            add_io_options(p, "text", FORMATS, ".npy (float32 rows), .jsonl, .csv or .json")
            p.add_argument("--chunk-size", type=int, default=1024, help="texts embedded and written at a time")
            p.add_argument("--prompt-name", help="prepend the model's prompt of this name (see 'embellama prompts')")
            p.add_argument("--prompt", help="prepend this text to every text (wins over --prompt-name)")
            p.add_argument("--truncate-dim", type=int, help="keep the first N dimensions (cut before normalizing)")
            p.add_argument(
                "--lora",
                action="append",
                metavar="ADAPTER",
                help="a LoRA adapter GGUF or hf:// reference (repeatable; see the guide's LoRA page)",
            )
            p.add_argument("--task", help="the LoRA task to run with (its adapter and prompt), e.g. retrieval.query")
            p.add_argument(
                "--output-kind",
                default="dense",
                choices=OUTPUT_KINDS,
                help="sparse (SPLADE, bge-m3) or multi (ColBERT token vectors); needs the model's .heads.npz",
            )
            p.add_argument(
                "--precision",
                default="float32",
                choices=compute_output.PRECISIONS,
                help="output type (int8/uint8: ranges from all the texts; binary kinds: 8 dimensions a byte)",
            )
        p.add_argument("--pooling", help="mean, cls, max, mean_sqrt, last or none (default: the model's)")
        p.add_argument("--no-normalize", action="store_true", help="skip L2 normalization")
        add_run_options(p)
        p.set_defaults(func=func)
