# SPDX-License-Identifier: Apache-2.0
"""Adapters for the frameworks users reach embellama through (LangChain, LlamaIndex, Haystack, Chroma).

Each lives in a module of its own, imported only when used, and needs its framework's extra.
"""
