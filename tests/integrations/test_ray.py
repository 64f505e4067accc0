"""embedrank.integrations.ray on a local two-CPU Ray cluster, and the Parquet reader.

Every vector is compared with Encoder.encode / encode_documents of the same exported
all-MiniLM-L6-v2 (float32 within 1e-5; int8 and binary codes equal to quantizing those
vectors, except where a value sits within 1e-6 of a rounding boundary). The fault tests kill
real processes with SIGKILL: an actor in the middle of a job (Ray restarts it and reruns its
batch) and the driver itself (a second run resumes from the files on disk).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from embedrank.errors import (ExistingPathError, FormatError, InvalidTypeError, InvalidValueError,
                              MissingDependencyError, TruncationWarning)
from embedrank.index import FlatIndex
from embedrank.integrations.parquet import add_parquet, iter_embeddings, read_embeddings
from embedrank.kernels import Int8Quantizer
from embedrank.models.encoder import Encoder, quantize_embeddings
from tests.integrations.ray_driver import make_texts

pa = pytest.importorskip("pyarrow", reason="needs pyarrow: pip install 'embedrank[ray]'")
pq = pytest.importorskip("pyarrow.parquet", reason="needs pyarrow: pip install 'embedrank[ray]'")
ray = pytest.importorskip("ray", reason="needs ray[data]: pip install 'embedrank[ray]'")
pytest.importorskip("ray.data", reason="needs ray[data]: pip install 'embedrank[ray]'")

REPO = Path(__file__).resolve().parents[2]
TOL = 1e-5
# how far a float32 vector may move with its batch mates (measured: 0 to 1e-7 here), for the
# codes: a value this close to a rounding boundary may round either way
BOUNDARY = 1e-6


@pytest.fixture(scope="module")
def cluster():
    """A local cluster of 2 CPUs (the workers inherit this process's environment, PYTHONPATH
    included)."""
    if ray.is_initialized():
        ray.shutdown()
    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    with warnings.catch_warnings():  # ray 2.60's DataContext() sets fields that it deprecates itself
        warnings.simplefilter("ignore", DeprecationWarning)
        ray.data.DataContext.get_current().enable_progress_bars = False
    yield context
    ray.shutdown()


@pytest.fixture(scope="module")
def encoder(minilm_export):
    with Encoder.load(minilm_export, num_threads=1) as model:
        yield model


def _embed():
    from embedrank.integrations.ray import embed_dataset

    return embed_dataset


def _dataset(rows: list[dict], blocks: int = 4):
    return ray.data.from_items(rows, override_num_blocks=blocks)


def _by_id(ids, vectors, wanted) -> np.ndarray:
    position = {i: k for k, i in enumerate(ids.tolist() if isinstance(ids, np.ndarray) else ids)}
    return vectors[[position[i] for i in wanted]]


def assert_codes_match(codes: np.ndarray, reference: np.ndarray, precision: str, quantizer=None) -> None:
    """codes == quantize_embeddings(reference), except where reference is within BOUNDARY of
    a rounding boundary (int8: off by at most one step there; binary: either bit)."""
    expected = quantize_embeddings(reference, precision, quantizer)
    assert codes.dtype == expected.dtype and codes.shape == expected.shape
    if precision in ("binary", "ubinary"):
        bits = np.unpackbits(codes.view(np.uint8), axis=1)[:, :reference.shape[1]]
        want = np.unpackbits(expected.view(np.uint8), axis=1)[:, :reference.shape[1]]
        settled = np.abs(reference) > BOUNDARY
    else:
        steps = (reference.astype(np.float64) - quantizer.offset) / quantizer.scale
        settled = np.abs(steps - np.floor(steps) - 0.5) > BOUNDARY / quantizer.scale
        bits, want = codes.astype(np.int16), expected.astype(np.int16)
        assert np.abs(bits - want).max() <= 1
    assert np.array_equal(bits[settled], want[settled])
    assert settled.mean() > 0.95  # the exemption is for a few values, not the test


# -- encoding through Ray ------------------------------------------------------------------------
def test_float32_vectors_equal_encode_ids_kept(cluster, minilm_export, encoder, tmp_path):
    texts = make_texts(48) + ["", "a", "x " * 300]  # empty, one letter, cut at max_seq_length
    ids = [f"doc-{i:03d}" for i in range(len(texts))]
    rows = [{"id": i, "text": t, "other": k} for k, (i, t) in enumerate(zip(ids, texts))]
    out = _embed()(_dataset(rows), minilm_export, batch_size=8, concurrency=2).materialize()
    assert set(out.columns()) == {"id", "embedding"}
    batch = out.take_batch(len(texts), batch_format="numpy")
    assert batch["embedding"].dtype == np.float32 and batch["embedding"].shape == (len(texts), encoder.dim)
    assert sorted(batch["id"].tolist()) == ids
    with pytest.warns(TruncationWarning):
        reference = encoder.encode(texts)
    np.testing.assert_allclose(_by_id(batch["id"], batch["embedding"], ids), reference, atol=TOL, rtol=0)
    # Ray's own write_parquet (a list column tagged as a tensor) reads back the same
    out.write_parquet(str(tmp_path / "ray_written"))
    got_ids, got = read_embeddings(tmp_path / "ray_written", dim=encoder.dim)
    np.testing.assert_allclose(_by_id(got_ids, got, ids), reference, atol=TOL, rtol=0)


def test_binary_codes_equal_quantized_encode(cluster, minilm_export, encoder):
    texts = make_texts(30)
    rows = [{"key": 1000 + i, "body": t} for i, t in enumerate(texts)]
    out = _embed()(_dataset(rows, 2), minilm_export, id_column="key", text_column="body", precision="binary",
                   batch_size=16, concurrency=1)
    batch = out.take_batch(len(texts), batch_format="numpy")
    assert batch["embedding"].shape == (len(texts), encoder.dim // 8) and batch["embedding"].dtype == np.int8
    assert batch["id"].dtype == np.int64  # the output's id column is "id", whatever the input's was called
    got = _by_id(batch["id"], batch["embedding"], [1000 + i for i in range(len(texts))])
    assert_codes_match(got, encoder.encode(texts), "binary")


def test_int8_chunked_documents_to_parquet(cluster, minilm_export, encoder, tmp_path):
    texts = make_texts(24, long_every=5)  # 5 documents longer than one window
    titles = [f"Title {i}" if i % 2 else "" for i in range(len(texts))]
    docs = [{"title": title, "text": text} for title, text in zip(titles, texts)]
    reference = encoder.encode_documents(docs, chunking=True)
    assert len(reference.chunks) > len(texts)  # the long ones really are split
    quantizer = Int8Quantizer().fit(reference.embeddings)
    rows = [{"id": 7 * i, "title": title, "text": text} for i, (title, text) in enumerate(zip(titles, texts))]
    output = tmp_path / "int8_windows"
    _embed()(_dataset(rows), minilm_export, title_column="title", chunking=True, precision="int8",
             quantizer=quantizer, batch_size=6, concurrency=1, output=output)
    files = sorted(output.glob("*.parquet"))
    assert len(files) == 4  # 24 documents, 6 per file
    schema = pq.read_schema(files[0])
    assert schema.field("embedding").type == pa.list_(pa.int8(), encoder.dim)
    table = pa.concat_tables(pq.read_table(f) for f in files)
    got = {(i, w): (s, e, v) for i, w, s, e, v in zip(table["id"].to_pylist(), table["window"].to_pylist(),
                                                    table["start"].to_pylist(), table["end"].to_pylist(),
                                                    np.stack(table["embedding"].to_numpy(zero_copy_only=False)))}
    window_of = np.arange(len(reference.chunks)) - np.searchsorted(reference.chunk_to_doc, reference.chunk_to_doc)
    keys = [(7 * int(d), int(w)) for d, w in zip(reference.chunk_to_doc, window_of)]
    assert sorted(got) == sorted(keys)
    assert [got[k][:2] for k in keys] == [(c.start, c.end) for c in reference.chunks]
    assert_codes_match(np.stack([got[k][2] for k in keys]), reference.embeddings, "int8", quantizer)
    # the streaming reader sees the same rows, with the window column
    streamed = list(iter_embeddings(output, batch_rows=5))
    assert max(len(b.ids) for b in streamed) <= 5 and sum(len(b.ids) for b in streamed) == len(keys)
    assert all(b.windows is not None and b.vectors.dtype == np.int8 for b in streamed)
    # an index takes float32 vectors: int8 files are refused before anything is added
    index = FlatIndex(encoder.dim)
    with pytest.raises(InvalidValueError, match="int8 vectors"):
        add_parquet(index, output)
    assert len(index) == 0
    # resuming with other settings would mix vectors: refused before any work
    with pytest.raises(InvalidValueError, match="precision"):
        _embed()(_dataset(rows), minilm_export, title_column="title", chunking=True, output=output)
    with pytest.raises(InvalidValueError, match="quantizer"):
        _embed()(_dataset(rows), minilm_export, title_column="title", chunking=True, precision="int8",
                 quantizer=Int8Quantizer().fit(reference.embeddings[:3]), output=output)


# -- faults ----------------------------------------------------------------------------------------
def _actors(job_id: str | None = None, alive: bool = True) -> list[dict]:
    """The RayEmbedder actors of a job (ray._private.state: the actor table, with pids)."""
    import ray._private.state

    return [a for a in ray._private.state.actors().values()
            if "RayEmbedder" in a["ActorClassName"] and (job_id is None or a["JobID"] == job_id)
            and (a["State"] == "ALIVE") == alive]


def _parts(folder: Path) -> list[Path]:
    return sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []


def _wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _check_folder(output: Path, ids: list[str], reference: np.ndarray) -> None:
    """Every id exactly once (read_embeddings refuses repeats), vectors within TOL."""
    got_ids, got = read_embeddings(output, dim=reference.shape[1])
    assert sorted(got_ids.tolist()) == sorted(ids)
    np.testing.assert_allclose(_by_id(got_ids, got, ids), reference, atol=TOL, rtol=0)


def test_actor_killed_mid_job_is_restarted_nothing_lost_or_repeated(cluster, minilm_export, encoder, tmp_path):
    n, batch = 240, 4  # about 60 files: the kill lands with most of the job still to do
    texts = make_texts(n)
    ids = [f"doc-{i}" for i in range(n)]
    output = tmp_path / "killed_actor"
    job = ray.get_runtime_context().get_job_id()
    errors: list[BaseException] = []

    def run():
        try:
            _embed()(_dataset([{"id": i, "text": t} for i, t in zip(ids, texts)], 8), minilm_export,
                     batch_size=batch, concurrency=2, max_restarts=2, output=output)
        except BaseException as error:  # reported by the assertion below
            errors.append(error)

    worker = threading.Thread(target=run)
    worker.start()
    try:
        _wait_for(lambda: len(_parts(output)) >= 3, 120, "the first files")
        victim = _actors(job)[0]
        os.kill(victim["Pid"], signal.SIGKILL)
        files_at_kill = len(_parts(output))
    finally:
        worker.join(180)
    assert not worker.is_alive() and not errors, errors
    restarted = [a for a in ray._private.state.actors().values() if a["ActorID"] == victim["ActorID"]]
    assert restarted and restarted[0]["NumRestarts"] >= 1
    _check_folder(output, ids, encoder.encode(texts))
    assert files_at_kill < len(_parts(output))  # the job was not over when its actor died
    assert not list(output.glob(".*tmp-*"))


def test_killed_driver_resumed_skips_what_was_written(cluster, minilm_export, encoder, tmp_path):
    n, batch = 240, 4
    texts = make_texts(n)
    ids = [f"doc-{i}" for i in range(n)]
    output = tmp_path / "killed_driver"
    driver = subprocess.Popen([sys.executable, "-m", "tests.integrations.ray_driver", cluster.address_info["address"],
                               str(minilm_export), str(output), str(n), str(batch)],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: len(_parts(output)) >= 3 or driver.poll() is not None, 120, "the driver's first files")
        assert driver.poll() is None, driver.communicate()
        driver.send_signal(signal.SIGKILL)
    finally:
        stdout, stderr = driver.communicate(timeout=60)
    assert driver.returncode == -signal.SIGKILL and "done" not in stdout
    # Ray ends a dead driver's actors; wait for that, so nothing writes while the rerun reads
    this_job = ray.get_runtime_context().get_job_id()
    _wait_for(lambda: not [a for a in _actors() if a["JobID"] != this_job], 60, "the killed job's actors to end")
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in _parts(output)}
    (output / ".part-0.parquet.tmp-deadbeef").write_bytes(b"half a file")  # what a kill mid-write leaves
    done_ids, _ = read_embeddings(output)  # the whole files only
    assert 3 * batch <= len(done_ids) < n // 2  # killed early: most of the job was left

    _embed()(_dataset([{"id": i, "text": t} for i, t in zip(ids, texts)], 8), minilm_export,
             batch_size=batch, concurrency=1, output=output)
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in _parts(output)}
    assert {name: after[name] for name in before} == before  # the first run's files untouched
    assert len(after) > len(before)
    assert not list(output.glob(".*tmp-*"))
    _check_folder(output, ids, encoder.encode(texts))


# -- arguments and folders (no job runs) ---------------------------------------------------------
def test_bad_arguments_fail_before_any_work(cluster, minilm_export, tmp_path):
    ds = _dataset([{"id": "a", "text": "x"}], 1)
    with pytest.raises(InvalidValueError, match="needs a fitted quantizer"):
        _embed()(ds, minilm_export, precision="int8")
    with pytest.raises(InvalidValueError, match="unknown precision"):
        _embed()(ds, minilm_export, precision="float16")
    with pytest.raises(InvalidValueError, match="object stores"):
        _embed()(ds, minilm_export, output="s3://bucket/embeddings")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    _write(foreign / "a.parquet", ["a"], np.zeros((1, 4), np.float32))
    with pytest.raises(ExistingPathError, match="did not write"):
        _embed()(ds, minilm_export, output=foreign)


def test_embedder_skips_ids_and_checks_its_batches(minilm_export, encoder, tmp_path):
    """RayEmbedder is a plain class: called here in this process, as an actor would call it."""
    from embedrank.integrations.ray import RayEmbedder

    texts = make_texts(6)
    embedder = RayEmbedder(minilm_export, num_threads=1, output=tmp_path, skip_ids=pa.array([1, 3], pa.int32()))
    summary = embedder(pa.table({"id": pa.array(range(6), pa.int64()), "text": texts}))
    assert summary["rows"].tolist() == [4] and summary["skipped"].tolist() == [2]
    ids, vectors = read_embeddings(tmp_path)
    assert ids.tolist() == [0, 2, 4, 5]
    np.testing.assert_allclose(vectors, encoder.encode([texts[i] for i in (0, 2, 4, 5)]), atol=TOL, rtol=0)
    with pytest.raises(InvalidTypeError, match="holds string ids but the output folder holds int64 ids"):
        embedder(pa.table({"id": ["1"], "text": ["x"]}))
    with pytest.raises(InvalidValueError, match="repeats ids"):
        embedder(pa.table({"id": [7, 7], "text": ["x", "y"]}))
    with pytest.raises(InvalidValueError, match="1 null ids"):
        embedder(pa.table({"id": pa.array([8, None], pa.int64()), "text": ["x", "y"]}))
    with pytest.raises(InvalidValueError, match="no column 'text'"):
        embedder(pa.table({"id": [9], "body": ["x"]}))
    with pytest.raises(InvalidTypeError, match="must hold strings"):
        embedder(pa.table({"id": [10], "text": [3]}))
    everything = RayEmbedder(minilm_export, num_threads=1)  # no skip list, no output: the vectors come back
    batch = everything({"id": np.array(["b", "a"], dtype=object), "text": np.array(texts[:2], dtype=object)})
    assert batch["id"].tolist() == ["b", "a"] and batch["embedding"].shape == (2, encoder.dim)


def test_missing_ray_is_a_missing_dependency_error():
    code = ("import sys; sys.modules['ray'] = None\n"
            "from embedrank.errors import MissingDependencyError\n"
            "try:\n    import embedrank.integrations.ray\n"
            "except MissingDependencyError as e:\n    print('raised:', e)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert "raised:" in result.stdout and "pip install 'embedrank[ray]'" in result.stdout, result.stderr
    assert issubclass(MissingDependencyError, ImportError)


# -- the Parquet reader --------------------------------------------------------------------------
def _write(path: Path, ids, vectors, vector_type=None, **columns) -> Path:
    vectors = np.asarray(vectors)
    if vector_type is None:
        array = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
    else:
        array = pa.array([list(v) for v in vectors], type=vector_type)
    pq.write_table(pa.table({"id": ids, "embedding": array, **columns}), path)
    return path


def test_add_parquet_adds_in_chunks_of_batch_rows(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((50, 12)).astype(np.float32)
    ids = [f"v{i}" for i in range(50)]
    _write(tmp_path / "a.parquet", ids[:30], vectors[:30])
    _write(tmp_path / "b.parquet", ids[30:], vectors[30:])
    index = FlatIndex(12)
    sizes = []
    original = index.add

    def add(batch, ids=None, **kwargs):
        sizes.append(len(batch))
        return original(batch, ids=ids, **kwargs)

    monkeypatch.setattr(index, "add", add)
    assert add_parquet(index, tmp_path, batch_rows=7) == 50
    assert max(sizes) == 7 and sum(sizes) == 50 and len(sizes) == 5 + 3  # 30 rows, then 20, in sevens
    result = index.search(vectors[41], k=1)
    assert result.ids[0] == "v41"
    with pytest.raises(InvalidValueError, match=r"b\.parquet.*'embedding'.*12 values, expected 16"):
        add_parquet(FlatIndex(16), tmp_path / "b.parquet")


BAD_FILES = {
    "float64 vectors": (lambda p: _write(p, ["a"], np.zeros((1, 4)), pa.list_(pa.float64())),
                        r"'embedding' holds double values"),
    "string vectors": (lambda p: pq.write_table(pa.table({"id": ["a"], "embedding": ["0.1 0.2"]}), p),
                       r"'embedding' has type string"),
    "float ids": (lambda p: _write(p, [1.5], np.zeros((1, 4), np.float32)), r"'id' has type double"),
    "no id column": (lambda p: pq.write_table(pa.table({"key": ["a"]}), p), r"no column 'id'"),
    "ragged vectors": (lambda p: pq.write_table(pa.table({"id": ["a", "b"], "embedding": pa.array(
        [[0.0, 1.0, 2.0], [0.0, 1.0]], pa.list_(pa.float32()))}), p), r"'embedding' has rows of 2 to 3 values"),
    "null vector": (lambda p: pq.write_table(pa.table({"id": ["a", "b"], "embedding": pa.array(
        [[0.0, 1.0], None], pa.list_(pa.float32(), 2))}), p), r"'embedding' has 1 null rows"),
    "null id": (lambda p: _write(p, pa.array(["a", None]), np.zeros((2, 4), np.float32)), r"'id' has 1 null ids"),
    "not parquet": (lambda p: p.write_bytes(b"PAR1 but not really"), r"not a readable Parquet file"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_is_a_format_error_naming_file_and_column(tmp_path, case):
    make, message = BAD_FILES[case]
    path = tmp_path / "bad.parquet"
    make(path)
    with pytest.raises(FormatError, match=message) as error:
        read_embeddings(tmp_path)
    assert str(path) in str(error.value)


def test_files_that_disagree_are_refused(tmp_path):
    _write(tmp_path / "a.parquet", ["a"], np.zeros((1, 4), np.float32))
    _write(tmp_path / "b.parquet", ["b"], np.zeros((1, 5), np.float32))
    with pytest.raises(FormatError, match=r"b\.parquet: column 'embedding' holds vectors of 5 values but .*a\.parquet"):
        read_embeddings(tmp_path)
    _write(tmp_path / "b.parquet", ["b"], np.zeros((1, 4), np.int8))
    with pytest.raises(FormatError, match=r"b\.parquet: column 'embedding' holds int8 vectors but"):
        read_embeddings(tmp_path)
    _write(tmp_path / "b.parquet", [3], np.zeros((1, 4), np.float32))
    with pytest.raises(FormatError, match=r"b\.parquet: column 'id' holds int ids but"):
        read_embeddings(tmp_path)
    _write(tmp_path / "b.parquet", ["a"], np.ones((1, 4), np.float32))
    with pytest.raises(FormatError, match=r"id 'a' appears more than once .*a\.parquet, .*b\.parquet"):
        read_embeddings(tmp_path)
    with pytest.raises(InvalidValueError, match=r"a\.parquet: column 'embedding' holds vectors of 4 values, "
                                                r"expected 8"):
        read_embeddings(tmp_path / "a.parquet", dim=8)
    (tmp_path / "b.parquet").unlink()
    (tmp_path / ".b.parquet.tmp-123").write_bytes(b"half a file")  # hidden: skipped
    ids, vectors = read_embeddings(tmp_path)
    assert ids.tolist() == ["a"] and vectors.shape == (1, 4)
