# SPDX-License-Identifier: Apache-2.0
"""Weight types: the compute-type choice, the converted-model cache and ``embellama convert``.

llama.cpp computes with the weights in the type the GGUF file stores, and which type is fastest
depends on the CPU's arithmetic (measured in ``docs/performance.md``):

- **Intel CPUs with AVX512_BF16** (Xeon Cooper Lake, Sapphire Rapids and later): two 512-bit FMA
  units make FP32 as fast as ``vdpbf16ps`` without converting the activations, so F32 weights
  are fastest (1.3-1.4 times BF16 on encoders) and exact; models above :data:`F32_MAX_WEIGHTS`
  keep their file's type, where F32 gains nothing and would double the memory;
- **AMD CPUs with AVX512_BF16** (Zen 4 and later): tinyBLAS multiplies BF16 weights natively
  (``vdpbf16ps``, twice the FP32 rate of those cores), so BF16 is fastest (1.4 times F16 on a Zen 4), but it
  rounds every activation to 8 bits of mantissa: min cosine 0.99995 against sentence-transformers where F16
  and F32 keep 0.999996. ``auto`` keeps the file's type there (F32 gained nothing over F16 on a Zen 4), and
  ``compute_type="bf16"`` asks for the speed;
- **other CPUs** (AVX2 and older): F16 files as they are, converted to F32 on the fly.

``auto`` only ever picks an exact type (min cosine 0.99999 or better against sentence-transformers).

``ModelConfig(compute_type="auto")`` applies this to F16 files (and BF16 ones, a lossless widening) when the
model runs on the CPU. A conversion runs once, through
llama.cpp's own quantizer, into the cache (``$EMBELLAMA_CACHE_DIR``, else ``~/.cache/embellama``,
folder ``converted``), keyed by the source file's identity (path, size, modification time) and
the target type, written atomically and reused; ``embellama cache --clear`` removes the copies.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from embellama._exceptions import ConfigurationError, MissingExtraError, ModelLoadError, ModelNotFoundError
from embellama._gguf import reader as _gguf
from embellama._gguf.prompts import hf_prompts, write_prompts
from embellama._gguf.reader import require_gguf
from embellama._native import Library, cache_dir

__all__ = [
    "COMPUTE_TYPES",
    "CONVERTER_MODULES",
    "cache_dir",
    "check_converter_modules",
    "clear_converted",
    "convert_hf",
    "converted_path",
    "cpu_vendor",
    "target_type",
]

logger = logging.getLogger("embellama")

COMPUTE_TYPES = ("auto", "off", "f32", "f16", "bf16", "q8_0")
"""``auto``: the fastest exact type for the CPU (F32 for models of up to :data:`F32_MAX_WEIGHTS` on Intel CPUs
with AVX512_BF16, see the module's docstring), else the file's own type; ``off``: the file as it is; a type name:
always that type (converted once if the file has another)."""

F32_MAX_WEIGHTS = 2**28
"""Most weights (268 M: an F32 copy of 1 GiB) that ``auto`` runs as F32 on Intel CPUs; larger models keep their
file's type (a 0.6 B-parameter Qwen3 ran at 11.0-11.7 texts/s in F32 against 10.2 in F16, with 1.7 times the
memory)."""

FTYPE_CODES = {"f32": 0, "f16": 1, "q8_0": 7, "bf16": 32}
"""``enum llama_ftype`` values of the types a model can be converted to."""

_AUTO_SOURCES = (FTYPE_CODES["f32"], FTYPE_CODES["f16"])
_WIDENED = (FTYPE_CODES["bf16"],)  # auto also converts these to F32: lossless


def cpu_has_bf16_kernel(library: Library) -> bool:
    """Whether the library's CPU backend was compiled with AVX512_BF16 (native BF16 matmuls)."""
    return "AVX512_BF16 = 1" in library.system_info()


@functools.lru_cache(maxsize=1)
def cpu_vendor() -> str:
    """``"intel"``, ``"amd"`` or ``""`` (not known): who made the CPU this process runs on."""
    text = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = next((line for line in f if line.startswith("vendor_id")), "")
    except OSError:
        text = platform.processor()  # Windows: "Intel64 Family 6 Model 143 Stepping 8, GenuineIntel"
    if "GenuineIntel" in text:
        return "intel"
    if "AuthenticAMD" in text:
        return "amd"
    return ""


def weight_count(path: str | os.PathLike[str]) -> int | None:
    """The number of weights in a GGUF (from its tensor directory), None when it cannot be read or is one shard
    of a split model (whose other shards hold more)."""
    try:
        header = _gguf.read_header(path)
    except Exception:  # not a GGUF, or unreadable: llama.cpp's load will say what is wrong
        return None
    if int(header.metadata.get("split.count", 1) or 1) > 1:
        return None
    return sum(math.prod(shape) for shape, _ in header.tensors.values())


def target_type(
    compute_type: str, library: Library, *, offloaded: bool, source: str | os.PathLike[str] | None = None
) -> str | None:
    """The weight type to run with, or None for the file's own type.

    ``auto`` reads ``source`` (the GGUF) for its size where the choice depends on it.
    """
    if compute_type == "off":
        return None
    if compute_type == "auto":
        if offloaded or not cpu_has_bf16_kernel(library):
            return None
        if cpu_vendor() == "intel" and source is not None:
            weights = weight_count(source)
            if weights is not None and weights <= F32_MAX_WEIGHTS:
                return "f32"
        return None  # BF16 would be faster on AMD, and on large models on Intel, but it is not exact
    if compute_type not in FTYPE_CODES:
        raise ConfigurationError(f"unknown compute_type {compute_type!r}; expected one of: {', '.join(COMPUTE_TYPES)}")
    return compute_type


def wants_conversion(compute_type: str, file_ftype: int, target: str) -> bool:
    """Whether a file of ``file_ftype`` must be converted to ``target``."""
    if file_ftype == FTYPE_CODES[target]:
        return False
    if compute_type == "auto":
        return file_ftype in _AUTO_SOURCES or (target == "f32" and file_ftype in _WIDENED)
    return True


def converted_path(source: str | os.PathLike[str], target: str, library: Library) -> Path:
    """Where the cache keeps ``source`` converted to ``target`` (it may not exist yet)."""
    src = Path(source).resolve()
    try:
        stat = src.stat()
    except OSError:
        raise ModelNotFoundError(str(source)) from None
    identity = f"{src}\0{stat.st_size}\0{stat.st_mtime_ns}\0{target}\0{library.version}\0{library.commit}"
    key = hashlib.sha256(identity.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return cache_dir() / "converted" / f"{src.stem}.{key}.{target.upper()}.gguf"


def convert_gguf(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    target: str,
    library: Library,
    *,
    n_threads: int = 0,
) -> Path:
    """Write ``source`` with its weights in ``target`` type, atomically, with llama.cpp's quantizer."""
    from embellama.llama import quantize

    dst = Path(destination)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    started = time.perf_counter()
    try:
        quantize(source, tmp, target, n_threads=n_threads, library=library)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info(
        "converted %s to %s in %.1f s (%d MB): %s",
        source,
        target.upper(),
        time.perf_counter() - started,
        dst.stat().st_size // 2**20,
        dst,
    )
    return dst


def clear_converted() -> tuple[int, int]:
    """Delete every converted model in the cache; returns (files, bytes) removed."""
    folder = cache_dir() / "converted"
    files = removed = 0
    for path in folder.glob("*.gguf") if folder.is_dir() else ():
        removed += path.stat().st_size
        path.unlink()
        files += 1
    return files, removed


def llama_source(explicit: str | os.PathLike[str] | None, library: Library | None) -> Path:
    """A llama.cpp source tree with ``convert_hf_to_gguf.py``."""
    candidates: list[Path] = []
    if explicit:
        candidates.append(Path(explicit))
    if os.environ.get("EMBELLAMA_LLAMA_SRC"):
        candidates.append(Path(os.environ["EMBELLAMA_LLAMA_SRC"]))
    source = ((library.manifest or {}) if library else {}).get("source") or {}
    candidates += [Path(source[key]) for key in ("directory", "location") if source.get(key)]
    commit = (library.commit if library else None) or ""
    candidates += sorted((cache_dir() / "src").glob(f"llama.cpp-{commit}*"))
    for candidate in candidates:
        if (candidate / "convert_hf_to_gguf.py").is_file():
            return candidate
    looked = ", ".join(str(c) for c in candidates) or "nowhere"
    raise ConfigurationError(
        f"no llama.cpp source with convert_hf_to_gguf.py (looked in {looked}); pass --llama-src, set "
        "$EMBELLAMA_LLAMA_SRC, or run build_llama.py"
    )


CONVERTER_MODULES = ("torch", "transformers", "sentencepiece", "google.protobuf", "safetensors", "numpy")
"""What llama.cpp's ``convert_hf_to_gguf.py`` imports besides gguf (its own ``gguf-py`` goes on its path):
the extra ``embellama[convert]`` installs them, at the versions the test suite runs."""


def check_converter_modules(needed_for: str) -> None:
    """Raise MissingExtraError naming the converter's missing modules and the extra, before the converter starts
    (it would fail with its own traceback, ``No module named 'torch'``)."""
    import importlib.util

    def present(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a parent package missing
            return False

    missing = [name for name in CONVERTER_MODULES if not present(name)]
    if missing:
        raise MissingExtraError("convert", missing, needed_for)


def convert_hf(hf_dir: Path, destination: Path, outtype: str, source: Path) -> Path:
    """Run llama.cpp's ``convert_hf_to_gguf.py`` (needs its Python dependencies: torch, gguf …).

    The prompts of ``config_sentence_transformers.json`` go into the GGUF's ``embellama.prompts`` and
    ``embellama.default_prompt_name`` (written with the ``gguf`` package).
    """
    import subprocess  # here, not at import: embedding never needs it

    if not (hf_dir / "config.json").is_file():
        raise ModelNotFoundError(str(hf_dir / "config.json"))
    check_converter_modules(f"converting {hf_dir} with llama.cpp's convert_hf_to_gguf.py")
    prompts, default_prompt = hf_prompts(hf_dir)  # config_sentence_transformers.json: carried into the GGUF
    if prompts or default_prompt:
        require_gguf(f"{hf_dir} has prompts")
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = destination.with_name(f".{destination.name}.{os.getpid()}.tmp")
    env = dict(os.environ, PYTHONPATH=str(source / "gguf-py"), HF_HUB_OFFLINE="1")
    cmd = [sys.executable, str(source / "convert_hf_to_gguf.py"), str(hf_dir), "--outtype", outtype]
    try:
        proc = subprocess.run([*cmd, "--outfile", str(tmp)], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
            raise ModelLoadError(str(hf_dir), f"convert_hf_to_gguf.py failed ({proc.returncode}):\n{tail}")
        if not _gguf.read_header(tmp).tensors:  # the converter writes an empty model for a folder without weights
            raise ModelLoadError(
                str(hf_dir),
                "convert_hf_to_gguf.py wrote no tensors: the folder holds no weights (*.safetensors, *.bin)",
            )
        if prompts or default_prompt:
            write_prompts(tmp, tmp, prompts, default_prompt)
        for change in converter_fixes(hf_dir, tmp):
            logger.info("%s: %s", hf_dir, change)
        os.replace(tmp, destination)
    finally:
        tmp.unlink(missing_ok=True)
    return destination


# -- cross-encoders -----------------------------------------------------------------------------------------

_TYPE_ROW_TOKEN = "[embellama token type 1: {}]"  # never matched by a tokenizer: it holds spaces and is UNUSED
_UNUSED = 5  # llama.cpp's LLAMA_TOKEN_TYPE_UNUSED
_RANK = 4  # enum llama_pooling_type LLAMA_POOLING_TYPE_RANK
_VOCAB_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.scores")


def _st_activation(folder: Path, config: dict[str, object]) -> str | None:
    """The activation a sentence-transformers CrossEncoder saved, as a Reranker activation name.

    sentence-transformers 5+ keeps it in ``config_sentence_transformers.json``, 4 in config.json's
    ``sentence_transformers``, earlier ones as ``sbert_ce_default_activation_function``.
    """
    st_file = folder / "config_sentence_transformers.json"
    st_config = json.loads(st_file.read_text(encoding="utf-8")) if st_file.is_file() else {}
    saved = config.get("sentence_transformers")
    path = (
        st_config.get("activation_fn")
        or (saved.get("activation_fn") if isinstance(saved, dict) else None)
        or config.get("sbert_ce_default_activation_function")
    )
    if not isinstance(path, str):
        return None
    leaf = path.rsplit(".", 1)[-1].lower()
    return {"sigmoid": "sigmoid", "identity": "identity", "softmax": "softmax"}.get(leaf)


def token_type_count(header: _gguf.Header) -> int:
    """How many token types the model was trained with (``tokenizer.ggml.token_type_count``; older files:
    ``<arch>.token_type_count``)."""
    value = header.metadata.get("tokenizer.ggml.token_type_count", header.arch_value("token_type_count", 1))
    return int(value or 1)


def converter_fixes(hf_dir: str | os.PathLike[str], gguf_path: str | os.PathLike[str]) -> list[str]:
    """Write into a freshly converted GGUF what llama.cpp's converter leaves out (in place, in one rewrite).

    For ModernBERT: ``modern-bert.attention.layer_norm_epsilon``, which llama.cpp's loader requires and the
    pinned converter does not write (the config names it ``norm_eps``, written as an RMS-norm epsilon).

    For ``*ForSequenceClassification`` checkpoints:

    - the pooling type ``rank``, where the file names none, and the activation sentence-transformers saved
      (``embellama.activation``);
    - the labels (``<arch>.classifier.output_labels``, from ``id2label``) where the converter wrote none: it drops
      a two-label head's default names (``LABEL_0``, ``LABEL_1``), and llama.cpp then expects one output;
    - BERT's pooler (``pooler.dense``, dense + tanh before the classifier), which the converter drops, as the
      ``cls`` tensors llama.cpp's rank head applies;
    - token type 1 of the second segment: llama.cpp adds token type 0 to every token, so the rows
      ``token_embd + type[1] - type[0]`` are appended to the token embeddings, with as many unused
      vocabulary entries, and ``embellama.token_type_offset`` says where they start. :class:`Reranker`
      shifts the document's ids by it; tokenization never produces those ids.

    Returns what was changed, one line each (nothing for other models). Needs gguf-py.
    """
    folder = Path(hf_dir)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    architectures = config.get("architectures") or []
    cross_encoder = any(str(a).endswith("ForSequenceClassification") for a in architectures)
    header = _gguf.read_header(gguf_path, arrays=_VOCAB_ARRAYS)
    arch = header.architecture
    epsilon_missing = arch == "modern-bert" and header.arch_value("attention.layer_norm_epsilon") is None
    if not cross_encoder and not epsilon_missing:
        return []
    why = "a cross-encoder's head" if cross_encoder else "ModernBERT's layer-norm epsilon"
    gguf = require_gguf(why)
    kinds = gguf.GGUFValueType
    keys: dict[str, tuple[object, object]] = {}
    tensors: dict[str, np.ndarray] = {}
    changes: list[str] = []
    if epsilon_missing:
        epsilon = float(config.get("layer_norm_eps") or config.get("norm_eps") or 1e-5)
        keys[f"{arch}.attention.layer_norm_epsilon"] = (epsilon, kinds.FLOAT32)
        changes.append(f"the layer-norm epsilon {epsilon:g} (config.json's norm_eps)")
    if cross_encoder:
        if header.arch_value("pooling_type") is None:
            keys[f"{arch}.pooling_type"] = (_RANK, kinds.UINT32)
            changes.append("pooling type rank")
        labels_key = f"{arch}.classifier.output_labels"
        # transformers leaves a two-label head's default id2label out of config.json
        id2label = config.get("id2label") or {0: "LABEL_0", 1: "LABEL_1"}
        if isinstance(id2label, dict) and len(id2label) >= 2 and header.array_length(labels_key) is None:
            names = [str(v) for _, v in sorted((int(k), v) for k, v in id2label.items())]
            keys[labels_key] = (names, (kinds.ARRAY, kinds.STRING))
            changes.append(f"the labels {names}")
            if "cls.weight" in header.tensors and "cls.output.weight" not in header.tensors:
                # without labels the converter wrote BERT's classifier as the head's first layer (cls)
                moved = _gguf.tensor_values(gguf_path, ["cls.weight", "cls.bias"])
                tensors["cls.output.weight"], tensors["cls.output.bias"] = moved["cls.weight"], moved["cls.bias"]
                changes.append("the classifier as the head's output layer (cls.output)")
        activation = _st_activation(folder, config)
        if activation is not None:
            keys[_gguf.ACTIVATION_KEY] = (activation, kinds.STRING)
            changes.append(f"activation {activation}")
        no_pooler = "cls.weight" not in header.tensors or "cls.output.weight" in tensors  # (moved above)
        if config.get("model_type") == "bert" and no_pooler:
            names = [f"{p}pooler.dense.{w}" for p in ("bert.", "") for w in ("weight", "bias")]
            found = _gguf.checkpoint_tensors(folder, names)
            for prefix in ("bert.", ""):
                weight, bias = found.get(f"{prefix}pooler.dense.weight"), found.get(f"{prefix}pooler.dense.bias")
                if weight is not None and bias is not None:
                    tensors["cls.weight"], tensors["cls.bias"] = weight, bias
                    changes.append("the pooler (dense + tanh) as the head's cls tensors")
                    break
        n_types = token_type_count(header)
        if n_types >= 2 and "token_types.weight" in header.tensors:
            values = _gguf.tensor_values(gguf_path, ["token_embd.weight", "token_types.weight"])
            embd, types = values["token_embd.weight"], values["token_types.weight"]
            n_vocab = embd.shape[0]
            tensors["token_embd.weight"] = np.concatenate([embd, embd + (types[1] - types[0])])
            tokens = header.metadata["tokenizer.ggml.tokens"]
            keys["tokenizer.ggml.tokens"] = (
                tokens + [_TYPE_ROW_TOKEN.format(i) for i in range(n_vocab)],
                (kinds.ARRAY, kinds.STRING),
            )
            if "tokenizer.ggml.token_type" in header.metadata:
                keys["tokenizer.ggml.token_type"] = (
                    header.metadata["tokenizer.ggml.token_type"] + [_UNUSED] * n_vocab,
                    (kinds.ARRAY, kinds.INT32),
                )
            if "tokenizer.ggml.scores" in header.metadata:
                keys["tokenizer.ggml.scores"] = (
                    header.metadata["tokenizer.ggml.scores"] + [0.0] * n_vocab,
                    (kinds.ARRAY, kinds.FLOAT32),
                )
            if header.arch_value("vocab_size") is not None:
                keys[f"{arch}.vocab_size"] = (2 * n_vocab, kinds.UINT32)
            keys[_gguf.TOKEN_TYPE_OFFSET_KEY] = (n_vocab, kinds.UINT32)
            changes.append(f"token type 1 as {n_vocab} more token rows from id {n_vocab}")
    if keys or tensors:
        _gguf.rewrite(gguf_path, gguf_path, why=why, set_keys=keys, tensors=tensors)
    return changes
