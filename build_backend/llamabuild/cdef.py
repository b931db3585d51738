# SPDX-License-Identifier: Apache-2.0
"""The C declarations a build is probed and installed with: the pinned ``include/llama.cdef.h``,
read here, or for another llama.cpp, generated from its ``llama.h`` by embellama's generator.

The structs (one field per line) and enum constants of a declarations file are read with the
standard library; generating declarations needs ``embellama._native.cdefgen`` and pycparser,
loaded only for a llama.cpp other than the pinned one.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import sys
from pathlib import Path
from typing import Any

from llamabuild import pins
from llamabuild.report import BuildError, warn

CDEFGEN = "embellama._native.cdefgen"  # the generator (pycparser), imported only when it is needed

_COMMENT_RE = re.compile(r"/\*.*?\*/|//[^\n]*", re.DOTALL)
_STRUCT_RE = re.compile(
    r"^[ \t]*(typedef[ \t]+)?struct[ \t]+([A-Za-z_]\w*)[ \t]*\{[ \t]*\n"
    r"(.*?)"
    r"^[ \t]*\}[ \t]*([A-Za-z_]\w*)?[ \t]*;",
    re.MULTILINE | re.DOTALL,
)
_FUNCPTR_FIELD_RE = re.compile(r"\(\s*\*\s*([A-Za-z_]\w*)\s*\)\s*\(")
_TRAILING_IDENT_RE = re.compile(r"([A-Za-z_]\w*)$")


def _strip_comments(text: str) -> str:
    def blank(match: re.Match[str]) -> str:
        newlines = match.group(0).count("\n")
        return "\n" * newlines if newlines else " "

    return _COMMENT_RE.sub(blank, text)


def _field_name(struct: str, decl: str) -> str:
    match = _FUNCPTR_FIELD_RE.search(decl)
    if match:
        return match.group(1)
    if "," in decl:
        raise ValueError(f"struct {struct}: one field per line, got {decl!r}")
    if ":" in decl:
        raise ValueError(f"struct {struct}: bit-fields have no offsetof: {decl!r}")
    bare = re.sub(r"\[[^\]]*\]", "", decl).strip()
    match = _TRAILING_IDENT_RE.search(bare)
    if not match or not bare[: match.start()].strip():
        raise ValueError(f"struct {struct}: cannot read a field from {decl!r}")
    return match.group(1)


def parse_cdef_structs(text: str) -> dict[str, list[str]]:
    """Field names, in order, of every struct *defined* in a cdef text.

    Blocks are ``struct NAME {`` ... ``};`` or ``typedef struct NAME {`` ... ``} NAME;``
    with one field per line; comments are ignored.  Raises ValueError on anything
    else inside a block (nested definitions, several fields on a line, bit-fields).
    """
    clean = _strip_comments(text)
    structs: dict[str, list[str]] = {}
    for match in _STRUCT_RE.finditer(clean):
        is_typedef, name, body, alias = match.groups()
        if alias and not is_typedef:
            raise ValueError(f"struct {name}: '}} {alias};' declares a variable, not a type")
        if is_typedef and not alias:
            raise ValueError(f"typedef struct {name}: missing the typedef name after '}}'")
        if name in structs:
            raise ValueError(f"struct {name} is defined twice")
        fields: list[str] = []
        for raw in body.splitlines():
            line = raw.strip()
            if not line:
                continue
            if "{" in line or "}" in line:
                raise ValueError(f"struct {name}: nested definitions are not supported: {raw!r}")
            if not line.endswith(";") or line.count(";") != 1:
                raise ValueError(f"struct {name}: expected one 'type name;' per line: {raw!r}")
            field = _field_name(name, line[:-1].strip())
            if field in fields:
                raise ValueError(f"struct {name}: field {field!r} appears twice")
            fields.append(field)
        structs[name] = fields
    return structs


_ENUM_RE = re.compile(r"^[ \t]*enum[ \t]+[A-Za-z_]\w*[ \t]*\{(.*?)\}", re.MULTILINE | re.DOTALL)
_DEFINE_RE = re.compile(r"^#define\s+(\w+)\s+\S+", re.MULTILINE)


def parse_cdef_enums(text: str) -> list[str]:
    """The constants of every enum *defined* in a cdef text, in order, then its ``#define`` constants."""
    names: list[str] = []
    for match in _ENUM_RE.finditer(_strip_comments(text)):
        for item in match.group(1).split(","):
            name = item.split("=")[0].strip()
            if name:
                names.append(name)
    return names + _DEFINE_RE.findall(text)


@dataclasses.dataclass
class Declarations:
    """The C declarations a build is probed and installed with."""

    text: str
    structs: dict[str, list[str]]
    name: str  # for messages: include/llama.cdef.h, or what they were generated from
    generated: bool = False
    enum_values: dict[str, int] = dataclasses.field(default_factory=dict)  # measured by the probe


def read_cdef(path: Path) -> tuple[str, dict[str, list[str]]]:
    """The text of the cdef file and its structs' field names."""
    try:
        text = path.read_text(encoding="utf-8")
        structs = parse_cdef_structs(text)
    except (OSError, ValueError) as exc:
        raise BuildError(f"{path}: {exc}") from exc
    if not structs:
        raise BuildError(f"{path} defines no structs to probe")
    return text, structs


def generate_cdef(header: Path, label: str) -> str:
    """embellama's declarations for ``header``, by ``embellama._native.cdefgen`` (needs pycparser)."""
    try:
        module: Any = importlib.import_module(CDEFGEN)
    except ImportError as exc:
        raise BuildError(
            f"declarations for a llama.cpp other than {pins.LLAMA_CPP_COMMIT[:12]} are generated with pycparser, "
            f"which {sys.executable} lacks ({exc}): pip install pycparser, or run build_llama.py with the "
            "Python that has embellama installed"
        ) from exc
    try:
        result = module.generate_from_source(header, label)
    except module.GeneratorError as exc:
        raise BuildError(f"cannot generate declarations from {header}: {exc}") from exc
    if result.missing:
        warn(f"{header} lacks {', '.join(result.missing)} (embellama uses them where they exist)")
    return str(result.text)
