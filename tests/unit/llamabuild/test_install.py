# SPDX-License-Identifier: Apache-2.0
"""llamabuild.install: staged installs, kept links, unchanged files skipped, stale ones removed."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from llamabuild import files, install, paths, report
from tests.unit.llamabuild.helpers import fake_build_bin, read_json, snapshot


def test_cpu_variant_names() -> None:
    names = ["libggml-cpu-haswell.so", "libggml-cpu-x64.so", "libggml-cpu.so", "libggml-cpu-armv8.2_1.so"]
    names += ["ggml-cpu-zen4.dll", "libggml.so.0", "libllama.so", "libggml-cpu-apple_m1.dylib"]
    assert install.cpu_variant_names(names) == ["apple_m1", "armv8.2_1", "haswell", "x64", "zen4"]


@pytest.mark.skipif(os.name == "nt", reason="symlinks")
def test_install_keeps_links_skips_unchanged_and_removes_stale(tmp_path: Path) -> None:
    bin_dir = fake_build_bin(tmp_path)
    prefix = tmp_path / "prefix"
    prefix.mkdir()
    (prefix / "libold.so.1").write_bytes(b"stale")
    (prefix / "notes.txt").write_text("kept")
    result = install.install_outputs(bin_dir, prefix, ["llama-quantize"])
    assert result.copied == 7 and result.removed == 1
    assert os.readlink(prefix / "libllama.so") == "libllama.so.0"
    assert os.readlink(prefix / "libllama.so.0") == "libllama.so.0.5.0"
    assert (prefix / "bin" / "llama-quantize").is_file()
    assert not (prefix / "test-thing").exists()
    assert not (prefix / "libold.so.1").exists() and (prefix / "notes.txt").exists()
    assert set(result.files) == {"libllama.so.0.5.0", "libggml.so.0.9.0", "bin/llama-quantize"}
    assert result.files["libllama.so.0.5.0"] == hashlib.sha256(b"v1libllama.so.0.5.0").hexdigest()
    assert install.library_map([*result.files, *result.links]) == {
        "ggml": "libggml.so",
        "llama": "libllama.so",
    }

    mtime = (prefix / "libllama.so.0.5.0").stat().st_mtime_ns
    again = install.install_outputs(bin_dir, prefix, ["llama-quantize"])
    assert (again.copied, again.unchanged, again.removed) == (0, 7, 0)
    assert (prefix / "libllama.so.0.5.0").stat().st_mtime_ns == mtime

    # A later build without tools drops the tool recorded in the old manifest.
    previous = {"files": result.files, "links": result.links}
    third = install.install_outputs(bin_dir, prefix, [], previous)
    assert third.removed == 1 and not (prefix / "bin").exists()


def test_install_without_libraries_fails(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    with pytest.raises(report.BuildError, match="no shared libraries"):
        install.install_outputs(tmp_path / "bin", tmp_path / "p")


def test_library_names() -> None:
    assert install.library_map(["libllama.0.dylib", "libllama.dylib", "libggml-base.0.9.0.dylib"]) == {
        "ggml-base": "libggml-base.0.9.0.dylib",
        "llama": "libllama.dylib",
    }
    assert install.library_map(["llama.dll", "ggml-cpu.dll", "llama-quantize"]) == {
        "ggml-cpu": "ggml-cpu.dll",
        "llama": "llama.dll",
    }
    assert not install.is_library_name("llama-embedding")
    assert install.is_library_name("libggml-cpu.so")


def test_install_failing_while_copying_leaves_the_prefix_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = tmp_path / "prefix"
    result = install.install_outputs(fake_build_bin(tmp_path), prefix, ["llama-quantize"])
    files.write_json_atomic(prefix / "manifest.json", {"files": result.files, "links": result.links})
    before = snapshot(prefix)
    bin_dir = fake_build_bin(tmp_path, b"v2")  # every file changed
    real_copy2, copies = shutil.copy2, []

    def copy2_failing_on_the_second(src: Any, dst: Any, **kw: Any) -> Any:
        copies.append(dst)
        if len(copies) == 2:
            raise OSError(28, "No space left on device")
        return real_copy2(src, dst, **kw)

    monkeypatch.setattr(shutil, "copy2", copy2_failing_on_the_second)
    with pytest.raises(report.BuildError, match="left as it was"):
        install.install_outputs(bin_dir, prefix, ["llama-quantize"], read_json(prefix / "manifest.json"))
    assert len(copies) == 2
    assert snapshot(prefix) == before  # the manifest too; no staging folder left behind


@pytest.mark.skipif(os.name == "nt", reason="symlinks")
def test_install_failing_halfway_through_the_renames_drops_the_old_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = tmp_path / "prefix"
    result = install.install_outputs(fake_build_bin(tmp_path), prefix)
    files.write_json_atomic(prefix / "manifest.json", {"files": result.files, "links": result.links})
    bin_dir = fake_build_bin(tmp_path, b"v2")
    real_replace, renames = os.replace, []

    def replace_failing_on_the_second(src: Any, dst: Any) -> None:
        renames.append(dst)
        if len(renames) == 2:
            raise OSError(5, "Input/output error")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_failing_on_the_second)
    with pytest.raises(report.BuildError, match="failed halfway.*no manifest.json now"):
        install.install_outputs(bin_dir, prefix, [], read_json(prefix / "manifest.json"))
    # one library is new, one old: the old manifest, which describes neither mix, is gone
    assert not (prefix / "manifest.json").exists()
    assert not (prefix / paths.STAGING_NAME).exists()


def test_install_clears_a_staging_folder_left_by_an_interrupted_install(tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    (prefix / paths.STAGING_NAME / "bin").mkdir(parents=True)
    (prefix / paths.STAGING_NAME / "libllama.so.0.5.0").write_bytes(b"half")
    result = install.install_outputs(fake_build_bin(tmp_path), prefix)
    assert result.copied == 6 and not (prefix / paths.STAGING_NAME).exists()
    assert (prefix / "libllama.so.0.5.0").read_bytes() == b"v1libllama.so.0.5.0"
