# SPDX-License-Identifier: Apache-2.0
"""Models by name: ``hf://`` references and the Hugging Face cache, offline first."""
