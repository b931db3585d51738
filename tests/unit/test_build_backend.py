# SPDX-License-Identifier: Apache-2.0
"""The PEP 517 backend's own logic: its options, the wheel it assembles, the library names it ships.

The real builds (a wheel with libllama, an sdist, pip installing it) are tests/packaging/test_wheel.py and
tests/packaging/test_sdist.py; here the pieces run on small stand-ins, so that each rule fails on its own.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import sys
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "build_backend"))
import embellama_build as eb

sys.path.pop(0)


def test_options_default_to_a_portable_cpu_build() -> None:
    opts = eb.BuildOptions.read(None, {})
    assert (opts.backend, opts.portable, opts.cmake_args, opts.cuda_arch, opts.jobs) == ("cpu", True, [], None, None)
    assert opts.build_llama_args() == ["--backend", "cpu", "--portable"]


def test_gpu_backends_default_to_this_machine() -> None:
    opts = eb.BuildOptions.read({"backend": "cuda", "cuda-arch": "90"}, {})
    assert not opts.portable
    assert opts.build_llama_args() == ["--backend", "cuda", "--cuda-arch", "90"]


def test_settings_win_over_the_environment() -> None:
    env = {"EMBELLAMA_BACKEND": "vulkan", "EMBELLAMA_PORTABLE": "0", "CMAKE_ARGS": "-DA=1 -DB='x y'"}
    from_env = eb.BuildOptions.read({}, env)
    assert (from_env.backend, from_env.portable, from_env.cmake_args) == ("vulkan", False, ["-DA=1", "-DB=x y"])
    settings = {"backend": "cpu", "portable": "true", "cmake.args": "-DC=3;-DD=4", "jobs": "3", "build-dir": "b"}
    opts = eb.BuildOptions.read(settings, env)
    assert (opts.backend, opts.portable, opts.cmake_args, opts.jobs) == ("cpu", True, ["-DC=3", "-DD=4"], 3)
    args = opts.build_llama_args()
    assert args[:3] == ["--backend", "cpu", "--portable"] and args[-2:] == ["--cmake-arg=-DC=3", "--cmake-arg=-DD=4"]
    assert Path(args[args.index("--build-dir") + 1]).is_absolute()
    repeated = eb.BuildOptions.read({"cmake.args": ["-DE=5", "-DF=6"]}, {})
    assert repeated.cmake_args == ["-DE=5", "-DF=6"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"backend": "rocm"}, "backend='rocm'"),
        ({"portable": "maybe"}, "portable='maybe'"),
        ({"jobs": "many"}, "jobs='many'"),
    ],
)
def test_unknown_option_values_are_refused_by_name(settings: dict[str, str], message: str) -> None:
    with pytest.raises(eb.BuildOptionError, match=message):
        eb.BuildOptions.read(settings, {})


def test_no_cmake_on_path_asks_pypi_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(eb.shutil, "which", lambda name: None)
    needs = eb.get_requires_for_build_wheel({})
    assert "cmake>=3.21" in needs and "ninja" in needs
    assert not {"cmake>=3.21", "ninja"} & set(eb.get_requires_for_build_wheel({"backend": "none"}))


def _touch(folder: Path, name: str, data: bytes = b"\x7fELF") -> None:
    (folder / name).write_bytes(data + name.encode())


def test_library_names_are_the_ones_the_loader_and_linker_use(tmp_path: Path) -> None:
    _touch(tmp_path, "libllama.so.0.0.8000")
    (tmp_path / "libllama.so.0").symlink_to("libllama.so.0.0.8000")
    (tmp_path / "libllama.so").symlink_to("libllama.so.0")
    _touch(tmp_path, "libggml-base.so.0.9.4")
    (tmp_path / "libggml-base.so.0").symlink_to("libggml-base.so.0.9.4")
    for variant in ("x64", "haswell", "armv8.2_1"):
        _touch(tmp_path, f"libggml-cpu-{variant}.so")
    _touch(tmp_path, "manifest.json", b"{}")
    assert eb.wheel_library_names(tmp_path) == [
        "libggml-base.so.0",
        "libggml-cpu-armv8.2_1.so",
        "libggml-cpu-haswell.so",
        "libggml-cpu-x64.so",
        "libllama.so.0",
    ]


def _pure_wheel(folder: Path) -> Path:
    path = folder / "embellama-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("embellama/__init__.py", "")
        zf.writestr("llamabuild/__init__.py", "")  # setuptools' wheel has the build package too
        zf.writestr("embellama-0.1.0.dist-info/METADATA", "Name: embellama\nVersion: 0.1.0\n")
        zf.writestr(
            "embellama-0.1.0.dist-info/WHEEL",
            "Wheel-Version: 1.0\nGenerator: setuptools\nRoot-Is-Purelib: true\nTag: py3-none-any\n\n",
        )
        zf.writestr("embellama-0.1.0.dist-info/RECORD", "stale\n")
    return path


def _check_record(zf: zipfile.ZipFile) -> None:
    rows = list(csv.reader(io.StringIO(zf.read("embellama-0.1.0.dist-info/RECORD").decode())))
    listed = {row[0] for row in rows}
    assert listed == set(zf.namelist())
    for path, digest, size in rows:
        if path.endswith("RECORD"):
            assert digest == size == ""
            continue
        data = zf.read(path)
        assert digest == "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        assert int(size) == len(data)


def test_repacked_wheel_is_a_platform_wheel_with_the_libraries(tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    prefix.mkdir()
    _touch(prefix, "libllama.so.0.0.1")
    (prefix / "libllama.so.0").symlink_to("libllama.so.0.0.1")
    _touch(prefix, "libggml-cpu-zen4.so")
    manifest = {"files": {"libllama.so.0.0.1": "x"}, "links": {"libllama.so.0": "libllama.so.0.0.1"}}
    manifest["source"] = {"kind": "pypi", "directory": "/home/someone/.cache", "location": "llama-cpp-python"}
    (prefix / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "out"
    out.mkdir()
    name = eb.repack_wheel(_pure_wheel(tmp_path), prefix, "cpu", out, "linux_x86_64")
    assert name == "embellama-0.1.0-py3-none-linux_x86_64.whl"
    with zipfile.ZipFile(out / name) as zf:
        _check_record(zf)
        wheel = zf.read("embellama-0.1.0.dist-info/WHEEL").decode()
        assert "Root-Is-Purelib: false" in wheel and wheel.strip().endswith("Tag: py3-none-linux_x86_64")
        assert "Tag: py3-none-any" not in wheel and "\n\n" not in wheel.strip()  # no blank line ends the headers
        shipped = json.loads(zf.read("embellama/_lib/cpu/manifest.json"))
        libs = sorted(n for n in zf.namelist() if n.startswith("embellama/_lib/cpu/lib"))
        assert libs == ["embellama/_lib/cpu/libggml-cpu-zen4.so", "embellama/_lib/cpu/libllama.so.0"]
        assert zf.read("embellama/_lib/cpu/libllama.so.0") == (prefix / "libllama.so.0.0.1").read_bytes()
        # the build package as setuptools packed it, and no copy of a script
        assert "llamabuild/__init__.py" in zf.namelist()
        assert not any(n.endswith("build_llama.py") for n in zf.namelist())
    # The manifest lists what the wheel holds, with their checksums, and no path of the build machine.
    assert shipped["files"] == {
        lib: hashlib.sha256((prefix / lib).read_bytes()).hexdigest() for lib in ("libggml-cpu-zen4.so", "libllama.so.0")
    }
    assert shipped["links"] == {} and "directory" not in shipped["source"]
    assert shipped["wheel"] == {"platform": "linux_x86_64"}


def test_backend_none_is_a_pure_wheel(tmp_path: Path) -> None:
    name = eb.repack_wheel(_pure_wheel(tmp_path), None, "none", tmp_path, "any")
    assert name == "embellama-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(tmp_path / name) as zf:
        _check_record(zf)
        assert not any(n.startswith("embellama/_lib/") for n in zf.namelist())


@pytest.mark.parametrize(
    ("plat", "tag"),
    [
        ("linux-x86_64", "linux_x86_64"),
        ("linux-aarch64", "linux_aarch64"),
        ("macosx-10.9-x86_64", "macosx_10_9_x86_64"),
        ("macosx-10.9-arm64", "macosx_11_0_arm64"),  # arm64 Macs start at macOS 11
        ("macosx-14.2-arm64", "macosx_14_0_arm64"),
        ("win-amd64", "win_amd64"),
    ],
)
def test_platform_tags(plat: str, tag: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(eb.sysconfig, "get_platform", lambda: plat)
    assert eb.platform_tag() == tag


def test_libllama_is_built_by_llamabuild_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The backend calls llamabuild's command line with the options' arguments; no script is run."""
    calls: list[tuple[list[str], str]] = []

    def main(argv: list[str], prog: str) -> int:
        calls.append((list(argv), prog))
        return 0

    monkeypatch.setattr(eb._llamabuild, "main", main)
    opts = eb.BuildOptions.read({"backend": "cpu", "jobs": "2"}, {})
    eb._build_libllama(opts, tmp_path / "prefix", tmp_path / "scratch")
    ((argv, prog),) = calls
    assert argv[:4] == ["--backend", "cpu", "--portable", "--jobs"]
    assert argv[argv.index("--prefix") + 1] == str(tmp_path / "prefix")
    assert prog == "python -m llamabuild"
    # a failing build, or a usage error, is the backend's RuntimeError naming the exit status
    monkeypatch.setattr(eb._llamabuild, "main", lambda argv, prog: 1)
    with pytest.raises(RuntimeError, match="llamabuild exit 1"):
        eb._build_libllama(opts, tmp_path / "prefix", tmp_path / "scratch")

    def usage_error(argv: list[str], prog: str) -> int:
        raise SystemExit(2)

    monkeypatch.setattr(eb._llamabuild, "main", usage_error)
    with pytest.raises(RuntimeError, match="llamabuild exit 2"):
        eb._build_libllama(opts, tmp_path / "prefix", tmp_path / "scratch")


def test_the_sdist_carries_the_build_package_and_its_pins() -> None:
    """MANIFEST.in: the sdist has llamabuild's modules and pins.json, which an sdist install builds with."""
    manifest_in = (Path(__file__).resolve().parents[2] / "MANIFEST.in").read_text(encoding="utf-8").splitlines()
    assert "recursive-include build_backend *.py *.json" in manifest_in
