# SPDX-License-Identifier: Apache-2.0
"""``embellama rerank``: rank documents by a reranker's score for a query, printed best first."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import IO, Any

import numpy as np

from embellama._cli.common import (
    RERANK_FORMATS,
    Subparsers,
    add_io_options,
    add_run_options,
    deliver,
    model_config,
    output_format,
    positive_int,
    read_texts,
)
from embellama._exceptions import ConfigurationError
from embellama._models import ACTIVATIONS, Reranker, is_reranker
from embellama.llama import Model

__all__ = ["add_parsers", "rerank_command", "write_ranking"]


def rerank_command(args: argparse.Namespace) -> int:
    """``embellama rerank``."""
    fmt = output_format(args, RERANK_FORMATS)
    documents = read_texts(args, "documents")
    if not documents:
        raise ConfigurationError("no documents to rank (blank lines are skipped)")
    config = model_config(args)
    if not is_reranker(config):
        with Model(config.model_path, vocab_only=True):  # a missing or broken file: its own error
            pass
        raise ConfigurationError(
            f"{config.model_path} is not a reranker: it has no classification head to score pairs with "
            "(embed with it: 'embellama embed'; 'embellama info' tells the two apart)"
        )
    with Reranker(config) as reranker:
        if reranker.num_labels != 1:
            raise ConfigurationError(
                f"model {reranker.name!r} has {reranker.num_labels} outputs per pair ({', '.join(reranker.labels)}); "
                "rerank needs a model with one relevance score"
            )
        ranked = reranker.rank(
            args.query,
            documents,
            top_k=args.top_k,
            return_documents=args.return_documents,
            activation=args.activation,
            show_progress_bar=args.progress,
        )
        name = reranker.name
    # float32 scores printed in their shortest form (reads back as the same float32)
    rows = [{"index": r["corpus_id"], "score": float(str(np.float32(r["score"])))} for r in ranked]
    if args.return_documents:
        for row, r in zip(rows, ranked, strict=True):
            row["text"] = r["text"]
    deliver(args.output, lambda f: write_ranking(fmt, f, name, args.query, rows))
    return 0


def write_ranking(fmt: str, f: IO[str], model: str, query: str, rows: list[dict[str, Any]]) -> None:
    """The ranked documents, best first: ``index`` (the document's position among those read), ``score`` and,
    when asked, ``text``."""
    if fmt == "json":
        f.write(json.dumps({"model": model, "query": query, "results": rows}, ensure_ascii=False) + "\n")
    elif fmt == "jsonl":
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    else:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n") if fmt == "tsv" else csv.writer(f)
        writer.writerow(list(rows[0]) if rows else ["index", "score"])
        for row in rows:
            writer.writerow(row.values())


def add_parsers(sub: Subparsers) -> None:
    """The ``rerank`` subcommand."""
    rerank = sub.add_parser(
        "rerank", help="rank documents (arguments, --input FILE or stdin lines) by a reranker's score for --query"
    )
    rerank.add_argument("model", type=Path, help="GGUF file of a reranker (cross-encoder)")
    rerank.add_argument("text", nargs="*", metavar="DOCUMENT", help="documents (default: stdin lines)")
    rerank.add_argument("-q", "--query", required=True, help="the query the documents are scored for")
    add_io_options(rerank, "document", RERANK_FORMATS, ".json, .jsonl, .csv or .tsv")
    rerank.add_argument("--top-k", type=positive_int, help="print only the best K documents (default: all)")
    rerank.add_argument("--return-documents", action="store_true", help="print each document's text too")
    rerank.add_argument(
        "--activation",
        choices=ACTIVATIONS,
        help="applied to the scores (default: the model's, else sigmoid; identity: the raw logits)",
    )
    add_run_options(rerank)
    rerank.set_defaults(func=rerank_command)
