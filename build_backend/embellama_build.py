# SPDX-License-Identifier: Apache-2.0
"""embellama's PEP 517 build backend: setuptools for the Python package, ``llamabuild`` for libllama.

``pip wheel .``, ``python -m build --wheel`` and ``pip install embellama-*.tar.gz`` all come here.
The Python side is setuptools' (``setuptools.build_meta``), whose wheel has both packages, embellama
and llamabuild (``build_backend/llamabuild/``, standard library only: ``embellama build`` runs it
from an installation). This module then builds llama.cpp with llamabuild (the one place that knows
how) and turns setuptools' pure wheel into a platform wheel that carries the libraries under
``embellama/_lib/<backend>/``. The sdist carries llamabuild and the pinned llama.cpp source, so
installing it needs no network beyond the Python build requirements.

Options, as ``--config-settings`` (``-C``) or environment variables (a setting wins)::

    backend=cpu|cuda|metal|vulkan|none   EMBELLAMA_BACKEND      default cpu; none: no libllama (bring your own)
    portable=true|false                  EMBELLAMA_PORTABLE     default true for cpu (every CPU variant), false for GPUs
    cmake.args="-DA=1;-DB=2"             CMAKE_ARGS             extra CMake options ("-DA=1 -DB=2" in the variable)
    cuda-arch=90                         CUDAARCHS              CMAKE_CUDA_ARCHITECTURES of a cuda build
    jobs=N                               CMAKE_BUILD_PARALLEL_LEVEL  compile jobs (default: the CPU count)
    build-dir=DIR                        EMBELLAMA_BUILD_DIR    keep the CMake build folder there: a reinstall
                                                                from the same folder is incremental (default: a
                                                                scratch folder for an sdist, the cache in a checkout)

Editable installs (``pip install -e .``) build nothing: a checkout uses ``python build_llama.py``.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import sysconfig
import tarfile
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from setuptools import build_meta as _setuptools

from llamabuild import cli as _llamabuild
from llamabuild import paths as _paths
from llamabuild import pins as _pins
from llamabuild import source as _sources

ROOT = Path(__file__).resolve().parent.parent
SDIST_SOURCE = "llama.cpp"  # the pinned llama.cpp source inside the sdist
SOURCE_META = ".embellama-source.json"
# What of llama.cpp a libllama build (and embellama convert) needs: the rest (models, docs,
# tools, examples, tests, benches) is three quarters of the tree.
SOURCE_PARTS = (
    "CMakeLists.txt",
    "LICENSE",
    "licenses",
    "cmake",
    "common",
    "ggml",
    "include",
    "src",
    "vendor",
    "convert_hf_to_gguf.py",
    "conversion",
    "gguf-py",
    "requirements",
)
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")

# PEP 517 hooks that are setuptools' own.
get_requires_for_build_sdist = _setuptools.get_requires_for_build_sdist
prepare_metadata_for_build_wheel = _setuptools.prepare_metadata_for_build_wheel
get_requires_for_build_editable = _setuptools.get_requires_for_build_editable
prepare_metadata_for_build_editable = _setuptools.prepare_metadata_for_build_editable
build_editable = _setuptools.build_editable


def get_requires_for_build_wheel(config_settings: Mapping[str, Any] | None = None) -> list[str]:
    """PEP 517: setuptools' needs, plus CMake and Ninja from PyPI where the machine has none.

    (As scikit-build-core does: a machine with its own cmake uses it.) ``backend=none`` needs neither.
    """
    needs = list(_setuptools.get_requires_for_build_wheel(config_settings))
    if BuildOptions.read(config_settings, os.environ).backend != "none":
        if shutil.which("cmake") is None:
            needs.append("cmake>=3.21")
        if shutil.which("ninja") is None and shutil.which("ninja-build") is None:
            needs.append("ninja")
    return needs


class BuildOptionError(ValueError):
    """A build option with a value the backend does not know."""


@dataclass
class BuildOptions:
    """What to build, from ``--config-settings`` and the environment."""

    backend: str = "cpu"
    portable: bool = True
    cmake_args: list[str] = field(default_factory=list)
    cuda_arch: str | None = None
    jobs: int | None = None
    build_dir: str | None = None

    @classmethod
    def read(cls, settings: Mapping[str, Any] | None, environ: Mapping[str, str]) -> BuildOptions:
        """Options from ``settings`` (``-C key=value``), else ``environ``, else the defaults."""
        settings = dict(settings or {})

        def get(key: str, env: str) -> str | None:
            value = settings.get(key)
            if isinstance(value, list):  # -C key=a -C key=b
                value = ";".join(str(v) for v in value)
            if value is None:
                value = environ.get(env) or None
            return None if value is None else str(value).strip()

        backend = (get("backend", "EMBELLAMA_BACKEND") or "cpu").lower()
        if backend not in ("cpu", "cuda", "metal", "vulkan", "none"):
            raise BuildOptionError(f"backend={backend!r}: expected cpu, cuda, metal, vulkan or none")
        portable_text = get("portable", "EMBELLAMA_PORTABLE")
        if portable_text is None:
            portable = backend == "cpu"
        elif portable_text.lower() in TRUE:
            portable = True
        elif portable_text.lower() in FALSE:
            portable = False
        else:
            raise BuildOptionError(f"portable={portable_text!r}: expected true or false")
        from_settings = settings.get("cmake.args")
        if from_settings is not None:
            joined = ";".join(from_settings) if isinstance(from_settings, list) else str(from_settings)
            cmake_args = [arg for arg in joined.split(";") if arg.strip()]
        else:
            cmake_args = shlex.split(environ.get("CMAKE_ARGS", ""))
        jobs_text = get("jobs", "CMAKE_BUILD_PARALLEL_LEVEL")
        try:
            jobs = int(jobs_text) if jobs_text else None
        except ValueError:
            raise BuildOptionError(f"jobs={jobs_text!r}: expected a number") from None
        build_dir = get("build-dir", "EMBELLAMA_BUILD_DIR")
        return cls(backend, portable, cmake_args, get("cuda-arch", "CUDAARCHS"), jobs, build_dir)

    def build_llama_args(self) -> list[str]:
        """The matching arguments of llamabuild's command line (source and folders aside)."""
        args = ["--backend", self.backend]
        if self.portable:
            args.append("--portable")
        if self.cuda_arch:
            args += ["--cuda-arch", self.cuda_arch]
        if self.jobs:
            args += ["--jobs", str(self.jobs)]
        if self.build_dir:
            args += ["--build-dir", str(Path(self.build_dir).expanduser().resolve())]
        return args + [f"--cmake-arg={arg}" for arg in self.cmake_args]


# --------------------------------------------------------------------------- wheel


def build_wheel(
    wheel_directory: str,
    config_settings: Mapping[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    """PEP 517: setuptools' wheel of the Python package, plus libllama built for this platform."""
    options = BuildOptions.read(config_settings, os.environ)
    with tempfile.TemporaryDirectory(prefix="embellama-wheel-") as tmp:
        pure = Path(tmp) / "pure"
        pure.mkdir()
        name = _setuptools.build_wheel(str(pure), None, metadata_directory)
        if options.backend == "none":  # bring your own libllama: a pure wheel, for any platform
            return repack_wheel(pure / name, None, "none", Path(wheel_directory), "any")
        prefix = Path(tmp) / "lib"
        _build_libllama(options, prefix, Path(tmp) / "build")
        return repack_wheel(pure / name, prefix, options.backend, Path(wheel_directory), platform_tag())


def _build_libllama(options: BuildOptions, prefix: Path, scratch: Path) -> None:
    """Build libllama with llamabuild into ``prefix``: the sdist's source in a scratch folder, or a checkout's cache."""
    args = [*options.build_llama_args(), "--prefix", str(prefix)]
    bundled = ROOT / SDIST_SOURCE
    if (bundled / "CMakeLists.txt").is_file():  # an sdist: its own source, built in a scratch folder
        args += ["--source", str(bundled)]
        if not options.build_dir:
            args += ["--build-dir", str(scratch)]
    print("embellama: building libllama: python -m llamabuild", shlex.join(args), flush=True)
    # llamabuild talks on stdout; pip shows it with -v and in the error report of a failed build.
    try:
        returncode = _llamabuild.main(args, prog="python -m llamabuild")
    except SystemExit as exc:  # a usage error (argparse)
        returncode = exc.code if isinstance(exc.code, int) else 2
    if returncode != 0:
        raise RuntimeError(
            f"building libllama failed (llamabuild exit {returncode}); see its output above. "
            "Options: -C backend=cpu|cuda|metal|vulkan|none, -C portable=true|false, -C cmake.args=..., "
            "or EMBELLAMA_BACKEND / EMBELLAMA_PORTABLE / CMAKE_ARGS"
        )


def platform_tag() -> str:
    """This interpreter's platform as a wheel tag (``linux_x86_64``, ``macosx_11_0_arm64``...).

    cffi's ABI mode loads libllama at run time, so the wheel fits every Python 3 of the
    platform: ``py3-none-<platform>``. ``auditwheel repair`` then turns ``linux_*`` into the
    manylinux tag the libraries qualify for.
    """
    plat = sysconfig.get_platform()
    if plat.startswith("macosx-"):
        _, version, arch = plat.split("-", 2)
        major = max(11, int(version.split(".")[0])) if arch == "arm64" else int(version.split(".")[0])
        minor = 0 if arch == "arm64" or major >= 11 else int(version.split(".")[1])
        return f"macosx_{major}_{minor}_{arch}"
    return re.sub(r"[^A-Za-z0-9]", "_", plat)


def repack_wheel(pure: Path, prefix: Path | None, backend: str, out_dir: Path, plat: str) -> str:
    """Write ``pure`` again as a ``py3-none-<plat>`` wheel with ``prefix``'s libraries in it.

    Each library goes in once, as a regular file under the name other libraries load it by
    (``libllama.so.0``, ``libggml-cpu-haswell.so``): a wheel holds no symlinks. Their
    ``manifest.json`` is rewritten to list what the wheel holds, so the loader's checks apply.
    ``prefix`` None: no libraries (a pure wheel).
    """
    dist, version = pure.name.split("-")[:2]
    name = f"{dist}-{version}-py3-none-{plat}.whl"
    records: list[tuple[str, bytes]] = []
    with zipfile.ZipFile(pure) as src:
        dist_info = next(n.split("/")[0] for n in src.namelist() if n.split("/")[0].endswith(".dist-info"))
        for info in src.infolist():
            if info.filename == f"{dist_info}/RECORD":
                continue
            data = src.read(info)
            if info.filename == f"{dist_info}/WHEEL":
                data = _wheel_file(data.decode(), plat).encode()
            records.append((info.filename, data))
    lib_dir = f"embellama/_lib/{backend}"
    if prefix is not None:
        records += _library_records(prefix, lib_dir, plat)
    out = out_dir / name
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        rows = []
        for path, data in records:
            info = zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = (0o755 if path.startswith(lib_dir) and ".so" in path else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(info, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            rows.append((path, f"sha256={digest}", str(len(data))))
        rows.append((f"{dist_info}/RECORD", "", ""))
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows(rows)
        dst.writestr(f"{dist_info}/RECORD", text.getvalue())
    return name


def _library_records(prefix: Path, lib_dir: str, plat: str) -> list[tuple[str, bytes]]:
    """The libraries, their (rewritten) manifest and any generated declarations, as wheel entries."""
    manifest = json.loads((prefix / "manifest.json").read_text(encoding="utf-8"))
    shipped = wheel_library_names(prefix)
    manifest["files"] = {name: _sha256(prefix / name) for name in shipped}
    manifest["links"] = {}
    manifest["libraries"] = _stems(shipped)
    manifest["tools"] = []
    manifest["wheel"] = {"platform": plat}
    manifest["source"] = {k: v for k, v in manifest.get("source", {}).items() if k != "directory"}
    records = [(f"{lib_dir}/{lib}", (prefix / lib).read_bytes()) for lib in shipped]
    cdef = prefix / "llama.cdef.h"
    if cdef.is_file():
        records.append((f"{lib_dir}/llama.cdef.h", cdef.read_bytes()))
    records.append((f"{lib_dir}/manifest.json", (json.dumps(manifest, indent=2) + "\n").encode()))
    return records


_LIB_RE = re.compile(r"^(?:lib)?(.+?)((?:\.\d+)*)\.(so|dylib|dll)((?:\.\d+)*)$")


def _stems(names: list[str]) -> dict[str, str]:
    out = {}
    for name in names:
        match = _LIB_RE.match(name)
        if match:
            out[match.group(1)] = name
    return out


def wheel_library_names(prefix: Path) -> list[str]:
    """One name per library in a build's install folder: the one the loader and linker use.

    That is the SONAME-style name with one version number where there is one
    (``libllama.so.0``, ``libllama.0.dylib``), else the plain one (``libggml-cpu-x64.so``, ``llama.dll``).
    """
    by_stem: dict[str, list[str]] = {}
    for path in prefix.iterdir():
        match = _LIB_RE.match(path.name)
        if match and (path.is_file() or path.is_symlink()):
            by_stem.setdefault(match.group(1), []).append(path.name)

    def versions(name: str) -> int:
        match = _LIB_RE.match(name)
        assert match
        return len([v for v in (match.group(2) + match.group(4)).split(".") if v])

    chosen = []
    for names in by_stem.values():
        ones = [n for n in names if versions(n) == 1]
        chosen.append(min(ones or names, key=len))
    return sorted(chosen)


def _wheel_file(text: str, plat: str) -> str:
    # Header lines only: a blank line would end the headers, hiding the tag behind it.
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith(("Tag:", "Root-Is-Purelib:"))]
    lines.insert(2, "Root-Is-Purelib: false")
    return "\n".join([*lines, f"Tag: py3-none-{plat}"]) + "\n"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- sdist


def build_sdist(sdist_directory: str, config_settings: Mapping[str, Any] | None = None) -> str:
    """PEP 517: setuptools' sdist plus the pinned llama.cpp source (checked against the pins)."""
    name = _setuptools.build_sdist(sdist_directory, config_settings)
    archive = Path(sdist_directory) / name
    source = pinned_source()
    base = name[: -len(".tar.gz")]
    with tempfile.TemporaryDirectory(prefix="embellama-sdist-") as tmp:
        unpacked = Path(tmp)
        with tarfile.open(archive) as tar:
            tar.extractall(unpacked, filter="data")
        dest = unpacked / base / SDIST_SOURCE
        digests = copy_source(source, dest)
        meta = json.loads((source / SOURCE_META).read_text(encoding="utf-8"))
        meta.update(kind="sdist", files_sha256=digests)
        (dest / SOURCE_META).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        with tarfile.open(archive, "w:gz", format=tarfile.PAX_FORMAT) as tar:
            tar.add(unpacked / base, arcname=base, filter=_normalize)
    return name


def pinned_source() -> Path:
    """The cached pinned llama.cpp source, fetched by llamabuild if needed, and checked.

    Checked: its record names the pinned commit and the pinned llama-cpp-python sdist's
    sha256 (verified when it was extracted), and its ``llama.h`` has the pinned sha256.
    """
    cache = _paths.default_cache_dir()
    folder = _paths.cached_source_dir(cache)
    source = _sources.load_cached_source(folder)
    if source is None:
        with tempfile.TemporaryDirectory() as logs:
            source = _sources.fetch_source("pypi", cache, Path(logs) / "source.log")
    problems = []
    if source.commit != _pins.LLAMA_CPP_COMMIT:
        problems.append(f"commit {source.commit} is not the pinned {_pins.LLAMA_CPP_COMMIT}")
    if source.sdist_sha256 != _pins.SDIST_SHA256:
        problems.append(f"it came from an sdist with sha256 {source.sdist_sha256}, not {_pins.SDIST_SHA256}")
    if _sha256(folder / "include" / "llama.h") != _pins.LLAMA_H_SHA256:
        problems.append("its include/llama.h is not the pinned one")
    if problems:
        raise RuntimeError(f"the llama.cpp source in {folder} is not the pinned one: {'; '.join(problems)}")
    return folder


def copy_source(source: Path, dest: Path) -> dict[str, str]:
    """Copy :data:`SOURCE_PARTS` of ``source`` into ``dest``; return their files' sha256."""
    digests: dict[str, str] = {}
    for part in SOURCE_PARTS:
        src = source / part
        if src.is_dir():
            shutil.copytree(src, dest / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".git*"))
        elif src.is_file():
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / part)
    for path in sorted(p for p in dest.rglob("*") if p.is_file()):
        digests[path.relative_to(dest).as_posix()] = _sha256(path)
    return digests


def _normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info
