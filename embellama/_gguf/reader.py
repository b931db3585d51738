# SPDX-License-Identifier: Apache-2.0
"""GGUF and safetensors files read in pure Python, and GGUF files rewritten with gguf-py.

- :func:`read_header` reads a GGUF's metadata and tensor directory without llama.cpp (so the engine and
  the CLI can tell a reranker from an embedding model before loading weights). Arrays are skipped unless
  asked for.
- :func:`rewrite` copies a GGUF with keys set or dropped and tensors replaced or added (needs the ``gguf``
  package, the ``embellama[gguf]`` extra).
- :func:`checkpoint_tensors` reads named tensors of a Hugging Face checkpoint (``*.safetensors`` with
  numpy alone; ``pytorch_model.bin`` with torch).
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from embellama._exceptions import ConfigurationError, ModelLoadError, ModelNotFoundError

__all__ = ["Header", "checkpoint_tensors", "read_header", "rewrite"]

TOKEN_TYPE_OFFSET_KEY = "embellama.token_type_offset"
"""Where the token rows with token type 1 folded in start (written by ``embellama convert`` for a cross-encoder)."""

ACTIVATION_KEY = "embellama.activation"
"""The activation a cross-encoder was saved with ("sigmoid", "identity" or "softmax")."""

_MAGIC = b"GGUF"
# GGUF value types: the struct format of the scalars, 8 (string) and 9 (array) apart.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_MAX_ITEMS = 1 << 32  # more is a damaged file, not a vocabulary


@dataclasses.dataclass(frozen=True)
class Header:
    """What a GGUF says before its tensor data.

    ``metadata`` maps keys to values; an array not asked for is its length (an int) in ``array_lengths``
    instead. ``tensors`` maps tensor names to (shape in GGUF's order, ggml type code).
    """

    metadata: dict[str, Any]
    array_lengths: dict[str, int]
    tensors: dict[str, tuple[tuple[int, ...], int]]

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "unknown"))

    def arch_value(self, key: str, default: Any = None) -> Any:
        """The value of ``<architecture>.<key>``."""
        return self.metadata.get(f"{self.architecture}.{key}", default)

    def array_length(self, key: str) -> int | None:
        """The length of the array ``key`` (read or skipped), None when absent."""
        if key in self.array_lengths:
            return self.array_lengths[key]
        value = self.metadata.get(key)
        return len(value) if isinstance(value, list) else None


class _Reader:
    def __init__(self, f: BinaryIO, path: Path) -> None:
        self.f, self.path = f, path

    def take(self, fmt: str) -> Any:
        size = struct.calcsize("<" + fmt)
        data = self.f.read(size)
        if len(data) != size:
            raise ModelLoadError(str(self.path), "the GGUF header ends early")
        return struct.unpack("<" + fmt, data)[0]

    def string(self) -> str:
        n = self.take("Q")
        if n > 1 << 30:
            raise ModelLoadError(str(self.path), f"a GGUF string of {n} bytes")
        data = self.f.read(n)
        if len(data) != n:
            raise ModelLoadError(str(self.path), "the GGUF header ends early")
        return data.decode("utf-8", "replace")

    def value(self, kind: int, keep: bool) -> Any:
        if kind in _SCALARS:
            return self.take(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            sub, n = self.take("I"), self.take("Q")
            if n > _MAX_ITEMS:
                raise ModelLoadError(str(self.path), f"a GGUF array of {n} items")
            if not keep and sub in _SCALARS:
                self.f.seek(n * struct.calcsize("<" + _SCALARS[sub]), os.SEEK_CUR)
                return n
            items = [self.value(sub, keep) for _ in range(n)]
            return items if keep else n
        raise ModelLoadError(str(self.path), f"unknown GGUF value type {kind}")


def read_header(path: str | os.PathLike[str], arrays: Iterable[str] = ()) -> Header:
    """Read a GGUF's metadata and tensor directory (no tensor data).

    Parameters
    ----------
    path : str or os.PathLike
        The GGUF file.
    arrays : iterable of str
        Array keys to read whole; other arrays are only measured.

    Returns
    -------
    Header
        The metadata, array lengths and tensor directory.

    Raises
    ------
    ModelNotFoundError
        No such file.
    ModelLoadError
        Not a GGUF file of version 2 or 3, or a damaged header.
    """
    p = Path(path)
    wanted = frozenset(arrays)
    try:
        f = open(p, "rb")  # noqa: SIM115 - closed below
    except OSError:
        raise ModelNotFoundError(str(p)) from None
    with f:
        r = _Reader(f, p)
        if f.read(4) != _MAGIC:
            raise ModelLoadError(str(p), "not a GGUF file")
        version = r.take("I")
        if version not in (2, 3):
            raise ModelLoadError(str(p), f"GGUF version {version} (2 and 3 are read)")
        n_tensors, n_kv = r.take("Q"), r.take("Q")
        if n_tensors > _MAX_ITEMS or n_kv > _MAX_ITEMS:
            raise ModelLoadError(str(p), "a damaged GGUF header")
        metadata: dict[str, Any] = {}
        lengths: dict[str, int] = {}
        for _ in range(n_kv):
            key, kind = r.string(), r.take("I")
            keep = key in wanted
            value = r.value(kind, keep)
            if kind == _ARRAY and not keep:
                lengths[key] = value
            else:
                metadata[key] = value
        tensors: dict[str, tuple[tuple[int, ...], int]] = {}
        for _ in range(n_tensors):
            name, n_dims = r.string(), r.take("I")
            if n_dims > 8:
                raise ModelLoadError(str(p), f"tensor {name!r} has {n_dims} dimensions")
            shape = tuple(r.take("Q") for _ in range(n_dims))
            kind = r.take("I")
            r.take("Q")  # offset
            tensors[name] = (shape, kind)
    return Header(metadata, lengths, tensors)


def require_gguf(why: str) -> Any:
    """The ``gguf`` package (gguf-py), or ConfigurationError saying ``why`` it is needed and how to install it."""
    try:
        import gguf
    except ImportError:
        raise ConfigurationError(
            f"{why}: writing them into a GGUF needs gguf-py: pip install 'embellama[gguf]'"
        ) from None
    return gguf


def rewrite(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    *,
    why: str,
    set_keys: Mapping[str, tuple[Any, Any]] | None = None,
    drop_keys: Iterable[str] = (),
    tensors: Mapping[str, npt.NDArray[Any]] | None = None,
) -> Path:
    """Copy the GGUF ``source`` to ``destination`` with keys set or dropped and tensors replaced or added.

    ``set_keys`` maps keys to ``(value, gguf.GGUFValueType)`` (arrays: ``(list, (ARRAY, item type))``);
    ``tensors`` maps names to float32 arrays in numpy's order, stored in the type the replaced tensor had
    (F32 for a new one). Everything else is copied unchanged. ``destination`` is written atomically and may
    be ``source`` itself.
    """
    gguf = require_gguf(why)
    src, dst = Path(source), Path(destination)
    if not src.is_file():
        raise ModelNotFoundError(str(src))
    set_keys = dict(set_keys or {})
    new_tensors = dict(tensors or {})
    skip = {"general.architecture", *drop_keys, *set_keys}
    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        writer = gguf.GGUFWriter(tmp, arch=arch, endianess=reader.endianess)
        alignment = reader.fields.get("general.alignment")
        if alignment is not None:
            writer.data_alignment = int(alignment.contents())
        for field in reader.fields.values():
            if field.name.startswith("GGUF.") or field.name in skip:
                continue
            kind = field.types[0]
            sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
        for key, (value, kind) in set_keys.items():
            if isinstance(kind, tuple):
                writer.add_key_value(key, value, kind[0], sub_type=kind[1])
            else:
                writer.add_key_value(key, value, kind)
        data: list[npt.NDArray[Any]] = []
        for tensor in reader.tensors:
            if tensor.name in new_tensors:
                raw, kind = _encode_tensor(gguf, new_tensors.pop(tensor.name), tensor.tensor_type)
            else:
                raw, kind = tensor.data, tensor.tensor_type
            writer.add_tensor_info(tensor.name, raw.shape, raw.dtype, raw.nbytes, raw_dtype=kind)
            data.append(raw)
        for name, values in new_tensors.items():
            raw, kind = _encode_tensor(gguf, values, gguf.GGMLQuantizationType.F32)
            writer.add_tensor_info(name, raw.shape, raw.dtype, raw.nbytes, raw_dtype=kind)
            data.append(raw)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for raw in data:
            writer.write_tensor_data(raw)
        writer.close()
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def tensor_values(source: str | os.PathLike[str], names: Iterable[str]) -> dict[str, npt.NDArray[np.float32]]:
    """Named tensors of a GGUF as float32 arrays in numpy's order (dequantized; needs gguf-py)."""
    gguf = require_gguf("reading tensors")
    wanted = set(names)
    reader = gguf.GGUFReader(Path(source))
    out: dict[str, npt.NDArray[np.float32]] = {}
    for tensor in reader.tensors:
        if tensor.name in wanted:
            values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
            out[tensor.name] = np.asarray(values, dtype=np.float32).reshape(tuple(reversed(tensor.shape.tolist())))
    return out


def _encode_tensor(gguf: Any, values: npt.NDArray[Any], kind: Any) -> tuple[npt.NDArray[Any], Any]:
    """``values`` (float) in ggml type ``kind``: F32 and F16 as numpy types, others through gguf-py's quantizer."""
    t = gguf.GGMLQuantizationType
    values = np.ascontiguousarray(values, dtype=np.float32)
    if kind == t.F32:
        return values, kind
    if kind == t.F16:
        return values.astype(np.float16), kind
    return gguf.quants.quantize(values, kind), kind


# -- Hugging Face checkpoints ------------------------------------------------------------------------------

_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "BF16": None}


def checkpoint_tensors(hf_dir: str | os.PathLike[str], names: Iterable[str]) -> dict[str, npt.NDArray[np.float32]]:
    """The tensors ``names`` of a Hugging Face checkpoint folder, as float32 arrays (absent names are left out).

    ``*.safetensors`` files (sharded or not) are read with numpy; a ``pytorch_model.bin`` needs torch.
    """
    folder = Path(hf_dir)
    wanted = set(names)
    out: dict[str, npt.NDArray[np.float32]] = {}
    files = sorted(folder.glob("*.safetensors"))
    for path in files:
        out.update(_safetensors(path, wanted - out.keys()))
    if not files and (folder / "pytorch_model.bin").is_file():
        import torch  # the converter needs it anyway

        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
        out = {k: v.float().numpy() for k, v in state.items() if k in wanted}
    return out


def _safetensors(path: Path, wanted: set[str]) -> dict[str, npt.NDArray[np.float32]]:
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
        base = 8 + size
        out: dict[str, npt.NDArray[np.float32]] = {}
        for name in sorted(wanted & header.keys()):
            info = header[name]
            start, end = info["data_offsets"]
            f.seek(base + start)
            buf = f.read(end - start)
            if info["dtype"] == "BF16":
                bits = np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16
                array = bits.view(np.float32)
            elif info["dtype"] in _ST_DTYPES:
                array = np.frombuffer(buf, dtype=np.dtype(_ST_DTYPES[info["dtype"]]).newbyteorder("<"))
            else:
                raise ConfigurationError(f"{path}: tensor {name} has dtype {info['dtype']}; expected F32, F16 or BF16")
            out[name] = array.astype(np.float32).reshape(info["shape"])
    return out
