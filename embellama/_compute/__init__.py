# SPDX-License-Identifier: Apache-2.0
"""Stateless numpy over the low-level classes: packing texts into llama.cpp calls, pooling,
normalization, output types and prompts.
"""
