# SPDX-License-Identifier: Apache-2.0
"""``embellama embed --output-kind sparse|multi``: sparse vectors and ColBERT token vectors as JSON or JSON lines."""

from __future__ import annotations

import argparse
import json
from typing import IO, Any

from embellama._cli.common import deliver
from embellama._config import ModelConfig
from embellama._exceptions import ConfigurationError
from embellama._models.multivector import MultiVectorEncoder
from embellama._models.sparse import SparseEmbedding, SparseEncoder

__all__ = ["OUTPUT_KINDS", "embed_heads"]

OUTPUT_KINDS = ("dense", "sparse", "multi")
"""``--output-kind``: one vector per text (the model's pooling), sparse vectors, or token vectors (ColBERT)."""


def _row(kind: str, value: Any) -> dict[str, Any]:
    if kind == "sparse":
        assert isinstance(value, SparseEmbedding)
        return {"indices": value.indices.tolist(), "values": value.values.tolist()}
    return {"embedding": value.tolist()}


def embed_heads(args: argparse.Namespace, fmt: str, texts: list[str], config: ModelConfig) -> int:
    """Write the sparse or multi-vector output of ``texts`` (``fmt`` json or jsonl), ``--chunk-size`` at a time.

    json: ``{"model": ..., "embeddings": [{"indices": [...], "values": [...]} | [[...], ...]]}``;
    jsonl: one ``{"text": ..., "indices": ..., "values": ...}`` or ``{"text": ..., "embedding": [[...]]}`` a line.
    """
    kind = args.output_kind
    if fmt not in ("json", "jsonl"):
        raise ConfigurationError(
            f"--output-kind {kind} gives a ragged output, which {fmt} cannot hold; use json or jsonl"
        )
    encoder: SparseEncoder | MultiVectorEncoder = (
        SparseEncoder(config) if kind == "sparse" else MultiVectorEncoder(config)
    )
    prompts = {"prompt_name": args.prompt_name, "prompt": args.prompt}
    size = max(1, int(args.chunk_size))

    def write(f: IO[str]) -> None:
        if fmt == "json":
            f.write(f'{{"model": {json.dumps(encoder.name)}, "embeddings": [')
        first = True
        for start in range(0, len(texts), size):
            part = texts[start : start + size]
            values = encoder.encode_document(part, **prompts)
            for text, value in zip(part, values, strict=True):
                row = _row(kind, value)
                if fmt == "json":
                    f.write(("" if first else ", ") + json.dumps(row if kind == "sparse" else row["embedding"]))
                else:
                    f.write(json.dumps({"text": text, **row}, ensure_ascii=False) + "\n")
                first = False
        if fmt == "json":
            f.write("]}\n")

    with encoder:
        deliver(args.output, write)
    return 0
