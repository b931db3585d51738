# SPDX-License-Identifier: Apache-2.0
"""embellama's test suite: a package, so that the tests import their helpers as ``tests.support``."""
