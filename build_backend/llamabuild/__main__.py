# SPDX-License-Identifier: Apache-2.0
"""``python -m llamabuild``: the build's command line, the same as ``python build_llama.py`` in a checkout."""

from __future__ import annotations

import sys

from llamabuild.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m llamabuild"))
