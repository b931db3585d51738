# SPDX-License-Identifier: Apache-2.0
"""embellama's version, defined here only: ``pyproject.toml`` reads it (dynamic version) and
``embellama.__version__``, ``embellama --version`` and ``embellama doctor`` report it."""

__version__ = "0.1.0"
