# SPDX-License-Identifier: Apache-2.0
"""tests/unit: the fast loop (``nox -s unit``), which has no libllama and no llama.cpp source.

A unit test that needs either carries the ``libllama`` marker: explicitly, or because it asks
for the ``library`` fixture (directly or through another fixture), which this hook marks.
``nox -s unit`` deselects them with ``-m "not libllama"``; the tests session runs them all.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "library" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.libllama)
