"""FlatIndex past RAM: arrays in scratch files (on_disk), the binary -> int8 -> float32 cascade,
partial memory maps on load, and streaming builds (add_npy, add_batches), including threads
searching while a writer grows the scratch files and a builder process killed mid-save."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import embedrank
from embedrank.errors import FormatError, IndexFormatError
from embedrank.index import FlatIndex, load_index
from embedrank.index.scratch import RowFile
from embedrank.index.streaming import add_batches, add_npy
from embedrank.kernels import binarize, rescore, topk_hamming
from tests.index.reference import clustered, exact_topk, queries_near, recall_at_k

ROOT = Path(__file__).resolve().parents[2]
# children import the embedrank this process imported (installed, or src/ with a local build) and tests/
CHILD_ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(embedrank.__file__).parents[1]), str(ROOT)]))
DISK_COMBOS = [("float32", None, ("float32",)), ("int8", "float32", ("float32",)), ("int8", "float32", ("int8", "float32")),
               ("binary", "float32", ("float32",)), ("binary", "int8+float32", ("float32",)),
               ("binary", "int8+float32", ("float32", "int8", "binary")), ("binary", "int8", ("int8",))]


def scratch_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix == ".rows")


def assert_same(a, b) -> None:
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.scores, b.scores)


@pytest.mark.parametrize("precision, rescore_, on_disk", DISK_COMBOS)
def test_on_disk_arrays_give_the_in_memory_results_through_growth_removal_and_upsert(tmp_path, precision, rescore_,
                                                                                      on_disk):
    base = clustered(3001, 33, seed=1)  # odd sizes: 33 dims -> 5-byte codes
    queries = queries_near(base, 7, seed=2)
    memory = FlatIndex(33, precision, rescore_, oversample=8)
    disk = FlatIndex(33, precision, rescore_, oversample=8, on_disk=on_disk, scratch_dir=tmp_path)
    for start in range(0, 3001, 97):  # many adds: the scratch files grow in place
        for index in (memory, disk):
            index.add(base[start:start + 97])
    assert len(scratch_files(tmp_path)) == len(on_disk)
    for kind in on_disk:
        array = {"float32": disk._f32, "int8": disk._codes, "binary": disk._bits}[kind]
        assert isinstance(array, np.memmap) and Path(array.filename).parent == tmp_path
    assert_same(disk.search(queries, 10), memory.search(queries, 10))
    for index in (memory, disk):
        index.remove(list(range(0, 3001, 3)))  # past compact_threshold: compaction into fresh scratch files
        index.add(base[:5] * -1, ids=[1, 2, 4, 5, 7], upsert=True)
    assert_same(disk.search(queries, 10), memory.search(queries, 10))
    assert len(scratch_files(tmp_path)) == len(on_disk)  # the replaced files were deleted
    del disk, index
    gc.collect()
    assert scratch_files(tmp_path) == []


def test_three_stage_cascade_equals_its_kernels_composed():
    base = clustered(5000, 64, clusters=20, seed=3)
    queries = queries_near(base, 9, seed=4)
    index = FlatIndex(64, "binary", "int8+float32", oversample=30, refine=3)
    index.add(base)
    _, pool = topk_hamming(binarize(queries), binarize(base), 10 * 30)
    _, narrowed = rescore(queries, (index._codes[:5000], index.quantizer), pool, 10 * 3)
    scores, rows = rescore(queries, base, narrowed, 10)
    got = index.search(queries, 10)
    np.testing.assert_array_equal(got.ids, rows)
    np.testing.assert_array_equal(got.scores, scores)
    truth = exact_topk(queries, base, 10)[1]
    assert recall_at_k(got.ids, truth) >= 0.9
    # refine=1 hands the float32 pass only k candidates: the int8 order decides the set
    assert recall_at_k(index.search(queries, 10, refine=1).ids, truth) <= recall_at_k(got.ids, truth)
    wide = index.search(queries, 10, refine=30)  # every binary candidate reaches float32
    assert_same(wide, index.search(queries, 10, rescore="float32"))


def test_partial_memory_map_on_load_and_adds_after_it_stay_on_disk(tmp_path):
    base = clustered(2000, 48, seed=5)
    queries = queries_near(base, 5, seed=6)
    index = FlatIndex(48, "binary", "int8+float32", on_disk=("float32",), scratch_dir=tmp_path)
    add_batches(index, (base[i:i + 500] for i in range(0, 2000, 500)))
    path = index.save(tmp_path / "ix")
    expected = index.search(queries, 10)
    del index
    gc.collect()
    loaded = load_index(path, mmap=("float32",))
    assert loaded.on_disk == ("float32",)
    assert isinstance(loaded._f32, np.memmap) and not loaded._f32.flags.writeable
    assert not isinstance(loaded._codes, np.memmap) and not isinstance(loaded._bits, np.memmap)
    assert_same(loaded.search(queries, 10), expected)
    loaded._scratch_dir = tmp_path  # not saved: a loaded index uses the system's temporary folder unless told
    loaded.add(base[:3] * 0.5, ids=[9000, 9001, 9002])  # the mapped originals move to a scratch file, not RAM
    assert isinstance(loaded._f32, np.memmap) and loaded._f32.flags.writeable
    assert Path(loaded._f32.filename).parent == tmp_path and len(scratch_files(tmp_path)) == 1
    loaded.remove([9000, 9001, 9002])
    assert_same(loaded.search(queries, 10), expected)
    everything = load_index(path, mmap=True)
    assert all(isinstance(a, np.memmap) for a in (everything._f32, everything._codes, everything._bits))
    nothing = load_index(path, mmap=False)
    assert not any(isinstance(a, np.memmap) for a in (nothing._f32, nothing._codes, nothing._bits))


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match=r"on_disk names \['int8'\], which this index does not keep"):
        FlatIndex(8, "binary", "float32", on_disk=("int8",))
    with pytest.raises(TypeError, match="on_disk must be a tuple of array kinds"):
        FlatIndex(8, "binary", "float32", on_disk="float32")
    with pytest.raises(ValueError, match=r"on_disk names unknown array kinds \['fp16'\]"):
        FlatIndex(8, on_disk=("fp16",))
    with pytest.raises(ValueError, match=r"rescore='int8\+float32' needs precision='binary'"):
        FlatIndex(8, "int8", "int8+float32")
    with pytest.raises(ValueError, match="refine must be an integer >= 1, got 0"):
        FlatIndex(8, "binary", "int8+float32", refine=0)
    with pytest.raises(ValueError, match="is not an existing folder"):
        FlatIndex(8, on_disk=("float32",), scratch_dir="/nonexistent/scratch")
    index = FlatIndex(8, "binary", "int8+float32")
    index.add(np.eye(8, dtype=np.float32))
    with pytest.raises(ValueError, match="refine must be an integer >= 1, got -2"):
        index.search(np.ones(8), 2, refine=-2)
    only_f32 = FlatIndex(8, "binary", "float32")
    only_f32.add(np.eye(8, dtype=np.float32))
    with pytest.raises(ValueError, match=r"rescore='int8\+float32' needs precision='binary' and the int8 codes"):
        only_f32.search(np.ones(8), 2, rescore="int8+float32")


def test_load_index_mmap_argument_is_checked(tmp_path):
    index = FlatIndex(4)
    index.add(np.eye(4, dtype=np.float32))
    path = index.save(tmp_path / "ix")
    with pytest.raises(ValueError, match=r"mmap names unknown array kinds \['fp16'\]"):
        load_index(path, mmap=("fp16",))
    with pytest.raises(TypeError, match="mmap must be True, False or a tuple"):
        load_index(path, mmap="float32")


def test_add_npy_streams_a_file_in_batches(tmp_path):
    base = clustered(1234, 20, seed=7)
    np.save(tmp_path / "x.npy", base)
    streamed = FlatIndex(20, "int8", "float32", on_disk=("float32",), scratch_dir=tmp_path)
    assert add_npy(streamed, tmp_path / "x.npy", batch_rows=101) == 1234
    whole = FlatIndex(20, "int8", "float32", quantizer=streamed.quantizer)  # same codes: fitted on the same first batch
    whole.add(base)
    queries = queries_near(base, 6, seed=8)
    assert_same(streamed.search(queries, 8), whole.search(queries, 8))
    named = FlatIndex(20)
    add_npy(named, tmp_path / "x.npy", batch_rows=500, ids=[f"d{i}" for i in range(1234)])
    assert named.search(base[17], 1).ids[0, 0] == "d17"


def test_add_npy_and_add_batches_bad_input(tmp_path):
    index = FlatIndex(20)
    (tmp_path / "junk.npy").write_bytes(b"\x93NUMPY\x01\x00garbage that is not a header")
    with pytest.raises(FormatError, match=r"junk\.npy: not a readable \.npy file"):
        add_npy(index, tmp_path / "junk.npy")
    np.save(tmp_path / "flat.npy", np.ones(20, dtype=np.float32))
    with pytest.raises(FormatError, match=r"expected a 2-D array \[n, dim\], got shape \(20,\)"):
        add_npy(index, tmp_path / "flat.npy")
    np.save(tmp_path / "wide.npy", np.ones((3, 21), dtype=np.float32))
    with pytest.raises(ValueError, match="21"):
        add_npy(index, tmp_path / "wide.npy")
    np.save(tmp_path / "ok.npy", np.ones((3, 20), dtype=np.float32))
    with pytest.raises(ValueError, match="got 2 ids for the 3 rows"):
        add_npy(index, tmp_path / "ok.npy", ids=[1, 2])
    with pytest.raises(ValueError, match="batch_rows"):
        add_npy(index, tmp_path / "ok.npy", batch_rows=0)
    with pytest.raises(TypeError, match=r"batch 1: expected an array or \(ids, array\), got a tuple of 3"):
        add_batches(index, [np.ones((1, 20)), (1, 2, 3)])
    assert len(index) == 1  # the batch before the bad one was added


def test_add_npy_refuses_truncated_fortran_and_non_float_files(tmp_path):
    index = FlatIndex(20)
    np.save(tmp_path / "x.npy", np.ones((10, 20), dtype=np.float32))
    data = (tmp_path / "x.npy").read_bytes()
    (tmp_path / "short.npy").write_bytes(data[:-5])
    with pytest.raises(FormatError, match=r"short\.npy: \d+ bytes, but its header promises 10 rows .* truncated"):
        add_npy(index, tmp_path / "short.npy")
    np.save(tmp_path / "f.npy", np.asfortranarray(np.ones((10, 20), dtype=np.float32)))
    with pytest.raises(FormatError, match="Fortran"):
        add_npy(index, tmp_path / "f.npy")
    np.save(tmp_path / "i.npy", np.ones((10, 20), dtype=np.int64))
    with pytest.raises(FormatError, match="expected float vectors, got dtype int64"):
        add_npy(index, tmp_path / "i.npy")
    with pytest.raises(FormatError, match="not a readable"):
        add_npy(index, tmp_path / "missing.npy")
    assert len(index) == 0


def test_add_npy_survives_another_process_truncating_the_file(tmp_path):
    """The source shrinks mid-build (another process truncates it): a FormatError naming the row,
    the batches before it added, and this process alive (a memory map would have been SIGBUS)."""
    base = clustered(1000, 20, seed=3)
    np.save(tmp_path / "x.npy", base)
    index = FlatIndex(20)
    calls = []
    add = index.add

    def add_then_truncate(vectors, ids=None):
        added = add(vectors, ids=ids)
        calls.append(len(vectors))
        if len(calls) == 2:  # a real second process cuts the file to its header + 250 rows
            header = (tmp_path / "x.npy").stat().st_size - base.nbytes
            subprocess.run([sys.executable, "-c", f"import os; os.truncate({str(tmp_path / 'x.npy')!r}, "
                            f"{header + 250 * 20 * 4})"], check=True)
        return added

    index.add = add_then_truncate
    with pytest.raises(FormatError, match=r"x\.npy: ended at row 250 of 1000 while reading .*rows before 200"):
        add_npy(index, tmp_path / "x.npy", batch_rows=100)
    assert len(index) == 200
    np.testing.assert_array_equal(index.search(base[150], 1).ids[0, 0], 150)


def test_threads_search_while_a_writer_grows_the_scratch_files(tmp_path):
    base = clustered(20_000, 32, seed=9)
    index = FlatIndex(32, "binary", "int8+float32", oversample=20, on_disk=("float32", "int8"), scratch_dir=tmp_path)
    index.add(base[:300])
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader():
        try:
            while not stop.is_set():
                result = index.search(base[:4], 1)
                assert result.ids[:, 0].tolist() == [0, 1, 2, 3]
                np.testing.assert_allclose(result.scores[:, 0], 1.0, atol=1e-5)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for start in range(300, 20_000, 700):
            index.add(base[start:start + 700])
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[0]
    assert len(index) == 20_000
    memory = FlatIndex(32, "binary", "int8+float32", oversample=20, quantizer=index.quantizer)
    memory.add(base)
    assert_same(index.search(base[:50], 10), memory.search(base[:50], 10))


BUILDER = """
import sys, numpy as np
from embedrank.index import FlatIndex
from tests.index.reference import clustered
path, scratch = sys.argv[1], sys.argv[2]
base = clustered(40_000, 32, seed=10)
index = FlatIndex(32, "binary", "int8+float32", on_disk=("float32",), scratch_dir=scratch)
for n, start in enumerate(range(0, 40_000, 2_000)):
    index.add(base[start:start + 2_000])
    index.save(path)
    print(len(index), flush=True)
"""


def test_builder_killed_mid_stream_leaves_a_whole_saved_index(tmp_path):
    """SIGKILL a process that streams adds and saves after each batch: the saved index is one of
    the saved states, whole (checksums pass, results equal a fresh index of that prefix)."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    path = tmp_path / "ix"
    env = CHILD_ENV
    proc = subprocess.Popen([sys.executable, "-c", BUILDER, str(path), str(scratch)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, text=True)
    saved = 0
    while saved < 8000:  # a few saves done; the next one is in flight or about to be
        line = proc.stdout.readline()
        assert line, "the builder exited early"
        saved = int(line)
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    loaded = load_index(path, mmap=("float32",))
    n = len(loaded)
    assert n % 2000 == 0 and 8000 <= n <= 40_000
    base = clustered(40_000, 32, seed=10)
    fresh = FlatIndex(32, "binary", "int8+float32", quantizer=loaded.quantizer)
    fresh.add(base[:n])
    queries = queries_near(base[:n], 5, seed=11)
    assert_same(loaded.search(queries, 10), fresh.search(queries, 10))
    with pytest.raises(IndexFormatError):  # and a damaged copy of it is refused, not half-read
        vectors = path / "vectors.npy"
        data = bytearray(vectors.read_bytes())
        data[-7] ^= 0xFF
        vectors.write_bytes(bytes(data))
        load_index(path)


@pytest.mark.parametrize("dtype, width", [(np.float32, 1), (np.float32, 37), (np.int8, 5), (np.uint8, 48)])
def test_row_file_reads_scattered_rows_like_the_mapping(tmp_path, dtype, width):
    rng = np.random.default_rng(width)
    array = rng.integers(-100, 100, size=(3001, width)).astype(dtype)
    np.save(tmp_path / "rows.npy", array)
    mapped = np.load(tmp_path / "rows.npy", mmap_mode="r")
    reader = RowFile.of(mapped)
    for rows in (np.array([0]), np.array([3000, 0, 17, 17]), rng.integers(0, 3001, 2000)):
        for threads in (1, 2):
            np.testing.assert_array_equal(reader.take(rows, threads), array[rows])
    assert reader.take(np.empty(0, dtype=np.int64)).shape == (0, width)
    with pytest.raises(ValueError, match="row out of range"):
        reader.take(np.array([3001]))
    with open(tmp_path / "rows.npy", "r+b") as handle:  # cut the file short under the reader
        handle.truncate(mapped.offset + 100 * array.strides[0])
    with pytest.raises(IndexFormatError, match="ends before row 2999"):
        reader.take(np.array([5, 2999]))


def test_rescoring_reads_candidates_without_touching_the_mapping(tmp_path):
    """The float32 originals of a loaded cascade are read with pread: its search results equal
    the in-memory index's while the mapping itself is never read (its pages stay unmapped)."""
    base = clustered(4000, 64, seed=12)
    queries = queries_near(base, 8, seed=13)
    index = FlatIndex(64, "binary", "int8+float32", oversample=20)
    index.add(base)
    loaded = load_index(index.save(tmp_path / "ix"), mmap=("float32",))
    mapped = loaded._f32
    loaded._f32 = np.memmap(tmp_path / "zeros.rows", dtype=np.float32, mode="w+", shape=mapped.shape)
    loaded._f32[:] = 0  # a mapping full of zeros: reading it would give zero scores
    loaded._f32.flush()
    loaded._f32 = np.memmap(tmp_path / "zeros.rows", dtype=np.float32, mode="r", shape=mapped.shape)
    loaded._row_file = (loaded._f32, RowFile.of(mapped))  # the reader still points at the real originals
    assert_same(loaded.search(queries, 10), index.search(queries, 10))


FULL_DISK = """
import resource, signal, sys
import numpy as np
from embedrank.index import FlatIndex
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit a write fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (6_000_000, 6_000_000))  # a 'disk' of 6 MB for every file we write
index = FlatIndex(64, "binary", "float32", on_disk=("float32",), scratch_dir=sys.argv[1])
rng = np.random.default_rng(0)
added = []
try:
    for step in range(100):
        batch = rng.standard_normal((3000, 64)).astype(np.float32)  # 768 kB of float32 a batch
        index.add(batch)
        added.append(batch)
except OSError as exc:
    print("refused:", exc)
base = np.concatenate(added)
assert len(index) == len(base), (len(index), len(base))
found = index.search(base[-3:], 1, oversample=50).ids[:, 0].tolist()
assert found == list(range(len(base) - 3, len(base))), found
print("rows", len(base))
"""


@pytest.fixture(params=["small file system", "file size limit"])
def tiny_disk(request, tmp_path):
    """(scratch folder, whether the child sets RLIMIT_FSIZE): a 5 MB tmpfs where this process
    may mount one (a real ENOSPC), else skipped; or a 6 MB file size limit (EFBIG)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if request.param == "file size limit":
        yield folder, True
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield folder, False
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)


def test_a_full_disk_refuses_the_add_instead_of_crashing(tiny_disk):
    """A process whose scratch files run out of disk gets OSError naming the folder from the add
    that does not fit; it keeps running, and the index keeps every earlier row. (Writing into a
    sparse scratch file on a full disk through the mapping is SIGBUS: the blocks are reserved
    with posix_fallocate first.)"""
    folder, limit = tiny_disk
    script = FULL_DISK if limit else FULL_DISK.replace("resource.setrlimit(", "0 and resource.setrlimit(")
    env = CHILD_ENV
    done = subprocess.run([sys.executable, "-c", script, str(folder)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    assert f"rows of scratch in {folder}" in done.stdout, done.stdout
    assert int(done.stdout.split("rows")[-1]) >= 3000


def test_a_loaded_index_reads_the_originals_it_loaded_even_after_a_save_replaces_them(tmp_path):
    """The pread reader opens the float32 file at load, under the lock: another writer replacing
    the folder afterwards (an upsert of every vector, saved to the same path) changes nothing
    for the index already loaded."""
    base = clustered(1000, 32, seed=14)
    queries = queries_near(base, 6, seed=15)
    index = FlatIndex(32, "binary", "int8+float32", oversample=20)
    index.add(base)
    path = index.save(tmp_path / "ix")
    expected = index.search(queries, 10)
    first = load_index(path, mmap=True)  # not searched yet
    second = load_index(path, mmap=True)
    second.add(clustered(1000, 32, seed=16), ids=list(range(1000)), upsert=True)
    second.save(path)
    assert_same(first.search(queries, 10), expected)


@pytest.fixture
def small_fs(tmp_path):
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    yield folder
    gc.collect()
    subprocess.run(["umount", str(folder)], capture_output=True)


def test_an_upsert_that_does_not_fit_changes_nothing(small_fs):
    base = clustered(9000, 128, seed=17)  # 6000 rows: 3.1 MB of float32 in a 4 MB folder; 9000 do not fit
    index = FlatIndex(128, "binary", "float32", oversample=50, on_disk=("float32",), scratch_dir=small_fs)
    index.add(base[:6000])
    before = index.search(base[:5], 3)
    replaced = -base[:3000]
    with pytest.raises(OSError, match="rows of scratch in"):  # 3000 replaced + 3000 new rows: no room for the new
        index.add(np.concatenate([replaced, base[6000:9000]]), ids=list(range(3000)) + list(range(6000, 9000)),
                  upsert=True)
    assert len(index) == 6000
    assert_same(index.search(base[:5], 3), before)  # the first 3000 still hold their old vectors


def test_scratch_files_are_private_and_a_forked_child_leaves_them_alone(tmp_path):
    index = FlatIndex(8, "binary", "float32", on_disk=("float32",), scratch_dir=tmp_path)
    index.add(np.eye(8, dtype=np.float32))
    (name,) = scratch_files(tmp_path)
    assert (tmp_path / name).stat().st_mode & 0o777 == 0o600
    pid = os.fork()
    if pid == 0:  # the child drops its copy of the index and exits normally (finalizers run)
        del index
        gc.collect()
        os._exit(0 if scratch_files(tmp_path) == [name] else 1)
    os.waitpid(pid, 0)
    assert scratch_files(tmp_path) == [name]
    index.add(np.eye(8, dtype=np.float32) * 2)  # the parent's file is still there to grow
    assert len(index) == 16


def test_a_killed_builders_scratch_file_is_swept_and_a_live_ones_kept(tmp_path):
    """Two real processes build into the same scratch_dir; one is SIGKILLed (its file stays
    behind), the other lives on. The next index made there removes only the dead one's file,
    and the live one still grows its own afterwards."""
    code = ("import os, sys, numpy as np\n"
            "from embedrank.index import FlatIndex\n"
            f"index = FlatIndex(8, 'binary', 'float32', on_disk=('float32',), scratch_dir={str(tmp_path)!r})\n"
            "index.add(np.eye(8, dtype=np.float32))\n"
            "print(os.path.basename(index._f32.filename), flush=True)\n"
            "sys.stdin.readline()\n"
            "index.add(np.ones((5000, 8), dtype=np.float32))\n"
            "print(len(index), len(index.search(np.eye(8, dtype=np.float32)[:1], 3).ids[0]), flush=True)\n")
    children = [subprocess.Popen([sys.executable, "-c", code], env=CHILD_ENV, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        names = [child.stdout.readline().strip() for child in children]
        assert set(scratch_files(tmp_path)) == set(names) and all(n.endswith(".lk.rows") for n in names)
        children[0].send_signal(signal.SIGKILL)
        children[0].wait()
        assert set(scratch_files(tmp_path)) == set(names)  # killed outright: nothing deleted it
        index = FlatIndex(8, "binary", "float32", on_disk=("float32",), scratch_dir=tmp_path)
        index.add(np.eye(8, dtype=np.float32))
        left = set(scratch_files(tmp_path))
        assert names[0] not in left and names[1] in left and len(left) == 2  # the live child's and ours
        children[1].stdin.write("go\n")
        children[1].stdin.flush()
        assert children[1].stdout.readline().split() == ["5008", "3"]
        assert children[1].wait(timeout=60) == 0
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
            child.stdin.close()
            child.stdout.close()


def test_the_sweep_leaves_unlocked_foreign_and_young_files_alone(tmp_path):
    from embedrank.index.scratch import ScratchRows, _host_tag, sweep_stale_scratch

    host = _host_tag()
    old_version = tmp_path / "embedrank-float32-0123.rows"  # an older embedrank's file: never locked
    other_host = tmp_path / "embedrank-float32-otherhost-0123.lk.rows"
    young = tmp_path / f".embedrank-float32-{host}-0123.lk.rows.new"
    stale = tmp_path / f"embedrank-float32-{host}-0123.lk.rows"
    for path in (old_version, other_host, young, stale):
        path.write_bytes(b"x")
    os.mkfifo(tmp_path / f"embedrank-float32-{host}-fifo.lk.rows")  # must not block the sweep
    assert sweep_stale_scratch(tmp_path) == [stale]
    assert old_version.exists() and other_host.exists() and young.exists()
    os.utime(young, (time.time() - 3600, time.time() - 3600))
    assert sweep_stale_scratch(tmp_path) == [young]
    rows = ScratchRows(tmp_path, "float32", np.float32, 4, 10)
    assert rows.path.name.endswith(".lk.rows") and sweep_stale_scratch(tmp_path) == []  # locked: kept
    rows.close()
    assert not rows.path.exists()


def test_a_manifest_cannot_choose_where_scratch_files_go(tmp_path):
    import json

    from embedrank.index.storage import CHECKSUM_FIELD, manifest_checksum

    index = FlatIndex(8, "binary", "float32", on_disk=("float32",))
    index.add(np.eye(8, dtype=np.float32))
    path = index.save(tmp_path / "ix")
    manifest_file = path / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["config"]["scratch_dir"] = str(tmp_path)  # a crafted file, checksum recomputed
    manifest[CHECKSUM_FIELD] = manifest_checksum(manifest)
    manifest_file.write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match=r"unknown FlatIndex config keys \['scratch_dir'\]"):
        load_index(path)


def test_a_compaction_without_disk_is_postponed_and_the_remove_stands(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    base = clustered(1000, 16, seed=18)
    index = FlatIndex(16, "binary", "float32", oversample=30, on_disk=("float32",), scratch_dir=scratch)
    index.add(base)
    for name in scratch_files(scratch):
        (scratch / name).unlink()  # the open mapping keeps the data; new scratch files cannot be made
    scratch.rmdir()
    with pytest.warns(ResourceWarning, match="compaction postponed"):
        index.remove(list(range(500)))  # past compact_threshold
    assert len(index) == 500 and 3 not in index
    assert index.search(base[600], 1).ids[0, 0] == 600
