# SPDX-License-Identifier: Apache-2.0
"""``embellama serve``: the models and settings from the command line and ``--config``, handed to the server."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from embellama._cli.common import Subparsers
from embellama._config import EngineConfig, ModelConfig
from embellama._exceptions import ConfigurationError
from embellama._gguf import convert as gguf_convert
from embellama._hub.reference import is_reference
from embellama._models import resolve_config

__all__ = ["add_parsers", "serve_command", "serve_configs"]


def serve_configs(args: argparse.Namespace) -> tuple[list[ModelConfig], dict[str, Any]]:
    """The models to serve (files on the command line, then --config's) and the config file's other settings."""
    settings: dict[str, Any] = {}
    configs: list[ModelConfig] = []
    names = list(args.model_name or [])
    if len(names) > len(args.models):
        raise ConfigurationError(f"{len(names)} --model-name for {len(args.models)} model file(s)")
    for i, path in enumerate(args.models):
        configs.append(
            ModelConfig(
                model_path=path,
                model_name=names[i] if i < len(names) else None,
                pooling=args.pooling,
                normalize=not args.no_normalize,
                n_threads=args.threads,
                n_gpu_layers=args.gpu_layers,
                compute_type=args.compute_type,
                truncate=not args.no_truncate,
            )
        )
    if args.config is not None:
        with open(args.config, encoding="utf-8") as f:
            try:
                settings = json.load(f)
            except ValueError as exc:
                raise ConfigurationError(f"{args.config}: not valid JSON ({exc})") from None
        if not isinstance(settings, dict) or not isinstance(settings.get("models", []), list):
            raise ConfigurationError(f'{args.config}: expected {{"models": [{{"model_path": ...}}, ...], ...}}')
        base = Path(args.config).resolve().parent
        for entry in settings.get("models", []):
            if not isinstance(entry, dict) or "model_path" not in entry:
                raise ConfigurationError(f"{args.config}: each model needs a 'model_path', got {entry!r}")
            entry = dict(entry)
            if not is_reference(entry["model_path"]):  # an hf:// reference is no file beside the config
                path = Path(entry["model_path"]).expanduser()
                entry["model_path"] = path if path.is_absolute() else base / path
            try:
                configs.append(ModelConfig(**entry))
            except TypeError as exc:
                raise ConfigurationError(f"{args.config}: {exc}") from None
    if not configs:
        raise ConfigurationError("no model to serve: give GGUF files, or --config FILE")
    # hf:// references: their files from the Hugging Face cache (downloaded if missing) before the server starts
    return [resolve_config(c) for c in configs], settings


def serve_command(args: argparse.Namespace) -> int:
    """``embellama serve``: serve until SIGTERM or SIGINT (the server needs the extra embellama[server])."""
    try:
        from embellama._server import (  # starlette and uvicorn: the optional extra embellama[server]
            ServerLimits,
            serve,
        )
    except ImportError as exc:
        raise ConfigurationError(
            f"embellama serve needs the server extra ({exc}): pip install 'embellama[server]'"
        ) from None

    configs, settings = serve_configs(args)
    engine = dict(settings.get("engine", {}))
    for key, value in (
        ("workers_per_model", args.workers),
        ("max_pending", args.max_pending),
        ("max_batch_texts", args.max_batch_texts),
        ("max_batch_wait_ms", args.max_batch_wait_ms),
        ("cache_size", args.cache_size),
    ):
        if value is not None:
            engine[key] = value
    engine.setdefault("max_pending", 1024)
    try:
        engine_config = EngineConfig(**engine)
    except TypeError as exc:
        raise ConfigurationError(f"engine settings: {exc}") from None
    limits = ServerLimits(max_body_bytes=args.max_body_bytes, max_inputs=args.max_inputs, retry_after=args.retry_after)
    api_key = args.api_key if args.api_key is not None else os.environ.get("EMBELLAMA_API_KEY") or None

    def ready(url: str) -> None:
        print(f"embellama serve: listening on {url} (models: {', '.join(c.name for c in configs)})", flush=True)

    return serve(
        configs,
        host=args.host,
        port=args.port,
        api_key=api_key,
        engine_config=engine_config,
        limits=limits,
        graceful_timeout=args.graceful_timeout,
        keep_alive=args.keep_alive,
        ready=ready,
    )


def add_parsers(sub: Subparsers) -> None:
    """The ``serve`` subcommand."""
    srv = sub.add_parser(
        "serve",
        help=(
            "serve models over HTTP: OpenAI-compatible /v1/embeddings, /v1/rerank, /v1/models, /health; "
            "TEI's /embed, /rerank, /tokenize; Ollama's /api/embed; llama-server's /tokenize (needs embellama[server])"
        ),
    )
    srv.add_argument("models", nargs="*", type=Path, help="GGUF model files (the first is the default model)")
    srv.add_argument("--model-name", action="append", help="name of the n-th model file (repeat; default: its stem)")
    srv.add_argument(
        "--config", help='JSON file: {"models": [{"model_path": ..., ModelConfig fields}], "engine": {...}}'
    )
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    srv.add_argument("--port", type=int, default=8080, help="port (default 8080; 0: a free one, printed)")
    srv.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (default: $EMBELLAMA_API_KEY)")
    srv.add_argument("--workers", type=int, help="copies of each model, each on its own thread (default 1)")
    srv.add_argument(
        "--max-pending", type=int, help="requests queued or running before 503 + Retry-After (default 1024)"
    )
    srv.add_argument("--max-batch-texts", type=int, help="dynamic batching: most texts per joined call (0: one call)")
    srv.add_argument("--max-batch-wait-ms", type=float, help="dynamic batching: wait for more requests (default 0)")
    srv.add_argument("--cache-size", type=int, help="LRU cache of single-text embeddings (default 0: off)")
    srv.add_argument("--max-inputs", type=int, default=2048, help="most inputs per request (default 2048)")
    srv.add_argument("--max-body-bytes", type=int, default=16 * 2**20, help="largest request body (default 16 MiB)")
    srv.add_argument("--retry-after", type=int, default=1, help="Retry-After seconds on 503 (default 1)")
    srv.add_argument(
        "--graceful-timeout", type=float, default=30.0, help="seconds to finish running requests on SIGTERM"
    )
    srv.add_argument("--keep-alive", type=int, default=75, help="seconds idle connections stay open (default 75)")
    srv.add_argument("--pooling", help="mean, cls, max, mean_sqrt or last (default: the model's)")
    srv.add_argument("--no-normalize", action="store_true", help="skip L2 normalization")
    srv.add_argument("--no-truncate", action="store_true", help="refuse over-long inputs (400) instead of cutting")
    srv.add_argument("--threads", type=int, help="CPU threads per model copy")
    srv.add_argument("--gpu-layers", type=int, default=-1, help="layers to offload (-1: all)")
    srv.add_argument("--compute-type", default="auto", choices=gguf_convert.COMPUTE_TYPES, help="weight type")
    srv.set_defaults(func=serve_command)
