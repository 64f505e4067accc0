"""embedrank.models.cache.EmbeddingCache: round trips, namespaces, processes, LRU, corruption, threads, bad input."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from embedrank.models.cache import DB_FILENAME, ROW_OVERHEAD, EmbeddingCache, default_cache_dir

SETTINGS = {"variant": "fp32", "max_seq_length": 256, "pooling": "mean", "normalize": True, "truncate_dim": None}
NS = EmbeddingCache.namespace("model-fingerprint-1", SETTINGS)


def vec(text: str, dim: int = 8) -> np.ndarray:
    """A deterministic float32 vector per text (no NaNs, so array_equal works)."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "cache.sqlite3"


@pytest.fixture
def cache(db):
    with EmbeddingCache(db) as c:
        yield c


def raw_connect(path) -> closing:
    return closing(sqlite3.connect(str(path), timeout=30))


def run_child(script: str, *args, cwd) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
                            capture_output=True, text=True, timeout=60, cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


# -- round trips -------------------------------------------------------------------------
@pytest.mark.parametrize("dtype, shape", [
    (np.float32, (384,)),
    (np.int8, (384,)),
    (np.uint8, (48,)),
    (np.float16, (2, 3)),
])
def test_round_trip_keeps_values_dtype_and_shape(cache, dtype, shape):
    rng = np.random.default_rng(0)
    texts = ["first text", "second", "", "ünïcödé ✓"]
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        vectors = rng.integers(info.min, info.max, size=(len(texts), *shape), endpoint=True).astype(dtype)
    else:
        vectors = rng.standard_normal((len(texts), *shape)).astype(dtype)
    cache.put_many(NS, texts, vectors)
    got = cache.get_many(NS, texts)
    assert len(got) == len(texts)
    for expected, value in zip(vectors, got):
        assert value is not None
        assert value.dtype == np.dtype(dtype)
        assert value.shape == shape
        np.testing.assert_array_equal(value, expected)
        assert value.flags.writeable
    assert cache.stats["hits"] == len(texts)
    assert len(cache) == len(texts)


def test_put_many_accepts_a_list_of_arrays_of_different_shapes(cache):
    a, b = np.arange(3, dtype=np.int8), np.arange(5, dtype=np.float32)
    cache.put_many(NS, ["a", "b"], [a, b])
    got_a, got_b = cache.get_many(NS, ["a", "b"])
    np.testing.assert_array_equal(got_a, a)
    np.testing.assert_array_equal(got_b, b)
    assert got_a.dtype == np.int8 and got_b.dtype == np.float32


def test_misses_are_none_in_order(cache):
    cache.put_many(NS, ["b", "d"], np.stack([vec("b"), vec("d")]))
    got = cache.get_many(NS, ["a", "b", "c", "d", "e"])
    assert [g is None for g in got] == [True, False, True, False, True]
    np.testing.assert_array_equal(got[1], vec("b"))
    np.testing.assert_array_equal(got[3], vec("d"))
    assert cache.stats["hits"] == 2 and cache.stats["misses"] == 3
    assert cache.get_many(NS, []) == []


def test_repeated_texts(cache):
    cache.put_many(NS, ["x", "y", "x"], np.stack([vec("old"), vec("y"), vec("new")]))
    assert len(cache) == 2
    got = cache.get_many(NS, ["x", "x", "y"])
    np.testing.assert_array_equal(got[0], vec("new"))  # the last vector for a repeated text wins
    np.testing.assert_array_equal(got[1], vec("new"))
    assert got[0] is not got[1]  # each position gets its own array
    got[0][:] = 0
    assert not np.array_equal(got[1], got[0])


def test_overwrite_and_clear_keep_total_bytes_right(cache):
    cache.put_many(NS, ["a"], np.zeros((1, 8), np.float32))
    assert cache.total_bytes == 32 + ROW_OVERHEAD
    cache.put_many(NS, ["a"], np.zeros((1, 100), np.float32))
    assert len(cache) == 1
    assert cache.total_bytes == 400 + ROW_OVERHEAD
    assert cache.get_many(NS, ["a"])[0].shape == (100,)
    cache.put_many(NS, ["b", "c"], np.zeros((2, 4), np.int8))
    assert cache.total_bytes == 400 + 2 * 4 + 3 * ROW_OVERHEAD
    cache.clear()
    assert len(cache) == 0 and cache.total_bytes == 0
    assert cache.get_many(NS, ["a", "b"]) == [None, None]


def test_more_texts_than_sqlite_variables_in_one_call(cache):
    # More texts than SQLite's host-parameter limit: the IN (...) lists must be chunked.
    if hasattr(cache._conn, "setlimit"):  # Python >= 3.11: use the old default limit, 999
        cache._conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
        assert cache._conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) == 999
        n = 2500
    else:  # above the default limit of SQLite >= 3.32 (32766)
        n = 40_000
    texts = [f"t{i}" for i in range(n)]
    vectors = np.arange(len(texts), dtype=np.int32).reshape(-1, 1)
    cache.put_many(NS, texts, vectors)
    got = cache.get_many(NS, texts)
    assert all(g is not None and int(g[0]) == i for i, g in enumerate(got))


# -- namespaces --------------------------------------------------------------------------
def test_namespace_is_stable_and_separates_every_setting(cache):
    again = EmbeddingCache.namespace("model-fingerprint-1", dict(reversed(list(SETTINGS.items()))))
    assert again == NS  # key order does not matter
    assert len(NS) == 64 and int(NS, 16) >= 0
    others = {
        EmbeddingCache.namespace("model-fingerprint-2", SETTINGS),
        *(EmbeddingCache.namespace("model-fingerprint-1", {**SETTINGS, name: value})
          for name, value in [("truncate_dim", 128), ("truncate_dim", 64), ("normalize", False),
                              ("pooling", "cls"), ("max_seq_length", 512), ("variant", "int8"),
                              ("precision", "float32")]),
    }
    assert NS not in others and len(others) == 8

    cache.put_many(NS, ["hello"], vec("hello")[None])
    truncated = EmbeddingCache.namespace("model-fingerprint-1", {**SETTINGS, "truncate_dim": 4})
    assert cache.get_many(truncated, ["hello"]) == [None]
    assert cache.get_many(NS, ["hello"])[0] is not None


def test_namespace_accepts_numpy_scalars_like_python_numbers():
    assert (EmbeddingCache.namespace("fp", {"truncate_dim": np.int64(64)})
            == EmbeddingCache.namespace("fp", {"truncate_dim": 64}))


def test_namespace_bad_input():
    with pytest.raises(ValueError, match="fingerprint"):
        EmbeddingCache.namespace("", SETTINGS)
    with pytest.raises(TypeError, match="fingerprint"):
        EmbeddingCache.namespace(None, SETTINGS)
    with pytest.raises(TypeError, match="settings"):
        EmbeddingCache.namespace("fp", [("a", 1)])
    with pytest.raises(TypeError, match="JSON"):
        EmbeddingCache.namespace("fp", {"x": object()})
    with pytest.raises(ValueError, match="finite"):
        EmbeddingCache.namespace("fp", {"x": float("nan")})


# -- paths -------------------------------------------------------------------------------
def test_default_and_directory_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDRANK_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "explicit"
    with EmbeddingCache() as c:
        assert c.path == tmp_path / "explicit" / DB_FILENAME
    assert (tmp_path / "explicit" / DB_FILENAME).is_file()

    monkeypatch.delenv("EMBEDRANK_CACHE_DIR")
    assert default_cache_dir() == tmp_path / "xdg" / "embedrank"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "embedrank"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "embedrank"

    folder = tmp_path / "folder"
    folder.mkdir()
    with EmbeddingCache(folder) as c:
        assert c.path == folder / DB_FILENAME
    with EmbeddingCache(str(tmp_path / "new" / "deeper") + os.sep) as c:
        assert c.path == tmp_path / "new" / "deeper" / DB_FILENAME


# -- processes ---------------------------------------------------------------------------
WRITER = """
    import sys
    import numpy as np
    from embedrank.models.cache import EmbeddingCache
    path, ns = sys.argv[1], sys.argv[2]
    with EmbeddingCache(path) as c:
        c.put_many(ns, ["from child", "second"], np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int8))
"""


def test_persists_across_processes(db, tmp_path):
    run_child(WRITER, db, NS, cwd=tmp_path)
    with EmbeddingCache(db) as c:
        got = c.get_many(NS, ["from child", "second", "never written"])
    np.testing.assert_array_equal(got[0], np.array([1, 2, 3], np.int8))
    np.testing.assert_array_equal(got[1], np.array([4, 5, 6], np.int8))
    assert got[0].dtype == np.int8 and got[2] is None


CONCURRENT_WRITER = """
    import hashlib, sys, time
    from pathlib import Path
    import numpy as np
    from embedrank.models.cache import EmbeddingCache

    def vec(text, dim=8):
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)

    path, ns, name, folder = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])
    with EmbeddingCache(path) as c:
        (folder / f"ready-{name}").touch()
        deadline = time.monotonic() + 30
        while not (folder / "go").exists():
            assert time.monotonic() < deadline, "never told to go"
            time.sleep(0.005)
        for batch in range(40):
            texts = [f"{name}-{batch}-{i}" for i in range(25)]
            c.put_many(ns, texts, np.stack([vec(t) for t in texts]))
            got = c.get_many(ns, texts + ["shared"])
            assert all(g is not None for g in got[:-1]), batch
            c.put_many(ns, ["shared"], vec("shared")[None])
"""


def write_batches(c: EmbeddingCache, name: str):
    for batch in range(40):
        texts = [f"{name}-{batch}-{i}" for i in range(25)]
        c.put_many(NS, texts, np.stack([vec(t) for t in texts]))
        got = c.get_many(NS, texts + ["shared"])
        assert all(g is not None for g in got[:-1]), batch
        c.put_many(NS, ["shared"], vec("shared")[None])


def test_concurrent_writers_in_several_processes(db, tmp_path):
    with EmbeddingCache(db) as c:  # the parent is a third writer
        children = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(CONCURRENT_WRITER),
                                      str(db), NS, name, str(tmp_path)],
                                     cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                    for name in ("child0", "child1")]
        try:
            deadline = time.monotonic() + 60
            while not all((tmp_path / f"ready-{name}").exists() for name in ("child0", "child1")):
                assert all(p.poll() is None for p in children), [p.communicate() for p in children]
                assert time.monotonic() < deadline
                time.sleep(0.01)
            (tmp_path / "go").touch()
            write_batches(c, "parent")
        finally:
            outputs = [p.communicate(timeout=60) for p in children]
        for p, (out, err) in zip(children, outputs):
            assert p.returncode == 0, out + err

        names = [f"{who}-{batch}-{i}" for who in ("parent", "child0", "child1")
                 for batch in range(40) for i in range(25)]
        got = c.get_many(NS, names + ["shared"])
        for text, value in zip(names + ["shared"], got):
            assert value is not None, text
            np.testing.assert_array_equal(value, vec(text))
        assert len(c) == len(names) + 1
        assert c.total_bytes == (len(names) + 1) * (32 + ROW_OVERHEAD)

    with raw_connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# -- LRU eviction ------------------------------------------------------------------------
ROW = 16 * 4 + ROW_OVERHEAD  # a float32[16] row


def test_lru_eviction_keeps_recently_used_rows(db):
    with EmbeddingCache(db, max_bytes=10 * ROW) as c:
        texts = [f"t{i}" for i in range(10)]
        c.put_many(NS, texts, np.stack([vec(t, 16) for t in texts]))
        assert len(c) == 10 and c.total_bytes == 10 * ROW and c.stats["evicted"] == 0
        assert all(v is not None for v in c.get_many(NS, ["t0", "t1"]))  # now the most recently used
        new = ["n0", "n1", "n2"]
        c.put_many(NS, new, np.stack([vec(t, 16) for t in new]))
        assert c.stats["evicted"] == 3
        assert c.total_bytes <= c.max_bytes
        assert len(c) == 10
        got = dict(zip(texts + new, c.get_many(NS, texts + new)))
        assert [t for t, v in got.items() if v is None] == ["t2", "t3", "t4"]
        for t in ("t0", "t1", "t5", "n2"):
            np.testing.assert_array_equal(got[t], vec(t, 16))


def test_lru_eviction_within_one_batch_keeps_its_last_rows(db):
    with EmbeddingCache(db, max_bytes=4 * ROW + ROW // 2) as c:
        texts = [f"t{i}" for i in range(10)]
        c.put_many(NS, texts, np.stack([vec(t, 16) for t in texts]))
        assert c.total_bytes == 4 * ROW <= c.max_bytes
        assert [v is not None for v in c.get_many(NS, texts)] == [False] * 6 + [True] * 4


def test_a_smaller_limit_evicts_on_open_and_oversized_rows_are_not_stored(db):
    with EmbeddingCache(db) as c:
        texts = [f"t{i}" for i in range(10)]
        c.put_many(NS, texts, np.stack([vec(t, 16) for t in texts]))
    with EmbeddingCache(db, max_bytes=3 * ROW) as c:
        assert len(c) == 3 and c.total_bytes == 3 * ROW
        assert [v is not None for v in c.get_many(NS, texts)] == [False] * 7 + [True] * 3
        c.put_many(NS, ["huge"], np.zeros((1, 1000), np.float32))  # 4000 bytes > max_bytes
        assert c.get_many(NS, ["huge"]) == [None]
        assert len(c) == 3  # and nothing was evicted for it


# -- corruption --------------------------------------------------------------------------
def _flip_data(conn, key, other_key):
    (data,) = conn.execute("SELECT data FROM embeddings WHERE key = ?", (key,)).fetchone()
    data = bytearray(data)
    data[5] ^= 0x10
    conn.execute("UPDATE embeddings SET data = ? WHERE key = ?", (bytes(data), key))


def _change_dtype(conn, key, other_key):
    conn.execute("UPDATE embeddings SET dtype = '<i4' WHERE key = ?", (key,))


def _change_shape(conn, key, other_key):
    conn.execute("UPDATE embeddings SET shape = '2,4' WHERE key = ?", (key,))


def _change_checksum(conn, key, other_key):
    conn.execute("UPDATE embeddings SET checksum = zeroblob(32) WHERE key = ?", (key,))


def _copy_other_row(conn, key, other_key):
    # A whole, self-consistent row moved under another key (the checksum covers the key).
    conn.execute("UPDATE embeddings SET (dtype, shape, data, checksum) = "
                 "(SELECT dtype, shape, data, checksum FROM embeddings WHERE key = ?) WHERE key = ?",
                 (other_key, key))


def _truncate_data(conn, key, other_key):
    conn.execute("UPDATE embeddings SET data = substr(data, 1, 7) WHERE key = ?", (key,))


@pytest.mark.parametrize("damage", [_flip_data, _change_dtype, _change_shape, _change_checksum,
                                    _copy_other_row, _truncate_data])
def test_a_corrupt_row_is_never_returned_and_is_deleted(db, damage):
    with EmbeddingCache(db) as c:
        c.put_many(NS, ["good", "bad"], np.stack([vec("good"), vec("bad")]))
        before = c.total_bytes
    key, other = EmbeddingCache.key(NS, "bad"), EmbeddingCache.key(NS, "good")
    with raw_connect(db) as conn:
        damage(conn, key, other)
        conn.commit()
    with EmbeddingCache(db) as c:
        got = c.get_many(NS, ["good", "bad"])
        np.testing.assert_array_equal(got[0], vec("good"))
        assert got[1] is None
        assert c.stats["corrupt"] == 1 and c.stats["misses"] == 1 and c.stats["hits"] == 1
        assert len(c) == 1
        assert c.total_bytes == before - (32 + ROW_OVERHEAD)
        c.put_many(NS, ["bad"], vec("bad")[None])  # recomputed and stored again
        np.testing.assert_array_equal(c.get_many(NS, ["bad"])[0], vec("bad"))
        assert c.stats["corrupt"] == 1
    with raw_connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM embeddings WHERE key = ?", (key,)).fetchone()[0] == 1


# -- threads and fork ----------------------------------------------------------------------
def test_threads_share_one_cache(cache):
    n_threads, errors = 8, []
    barrier = threading.Barrier(n_threads)

    def work(t: int):
        try:
            barrier.wait()
            for it in range(30):
                mine = [f"thread{t}-{it}-{i}" for i in range(5)]
                cache.put_many(NS, mine + ["shared"], np.stack([vec(x) for x in mine + ["shared"]]))
                got = cache.get_many(NS, mine + ["shared", f"thread{(t + 1) % n_threads}-{it}-0"])
                for text, value in zip(mine + ["shared"], got):
                    assert value is not None, text
                    np.testing.assert_array_equal(value, vec(text))
                assert len(cache) > 0 and cache.total_bytes > 0
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors[:3]
    assert len(cache) == n_threads * 30 * 5 + 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_its_own_connection_and_lock(cache):
    cache.put_many(NS, ["before fork"], vec("before fork")[None])
    # Fork while the cache's lock is held (as when another thread is mid-call): the child must
    # not inherit the held lock nor use the parent's SQLite connection.
    with cache._lock:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            code = 1
            try:
                cache.put_many(NS, ["from forked child"], vec("from forked child")[None])
                ok = np.array_equal(cache.get_many(NS, ["before fork"])[0], vec("before fork"))
                cache.close()
                code = 0 if ok else 2
            finally:
                os._exit(code)
    deadline = time.monotonic() + 20
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung (inherited lock?)")
        time.sleep(0.01)
    assert os.waitstatus_to_exitcode(status) == 0
    np.testing.assert_array_equal(cache.get_many(NS, ["from forked child"])[0], vec("from forked child"))


# -- bad input ---------------------------------------------------------------------------
def test_parent_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("in the way")
    with pytest.raises(OSError, match="afile"):
        EmbeddingCache(blocker / "sub" / "cache.sqlite3")


def test_a_file_that_is_not_sqlite(tmp_path):
    path = tmp_path / "notes.txt"
    content = b"these are not the bytes of an SQLite database\n" * 200
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"notes\.txt is not an embedrank cache database"):
        EmbeddingCache(path)
    assert path.read_bytes() == content  # left alone


def test_an_sqlite_database_of_something_else(tmp_path):
    path = tmp_path / "other.db"
    with raw_connect(path) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
        conn.commit()
    with pytest.raises(ValueError, match=r"other\.db is not an embedrank cache database"):
        EmbeddingCache(path)
    with raw_connect(path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    assert tables == ["users"]


def test_a_newer_schema_version(db):
    EmbeddingCache(db).close()
    with raw_connect(db) as conn:
        conn.execute("UPDATE meta SET value = 99 WHERE name = 'schema_version'")
        conn.commit()
    with pytest.raises(ValueError, match="schema version 99"):
        EmbeddingCache(db)


@pytest.mark.parametrize("max_bytes, error", [(0, ValueError), (-1, ValueError), ("1", TypeError),
                                              (True, TypeError), (1.5, TypeError)])
def test_bad_max_bytes(db, max_bytes, error):
    with pytest.raises(error, match="max_bytes"):
        EmbeddingCache(db, max_bytes=max_bytes)


def test_bad_texts_and_vectors(cache):
    with pytest.raises(ValueError, match="2 texts but 3 vectors"):
        cache.put_many(NS, ["a", "b"], np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match="one row"):
        cache.put_many(NS, ["a"], np.zeros(4, np.float32))
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        cache.put_many(NS, ["a", b"bytes"], np.zeros((2, 4), np.float32))
    with pytest.raises(TypeError, match=r"texts\[2\]"):
        cache.get_many(NS, ["a", "b", None])
    with pytest.raises(TypeError, match="single str"):
        cache.get_many(NS, "abc")
    with pytest.raises(TypeError, match="namespace"):
        cache.get_many(None, ["a"])
    with pytest.raises(TypeError, match="dtype"):
        cache.put_many(NS, ["a"], np.array([[object()]], dtype=object))
    assert len(cache) == 0  # nothing half-written


def test_a_closed_cache_refuses_calls(db):
    c = EmbeddingCache(db)
    c.close()
    c.close()  # idempotent
    assert c.closed
    with pytest.raises(ValueError, match="closed"):
        c.get_many(NS, ["a"])
    with pytest.raises(ValueError, match="closed"):
        c.put_many(NS, ["a"], np.zeros((1, 2), np.float32))


def test_keys_of_namespaces_holding_nul_bytes_do_not_collide(cache):
    # with the namespace and text joined by a NUL, ("a\0b", "c") and ("a", "b\0c") hashed the same bytes
    assert EmbeddingCache.key("a\x00b", "c") != EmbeddingCache.key("a", "b\x00c")
    assert EmbeddingCache.key("", "\x00x") != EmbeddingCache.key("\x00", "x")
    cache.put("a\x00b", "c", vec("first"))
    cache.put("a", "b\x00c", vec("second"))
    np.testing.assert_array_equal(cache.get("a\x00b", "c"), vec("first"))
    np.testing.assert_array_equal(cache.get("a", "b\x00c"), vec("second"))
