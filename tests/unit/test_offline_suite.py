# SPDX-License-Identifier: Apache-2.0
"""benchmarks/offline_suite.py: what the packed llama.cpp source keeps and leaves out."""

from __future__ import annotations

import tarfile
from pathlib import Path

import offline_suite


def test_packed_source_keeps_what_builds_and_tests_need(tmp_path):
    src = tmp_path / "llama.cpp"
    files = [
        "CMakeLists.txt",
        "convert_hf_to_gguf.py",
        "docs/build.md",
        "tests/test-backend-ops.cpp",
        "tools/ui/index.html",
        "tools/quantize/quantize.cpp",
        "ggml/src/ggml-cuda/ggml-cuda.cu",
        "ggml/src/ggml-cpu/ggml-cpu.c",
        "ggml/src/ggml-sycl/ggml-sycl.cpp",
        "models/ggml-vocab-bert-bge.gguf",
        "models/ggml-vocab-bert-bge.gguf.inp",
        "models/ggml-vocab-aquila.gguf",  # no test uses it
        "models/templates/chat.jinja",
    ]
    for name in files:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(name)
    out = offline_suite.pack_source(src, tmp_path)
    with tarfile.open(out) as tar:
        top, *rest = (Path(n) for n in tar.getnames())
        packed = {p.relative_to(top).as_posix() for p in rest if tar.getmember(str(p)).isfile()}
    assert top.name == f"llama.cpp-{offline_suite._llamabuild('pins').LLAMA_CPP_COMMIT}"
    assert packed == {
        "CMakeLists.txt",
        "convert_hf_to_gguf.py",
        "tools/quantize/quantize.cpp",
        "ggml/src/ggml-cuda/ggml-cuda.cu",
        "ggml/src/ggml-cpu/ggml-cpu.c",
        "models/ggml-vocab-bert-bge.gguf",
        "models/ggml-vocab-bert-bge.gguf.inp",
        "models/templates/chat.jinja",
    }
