# SPDX-License-Identifier: Apache-2.0
"""``python -m embellama``: the same as the ``embellama`` command."""

from embellama._cli.main import main

raise SystemExit(main())
