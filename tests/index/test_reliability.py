"""Bad input, crafted files and concurrent writers: a clear error that changes nothing, never a
crash, never silent garbage (each test names the fault it guards against)."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import embedrank
from embedrank.errors import IndexFormatError, InvalidValueError
from embedrank.index import FlatIndex, HNSWIndex, load_index
from embedrank.index.storage import CHECKSUM_FIELD, manifest_checksum
from embedrank.utils.files import LockTimeoutError, lock_path, write_lock
from tests.conftest import REPO

SRC = str(Path(embedrank.__file__).parents[1])  # children import the embedrank under test


def small_flat(n: int = 6, dim: int = 4, ids=None, metadata=True) -> FlatIndex:
    index = FlatIndex(dim)
    vectors = np.random.default_rng(n).standard_normal((n, dim)).astype(np.float32)
    index.add(vectors, ids=ids, metadata=[{"tag": f"t{i % 2}", "i": i} for i in range(n)] if metadata else None)
    return index


def small_hnsw(n: int = 40, dim: int = 8, metric: str = "ip") -> HNSWIndex:
    index = HNSWIndex(dim, M=4, metric=metric)
    index.add(np.random.default_rng(n).standard_normal((n, dim)).astype(np.float32),
              metadata=[{"i": i} for i in range(n)])
    return index


def rewrite_file(folder: Path, name: str, data: bytes) -> None:
    """Replaces `name` in an index folder and fixes up the manifest (sizes, sha256, its checksum),
    as someone crafting a file would."""
    (folder / name).write_bytes(data)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    write_manifest(folder, manifest)


def write_manifest(folder: Path, manifest: dict) -> None:
    manifest[CHECKSUM_FIELD] = manifest_checksum(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


# -- 1. saves of one path are serialized across processes ---------------------------------
HOLD_LOCK = """
import sys, time
from embedrank.utils.files import write_lock
with write_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def hold_lock_in_child(path: Path, seconds: float) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=SRC)
    child = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path), str(seconds)], stdout=subprocess.PIPE,
                             text=True, env=env, cwd=REPO)
    line = child.stdout.readline().strip()
    child.stdout.close()
    assert line == "locked"
    return child


def test_a_save_waits_for_another_process_saving_the_same_path(tmp_path):
    path = tmp_path / "ix"
    small_flat().save(path)
    child = hold_lock_in_child(path, 1.0)
    start = time.monotonic()
    small_flat(9).save(path)
    waited = time.monotonic() - start
    child.wait(timeout=30)
    assert waited > 0.5 and len(load_index(path)) == 9


def test_a_save_with_a_timeout_gives_up_with_a_clear_error_and_changes_nothing(tmp_path):
    path = tmp_path / "ix"
    small_flat().save(path)
    child = hold_lock_in_child(path, 5.0)
    try:
        with pytest.raises(LockTimeoutError, match="locked"):
            small_flat(9).save(path, timeout=0.2)
    finally:
        child.kill()
        child.wait()
    assert len(load_index(path)) == 6
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [lock_path(path).name]


def test_a_leftover_lock_file_breaks_nothing(tmp_path):
    path = tmp_path / "ix"
    lock_path(path).write_text("junk from an older run")
    small_flat().save(path)
    small_flat(7).save(path)
    assert len(load_index(path, timeout=1.0)) == 7


def test_threads_saving_one_path_never_lose_it(tmp_path):
    path = tmp_path / "ix"
    indexes = [small_flat(n) for n in (5, 6, 7, 8)]
    errors = []

    def save(index):
        try:
            for _ in range(5):
                index.save(path)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=save, args=(ix,)) for ix in indexes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(load_index(path)) in (5, 6, 7, 8)


def test_a_load_waits_for_a_save_in_progress(tmp_path):
    path = tmp_path / "ix"
    small_flat().save(path)
    with write_lock(path):
        with pytest.raises(LockTimeoutError):
            load_index(path, timeout=0.1)


# -- 3. manifest.json is checksummed and validated ---------------------------------------
def test_an_edited_manifest_field_is_refused(tmp_path):
    path = tmp_path / "ix"
    small_hnsw().save(path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["config"]["metric"] = "l2"
    (path / "manifest.json").write_text(json.dumps(manifest))
    for verify in (True, False):
        with pytest.raises(IndexFormatError, match="manifest_sha256"):
            load_index(path, verify=verify)


@pytest.mark.parametrize("field, value", [("next_auto_id", -1), ("next_auto_id", 2), ("count", -3), ("dim", 0),
                                          ("dim", True), ("slot_count", 1.5), ("id_kind", "float"),
                                          ("count", 99), ("format_version", 7)])
def test_manifest_values_are_validated_even_with_a_matching_checksum(tmp_path, field, value):
    path = tmp_path / "ix"
    small_flat().save(path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest[field] = value
    write_manifest(path, manifest)
    for verify in (True, False):
        with pytest.raises(IndexFormatError):
            load_index(path, verify=verify)


def test_a_version_1_manifest_without_checksum_still_loads(tmp_path):
    path = tmp_path / "ix"
    small_flat().save(path)
    manifest = json.loads((path / "manifest.json").read_text())
    del manifest[CHECKSUM_FIELD]
    manifest["format_version"] = 1
    (path / "manifest.json").write_text(json.dumps(manifest))
    index = load_index(path)
    assert len(index) == 6 and index.add(np.ones(4, np.float32)).tolist() == [6]
    manifest["next_auto_id"] = -1
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="next_auto_id"):
        load_index(path)


# -- 4. a crafted hnsw_graph.bin never reaches hnswlib -------------------------------------
HEADER = struct.Struct("<QQQQQQiIQQQdQ")


def graph_parts(path: Path) -> tuple[bytearray, tuple]:
    data = bytearray((path / "hnsw_graph.bin").read_bytes())
    return data, HEADER.unpack_from(data, 0)


def craft_neighbour_out_of_range(data: bytearray, header) -> None:
    struct.pack_into("<H", data, HEADER.size, 1)  # element 0: one level-0 link ...
    struct.pack_into("<I", data, HEADER.size + 4, 10**6)  # ... to element 1,000,000


def craft_link_count_above_maxm0(data: bytearray, header) -> None:
    struct.pack_into("<H", data, HEADER.size, header[9] + 50)


def craft_bad_entry_point(data: bytearray, header) -> None:
    fields = list(header)
    fields[7] = header[2] + 7
    HEADER.pack_into(data, 0, *fields)


def craft_huge_capacity(data: bytearray, header) -> None:
    fields = list(header)
    fields[1] = 1 << 40
    HEADER.pack_into(data, 0, *fields)


def craft_label_out_of_range(data: bytearray, header) -> None:
    struct.pack_into("<Q", data, HEADER.size + header[4], 1 << 50)


@pytest.mark.parametrize("craft", [craft_neighbour_out_of_range, craft_link_count_above_maxm0, craft_bad_entry_point,
                                   craft_huge_capacity, craft_label_out_of_range])
def test_a_crafted_graph_file_is_refused_before_hnswlib_reads_it(tmp_path, craft):
    # Run in a child: on failure this would be a segfault, which must not take pytest down.
    path = tmp_path / "ix"
    small_hnsw().save(path)
    data, header = graph_parts(path)
    craft(data, header)
    rewrite_file(path, "hnsw_graph.bin", bytes(data))
    script = ("import sys, numpy as np\nfrom embedrank.index import load_index\nfrom embedrank.errors import "
              "IndexFormatError\ntry:\n    ix = load_index(sys.argv[1])\nexcept IndexFormatError as e:\n"
              "    print('refused', e)\nelse:\n    ix.search(np.ones((4, 8), np.float32), 5)\n"
              "    ix.add(np.ones((50, 8), np.float32))\n    print('loaded')\n")
    env = dict(os.environ, PYTHONPATH=SRC)
    run = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, env=env,
                         cwd=REPO, timeout=120)
    assert run.returncode == 0, f"exit {run.returncode}: {run.stderr[-2000:]}"
    assert run.stdout.startswith("refused") and "hnsw_graph.bin" in run.stdout, run.stdout


# -- 5. metadata.sqlite and symlinks ---------------------------------------------------------
def edit_metadata(folder: Path, sql: str) -> None:
    db = folder / "metadata.sqlite"
    connection = sqlite3.connect(db)
    connection.executescript(sql)
    connection.commit()
    connection.close()
    rewrite_file(folder, "metadata.sqlite", db.read_bytes())


@pytest.mark.parametrize("sql", [
    "CREATE TRIGGER wipe AFTER INSERT ON docs BEGIN DELETE FROM docs; END;",
    "CREATE VIEW v AS SELECT * FROM docs;",
    "CREATE TABLE extra (x);",
    "ALTER TABLE docs ADD COLUMN extra TEXT;",
    "INSERT INTO docs VALUES (999, '{}');",
    "UPDATE docs SET doc = 'not json' WHERE slot = 0;",
    "UPDATE docs SET doc = '[1]' WHERE slot = 0;",
])
def test_a_crafted_metadata_database_is_refused(tmp_path, sql):
    path = tmp_path / "ix"
    small_flat().save(path)
    edit_metadata(path, sql)
    for verify in (True, False):
        with pytest.raises(IndexFormatError, match="metadata.sqlite"):
            load_index(path, verify=verify)


def test_a_symlinked_member_is_refused(tmp_path):
    path = tmp_path / "ix"
    small_flat().save(path)
    outside = tmp_path / "outside.npy"
    os.rename(path / "ids.npy", outside)
    os.symlink(outside, path / "ids.npy")
    for verify in (True, False):
        with pytest.raises(IndexFormatError, match="symbolic link"):
            load_index(path, verify=verify)


# -- 6. add() changes nothing when a value cannot be stored --------------------------------
@pytest.mark.parametrize("cls", [FlatIndex, HNSWIndex])
def test_metadata_that_cannot_be_stored_is_refused_before_the_vector_goes_in(cls, tmp_path):
    index = cls(4)
    index.add(np.eye(4, dtype=np.float32)[:2], metadata=[{"a": 1}, None])
    with pytest.raises(InvalidValueError, match="surrogate"):
        index.add(np.ones(4, np.float32), metadata=[{"a": "x\ud800"}])
    with pytest.raises(InvalidValueError, match="surrogate"):
        index.add(np.ones(4, np.float32), ids=[0], metadata=[{"a": "x\ud800"}], upsert=True)
    assert len(index) == 2 and index.ids().tolist() == [0, 1]
    assert index.get_metadata([0, 1]) == [{"a": 1}, None]
    assert index.add(np.ones(4, np.float32)).tolist() == [2]
    index.save(tmp_path / "ix")


def test_a_str_id_with_a_lone_surrogate_is_refused_at_add(tmp_path):
    index = FlatIndex(4)
    index.add(np.ones(4, np.float32), ids=["a"])
    with pytest.raises(InvalidValueError, match="valid Unicode"):
        index.add(np.ones(4, np.float32), ids=["x\ud800"])
    assert index.ids().tolist() == ["a"]
    index.save(tmp_path / "ix")


# -- 7. damage read with verify=False ------------------------------------------------------
@pytest.mark.parametrize("name, cut", [("ids.npy", 0), ("ids.npy", 20), ("metadata.sqlite", 4096),
                                       ("metadata.sqlite", 0), ("vectors.npy", 0)])
def test_damage_read_without_verification_is_an_index_format_error(tmp_path, name, cut):
    path = tmp_path / "ix"
    small_flat(ids=list(range(6))).save(path)
    data = (path / name).read_bytes()
    (path / name).write_bytes(data[:cut])
    with pytest.raises(IndexFormatError, match=name):  # was EOFError for an empty ids.npy
        load_index(path, verify=False)


def test_garbage_metadata_without_verification_is_an_index_format_error(tmp_path):
    path = tmp_path / "ix"
    small_flat().save(path)
    size = (path / "metadata.sqlite").stat().st_size
    (path / "metadata.sqlite").write_bytes(b"SQLite format 3\x00" + os.urandom(size - 16))
    with pytest.raises(IndexFormatError, match="metadata.sqlite"):
        load_index(path, verify=False)


# -- 8. huge dims and long names ------------------------------------------------------------
@pytest.mark.parametrize("cls", [FlatIndex, HNSWIndex])
def test_a_huge_dim_is_a_clear_error(cls):
    with pytest.raises(InvalidValueError, match="dim must be at most"):
        cls(dim=2**40)


@pytest.mark.parametrize("length", [238, 250, 255])
def test_index_names_up_to_255_bytes_save_and_load(tmp_path, length):
    path = tmp_path / ("é" * ((length - 1) // 2) + "x" * (length - 2 * ((length - 1) // 2)))
    assert len(os.fsencode(path.name)) == length
    small_flat().save(path)
    small_flat(7).save(path)
    assert len(load_index(path)) == 7


# -- 9. k far above the index size ------------------------------------------------------------
@pytest.mark.parametrize("cls", [FlatIndex, HNSWIndex])
def test_a_huge_k_does_not_allocate_k_sized_outputs(cls):
    index = cls(4)
    index.add(np.eye(4, dtype=np.float32))
    tracemalloc.start()
    try:
        result = index.search(np.ones((3, 4), np.float32), 10**7, return_metadata=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.ids.shape == (3, 1024) and peak < 10 * 2**20
    assert sorted(result.ids[0, :4].tolist()) == [0, 1, 2, 3] and (result.ids[:, 4:] == -1).all()
    assert index.search(np.ones(4, np.float32), 10).ids.shape == (1, 10)  # small k: padded to k as before


# -- 10. overflowing scores ------------------------------------------------------------------
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_hnsw_scores_that_overflow_raise_like_flat(metric):
    index = HNSWIndex(2, metric=metric)
    index.add(np.array([[1e30, 1e30], [1, 1]], np.float32))
    for kwargs in ({}, {"filter": [0]}):
        with pytest.raises(InvalidValueError, match="overflowed float32"):
            index.search(np.array([[1e30, 1e30]], np.float32), 2, **kwargs)
    flat = FlatIndex(2)
    flat.add(np.array([[1e30, 1e30], [1, 1]], np.float32))
    with pytest.raises(InvalidValueError, match="overflowed float32"):
        flat.search(np.array([[1e30, 1e30]], np.float32), 2)


# -- 11. a filter on a field no live vector has ----------------------------------------------
@pytest.mark.parametrize("cls", [FlatIndex, HNSWIndex])
def test_a_filter_on_a_field_that_comes_and_goes_behaves_the_same_every_time(cls):
    index = cls(4)
    index.add(np.eye(4, dtype=np.float32), metadata=[{"lang": "en"}] * 4)
    errors = []

    def writer():
        for _ in range(200):  # bounded: the index's lock lets a busy writer go first
            index.add(np.ones(4, np.float32), ids=[100], metadata=[{"rare": 1}])
            index.remove([100])
            time.sleep(0)

    def reader():
        try:
            for _ in range(200):
                result = index.search(np.ones(4, np.float32), 2, filter={"rare": 1})
                assert result.ids[0, 0] in (100, -1) and result.ids[0, 1] == -1
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert index.search(np.ones(4, np.float32), 2, filter={"rare": 1}).ids.tolist() == [[-1, -1]]
