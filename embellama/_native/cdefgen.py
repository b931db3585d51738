# SPDX-License-Identifier: Apache-2.0
"""Write embellama's cffi declarations from a llama.cpp ``llama.h``.

The header (and the ggml headers it includes) goes through the C preprocessor, with
small stand-ins for the C library headers so that the result is plain C that
``pycparser`` parses; from that syntax tree this module keeps what embellama calls
(:data:`FUNCTIONS`), with every type those declarations need, in the header's own order
and spelling:

* a struct passed or returned by value (``llama_batch``, the params structs) is written
  in full, one field per line, so that cffi and the build-time probe see its layout;
* a struct only pointed to stays opaque (``struct llama_model;``);
* every enum a kept declaration names is written with its values evaluated;
* the integer ``#define`` constants of :data:`CONSTANTS` (``LLAMA_TOKEN_NULL``...) that the
  header defines become ``#define NAME value`` lines, valued by the preprocessor itself.

``python -m embellama._native.cdefgen path/to/llama.h`` prints the declarations; the tests
regenerate ``include/llama.cdef.h`` from the pinned commit's header and compare.
Standard library plus pycparser (a dependency of cffi).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycparser import c_ast, c_generator, c_parser

from embellama._native.compat import LORA_FUNCTIONS
from llamabuild import probe as _probe
from llamabuild.probe import probe_program as probe_program  # the one layout probe, the build's

__all__ = ["FUNCTIONS", "Declarations", "GeneratorError", "generate", "generate_from_source", "preprocess"]


class GeneratorError(Exception):
    """The header could not be preprocessed or parsed, or lacks what embellama needs."""


#: The functions embellama may call, in no particular order (the output follows the header).
#: Absent ones are listed in :attr:`Declarations.missing`; the compatibility layer
#: (:mod:`embellama._native.compat`) decides which of them a library must have.
FUNCTIONS = (
    # ggml: logging and devices
    "ggml_backend_reg_count",
    "ggml_backend_reg_get",
    "ggml_backend_reg_name",
    "ggml_backend_dev_count",
    "ggml_backend_dev_get",
    "ggml_backend_dev_name",
    "ggml_backend_dev_description",
    "ggml_backend_dev_type",
    "ggml_backend_dev_memory",
    "ggml_backend_load_all_from_path",
    # llama: library
    "llama_version",
    "llama_print_system_info",
    "llama_log_set",
    "llama_model_default_params",
    "llama_context_default_params",
    "llama_model_quantize_default_params",
    "llama_backend_init",
    "llama_backend_free",
    "llama_max_devices",
    "llama_max_parallel_sequences",
    "llama_supports_mmap",
    "llama_supports_gpu_offload",
    # models and contexts
    "llama_model_load_from_file",
    "llama_model_free",
    "llama_init_from_model",
    "llama_free",
    "llama_model_quantize",
    "llama_n_ctx",
    "llama_n_ctx_seq",
    "llama_n_batch",
    "llama_n_ubatch",
    "llama_n_seq_max",
    "llama_get_memory",
    "llama_pooling_type",
    "llama_model_get_vocab",
    "llama_model_n_ctx_train",
    "llama_model_n_embd",
    "llama_model_n_embd_out",
    "llama_model_n_layer",
    "llama_model_n_head",
    "llama_model_n_cls_out",
    "llama_model_meta_val_str",
    "llama_model_meta_count",
    "llama_model_meta_key_by_index",
    "llama_model_meta_val_str_by_index",
    "llama_model_desc",
    "llama_model_ftype",
    "llama_model_size",
    "llama_model_n_params",
    "llama_model_has_encoder",
    "llama_model_has_decoder",
    "llama_model_is_recurrent",
    "llama_memory_clear",
    "llama_kv_self_clear",  # before llama_memory_clear
    # vocabulary and tokens
    "llama_vocab_type",
    "llama_vocab_n_tokens",
    "llama_vocab_get_text",
    "llama_vocab_bos",
    "llama_vocab_eos",
    "llama_vocab_sep",
    "llama_vocab_pad",
    "llama_vocab_get_add_bos",
    "llama_vocab_get_add_eos",
    "llama_vocab_get_add_sep",
    "llama_tokenize",
    "llama_token_to_piece",
    "llama_detokenize",
    # computing
    "llama_batch_init",
    "llama_batch_free",
    "llama_encode",
    "llama_decode",
    "llama_set_n_threads",
    "llama_set_embeddings",
    "llama_synchronize",
    "llama_get_embeddings",
    "llama_get_embeddings_ith",
    "llama_get_embeddings_seq",
    # LoRA adapters (optional): the newer llama.cpp's array setter, and the older's single-adapter ones
    *LORA_FUNCTIONS,
)

#: Enums written whether or not a kept declaration names them (the SDK reads their values).
ENUMS = ("ggml_log_level", "ggml_type", "ggml_backend_dev_type")
#: The integer ``#define`` constants of llama.h written into the cdef (as ``#define NAME value``).
CONSTANTS = ("LLAMA_DEFAULT_SEED", "LLAMA_TOKEN_NULL")
_CONSTANT_TAG = "embellama_constant_"  # the enum a constant's value passes the preprocessor in

#: Types cffi knows by name: the stand-in headers typedef them, the output never does.
_BUILTIN_TYPES = {
    "size_t": "unsigned long",
    "ssize_t": "long",
    "ptrdiff_t": "long",
    "intptr_t": "long",
    "uintptr_t": "unsigned long",
    "int8_t": "signed char",
    "uint8_t": "unsigned char",
    "int16_t": "short",
    "uint16_t": "unsigned short",
    "int32_t": "int",
    "uint32_t": "unsigned int",
    "int64_t": "long long",
    "uint64_t": "unsigned long long",
    "bool": "_Bool",
    "wchar_t": "int",
    "FILE": "struct _IO_FILE",
    "va_list": "void *",
}
_C_KEYWORDS = {"void", "char", "short", "int", "long", "float", "double", "signed", "unsigned", "_Bool"}
_STUB_NAMES = (
    "stddef.h",
    "stdint.h",
    "stdio.h",
    "stdbool.h",
    "stdlib.h",
    "string.h",
    "stdarg.h",
    "limits.h",
    "inttypes.h",
    "assert.h",
    "math.h",
)
_STUB_MARK = "embellama-stub"
# Preprocessor settings: no compiler extensions (no __attribute__, __declspec), plain C.
_DEFINES = ("-U__GNUC__", "-U__clang__", "-U_MSC_VER", "-U__cplusplus", "-D_Noreturn=", "-D__restrict=", "-D restrict=")


def _stub_text() -> str:
    lines = [f"/* {_STUB_MARK}: the C library types llama.h uses, for pycparser */"]
    lines += [f"typedef {base} {name};" for name, base in _BUILTIN_TYPES.items()]
    lines += ["#define NULL ((void*)0)", "#define true 1", "#define false 0"]
    return "\n".join(lines) + "\n"


def find_compiler() -> list[str]:
    """``$CC``, else ``cc``, ``gcc`` or ``clang`` from PATH (:func:`llamabuild.probe.find_compiler`)."""
    try:
        return _probe.find_compiler()
    except _probe.ProbeError:
        raise GeneratorError("no C compiler found for the preprocessor (set $CC)") from None


include_dirs = _probe.include_dirs  # llama.h's folder and ggml's include folder beside it


def preprocess(header: Path, includes: Sequence[Path] = (), compiler: Sequence[str] | None = None) -> str:
    """``header`` through the C preprocessor, with stand-in C library headers."""
    if not header.is_file():
        raise GeneratorError(f"{header}: no such header")
    cmd = list(compiler or find_compiler())
    with tempfile.TemporaryDirectory(prefix="embellama-cdefgen-") as tmp:
        stub = _stub_text()
        for name in _STUB_NAMES:
            (Path(tmp) / name).write_text(stub if name == "stddef.h" else '#include "stddef.h"\n', encoding="utf-8")
        (Path(tmp) / "stddef.h").write_text(f"#ifndef EMB_STUB\n#define EMB_STUB\n{stub}#endif\n", encoding="utf-8")
        # the header, then each constant it defines as an enum the parser can read
        wrapper = Path(tmp) / "embellama-constants.c"
        lines = [f'#include "{header.resolve()}"']
        for name in CONSTANTS:
            lines += [f"#ifdef {name}", f"enum {_CONSTANT_TAG}{name} {{ {_CONSTANT_TAG}{name} = ({name}) }};", "#endif"]
        wrapper.write_text("\n".join(lines) + "\n", encoding="utf-8")
        cmd += ["-E", "-nostdinc", "-std=c11", *_DEFINES, "-I", tmp]
        for folder in [*includes, *include_dirs(header)]:
            cmd += ["-I", str(folder)]
        cmd.append(str(wrapper))
        env = dict(os.environ, LC_ALL="C", LANG="C")
        try:
            run = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        except OSError as exc:
            raise GeneratorError(f"cannot run the C preprocessor {cmd[0]!r}: {exc}") from exc
    if run.returncode != 0:
        raise GeneratorError(f"preprocessing {header} failed (exit {run.returncode}):\n{run.stderr.strip()[-2000:]}")
    return run.stdout


# --------------------------------------------------------------------------- the syntax tree


@dataclass
class _Item:
    """One top-level declaration of the header, in order."""

    kind: str  # "function", "struct", "enum", "typedef"
    name: str
    node: c_ast.Node
    from_stub: bool


def _items(ast: c_ast.FileAST) -> Iterator[_Item]:
    for node in ast.ext:
        stub = _STUB_MARK in str(getattr(node.coord, "file", "")) or Path(str(node.coord.file)).name in _STUB_NAMES
        if isinstance(node, c_ast.Typedef):
            yield _Item("typedef", node.name, node, stub)
            inner = node.type.type if isinstance(node.type, c_ast.TypeDecl) else None
            if isinstance(inner, (c_ast.Struct, c_ast.Enum)) and inner.name:
                yield _Item("struct" if isinstance(inner, c_ast.Struct) else "enum", inner.name, inner, stub)
        elif isinstance(node, c_ast.Decl):
            if isinstance(node.type, c_ast.FuncDecl):
                yield _Item("function", node.name, node, stub)
            elif isinstance(node.type, (c_ast.Struct, c_ast.Enum)) and node.type.name:
                kind = "struct" if isinstance(node.type, c_ast.Struct) else "enum"
                yield _Item(kind, node.type.name, node.type, stub)
        elif isinstance(node, c_ast.FuncDef):
            continue  # static inline helpers: not in the library's symbol table


def _references(node: c_ast.Node) -> Iterator[tuple[str, str, bool]]:
    """``(kind, name, by_value)`` of every struct, enum and typedef a type mentions."""

    def walk(n: c_ast.Node | None, by_value: bool) -> Iterator[tuple[str, str, bool]]:
        if n is None:
            return
        if isinstance(n, c_ast.PtrDecl):
            yield from walk(n.type, False)
        elif isinstance(n, c_ast.ArrayDecl):
            yield from walk(n.type, by_value)
        elif isinstance(n, c_ast.FuncDecl):
            for param in (n.args.params if n.args else []) or []:
                yield from walk(getattr(param, "type", None), True)
            yield from walk(n.type, True)
        elif isinstance(n, (c_ast.TypeDecl, c_ast.Typename, c_ast.Decl, c_ast.Typedef)):
            yield from walk(n.type, by_value)
        elif isinstance(n, c_ast.Struct):
            if n.name:
                yield ("struct", n.name, by_value)
            else:
                for member in n.decls or []:  # an anonymous nested struct
                    yield from walk(member.type, True)
        elif isinstance(n, c_ast.Union):
            for member in n.decls or []:
                yield from walk(member.type, True)
        elif isinstance(n, c_ast.Enum):
            if n.name:
                yield ("enum", n.name, True)
        elif isinstance(n, c_ast.IdentifierType):
            for name in n.names:
                if name not in _C_KEYWORDS:
                    yield ("typedef", name, by_value)

    yield from walk(node, True)


def _eval(expr: c_ast.Node, known: dict[str, int]) -> int:
    """The value of an enumerator's constant expression."""
    if isinstance(expr, c_ast.Constant):
        text = expr.value.rstrip("uUlL")
        if expr.type == "char":
            return ord(text.strip("'"))
        return int(text, 0) if not re.fullmatch(r"0[0-7]+", text) else int(text, 8)
    if isinstance(expr, c_ast.ID):
        if expr.name not in known:
            raise GeneratorError(f"enumerator refers to unknown name {expr.name!r}")
        return known[expr.name]
    if isinstance(expr, c_ast.UnaryOp):
        value = _eval(expr.expr, known)
        unary = {"-": -value, "+": value, "~": ~value, "!": int(not value)}
        if expr.op in unary:
            return unary[expr.op]
    if isinstance(expr, c_ast.BinaryOp):
        a, b = _eval(expr.left, known), _eval(expr.right, known)
        binary = {
            "+": a + b,
            "-": a - b,
            "*": a * b,
            "|": a | b,
            "&": a & b,
            "^": a ^ b,
            "<<": a << b if b >= 0 else 0,
            ">>": a >> b if b >= 0 else 0,
        }
        if expr.op in binary:
            return binary[expr.op]
    if isinstance(expr, c_ast.Cast):
        return _eval(expr.expr, known)
    raise GeneratorError(f"cannot evaluate the enumerator expression {c_generator.CGenerator().visit(expr)!r}")


# --------------------------------------------------------------------------- selection and output


@dataclass
class Declarations:
    """The generated cdef and what went into it."""

    text: str
    functions: list[str]
    structs: dict[str, list[str]]
    """Structs written in full: their fields, in order (what the layout probe measures)."""
    enums: dict[str, dict[str, int]]
    missing: list[str] = field(default_factory=list)
    """Functions of :data:`FUNCTIONS` the header does not declare."""
    constants: dict[str, int] = field(default_factory=dict)
    """The ``#define`` constants of :data:`CONSTANTS` the header defines, with their values."""


class _Selection:
    def __init__(self, items: list[_Item]) -> None:
        self.items = items
        self.by_key: dict[tuple[str, str], list[_Item]] = {}
        for item in items:
            self.by_key.setdefault((item.kind, item.name), []).append(item)
        self.needed: set[tuple[str, str]] = set()
        self.by_value: dict[str, set[str]] = {"struct": set(), "typedef": set()}

    def definition(self, kind: str, name: str) -> _Item | None:
        found = self.by_key.get((kind, name), [])
        full = [i for i in found if kind != "struct" or i.node.decls is not None]
        chosen = full or found
        return chosen[-1] if chosen else None

    def need(self, kind: str, name: str, by_value: bool = True) -> None:
        if kind == "typedef" and name in _BUILTIN_TYPES:
            return
        key = (kind, name)
        if kind in ("struct", "typedef") and by_value and name not in self.by_value[kind]:
            self.by_value[kind].add(name)
            self.needed.discard(key)  # visit it again, now by value
        if key in self.needed:
            return
        self.needed.add(key)
        item = self.definition(kind, name)
        if item is None:
            if kind == "struct" and not by_value:
                return  # declared on the fly by a pointer typedef
            raise GeneratorError(f"the header uses {kind} {name} but does not declare it")
        if kind == "struct" and name not in self.full_structs:
            return
        node = item.node.decls if kind == "struct" else item.node
        for member in node if isinstance(node, list) else [node]:
            for ref_kind, ref_name, ref_by_value in _references(member):
                # a typedef names its struct by value only where the typedef is used by value
                if kind == "typedef" and ref_kind in ("struct", "typedef"):
                    ref_by_value = ref_by_value and name in self.by_value["typedef"]
                self.need(ref_kind, ref_name, ref_by_value)

    @property
    def full_structs(self) -> set[str]:
        return self.by_value["struct"]


def _select(ast: c_ast.FileAST, functions: Iterable[str], enums: Iterable[str]) -> tuple[_Selection, list[str]]:
    sel = _Selection([i for i in _items(ast) if not i.from_stub])
    missing = []
    for name in functions:
        if ("function", name) in sel.by_key:
            sel.need("function", name)
        else:
            missing.append(name)
    for name in enums:
        if ("enum", name) in sel.by_key:
            sel.need("enum", name)
    return sel, missing


def _render_enum(node: c_ast.Enum, known: dict[str, int]) -> tuple[str, dict[str, int]]:
    values: dict[str, int] = {}
    nxt = 0
    for enumerator in node.values.enumerators:
        value = nxt if enumerator.value is None else _eval(enumerator.value, {**known, **values})
        values[enumerator.name] = value
        nxt = value + 1
    known.update(values)
    width = max(len(n) for n in values)
    body = ",\n".join(f"    {n:<{width}} = {v}" for n, v in values.items())
    return f"enum {node.name} {{\n{body}\n}};", values


def _render_fields(gen: c_generator.CGenerator, node: c_ast.Struct) -> str:
    lines = []
    for member in node.decls:
        text = " ".join(gen.visit(member).split())
        if "\n" in text or "{" in text:
            raise GeneratorError(f"struct {node.name}: nested definitions are not supported ({member.name})")
        lines.append(f"    {text};")
    return "\n".join(lines)


def _plain(gen: c_generator.CGenerator, node: c_ast.Node) -> str:
    """A declaration on one line, without ``extern``."""
    if isinstance(node, c_ast.Decl):
        node.storage = [s for s in node.storage if s != "extern"]
        node.funcspec = []
    return " ".join(gen.visit(node).split()) + ";"


def generate(text: str, label: str, functions: Iterable[str] = FUNCTIONS, enums: Iterable[str] = ENUMS) -> Declarations:
    """The cdef for preprocessed header ``text``; ``label`` names the source in the heading."""
    try:
        ast = c_parser.CParser().parse(text, "llama.h")
    except Exception as exc:  # pycparser raises its own ParseError and plain AssertionErrors
        raise GeneratorError(f"pycparser cannot parse the preprocessed header: {exc}") from exc
    sel, missing = _select(ast, functions, enums)
    gen = c_generator.CGenerator()
    out: list[str] = []
    declared: set[str] = set()
    known: dict[str, int] = {}
    result = Declarations("", [], {}, {}, missing)

    def forward(node: c_ast.Node) -> None:
        for kind, name, _ in _references(node):
            if kind == "struct" and name not in sel.full_structs and name not in declared:
                declared.add(name)
                out.append(f"struct {name};")

    for item in sel.items:
        key = (item.kind, item.name)
        if key not in sel.needed or (item is not sel.definition(*key) and item.kind != "function"):
            continue
        if item.kind == "function":
            forward(item.node)
            out.append(_plain(gen, item.node))
            result.functions.append(item.name)
        elif item.kind == "enum":
            enum_text, values = _render_enum(item.node, known)
            out.append(enum_text)
            result.enums[item.name] = values
        elif item.kind == "struct" and item.name in sel.full_structs:
            forward(item.node)
            declared.add(item.name)
            fields = _render_fields(gen, item.node)
            typedef = _typedef_of(sel, item.name)
            if typedef is not None:
                out.append(f"typedef struct {item.name} {{\n{fields}\n}} {typedef};")
            else:
                out.append(f"struct {item.name} {{\n{fields}\n}};")
            result.structs[item.name] = [m.name for m in item.node.decls]
        elif item.kind == "struct":
            if item.name not in declared:
                declared.add(item.name)
                out.append(f"struct {item.name};")
        elif item.kind == "typedef":
            inner = item.node.type.type if isinstance(item.node.type, c_ast.TypeDecl) else None
            if isinstance(inner, c_ast.Struct) and inner.decls is not None:
                continue  # written with its struct above
            if isinstance(inner, c_ast.Enum) and inner.values is not None:
                out.append(f"typedef enum {inner.name} {item.name};")
                continue
            forward(item.node)
            out.append(_plain(gen, item.node))
    heading = (
        "/*\n * embellama: C declarations for cffi (ABI mode), generated by embellama._native.cdefgen from\n"
        f" * {label}\n"
        " * Do not edit: regenerate with python -m embellama._native.cdefgen (build_llama.py --update-pin).\n */\n"
    )
    for node in ast.ext:  # the constants' enums, from the wrapper preprocess() adds after the header
        tag = getattr(getattr(node, "type", None), "name", None) or ""
        if isinstance(node, c_ast.Decl) and isinstance(node.type, c_ast.Enum) and tag.startswith(_CONSTANT_TAG):
            (enumerator,) = node.type.values.enumerators
            result.constants[tag[len(_CONSTANT_TAG) :]] = _eval(enumerator.value, {})
    defines = "".join(f"#define {name} {value}\n" for name, value in result.constants.items())
    result.text = heading + "\n" + (defines + "\n" if defines else "") + "\n\n".join(_blocks(out)) + "\n"
    return result


def _typedef_of(sel: _Selection, struct: str) -> str | None:
    """The name of ``typedef struct NAME {...} ALIAS;`` when the header defines it that way."""
    for item in sel.by_key.get(("typedef", struct), []):
        inner = item.node.type.type if isinstance(item.node.type, c_ast.TypeDecl) else None
        if isinstance(inner, c_ast.Struct) and inner.name == struct and inner.decls is not None:
            return item.name
    return None


def _blocks(lines: list[str]) -> Iterator[str]:
    """Group one-line declarations; multi-line ones (structs, enums) stand alone."""
    run: list[str] = []
    for line in lines:
        if "\n" in line:
            if run:
                yield "\n".join(run)
                run = []
            yield line
        else:
            run.append(line)
    if run:
        yield "\n".join(run)


def header_digest(header: Path) -> str:
    """sha256 over ``header`` and every header in the folders it includes from."""
    digest = hashlib.sha256(b"embellama-cdefgen-1\0")
    for folder in include_dirs(header):
        for path in sorted(folder.glob("*.h")):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def measure(
    header: Path, structs: dict[str, list[str]], enums: Iterable[str], compiler: Sequence[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Compile and run the layout probe (:func:`llamabuild.probe.probe_program`, the build's own) against
    ``header``: ``{"layout": ..., "enums": ...}``. Its failures are :class:`GeneratorError`."""
    try:
        return _probe.measure(header, structs, enums, compiler or find_compiler())
    except _probe.ProbeError as exc:
        raise GeneratorError(f"the layout probe failed against {header}: {exc}") from exc


def generate_from_source(header: Path, label: str | None = None, compiler: Sequence[str] | None = None) -> Declarations:
    """Preprocess and parse ``header`` (a ``llama.h``) and return its :class:`Declarations`."""
    text = preprocess(header, compiler=compiler)
    return generate(text, label or f"{header.name}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m embellama._native.cdefgen", description=__doc__.split("\n\n")[0])
    parser.add_argument("header", type=Path, help="llama.h (its ggml headers are found beside it)")
    parser.add_argument("-o", "--output", type=Path, help="write here instead of printing")
    parser.add_argument("--label", help="what the heading names as the source (default: the header's name)")
    args = parser.parse_args(argv)
    try:
        result = generate_from_source(args.header, args.label)
    except GeneratorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.output:
        args.output.write_text(result.text, encoding="utf-8")
    else:
        sys.stdout.write(result.text)
    if result.missing:
        print(f"note: the header lacks {', '.join(result.missing)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
