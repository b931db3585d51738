# SPDX-License-Identifier: Apache-2.0
"""The wheel as users get it.

The ``tests`` nox session builds it (``python -m build --wheel``, then ``auditwheel repair``) into
a wheelhouse with numpy, cffi and pycparser beside it and names that folder in
``$EMBELLAMA_WHEELHOUSE``. Here it is installed offline (``pip install --no-index``) into a fresh
venv in a temporary folder outside the checkout and run the way a constrained machine runs it:

- with site-packages and HOME read-only: mounted read-only in a mount namespace of its own
  (``unshare -m``) when the tests run as root, whom mode bits do not stop; read-only by their mode
  bits for any other user;
- with PATH holding only the venv's ``bin``: no compiler, no cmake;
- with ``python -I``: nothing of the checkout on ``sys.path``.

What it must do there: embed the STS sentences as sentence-transformers does (cosine >= 0.99999)
and as the checkout's own build does, name the CPU variant ggml chose for this CPU, run the CLI,
and start with a missing HOME. ``embellama build`` from the installed package is tested with a
compiler, as it needs one.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from embellama import EmbeddingModel, ModelConfig
from tests.support.artifacts import artifact

PIP = (sys.executable, "-m", "pip")
OFFLINE = ("--no-index", "--find-links")
ST_LIMIT = 256  # sentence-transformers cuts all-MiniLM-L6-v2 at 256 tokens
MIN_COSINE = 0.99999

# ggml's x86-64 CPU variants at the pin (ggml/src/CMakeLists.txt) and the /proc/cpuinfo flags each
# needs (ggml/src/ggml-cpu/arch/x86/cpu-feats.cpp: AVX512 means F, CD, VL, DQ and BW).
_AVX512 = {"avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"}
_HASWELL = {"sse4_2", "avx", "f16c", "fma", "avx2", "bmi2"}
X86_VARIANTS: dict[str, set[str]] = {
    "x64": set(),
    "sse42": {"sse4_2"},
    "sandybridge": {"sse4_2", "avx"},
    "ivybridge": {"sse4_2", "avx", "f16c"},
    "piledriver": {"sse4_2", "avx", "f16c", "fma"},
    "haswell": _HASWELL,
    "skylakex": _HASWELL | _AVX512,
    "cannonlake": _HASWELL | _AVX512 | {"avx512vbmi"},
    "cascadelake": _HASWELL | _AVX512 | {"avx512_vnni"},
    "icelake": _HASWELL | _AVX512 | {"avx512vbmi", "avx512_vnni"},
    "cooperlake": _HASWELL | _AVX512 | {"avx512_vnni", "avx512_bf16"},
    "zen4": _HASWELL | _AVX512 | {"avx512vbmi", "avx512_vnni", "avx512_bf16"},
    "alderlake": _HASWELL | {"avx_vnni"},
    "sapphirerapids": _HASWELL | _AVX512 | {"avx512vbmi", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8"},
}

CHILD = """
import json, sys
import numpy as np
import embellama
from embellama._native import cache_dir

model, texts_file, out, compute_type = sys.argv[1:5]
texts = json.loads(open(texts_file, encoding="utf-8").read())
config = embellama.ModelConfig(model_path=model, max_tokens=256, compute_type=compute_type)
with embellama.EmbeddingModel(config) as m:
    np.save(out, m.embed_batch(texts, show_progress_bar=False))
lib = embellama.get_library()
print(json.dumps({"package": embellama.__file__, "library": str(lib.path), "variant": lib.cpu_variant,
                  "found_by": lib.source, "warnings": lib.warnings, "cache": str(cache_dir()),
                  "system_info": lib.system_info()}))
"""


def expected_variant(flags: set[str]) -> str:
    """The variant ggml scores highest for a CPU with these flags: the one with the most features it has."""
    usable = [name for name, needs in X86_VARIANTS.items() if needs <= flags]
    return max(usable, key=lambda name: len(X86_VARIANTS[name]))


def cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    raise AssertionError("no flags line in /proc/cpuinfo")


@dataclass
class Installed:
    root: Path
    venv: Path
    wheel: Path
    model: Path
    work: Path
    home: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def run(
        self, *args: str, env: dict[str, str] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run in the venv: only the venv on PATH, the venv and HOME read-only."""
        base = {"PATH": str(self.venv / "bin"), "HOME": str(self.home), "LANG": "C.UTF-8"}
        if env is not None:
            base.update(env)
        base = {k: v for k, v in base.items() if v is not None and v != "<unset>"}
        command = list(args)
        if os.geteuid() == 0:  # root writes through mode bits: mount the venv and HOME read-only
            mounts = " && ".join(
                f"mount --bind {shlex.quote(str(p))} {shlex.quote(str(p))} && "
                f"mount -o remount,bind,ro {shlex.quote(str(p))} {shlex.quote(str(p))}"
                for p in (self.venv, self.home, Path(pwd.getpwuid(0).pw_dir))  # and root's own home
            )
            venv_bin = shlex.quote(str(self.venv / "bin"))
            script = f'{mounts} && PATH={venv_bin} exec "$@"'
            command = ["/usr/bin/unshare", "-m", "/bin/sh", "-c", script, "sh", *command]
            base["PATH"] = "/usr/bin:/bin"  # for unshare's shell and mount; the command gets the venv's alone
        proc = subprocess.run(command, cwd=self.work, env=base, capture_output=True, text=True, timeout=600)
        if check and proc.returncode != 0:
            raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc


@pytest.fixture(scope="module")
def wheelhouse() -> Path:
    return artifact("EMBELLAMA_WHEELHOUSE", "the wheel")


@pytest.fixture(scope="module")
def wheel(wheelhouse) -> Path:
    wheels = sorted(wheelhouse.glob("embellama-*.whl"))
    assert len(wheels) == 1, f"expected one embellama wheel in {wheelhouse}, found {wheels}"
    return wheels[0]


@pytest.fixture(scope="module")
def installed(wheelhouse, wheel, minilm_f16):
    root = Path(tempfile.mkdtemp(prefix="embellama-wheel-"))
    try:
        root.chmod(0o755)
        venv = root / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        # pip of this interpreter installs into the new venv: offline, from the wheelhouse only.
        subprocess.run(
            [*PIP, "--python", str(venv / "bin" / "python"), "install", "-q", *OFFLINE, str(wheelhouse), "embellama"],
            check=True,
            env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        )
        for path in [venv, *venv.rglob("*")]:  # read-only for everyone (root aside: see Installed.run)
            if not path.is_symlink():
                path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        home = root / "home"
        home.mkdir(mode=0o555)
        work = root / "work"
        work.mkdir()
        work.chmod(0o777)
        model = root / "model.gguf"
        shutil.copyfile(minilm_f16, model)
        model.chmod(0o644)
        (work / "child.py").write_text(CHILD, encoding="utf-8")
        yield Installed(root, venv, wheel, model, work, home)
    finally:
        for path in [root, *root.rglob("*")]:
            if not path.is_symlink():
                with contextlib.suppress(OSError):
                    path.chmod(0o755 if path.is_dir() else 0o644)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def sts_run(installed, sts):
    s1, s2, _ = sts
    texts = s1 + s2
    texts_file = installed.root / "texts.json"
    texts_file.write_text(json.dumps(texts), encoding="utf-8")
    texts_file.chmod(0o644)
    out = installed.work / "sts.npy"
    # The file's own F16 weights, which the checkout's run below reads too. (compute_type="auto" would run them
    # as F32 on an Intel CPU with AVX512_BF16: test_runs_without_a_writable_home takes that path.)
    proc = installed.run("python", "-I", "child.py", str(installed.model), str(texts_file), str(out), "off")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return texts, np.load(out), report


def test_wheel_is_a_manylinux_platform_wheel_with_every_cpu_variant(wheel):
    assert wheel.name.startswith("embellama-") and "-py3-none-manylinux_" in wheel.name, wheel.name
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        manifest = json.loads(zf.read("embellama/_lib/cpu/manifest.json"))
        wheel_file = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/WHEEL"))).decode()
        modes = {info.filename: info.external_attr >> 16 for info in zf.infolist()}
    tag = wheel.name[: -len(".whl")].split("-", 2)[2]
    assert f"Tag: {tag}" in wheel_file.splitlines() and "Root-Is-Purelib: false" in wheel_file, wheel_file
    libs = {n.rsplit("/", 1)[1] for n in names if n.startswith("embellama/_lib/cpu/lib")}
    assert {f"libggml-cpu-{name}.so" for name in X86_VARIANTS} <= libs
    assert {"libllama.so.0", "libggml.so.0", "libggml-base.so.0"} <= libs
    assert not any(stat.S_ISLNK(mode) for mode in modes.values()), "a wheel must hold no symlinks"
    assert manifest["portable"] is True and set(manifest["cpu_variants"]) == set(X86_VARIANTS)
    assert "-DGGML_CPU_ALL_VARIANTS=ON" in manifest["cmake_options"]
    assert "embellama/_native/llama.cdef.h" in names
    # the build package ships beside embellama (``embellama build`` runs it), and no copy of a script
    assert {"llamabuild/__main__.py", "llamabuild/cli.py", "llamabuild/probe.py", "llamabuild/pins.json"} <= set(names)
    assert not any(n.endswith("build_llama.py") for n in names), "the wheel carries no copy of build_llama.py"
    assert not any("libgomp" in n for n in names), "a portable build uses ggml's threads, not OpenMP"


def test_installed_wheel_matches_sentence_transformers_and_the_checkout(
    installed, sts_run, sts_reference, library, minilm_f16, record_property
):
    texts, ours, report = sts_run
    # The installed copy ran, not the checkout: package and libllama from the venv.
    assert Path(report["package"]).is_relative_to(installed.venv), report
    assert Path(report["library"]).is_relative_to(installed.venv), report
    assert report["found_by"] == "built cpu library" and report["warnings"] == [], report
    theirs = sts_reference["emb_st"]
    cos = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    record_property("wheel_sts_min_cos", float(cos.min()))
    assert cos.min() >= MIN_COSINE, f"worst: {texts[int(cos.argmin())]!r} ({cos.min():.7f})"
    with EmbeddingModel(ModelConfig(model_path=minilm_f16, max_tokens=ST_LIMIT, compute_type="off")) as model:
        checkout = model.embed_batch(texts, show_progress_bar=False)
    same = (ours * checkout).sum(1)  # both L2-normalized
    print(
        f"\nwheel ({report['variant']}) vs sentence-transformers: min cos {cos.min():.7f}; vs checkout "
        f"({library.path.parent.name}): min cos {same.min():.8f}, max |diff| {np.abs(ours - checkout).max():.2e}"
    )
    assert same.min() >= 0.999999


def test_doctor_names_the_cpu_variant_ggml_chose(installed):
    proc = installed.run("embellama", "doctor", "--json")
    report = json.loads(proc.stdout)
    assert report["cpu_variant"] == expected_variant(cpu_flags()), report
    assert set(report["cpu_variants_shipped"]) == set(X86_VARIANTS)
    assert Path(report["library"]).is_relative_to(installed.venv)
    # compute_type="auto" asks the loaded variant: F32 (on Intel CPUs) only where it has the AVX512_BF16 kernel.
    assert ("AVX512_BF16 = 1" in report["system_info"]) == ("avx512_bf16" in X86_VARIANTS[report["cpu_variant"]])


def test_installed_cli_embeds_like_the_api(installed, sts_run):
    texts, ours, _ = sts_run
    proc = installed.run("embellama", "embed", str(installed.model), texts[0], texts[1], "--compute-type", "off")
    output = json.loads(proc.stdout)
    assert output["model"] == installed.model.stem
    vectors = np.asarray(output["embeddings"], dtype=np.float32)
    assert vectors.shape == (2, 384)
    assert float(np.min((vectors * ours[:2]).sum(1))) >= 0.999999


@pytest.mark.parametrize("home", ["<unset>", "/dev/null/home"])
def test_runs_without_a_writable_home(installed, home):
    """No HOME, or one that cannot exist: the caches move to the temporary folder, or, where that is
    not writable either, are skipped."""
    texts_file = installed.root / "one.json"
    texts_file.write_text(json.dumps(["A man is playing a guitar."]), encoding="utf-8")
    texts_file.chmod(0o644)
    out = installed.work / f"one-{abs(hash(home))}.npy"
    args = ("python", "-I", str(installed.work / "child.py"), str(installed.model), str(texts_file), str(out), "auto")
    proc = installed.run(*args, env={"HOME": home})
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    if os.geteuid() == 0 or home != "<unset>":  # another user without HOME has a writable home of their own
        assert report["cache"].startswith(tempfile.gettempdir()), report
    unwritable_tmp = installed.root / "home"  # read-only for the child
    proc = installed.run(*args, env={"HOME": home, "TMPDIR": str(unwritable_tmp)})
    assert np.load(out).shape == (1, 384), proc.stderr


def test_embellama_build_from_the_installed_package(installed, tmp_path, library):
    """``embellama build --backend cpu`` with the installed build package (llamabuild), into the user
    cache, where the loader finds it. The build folder is the one the tests session's build left
    (an incremental build: configure, compile and link are checked to be up to date, the probe is
    compiled and run, and the libraries are installed and recorded afresh)."""
    manifest = library.manifest or {}
    build_dir = Path(manifest.get("source", {}).get("directory", "")).parent.parent / "build"
    source = Path(manifest["source"]["directory"])
    # the tests session builds the portable libllama (the wheel's); a native build folder otherwise
    portable = bool(manifest.get("portable"))
    build_dir = build_dir / f"{manifest['llama_cpp_commit'][:12]}-cpu{'-portable' if portable else ''}"
    assert (build_dir / "CMakeCache.txt").is_file(), build_dir
    cache = tmp_path / "cache"
    env = {**os.environ, "EMBELLAMA_CACHE_DIR": str(cache), "EMBELLAMA_LIB": "", "EMBELLAMA_BACKEND": ""}
    env["PATH"] = f"{installed.venv / 'bin'}{os.pathsep}{os.environ['PATH']}"
    command = [str(installed.venv / "bin" / "embellama"), "build", "--backend", "cpu", *(["--portable"] * portable)]
    command += ["--source", str(source), "--build-dir", str(build_dir)]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    prefix = cache / "lib" / f"embellama-{manifest['llama_cpp_commit'][:12]}-cpu"
    assert (prefix / "manifest.json").is_file() and (prefix / "libllama.so").exists()
    proc = subprocess.run(
        [str(installed.venv / "bin" / "embellama"), "doctor", "--json"], env=env, capture_output=True, text=True
    )
    report = json.loads(proc.stdout)
    assert report["found_by"] == "embellama build --backend cpu", report
    assert Path(report["library"]).parent == prefix
