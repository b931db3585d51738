# SPDX-License-Identifier: Apache-2.0
"""embellama.ray on a real local Ray cluster (2 CPUs, started and stopped here): Parquet in, Parquet out."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
import ray.data

from embellama import (
    ConfigurationError,
    EmbeddingModel,
    InvalidInputError,
    ModelConfig,
    ModelNotFoundError,
    Reranker,
)
from embellama.ray import Embedder, RerankScorer, embed_dataset, embedding_matrix, plan_actors, rerank_dataset
from tests.support import rerank_models

REPO = Path(__file__).resolve().parents[2]
MIN_COS = 0.9999

pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning:ray.*",  # Ray Data's own settings, not ours
    "ignore:The minimum number of concurrent actors:UserWarning",
)


@pytest.fixture(scope="module")
def job_dir(tmp_path_factory, minilm_f16) -> Path:
    """The job's working_dir: Ray ships it to every worker, which starts inside it."""
    folder = tmp_path_factory.mktemp("ray-job")
    shutil.copy(minilm_f16, folder / "minilm.gguf")
    return folder


@pytest.fixture(scope="module")
def cluster(library, job_dir):
    """A local Ray cluster: 2 CPUs, one logical GPU (for the planning test only), a small object store."""
    if ray.is_initialized():
        pytest.fail("Ray is already running in this process; test_ray.py starts its own cluster")
    ray.init(
        num_cpus=2,
        num_gpus=1,
        include_dashboard=False,
        object_store_memory=256 * 1024 * 1024,
        log_to_driver=False,
        configure_logging=False,
        runtime_env={"working_dir": str(job_dir)},
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield ray.cluster_resources()
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def sentences(sts) -> list[str]:
    s1, s2, _ = sts
    return s1 + s2


@pytest.fixture(scope="module")
def reference(sentences, minilm_f16):
    """Single-process embed_batch of the 2,758 STS sentences (1 thread: the fastest on a busy machine)."""
    with EmbeddingModel(ModelConfig(model_path=minilm_f16, n_threads=1)) as model:
        return model.embed_batch(sentences, show_progress_bar=False)


@pytest.fixture(scope="module")
def minilm(minilm_f16):
    """An in-process Embedder (no Ray) for the batch-format and error tests."""
    embedder = Embedder(model_path=minilm_f16, model_name="minilm", n_threads=1, id_column="id")
    yield embedder
    embedder.close()


def _min_cos(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum(1).min())


def _lib_folder(library) -> Path:
    return library.path.parent


# -- without Ray's actors ------------------------------------------------------------------------


def test_importing_embellama_imports_no_ray():
    code = (
        "import sys, embellama, embellama.ray\n"
        "assert 'ray' not in sys.modules and 'pyarrow' not in sys.modules, sorted(sys.modules)\n"
        "print('ok')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_every_batch_format_keeps_columns_and_order(minilm, minilm_f16):
    texts = ["A cat sits.", "Markets fell sharply.", "A dog runs in the park.", "Rain is expected."]
    with EmbeddingModel(ModelConfig(model_path=minilm_f16, n_threads=1)) as model:
        expected = model.embed_batch(texts, show_progress_bar=False)
    ids = np.array([40, 10, 30, 20])
    table = pa.table({"id": ids, "text": texts, "score": [0.5, 1.5, 2.5, 3.5]})

    out = minilm(table)
    assert out.column_names == ["id", "text", "score", "embedding"]
    assert out.schema.field("embedding").type == pa.list_(pa.float32(), 384)
    assert out.column("id").to_pylist() == [40, 10, 30, 20]
    assert out.column("score").to_pylist() == [0.5, 1.5, 2.5, 3.5]
    assert _min_cos(embedding_matrix(out.column("embedding")), expected) >= MIN_COS

    batch = {"id": ids, "text": np.array(texts, dtype=object)}
    got = minilm(batch)
    assert list(got) == ["id", "text", "embedding"] and got["embedding"].shape == (4, 384)
    assert got["embedding"].dtype == np.float32 and got["id"] is ids
    assert _min_cos(got["embedding"], expected) >= MIN_COS

    frame = table.to_pandas()
    got_frame = minilm(frame)
    assert list(got_frame.columns) == ["id", "text", "score", "embedding"]
    assert got_frame["id"].tolist() == [40, 10, 30, 20]
    assert _min_cos(embedding_matrix(got_frame["embedding"]), expected) >= MIN_COS

    empty = minilm(table.slice(0, 0))
    assert empty.num_rows == 0 and empty.schema.field("embedding").type == pa.list_(pa.float32(), 384)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "model 'minilm': column 'text': expected str, got NoneType; row id=12 (input #2)"),
        ("", "model 'minilm': column 'text': text is empty; row id=12 (input #2)"),
    ],
)
def test_bad_value_names_the_column_row_and_type(minilm, value, message):
    table = pa.table({"id": [10, 11, 12, 13], "text": ["fine", "also fine", value, "fine"]})
    with pytest.raises(InvalidInputError) as info:
        minilm(table)
    assert str(info.value) == message
    assert info.value.index == 2


def test_non_text_column_and_missing_columns(minilm):
    with pytest.raises(InvalidInputError, match=r"column 'text': expected str, got int; row id=7 \(input #0\)"):
        minilm({"id": np.array([7, 8]), "text": np.array([1, 2])})
    with pytest.raises(ConfigurationError, match=r"no column 'text' in the batch; columns: \['id', 'body'\]"):
        minilm(pa.table({"id": [1], "body": ["x"]}))
    with pytest.raises(ConfigurationError, match="already has a column 'embedding'"):
        minilm(pa.table({"id": [1], "text": ["x"], "embedding": [0.0]}))
    with pytest.raises(ConfigurationError, match="no id column 'id'"):
        minilm(pa.table({"text": ["x"]}))


def test_pooling_none_is_refused(minilm_f16):
    with pytest.raises(ConfigurationError, match="pooling NONE gives one vector per token"):
        Embedder({"model_path": minilm_f16, "pooling": "none", "n_threads": 1})


def test_missing_model_names_the_node_and_the_ways_to_ship_it(tmp_path):
    with pytest.raises(ModelNotFoundError) as info:
        Embedder(model_path=tmp_path / "absent.gguf")
    text = str(info.value)
    assert "model file not found" in text and "absent.gguf" in text and "on node" in text
    assert "ship_model=True" in text and "working_dir" in text


# -- the local cluster ------------------------------------------------------------------------------


def test_defaults_follow_cores_threads_packing_and_backend(cluster, library, minilm_f16, tmp_path):
    config = ModelConfig(model_path=minilm_f16)
    one = plan_actors(config, n_threads=1)
    assert (one.concurrency, one.n_threads, one.num_cpus, one.num_gpus) == (2, 1, 0.5, 0.0)
    assert one.backend == library.backend == "cpu"
    two = plan_actors(config, n_threads=2)
    assert (two.concurrency, two.n_threads, two.num_cpus) == (1, 2, 1.0)  # one CPU stays for reads and writes
    crowded = plan_actors(config, n_threads=2, concurrency=2)  # more actors than cores: smaller shares
    assert (crowded.concurrency, crowded.num_cpus) == (2, 0.5)
    # rows per batch: the texts one llama.cpp call takes, as the loaded model derives it
    for cfg in (
        config,
        ModelConfig(model_path=minilm_f16, n_ubatch=100),
        ModelConfig(model_path=minilm_f16, n_ctx=128),
    ):
        with EmbeddingModel(cfg) as model:
            assert plan_actors(cfg).batch_size == model.context.n_seq_max
    assert plan_actors(ModelConfig(model_path=minilm_f16, n_ubatch=100)).batch_size == 100
    assert plan_actors(ModelConfig(model_path=tmp_path / "elsewhere.gguf")).batch_size == 256
    # a GPU build on a cluster with a GPU: one actor per GPU
    gpu_build = tmp_path / "cuda"
    gpu_build.mkdir()
    (gpu_build / "manifest.json").write_text(json.dumps({"backend": "cuda"}))
    gpu = plan_actors(config, library=gpu_build)
    assert (gpu.concurrency, gpu.num_gpus, gpu.num_cpus, gpu.backend) == (1, 1.0, 1.0, "cuda")
    explicit = plan_actors(config, concurrency=(1, 3), num_cpus=0.25, batch_size=64)
    assert (explicit.concurrency, explicit.num_cpus, explicit.batch_size) == ((1, 3), 0.25, 64)


def test_sts_parquet_round_trip_with_two_actors(cluster, sentences, reference, minilm_f16, tmp_path):
    n = len(sentences)
    assert n == 2758
    ids = np.arange(1000, 1000 + n)  # not row numbers: the ids must travel with their rows
    source = pa.table({"id": ids, "text": sentences, "half": ["s1" if i < n // 2 else "s2" for i in range(n)]})
    pq.write_table(source, tmp_path / "sts.parquet")
    ds = ray.data.read_parquet(str(tmp_path / "sts.parquet"))
    config = ModelConfig(model_path=minilm_f16, n_threads=1)
    assert plan_actors(config).concurrency == 2  # 2 actors × 1 thread on the 2-CPU cluster

    embed_dataset(ds, config, concurrency=2, n_threads=1).write_parquet(str(tmp_path / "out"))

    table = pq.read_table(tmp_path / "out")
    assert table.schema.names == ["id", "text", "half", "embedding"]
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 384)
    assert table.num_rows == n
    got_ids = table.column("id").to_numpy()
    assert len(np.unique(got_ids)) == n and set(got_ids.tolist()) == set(ids.tolist())
    order = np.argsort(got_ids)
    rows = got_ids[order] - 1000
    assert table.column("text").take(pa.array(order)).to_pylist() == [sentences[i] for i in rows]
    halves = table.column("half").take(pa.array(order)).to_pylist()
    assert halves == ["s1" if i < n // 2 else "s2" for i in rows]
    vectors = embedding_matrix(table.column("embedding"))[order]
    assert vectors.dtype == np.float32
    assert _min_cos(vectors, reference[rows]) >= MIN_COS

    # and through Ray's own reader: the same vectors in numpy batches
    parts = list(ray.data.read_parquet(str(tmp_path / "out")).iter_batches(batch_size=1024, batch_format="numpy"))
    back_ids = np.concatenate([p["id"] for p in parts])
    again = np.concatenate([embedding_matrix(p["embedding"]) for p in parts])[np.argsort(back_ids)]
    assert np.array_equal(np.sort(back_ids), ids)
    assert np.array_equal(again, vectors)


def test_callable_class_with_the_model_in_the_jobs_working_dir(cluster, minilm_f16):
    texts = [f"passage {i} about topic {i % 5}" for i in range(150)]
    ds = ray.data.from_items([{"id": i, "text": t} for i, t in enumerate(texts)], override_num_blocks=3)
    out = ds.map_batches(
        Embedder,
        fn_constructor_kwargs={"model_path": "minilm.gguf", "n_threads": 1},  # relative to the working_dir
        batch_format="numpy",
        batch_size=50,
        compute=ray.data.ActorPoolStrategy(size=1),
        num_cpus=0.5,
    )
    rows = sorted(out.take_all(), key=lambda r: r["id"])
    assert [r["id"] for r in rows] == list(range(150)) and [r["text"] for r in rows] == texts
    with EmbeddingModel(ModelConfig(model_path=minilm_f16, n_threads=1)) as model:
        expected = model.embed_batch(texts, show_progress_bar=False)
    assert _min_cos(embedding_matrix([r["embedding"] for r in rows]), expected) >= MIN_COS


def test_model_shipped_through_the_object_store(cluster, minilm_f16, tmp_path):
    private = tmp_path / "driver-only" / "minilm.gguf"
    private.parent.mkdir()
    shutil.copy(minilm_f16, private)
    digest = hashlib.sha256(private.read_bytes()).hexdigest()
    texts = ["shipped models embed too", "the object store carries the file"]
    ds = ray.data.from_items([{"id": i, "text": t} for i, t in enumerate(texts)], override_num_blocks=1)
    cache = tmp_path / "node-cache"
    config = ModelConfig(model_path=private, n_threads=1)
    lazy = embed_dataset(ds, config, concurrency=1, ship_model=True, cache_dir=cache)
    private.unlink()  # the workers cannot read the driver's file any more: they use the shipped bytes
    rows = sorted(lazy.take_all(), key=lambda r: r["id"])
    assert [p.name for p in cache.iterdir()] == [f"{digest[:16]}-minilm.gguf"]
    assert hashlib.sha256((cache / f"{digest[:16]}-minilm.gguf").read_bytes()).hexdigest() == digest
    with EmbeddingModel(ModelConfig(model_path=minilm_f16, n_threads=1)) as model:
        expected = model.embed_batch(texts, show_progress_bar=False)
    assert _min_cos(embedding_matrix([r["embedding"] for r in rows]), expected) >= MIN_COS


def test_prompt_truncate_dim_and_precision_reach_the_actors(cluster, minilm_f16):
    texts = ["how do I reset my password", "open settings, then security", "markets fell"]
    ds = ray.data.from_items([{"id": i, "text": t} for i, t in enumerate(texts)], override_num_blocks=1)
    config = ModelConfig(model_path=minilm_f16, n_threads=1)
    options = {"prompt": "query: ", "truncate_dim": 64, "precision": "ubinary"}
    table = embed_dataset(ds, config, concurrency=1, **options).to_arrow_refs()
    column = pa.concat_tables(ray.get(table)).sort_by("id").column("embedding")
    assert str(column.type) == "fixed_size_list<item: uint8>[8]"
    with EmbeddingModel(config) as model:
        expected = model.encode(texts, **options)
    bits = np.unpackbits(embedding_matrix(column)) == np.unpackbits(expected)
    assert bits.mean() >= 0.99  # signs of the same floats; one near zero may round the other way
    with pytest.raises(ConfigurationError, match="precision 'int8' would calibrate each Ray batch on its own ranges"):
        embed_dataset(ds, config, precision="int8")


def test_missing_column_is_refused_before_the_job_runs(cluster, minilm_f16):
    ds = ray.data.from_items([{"id": 1, "body": "no text column"}])
    with pytest.raises(ConfigurationError, match=r"the dataset has no column 'text'; columns: \['id', 'body'\]"):
        embed_dataset(ds, ModelConfig(model_path=minilm_f16, n_threads=1))


def test_a_failing_batch_surfaces_the_library_error(cluster, minilm_f16):
    texts = [f"sentence {i}" for i in range(40)]
    texts[17] = ""
    ds = ray.data.from_items([{"id": i, "text": t} for i, t in enumerate(texts)], override_num_blocks=1)
    config = ModelConfig(model_path=minilm_f16, model_name="minilm", n_threads=1)
    with pytest.raises(Exception) as info:
        embed_dataset(ds, config, id_column="id", concurrency=1).take_all()
    text = str(info.value)
    assert "InvalidInputError: model 'minilm': column 'text': text is empty; row id=17 (input #17)" in text


def test_a_model_file_the_workers_cannot_see_fails_the_job(cluster, tmp_path):
    ds = ray.data.from_items([{"text": "hello"}])
    config = ModelConfig(model_path=tmp_path / "only-on-my-laptop.gguf", n_threads=1)
    with pytest.raises(Exception) as info:
        embed_dataset(ds, config, concurrency=1).take_all()
    text = str(info.value)
    assert "ModelNotFoundError" in text and "only-on-my-laptop.gguf on node" in text
    assert "Every worker must see the GGUF at this path" in text


_OPEN = """
import sys
from embellama import LibraryError
from embellama._native.discovery import open_library
try:
    open_library(sys.argv[1])
except LibraryError as exc:
    print(exc)
"""


def test_a_worker_library_failing_its_abi_check_fails_the_job_with_that_message(cluster, library, minilm_f16, tmp_path):
    broken = tmp_path / "broken-lib"
    shutil.copytree(_lib_folder(library), broken, symlinks=True, ignore=shutil.ignore_patterns("bin"))
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["layout"]["llama_batch"]["size"] += 8
    (broken / "manifest.json").write_text(json.dumps(manifest))
    # What the library check says about this copy, in a process of its own (a second libllama must not share one).
    proc = subprocess.run([sys.executable, "-c", _OPEN, str(broken)], capture_output=True, text=True, timeout=120)
    message = proc.stdout.strip()
    assert message.startswith("ABI mismatch between include/llama.cdef.h and") and "sizeof(llama_batch)" in message

    ds = ray.data.from_items([{"text": "hello"}, {"text": "world"}])
    config = ModelConfig(model_path=minilm_f16, n_threads=1)
    with pytest.raises(Exception) as info:
        embed_dataset(ds, config, concurrency=1, library=broken).take_all()
    text = str(info.value)
    assert "LibraryError: on node" in text
    assert message.splitlines()[0] in text and message.splitlines()[1].strip() in text


def test_guide_ray_example(cluster, minilm_f16):
    """The guide's Ray example (docs/guide/ray.md), on the local cluster."""
    page = (REPO / "docs/guide/ray.md").read_text(encoding="utf-8")
    match = re.search(r"^# Many machines: Ray Data\n.*?```python\n(.*?)```", page, re.DOTALL | re.MULTILINE)
    assert match, "docs/guide/ray.md needs its '# Many machines: Ray Data' python example (run here, on the cluster)"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(match.group(1), "docs/guide/ray.md:Many machines", "exec"), {"MODEL": str(minilm_f16)})
    assert "3 fixed_size_list<element: float>[384] (3, 384)" in out.getvalue()


# -- reranking: RerankScorer and rerank_dataset ----------------------------------------------------------------


@pytest.fixture(scope="module")
def rerankers(library) -> dict[str, rerank_models.Built]:
    return {name: rerank_models.ensure(name) for name in ("bert", "bert3")}


def _reranker_config(built: rerank_models.Built, **fields) -> ModelConfig:
    """The F32 file as it is (compute_type off: the references' weights), one thread."""
    return ModelConfig(model_path=built.gguf("f32"), compute_type="off", n_threads=1, **fields)


def _predict(config: ModelConfig, pairs, **kwargs) -> np.ndarray:
    with Reranker(config) as reranker:
        return reranker.predict(pairs, show_progress_bar=False, **kwargs)


def test_rerank_scorer_every_batch_format_and_its_errors(rerankers):
    config = _reranker_config(rerankers["bert"], model_name="bert")
    pairs = rerank_models.flat_pairs()[:40]
    expected = _predict(config, pairs)
    ids = np.arange(500, 540)
    table = pa.table({"id": ids, "query": [q for q, _ in pairs], "document": [d for _, d in pairs]})
    scorer = RerankScorer(config, id_column="id")
    try:
        assert (scorer.num_labels, scorer.activation) == (1, "sigmoid")
        out = scorer(table)
        assert out.column_names == ["id", "query", "document", "score"]
        assert out.schema.field("score").type == pa.float32()
        assert out.column("id").to_pylist() == ids.tolist()
        np.testing.assert_allclose(out.column("score").to_numpy(), expected, atol=1e-6)

        batch = {name: np.array(table.column(name).to_pylist(), dtype=object) for name in ("query", "document")}
        got = scorer({"id": ids, **batch})
        assert got["score"].dtype == np.float32 and got["score"].shape == (40,) and got["id"] is ids
        np.testing.assert_allclose(got["score"], expected, atol=1e-6)
        frame = scorer(table.to_pandas())
        assert list(frame.columns) == ["id", "query", "document", "score"] and frame["score"].dtype == np.float32
        np.testing.assert_allclose(frame["score"].to_numpy(), expected, atol=1e-6)
        assert scorer(table.slice(0, 0)).schema.field("score").type == pa.float32()

        bad = table.set_column(2, "document", pa.array([d if i != 7 else "" for i, (_, d) in enumerate(pairs)]))
        with pytest.raises(InvalidInputError) as info:
            scorer(bad)
        assert str(info.value) == "model 'bert': column 'document': text is empty; row id=507 (input #7)"
        with pytest.raises(InvalidInputError, match=r"column 'query': expected str, got int; row id=1 \(input #0\)"):
            scorer({"id": np.array([1]), "query": np.array([5]), "document": np.array(["d"], dtype=object)})
        with pytest.raises(ConfigurationError, match=r"no column 'document' in the batch; columns: \['id', 'query'\]"):
            scorer(table.select(["id", "query"]))
        with pytest.raises(ConfigurationError, match="already has a column 'score'"):
            scorer(out)
    finally:
        scorer.close()

    # a head with several outputs: a fixed_size_list column, the activation as asked
    three = RerankScorer(_reranker_config(rerankers["bert3"]), activation="softmax", output_column="nli")
    try:
        column = three(table).column("nli")
        assert column.type == pa.list_(pa.float32(), 3)
        scores = embedding_matrix(column)
        np.testing.assert_allclose(scores, _predict(_reranker_config(rerankers["bert3"]), pairs, activation="softmax"),
                                   atol=1e-6)  # fmt: skip
        np.testing.assert_allclose(scores.sum(1), 1.0, atol=1e-5)
    finally:
        three.close()

    with pytest.raises(ConfigurationError, match="unknown activation 'tanh'"):
        RerankScorer(config, activation="tanh")
    with pytest.raises(ConfigurationError, match="query_column and document_column are both 'text'"):
        RerankScorer(config, query_column="text", document_column="text")


def test_rerank_scorer_refuses_an_embedding_model(minilm_f16):
    with pytest.raises(ConfigurationError, match="has no classification head"):
        RerankScorer(model_path=minilm_f16, n_threads=1)


def test_rerank_dataset_parquet_round_trip_with_two_actors(cluster, rerankers, tmp_path):
    built = rerankers["bert"]
    pairs = rerank_models.flat_pairs()  # 200 queries x 20 documents
    n = len(pairs)
    ids = np.arange(7000, 7000 + n)
    source = pa.table({"id": ids, "query": [q for q, _ in pairs], "document": [d for _, d in pairs]})
    source = source.append_column("query_id", pa.array(np.arange(n) // 20))
    pq.write_table(source, tmp_path / "pairs.parquet")
    config = _reranker_config(built)
    with Reranker(config) as reranker:
        assert plan_actors(config).batch_size == reranker.context.n_seq_max  # pairs per llama.cpp call
        expected = reranker.predict(pairs, show_progress_bar=False)

    ds = ray.data.read_parquet(str(tmp_path / "pairs.parquet"))
    rerank_dataset(ds, config, concurrency=2, n_threads=1).write_parquet(str(tmp_path / "out"))

    table = pq.read_table(tmp_path / "out")
    assert table.schema.names == ["id", "query", "document", "query_id", "score"]
    assert table.schema.field("score").type == pa.float32() and table.num_rows == n
    got_ids = table.column("id").to_numpy()
    order = np.argsort(got_ids)
    assert np.array_equal(got_ids[order], ids)
    assert table.column("document").take(pa.array(order)).to_pylist() == [d for _, d in pairs]
    scores = table.column("score").to_numpy()[order]
    # Reranker.predict in one process, on other batches: llama.cpp's F16 GELU table turns a different summation
    # order into differences of about 1e-4
    np.testing.assert_allclose(scores, expected, atol=5e-4)
    np.testing.assert_allclose(scores, built.reference()["scores"], atol=2e-3)  # CrossEncoder.predict
    # the best document of each query, where the reference's margin is larger than those differences
    reference = built.reference()["scores"].reshape(-1, 20)
    top2 = np.sort(reference, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2e-3
    assert clear.sum() >= 100
    best = scores.reshape(-1, 20).argmax(1)
    assert np.array_equal(best[clear], reference.argmax(1)[clear])


def test_rerank_dataset_shipped_multi_label_model(cluster, rerankers, tmp_path):
    private = tmp_path / "driver-only" / "nli.gguf"
    private.parent.mkdir()
    shutil.copy(rerankers["bert3"].gguf("f32"), private)
    pairs = rerank_models.flat_pairs()[:30]
    ds = ray.data.from_items([{"id": i, "q": q, "d": d} for i, (q, d) in enumerate(pairs)], override_num_blocks=2)
    config = ModelConfig(model_path=private, compute_type="off", n_threads=1)
    expected = _predict(config, pairs, activation="softmax")
    lazy = rerank_dataset(ds, config, "q", "d", "nli", activation="softmax", concurrency=1, ship_model=True,
                          cache_dir=tmp_path / "node-cache")  # fmt: skip
    private.unlink()  # the workers use the shipped bytes
    rows = sorted(lazy.take_all(), key=lambda r: r["id"])
    assert [r["id"] for r in rows] == list(range(30))
    np.testing.assert_allclose(embedding_matrix([r["nli"] for r in rows]), expected, atol=1e-6)


def test_rerank_dataset_checks_and_a_failing_batch(cluster, rerankers, minilm_f16):
    ds = ray.data.from_items([{"id": i, "query": "a query", "document": f"document {i}"} for i in range(40)])
    config = _reranker_config(rerankers["bert"], model_name="bert")
    with pytest.raises(
        ConfigurationError, match=r"the dataset has no column 'passage'; columns: \['id', 'query', 'document'\]"
    ):
        rerank_dataset(ds, config, document_column="passage")
    with pytest.raises(ConfigurationError, match="already has a column 'id'"):
        rerank_dataset(ds, config, output_column="id")
    with pytest.raises(ConfigurationError, match="unknown activation 'relu'"):
        rerank_dataset(ds, config, activation="relu")
    with pytest.raises(ConfigurationError, match="is not a reranker .* embed_dataset"):
        rerank_dataset(ds, ModelConfig(model_path=minilm_f16))
    with pytest.raises(ConfigurationError, match="a Reranker scores with pooling 'rank', not 'mean'"):
        rerank_dataset(ds, _reranker_config(rerankers["bert"], pooling="mean"))

    rows = [{"id": i, "query": "a query", "document": f"document {i}" if i != 17 else ""} for i in range(40)]
    failing = ray.data.from_items(rows, override_num_blocks=1)
    with pytest.raises(Exception) as info:
        rerank_dataset(failing, config, id_column="id", concurrency=1).take_all()
    assert "InvalidInputError: model 'bert': column 'document': text is empty; row id=17 (input #17)" in str(info.value)


# -- sparse and multi-vector outputs (issue 31 item 5) ---------------------------------------------------------


@pytest.fixture(scope="module")
def head_models(library):
    from tests.support import sparse_models

    folder = {name: sparse_models.ensure(name) for name in ("splade", "bge-m3")}
    configs = {
        name: ModelConfig(model_path=f / "model.F32.gguf", model_name=name, n_threads=1, compute_type="off")
        for name, f in folder.items()
    }
    return configs, sparse_models.texts()[:6]


def _same_sparse_rows(indices, values, expected, atol=0.0):
    """Each row's (indices, values) equal to the SparseEncoder's vector: bit for bit from the same llama.cpp call,
    else within ``atol`` (a text's numbers move in the last bits with the texts sharing its call)."""
    assert len(indices) == len(values) == len(expected)
    for ids, vals, want in zip(indices, values, expected, strict=True):
        ids, vals = np.asarray(ids), np.asarray(vals, dtype=np.float32)
        assert len(ids) == len(vals) > 0 and np.all(np.diff(ids) > 0)
        if atol == 0:
            np.testing.assert_array_equal(ids, want.indices)
            np.testing.assert_array_equal(vals, want.values)
        else:
            dense = np.zeros(want.dim, dtype=np.float32)
            dense[ids] = vals
            np.testing.assert_allclose(dense, want.to_dense(), rtol=0, atol=atol)


def test_sparse_and_multi_outputs_in_every_batch_format(head_models):
    from embellama import MultiVectorEncoder, SparseEncoder

    configs, texts = head_models
    with SparseEncoder(configs["splade"]) as enc:
        sparse_want = enc.encode(texts)
    with MultiVectorEncoder(configs["bge-m3"]) as enc:
        multi_want = enc.encode_document(texts)
    table = pa.table({"id": np.arange(len(texts)), "text": texts})

    sparse = Embedder(configs["splade"], output_kind="sparse", id_column="id")
    try:
        out = sparse(table)
        assert out.column_names == ["id", "text", "embedding_indices", "embedding_values"]
        assert out.schema.field("embedding_indices").type == pa.list_(pa.int32())
        assert out.schema.field("embedding_values").type == pa.list_(pa.float32())
        _same_sparse_rows(out.column("embedding_indices").to_pylist(), out.column("embedding_values").to_pylist(),
                          sparse_want)  # fmt: skip
        got = sparse({"id": np.arange(len(texts)), "text": np.array(texts, dtype=object)})
        assert got["embedding_indices"].dtype == object and got["embedding_indices"][0].dtype == np.int32
        _same_sparse_rows(got["embedding_indices"], got["embedding_values"], sparse_want)
        frame = sparse(table.to_pandas())
        _same_sparse_rows(frame["embedding_indices"], frame["embedding_values"], sparse_want)
        assert sparse(table.slice(0, 0)).num_rows == 0
        with pytest.raises(ConfigurationError, match="already has a column 'embedding_values'"):
            sparse(table.append_column("embedding_values", pa.array([0] * len(texts))))
        with pytest.raises(InvalidInputError, match=r"column 'text': each text must be a non-empty str; row id=1"):
            sparse(pa.table({"id": [0, 1], "text": ["fine", ""]}))
    finally:
        sparse.close()

    multi = Embedder(configs["bge-m3"], output_kind="multi", output_column="tokens")
    try:
        out = multi(table)
        assert out.schema.field("tokens").type == pa.list_(pa.list_(pa.float32(), 64))
        frame = multi(table.to_pandas())
        for rows in (out.column("tokens").to_pylist(), frame["tokens"]):
            for row, want in zip(rows, multi_want, strict=True):
                np.testing.assert_array_equal(np.asarray(row, dtype=np.float32), want)  # the same llama.cpp call
    finally:
        multi.close()
    with pytest.raises(ConfigurationError, match="output_kind must be one of dense, sparse, multi"):
        Embedder(configs["splade"], output_kind="colbert")


def test_sparse_and_multi_datasets_on_the_cluster(cluster, head_models):
    from embellama import MultiVectorEncoder, SparseEncoder

    configs, texts = head_models
    ds = ray.data.from_items([{"id": i, "text": t} for i, t in enumerate(texts)], override_num_blocks=2)
    sparse_rows = sorted(embed_dataset(ds, configs["splade"], output_kind="sparse", concurrency=1).take_all(),
                         key=lambda r: r["id"])  # fmt: skip
    multi_rows = sorted(embed_dataset(ds, configs["bge-m3"], output_kind="multi", concurrency=1).take_all(),
                        key=lambda r: r["id"])  # fmt: skip
    with SparseEncoder(configs["splade"]) as enc:
        sparse_want = enc.encode(texts)
    with MultiVectorEncoder(configs["bge-m3"]) as enc:
        multi_want = enc.encode_document(texts)
    # Ray may batch the rows otherwise than one call of six: SPLADE's log(1 + ReLU) over 30,522 logits moves by up
    # to ~1e-2 with the texts sharing a call (tests/engine/test_engine_outputs.py)
    _same_sparse_rows([r["embedding_indices"] for r in sparse_rows], [r["embedding_values"] for r in sparse_rows],
                      sparse_want, atol=2e-2)  # fmt: skip
    for row, want in zip(multi_rows, multi_want, strict=True):
        got = np.asarray([np.asarray(v, dtype=np.float32) for v in row["embedding"]])
        assert got.shape == want.shape
        assert float(np.min(np.sum(got * want, axis=1))) >= MIN_COS  # unit token vectors: cosines
    with pytest.raises(ConfigurationError, match="already has a column 'text'"):
        embed_dataset(ds, configs["splade"], output_column="text", output_kind="multi")
