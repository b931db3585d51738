# SPDX-License-Identifier: Apache-2.0
"""Sphinx configuration of embellama's API reference (``nox -s docs`` builds it into docs/_build/html)."""

from __future__ import annotations

import embellama

project = "embellama"
copyright = "embellama contributors, Apache-2.0"
release = embellama.__version__
version = release

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]
# NumPy-style docstrings only (Parameters / Returns / Raises sections).
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
autodoc_default_options = {"undoc-members": False, "show-inheritance": True}
nitpicky = False

html_theme = "alabaster"  # ships with Sphinx: nothing to download
html_theme_options = {"description": "Text embeddings with llama.cpp", "fixed_sidebar": True}
exclude_patterns = ["_build"]
