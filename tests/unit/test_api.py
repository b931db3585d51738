# SPDX-License-Identifier: Apache-2.0
"""The public surface: what ``embellama`` exports, where it says it lives, its version and its loggers."""

from __future__ import annotations

import ast
import importlib.metadata
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import embellama

REPO = Path(__file__).resolve().parents[2]

# The public API by kind; a name added to or dropped from embellama.__all__ is a decision: change this with it.
EXCEPTIONS = (
    "EmbellamaError LibraryError ConfigurationError ModelNotFoundError ModelLoadError InvalidInputError "
    "EmbeddingError ResourceClosedError ThreadAffinityError EngineBusyError "
    "HubNotFoundError HubAccessError HubDownloadError MissingExtraError"
).split()
CLASSES = (
    "EmbeddingModel Reranker EmbeddingEngine ModelConfig EngineConfig PoolingStrategy Normalization Library "
    "TruncationWarning ApproximationWarning Classifier SparseEncoder SparseEmbedding MultiVectorEncoder"
).split()
FUNCTIONS = "normalize load_library get_library quantize_embeddings semantic_search".split()
PUBLIC = sorted([*EXCEPTIONS, *CLASSES, *FUNCTIONS, "__version__"])


def test_all_is_pinned():
    assert sorted(embellama.__all__) == PUBLIC and len(set(embellama.__all__)) == len(PUBLIC)
    for name in PUBLIC:
        assert hasattr(embellama, name), name


def test_public_classes_and_functions_say_they_live_in_embellama():
    for obj in [getattr(embellama, name) for name in [*EXCEPTIONS, *CLASSES, *FUNCTIONS]]:
        assert obj.__module__ == "embellama", f"{obj.__qualname__} reports {obj.__module__}"
        assert getattr(embellama, obj.__name__) is obj  # so pickle finds it by that name
    assert all(issubclass(getattr(embellama, name), embellama.EmbellamaError) for name in EXCEPTIONS)
    assert all(inspect.isclass(getattr(embellama, name)) for name in CLASSES)
    assert all(inspect.isfunction(getattr(embellama, name)) for name in FUNCTIONS)
    assert repr(embellama.ModelConfig).startswith("<class 'embellama.ModelConfig'")


def test_version_is_defined_once():
    """embellama/_version.py holds it; pyproject reads it, the package and the command report it."""
    source = (REPO / "embellama" / "_version.py").read_text(encoding="utf-8")
    assigned = [node for node in ast.parse(source).body if isinstance(node, ast.Assign)]
    assert [ast.literal_eval(node.value) for node in assigned] == [embellama.__version__]
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    project = pyproject.split("[project]", 1)[1].split("\n[", 1)[0]
    assert re.search(r'^dynamic = \["version"\]', project, re.M) and not re.search(r"^version =", project, re.M)
    assert 'version = { attr = "embellama._version.__version__" }' in pyproject
    assert importlib.metadata.version("embellama") == embellama.__version__
    literal = re.compile(r"['\"]" + re.escape(embellama.__version__) + r"['\"]")
    files = [*sorted((REPO / "embellama").glob("*.py")), REPO / "pyproject.toml"]
    assert [f.name for f in files if literal.search(f.read_text(encoding="utf-8"))] == ["_version.py"]
    proc = subprocess.run([sys.executable, "-m", "embellama", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"embellama {embellama.__version__}"


def test_import_sets_no_logger_level_and_loads_no_library():
    """Importing embellama (everything but the optional ray extra's dependencies) configures no logging
    and does not dlopen libllama: the API reference is built from a plain import."""
    code = """
import json, logging, sys
import embellama, embellama.llama, embellama._cli.main, embellama.ray
from embellama._native import loaded_library
loggers = {name: logging.getLogger(name).level for name in list(logging.root.manager.loggerDict)}
print(json.dumps({"levels": {k: v for k, v in loggers.items() if k.startswith("embellama")},
                  "library": loaded_library() is not None, "ray": "ray" in sys.modules}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert "embellama" in report["levels"]
    assert set(report["levels"].values()) == {0}, report["levels"]  # logging.NOTSET everywhere
    assert report["library"] is False
    assert report["ray"] is False


def test_import_leaves_asyncio_for_the_first_async_call():
    """asyncio costs ~25 ms of every start-up: it is imported when a coroutine first needs it."""
    code = "import sys, embellama; print('asyncio' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
