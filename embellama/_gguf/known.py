# SPDX-License-Identifier: Apache-2.0
"""The known-model table: which published model a GGUF is, from its metadata, and that model's defaults.

llama.cpp's converter writes neither sentence-transformers' prompts nor its similarity function, so a published
GGUF of nomic-embed-text or e5 embeds queries without the prefix it was trained with. ``known_models.json`` (in
this package; reviewable, one entry per model) gives them, keyed on the names a GGUF carries: ``general.name``,
``general.basename`` with ``general.size_label``/``general.finetune``/``general.version``, and, for a model loaded
by name, its repository id and file name. Names are compared normalized (case, spaces, dashes and underscores,
``v1_5`` = ``v1.5``, a quantization suffix dropped), and only whole: ``nomic-embed-text-v1.5-finetuned`` is not
``nomic-embed-text-v1.5``. When several entries share a name, the GGUF's architecture and size label choose.

Users extend the table with JSON files of the same shape (``ModelConfig.known_models``, or
``$EMBELLAMA_KNOWN_MODELS``: paths separated by ``os.pathsep``); their entries come first.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from embellama._exceptions import ConfigurationError
from embellama._gguf import reader as _reader

__all__ = [
    "ENV_VAR",
    "KnownModel",
    "candidate_names",
    "load_table",
    "match",
    "normalize_name",
    "table",
    "tokenizer_sha256",
]

ENV_VAR = "EMBELLAMA_KNOWN_MODELS"
"""Environment variable naming extra known-model files (``os.pathsep``-separated)."""

_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "names": list,
    "architectures": list,
    "size_labels": list,
    "kind": str,
    "prompts": dict,
    "default_prompt_name": (str, type(None)),
    "needs_prompts": bool,
    "similarity_fn_name": str,
    "matryoshka_dims": list,
    "normalization": str,
    "max_seq_length": int,
    "rope": dict,
    "notes": str,
    "source": str,
    "tokenizer_sha256": list,
}
_REQUIRED = ("id", "names")
_ROPE_KEYS = {
    "rope_scaling": str,
    "rope_freq_base": float,
    "rope_freq_scale": float,
    "yarn_orig_ctx": int,
    "yarn_ext_factor": float,
    "yarn_attn_factor": float,
    "yarn_beta_fast": float,
    "yarn_beta_slow": float,
}
_SIMILARITY = ("cosine", "dot", "euclidean", "manhattan")
_KINDS = ("embedding", "reranker")
_QUANT_SUFFIX = re.compile(
    r"([.\-_ ](gguf|f16|f32|bf16|fp16|fp32|q\d[\w]*|iq\d[\w]*|mxfp4[\w]*|tq\d[\w]*))+$", re.IGNORECASE
)


@dataclasses.dataclass(frozen=True)
class KnownModel:
    """One entry of the known-model table (see ``known_models.json`` for the fields' meaning).

    ``matched_by`` says which of the GGUF's names (or the source's) matched, once :func:`match` found it.
    """

    id: str
    names: tuple[str, ...]
    architectures: tuple[str, ...] = ()
    size_labels: tuple[str, ...] = ()
    kind: str = "embedding"
    prompts: Mapping[str, str] = dataclasses.field(default_factory=dict)
    default_prompt_name: str | None = None
    needs_prompts: bool = False
    similarity_fn_name: str | None = None
    matryoshka_dims: tuple[int, ...] = ()
    normalization: str | None = None
    max_seq_length: int | None = None
    rope: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    notes: str = ""
    source: str = ""
    tokenizer_sha256: tuple[str, ...] = ()
    origin: str = "built-in"
    matched_by: str = ""

    def describe(self) -> str:
        """One line: the entry, and what matched it."""
        how = f" (by {self.matched_by})" if self.matched_by else ""
        where = "" if self.origin == "built-in" else f" from {self.origin}"
        return f"{self.id}{how}{where}"

    def as_dict(self) -> dict[str, Any]:
        """The entry as JSON-ready data (``embellama info --json``)."""
        data = dataclasses.asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in data.items()}


def normalize_name(name: str) -> str:
    """A model name compared with others: lower case, runs of spaces/dashes/underscores one dash, ``v1-5`` (from
    ``v1_5`` or ``v1 5``) as ``v1.5``, and a trailing quantization or file suffix (``.Q8_0``, ``-f16.gguf``) dropped."""
    text = str(name).strip()
    text = _QUANT_SUFFIX.sub("", text).lower()
    text = re.sub(r"[\s_\-]+", "-", text).strip("-")
    return re.sub(r"\bv(\d+)-(\d+)\b", r"v\1.\2", text)


def candidate_names(metadata: Mapping[str, Any], source: str | None = None) -> list[tuple[str, str]]:
    """The names a GGUF goes by, normalized, each with where it came from (``general.name``, ...)."""

    def text(key: str) -> str:
        value = metadata.get(key)
        return str(value).strip() if value is not None else ""

    found: list[tuple[str, str]] = []
    if name := text("general.name"):
        found.append((normalize_name(name), "general.name"))
    if basename := text("general.basename"):
        parts = [basename, text("general.finetune"), text("general.version")]
        found.append((normalize_name("-".join(p for p in parts if p)), "general.basename"))
        sized = [basename, text("general.size_label"), *parts[1:]]
        found.append((normalize_name("-".join(p for p in sized if p)), "general.basename"))
    if source:
        for piece in _source_names(source):
            found.append((normalize_name(piece), "source"))
    seen: set[str] = set()
    return [(n, why) for n, why in found if n and not (n in seen or seen.add(n))]  # type: ignore[func-returns-value]


def _source_names(source: str) -> list[str]:
    """From ``hf://org/repo@rev/file.gguf``, ``org/repo`` or a path: the repository's name (without a ``-GGUF``
    suffix) and the file's stem."""
    text = str(source).removeprefix("hf://")
    pieces: list[str] = []
    parts = [p for p in text.split("/") if p]
    if len(parts) >= 2 and not text.startswith(("/", ".")):
        repo = parts[1].split("@", 1)[0]
        pieces.append(re.sub(r"[\-_.]gguf$", "", repo, flags=re.IGNORECASE))
    last = parts[-1] if parts else ""
    if last.lower().endswith(".gguf"):
        pieces.append(last[: -len(".gguf")])
    return pieces


def _entry(raw: Any, origin: str, index: int) -> KnownModel:
    where = f"{origin}: entry {index}"
    if not isinstance(raw, dict):
        raise ConfigurationError(f"{where} must be an object, got {type(raw).__name__}")
    for key in _REQUIRED:
        if key not in raw:
            raise ConfigurationError(f"{where} has no {key!r}")
    where = f"{origin}: entry {raw.get('id')!r}"
    for key, value in raw.items():
        if key.startswith("_"):
            continue  # comments
        if key not in _FIELDS:
            raise ConfigurationError(f"{where}: unknown field {key!r}; known: {', '.join(sorted(_FIELDS))}")
        kind = _FIELDS[key]
        if (isinstance(value, bool) and kind is int) or not isinstance(value, kind):
            raise ConfigurationError(f"{where}: {key} has the wrong type ({type(value).__name__})")
    names = raw["names"]
    if not names or not all(isinstance(n, str) and normalize_name(n) for n in names):
        raise ConfigurationError(f"{where}: names must be a non-empty list of names")
    prompts = raw.get("prompts", {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()):
        raise ConfigurationError(f"{where}: prompts must map names to texts")
    default = raw.get("default_prompt_name")
    if default is not None and default not in prompts:
        raise ConfigurationError(f"{where}: default_prompt_name {default!r} is not among its prompts")
    similarity = raw.get("similarity_fn_name")
    if similarity is not None and similarity not in _SIMILARITY:
        raise ConfigurationError(f"{where}: similarity_fn_name must be one of {', '.join(_SIMILARITY)}")
    if raw.get("kind", "embedding") not in _KINDS:
        raise ConfigurationError(f"{where}: kind must be one of {', '.join(_KINDS)}")
    dims = raw.get("matryoshka_dims", [])
    if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
        raise ConfigurationError(f"{where}: matryoshka_dims must be positive ints")
    rope = dict(raw.get("rope", {}))
    for key, value in rope.items():
        want = _ROPE_KEYS.get(key)
        ok = want is not None and not isinstance(value, bool)
        ok = ok and (isinstance(value, (int, float)) if want is float else isinstance(value, want))  # type: ignore[arg-type]
        if not ok:
            raise ConfigurationError(f"{where}: bad rope setting {key}={value!r}; known: {', '.join(_ROPE_KEYS)}")
    hashes = raw.get("tokenizer_sha256", [])
    if not all(isinstance(h, str) and re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes):
        raise ConfigurationError(f"{where}: tokenizer_sha256 must be a list of sha256 hex digests")
    return KnownModel(
        id=raw["id"],
        tokenizer_sha256=tuple(hashes),
        names=tuple(normalize_name(n) for n in names),
        architectures=tuple(str(a) for a in raw.get("architectures", ())),
        size_labels=tuple(str(s).lower() for s in raw.get("size_labels", ())),
        kind=raw.get("kind", "embedding"),
        prompts=dict(prompts),
        default_prompt_name=default,
        needs_prompts=raw.get("needs_prompts", bool(any(prompts.values()))),
        similarity_fn_name=similarity,
        matryoshka_dims=tuple(dims),
        normalization=raw.get("normalization"),
        max_seq_length=raw.get("max_seq_length"),
        rope=rope,
        notes=raw.get("notes", ""),
        source=raw.get("source", ""),
        origin=origin,
    )


def load_table(data: Any, origin: str) -> tuple[KnownModel, ...]:
    """The entries of one table (``{"models": [...]}``), checked.

    Raises
    ------
    ConfigurationError
        The data is not a table, or an entry has an unknown field, a wrong type or a bad value (the message
        names ``origin`` and the entry).
    """
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise ConfigurationError(f"{origin}: a known-model table is an object with a 'models' list")
    return tuple(_entry(raw, origin, i) for i, raw in enumerate(data["models"]))


def _read_file(path: Path) -> tuple[KnownModel, ...]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"known-model table {path}: cannot read it: {exc}") from None
    except ValueError as exc:
        raise ConfigurationError(f"known-model table {path} is not JSON: {exc}") from None
    return load_table(data, str(path))


@functools.cache
def _builtin() -> tuple[KnownModel, ...]:
    text = resources.files("embellama._gguf").joinpath("known_models.json").read_text(encoding="utf-8")
    return load_table(json.loads(text), "built-in")


@functools.lru_cache(maxsize=16)
def _user(paths: tuple[str, ...], stamps: tuple[float, ...]) -> tuple[KnownModel, ...]:
    del stamps  # part of the cache key only: an edited file is read again
    return tuple(entry for path in paths for entry in _read_file(Path(path)))


def table(extra: Iterable[str | os.PathLike[str]] = ()) -> tuple[KnownModel, ...]:
    """The entries in effect: those of ``extra`` files, of ``$EMBELLAMA_KNOWN_MODELS``, then the built-in ones."""
    paths = [str(p) for p in extra]
    paths += [p for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p.strip()]
    stamps = []
    for path in paths:
        try:
            stamps.append(Path(path).stat().st_mtime)
        except OSError as exc:
            raise ConfigurationError(f"known-model table {path}: cannot read it: {exc}") from None
    return _user(tuple(paths), tuple(stamps)) + _builtin()


def tokenizer_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a GGUF's vocabulary (``tokenizer.ggml.tokens`` as a JSON list, UTF-8): what an entry's
    ``tokenizer_sha256`` lists, to tell apart models that share a name but not a tokenizer."""
    tokens = _reader.read_header(path, arrays=("tokenizer.ggml.tokens",)).metadata.get("tokenizer.ggml.tokens") or []
    return hashlib.sha256(json.dumps(tokens, ensure_ascii=False).encode("utf-8")).hexdigest()


def match(
    metadata: Mapping[str, Any],
    source: str | None = None,
    *,
    entries: Sequence[KnownModel] | None = None,
    kind: str | None = None,
    tokenizer_hash: Callable[[], str | None] | None = None,
) -> KnownModel | None:
    """The entry a GGUF's metadata (and ``source``, the repository id or file it was loaded by) names, or None.

    An entry matches when one of its names equals one of the GGUF's (:func:`candidate_names`) and, when it lists
    ``tokenizer_sha256``, the GGUF's vocabulary hashes to one of them (``tokenizer_hash()``, asked only then; an
    entry with hashes never matches without it). Several matches are narrowed by the architecture and the size
    label; entries of another ``kind`` are skipped. Returns the entry with ``matched_by`` set.
    """
    names = candidate_names(metadata, source)
    if not names:
        return None
    arch = str(metadata.get("general.architecture") or "")
    size = str(metadata.get("general.size_label") or "").lower()
    found: list[KnownModel] = []
    for entry in table() if entries is None else entries:
        if kind is not None and entry.kind != kind:
            continue
        for name, why in names:
            if name in entry.names:
                found.append(dataclasses.replace(entry, matched_by=f"{why} {name!r}"))
                break
    if any(e.tokenizer_sha256 for e in found):
        digest = tokenizer_hash() if tokenizer_hash is not None else None
        found = [e for e in found if not e.tokenizer_sha256 or digest in e.tokenizer_sha256]
    if len(found) > 1:
        narrowed = [e for e in found if not e.architectures or arch in e.architectures] or found
        narrowed = [e for e in narrowed if not e.size_labels or size in e.size_labels] or narrowed
        found = narrowed
    return found[0] if found else None
