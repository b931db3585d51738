# SPDX-License-Identifier: Apache-2.0
"""The loader: search order, errors, the ABI guard both ways, log routing, a real call."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import embellama
from embellama import LibraryError
from embellama._native import abi, compat, declarations, discovery, loader, paths
from embellama._native.library import Library


def _lib_dir(library) -> Path:
    return library.path.parent


# -- search order and errors ------------------------------------------------------------


def test_search_order_argument_then_env_then_builds(monkeypatch, tmp_path):
    monkeypatch.delenv("EMBELLAMA_LIB", raising=False)
    monkeypatch.delenv("EMBELLAMA_BACKEND", raising=False)
    monkeypatch.setenv("EMBELLAMA_CACHE_DIR", str(tmp_path / "cache"))
    default = discovery.find_library_candidates()
    # per backend: what `embellama build` put in the user cache, then the package's own build
    user = tmp_path / "cache" / "lib"
    assert [c[1] for c in default] == [
        path
        for b in ("cuda", "metal", "vulkan", "cpu")
        for path in (user / f"embellama-{compat.PIN_COMMIT}-{b}", paths.LIB_ROOT / b)
    ]
    assert [c[0] for c in default[-2:]] == ["embellama build --backend cpu", "built cpu library"]
    assert not any(c[2] for c in default)

    monkeypatch.setenv("EMBELLAMA_LIB", str(tmp_path / "env"))
    assert discovery.find_library_candidates() == [("$EMBELLAMA_LIB", tmp_path / "env", True)]
    # an explicit argument wins over the environment
    assert discovery.find_library_candidates(tmp_path / "arg") == [("argument", tmp_path / "arg", True)]

    monkeypatch.delenv("EMBELLAMA_LIB")
    monkeypatch.setenv("EMBELLAMA_BACKEND", "cpu")
    assert [c[1] for c in discovery.find_library_candidates()] == [
        user / f"embellama-{compat.PIN_COMMIT}-cpu",
        paths.LIB_ROOT / "cpu",
    ]
    monkeypatch.setenv("EMBELLAMA_BACKEND", "tpu")
    with pytest.raises(LibraryError, match="unknown backend 'tpu'"):
        discovery.find_library_candidates()


def test_missing_everywhere_names_every_place_and_the_build_command(monkeypatch, tmp_path):
    monkeypatch.delenv("EMBELLAMA_LIB", raising=False)
    monkeypatch.delenv("EMBELLAMA_BACKEND", raising=False)
    monkeypatch.setattr(discovery, "LIB_ROOT", tmp_path / "nothing")
    monkeypatch.setenv("EMBELLAMA_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(LibraryError) as info:
        discovery.open_library()
    message = str(info.value)
    for backend in ("cuda", "metal", "vulkan", "cpu"):
        assert str(tmp_path / "nothing" / backend) in message
        assert str(tmp_path / "cache" / "lib" / f"embellama-{compat.PIN_COMMIT}-{backend}") in message
    assert "embellama build" in message and "build_llama.py" in message and "EMBELLAMA_LIB" in message


def test_env_var_pointing_nowhere_is_an_error_not_a_fallback(monkeypatch, tmp_path):
    monkeypatch.setenv("EMBELLAMA_LIB", str(tmp_path / "missing.so"))
    with pytest.raises(LibraryError, match=r"\$EMBELLAMA_LIB: .*missing.so does not exist"):
        discovery.open_library()


def test_folder_without_library(tmp_path):
    with pytest.raises(LibraryError, match="no libllama"):
        discovery.open_library(tmp_path)


def test_file_that_is_not_a_library(tmp_path):
    fake = tmp_path / "libllama.so"
    fake.write_text("not an ELF file")
    with pytest.raises(LibraryError, match="cannot load"):
        discovery.open_library(fake)


def test_env_var_accepts_file_and_folder(monkeypatch, library):
    monkeypatch.setenv("EMBELLAMA_LIB", str(library.path))
    assert discovery.open_library().path == library.path
    monkeypatch.setenv("EMBELLAMA_LIB", str(_lib_dir(library)))
    assert discovery.open_library().path == library.path


def test_second_library_in_one_process_is_refused(library, tmp_path):
    assert embellama.load_library() is library
    with pytest.raises(LibraryError, match="already loaded"):
        embellama.load_library(tmp_path)


# -- ABI guard ----------------------------------------------------------------------------


def test_shipped_declarations_pass_the_guard(library):
    assert library.manifest is not None, "the built library should come with its manifest"
    # The portable build (the wheel's) carries ggml's AMX kernels for the CPUs that have AMX: expected and
    # handled (an info line, no warning); a native build of build_llama.py has none.
    assert library.warnings == []
    assert library.commit == "0c1e57098bba43ac29e6e3b677cdceebdd22334f"
    layout = library.manifest["layout"]
    ffi = library.ffi
    assert layout["llama_context_params"]["size"] == ffi.sizeof("struct llama_context_params")
    assert layout["llama_batch"]["fields"]["logits"] == ffi.offsetof("struct llama_batch", "logits")


MISMATCHES = [
    # a field missing in the middle (shifts everything after it)
    ("    uint32_t n_rs_seq;\n", "", "n_outputs_max_per_seq"),
    # a field the library does not have, as in llama-cpp-py-sync's header
    (
        "    enum ggml_type type_v;\n",
        "    enum ggml_type type_v;\n    size_t moe_cache_size;\n",
        "llama_context_params",
    ),
    # a field appended at the end: no default reveals it, only the size does
    ("    struct llama_context *ctx_other;\n", "    struct llama_context *ctx_other;\n    size_t extra;\n", "160"),
    # two fields swapped
    (
        "    bool vocab_only;\n    bool check_tensors;\n    bool use_extra_bufts;\n",
        "    bool use_extra_bufts;\n    bool check_tensors;\n    bool vocab_only;\n",
        "vocab_only",
    ),
    # a function the library does not export
    ("float *llama_get_embeddings_seq(", "float *llama_get_embeddings_by_seq(", "llama_get_embeddings_by_seq"),
]


@pytest.mark.parametrize(("old", "new", "named"), MISMATCHES)
def test_mismatched_declarations_raise_library_error(library, old, new, named):
    text = declarations.read_cdef()
    assert old in text
    with pytest.raises(LibraryError, match="ABI mismatch|lacks") as info:
        discovery.open_library(library.path, cdef=text.replace(old, new))
    assert named in str(info.value)


def test_layout_check_against_manifest(library):
    layout = json.loads(json.dumps(library.manifest["layout"]))
    abi.check_layout(library.ffi, layout, library.path)  # the real one passes
    layout["llama_model_params"]["fields"]["n_gpu_layers"] += 4
    layout["llama_batch"]["size"] += 8
    with pytest.raises(LibraryError) as info:
        abi.check_layout(library.ffi, layout, library.path)
    assert "llama_model_params.n_gpu_layers is at offset 16 here but 20 in llama.h" in str(info.value)
    assert "sizeof(llama_batch)" in str(info.value)


# A copy of the library is a second libllama/ggml: it must never share a process with
# the first one, so these tests open it in a child process, as a user's program would.
_OPEN_COPY = """
import json, sys
from embellama import LibraryError
from embellama._native import declarations, discovery
folder, cdef_old, cdef_new = sys.argv[1:4]
try:
    text = declarations.read_cdef().replace(cdef_old, cdef_new) if cdef_old else None
    opened = discovery.open_library(folder, cdef=text)
    print(json.dumps({"manifest": opened.manifest is not None, "warnings": opened.warnings}))
except LibraryError as exc:
    print(json.dumps({"error": str(exc)}))
"""


def _open_copy(folder, old="", new=""):
    proc = subprocess.run(
        [sys.executable, "-c", _OPEN_COPY, str(folder), old, new],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_custom_build_without_manifest_uses_runtime_check(library, tmp_path):
    copy = tmp_path / "custom"
    shutil.copytree(_lib_dir(library), copy, symlinks=True, ignore=shutil.ignore_patterns("manifest.json", "bin"))
    opened = _open_copy(copy)
    assert opened["manifest"] is False
    assert any("no build manifest" in w for w in opened["warnings"])
    # and a wrong declaration is still caught without a manifest
    result = _open_copy(copy, "    bool embeddings;\n", "    bool embeddings;\n    bool extra_flag;\n")
    assert "ABI mismatch" in result["error"] and "swa_full" in result["error"]


def test_manifest_of_another_file_is_not_trusted(library, tmp_path):
    copy = tmp_path / "custom"
    shutil.copytree(_lib_dir(library), copy, symlinks=True, ignore=shutil.ignore_patterns("bin"))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"] = {name: "0" * 64 for name in manifest["files"]}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    opened = _open_copy(copy)
    assert opened["manifest"] is False
    assert any("sha256 differs" in w for w in opened["warnings"])


# -- logging and a real call ----------------------------------------------------------------


def test_llama_logs_are_routed_to_python_logging(library, minilm_f16, caplog):
    from embellama.llama import Model

    llama_logger = logging.getLogger("embellama.llama_cpp")
    assert llama_logger.level == logging.NOTSET  # embellama sets no level ...
    with caplog.at_level(logging.DEBUG):  # ... and stays quiet below WARNING until this logger gets one
        Model(minilm_f16).close()
    assert not [r for r in caplog.records if r.name == "embellama.llama_cpp" and r.levelno < logging.WARNING]
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="embellama.llama_cpp"):
        Model(minilm_f16).close()
    records = [r for r in caplog.records if r.name == "embellama.llama_cpp"]
    assert any("llama_model_loader" in r.getMessage() for r in records)
    assert all("\n" not in r.getMessage() for r in records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="embellama.llama_cpp"):
        Model(minilm_f16).close()
    assert not [r for r in caplog.records if r.name == "embellama.llama_cpp" and r.levelno < logging.WARNING]


def test_real_model_metadata(library, minilm_f16):
    from embellama.llama import Model
    from tests.support import make_model

    vocab_txt = (Path(make_model.hf_model_dir()) / "vocab.txt").read_text(encoding="utf-8")
    with Model(minilm_f16) as model:
        assert model.n_embd == 384
        assert model.n_vocab == len(vocab_txt.splitlines()) == 30522
        assert model.n_ctx_train == 512
        assert model.n_layer == 6
        assert model.architecture == "bert"
        assert model.pooling_type == "mean"
        assert model.vocab_type == "wpm"
        assert not model.is_causal
        assert not model.has_encoder  # llama.cpp reports BERT as decoder-only
        assert 20e6 < model.n_params < 25e6
        assert model.size < minilm_f16.stat().st_size


_EMBED_Q8 = """
import sys
import numpy as np
from embellama import EmbeddingModel, ModelConfig
texts = ["The cat sat on the mat.", "Markets rallied on Friday.", "Dogs are loyal animals."]
out = [EmbeddingModel(ModelConfig(model_path=p, n_threads=2)).embed_batch(texts) for p in sys.argv[1:3]]
print(float(np.min((out[0] * out[1]).sum(1))))
"""


def test_quantized_model_embeds_without_crashing_the_process(library, minilm_f16, minilm_q8):
    # A native build on a CPU with AMX once compiled ggml's AMX kernels, which segfault on
    # Q8_0 weights; run in a child so a crash is a failed test, not a dead test run.
    proc = subprocess.run(
        [sys.executable, "-c", _EMBED_Q8, str(minilm_q8), str(minilm_f16)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=300,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    assert float(proc.stdout.strip().splitlines()[-1]) > 0.99
    if library.manifest is not None and not library.manifest.get("portable"):
        # a native build of build_llama.py compiles no AMX kernels at all; the portable one (the wheel's)
        # has them for AMX CPUs, and the child above embedded the Q8_0 model through them without a crash
        assert not library.has_amx_kernels, library.system_info()


def test_library_reports_backend_and_devices(library):
    backend = os.environ.get("EMBELLAMA_BACKEND") or "cpu"
    assert library.backend == backend
    types = [d["type"] for d in library.devices()]
    assert types[-1] == "CPU"  # llama.cpp lists the CPU last, after any GPUs
    assert (backend != "cpu") == any(t in ("GPU", "IGPU") for t in types), types
    assert library.version.startswith("0.")
    assert "AVX" in library.system_info() or "NEON" in library.system_info()
    assert library.max_parallel_sequences() == 256


_FAILED_START = """
import gc, sys
from embellama import LibraryError
from embellama._native import loader
def fail(lib, logs):
    raise LibraryError("simulated start-up failure")
real_start, loader._start_backend = loader._start_backend, fail
try:
    loader.load_library()
except LibraryError:
    pass
gc.collect()  # the failed Library, and with it the log callback, is gone now
loader._start_backend = real_start
from embellama.llama import Model
Model(sys.argv[1]).close()  # llama.cpp logs while loading: into the freed callback if it were still installed
print("survived")
"""


def test_a_failed_library_start_uninstalls_its_log_callback(library, minilm_f16):
    proc = subprocess.run(
        [sys.executable, "-c", _FAILED_START, str(minilm_f16)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"exit status {proc.returncode}: {proc.stderr[-1500:]}"
    assert "survived" in proc.stdout


def test_log_lines_from_several_threads_do_not_mix(library, caplog):
    """llama.cpp writes a line in pieces (level 5 continues it); each thread assembles its own."""
    import threading

    ffi, callback = library.ffi, library._log_route.callback
    steps = [threading.Barrier(2) for _ in range(4)]

    def writer(tag):
        pieces = [(3, f"{tag} starts"), (5, f" {tag} middle"), (5, f" {tag} ends\n")]
        for i, (level, text) in enumerate(pieces):
            steps[i].wait(10)
            callback(level, ffi.new("char[]", text.encode()), ffi.NULL)
        steps[3].wait(10)

    with caplog.at_level(logging.WARNING, logger="embellama.llama_cpp"):
        threads = [threading.Thread(target=writer, args=(tag,)) for tag in ("alpha", "beta")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    lines = sorted(r.getMessage() for r in caplog.records if r.name == "embellama.llama_cpp")
    assert lines == ["alpha starts alpha middle alpha ends", "beta starts beta middle beta ends"]


def test_parsed_declarations_are_cached_as_an_out_of_line_module(tmp_path, monkeypatch):
    import cffi

    monkeypatch.setenv("EMBELLAMA_CACHE_DIR", str(tmp_path))
    text = declarations.read_cdef()
    first = declarations.make_ffi(text)
    assert isinstance(first, cffi.FFI)  # parsed by pycparser this time
    (module,) = (tmp_path / "cffi").glob("_embellama_ffi_*.py")
    second = declarations.make_ffi(text)
    assert not isinstance(second, cffi.FFI)  # the cached module's FFI: no parsing
    for spelling in ("struct llama_context_params", "struct llama_model_params", "struct llama_batch"):
        assert second.sizeof(spelling) == first.sizeof(spelling)
        assert [(n, second.offsetof(spelling, n)) for n, _ in second.typeof(spelling).fields] == [
            (n, first.offsetof(spelling, n)) for n, _ in first.typeof(spelling).fields
        ]
    other = declarations.make_ffi(text.replace("int32_t n_gpu_layers;", "int64_t n_gpu_layers;"))
    moved = other.offsetof("struct llama_model_params", "split_mode")
    assert moved == second.offsetof("struct llama_model_params", "split_mode") + 4  # another module
    module.write_text("this is not python")
    assert isinstance(declarations.make_ffi(text), cffi.FFI)  # a damaged module is parsed again and rewritten
    assert not isinstance(declarations.make_ffi(text), cffi.FFI)
    with pytest.raises(LibraryError, match="do not parse"):
        declarations.make_ffi("struct { broken")


def test_the_cached_module_keeps_its_bytecode_even_when_python_writes_none(tmp_path, monkeypatch):
    import importlib.util

    monkeypatch.setenv("EMBELLAMA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # as PYTHONDONTWRITEBYTECODE=1 does
    text = declarations.read_cdef()
    declarations.make_ffi(text)
    (module,) = (tmp_path / "cffi").glob("_embellama_ffi_*.py")
    pyc = Path(importlib.util.cache_from_source(str(module)))
    assert pyc.is_file()  # written with the module: later starts load bytecode, not source
    pyc.unlink()
    ffi = declarations.make_ffi(text)  # a module without it (an older cache) gets it at the next load
    assert pyc.is_file() and ffi.sizeof("struct llama_batch") > 0


def test_declarations_work_without_a_writable_cache(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("EMBELLAMA_CACHE_DIR", str(blocker))
    ffi = declarations.make_ffi("int f(int);")
    assert ffi.typeof("int(*)(int)") is not None


def test_packaged_declarations_equal_the_include_folder():
    root = Path(__file__).resolve().parents[2]
    packaged = root / "embellama" / "_native" / "llama.cdef.h"
    assert packaged == declarations.CDEF_FILE and not packaged.is_symlink()
    assert packaged.read_bytes() == (root / "include" / "llama.cdef.h").read_bytes()
    assert declarations.read_cdef() == packaged.read_text(encoding="utf-8")


def test_the_declarations_ship_as_package_data():
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert '"embellama._native" = ["llama.cdef.h"]' in pyproject  # [tool.setuptools.package-data]
    assert not (Path(declarations.__file__).parent / "_include").exists()


# -- the cache folder on constrained machines ----------------------------------------------


def test_cache_dir_prefers_the_configured_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("EMBELLAMA_CACHE_DIR", str(tmp_path / "explicit"))
    assert paths.cache_dir() == tmp_path / "explicit" and (tmp_path / "explicit").is_dir()
    monkeypatch.delenv("EMBELLAMA_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.cache_dir() == tmp_path / "xdg" / "embellama"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG spec says to ignore it
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert paths.cache_dir() == tmp_path / "home" / ".cache" / "embellama"


def test_unwritable_cache_falls_back_to_a_private_temporary_folder(monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.delenv("EMBELLAMA_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(blocker / "home"))  # cannot exist: even root cannot make it
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    folder = paths.cache_dir()
    assert folder == tmp_path / "tmp" / f"embellama-{os.getuid()}"
    assert folder.stat().st_mode & 0o777 == 0o700
    # a folder of that name that is a link, or another user's, is not used
    folder.rmdir()
    folder.symlink_to(tmp_path)
    assert paths.cache_dir() == blocker / "home" / ".cache" / "embellama"  # nothing writable: no cache at all


def test_no_writable_cache_means_no_cache_not_an_error(monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("EMBELLAMA_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setenv("TMPDIR", str(blocker / "tmp"))
    monkeypatch.setattr(tempfile, "tempdir", None)
    ffi = declarations.make_ffi("int embellama_test_no_cache(int);")  # parsed, not cached, and usable
    assert ffi.sizeof("int") == 4
    assert not (blocker.parent / "cache").exists()


def test_cpu_variant_is_the_module_ggml_loaded(library):
    lib = Library(library.ffi, library.lib, library.path, None, "test")
    assert lib.cpu_variant is None  # CPU code linked in: no variant
    lib.backend_modules = {"CPU": Path("/x/libggml-cpu-sapphirerapids.so")}
    assert lib.cpu_variant == "sapphirerapids"
    text = "load_backend: loaded CPU backend from /opt/w/libggml-cpu-zen4.so\nsomething else\n"
    assert dict(loader._LOADED_RE.findall(text)) == {"CPU": "/opt/w/libggml-cpu-zen4.so"}
