# SPDX-License-Identifier: Apache-2.0
"""Run embellama calls in a child process, so a test can prove that none kills the interpreter.

The parent sends one JSON request per line; the child answers one JSON line per request:
``{"ok": true, ...}`` or ``{"ok": false, "error": "ConfigurationError", "message": ...}``.
If the child dies (a ``GGML_ASSERT`` aborts it, a segfault) or stops answering, the parent's
:meth:`Child.call` raises :class:`ChildDied` / :class:`ChildHung` naming the request, and the
next call starts a fresh child.

    python tests/support/child.py   # the child side: serve requests from stdin
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _pack(value: Any) -> Any:
    """Strings with surrogates travel as code points: JSON would join an escaped pair into one character."""
    if isinstance(value, str):
        if any("\ud800" <= c <= "\udfff" for c in value):
            return {"codepoints": [ord(c) for c in value]}
        return value
    if isinstance(value, dict):
        return {k: _pack(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_pack(v) for v in value]
    return value


def _unpack(obj: dict[str, Any]) -> Any:
    if set(obj) == {"codepoints"}:
        return "".join(map(chr, obj["codepoints"]))
    return obj


class ChildDied(AssertionError):
    """The child process ended while handling a request (e.g. killed by SIGABRT)."""


class ChildHung(AssertionError):
    """The child process did not answer a request in time."""


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


class Child:
    """One long-lived child process that serves requests (restarted after a death)."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self._env = {**os.environ, **(env or {})}
        self._proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        self.started = 0  # how many processes were started (1 + restarts)

    def _start(self) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "child.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env=self._env,
        )
        self._lines = queue.Queue()
        self._stderr = []
        lines, errors = self._lines, self._stderr

        def pump_out() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line)
            lines.put(None)

        def pump_err() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                errors.append(line)
                del errors[:-40]

        threading.Thread(target=pump_out, daemon=True).start()
        threading.Thread(target=pump_err, daemon=True).start()
        self.started += 1
        return proc

    def call(self, request: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
        """Send one request and return the child's answer."""
        if self._proc is None or self._proc.poll() is not None:
            self._proc = self._start()
        proc = self._proc
        assert proc.stdin is not None
        payload = json.dumps(_pack(request), ensure_ascii=True)
        try:
            proc.stdin.write(payload + "\n")
            proc.stdin.flush()
        except BrokenPipeError:
            pass  # reported below as a death
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                proc.kill()
                proc.wait()
                self._proc = None
                raise ChildHung(f"no answer within {timeout:.0f} s to {payload[:2000]}") from None
            if line is None:
                code = proc.wait()
                self._proc = None
                tail = "".join(self._stderr[-15:])
                raise ChildDied(f"child {describe_exit(code)} while handling {payload[:2000]}\nstderr:\n{tail}")
            if line.startswith("{"):
                return dict(json.loads(line))

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None


# -- the child side ----------------------------------------------------------------------


def _error(exc: BaseException) -> dict[str, Any]:
    import embellama

    return {
        "ok": False,
        "error": type(exc).__name__,
        "ours": isinstance(exc, embellama.EmbellamaError),
        "message": str(exc)[:2000],
    }


def _load(request: dict[str, Any]) -> dict[str, Any]:
    """Build a ModelConfig from raw fields, load it and embed what the request names."""
    from embellama import EmbeddingModel, ModelConfig, Reranker

    fields = dict(request["config"])
    if isinstance(fields.get("tensor_split"), list):
        fields["tensor_split"] = tuple(fields["tensor_split"])
    config = ModelConfig(**fields)
    model: Any = Reranker(config) if request.get("kind") == "rerank" else EmbeddingModel(config)
    try:
        model.load()
        out: dict[str, Any] = {
            "ok": True,
            "n_ctx": model.context.n_ctx,
            "n_batch": model.context.n_batch,
            "n_ubatch": model.context.n_ubatch,
            "n_seq_max": model.context.n_seq_max,
            "max_tokens": model.max_sequence_length,
        }
        texts = request.get("texts") or []
        if texts and isinstance(model, Reranker):
            scores = model.predict([(texts[0], t) for t in texts], show_progress_bar=False)
            out["shapes"] = [list(scores.shape)]
            out["finite"] = _finite(scores)
        elif texts:
            task = {"task": request["task"]} if "task" in request else {}  # a LoRA task (tests/native)
            vectors = model.embed_batch(texts, show_progress_bar=False, **task)
            arrays = vectors if isinstance(vectors, list) else list(vectors)
            out["shapes"] = [list(v.shape) for v in arrays]
            out["finite"] = all(bool(v.size) and bool((v == v).all() and abs(v).max() < 1e30) for v in arrays)
        return out
    finally:
        model.unload()


_MODELS: dict[str, Any] = {}


def _embed(request: dict[str, Any]) -> dict[str, Any]:
    """Embed or tokenize texts with a model kept loaded between requests."""
    from embellama import EmbeddingModel, ModelConfig

    key = json.dumps(request["config"], sort_keys=True)
    model = _MODELS.get(key)
    if model is None:
        model = _MODELS[key] = EmbeddingModel(ModelConfig(**request["config"])).load()
    results: list[dict[str, Any]] = []
    for call in request["calls"]:
        try:
            if call["op"] == "tokenize":
                ids = model.tokenize(call["text"])
                results.append({"ok": True, "n": len(ids), "in_vocab": bool((ids >= 0).all())})
            elif call["op"] == "embed":
                vector = model.embed(call["text"])
                results.append({"ok": True, "shape": list(vector.shape), "finite": bool(_finite(vector))})
            else:
                vectors = model.embed_batch(call["texts"], show_progress_bar=False)
                results.append({"ok": True, "shape": list(vectors.shape), "finite": bool(_finite(vectors))})
        except BaseException as exc:
            results.append(_error(exc))
    return {"ok": True, "results": results}


def _rerank(request: dict[str, Any]) -> dict[str, Any]:
    """Score pairs (anything the request holds, valid or not) with a reranker kept loaded between requests."""
    from embellama import ModelConfig, Reranker

    key = "rerank:" + json.dumps(request["config"], sort_keys=True)
    model = _MODELS.get(key)
    if model is None:
        model = _MODELS[key] = Reranker(ModelConfig(**request["config"])).load()
    results: list[dict[str, Any]] = []
    for call in request["calls"]:
        try:
            if call["op"] == "predict":
                scores = model.predict([tuple(p) if isinstance(p, list) else p for p in call["pairs"]])
                results.append({"ok": True, "shape": list(scores.shape), "finite": _finite(scores)})
            else:
                ranked = model.rank(call["query"], call["documents"])
                results.append({"ok": True, "n": len(ranked), "finite": _finite([r["score"] for r in ranked])})
        except BaseException as exc:
            results.append(_error(exc))
    return {"ok": True, "results": results}


_OUTPUT_CLASSES = {"classifier": "Classifier", "sparse": "SparseEncoder", "multi": "MultiVectorEncoder"}


def _outputs(request: dict[str, Any]) -> dict[str, Any]:
    """Run anything the request holds (valid or not) through a Classifier, SparseEncoder or MultiVectorEncoder kept
    loaded between requests; each call's result or error, with the outputs' shapes and finiteness."""
    import numpy as np

    import embellama

    kind = request["kind"]
    key = f"{kind}:" + json.dumps(request["config"], sort_keys=True)
    model = _MODELS.get(key)
    if model is None:
        model = _MODELS[key] = getattr(embellama, _OUTPUT_CLASSES[kind])(embellama.ModelConfig(**request["config"]))
    results: list[dict[str, Any]] = []
    for call in request["calls"]:
        try:
            texts = call["texts"]
            if kind == "classifier":
                out = model.predict(texts, top_k=call.get("top_k"))
                top = call.get("top_k")
                rows = [out] if isinstance(texts, str) else out  # one str: one row (of scores, or top-k dicts)
                values = [r["score"] for row in rows for r in row] if top else np.asarray(rows, dtype=np.float32)
                n = len(rows)
            else:
                out = model.encode_query(texts) if call.get("query") else model.encode_document(texts)
                rows = out if isinstance(out, list) else [out]
                n = len(rows)
                values = np.concatenate([np.ravel(getattr(r, "values", r)) for r in rows] or [np.zeros(0)])
            results.append({"ok": True, "n": n, "finite": _finite(values)})
        except BaseException as exc:
            results.append(_error(exc))
    return {"ok": True, "results": results}


def _finite(array: Any) -> bool:
    import numpy as np

    return bool(np.isfinite(array).all())


def serve() -> None:
    handlers = {"load": _load, "embed": _embed, "rerank": _rerank, "outputs": _outputs}
    for line in sys.stdin:
        request = json.loads(line, object_hook=_unpack)
        try:
            reply = handlers[request["op"]](request)
        except BaseException as exc:
            reply = _error(exc)
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
