# SPDX-License-Identifier: Apache-2.0
"""The output heads llama.cpp's converter drops, kept in a sidecar file beside the GGUF.

llama.cpp converts the encoder only: a ``*ForMaskedLM`` checkpoint loses its MLM head (SPLADE needs it), and
bge-m3's ``sparse_linear.pt`` and ``colbert_linear.pt``, or a ColBERT checkpoint's Dense projection
(``1_Dense``), are not read at all. llama.cpp's loader also refuses a GGUF holding tensors it does not create
(``done_getting_tensors``: "wrong number of tensors"), so the heads cannot go into the model file itself. They
go into ``<model>.heads.npz`` beside it (:func:`heads_path`), written by ``embellama convert`` and read with
numpy alone:

- ``meta``: a JSON string: ``{"format": 1, "heads": [...], "mlm": {...}, "splade": {...}, "sparse": {...},
  "colbert": {...}}``;
- ``mlm.dense.weight``/``.bias``, ``mlm.norm.weight``/``.bias``, ``mlm.decoder.weight``/``.bias``: the MLM
  transform (dense, activation, LayerNorm) and the decoder (tied to the token embeddings in the checkpoint:
  stored here, float32);
- ``sparse.weight``/``.bias``: bge-m3's ``sparse_linear`` (hidden to 1);
- ``colbert.weight``/``.bias``: bge-m3's ``colbert_linear``, or a ColBERT checkpoint's Dense layer.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from embellama._exceptions import ConfigurationError, MissingExtraError, ModelLoadError
from embellama._gguf.reader import checkpoint_tensors

__all__ = ["FORMAT", "Heads", "heads_path", "load_heads", "read_checkpoint_heads", "write_heads"]

logger = logging.getLogger("embellama")

FORMAT = 1

# (prefix of the MLM transform, its LayerNorm's name, the decoder's prefix, the word embeddings)
_MLM_LAYOUTS = (
    ("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm", "cls.predictions",
     ("bert.embeddings.word_embeddings.weight",)),
    ("lm_head.dense", "lm_head.layer_norm", "lm_head",
     ("roberta.embeddings.word_embeddings.weight", "embeddings.word_embeddings.weight")),
    ("vocab_transform", "vocab_layer_norm", "vocab_projector",
     ("distilbert.embeddings.word_embeddings.weight",)),
)  # fmt: skip


class Heads:
    """The heads of one model, as float32 arrays, with their settings (``meta``)."""

    def __init__(self, arrays: dict[str, npt.NDArray[np.float32]], meta: dict[str, Any]) -> None:
        self.arrays = arrays
        self.meta = meta

    @property
    def names(self) -> list[str]:
        """Which heads are there: ``mlm``, ``sparse``, ``colbert``."""
        return list(self.meta.get("heads", []))

    def has(self, name: str) -> bool:
        return name in self.names

    def __repr__(self) -> str:
        return f"<Heads {self.names}>"


def heads_path(model_path: str | os.PathLike[str]) -> Path:
    """The sidecar of ``model_path``: ``x.gguf`` -> ``x.heads.npz``."""
    path = Path(model_path)
    stem = path.name[: -len(".gguf")] if path.name.endswith(".gguf") else path.name
    return path.with_name(f"{stem}.heads.npz")


def _pt_state(path: Path) -> dict[str, npt.NDArray[np.float32]]:
    try:
        import torch
    except ImportError:
        raise MissingExtraError("convert", ["torch"], f"reading {path.name}") from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.float().numpy() for k, v in state.items()}


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _dense_module(folder: Path) -> tuple[dict[str, npt.NDArray[np.float32]], dict[str, Any]] | None:
    """A sentence-transformers/PyLate Dense module after the transformer (``modules.json``), if any."""
    modules_file = folder / "modules.json"
    modules: list[dict[str, Any]] = (
        json.loads(modules_file.read_text(encoding="utf-8")) if modules_file.is_file() else []
    )
    for module in modules:
        if not str(module.get("type", "")).endswith("Dense"):
            continue
        sub = folder / module["path"]
        config = _json(sub / "config.json")
        tensors = checkpoint_tensors(sub, ["linear.weight", "linear.bias"])
        if not tensors and (sub / "pytorch_model.bin").is_file():
            tensors = {k: v for k, v in _pt_state(sub / "pytorch_model.bin").items() if k.startswith("linear.")}
        if "linear.weight" in tensors:
            return tensors, config
    return None


def read_checkpoint_heads(hf_dir: str | os.PathLike[str]) -> Heads | None:
    """The heads of a Hugging Face model folder that llama.cpp's converter drops, or None if it has none.

    Reads safetensors with numpy; ``*.pt`` and ``pytorch_model.bin`` files with torch (extra ``convert``).
    """
    folder = Path(hf_dir)
    config = _json(folder / "config.json")
    st_config = _json(folder / "config_sentence_transformers.json")
    arrays: dict[str, npt.NDArray[np.float32]] = {}
    meta: dict[str, Any] = {"format": FORMAT, "heads": []}
    if any(str(a).endswith("ForMaskedLM") for a in config.get("architectures") or []):
        names = []
        for dense, norm, decoder, embeddings in _MLM_LAYOUTS:
            names += [f"{dense}.weight", f"{dense}.bias", f"{norm}.weight", f"{norm}.bias"]
            names += [f"{decoder}.decoder.weight", f"{decoder}.decoder.bias", f"{decoder}.bias", *embeddings]
            names += [f"{decoder}.weight"]
        found = checkpoint_tensors(folder, names)
        for dense, norm, decoder, embeddings in _MLM_LAYOUTS:
            if f"{dense}.weight" not in found:
                continue
            weight = found.get(f"{decoder}.decoder.weight", found.get(f"{decoder}.weight"))
            tied = weight is None
            if tied:
                weight = next((found[e] for e in embeddings if e in found), None)
            bias = found.get(f"{decoder}.decoder.bias", found.get(f"{decoder}.bias"))
            if weight is None:
                raise ModelLoadError(str(folder), f"the MLM head has no decoder weight ({decoder}.decoder.weight)")
            arrays["mlm.dense.weight"], arrays["mlm.dense.bias"] = found[f"{dense}.weight"], found[f"{dense}.bias"]
            arrays["mlm.norm.weight"], arrays["mlm.norm.bias"] = found[f"{norm}.weight"], found[f"{norm}.bias"]
            arrays["mlm.decoder.weight"] = weight
            arrays["mlm.decoder.bias"] = bias if bias is not None else np.zeros(weight.shape[0], np.float32)
            act = config.get("hidden_act") or config.get("activation") or "gelu"
            eps = config.get("layer_norm_eps", 1e-12)
            meta["mlm"] = {"activation": str(act), "eps": float(eps), "tied": tied}
            pooling = _json(folder / "1_SpladePooling" / "config.json")
            meta["splade"] = {
                "pooling_strategy": pooling.get("pooling_strategy", "max"),
                "activation_function": pooling.get("activation_function", "relu"),
            }
            meta["heads"].append("mlm")
            break
    for name, file in (("sparse", "sparse_linear"), ("colbert", "colbert_linear")):
        for candidate in (folder / f"{file}.safetensors", folder / f"{file}.pt"):
            if candidate.is_file():
                state = _pt_state(candidate) if candidate.suffix == ".pt" else _safetensors_file(candidate)
                if "weight" not in state:
                    raise ModelLoadError(str(candidate), "no 'weight' tensor")
                arrays[f"{name}.weight"] = state["weight"]
                arrays[f"{name}.bias"] = state.get("bias", np.zeros(state["weight"].shape[0], np.float32))
                meta["heads"].append(name)
                break
    if "colbert" in meta["heads"]:
        meta["colbert"] = {"style": "bge-m3", "skip_first": True, "normalize": True, "score": "mean"}
    else:
        found_dense = _dense_module(folder)
        if found_dense is not None:
            tensors, dense_config = found_dense
            arrays["colbert.weight"] = tensors["linear.weight"]
            arrays["colbert.bias"] = tensors.get("linear.bias", np.zeros(tensors["linear.weight"].shape[0], np.float32))
            meta["heads"].append("colbert")
            prefixes = st_config.get("prompts") or {}
            meta["colbert"] = {
                "style": "colbert",
                "skip_first": False,
                "normalize": True,
                "score": "sum",
                "activation": str(dense_config.get("activation_function", "torch.nn.modules.linear.Identity")),
                "query_prefix": st_config.get("query_prefix", prefixes.get("query", "")),
                "document_prefix": st_config.get("document_prefix", prefixes.get("document", "")),
                "query_length": st_config.get("query_length"),
                "document_length": st_config.get("document_length"),
                "do_query_expansion": bool(st_config.get("do_query_expansion", True)),
                "attend_to_expansion_tokens": bool(st_config.get("attend_to_expansion_tokens", False)),
                "skiplist_words": list(st_config.get("skiplist_words") or []),
            }
    if not meta["heads"]:
        return None
    return Heads(arrays, meta)


def _safetensors_file(path: Path) -> dict[str, npt.NDArray[np.float32]]:
    """Every tensor of one safetensors file."""
    import struct

    from embellama._gguf import reader

    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        names = {k for k in json.loads(f.read(size)) if k != "__metadata__"}
    return reader._safetensors(path, names)


def write_heads(hf_dir: str | os.PathLike[str], model_path: str | os.PathLike[str]) -> Path | None:
    """Write the heads of ``hf_dir`` beside the GGUF ``model_path`` (atomically); None when it has none."""
    heads = read_checkpoint_heads(hf_dir)
    if heads is None:
        return None
    out = heads_path(model_path)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.npz")
    try:
        arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in heads.arrays.items()}
        np.savez(tmp, meta=np.array(json.dumps(heads.meta)), **arrays)  # type: ignore[arg-type]
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("%s: heads %s written to %s", hf_dir, heads.names, out)
    return out


def load_heads(model_path: str | os.PathLike[str], *, who: str) -> Heads:
    """The heads beside ``model_path`` (:func:`heads_path`).

    Raises
    ------
    ConfigurationError
        There is no sidecar (``embellama convert`` writes it from the Hugging Face folder), or it is not one.
    """
    path = heads_path(model_path)
    if not path.is_file():
        raise ConfigurationError(
            f"model {who!r}: no heads file {path} (embellama convert writes it beside the GGUF from the "
            "Hugging Face folder that has the MLM head, sparse_linear.pt/colbert_linear.pt or a Dense module)"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            arrays = {k: np.asarray(data[k], dtype=np.float32) for k in data.files if k != "meta"}
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigurationError(f"model {who!r}: {path} is not a heads file: {exc}") from None
    if meta.get("format") != FORMAT:
        raise ConfigurationError(f"model {who!r}: {path} has heads format {meta.get('format')}; expected {FORMAT}")
    return Heads(arrays, meta)
