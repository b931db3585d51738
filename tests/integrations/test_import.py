# SPDX-License-Identifier: Apache-2.0
"""The adapters are imported only when used: ``import embellama.integrations`` imports no framework, and an
adapter whose framework is missing says which extra installs it."""

from __future__ import annotations

import subprocess
import sys

import pytest

FRAMEWORKS = {  # adapter module: (its framework's import name, the extra, the package)
    "langchain": ("langchain_core", "langchain", "langchain-core"),
    "llama_index": ("llama_index", "llama-index", "llama-index-core"),
    "haystack": ("haystack", "haystack", "haystack-ai"),
    "chroma": ("chromadb", "chroma", "chromadb"),
}


def _python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_importing_the_package_imports_no_framework():
    names = [name for name, _, _ in FRAMEWORKS.values()]
    code = f"import sys, embellama, embellama.integrations; print([m for m in {names!r} if m in sys.modules])"
    assert _python(code) == "[]"


@pytest.mark.parametrize("module", sorted(FRAMEWORKS))
def test_a_missing_framework_names_its_extra(module):
    name, extra, package = FRAMEWORKS[module]
    code = (
        f"import sys; sys.modules[{name!r}] = None\n"  # what Python does for a module that cannot be imported
        f"try:\n    import embellama.integrations.{module}\nexcept ImportError as exc:\n    print(exc)"
    )
    assert (
        _python(code)
        == f"embellama.integrations.{module} needs {package} (not installed): pip install 'embellama[{extra}]'"
    )
