# SPDX-License-Identifier: Apache-2.0
"""The pins: the llama.cpp embellama is built and tested with, read from ``pins.json`` beside this module.

``pins.json`` is the one place a pin lives. ``python build_llama.py --update-pin VERSION`` rewrites it
(with the regenerated declarations); this module, ``embellama/_native/compat.py`` (the supported range
in its errors) and ``noxfile.py`` (the llama-cpp-python pin and the version window) read it.

* ``llama_cpp_python``: the llama-cpp-python release whose sdist vendors the pinned llama.cpp
  (:data:`SDIST_VERSION`), with that sdist's sha256 (:data:`SDIST_SHA256`);
* ``llama_cpp_commit``: the pinned llama.cpp commit (:data:`LLAMA_CPP_COMMIT`), with the sha256 of
  its ``include/llama.h`` (:data:`LLAMA_H_SHA256`: a source with that header needs no generated
  declarations);
* ``oldest_llama_cpp_python`` / ``oldest_llama_cpp_commit``: the oldest llama.cpp supported;
* ``window``: the llama-cpp-python releases whose llama.cpp CI tests, from the oldest to the pin.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

__all__ = [
    "FILE",
    "GIT_URL",
    "LLAMA_CPP_COMMIT",
    "LLAMA_H_SHA256",
    "OLDEST_COMMIT",
    "OLDEST_VERSION",
    "PROJECT",
    "SDIST_SHA256",
    "SDIST_SUBDIR",
    "SDIST_VERSION",
    "WINDOW",
    "Pins",
    "dumps",
    "loads",
    "read",
]

PROJECT = "llama-cpp-python"  # the project whose sdists vendor llama.cpp
SDIST_SUBDIR = "vendor/llama.cpp"  # where in such an sdist
GIT_URL = "https://github.com/ggml-org/llama.cpp.git"
FILE = Path(__file__).resolve().with_name("pins.json")


@dataclasses.dataclass(frozen=True)
class Pins:
    """The content of ``pins.json``."""

    llama_cpp_python: str
    sdist_sha256: str
    llama_cpp_commit: str
    llama_h_sha256: str
    oldest_llama_cpp_python: str
    oldest_llama_cpp_commit: str
    window: tuple[str, ...]
    comment: str = ""

    def moved(self, version: str, commit: str, sdist_sha256: str, llama_h_sha256: str) -> Pins:
        """These pins moved to llama-cpp-python ``version``: the window ends at it instead of the old pin."""
        window = (*(v for v in self.window[:-1] if v != version), version)
        return dataclasses.replace(
            self,
            llama_cpp_python=version,
            llama_cpp_commit=commit,
            sdist_sha256=sdist_sha256,
            llama_h_sha256=llama_h_sha256,
            window=window,
        )


_STRINGS = tuple(f.name for f in dataclasses.fields(Pins) if f.name not in ("window", "comment"))


def loads(text: str, where: str = "pins.json") -> Pins:
    """Parse and check the text of ``pins.json`` (``where`` names it in errors)."""
    try:
        data: Any = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{where}: not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected an object")
    unknown = set(data) - {f.name for f in dataclasses.fields(Pins)}
    if unknown:
        raise ValueError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
    for key in _STRINGS:
        if not isinstance(data.get(key), str) or not data[key]:
            raise ValueError(f"{where}: {key!r} must be a non-empty string")
    window = data.get("window")
    if not isinstance(window, list) or not window or not all(isinstance(v, str) for v in window):
        raise ValueError(f"{where}: 'window' must be a list of llama-cpp-python versions")
    if window[0] != data["oldest_llama_cpp_python"] or window[-1] != data["llama_cpp_python"]:
        raise ValueError(f"{where}: 'window' must run from oldest_llama_cpp_python to llama_cpp_python")
    return Pins(**{key: data[key] for key in _STRINGS}, window=tuple(window), comment=str(data.get("comment", "")))


def dumps(pins: Pins) -> str:
    """The text of ``pins.json`` for ``pins`` (the comment first, then the pins in a fixed order)."""
    data = dataclasses.asdict(pins)
    ordered = {"comment": data.pop("comment"), **data, "window": list(pins.window)}
    return json.dumps(ordered, indent=2) + "\n"


def read(path: Path = FILE) -> Pins:
    """The pins in ``path`` (default: the ``pins.json`` beside this module)."""
    return loads(path.read_text(encoding="utf-8"), str(path))


_PINNED = read()

#: The llama-cpp-python release whose sdist vendors the pinned llama.cpp.
SDIST_VERSION = _PINNED.llama_cpp_python
#: That sdist's sha256 (checked before it is extracted).
SDIST_SHA256 = _PINNED.sdist_sha256
#: The pinned llama.cpp commit.
LLAMA_CPP_COMMIT = _PINNED.llama_cpp_commit
#: The sha256 of the pinned commit's ``include/llama.h``.
LLAMA_H_SHA256 = _PINNED.llama_h_sha256
#: The oldest llama-cpp-python release whose llama.cpp embellama supports.
OLDEST_VERSION = _PINNED.oldest_llama_cpp_python
#: That release's llama.cpp commit (abbreviated, as its CHANGELOG names it).
OLDEST_COMMIT = _PINNED.oldest_llama_cpp_commit
#: The llama-cpp-python releases whose llama.cpp CI tests, the oldest first and the pin last.
WINDOW = _PINNED.window
