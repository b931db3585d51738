# SPDX-License-Identifier: Apache-2.0
"""Run the test session of a GPU backend on a machine with no internet (standard library only).

``nox -s "tests(backend='cuda')"`` needs the network (pip, the llama.cpp source, the
model package). This script packs what the suite needs on a connected machine, and runs
it on the offline one in two steps:

    nox -s offline                                           # here: pack, writes .offline/build and .offline/test
    # copy the checkout with .offline/ to the GPU machine, then there:
    python3 benchmarks/offline_suite.py build --backend cuda # CUDA + CPU builds, with llama-embedding
    python3 benchmarks/offline_suite.py test --backend cuda --results DIR

``pack`` needs the test dependencies (``nox -s offline`` installs them, then runs it) and
says how large each part is: ``build/`` (15 MiB) and ``test/`` (47 MiB) travel together
in a 64 MiB transfer, or one after the other.

``build`` keeps its work in ``.offline/`` (an incremental rerun takes seconds). ``test``
runs the whole pytest suite against the backend's build, compares it with the CPU build
on the STS sentences (``compare_backends.py``, fails below cosine 0.999) and measures
throughput beside llama.cpp's ``llama-embedding`` (``bench_throughput.py``); the reports,
``junit.xml``, ``summary.json`` and one ``run.log`` (six files) go to ``--results``.

The offline machine needs Python >= 3.10 with numpy, pytest and scipy, a C/C++ compiler,
CMake and the backend's toolkit; ``pack`` brings cffi and pycparser as wheels for its
Python (``--python``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO / ".offline"
TRANSFER_LIMIT = 64 * 2**20  # what one transfer may carry
WHEELS = ("cffi==2.0.0", "pycparser==3.0")
# Left out of the llama.cpp source: nothing the libraries, llama-embedding or the converter need.
# Left out as well: the ggml backends that build_llama.py does not build.
_UNUSED_BACKENDS = ("cann", "et", "hexagon", "opencl", "openvino", "sycl", "virtgpu", "webgpu", "zdnn")
SOURCE_SKIP = (
    *("docs", "media", "benches", "tests", "tools/ui", "tools/server/public", ".git"),
    *(f"ggml/src/ggml-{b}" for b in _UNUSED_BACKENDS),
)


def _say(message: str) -> None:
    print(f"offline_suite: {message}", file=sys.stderr, flush=True)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _support(name: str):  # type: ignore[no-untyped-def]
    """A module of ``tests.support`` (imported only by ``pack``: the other commands need the standard library only)."""
    if str(REPO) not in sys.path:  # run as a script from anywhere: the repository root holds tests.support
        sys.path.insert(0, str(REPO))
    return importlib.import_module(f"tests.support.{name}")


def _vocab_files(models: Path) -> list[Path]:
    names = _support("vocabs").VOCABS_USED
    return sorted(p for n in names for p in models.glob(f"ggml-vocab-{n}.gguf*"))


def pack_source(source: Path, dest: Path) -> Path:
    """The llama.cpp tree as ``llama.cpp.tar.xz``, without docs and tests, with the vocab test files.

    Its top folder is named as build_llama.py's source cache names it, so that
    unpacked into ``<cache>/src`` it is a cached source of the pinned commit.
    """
    keep_vocab = set(_vocab_files(source / "models"))
    top = _llamabuild("paths").cached_source_dir(Path("cache")).name

    def wanted(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        rel = Path(info.name).relative_to(top).as_posix() if info.name != top else ""
        if any(rel == skip or rel.startswith(skip + "/") for skip in SOURCE_SKIP):
            return None
        if rel.startswith("models/") and rel.count("/") == 1 and info.isfile():
            return info if source / rel in keep_vocab else None
        return info

    out = dest / "llama.cpp.tar.xz"
    with tarfile.open(out, "w:xz", preset=6) as tar:
        tar.add(source, arcname=top, filter=wanted)
    return out


def _llamabuild(module: str):  # type: ignore[no-untyped-def]
    """``llamabuild.<module>``: the build package (standard library only), found by tests.support.make_model."""
    return _support("make_model")._llamabuild(module)


def pack(args: argparse.Namespace) -> int:
    make_model, reference, texts = (_support(name) for name in ("make_model", "reference", "texts"))
    root: Path = args.dir
    build_dir, test_dir = root / "build", root / "test"
    for folder in (build_dir, test_dir):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)

    started = time.perf_counter()
    source = make_model.llama_source()
    _say(f"packing the llama.cpp source from {source}")
    pack_source(source, build_dir)
    wheels = build_dir / "wheels"
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "-d", str(wheels)]
    cmd += ["--python-version", args.python, "--implementation", "cp"]
    for tag in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "any"):
        cmd += ["--platform", tag]
    subprocess.run([*cmd, *WHEELS], check=True)

    _say("packing the model, its references and the STS sentences")
    models = make_model.ensure_models(verbose=False)
    cache = test_dir / "cache"
    (cache / "models").mkdir(parents=True)
    with open(models["f16"], "rb") as src, lzma.open(cache / "models" / (models["f16"].name + ".xz"), "wb") as dst:
        shutil.copyfileobj(src, dst, 2**20)  # Q8_0 is made there from it
    # The references the suite compares with, computed here by sentence-transformers.
    reference.reference_outputs(texts.varied_texts(), "varied")
    if reference.STS_FILE.is_file():
        s1, s2, _ = reference.read_sts()
        reference.reference_outputs(s1 + s2, "sts", modes="")
        shutil.copy2(reference.STS_FILE, test_dir / "sts-test.csv")
    references = make_model.cache_dir() / "reference"  # where reference_outputs keeps them
    shutil.copytree(references, cache / "models" / "reference", ignore=shutil.ignore_patterns("*.tmp*"))
    hf = make_model.hf_model_dir()
    shutil.copytree(hf, test_dir / "hf", ignore=shutil.ignore_patterns("model.safetensors", "*.bin", "onnx"))
    digest = make_model._sha256(hf / "model.safetensors")
    (test_dir / "hf" / "model.safetensors.sha256").write_text(digest + "\n", encoding="ascii")

    (test_dir / "bundle.json").write_text(json.dumps({"weights_key": digest[:12]}))
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=False).stdout
    repo = sum(_size(REPO / name) for name in tracked.decode().split("\0") if name and (REPO / name).is_file())
    sizes = {"build": _size(build_dir), "test": _size(test_dir), "build + test": _size(build_dir) + _size(test_dir)}
    for name, size in sizes.items():
        verdict = "fits in" if size + repo < TRANSFER_LIMIT else "is over"
        _say(f"{name}: {size / 2**20:.1f} MiB; with the checkout it {verdict} one 64 MiB transfer")
    _say(f"packed in {time.perf_counter() - started:.0f} s")
    return 0


def _run(cmd: list[str], log: Path | None = None, env: dict[str, str] | None = None) -> int:
    _say("$ " + " ".join(cmd))
    started = time.perf_counter()
    if log is None:
        code = subprocess.run(cmd, env=env, cwd=REPO).returncode
    else:
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"\n$ {' '.join(cmd)}\n")
            proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            assert proc.stdout is not None
            for line in proc.stdout:
                f.write(line)
                sys.stderr.write(line)
            code = proc.wait()
            f.write(f"[exit {code}]\n")
    _say(f"exit {code} after {time.perf_counter() - started:.0f} s")
    return code


def build(args: argparse.Namespace) -> int:
    root: Path = args.dir
    cache = (root / "cache").resolve()
    source = _llamabuild("paths").cached_source_dir(cache)
    if not (source / "CMakeLists.txt").is_file():
        _say(f"unpacking {root / 'build' / 'llama.cpp.tar.xz'} into {source}")
        with tarfile.open(root / "build" / "llama.cpp.tar.xz") as tar:
            tar.extractall(source.parent, filter="data")
    common = [sys.executable, str(REPO / "build_llama.py"), "--with-tools", "--cache-dir", str(cache)]
    common += ["--jobs", str(args.jobs)] if args.jobs else []
    for backend in dict.fromkeys([args.backend, "cpu"]):
        extra = ["--cuda-arch", args.cuda_arch] if backend == "cuda" and args.cuda_arch else []
        code = _run([*common, "--backend", backend, *extra])
        if code != 0:
            return code
    return 0


def test(args: argparse.Namespace) -> int:
    root: Path = args.dir
    results: Path = args.results
    results.mkdir(parents=True, exist_ok=True)
    site = root / "site"
    if not site.is_dir():
        wheels = sorted(str(p) for p in (root / "build" / "wheels").glob("*.whl"))
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--target", str(site)]
        if _run([*cmd, *wheels]) != 0:
            return 1
    bundle = json.loads((root / "test" / "bundle.json").read_text())
    # The packed model and references join the build's cache, beside the source.
    cache = (root / "cache").resolve()
    packed = root / "test" / "cache" / "models"
    for item in sorted(p for p in packed.rglob("*") if p.is_file()):
        target = cache / "models" / item.relative_to(packed)
        target.parent.mkdir(parents=True, exist_ok=True)
        if item.suffix == ".xz" and not target.with_suffix("").is_file():
            with lzma.open(item) as src, open(target.with_suffix(""), "wb") as dst:
                shutil.copyfileobj(src, dst, 2**20)
        elif item.suffix != ".xz" and not target.is_file():
            shutil.copy2(item, target)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(REPO), str(site), os.environ.get("PYTHONPATH", "")]),
        EMBELLAMA_BACKEND=args.backend,
        EMBELLAMA_LIB="",
        EMBELLAMA_CACHE_DIR=str(cache),
        EMBELLAMA_TEST_HF_DIR=str(root / "test" / "hf"),
        CI="1",  # the STS test must not skip
    )
    if (root / "test" / "sts-test.csv").is_file():
        env["EMBELLAMA_STS_FILE"] = str(root / "test" / "sts-test.csv")
    py = sys.executable
    steps = [
        ("model", [py, "tests/support/make_model.py"]),
        ("pytest", [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={results / 'junit.xml'}"]),
    ]
    if args.backend != "cpu":
        compare = [py, "benchmarks/compare_backends.py", "cpu", args.backend, "--min-cos", "0.999"]
        steps.append(("compare", [*compare, "--out", str(results / f"{args.backend}-vs-cpu.md")]))
    bench = [py, "benchmarks/bench_throughput.py", "--backend", args.backend, "--rounds", str(args.rounds)]
    steps.append(("bench", [*bench, "--out", str(results / f"bench-{args.backend}.md")]))
    summary = {"weights_key": bundle["weights_key"], "backend": args.backend, "steps": {}}
    failed = 0
    log = results / "run.log"  # one log: few files come back from a remote run
    log.unlink(missing_ok=True)
    for name, cmd in steps:
        started = time.perf_counter()
        code = _run(cmd, log, env)
        summary["steps"][name] = {"exit": code, "seconds": round(time.perf_counter() - started, 1)}
        failed |= code != 0
        if code != 0 and name == "model":
            break
    (results / "summary.json").write_text(json.dumps(summary, indent=1))
    _say(json.dumps(summary))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="the bundle folder (default: .offline)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="on a connected machine: write <dir>/build and <dir>/test")
    p.add_argument("--python", default="3.12", help="Python version of the offline machine (for the wheels)")
    p = sub.add_parser("build", help="offline: build the backend and the CPU libraries with the tools")
    p.add_argument("--backend", default="cuda")
    p.add_argument("--cuda-arch", help="default: the local GPU's")
    p.add_argument("--jobs", type=int)
    p = sub.add_parser("test", help="offline: the test suite, the CPU comparison and the benchmark")
    p.add_argument("--backend", default="cuda")
    p.add_argument("--results", type=Path, default=DEFAULT_DIR / "results")
    p.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    return {"pack": pack, "build": build, "test": test}[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
