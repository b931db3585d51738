# SPDX-License-Identifier: Apache-2.0
"""What the ``tests`` nox session builds before pytest runs: the sdist and the wheelhouse."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def artifact(variable: str, what: str) -> Path:
    """The path ``$variable`` names; a failure in CI without it, a skip elsewhere (run the nox session)."""
    value = os.environ.get(variable)
    if not value:
        message = f"no ${variable}: the tests nox session builds {what} and names it there"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return Path(value)
