# SPDX-License-Identifier: Apache-2.0
"""The adapters are imported only when used: ``import embellama.integrations`` imports no framework, and an
adapter whose framework is missing says which extra installs it (one child process checks both)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

FRAMEWORKS = {  # adapter module: (its framework's import name, the extra, the package)
    "langchain": ("langchain_core", "langchain", "langchain-core"),
    "llama_index": ("llama_index", "llama-index", "llama-index-core"),
    "haystack": ("haystack", "haystack", "haystack-ai"),
    "chroma": ("chromadb", "chroma", "chromadb"),
}

CHILD = """
import importlib, json, sys
import embellama, embellama.integrations
frameworks = json.loads(sys.argv[1])
out = {"imported": [name for name, _, _ in frameworks.values() if name in sys.modules], "errors": {}}
for module, (name, _, _) in frameworks.items():
    sys.modules[name] = None  # what Python does for a module that cannot be imported
    try:
        importlib.import_module("embellama.integrations." + module)
    except ImportError as exc:
        out["errors"][module] = str(exc)
    del sys.modules[name]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def child() -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(FRAMEWORKS)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_importing_the_package_imports_no_framework(child):
    assert child["imported"] == []


def test_a_missing_framework_names_its_extra(child):
    assert child["errors"] == {
        module: f"embellama.integrations.{module} needs {package} (not installed): pip install 'embellama[{extra}]'"
        for module, (_, extra, package) in FRAMEWORKS.items()
    }
