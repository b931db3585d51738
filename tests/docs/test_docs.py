# SPDX-License-Identifier: Apache-2.0
"""The API reference's sources: NumPy-style docstrings on the whole public API, and CI building it."""

from __future__ import annotations

import ast
import inspect
import json
import re
import shlex
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import embellama
import embellama.llama
import embellama.ray

REPO = Path(__file__).resolve().parents[2]


def _section(doc: str, title: str) -> str | None:
    """The body of a NumPy-style section (``Title`` underlined with dashes), or None."""
    match = re.search(rf"^{title}\n-+\n(.*?)(?=^\S[^\n]*\n-+\n|\Z)", doc, re.M | re.S)
    return match.group(1) if match else None


def _public_api() -> Iterator[tuple[str, Any]]:
    """(qualified name, object) for everything in embellama.__all__, embellama.ray.__all__ and
    embellama.llama.__all__, with the public methods and properties of their classes."""
    for module in (embellama, embellama.ray, embellama.llama):
        for name in module.__all__:
            obj = getattr(module, name)
            if name == "__version__":
                continue
            yield f"{module.__name__}.{name}", obj
            if not inspect.isclass(obj) or issubclass(obj, BaseException):
                continue
            seen: set[str] = set()
            # the class's own members and those it inherits from embellama's (private) bases, the nearest first
            for cls in inspect.getmro(obj):
                if not cls.__module__.startswith("embellama"):
                    continue
                for attr, member in vars(cls).items():
                    if (attr.startswith("_") and attr != "__call__") or attr in seen:
                        continue
                    seen.add(attr)
                    if isinstance(member, (classmethod, staticmethod)):
                        member = member.__func__
                    if inspect.isfunction(member) or isinstance(member, property):
                        yield f"{module.__name__}.{name}.{attr}", member


API = dict(_public_api())


def _parameters(func: Any) -> list[str]:
    names = []
    for p in inspect.signature(func).parameters.values():
        if p.name in ("self", "cls") or p.name.startswith("_"):
            continue
        names.append({p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "") + p.name)
    return names


def _documents(section: str, name: str) -> bool:
    """``name``, ``name : type`` or ``a, name : type`` starts a line of the section."""
    return re.search(rf"^(\S+, )*{re.escape(name)}(, \S+)*( :.*)?$", section, re.M) is not None


def test_the_public_api_is_what_the_reference_covers():
    assert "embellama.EmbeddingModel.embed_batch" in API and "embellama.ray.embed_dataset" in API
    assert "embellama.llama.Context.process" in API
    # inherited from the package's bases: the engine's model registry, EmbeddingModel's sentence-transformers names
    assert "embellama.EmbeddingEngine.load_model" in API and "embellama.EmbeddingModel.encode_query" in API
    assert "embellama.Reranker.rank" in API and "embellama.EmbeddingModel.close" in API
    assert len(API) > 100


@pytest.mark.parametrize("name", sorted(API))
def test_numpy_docstring(name):
    obj = API[name]
    func = obj.fget if isinstance(obj, property) else obj
    doc = inspect.cleandoc(func.__doc__ or "")
    assert doc, f"{name} has no docstring"
    summary = doc.split("\n\n", 1)[0]
    assert summary.strip().endswith((".", ":", ")")), f"{name}: the summary is not a sentence: {summary!r}"
    if isinstance(obj, property):
        return
    if inspect.isclass(obj):
        if issubclass(obj, BaseException) or issubclass(obj, str):  # exceptions, enums
            return
        init = obj.__init__
        params = _parameters(init) if init is not object.__init__ else []
        where = f"{name} (its constructor)"
    else:
        params = _parameters(func)
        where = name
    if params:
        section = _section(doc, "Parameters") or (_section(doc, "Attributes") if inspect.isclass(obj) else None)
        assert section is not None, f"{where} has parameters {params} and no Parameters section"
        missing = [p for p in params if not _documents(section, p)]
        assert missing == [], f"{where}: Parameters does not describe {missing}"
    if inspect.isclass(obj):
        return
    returns = inspect.signature(func).return_annotation
    if returns not in ("None", None, inspect.Signature.empty) and not name.endswith("__init__"):
        assert _section(doc, "Returns") or _section(doc, "Yields"), f"{name} returns {returns}: no Returns section"
    source = textwrap.dedent(inspect.getsource(func))
    if re.search(r"^\s+raise [A-Za-z]", source, re.M):
        assert _section(doc, "Raises"), f"{name} raises and has no Raises section"


def _contributor_commands() -> list[str]:
    """The commands of the README's block for contributors, without their comments."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"^### For contributors\n.*?```bash\n(.*?)```", text, re.M | re.S)
    assert block is not None, "README.md needs its '### For contributors' block of commands"
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.strip()]


def _default_sessions() -> list[str]:
    noxfile = (REPO / "noxfile.py").read_text(encoding="utf-8")
    default = re.search(r"^nox\.options\.sessions = (\[.*\])$", noxfile, re.M)
    assert default is not None
    return list(ast.literal_eval(default.group(1)))


def test_the_readme_gives_the_newcomer_two_commands_and_the_test_command():
    commands = _contributor_commands()
    assert commands == ["pip install nox", "nox -s unit", "nox"]
    noxfile = (REPO / "noxfile.py").read_text(encoding="utf-8")
    assert re.search(r"^@nox\.session.*\n(@.*\n)*def unit\(", noxfile, re.M), "the README names nox -s unit"


def test_ci_runs_the_readme_test_command_which_builds_the_docs():
    """The README's ``nox`` runs nox.options.sessions; CI's first nox command runs the same sessions."""
    sessions = _default_sessions()
    assert sessions[:2] == ["lint", "docs"]
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    runs = [line.strip() for line in ci.splitlines() if re.match(r"\s*python3 -m nox\b", line)]
    assert runs, ".ci/run runs no nox command"
    first = shlex.split(runs[0].split(" #", 1)[0])[3:]
    assert first == [] or (first[0] == "-s" and first[1:] == sessions), runs[0]
    # the pinned llama.cpp's whole suite and the oldest supported llama.cpp's real-model tests
    assert any(s.startswith("tests(") for s in sessions)
    assert f"llama(version='{_oldest_llama()}')" in sessions


def _oldest_llama() -> str:
    """The oldest llama-cpp-python release of the supported window: the build package's pins, or the noxfile's."""
    pins = REPO / "build_backend" / "llamabuild" / "pins.json"
    if pins.is_file():
        return str(json.loads(pins.read_text(encoding="utf-8"))["window"][0])
    noxfile = (REPO / "noxfile.py").read_text(encoding="utf-8")
    oldest = re.search(r'^LLAMA_WINDOW = \["([0-9.]+)"', noxfile, re.M)
    assert oldest is not None
    return oldest.group(1)


def test_the_docs_session_builds_the_guide_with_warnings_as_errors():
    noxfile = (REPO / "noxfile.py").read_text(encoding="utf-8")
    docs = noxfile[noxfile.index("def docs(") :]
    docs = docs[: docs.index("\n@nox.session")]
    assert "MYST" in docs and re.search(r'^MYST = "myst-parser==[0-9.]+"', noxfile, re.M)
    assert '"sphinx-build", "-W", "--keep-going"' in docs
    conf = (REPO / "docs" / "conf.py").read_text(encoding="utf-8")
    assert '"myst_parser"' in conf
    pages = sorted(p.relative_to(REPO / "docs").as_posix() for p in (REPO / "docs").rglob("*.md"))
    assert "index.md" in pages and "guide/embedding.md" in pages and "architecture.md" in pages
