# SPDX-License-Identifier: Apache-2.0
"""Sphinx configuration of embellama's documentation: the user guide (MyST Markdown) and the API
reference (autodoc). ``nox -s docs`` builds it into docs/_build/html."""

from __future__ import annotations

import embellama

project = "embellama"
copyright = "embellama contributors, Apache-2.0"
release = embellama.__version__
version = release

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
# The guide is MyST Markdown, so its code blocks are the README's fenced blocks, verbatim; a link to a
# section of another page (``page.md#a-heading``) uses GitHub's anchor of that heading (down to ###).
myst_heading_anchors = 3
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
