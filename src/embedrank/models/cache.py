"""A persistent, content-addressed embedding cache in SQLite.

Rows are keyed by ``sha256(KEY_PREFIX + sha256(namespace) + text)``, where the namespace
(:meth:`EmbeddingCache.namespace`) hashes the model fingerprint and every setting that
changes a vector. The namespace enters the key as its own fixed-length digest, so no
(namespace, text) pair can produce another pair's input bytes, whatever characters (NUL
included) either holds. Caches written before this key layout (``sha256(namespace + "\\x00"
+ text)``, which let namespace "a\\x00b" with text "c" collide with namespace "a" and text
"b\\x00c") keep their file and schema: their rows are simply never hit again and age out
through the size limit's LRU eviction; the schema version is unchanged so that such a file
still opens. Each row keeps the vector's dtype, shape and bytes plus a checksum; a
row whose checksum does not match is deleted and reported as a miss, never returned.

The database uses WAL mode and a busy timeout, so several processes (and several threads
sharing one :class:`EmbeddingCache`) can read and write it at once. A size limit is kept
by evicting the least recently used rows after each write.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from embedrank.errors import InvalidTypeError, InvalidValueError, MissingFileError

__all__ = ["EmbeddingCache", "default_cache_dir", "DB_FILENAME"]

DB_FILENAME = "embeddings.sqlite3"
SCHEMA_VERSION = 1
# Starts every key's hashed bytes; it names the key layout, so a later layout cannot
# produce this one's keys.
KEY_PREFIX = b"embedrank-cache-key-2\x00"
# Counted per row on top of the vector bytes: key, checksum, dtype/shape text, integers
# and SQLite's record and index overhead (approximate; the file itself is somewhat larger
# because of page slack, the free list and the WAL).
ROW_OVERHEAD = 128
_BUSY_TIMEOUT_S = 30.0
# Keep every statement under SQLite's host-parameter limit (999 before SQLite 3.32).
_CHUNK = 500
_NAMESPACE_TAG = "embedrank-cache-v1"
_MIN_SQLITE = (3, 24, 0)
_VECTOR_KINDS = "biuf"  # bool, signed / unsigned integers, floats

# Connections inherited across fork() must never be used or closed by the child; they are
# parked here so that garbage collection does not finalize them either.
_ABANDONED_AFTER_FORK: list[sqlite3.Connection] = []

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (name, value) VALUES ('schema_version', {SCHEMA_VERSION});
INSERT OR IGNORE INTO meta (name, value) VALUES ('total_bytes', 0);
INSERT OR IGNORE INTO meta (name, value) VALUES ('clock', 0);
CREATE TABLE IF NOT EXISTS embeddings (
    id          INTEGER PRIMARY KEY,
    key         BLOB NOT NULL UNIQUE,
    dtype       TEXT NOT NULL,
    shape       TEXT NOT NULL,
    data        BLOB NOT NULL,
    checksum    BLOB NOT NULL,
    nbytes      INTEGER NOT NULL,
    last_access INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS embeddings_last_access ON embeddings (last_access);
CREATE TRIGGER IF NOT EXISTS embeddings_bytes_insert AFTER INSERT ON embeddings BEGIN
    UPDATE meta SET value = value + NEW.nbytes WHERE name = 'total_bytes';
END;
CREATE TRIGGER IF NOT EXISTS embeddings_bytes_delete AFTER DELETE ON embeddings BEGIN
    UPDATE meta SET value = value - OLD.nbytes WHERE name = 'total_bytes';
END;
CREATE TRIGGER IF NOT EXISTS embeddings_bytes_update AFTER UPDATE OF nbytes ON embeddings BEGIN
    UPDATE meta SET value = value - OLD.nbytes + NEW.nbytes WHERE name = 'total_bytes';
END;
"""


def default_cache_dir() -> Path:
    """$EMBEDRANK_CACHE_DIR, else $XDG_CACHE_HOME/embedrank, else ~/.cache/embedrank."""
    explicit = os.environ.get("EMBEDRANK_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):  # the XDG spec says to ignore relative paths
        return Path(xdg) / "embedrank"
    return Path.home() / ".cache" / "embedrank"


def _resolve_path(path) -> Path:
    if path is None:
        return default_cache_dir() / DB_FILENAME
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidTypeError(f"cache path must be a str, os.PathLike or None, got {type(path).__name__}")
    raw = os.fspath(path)
    if isinstance(raw, bytes):
        raw = os.fsdecode(raw)
    if not raw:
        raise InvalidValueError("cache path must not be empty")
    resolved = Path(raw).expanduser()
    if resolved.is_dir() or raw.endswith(("/", os.sep)):
        return resolved / DB_FILENAME
    return resolved


def _encode_text(text: str) -> bytes:
    # surrogatepass: every Python str hashes, even one holding lone surrogates.
    return text.encode("utf-8", "surrogatepass")


def _checksum(key: bytes, dtype: str, shape: str, data: bytes) -> bytes:
    h = hashlib.blake2b(digest_size=32)
    for part in (key, dtype.encode("ascii"), shape.encode("ascii")):
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    h.update(data)
    return h.digest()


def _chunks(items: list, size: int = _CHUNK):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _check_texts(texts) -> list[str]:
    if isinstance(texts, (str, bytes)):
        raise InvalidTypeError(f"texts must be a sequence of str, not a single {type(texts).__name__}")
    if not isinstance(texts, Sequence) and not isinstance(texts, np.ndarray):
        raise InvalidTypeError(f"texts must be a sequence of str, got {type(texts).__name__}")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidTypeError(f"texts[{i}] must be a str, got {type(text).__name__}")
    return texts


def _check_namespace(namespace) -> None:
    if not isinstance(namespace, str):
        raise InvalidTypeError(f"namespace must be a str (see EmbeddingCache.namespace), got {type(namespace).__name__}")


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise InvalidTypeError(f"cache settings hold a value that is not JSON-serializable: {value!r} ({type(value).__name__})")


class EmbeddingCache:
    """Vectors stored by (namespace, text) in an SQLite file, with LRU eviction.

    ``path``: the database file, a directory to put ``embeddings.sqlite3`` in, or None for
    the user cache directory (see :func:`default_cache_dir`). ``max_bytes``: the size limit
    (vector bytes plus :data:`ROW_OVERHEAD` per row); least recently used rows are evicted
    after each write that goes over it.

    One instance may be shared by several threads; several processes may open the same file.
    """

    def __init__(self, path: str | os.PathLike | None = None, max_bytes: int = 1 << 30):
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)):
            raise InvalidTypeError(f"max_bytes must be an integer, got {type(max_bytes).__name__}")
        if max_bytes <= 0:
            raise InvalidValueError(f"max_bytes must be positive, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.path = _resolve_path(path)
        self.stats = {"hits": 0, "misses": 0, "corrupt": 0, "evicted": 0}
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._make_parent()
        self._conn = self._connect()

    # -- opening -------------------------------------------------------------------------
    def _make_parent(self) -> None:
        parent = self.path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            code = error.errno or errno.EIO
            raise OSError(code, f"cannot create the embedrank cache directory {parent} "
                                f"({error.strerror or error})", str(parent)) from error
        if not parent.is_dir():
            raise MissingFileError(errno.ENOTDIR, f"cannot create the embedrank cache directory {parent} "
                                                    "(a file is in the way)", str(parent))
        if self.path.is_dir():
            raise IsADirectoryError(errno.EISDIR, f"embedrank cache path {self.path} is a directory",
                                    str(self.path))

    def _connect(self) -> sqlite3.Connection:
        if sqlite3.sqlite_version_info < _MIN_SQLITE:
            raise RuntimeError(f"the embedrank cache needs SQLite >= {'.'.join(map(str, _MIN_SQLITE))} "
                               f"(for upserts); this Python has {sqlite3.sqlite_version}")
        try:
            conn = sqlite3.connect(str(self.path), timeout=_BUSY_TIMEOUT_S, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.Error as error:
            raise sqlite3.OperationalError(f"cannot open the embedrank cache {self.path}: {error}") from error
        try:
            self._initialize(conn)
        except sqlite3.OperationalError as error:
            conn.close()
            raise sqlite3.OperationalError(f"cannot open the embedrank cache {self.path}: {error}") from error
        except sqlite3.DatabaseError as error:  # SQLITE_NOTADB, SQLITE_CORRUPT, ...
            conn.close()
            raise InvalidValueError(f"{self.path} is not an embedrank cache database ({error})") from error
        except BaseException:
            conn.close()
            raise
        return conn

    def _initialize(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL").fetchone()
        conn.execute("PRAGMA synchronous = NORMAL")
        with self._transaction(conn):
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and "meta" not in tables:
                raise InvalidValueError(f"{self.path} is not an embedrank cache database "
                                 f"(it holds tables {sorted(tables)})")
            if "meta" in tables:
                row = None
                try:
                    row = conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
                except sqlite3.OperationalError:
                    pass
                if row is None:
                    raise InvalidValueError(f"{self.path} is not an embedrank cache database (no schema version)")
                if row[0] != SCHEMA_VERSION:
                    raise InvalidValueError(f"{self.path} is an embedrank cache of schema version {row[0]}; "
                                     f"this embedrank reads version {SCHEMA_VERSION}")
            for statement in _split_script(_SCHEMA):
                conn.execute(statement)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(embeddings)")}
            expected = {"id", "key", "dtype", "shape", "data", "checksum", "nbytes", "last_access"}
            if not expected <= columns:
                raise InvalidValueError(f"{self.path} is not an embedrank cache database "
                                 f"(table embeddings lacks {sorted(expected - columns)})")
            self._evict(conn)

    @staticmethod
    @contextmanager
    def _transaction(conn: sqlite3.Connection):
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _connection(self) -> sqlite3.Connection:
        """The connection for this process (caller holds self._lock)."""
        if self._closed or self._conn is None:
            raise InvalidValueError(f"the embedrank cache {self.path} is closed")
        return self._conn

    def _after_fork_check(self) -> None:
        # SQLite connections must not cross fork(): the child opens its own, and gets a fresh
        # lock (the parent's might have been held by another thread at the moment of fork).
        if self._pid != os.getpid():
            self._lock = threading.Lock()
            if self._conn is not None:
                _ABANDONED_AFTER_FORK.append(self._conn)
                self._conn = None
            if not self._closed:
                self._conn = self._connect()  # on failure, the next call tries again
            self._pid = os.getpid()

    @contextmanager
    def _locked(self):
        self._after_fork_check()
        with self._lock:
            yield self._connection()

    # -- keys ----------------------------------------------------------------------------
    @staticmethod
    def namespace(fingerprint: str, settings: dict) -> str:
        """sha256 hex of the model fingerprint and the settings (canonical JSON, sorted keys).

        ``settings`` must hold everything besides the text that changes a vector.
        """
        if not isinstance(fingerprint, str):
            raise InvalidTypeError(f"fingerprint must be a str, got {type(fingerprint).__name__}")
        if not fingerprint:
            raise InvalidValueError("fingerprint must not be empty: without one, different models would share cache rows")
        if not isinstance(settings, dict):
            raise InvalidTypeError(f"settings must be a dict, got {type(settings).__name__}")
        for name in settings:
            if not isinstance(name, str):
                raise InvalidTypeError(f"settings keys must be str, got {name!r}")
        try:
            canonical = json.dumps({"format": _NAMESPACE_TAG, "fingerprint": fingerprint, "settings": settings},
                                   sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                                   default=_json_default)
        except ValueError as error:
            raise InvalidValueError(f"cache settings must be finite JSON values: {error}") from error
        return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()

    @staticmethod
    def key(namespace: str, text: str) -> bytes:
        """The row key: sha256(KEY_PREFIX + sha256(namespace) + text), 32 bytes (see the module
        docstring: the namespace's fixed-length digest keeps keys of different namespaces apart)."""
        return hashlib.sha256(KEY_PREFIX + hashlib.sha256(_encode_text(namespace)).digest() + _encode_text(text)).digest()

    # -- reading -------------------------------------------------------------------------
    def get_many(self, namespace: str, texts: Sequence[str]) -> list[np.ndarray | None]:
        """The stored vector for each text (a new writable array), or None where there is none.

        Hits become the most recently used rows. Rows that fail their checksum are deleted
        and returned as None (counted in ``stats["corrupt"]``).
        """
        _check_namespace(namespace)
        texts = _check_texts(texts)
        if not texts:
            return []
        keys = [self.key(namespace, text) for text in texts]
        unique = list(dict.fromkeys(keys))
        found: dict[bytes, np.ndarray] = {}
        corrupt: list[bytes] = []
        with self._locked() as conn:
            for chunk in _chunks(unique):
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT key, dtype, shape, data, checksum FROM embeddings WHERE key IN ({marks})", chunk)
                for key, dtype, shape, data, checksum in rows:
                    vector = _decode(bytes(key), dtype, shape, data, checksum)
                    if vector is None:
                        corrupt.append(bytes(key))
                    else:
                        found[bytes(key)] = vector
            if found or corrupt:
                with self._transaction(conn):
                    if found:
                        stamp = self._tick(conn, 1)
                        for chunk in _chunks(list(found)):
                            marks = ",".join("?" * len(chunk))
                            conn.execute(f"UPDATE embeddings SET last_access = ? WHERE key IN ({marks})",
                                         [stamp, *chunk])
                    for chunk in _chunks(corrupt):
                        marks = ",".join("?" * len(chunk))
                        conn.execute(f"DELETE FROM embeddings WHERE key IN ({marks})", chunk)
            result: list[np.ndarray | None] = []
            seen: set[bytes] = set()
            for key in keys:
                vector = found.get(key)
                if vector is not None and key in seen:
                    vector = vector.copy()  # each position gets its own array
                seen.add(key)
                result.append(vector)
            hits = sum(v is not None for v in result)
            self.stats["hits"] += hits
            self.stats["misses"] += len(result) - hits
            self.stats["corrupt"] += len(corrupt)
        return result

    def get(self, namespace: str, text: str) -> np.ndarray | None:
        """get_many for one text."""
        if not isinstance(text, str):
            raise InvalidTypeError(f"text must be a str, got {type(text).__name__}")
        return self.get_many(namespace, [text])[0]

    # -- writing -------------------------------------------------------------------------
    def put_many(self, namespace: str, texts: Sequence[str], vectors) -> None:
        """Stores vectors[i] for texts[i] (one transaction), then evicts down to max_bytes.

        ``vectors``: an array with one row per text, or a sequence of arrays; each row keeps
        its dtype (bool, integer or float) and shape. A repeated text keeps its last vector.
        A single row larger than max_bytes is not stored.
        """
        _check_namespace(namespace)
        texts = _check_texts(texts)
        if isinstance(vectors, np.ndarray):
            if vectors.ndim < 2:
                raise InvalidValueError(f"vectors must have one row (of at least one dimension) per text; "
                                 f"got an array of shape {vectors.shape}")
            rows = list(vectors)
        elif isinstance(vectors, Sequence) and not isinstance(vectors, (str, bytes)):
            rows = list(vectors)
        else:
            raise InvalidTypeError(f"vectors must be a numpy array or a sequence of arrays, got {type(vectors).__name__}")
        if len(rows) != len(texts):
            raise InvalidValueError(f"got {len(texts)} texts but {len(rows)} vectors")
        records: dict[bytes, tuple] = {}
        for i, (text, row) in enumerate(zip(texts, rows)):
            array = np.ascontiguousarray(row)
            if array.dtype.kind not in _VECTOR_KINDS:
                raise InvalidTypeError(f"vectors[{i}] has dtype {array.dtype}; expected a bool, integer or float dtype")
            if array.ndim < 1:
                raise InvalidValueError(f"vectors[{i}] is a scalar; expected a vector")
            key = self.key(namespace, text)
            dtype = array.dtype.str
            shape = ",".join(str(n) for n in array.shape)
            data = array.tobytes()
            nbytes = len(data) + ROW_OVERHEAD
            records.pop(key, None)  # the last occurrence wins and counts as the most recent
            records[key] = (key, dtype, shape, data, _checksum(key, dtype, shape, data), nbytes)
        records = {k: r for k, r in records.items() if r[5] <= self.max_bytes}
        if not records:
            return
        with self._locked() as conn:
            with self._transaction(conn):
                start = self._tick(conn, len(records))
                conn.executemany(
                    "INSERT INTO embeddings (key, dtype, shape, data, checksum, nbytes, last_access) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET dtype = excluded.dtype, shape = excluded.shape, "
                    "data = excluded.data, checksum = excluded.checksum, nbytes = excluded.nbytes, "
                    "last_access = excluded.last_access",
                    [(*record, start + i) for i, record in enumerate(records.values())])
                self._evict(conn)

    def put(self, namespace: str, text: str, vector) -> None:
        """put_many for one text."""
        if not isinstance(text, str):
            raise InvalidTypeError(f"text must be a str, got {type(text).__name__}")
        self.put_many(namespace, [text], [vector])

    @staticmethod
    def _tick(conn: sqlite3.Connection, n: int) -> int:
        """Reserves n consecutive access stamps (inside a write transaction); returns the first."""
        conn.execute("UPDATE meta SET value = value + ? WHERE name = 'clock'", (n,))
        (end,) = conn.execute("SELECT value FROM meta WHERE name = 'clock'").fetchone()
        return end - n + 1

    def _evict(self, conn: sqlite3.Connection) -> None:
        """Deletes least recently used rows until total_bytes <= max_bytes (inside a transaction)."""
        total = self._total_bytes(conn)
        if total <= self.max_bytes:
            return
        excess = total - self.max_bytes
        victims: list[int] = []
        freed = 0
        cursor = conn.execute("SELECT id, nbytes FROM embeddings ORDER BY last_access, id")
        try:
            for row_id, nbytes in cursor:
                victims.append(row_id)
                freed += nbytes
                if freed >= excess:
                    break
        finally:
            cursor.close()
        for chunk in _chunks(victims):
            marks = ",".join("?" * len(chunk))
            conn.execute(f"DELETE FROM embeddings WHERE id IN ({marks})", chunk)
        self.stats["evicted"] += len(victims)

    # -- housekeeping --------------------------------------------------------------------
    @staticmethod
    def _total_bytes(conn: sqlite3.Connection) -> int:
        (total,) = conn.execute("SELECT value FROM meta WHERE name = 'total_bytes'").fetchone()
        return int(total)

    @property
    def total_bytes(self) -> int:
        """Bytes counted against max_bytes: vector bytes plus ROW_OVERHEAD per row."""
        with self._locked() as conn:
            return self._total_bytes(conn)

    def __len__(self) -> int:
        with self._locked() as conn:
            (count,) = conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()
        return int(count)

    def clear(self) -> None:
        """Deletes every stored vector (of every namespace)."""
        with self._locked() as conn:
            with self._transaction(conn):
                conn.execute("DELETE FROM embeddings")
                conn.execute("UPDATE meta SET value = 0 WHERE name = 'total_bytes'")

    def close(self) -> None:
        """Closes the database connection (idempotent). The instance cannot be used afterwards."""
        if self._pid != os.getpid():  # inherited across fork(): never close the parent's connection
            if self._conn is not None:
                _ABANDONED_AFTER_FORK.append(self._conn)
            self._conn = None
            self._closed = True
            return
        with self._lock:
            conn, self._conn = self._conn, None
            self._closed = True
            if conn is not None:
                conn.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self):
        try:
            if getattr(self, "_conn", None) is not None:
                self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"max_bytes={self.max_bytes}"
        return f"EmbeddingCache({str(self.path)!r}, {state})"


def _decode(key: bytes, dtype: str, shape: str, data, checksum) -> np.ndarray | None:
    """The stored vector, or None when the row is damaged in any way."""
    try:
        data = bytes(data)
        if not isinstance(dtype, str) or not isinstance(shape, str):
            return None
        if bytes(checksum) != _checksum(key, dtype, shape, data):
            return None
        dims = tuple(int(n) for n in shape.split(",")) if shape else ()
        array = np.frombuffer(data, dtype=np.dtype(dtype))
        if array.dtype.kind not in _VECTOR_KINDS or array.size != int(np.prod(dims, dtype=np.int64)):
            return None
        return array.reshape(dims).copy()
    except (ValueError, TypeError, UnicodeError):
        return None


def _split_script(script: str) -> list[str]:
    """The statements of a script, to run one by one inside an explicit transaction."""
    statements, current = [], ""
    for line in script.strip().splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return statements
