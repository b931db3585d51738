# SPDX-License-Identifier: Apache-2.0
"""The embellama command."""
