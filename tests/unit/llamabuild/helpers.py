# SPDX-License-Identifier: Apache-2.0
"""What the tests of the build package share: small llama.cpp trees, fake builds, fake tools, dry runs."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from llamabuild import cli, report

ROOT = Path(__file__).resolve().parents[3]
CC = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler")


SYNTHETIC = """
/* a comment that mentions struct fake { int x; }; */
struct fwd;
typedef struct fwd * fwd_t;
enum e { A, B };

typedef struct pair {
    int32_t a;   // trailing comment
    const char * b; /* another */
} pair;

struct holder {
    struct pair p;
    void (*callback)(int level, const char * text);
    char name[32];
    unsigned long long big;
    const struct fwd * const * ptrs;
};

struct holder make_holder(void);
"""


FAKE_HEADER = """\
#include <stdint.h>
struct pair { int32_t a; const char * b; };
struct holder { struct pair p; void (*callback)(int, const char *); char name[32];
                unsigned long long big; const struct fwd * const * ptrs; };
"""


def fake_tree(tmp_path: Path, header: str = FAKE_HEADER) -> Path:
    src = tmp_path / "src"
    (src / "include").mkdir(parents=True)
    (src / "ggml" / "include").mkdir(parents=True)
    (src / "include" / "llama.h").write_text(header)
    (src / "ggml" / "include" / "ggml.h").write_text("")
    (src / "CMakeLists.txt").write_text("project(fake C)\n")
    return src


def fake_build_bin(tmp_path: Path, content: bytes = b"v1") -> Path:
    bin_dir = tmp_path / "build" / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in ("libllama.so.0.5.0", "libggml.so.0.9.0", "llama-quantize", "test-thing"):
        (bin_dir / name).write_bytes(content + name.encode())
    for link, target in (
        ("libllama.so.0", "libllama.so.0.5.0"),
        ("libllama.so", "libllama.so.0"),
        ("libggml.so.0", "libggml.so.0.9.0"),
        ("libggml.so", "libggml.so.0"),
    ):
        if not (bin_dir / link).is_symlink():
            os.symlink(target, bin_dir / link)
    return bin_dir


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def snapshot(folder: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry under ``folder``: links with their target, files with content and mtime."""
    out: dict[str, tuple[Any, ...]] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            out[rel] = ("dir",)
        else:
            out[rel] = ("file", path.read_bytes(), path.stat().st_mtime_ns)
    return out


PAIR_CDEF = "struct pair {\n    int32_t a;\n    const char * b;\n};\n"


PAIR_LAYOUT = {"pair": {"size": 16, "align": 8, "fields": {"a": 0, "b": 8}}}


class FakeTools:
    """Stands in for cmake (``process.run_step``) and the probe (``probe.run_probe``), recording the calls.

    ``fail`` names the step that fails; ``content`` is what the fake build writes.
    Each call also records whether the prefix had a manifest at that moment.
    """

    def __init__(self, tmp_path: Path) -> None:
        self.src = fake_tree(tmp_path)
        self.build = tmp_path / "build"
        self.prefix = tmp_path / "prefix"
        self.cdef = tmp_path / "pair.cdef.h"
        self.cdef.write_text(PAIR_CDEF)
        self.tmp_path = tmp_path
        self.calls: list[str] = []
        self.manifest_seen: list[bool] = []
        self.fail: str | None = None
        self.content = b"v1"
        self.compilers: list[list[str]] = []

    def argv(self, *extra: str) -> list[str]:
        paths = ["--build-dir", str(self.build), "--prefix", str(self.prefix), "--cdef", str(self.cdef)]
        return ["--source", str(self.src), *paths, *extra]

    def _called(self, name: str) -> None:
        self.calls.append(name)
        self.manifest_seen.append((self.prefix / "manifest.json").is_file())

    def run_step(self, name: str, cmd: list[str], log: Path, **kw: Any) -> str:
        self._called(name)
        if name == self.fail:
            raise report.StepFailed(name, 2, log)
        if name == "configure":
            (self.build / "CMakeCache.txt").write_text(f"CMAKE_HOME_DIRECTORY:INTERNAL={self.src}\n")
            (self.build / "build.ninja").write_text("")
        elif name == "build":
            fake_build_bin(self.tmp_path, self.content)
        return ""

    def run_probe(self, source_dir: Path, work_dir: Path, structs: Any, enums: Any, compiler: Any, *rest: Any) -> Any:
        self._called("probe")
        self.compilers.append(list(compiler))
        assert source_dir == self.src and dict(structs) == {"pair": ["a", "b"]}
        if self.fail == "probe":
            raise report.BuildError("include/llama.cdef.h declares fields that llama.h at x does not have")
        return PAIR_LAYOUT, {}


def failing_cmd() -> list[str]:
    return [
        sys.executable,
        "-c",
        "import sys\nfor i in range(60): print('line', i)\nprint('boom'); sys.exit(3)",
    ]


def fake_cublas_wheel(site: Path, package: str) -> Path:
    pkg = site / "nvidia" / package
    (pkg / "include").mkdir(parents=True)
    (pkg / "include" / "cublas_v2.h").write_text("")
    (pkg / "lib").mkdir()
    for name in ("libcublas.so.13", "libcublasLt.so.13", "libnvblas.so.13"):
        (pkg / "lib" / name).write_text("")
    return pkg.resolve()


def dry(capsys: pytest.CaptureFixture[str], tmp_path: Path, *argv: str) -> str:
    cache = tmp_path / "cache"
    code = cli.main(["--dry-run", "--cache-dir", str(cache), *argv])
    out = capsys.readouterr().out
    assert code == 0, out
    assert not cache.exists(), "a dry run must not create the cache"
    return out


def option_lines(out: str) -> list[str]:
    lines = out.splitlines()
    start = lines.index("  cmake options    :") + 1
    result = []
    for line in lines[start:]:
        if not line.startswith("    -D"):
            break
        result.append(line.strip())
    return result


def defines(options: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for opt in options:
        assert opt.startswith("-D"), opt
        key, _, value = opt[2:].partition("=")
        assert key not in out, f"{key} given twice"
        out[key] = value
    return out
