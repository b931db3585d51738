# SPDX-License-Identifier: Apache-2.0
"""The native layer: the only code that imports cffi. Library discovery and loading, the C
declarations, the ABI checks and log routing.
"""
