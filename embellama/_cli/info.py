# SPDX-License-Identifier: Apache-2.0
"""``embellama doctor`` (which libllama, its backend and devices) and ``embellama info`` (what a GGUF holds)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from embellama._cli.common import Subparsers
from embellama._compute import prompts as _prompts
from embellama._config import ModelConfig
from embellama._exceptions import ConfigurationError
from embellama._gguf import convert as gguf_convert
from embellama._gguf import known as _known
from embellama._gguf.known import KnownModel
from embellama._models import Reranker, is_reranker, resolve_config
from embellama._native import load_library
from embellama._version import __version__
from embellama.llama import Model

__all__ = ["add_doctor_parser", "add_info_parser", "doctor_command", "info_command"]


def doctor_command(args: argparse.Namespace) -> int:
    """``embellama doctor``."""
    lib = load_library(args.lib)
    manifest = lib.manifest or {}
    report: dict[str, Any] = {
        "embellama_version": __version__,
        "library": str(lib.path),
        "found_by": lib.source,
        "llama_version": lib.version,
        "llama_cpp_commit": lib.commit,
        "backend": lib.backend,
        "portable": manifest.get("portable"),
        "cpu_variant": lib.cpu_variant,
        "cpu_variants_shipped": manifest.get("cpu_variants") or [],
        "gpu_offload": lib.supports_gpu_offload(),
        "abi_check": "manifest layout + defaults" if lib.manifest else "defaults only (no manifest)",
        "devices": lib.devices(),
        "system_info": lib.system_info(),
        "warnings": lib.warnings,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for key, value in report.items():
        if key == "devices":
            print("devices:")
            for dev in value:
                mem = dev["memory_total"] / 2**30
                print(f"  - {dev['name']} ({dev['type']}): {dev['description']}, {mem:.1f} GiB")
        elif key == "warnings":
            continue  # already logged by the loader
        else:
            print(f"{key}: {value}")
    return 0


def pooling_used(model: Model, reranker: bool = False) -> str:
    """The pooling EmbeddingModel picks for the file by default, and why."""
    named = model.pooling_type
    if reranker or named == "rank":
        return "rank: a reranker (score pairs with 'embellama rerank'; pass --pooling to embed with it anyway)"
    if named in ("mean", "cls", "last"):
        return f"{named} (from the GGUF metadata)"
    fallback = "last" if model.is_causal else "mean"
    return f"{fallback} (the GGUF names none)"


def reranker_info(path: Path) -> dict[str, Any] | None:
    """A reranker's head: labels, default activation, exact token types (None for an embedding model)."""
    config = ModelConfig(model_path=path, n_gpu_layers=0, n_threads=1, compute_type="off")
    if not is_reranker(config):
        return None
    try:
        with Reranker(config) as reranker:
            return {
                "labels": list(reranker.labels),
                "activation": reranker.activation,
                "exact_token_types": reranker.exact_token_types,
            }
    except ConfigurationError as exc:  # a rank-pooling GGUF that Reranker cannot score (a decoder...)
        return {"unusable": str(exc)}


def describe_reranker(info: dict[str, Any] | None) -> str:
    """``info``'s line about the reranker head."""
    if info is None:
        return "no (an embedding model)"
    if "unusable" in info:
        return f"yes, but embellama cannot score with it: {info['unusable']}"
    types = (
        "exact token types"
        if info["exact_token_types"]
        else "token types NOT exact (re-convert with 'embellama convert' for the model's scores)"
    )
    return f"yes: labels {', '.join(info['labels'])}; default activation {info['activation']}; {types}"


def info_command(args: argparse.Namespace) -> int:
    """``embellama info``."""
    # An hf:// reference: the file in the Hugging Face cache (downloaded if missing and allowed).
    path = Path(resolve_config(ModelConfig(model_path=args.model)).model_path)
    reranker = reranker_info(path)  # None for an embedding model, and for a file that Model then refuses
    with Model(path, n_gpu_layers=0) as model:
        ftypes = {code: name.upper() for name, code in gguf_convert.FTYPE_CODES.items()}
        report: dict[str, Any] = {
            "path": str(path),
            "name": model.metadata_value("general.name") or path.stem,
            "architecture": model.architecture,
            "description": model.description,
            "weight_type": ftypes.get(model.ftype, model.description.split(" ", 2)[-1]),
            "parameters": model.n_params,
            "size": model.size,
            "file_size": path.stat().st_size,
            "embedding_dimensions": model.n_embd,
            "context_length": model.n_ctx_train,
            "layers": model.n_layer,
            "vocabulary": model.n_vocab,
            "tokenizer": model.vocab_type,
            "causal_attention": model.is_causal,
            "pooling": pooling_used(model, reranker is not None),
            "reranker": reranker,
            "known_model": None,
            "metadata": dict(sorted(model.metadata().items())),
        }
        entry = _known.match(
            model.metadata(),
            kind="reranker" if reranker is not None else "embedding",
            tokenizer_hash=lambda: _known.tokenizer_sha256(path),
        )
        report["known_model"] = known_summary(entry)
        if args.check:
            report["warnings"] = check_warnings(model, entry, reranker is not None)
    failed = 1 if report.get("warnings") else 0
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return failed
    for key, value in report.items():
        if key == "known_model":
            print(f"{key}: {describe_known(value)}")
        elif key == "warnings":
            print("check: " + ("no problems found" if not value else f"{len(value)} warning(s)"))
            for line in value:
                print(f"  warning: {line}")
        elif key == "metadata":
            print("metadata:")
            for name, text in value.items():
                text = text if len(text) <= 100 else text[:97] + "..."
                print(f"  {name} = {text}")
        elif key in ("size", "file_size"):
            print(f"{key}: {value} bytes ({value / 2**20:.1f} MiB)")
        elif key == "parameters":
            print(f"{key}: {value} ({value / 1e6:.1f} M)")
        elif key == "reranker":
            print(f"{key}: {describe_reranker(value)}")
        else:
            print(f"{key}: {value}")
    return failed


def known_summary(entry: KnownModel | None) -> dict[str, Any] | None:
    """What ``info`` says of the known-model entry a GGUF matched (None: none)."""
    if entry is None:
        return None
    data = entry.as_dict()
    keep = ("id", "matched_by", "origin", "kind", "prompts", "default_prompt_name", "similarity_fn_name",
            "matryoshka_dims", "normalization", "max_seq_length", "rope", "notes", "source")  # fmt: skip
    return {key: data[key] for key in keep}


def describe_known(value: dict[str, Any] | None) -> str:
    """``info``'s line about the known-model entry."""
    if value is None:
        return "none (no entry of the known-model table names this file; prompts and similarity are the GGUF's)"
    parts = [f"{value['id']} (matched by {value['matched_by']})"]
    if value["prompts"]:
        parts.append("prompts " + ", ".join(f"{k}={v!r}" for k, v in value["prompts"].items()))
    if value["similarity_fn_name"]:
        parts.append(f"similarity {value['similarity_fn_name']}")
    if value["matryoshka_dims"]:
        parts.append("Matryoshka " + "/".join(map(str, value["matryoshka_dims"])))
    if value["rope"]:
        parts.append(f"rope beyond the training context {value['rope']}")
    return "; ".join(parts)


def check_warnings(model: Model, entry: KnownModel | None, reranker: bool) -> list[str]:
    """``info --check``: what in the GGUF makes embeddings differ from the model's own."""
    found = []
    metadata = model.metadata()
    for token in ("bos", "eos"):
        if f"tokenizer.ggml.{token}_token_id" not in metadata:
            found.append(
                f"no {token.upper()} token (tokenizer.ggml.{token}_token_id): llama.cpp guesses it from the "
                "vocabulary type, which may not be the model's; re-convert with a current convert_hf_to_gguf.py"
            )
    special = model.special_tokens
    if model.is_causal and not special.suffix:
        found.append(
            "a causal model whose tokenizer appends no EOS (tokenizer.ggml.add_eos_token): last-token pooling "
            "then reads the text's last word, not the EOS the model was trained to summarize into"
        )
    if f"{model.architecture}.pooling_type" not in metadata and not reranker:
        fallback = "last" if model.is_causal else "mean"
        found.append(
            f"no pooling type ({model.architecture}.pooling_type): EmbeddingModel falls back to {fallback}; pass "
            "ModelConfig(pooling=...) with the model's own (its 1_Pooling/config.json)"
        )
    if entry is not None and entry.needs_prompts and _prompts.PROMPTS_KEY not in metadata:
        found.append(
            f"{entry.id} was trained with prompts and the GGUF carries none: embellama takes them from its "
            "known-model table, other tools do not (write them in with 'embellama prompts FILE --set NAME=TEXT')"
        )
    return found


def add_doctor_parser(sub: Subparsers) -> None:
    """The ``doctor`` subcommand."""
    doctor = sub.add_parser("doctor", help="show which libllama is used, its backend and devices")
    doctor.add_argument("--json", action="store_true", help="print JSON")
    doctor.set_defaults(func=doctor_command)


def add_info_parser(sub: Subparsers) -> None:
    """The ``info`` subcommand."""
    info = sub.add_parser("info", help="show a GGUF model's metadata, dimensions, pooling and size")
    info.add_argument("model", type=Path, help="GGUF model file, or an hf:// reference to one")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.add_argument(
        "--check",
        action="store_true",
        help="warn about what makes the GGUF embed differently from the model (missing BOS/EOS or pooling type, "
        "no prompts for a model trained with them); exit status 1 when there is a warning",
    )
    info.set_defaults(func=info_command)
