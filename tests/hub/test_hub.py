# SPDX-License-Identifier: Apache-2.0
"""Models by name: hf:// references, the Hugging Face cache read offline, downloads from a Hub on 127.0.0.1
(resumed, checked, refused), the CLI's pull, ls, embed and convert, and the server's --config."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from embellama import (
    ConfigurationError,
    EmbeddingEngine,
    EmbeddingModel,
    HubAccessError,
    HubDownloadError,
    HubNotFoundError,
    MissingExtraError,
    ModelConfig,
    ModelNotFoundError,
)
from embellama._hub import cache as hub_cache
from embellama._hub.reference import HubReference, parse_reference
from embellama._hub.resolve import resolve_path
from tests.hub.conftest import COMMIT, FILENAME, REPO_ID, place
from tests.support.fake_hub import FakeHub

REPO = Path(__file__).resolve().parents[2]
TEXTS = ["A man is playing a guitar.", "The weather is cold today.", "a cat"]
NAME = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,12}", fullmatch=True).filter(lambda s: ".." not in s)


@pytest.fixture(scope="module")
def plain_vectors(minilm_f16: Path) -> np.ndarray:
    """The vectors of the model loaded by its path: what every model loaded by name must give."""
    with EmbeddingModel(ModelConfig(model_path=minilm_f16)) as model:
        return model.embed_batch(TEXTS)


def embed(model: EmbeddingModel) -> np.ndarray:
    with model:
        return model.embed_batch(TEXTS)


def use_hub(monkeypatch: pytest.MonkeyPatch, hub: FakeHub) -> None:
    """Point huggingface_hub at the loopback Hub (also what it read from $HF_ENDPOINT at its import)."""
    import huggingface_hub.constants

    constants = huggingface_hub.constants
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    )


# -- references and the cache layout ------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    org=NAME,
    repo=NAME,
    revision=st.none() | NAME,
    filename=st.none() | st.lists(NAME, min_size=1, max_size=3).map("/".join),
    glob=st.booleans(),
)
def test_references_round_trip_also_through_a_path(org, repo, revision, filename, glob):
    if filename is not None and glob:
        filename = "*" + filename
    ref = HubReference(f"{org}/{repo}", revision, filename)
    assume(filename is None or not filename.startswith("."))
    assert parse_reference(str(ref)) == ref
    assert parse_reference(Path(str(ref))) == ref  # a Path collapses hf:// to hf:/ (ModelConfig keeps a Path)


@pytest.mark.parametrize(
    "text", ["hf://", "hf://org", "hf://org/", "hf://org/repo@/f.gguf", "hf://o/r/../f.gguf", "hf://o/r/a//b", "x/y"]
)
def test_malformed_references_are_refused(text):
    with pytest.raises(ConfigurationError):
        parse_reference(text)


def test_the_cache_is_found_where_huggingface_hub_puts_it(monkeypatch, tmp_path):
    for name in ("HF_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(name, raising=False)
    assert hub_cache.hub_cache_dir() == Path.home() / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub_cache.hub_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    assert hub_cache.hub_cache_dir() == tmp_path / "cache"
    assert hub_cache.hub_cache_dir(tmp_path / "given") == tmp_path / "given"


# -- the cache, with the network cut --------------------------------------------------------------------------


def test_a_cached_model_loads_by_name_with_the_network_cut(cached_minilm, no_network, plain_vectors, monkeypatch):
    by_name = EmbeddingModel.from_pretrained(REPO_ID)  # the one GGUF (the README is no model)
    assert by_name.source is not None
    assert (by_name.source.repo_id, by_name.source.filename, by_name.source.commit) == (REPO_ID, FILENAME, COMMIT)
    assert by_name.source.reference == f"hf://{REPO_ID}@{COMMIT}/{FILENAME}"
    np.testing.assert_array_equal(embed(by_name), plain_vectors)
    model = EmbeddingModel(ModelConfig(model_path=f"hf://{REPO_ID}/*F16.gguf"))
    np.testing.assert_array_equal(embed(model), plain_vectors)
    assert model.source == by_name.source
    for ref, revision in [(f"hf://{REPO_ID}@main/{FILENAME}", "main"), (f"hf://{REPO_ID}@{COMMIT}", COMMIT)]:
        path, source = resolve_path(Path(ref))  # as ModelConfig keeps it
        assert path == cached_minilm and source is not None
        assert (source.filename, source.revision, source.commit) == (FILENAME, revision, COMMIT)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    glob = EmbeddingModel.from_pretrained(REPO_ID, "*.gguf", revision="main", normalize=False)
    assert glob.config.normalize is False and glob.source is not None and glob.source.revision == "main"
    assert no_network == []  # not one connect


def test_offline_without_the_file_says_so(hf_cache, no_network, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubNotFoundError, match="acme/absent.*HF_HUB_OFFLINE") as err:
        EmbeddingModel.from_pretrained("acme/absent", "model.gguf")
    assert isinstance(err.value, ModelNotFoundError) and err.value.repo_id == "acme/absent"
    with pytest.raises(HubNotFoundError, match="HF_HUB_OFFLINE"):
        EmbeddingModel(ModelConfig(model_path="hf://acme/absent/m.gguf")).load()
    assert no_network == []


def test_a_download_without_huggingface_hub_names_the_extra(hf_cache, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(MissingExtraError, match=r"huggingface_hub.*embellama\[hub\]"):
        EmbeddingModel.from_pretrained("acme/absent", "model.gguf")


def test_several_cached_matches_are_refused_and_listed(hf_cache, minilm_f16, minilm_q8, no_network):
    place(hf_cache, REPO_ID, {"m.F16.gguf": minilm_f16, "m.Q8_0.gguf": minilm_q8})
    with pytest.raises(ConfigurationError, match=r"2 GGUF files.*m\.F16\.gguf, m\.Q8_0\.gguf"):
        EmbeddingModel.from_pretrained(REPO_ID)
    assert EmbeddingModel.from_pretrained(REPO_ID, "*Q8_0.gguf").source.filename == "m.Q8_0.gguf"
    assert no_network == []


# -- downloads from the loopback Hub ----------------------------------------------------------------------------


def test_a_download_resumes_after_a_cut_and_loads(hf_cache, minilm_f16, plain_vectors, monkeypatch):
    data = minilm_f16.read_bytes()
    repos = {REPO_ID: {FILENAME: data, "README.md": b"card\n", "other.F16.safetensors": b"x"}}
    with FakeHub(repos, cut={FILENAME}) as hub:
        use_hub(monkeypatch, hub)
        model = EmbeddingModel.from_pretrained(REPO_ID, "*.gguf")
        ranges = hub.gets(FILENAME)
        seen = len(hub.requests)
        again = EmbeddingModel.from_pretrained(REPO_ID, "*.gguf")  # now cached: no request at all
        assert len(hub.requests) == seen
    # the first GET was cut halfway; the second asked for the rest from what had arrived
    assert ranges[0] is None and len(ranges) == 2 and ranges[1] is not None
    offset = int(ranges[1].removeprefix("bytes=").rstrip("-"))
    assert 0 < offset <= len(data) // 2
    assert model.source is not None and model.source.path.resolve().name == hashlib.sha256(data).hexdigest()
    assert hashlib.sha256(model.source.path.read_bytes()).digest() == hashlib.sha256(data).digest()
    assert (hf_cache / "models--acme--minilm-gguf" / "refs" / "main").read_text() == hub.commit
    assert again.source == model.source
    np.testing.assert_array_equal(embed(model), plain_vectors)


def test_a_corrupted_download_is_refused_and_not_kept(hf_cache, monkeypatch):
    data = os.urandom(200_000)
    with FakeHub({"acme/broken": {"m.gguf": data}}, corrupt={"m.gguf"}) as hub:
        use_hub(monkeypatch, hub)
        with pytest.raises(HubDownloadError, match=r"acme/broken.*m\.gguf.*sha256.*removed"):
            EmbeddingModel.from_pretrained("acme/broken")
    folder = hf_cache / "models--acme--broken"
    assert [p for p in folder.rglob("*") if p.is_file() or p.is_symlink()] == [folder / "refs" / "main"]


def test_gated_and_missing_get_their_errors_naming_the_repo(hf_cache, monkeypatch):
    repos = {"acme/gated": {"m.gguf": b"GGUF"}, "acme/public": {"m.gguf": b"GGUF", "n.gguf": b"GGUF"}}
    with FakeHub(repos, gated={"acme/gated"}) as hub:
        use_hub(monkeypatch, hub)
        with pytest.raises(HubAccessError, match=r"acme/gated.*401.*HF_TOKEN") as denied:
            EmbeddingModel.from_pretrained("acme/gated", "m.gguf")
        assert isinstance(denied.value, PermissionError) and denied.value.repo_id == "acme/gated"
        with pytest.raises(HubNotFoundError, match=r"acme/nothing.*no such repository.*404"):
            EmbeddingModel.from_pretrained("acme/nothing", "m.gguf")
        with pytest.raises(HubNotFoundError, match=r"acme/public.*'x\.gguf'.*no file matches.*m\.gguf, n\.gguf"):
            EmbeddingModel.from_pretrained("acme/public", "x.gguf")
        with pytest.raises(HubNotFoundError, match=r"acme/public.*revision 'v9'.*no such revision"):
            EmbeddingModel.from_pretrained("acme/public", "m.gguf", revision="v9")
        with pytest.raises(ConfigurationError, match=r"'\*\.gguf' matches 2 GGUF files on the Hub: m\.gguf, n\.gguf"):
            EmbeddingModel.from_pretrained("acme/public", "*.gguf")
        with pytest.raises(ConfigurationError, match=r"it has 2 GGUF files"):
            EmbeddingModel.from_pretrained("acme/public")
    assert not (hf_cache / "models--acme--gated" / "snapshots").exists()


def test_a_repository_to_convert_downloads_what_the_converter_reads(hf_cache, monkeypatch):
    from embellama._hub.resolve import snapshot_folder

    files = {"config.json": b"{}", "model.safetensors": os.urandom(1000), "vocab.txt": b"a\nb\n", "README.md": b"card"}
    files["1_Pooling/config.json"] = b"{}"
    with FakeHub({"acme/safetensors": files}) as hub:
        use_hub(monkeypatch, hub)
        folder = snapshot_folder("acme/safetensors")
        seen = len(hub.requests)
        assert snapshot_folder("acme/safetensors") == folder and len(hub.requests) == seen  # cached: no request
    got = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert got == ["1_Pooling/config.json", "config.json", "model.safetensors", "vocab.txt"]
    assert (folder / "model.safetensors").read_bytes() == files["model.safetensors"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubNotFoundError, match=r"acme/elsewhere.*HF_HUB_OFFLINE"):
        snapshot_folder("acme/elsewhere")


# -- everywhere a model path goes -------------------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "embellama", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **env},
        timeout=120,
    )


def test_the_engine_cli_and_server_config_take_hf_references(cached_minilm, plain_vectors, tmp_path):
    ref = f"hf://{REPO_ID}/*F16.gguf"
    with EmbeddingEngine([ModelConfig(model_path=ref, model_name="minilm")]) as engine:
        np.testing.assert_array_equal(engine.embed_batch(TEXTS, model="minilm"), plain_vectors)
    env = {"HF_HUB_CACHE": str(cached_minilm.parents[3]), "HF_HUB_OFFLINE": "1"}
    proc = run_cli("embed", ref, *TEXTS, env=env)
    assert proc.returncode == 0, proc.stderr
    got = np.array(json.loads(proc.stdout)["embeddings"], dtype=np.float32)
    np.testing.assert_allclose(got, plain_vectors, atol=1e-6)
    proc = run_cli("info", ref, "--json", env=env)  # the cached file's header, offline
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["path"] == str(cached_minilm)
    proc = run_cli("ls", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)
    assert (row["repo_id"], row["filename"], row["revisions"], row["commit"]) == (REPO_ID, FILENAME, ["main"], COMMIT)
    assert row["size"] == cached_minilm.stat().st_size
    proc = run_cli("pull", REPO_ID, env=env)
    assert proc.returncode == 0 and str(cached_minilm) in proc.stdout, proc.stderr
    proc = run_cli("pull", "acme/absent", env=env)
    assert proc.returncode == 1 and "HF_HUB_OFFLINE" in proc.stderr and "Traceback" not in proc.stderr

    from embellama._cli.main import build_parser
    from embellama._cli.serve import serve_configs

    config = tmp_path / "serve.json"
    config.write_text(json.dumps({"models": [{"model_path": ref}, {"model_path": ref, "model_name": "named"}]}))
    configs, _ = serve_configs(build_parser().parse_args(["serve", "--config", str(config)]))
    assert [(c.model_path, c.name) for c in configs] == [
        (cached_minilm, "all-MiniLM-L6-v2.F16"),
        (cached_minilm, "named"),
    ]


def test_plain_import_leaves_huggingface_hub_out():
    code = "import sys, embellama, embellama._cli.main; print('huggingface_hub' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stderr


# -- converting -----------------------------------------------------------------------------------------------


def test_convert_names_the_missing_modules_and_the_extra(tmp_path, monkeypatch):
    import importlib.util

    from embellama._gguf import convert as gguf_convert

    (tmp_path / "config.json").write_text("{}")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in ("torch", "safetensors") else real(name, *a)
    )
    with pytest.raises(MissingExtraError, match=r"torch, safetensors \(not installed\).*embellama\[convert\]"):
        gguf_convert.convert_hf(tmp_path, tmp_path / "out.gguf", "f32", tmp_path)


# -- the guide's example and the Reranker -----------------------------------------------------------------------


def test_guide_hub_example(hf_cache, minilm_q8, no_network, monkeypatch):
    """docs/guide/hub.md's example "Load by name", on a cache this test lays out, with the network cut."""
    from tests.docs import examples

    place(hf_cache, "second-state/All-MiniLM-L6-v2-Embedding-GGUF", {"all-MiniLM-L6-v2-Q8_0.gguf": minilm_q8})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = examples.section(examples.DOCS / "guide" / "hub.md", "Load by name")
    printed = examples.run(code, "docs/guide/hub.md:Load by name").splitlines()
    assert printed == ["second-state/All-MiniLM-L6-v2-Embedding-GGUF all-MiniLM-L6-v2-Q8_0.gguf", "(384,)", "True"]
    assert no_network == []


def test_a_reranker_loads_by_name(hf_cache, no_network):
    from embellama import Reranker
    from tests.support import rerank_models

    gguf = rerank_models.ensure("bert").gguf("f16")
    place(hf_cache, "acme/reranker-gguf", {"reranker.F16.gguf": gguf})
    pairs = [("what is a cat", "a cat is a small animal"), ("what is a cat", "the stock market fell")]
    with Reranker.from_pretrained("acme/reranker-gguf") as by_name, Reranker(ModelConfig(model_path=gguf)) as plain:
        np.testing.assert_array_equal(by_name.score_pairs(pairs), plain.score_pairs(pairs))
        assert by_name.source is not None and by_name.source.filename == "reranker.F16.gguf"
    assert no_network == []


def test_convert_a_cached_hub_repository_offline(hf_cache, tmp_path):
    """``embellama convert org/repo OUT``: the repository's safetensors snapshot in the cache, converted with the
    network off, scores as the GGUF converted from the same folder on disk."""
    from embellama import Reranker
    from tests.support import rerank_models

    built = rerank_models.ensure("bert")
    files = {p.relative_to(built.hf_dir).as_posix(): p for p in built.hf_dir.rglob("*") if p.is_file()}
    assert "model.safetensors" in files
    place(hf_cache, "acme/tiny-cross-encoder", files)
    out = tmp_path / "converted.gguf"
    env = {"HF_HUB_CACHE": str(hf_cache), "HF_HUB_OFFLINE": "1"}
    proc = run_cli("convert", "acme/tiny-cross-encoder", str(out), "--type", "f32", env=env)
    assert proc.returncode == 0, proc.stderr
    pairs = [("what is a cat", "a cat is a small animal"), ("what is a cat", "the stock market fell")]
    with Reranker(ModelConfig(model_path=out)) as ours, Reranker(ModelConfig(model_path=built.gguf("f32"))) as ref:
        np.testing.assert_allclose(ours.score_pairs(pairs), ref.score_pairs(pairs), rtol=1e-6)
    proc = run_cli("convert", "acme/not-cached", str(tmp_path / "x.gguf"), env=env)
    assert proc.returncode == 1 and "acme/not-cached" in proc.stderr and "HF_HUB_OFFLINE" in proc.stderr


def test_ray_workers_resolve_hf_references_on_their_node(cached_minilm, no_network):
    # What every embellama.ray actor runs first on its node (no cluster needed): the node's own cache, offline.
    from embellama.ray import _on_node

    _, config = _on_node(ModelConfig(model_path=f"hf://{REPO_ID}/*F16.gguf"), None, None, "embed_dataset")
    assert config.model_path == cached_minilm and config.name == cached_minilm.stem
    assert not no_network
