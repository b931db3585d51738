#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Build the llama.cpp shared libraries that embellama loads: ``python build_llama.py --help``.

The entry point of a checkout. The build itself is ``build_backend/llamabuild/``, a package that
needs only the standard library for the pinned llama.cpp (``python -m llamabuild`` is the same
command, and what ``embellama build`` runs from an installed package). This file puts
``build_backend/`` first on ``sys.path``, so that the checkout's llamabuild is the one that runs,
and hands the command line to :func:`llamabuild.cli.main`: the same options, output and exit status.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

BUILD_BACKEND = Path(__file__).resolve().parent / "build_backend"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the build with ``argv`` (default: the command line); returns the exit status."""
    if str(BUILD_BACKEND) not in sys.path:
        sys.path.insert(0, str(BUILD_BACKEND))
    from llamabuild import cli

    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
