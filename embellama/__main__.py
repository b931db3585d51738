# SPDX-License-Identifier: Apache-2.0
"""``python -m embellama``: the same as the ``embellama`` command."""

from ._cli import main

raise SystemExit(main())
