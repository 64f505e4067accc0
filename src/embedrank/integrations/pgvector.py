"""PgVectorIndex: embedrank's index protocol on a Postgres table with pgvector columns.

    index = PgVectorIndex("postgresql://app@db/corpus", "passages", 384)    # creates the table on first add
    index.add(vectors, ids=["a", "b"], metadata=[{"lang": "en"}, {"lang": "de"}])
    index.create_index("hnsw", m=16, ef_construction=64)                     # optional: server-side ANN
    hits = index.search(query, 10, filter={"lang": "en"}, ef_search=100)     # SearchResult, best first

Needs psycopg 3 (``pip install 'embedrank[pgvector]'``) and the pgvector extension (>= 0.7,
>= 0.8 for iterative filtered scans) in the database; the index runs ``CREATE EXTENSION IF
NOT EXISTS vector`` when it creates its table.

The table (one per index; the name is a lowercase SQL identifier, always quoted with
``psycopg.sql``; every value travels as a query parameter or in COPY, never in SQL text)::

    seq      bigint GENERATED ALWAYS AS IDENTITY   -- insertion order: ids() order, ties
    id       bigint | text PRIMARY KEY             -- the kind of the first add's ids
    embedding vector(dim) | halfvec(dim)           -- absent for precision="binary", rescore=None
    bits     bit(dim)                              -- precision="binary" only: sign bits (x > 0)
    metadata jsonb                                 -- the metadata dict, or NULL

plus, for int ids, a sequence ``<table>_auto_id`` (owned by the id column) that hands out
``add(vectors)``'s automatic ids: one past the largest int id the table has held, as in the
vector indexes (a sequence is not transactional: a failed add may skip ids).

Precision (what is stored, and what a search scans first):

- ``"float32"``: ``vector``; score = the inner product ``q . x`` (pgvector's ``<#>`` is its
  negation). Exact search equals FlatIndex's to float32 rounding.
- ``"float16"``: ``halfvec`` (half the bytes); score = ``q16 . x16`` with the query rounded
  to float16 too. Values beyond +-65504 are refused.
- ``"binary"``: ``bit`` sign bits; the best ``k * oversample`` by Hamming distance (``<~>``)
  are re-ranked on the ``vector`` (``rescore="float32"``, default) or ``halfvec``
  (``rescore="float16"``) column in the same SQL query, or scored ``dim - 2 * hamming``
  (``rescore=None``, the inner product of the +-1 sign vectors, as FlatIndex).

Search: exact by default (Postgres scans the table); after ``create_index("hnsw" | "ivfflat")``
the first pass uses that index (approximate) unless ``search(..., exact=True)``. Per-call
settings: ``ef_search`` (hnsw.ef_search; max(ef_search, first-pass size) is used, at most
1000), ``probes`` (ivfflat.probes), ``oversample``, ``exact``. With pgvector >= 0.8 the
index scans are iterative (``hnsw.iterative_scan = strict_order``, ivfflat
``relaxed_order``), so a filter does not starve the results. Results are sorted best first,
ties to the vector added earlier; padding as in the vector indexes (id -1 / None, score -inf).

Filters: the same dicts as :mod:`embedrank.index.metadata` (``{"lang": "en", "year": [2020,
2021]}``: equality / in-set, AND), checked by the same code and translated to ``jsonb``
containment (``metadata @> $1``), which a GIN index (:meth:`PgVectorIndex.create_metadata_index`)
can serve; or a sequence of allowed ids. jsonb compares numbers as numbers (1 = 1.0),
never true = 1 or "1" = 1, like the SQLite store. One difference in what comes back: jsonb
keeps numbers as decimals, so a float with an exponent (1e300) is returned as an int.

Writes (add, upsert, remove) run in one transaction each, under ``LOCK TABLE ... IN SHARE ROW
EXCLUSIVE MODE`` (writers one at a time, readers never blocked); vectors travel by
``COPY ... FROM STDIN (FORMAT BINARY)`` (upserts through a temporary staging table and one
``INSERT ... ON CONFLICT``). A failure anywhere, mid-COPY included, rolls everything back.

Connections: pass a connection string (the index opens, owns and reopens its own autocommit
connection) or a psycopg ``Connection`` (used as is: every call runs in ``conn.transaction()``,
a savepoint when the connection is already inside a transaction, whose commit is then the
caller's). When the server went away between calls (a restart), a call on an owned
connection reconnects and runs as if nothing happened: reads always, writes when the failure
came before their first statement (nothing was sent). A connection lost in the middle of a
write raises ``psycopg.OperationalError`` saying that nothing was written (the transaction was
not committed), or, when it was lost during COMMIT, that the outcome is unknown. The error is
psycopg's own class (embedrank's family has no class for a lost server; a caller catching
database errors expects this one). One index object serializes its calls (one lock); several
objects or processes may share a table.

``save(path)`` writes a small index folder that names the table (connection string without
its password, schema, table, settings); ``load_index(path)`` (and a Retriever saved with a
PgVectorIndex) reconnects with it, the password coming from libpq's usual sources
(``PGPASSWORD``, ``~/.pgpass``); ``PgVectorIndex.load(path, connection=...)`` takes another.
"""

from __future__ import annotations

import functools
import hashlib
import json
import numbers
import re
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from embedrank.errors import (IndexFormatError, InvalidTypeError, InvalidValueError, MissingDependencyError,
                              UnknownIdError)
from embedrank.index.base import MAX_PADDED_K, as_queries, as_vectors, check_add_ids, check_dim, check_k
from embedrank.index.ids import normalize_ids, show_ids
from embedrank.index.io import register_index_type
from embedrank.index.metadata import compile_filter, prepare_metadata

try:
    import psycopg
    from psycopg import sql
    from psycopg.adapt import Dumper
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
    from psycopg.pq import Format
except ImportError:
    raise MissingDependencyError("embedrank.integrations.pgvector needs psycopg 3: "
                                 "pip install 'embedrank[pgvector]'") from None

from embedrank.index.result import SearchResult

__all__ = ["PgVectorIndex", "PRECISIONS", "RESCORES"]

PRECISIONS = ("float32", "float16", "binary")
RESCORES = ("float32", "float16", None)
DEFAULT_OVERSAMPLE = 10
MIN_PGVECTOR = (0, 7, 0)  # halfvec, bit <~>, bit_hamming_ops
ITERATIVE_PGVECTOR = (0, 8, 0)  # hnsw.iterative_scan / ivfflat.iterative_scan
MAX_COLUMN_DIM = 16000  # pgvector's limit for vector and halfvec
ANN_MAX_DIM = {"vector": 2000, "halfvec": 4000, "bit": 64000}  # what hnsw / ivfflat can index
MAX_EF_SEARCH = 1000  # pgvector's bound on hnsw.ef_search
FLOAT16_MAX = 65504.0
_COPY_BATCH = 4096  # rows encoded at a time inside one COPY
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*\Z")
_MAX_IDENTIFIER = 63  # Postgres cuts longer names silently
_MEMORY_SETTING = re.compile(r"\d+\s*(kB|MB|GB|TB)?\Z")
_NUL_IN_JSON = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")  # an escaped NUL, not an escaped backslash before "u0000"
_COLUMN_FOR = {"float32": "vector", "float16": "halfvec"}
_PRECISION_OF = {"vector": "float32", "halfvec": "float16"}
_OPCLASS = {"vector": "vector_ip_ops", "halfvec": "halfvec_ip_ops", "bit": "bit_hamming_ops"}
_OID_INT8, _OID_TEXT, _OID_BIT, _OID_JSONB = 20, 25, 1560, 3802
_TYPE = "PgVectorIndex"


# -- names ---------------------------------------------------------------------------------------
def check_identifier(name, what: str) -> str:
    """`name` if it is a lowercase SQL identifier (a-z, 0-9, _; not starting with a digit; at most 63
    characters), else InvalidValueError / InvalidTypeError. Quoting keeps it exact either way; the rule
    keeps it a name people can type unquoted in psql."""
    if not isinstance(name, str):
        raise InvalidTypeError(f"{what} must be a str, got {type(name).__name__} ({name!r})")
    if not _IDENTIFIER.match(name) or len(name) > _MAX_IDENTIFIER:
        raise InvalidValueError(f"{what} must be a lowercase SQL identifier (a-z, 0-9 and _, not starting with a "
                                f"digit, at most {_MAX_IDENTIFIER} characters), got {name!r}")
    return name


def _derived_name(table: str, suffix: str) -> str:
    """`table`_`suffix`, shortened with a hash when it would pass Postgres' 63-character limit."""
    name = f"{table}_{suffix}"
    if len(name) <= _MAX_IDENTIFIER:
        return name
    digest = hashlib.sha256(table.encode()).hexdigest()[:8]
    return f"{table[: _MAX_IDENTIFIER - len(suffix) - 10]}_{digest}_{suffix}"


def _version(text: str | None) -> tuple[int, ...]:
    parts = re.findall(r"\d+", text or "")
    return tuple(int(p) for p in parts[:3]) or (0,)


def _show_version(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def _positive(value, name: str, maximum: int | None = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise InvalidTypeError(f"{name} must be an integer, got {type(value).__name__} ({value!r})")
    if value < 1 or (maximum is not None and value > maximum):
        bound = ">= 1" if maximum is None else f"in [1, {maximum}]"
        raise InvalidValueError(f"{name} must be {bound}, got {int(value)}")
    return int(value)


def _without_password(conninfo: str) -> str:
    params = conninfo_to_dict(conninfo)
    params.pop("password", None)
    return make_conninfo(**params)


# -- binary encodings (COPY and query parameters) ------------------------------------------------
class _Raw(Dumper):
    """Passes bytes already in Postgres' binary input format of the column's type."""

    format = Format.BINARY

    def dump(self, obj):
        return obj


class _EmbeddingParam(bytes):
    """A query vector encoded for the embedding column's type."""


class _BitsParam(bytes):
    """Query sign bits encoded as ``bit``."""


@functools.lru_cache(maxsize=None)
def _raw_dumper(oid: int) -> type[Dumper]:
    return type(f"_Raw{oid}", (_Raw,), {"oid": oid})


def encode_vectors(x: np.ndarray, column: str) -> np.ndarray:
    """Rows [n, dim] float32 -> uint8 [n, 4 + width * dim]: pgvector's binary input (uint16 dim,
    uint16 0, then the values big-endian, float32 for ``vector``, float16 for ``halfvec``)."""
    n, dim = x.shape
    dtype = ">f4" if column == "vector" else ">f2"
    width = np.dtype(dtype).itemsize
    out = np.empty((n, 4 + width * dim), dtype=np.uint8)
    out[:, :4] = np.frombuffer(struct.pack(">HH", dim, 0), dtype=np.uint8)
    out[:, 4:] = np.ascontiguousarray(x.astype(dtype)).view(np.uint8).reshape(n, width * dim)
    return out


def encode_bits(x: np.ndarray) -> np.ndarray:
    """Rows [n, dim] -> uint8 [n, 4 + ceil(dim / 8)]: ``bit(dim)`` binary input (int32 length, then
    the bits most significant first), bit set where x > 0 (as pgvector's binary_quantize)."""
    n, dim = x.shape
    packed = np.packbits(x > 0, axis=1)
    out = np.empty((n, 4 + packed.shape[1]), dtype=np.uint8)
    out[:, :4] = np.frombuffer(struct.pack(">i", dim), dtype=np.uint8)
    out[:, 4:] = packed
    return out


def _rows_of(encoded: np.ndarray) -> list[bytes]:
    blob = encoded.tobytes()
    width = encoded.shape[1]
    return [blob[i: i + width] for i in range(0, len(blob), width)]


def _check_float16(x: np.ndarray, name: str) -> None:
    too_big = np.abs(x) > FLOAT16_MAX
    if too_big.any():
        row, column = np.argwhere(too_big)[0]
        raise InvalidValueError(f"{name} hold values beyond float16's range (+-{FLOAT16_MAX:g}; first at row {int(row)}, "
                                f"column {int(column)}): a halfvec column cannot store them")


def _jsonb_rows(prepared, n: int) -> list[bytes | None]:
    """Prepared metadata (see prepare_metadata) -> jsonb binary input (version 1, then the JSON)."""
    if prepared is None:
        return [None] * n
    out: list[bytes | None] = []
    for position, item in enumerate(prepared):
        if item is None:
            out.append(None)
            continue
        if _NUL_IN_JSON.search(item[0]):
            raise InvalidValueError(f"metadata[{position}] holds a NUL character (\\u0000), which Postgres jsonb "
                                    "cannot store")
        out.append(b"\x01" + item[0].encode("utf-8"))
    return out


# -- the table's layout --------------------------------------------------------------------------
@dataclass(frozen=True)
class _Layout:
    """What an existing table holds, read from the catalog."""

    id_kind: str  # "int" (bigint) or "str" (text)
    dim: int
    embedding: str | None  # "vector", "halfvec" or None
    bits: bool
    embedding_oid: int

    @property
    def precision(self) -> str:
        return "binary" if self.bits else _PRECISION_OF[self.embedding]

    @property
    def rescore(self) -> str | None:
        if not self.bits:
            return None
        return None if self.embedding is None else _PRECISION_OF[self.embedding]


_LAYOUT_SQL = """
SELECT c.relkind, a.attname, t.typname, a.atttypmod, a.atttypid, a.attidentity, a.attnotnull
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_type t ON t.oid = a.atttypid
WHERE n.nspname = %s AND c.relname = %s
ORDER BY a.attnum
"""


def _parse_layout(rows: list[tuple], where: str) -> _Layout | None:
    if not rows:
        return None
    if rows[0][0] not in ("r", "p"):
        raise IndexFormatError(f"{where} exists and is not a table (relkind {rows[0][0]!r})")
    columns = {name: (typname, typmod, typoid, identity, notnull) for _, name, typname, typmod, typoid, identity, notnull
               in rows if name is not None}

    def refuse(reason: str):
        shown = ", ".join(f"{name} {spec[0]}" for name, spec in columns.items())
        return IndexFormatError(f"{where} is not a PgVectorIndex table ({reason}; its columns: {shown})")

    expected = {"seq", "id", "metadata"}
    extra = set(columns) - expected - {"embedding", "bits"}
    if not expected <= set(columns) or extra or not ({"embedding", "bits"} & set(columns)):
        raise refuse("expected columns seq, id, embedding and/or bits, metadata")
    if columns["seq"][0] != "int8" or columns["seq"][3] not in ("a", "d"):
        raise refuse("seq must be a bigint identity column")
    if columns["id"][0] not in ("int8", "text"):
        raise refuse("id must be bigint or text")
    if columns["metadata"][0] != "jsonb":
        raise refuse("metadata must be jsonb")
    dims = set()
    embedding = None
    if "embedding" in columns:
        embedding = columns["embedding"][0]
        if embedding not in ("vector", "halfvec"):
            raise refuse("embedding must be vector or halfvec")
        dims.add(columns["embedding"][1])
    if "bits" in columns:
        if columns["bits"][0] != "bit":
            raise refuse("bits must be bit(dim)")
        dims.add(columns["bits"][1])
    if len(dims) != 1 or min(dims) < 1:
        raise refuse("the vector columns must have one declared dimension")
    return _Layout(id_kind="int" if columns["id"][0] == "int8" else "str", dim=dims.pop(), embedding=embedding,
                   bits="bits" in columns, embedding_oid=columns["embedding"][2] if embedding else 0)


# -- the index -----------------------------------------------------------------------------------
class PgVectorIndex:
    """embedrank's index protocol on a Postgres table (see the module docstring).

    connection: a libpq connection string / URI (the index owns its connection and reopens it
    after a server restart) or a psycopg ``Connection`` (used as is). table: a lowercase SQL
    identifier; the table is created on the first add (or at once when ``id_kind`` is given),
    or opened when it exists (its columns must be a PgVectorIndex layout; a table of another
    dimension or precision is refused). dim: the vector dimension (None: read it from the
    existing table). precision: "float32" (vector), "float16" (halfvec) or "binary" (bit);
    rescore: for "binary", the column re-ranking the Hamming candidates: "float32" (default),
    "float16" or None. oversample: Hamming candidates per result (default 10). schema: the
    table's schema (None: the connection's current_schema()). id_kind: "int" or "str" to
    create the table now; None lets the first add decide (as the vector indexes do).
    ef_search / probes: default search settings for an hnsw / ivfflat index (pgvector's
    defaults: 40 and 1; ivfflat wants about sqrt(lists)).
    """

    def __init__(self, connection, table: str, dim: int | None = None, *, precision: str | None = None,
                 rescore: str | None = "float32", oversample: int | None = None, schema: str | None = None,
                 id_kind: str | None = None, ef_search: int = 40, probes: int = 1) -> None:
        self._table = check_identifier(table, "table")
        self._schema = None if schema is None else check_identifier(schema, "schema")
        if dim is not None:
            dim = check_dim(dim)
        if precision is not None and precision not in PRECISIONS:
            raise InvalidValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if rescore not in RESCORES:
            raise InvalidValueError(f"rescore must be one of {RESCORES}, got {rescore!r}")
        if id_kind not in (None, "int", "str"):
            raise InvalidValueError(f"id_kind must be 'int', 'str' or None, got {id_kind!r}")
        self.ef_search = _positive(ef_search, "ef_search", MAX_EF_SEARCH)
        self.probes = _positive(probes, "probes")
        self.oversample = DEFAULT_OVERSAMPLE if oversample is None else _positive(oversample, "oversample")
        if isinstance(connection, str):
            self._conninfo: str | None = connection
            self._conn = None
        elif isinstance(connection, psycopg.Connection):
            self._conninfo = None
            self._conn = connection
        else:
            raise InvalidTypeError("connection must be a connection string or a psycopg Connection, "
                                   f"got {type(connection).__name__}")
        self._mutex = threading.RLock()
        self._cursor: psycopg.Cursor | None = None
        self._dumpers_for: int | None = None
        self._settings: dict[str, str] = {}  # session settings of the owned connection
        self._pgvector: tuple[int, ...] | None = None
        self._layout: _Layout | None = None
        try:
            self._open(dim, precision, rescore, id_kind)
        except BaseException:
            self.close()
            raise

    def _open(self, dim, precision, rescore, id_kind) -> None:
        wanted_precision = precision or "float32"
        wanted_rescore = rescore if wanted_precision == "binary" else None

        def work(cur, state):
            if self._schema is None:
                self._schema = cur.execute("SELECT current_schema()").fetchone()[0]
                if self._schema is None:
                    raise InvalidValueError("the connection has no current schema (empty search_path): pass schema=")
            return self._read_layout(cur)

        layout = self._run(work, write=False, what="opening the table")
        if layout is not None:
            if dim is not None and dim != layout.dim:
                raise InvalidValueError(f"{self._where} holds {layout.dim}-dimensional vectors, not {dim}")
            if precision is not None and (precision, wanted_rescore) != (layout.precision, layout.rescore):
                raise InvalidValueError(f"{self._where} has precision={layout.precision!r}, rescore={layout.rescore!r}; "
                                        f"asked for precision={precision!r}, rescore={wanted_rescore!r}")
            if id_kind is not None and id_kind != layout.id_kind:
                raise InvalidValueError(f"{self._where} holds {layout.id_kind} ids, not {id_kind}")
            self._dim, self._precision, self._rescore = layout.dim, layout.precision, layout.rescore
            return
        if dim is None:
            raise InvalidValueError(f"{self._where} does not exist: pass dim= to create it")
        if wanted_precision != "binary" and dim > MAX_COLUMN_DIM:
            raise InvalidValueError(f"pgvector's {_COLUMN_FOR[wanted_precision]} holds at most {MAX_COLUMN_DIM} "
                                    f"dimensions, got {dim}")
        if wanted_rescore is not None and dim > MAX_COLUMN_DIM:
            raise InvalidValueError(f"pgvector's {_COLUMN_FOR[wanted_rescore]} (rescore={wanted_rescore!r}) holds at "
                                    f"most {MAX_COLUMN_DIM} dimensions, got {dim}")
        self._dim, self._precision, self._rescore = dim, wanted_precision, wanted_rescore
        if id_kind is not None:
            self._run(lambda cur, state: self._ensure_table(cur, id_kind), write=True, what="creating the table")

    # -- properties ------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """The dimension of the stored vectors."""
        return self._dim

    @property
    def precision(self) -> str:
        return self._precision

    @property
    def rescore(self) -> str | None:
        return self._rescore

    @property
    def table(self) -> str:
        """The table's schema-qualified name, as text (``schema.table``)."""
        return self._where

    @property
    def _where(self) -> str:
        return f"{self._schema}.{self._table}" if self._schema else self._table

    @property
    def _ident(self) -> sql.Identifier:
        return sql.Identifier(self._schema, self._table)

    def _related(self, suffix: str) -> sql.Identifier:
        return sql.Identifier(self._schema, _derived_name(self._table, suffix))

    def __repr__(self) -> str:
        return (f"PgVectorIndex({self._where!r}, dim={self._dim}, precision={self._precision!r}, "
                f"rescore={self._rescore!r})")

    # -- connection and transactions -------------------------------------------------------------
    def close(self) -> None:
        """Closes the connection the index opened (a connection passed in is left open)."""
        with self._mutex:
            if self._conninfo is not None and self._conn is not None:
                self._conn.close()
            if self._conninfo is not None:
                self._conn = None
            self._cursor = None

    def __del__(self) -> None:
        # the connection this index opened goes with it (psycopg warns about one left open)
        conn = getattr(self, "_conn", None)
        if getattr(self, "_conninfo", None) is not None and conn is not None and not conn.closed:
            conn.close()

    def __enter__(self) -> PgVectorIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _connection(self) -> psycopg.Connection:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        if self._conninfo is None:
            raise psycopg.OperationalError(f"the connection given to PgVectorIndex({self._where!r}) is closed; build "
                                           "the index again on an open connection (or pass a connection string, "
                                           "which the index reopens by itself)")
        self._conn = psycopg.connect(self._conninfo, autocommit=True)
        self._cursor = None
        self._settings = {}
        self._pgvector = None
        return self._conn

    def _cur(self, conn: psycopg.Connection) -> psycopg.Cursor:
        if self._cursor is None or self._cursor.connection is not conn or self._cursor.closed:
            self._cursor = conn.cursor()
            self._dumpers_for = None
        return self._cursor

    def _register_dumpers(self, cur, layout: _Layout) -> None:
        """Dumpers for bytes already in binary input format, on this index's cursor only (the
        connection's own adapters, which a caller may use for pgvector's types, stay as they are)."""
        if cur is self._cursor and self._dumpers_for == layout.embedding_oid:
            return
        adapters = cur.adapters
        for oid in {layout.embedding_oid, _OID_BIT, _OID_JSONB} - {0}:
            adapters.register_dumper(None, _raw_dumper(oid))
        if layout.embedding_oid:
            adapters.register_dumper(_EmbeddingParam, _raw_dumper(layout.embedding_oid))
        adapters.register_dumper(_BitsParam, _raw_dumper(_OID_BIT))
        if cur is self._cursor:
            self._dumpers_for = layout.embedding_oid

    def _run(self, work: Callable, *, write: bool, what: str):
        """Runs work(cursor, state) in a transaction (reads on an owned connection: autocommit).

        A connection found dead is reopened and the call run again when that is safe: a read,
        or a write that failed before its first statement returned (state["phase"] still "begin").
        """
        with self._mutex:
            for attempt in (0, 1):
                conn = self._connection()
                state = {"phase": "begin"}
                try:
                    if not write and self._conninfo is not None:
                        return work(self._cur(conn), state)
                    with conn.transaction():
                        result = work(self._cur(conn), state)
                        state["phase"] = "commit"
                    return result
                except psycopg.OperationalError as exc:
                    if not conn.closed:
                        raise
                    self._cursor = None
                    safe = not write or state["phase"] == "begin"
                    if safe and attempt == 0 and self._conninfo is not None:
                        continue
                    raise psycopg.OperationalError(self._lost_message(what, exc, write, state["phase"])) from exc
                except psycopg.errors.UndefinedTable:
                    self._layout = None  # dropped behind our back: the next call looks again
                    raise

    def _lost_message(self, what: str, exc: Exception, write: bool, phase: str) -> str:
        cause = " ".join(str(exc).split())
        if not write:
            done = "nothing was changed"
        elif phase == "commit":
            done = ("the connection broke during COMMIT, so Postgres may or may not have committed it: check (len, in) "
                    "before repeating it")
        else:
            done = "the transaction was not committed, so nothing was written"
        after = ("the next call reconnects" if self._conninfo is not None
                 else "this index was given a connection, which cannot be reopened: build the index again on a new one")
        return f"lost the connection to Postgres while {what} on {self._where} ({cause}): {done}; {after}"

    def _read_layout(self, cur) -> _Layout | None:
        rows = cur.execute(_LAYOUT_SQL, (self._schema, self._table)).fetchall()
        self._layout = _parse_layout(rows, self._where)
        if self._layout is not None and self._layout.id_kind == "int":
            seq = cur.execute("SELECT to_regclass(%s)", (self._related("auto_id").as_string(cur),)).fetchone()[0]
            if seq is None:
                raise IndexFormatError(f"{self._where}: its id sequence {_derived_name(self._table, 'auto_id')} is "
                                       "missing")
        return self._layout

    def _current_layout(self, cur) -> _Layout | None:
        return self._layout if self._layout is not None else self._read_layout(cur)

    def _check_pgvector(self, cur, create: bool) -> tuple[int, ...]:
        if self._pgvector is None:
            row = cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
            if row is None and create:
                try:
                    cur.execute("SAVEPOINT embedrank_extension")
                    cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
                    cur.execute("RELEASE SAVEPOINT embedrank_extension")
                except psycopg.errors.DatabaseError as exc:
                    cur.execute("ROLLBACK TO SAVEPOINT embedrank_extension")
                    raise MissingDependencyError(
                        "the pgvector extension is not installed in this database and this role cannot install it "
                        f"({' '.join(str(exc).split())}); run CREATE EXTENSION vector as a privileged role "
                        "(https://github.com/pgvector/pgvector#installation)") from None
                row = cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
            if row is None:
                raise MissingDependencyError("the pgvector extension is not installed in this database: run "
                                             "CREATE EXTENSION vector")
            version = _version(row[0])
            if version < MIN_PGVECTOR:
                raise MissingDependencyError(f"PgVectorIndex needs pgvector >= {_show_version(MIN_PGVECTOR)}, the "
                                             f"database has {row[0]} (ALTER EXTENSION vector UPDATE)")
            self._pgvector = version
        return self._pgvector

    def _ensure_table(self, cur, id_kind: str, layout: _Layout | None = None) -> _Layout:
        """The table's layout, creating it (in the caller's transaction) when it does not exist
        (`layout`: what the caller just read, if it did)."""
        if layout is None:
            layout = self._read_layout(cur)
        if layout is not None:
            return layout
        self._check_pgvector(cur, create=True)
        columns = [sql.SQL("seq bigint GENERATED ALWAYS AS IDENTITY"),
                   sql.SQL("id {} PRIMARY KEY").format(sql.SQL("bigint" if id_kind == "int" else "text"))]
        dim = sql.Literal(self._dim)
        embedding = _COLUMN_FOR.get(self._rescore if self._precision == "binary" else self._precision)
        if embedding is not None:
            columns.append(sql.SQL("embedding {}({}) NOT NULL").format(sql.SQL(embedding), dim))
        if self._precision == "binary":
            columns.append(sql.SQL("bits bit({}) NOT NULL").format(dim))
        columns.append(sql.SQL("metadata jsonb"))
        cur.execute(sql.SQL("CREATE TABLE {} ({})").format(self._ident, sql.SQL(", ").join(columns)))
        if id_kind == "int":
            cur.execute(sql.SQL("CREATE SEQUENCE {} AS bigint MINVALUE 0 START WITH 0 OWNED BY {}.id").format(
                self._related("auto_id"), self._ident))
        layout = self._read_layout(cur)
        if layout is None:
            raise RuntimeError(f"{self._where} was created but cannot be read back from the catalog")
        return layout

    def _lock(self, cur) -> None:
        cur.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(self._ident))

    # -- reads -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        """The number of stored vectors."""

        def work(cur, state):
            if self._current_layout(cur) is None:
                return 0
            return int(cur.execute(sql.SQL("SELECT count(*) FROM {}").format(self._ident)).fetchone()[0])

        return self._run(work, write=False, what="counting rows")

    def __contains__(self, user_id) -> bool:
        try:
            ids, kind = normalize_ids([user_id])
        except (TypeError, ValueError):
            return False

        def work(cur, state):
            layout = self._current_layout(cur)
            if layout is None or layout.id_kind != kind or not _storable(ids.tolist()):
                return False
            return cur.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE id = %s)").format(self._ident),
                               (ids.tolist()[0],)).fetchone()[0]

        return self._run(work, write=False, what="looking up an id")

    def ids(self) -> np.ndarray:
        """The stored ids, in insertion order (int64 array, or an object array of str)."""

        def work(cur, state):
            layout = self._current_layout(cur)
            if layout is None:
                return np.empty(0, dtype=np.int64)
            values = [row[0] for row in cur.execute(sql.SQL("SELECT id FROM {} ORDER BY seq").format(self._ident))]
            return _id_array(values, layout.id_kind)

        return self._run(work, write=False, what="listing ids")

    def get_metadata(self, ids) -> list[dict | None]:
        """The metadata dict of each id (None where it was stored without); UnknownIdError (a KeyError)
        listing the ids not in the table."""
        wanted, kind = normalize_ids(ids, single_ok=True)

        def work(cur, state):
            layout = self._current_layout(cur)
            self._check_kind(layout, kind)
            values = wanted.tolist()
            found = {}
            if layout is not None and _storable(values):
                found = dict(cur.execute(sql.SQL("SELECT id, metadata FROM {} WHERE id = ANY(%s::{}[])").format(
                    self._ident, _id_type(layout)), (_storable(values),)))
            missing = [v for v in values if v not in found]
            if missing:
                raise UnknownIdError(f"ids not in the index: {show_ids(missing)}")
            return [found[v] for v in values]

        return self._run(work, write=False, what="reading metadata")

    @staticmethod
    def _check_kind(layout: _Layout | None, kind: str | None, prefix: str = "") -> None:
        if layout is not None and kind is not None and kind != layout.id_kind:
            raise InvalidTypeError(f"{prefix}this index holds {layout.id_kind} ids, got {kind} ids "
                                   "(one kind of id per index)")

    # -- add -----------------------------------------------------------------------------------------
    def add(self, vectors, ids=None, metadata=None, *, upsert: bool = False) -> np.ndarray:
        """Adds vectors [n, dim] (or [dim]) float; returns their ids (as the vector indexes' add).

        ids: None (fresh int ids from the table's sequence) or n ids, all int (>= 0) or all str,
        the kind the table holds (the first add decides it for a new table). metadata: None or n
        dicts (JSON-serializable, str keys) or None entries, stored as jsonb. An id already
        present (or repeated in `ids`): InvalidValueError naming it, unless upsert=True, which
        replaces that vector and its metadata (None clears it) and keeps its place in ids().
        One transaction: an error (bad input, a failed COPY, a lost connection) writes nothing.
        """
        if not isinstance(upsert, (bool, np.bool_)):
            raise InvalidTypeError(f"upsert must be a bool, got {type(upsert).__name__}")
        x = as_vectors(vectors, self._dim)
        if self._column_types() & {"halfvec"}:
            _check_float16(x, "vectors")
        n = x.shape[0]
        prepared = prepare_metadata(metadata, n)
        jsonb = _jsonb_rows(prepared, n)
        given, kind = check_add_ids(ids, n)
        if kind == "str":
            _check_text_ids(given)

        def work(cur, state):
            layout = self._read_layout(cur)  # the first statement: a dead connection fails here, nothing sent
            state["phase"] = "running"
            if given is None and layout is not None and layout.id_kind == "str" and n:
                raise InvalidTypeError("this index holds str ids: pass ids= to add()")
            self._check_kind(layout, kind)
            if n == 0:
                return given if given is not None else np.empty(0, dtype=np.int64 if layout is None or
                                                                 layout.id_kind == "int" else object)
            layout = self._ensure_table(cur, kind or "int", layout)
            self._lock(cur)
            out = given if given is not None else self._auto_ids(cur, n)
            values = out.tolist()
            present: list = []
            if cur.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(self._ident)).fetchone()[0]:
                present = [row[0] for row in cur.execute(sql.SQL("SELECT id FROM {} WHERE id = ANY(%s::{}[])").format(
                    self._ident, _id_type(layout)), (values,))]
            if present and not upsert:
                order = {v: i for i, v in enumerate(values)}
                present.sort(key=order.__getitem__)
                raise InvalidValueError(f"ids already in the index: {show_ids(present)} "
                                        "(pass upsert=True to replace them)")
            if present:
                self._upsert_rows(cur, layout, values, x, jsonb)
            else:
                self._copy_rows(cur, layout, self._ident, values, x, jsonb, with_order=False)
            if given is not None and layout.id_kind == "int":
                self._bump_sequence(cur, int(max(values)))
            return out

        return self._run(work, write=True, what="adding vectors")

    def upsert(self, vectors, ids, metadata=None) -> np.ndarray:
        """``add(vectors, ids, metadata, upsert=True)``: inserts new ids, replaces present ones."""
        if ids is None:
            raise InvalidValueError("upsert needs ids= (the ids to insert or replace)")
        return self.add(vectors, ids, metadata, upsert=True)

    def _column_types(self) -> set[str]:
        kinds = set()
        if self._precision != "binary":
            kinds.add(_COLUMN_FOR[self._precision])
        elif self._rescore is not None:
            kinds.add(_COLUMN_FOR[self._rescore])
        return kinds

    def _auto_ids(self, cur, n: int) -> np.ndarray:
        seq = self._related("auto_id")
        last, called = cur.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(seq)).fetchone()
        start = int(last) + 1 if called else int(last)
        cur.execute("SELECT setval(%s::regclass, %s, true)", (seq.as_string(cur), start + n - 1))
        return np.arange(start, start + n, dtype=np.int64)

    def _bump_sequence(self, cur, largest: int) -> None:
        seq = self._related("auto_id")
        last, called = cur.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(seq)).fetchone()
        if largest >= (int(last) + 1 if called else int(last)):
            cur.execute("SELECT setval(%s::regclass, %s, true)", (seq.as_string(cur), largest))

    def _columns(self, layout: _Layout) -> list[str]:
        return ["id"] + (["embedding"] if layout.embedding else []) + (["bits"] if layout.bits else []) + ["metadata"]

    def _copy_rows(self, cur, layout: _Layout, target: sql.Composable, values: list, x: np.ndarray,
                   jsonb: list, *, with_order: bool) -> None:
        """COPY ... FROM STDIN (FORMAT BINARY) of the rows, `_COPY_BATCH` encoded at a time."""
        columns = (["ord"] if with_order else []) + self._columns(layout)
        types = ([_OID_INT8] if with_order else []) + [_OID_INT8 if layout.id_kind == "int" else _OID_TEXT]
        if layout.embedding:
            types.append(layout.embedding_oid)
        if layout.bits:
            types.append(_OID_BIT)
        types.append(_OID_JSONB)
        statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            target, sql.SQL(", ").join(map(sql.Identifier, columns)))
        n = x.shape[0]
        self._register_dumpers(cur, layout)
        with cur.copy(statement) as copy:
            copy.set_types(types)
            for start in range(0, n, _COPY_BATCH):
                stop = min(n, start + _COPY_BATCH)
                chunk = x[start:stop]
                parts: list[list] = []
                if with_order:
                    parts.append(list(range(start, stop)))
                parts.append(values[start:stop])
                if layout.embedding:
                    parts.append(_rows_of(encode_vectors(chunk, layout.embedding)))
                if layout.bits:
                    parts.append(_rows_of(encode_bits(chunk)))
                parts.append(jsonb[start:stop])
                for row in zip(*parts):
                    copy.write_row(row)

    def _upsert_rows(self, cur, layout: _Layout, values: list, x: np.ndarray, jsonb: list) -> None:
        stage = sql.Identifier("embedrank_upsert_stage")
        columns = self._columns(layout)
        cur.execute(sql.SQL("CREATE TEMPORARY TABLE {} ON COMMIT DROP AS SELECT 0::bigint AS ord, {} FROM {} "
                            "WITH NO DATA").format(stage, sql.SQL(", ").join(map(sql.Identifier, columns)),
                                                   self._ident))
        self._copy_rows(cur, layout, stage, values, x, jsonb, with_order=True)
        names = sql.SQL(", ").join(map(sql.Identifier, columns))
        updates = sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in columns[1:])
        cur.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ORDER BY ord "
                            "ON CONFLICT (id) DO UPDATE SET {}").format(self._ident, names, names, stage, updates))
        cur.execute(sql.SQL("DROP TABLE {}").format(stage))

    # -- remove --------------------------------------------------------------------------------------
    def remove(self, ids) -> None:
        """Removes ids (a sequence, or one id). Unknown ids: UnknownIdError (a KeyError) listing them,
        nothing removed."""
        wanted, kind = normalize_ids(ids, single_ok=True)
        values = list(dict.fromkeys(wanted.tolist()))

        def work(cur, state):
            layout = self._read_layout(cur)
            state["phase"] = "running"
            self._check_kind(layout, kind)
            if not values:
                return
            if layout is None:
                raise UnknownIdError(f"ids not in the index: {show_ids(values)}")
            self._lock(cur)
            gone = {row[0] for row in cur.execute(sql.SQL("DELETE FROM {} WHERE id = ANY(%s::{}[]) RETURNING id").format(
                self._ident, _id_type(layout)), (_storable(values),))}
            missing = [v for v in values if v not in gone]
            if missing:  # raising rolls the DELETE back
                raise UnknownIdError(f"ids not in the index: {show_ids(missing)}")

        self._run(work, write=True, what="removing vectors")

    def drop_table(self) -> None:
        """Drops the table (and its id sequence and indexes): every vector is gone."""

        def work(cur, state):
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self._ident))
            state["phase"] = "running"
            self._layout = None

        self._run(work, write=True, what="dropping the table")

    # -- server-side indexes ---------------------------------------------------------------------------
    def create_index(self, kind: str = "hnsw", *, m: int = 16, ef_construction: int = 64, lists: int | None = None,
                     maintenance_work_mem: str | None = None, parallel_workers: int | None = None) -> str:
        """Builds a server-side ANN index on the first-pass column (replacing one made before); returns its name.

        kind "hnsw" (m, ef_construction) or "ivfflat" (lists; default rows / 1000, at least 1, or
        sqrt(rows) above a million rows, as pgvector suggests; build it after the data is in:
        its centroids come from the rows present). Inner-product operator classes on
        vector/halfvec, Hamming on bit. maintenance_work_mem ("2GB") and parallel_workers
        (max_parallel_maintenance_workers) apply to this build only. Writes wait while it builds.
        """
        if kind not in ("hnsw", "ivfflat"):
            raise InvalidValueError(f"kind must be 'hnsw' or 'ivfflat', got {kind!r}")
        m = _positive(m, "m", 100)
        if m < 2:
            raise InvalidValueError(f"m must be in [2, 100], got {m}")
        ef_construction = _positive(ef_construction, "ef_construction", 1000)
        if kind == "hnsw" and ef_construction < 2 * m:
            raise InvalidValueError(f"ef_construction must be >= 2 * m ({2 * m}), got {ef_construction}")
        if lists is not None:
            lists = _positive(lists, "lists", 32768)
        if maintenance_work_mem is not None and (not isinstance(maintenance_work_mem, str)
                                                 or not _MEMORY_SETTING.match(maintenance_work_mem.strip())):
            raise InvalidValueError(f"maintenance_work_mem must be a size such as '1GB' or '512MB', got "
                                    f"{maintenance_work_mem!r}")
        if parallel_workers is not None and (isinstance(parallel_workers, bool)
                                             or not isinstance(parallel_workers, numbers.Integral)
                                             or not 0 <= parallel_workers <= 1024):
            raise InvalidValueError(f"parallel_workers must be an integer in [0, 1024], got {parallel_workers!r}")
        column = "bits" if self._precision == "binary" else "embedding"
        column_type = "bit" if column == "bits" else _COLUMN_FOR[self._precision]
        if self._dim > ANN_MAX_DIM[column_type]:
            raise InvalidValueError(f"pgvector's {kind} indexes {column_type} columns of at most "
                                    f"{ANN_MAX_DIM[column_type]} dimensions; this table has {self._dim}")
        name = _derived_name(self._table, kind)

        def work(cur, state):
            layout = self._read_layout(cur)
            state["phase"] = "running"
            if layout is None:
                raise InvalidValueError(f"{self._where} does not exist yet: add vectors first")
            for old in self._ann_indexes(cur):
                cur.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(self._schema, old)))
            if maintenance_work_mem is not None:
                cur.execute("SELECT set_config('maintenance_work_mem', %s, true)", (maintenance_work_mem.strip(),))
            if parallel_workers is not None:
                cur.execute("SELECT set_config('max_parallel_maintenance_workers', %s, true)", (str(parallel_workers),))
            if kind == "hnsw":
                options = sql.SQL("m = {}, ef_construction = {}").format(sql.Literal(m), sql.Literal(ef_construction))
            else:
                count = cur.execute(sql.SQL("SELECT count(*) FROM {}").format(self._ident)).fetchone()[0]
                chosen = lists or (max(1, count // 1000) if count <= 1_000_000 else int(count ** 0.5))
                options = sql.SQL("lists = {}").format(sql.Literal(min(chosen, 32768)))
            cur.execute(sql.SQL("CREATE INDEX {} ON {} USING {} ({} {}) WITH ({})").format(
                sql.Identifier(name), self._ident, sql.SQL(kind), sql.Identifier(column), sql.SQL(_OPCLASS[column_type]),
                options))
            return name

        return self._run(work, write=True, what=f"building a {kind} index")

    def drop_index(self) -> None:
        """Drops the server-side ANN index(es) on the table; searches are exact again."""

        def work(cur, state):
            layout = self._read_layout(cur)
            state["phase"] = "running"
            if layout is not None:
                for old in self._ann_indexes(cur):
                    cur.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(self._schema, old)))

        self._run(work, write=True, what="dropping the ANN index")

    def ann_index(self) -> tuple[str, str] | None:
        """(kind, name) of the table's hnsw / ivfflat index, or None."""

        def work(cur, state):
            if self._current_layout(cur) is None:
                return None
            rows = self._ann_indexes(cur, with_kind=True)
            return rows[0] if rows else None

        return self._run(work, write=False, what="reading the catalog")

    def _ann_indexes(self, cur, with_kind: bool = False) -> list:
        rows = cur.execute(
            "SELECT am.amname, ic.relname FROM pg_index i "
            "JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam "
            "JOIN pg_class tc ON tc.oid = i.indrelid JOIN pg_namespace n ON n.oid = tc.relnamespace "
            "WHERE n.nspname = %s AND tc.relname = %s AND am.amname IN ('hnsw', 'ivfflat') ORDER BY ic.relname",
            (self._schema, self._table)).fetchall()
        return [(kind, name) for kind, name in rows] if with_kind else [name for _, name in rows]

    def create_metadata_index(self) -> str:
        """A GIN index (jsonb_path_ops) on metadata, which the filters' containment tests can use."""
        name = _derived_name(self._table, "metadata_gin")

        def work(cur, state):
            layout = self._read_layout(cur)
            state["phase"] = "running"
            if layout is None:
                raise InvalidValueError(f"{self._where} does not exist yet: add vectors first")
            cur.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING gin (metadata jsonb_path_ops)").format(
                sql.Identifier(name), self._ident))
            return name

        return self._run(work, write=True, what="building the metadata index")

    # -- search --------------------------------------------------------------------------------------
    def _search_params(self) -> set[str]:
        return {"ef_search", "probes", "exact", "oversample"}

    def search(self, queries, k: int, filter=None, *, return_metadata: bool = False, **params: Any) -> SearchResult:
        """The k best vectors per query: queries [Q, dim] (or [dim]) float -> SearchResult [Q, k].

        filter: None, a sequence of allowed ids, or a metadata dict (the vector indexes'
        grammar; see the module docstring). params: ef_search, probes (the ANN index's search
        width), exact (True: scan the table even when an ANN index exists), oversample (binary:
        Hamming candidates per result). Padding and column count as the vector indexes: rows
        padded with id -1 (None for str ids) and score -inf; columns min(k, max(len, 1024)).
        """
        return self._search(queries, k, filter, return_metadata, params, explain=False)

    def explain(self, query, k: int, filter=None, **params: Any) -> str:
        """Postgres' plan (EXPLAIN) for search(query, k, filter, **params) of one query: shows
        whether the hnsw / ivfflat index serves it ("Index Scan using <table>_hnsw")."""
        return self._search(query, k, filter, False, params, explain=True)

    def _search(self, queries, k, filter, return_metadata: bool, params: dict, explain: bool):
        unknown = sorted(set(params) - self._search_params())
        if unknown:
            raise InvalidTypeError(f"PgVectorIndex.search() got unknown parameter(s) {unknown}; "
                                   f"accepted: {sorted(self._search_params())}")
        k = check_k(k)
        q = as_queries(queries, self._dim)
        if self._column_types() & {"halfvec"}:
            _check_float16(q, "queries")
        ef = _positive(params.get("ef_search", self.ef_search), "ef_search", MAX_EF_SEARCH)
        probes = _positive(params.get("probes", self.probes), "probes")
        oversample = _positive(params.get("oversample", self.oversample), "oversample")
        exact = params.get("exact", False)
        if not isinstance(exact, (bool, np.bool_)):
            raise InvalidTypeError(f"exact must be a bool, got {type(exact).__name__}")
        if filter is not None and not isinstance(filter, (Mapping, np.ndarray, list, tuple, set, frozenset, range)):
            raise InvalidTypeError("filter must be None, a sequence of allowed ids or a dict of metadata conditions, "
                                   f"got {type(filter).__name__}")
        conditions, allowed, allowed_kind = None, None, None
        if isinstance(filter, Mapping):
            conditions = compile_filter(filter)
        elif filter is not None:
            allowed, allowed_kind = normalize_ids(list(filter) if isinstance(filter, (set, frozenset)) else filter)
            allowed = _storable(list(dict.fromkeys(allowed.tolist())))
        nq = q.shape[0]

        def work(cur, state):
            layout = self._current_layout(cur)
            self._check_kind(layout, allowed_kind, "filter: ")
            columns = k
            if k > MAX_PADDED_K:
                count = 0 if layout is None else cur.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(self._ident)).fetchone()[0]
                columns = min(k, max(count, MAX_PADDED_K))
            kind = "int" if layout is None else layout.id_kind
            out_ids = np.full((nq, columns), -1, dtype=np.int64) if kind == "int" else np.full((nq, columns), None,
                                                                                                dtype=object)
            out_scores = np.full((nq, columns), -np.inf, dtype=np.float32)
            out_meta = [[None] * columns for _ in range(nq)] if return_metadata else None
            if layout is None or nq == 0 or (allowed is not None and not allowed) or (
                    conditions is not None and any(not v for v in conditions.values())):
                if explain:
                    return "(no query runs: the table does not exist, or the filter lets nothing through)"
                return SearchResult(ids=out_ids, scores=out_scores, metadata=out_meta)
            where, where_params = self._where_sql(layout, conditions, allowed)
            pool = min(columns * oversample, 1 << 30) if layout.bits and layout.embedding else columns
            self._apply_settings(cur, {"enable_indexscan": "off" if exact else "on",
                                       "hnsw.ef_search": str(min(max(ef, pool), MAX_EF_SEARCH)),
                                       "ivfflat.probes": str(probes)},
                                 iterative=self._check_pgvector(cur, create=False) >= ITERATIVE_PGVECTOR)
            statement = self._search_sql(layout, where, return_metadata, exact)
            self._register_dumpers(cur, layout)
            for row in range(nq):
                params_ = {"k": columns, "pool": pool, **where_params}
                if layout.embedding:
                    params_["q"] = _EmbeddingParam(encode_vectors(q[row: row + 1], layout.embedding).tobytes())
                if layout.bits:
                    params_["qb"] = _BitsParam(encode_bits(q[row: row + 1]).tobytes())
                if explain:
                    return "\n".join(line for line, in cur.execute(sql.SQL("EXPLAIN ") + statement, params_))
                hits = cur.execute(statement, params_).fetchall()
                hits.sort(key=lambda hit: (hit[1], hit[2]))  # distance, then insertion order
                for column, hit in enumerate(hits[:columns]):
                    out_ids[row, column] = hit[0]
                    out_scores[row, column] = (self._dim - 2.0 * hit[1]) if layout.embedding is None else -hit[1]
                    if out_meta is not None:
                        out_meta[row][column] = hit[3]
            return SearchResult(ids=out_ids, scores=out_scores, metadata=out_meta)

        return self._run(work, write=False, what="searching")

    def _where_sql(self, layout: _Layout, conditions: dict | None, allowed: list | None):
        parts, values = [], {}
        if allowed is not None:
            parts.append(sql.SQL("id = ANY(%(allowed)s::{}[])").format(_id_type(layout)))
            values["allowed"] = allowed
        for position, (key, accepted) in enumerate((conditions or {}).items()):
            docs = ["{" + json.dumps(key, ensure_ascii=False) + ":" + value + "}" for value in accepted]
            name = f"f{position}"
            if len(docs) == 1:
                parts.append(sql.SQL("metadata @> %({})s::jsonb").format(sql.SQL(name)))
                values[name] = docs[0]
            else:
                parts.append(sql.SQL("metadata @> ANY(%({})s::jsonb[])").format(sql.SQL(name)))
                values[name] = docs
        if not parts:
            return sql.SQL(""), values
        return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(parts), values

    def _search_sql(self, layout: _Layout, where: sql.Composable, return_metadata: bool, exact: bool):
        meta = sql.SQL(", metadata") if return_metadata else sql.SQL("")
        # An ANN index serves ORDER BY <distance> LIMIT only: the insertion-order tie-break goes in
        # SQL for exact scans, and into the client-side sort of the returned rows otherwise.
        ties = sql.SQL(", seq") if exact else sql.SQL("")
        table = self._ident
        if layout.bits and layout.embedding:
            return sql.SQL("SELECT id, embedding <#> %(q)b AS d, seq{meta} FROM (SELECT id, seq, embedding{meta} "
                           "FROM {table}{where} ORDER BY bits <~> %(qb)b{ties} LIMIT %(pool)s) candidates "
                           "ORDER BY d, seq LIMIT %(k)s").format(meta=meta, table=table, where=where, ties=ties)
        if layout.bits:
            return sql.SQL("SELECT id, bits <~> %(qb)b AS d, seq{meta} FROM {table}{where} "
                           "ORDER BY d{ties} LIMIT %(k)s").format(meta=meta, table=table, where=where, ties=ties)
        return sql.SQL("SELECT id, embedding <#> %(q)b AS d, seq{meta} FROM {table}{where} "
                       "ORDER BY d{ties} LIMIT %(k)s").format(meta=meta, table=table, where=where, ties=ties)

    def _apply_settings(self, cur, wanted: dict[str, str], iterative: bool) -> None:
        """Session settings on an owned connection (sent only when they change), transaction-local
        ones (set_config(..., true)) on a connection the caller passed."""
        if iterative:
            wanted = {**wanted, "hnsw.iterative_scan": "strict_order", "ivfflat.iterative_scan": "relaxed_order"}
        local = self._conninfo is None
        changed = wanted if local else {name: value for name, value in wanted.items()
                                        if self._settings.get(name) != value}
        if not changed:
            return
        calls = sql.SQL(", ").join(sql.SQL("set_config(%s, %s, {})").format(sql.Literal(local)) for _ in changed)
        args = [item for pair in changed.items() for item in pair]
        cur.execute(sql.SQL("SELECT {}").format(calls), args)
        if not local:
            self._settings.update(changed)

    # -- persistence ---------------------------------------------------------------------------------
    def save(self, path, *, timeout: float | None = None) -> Path:
        """Writes an index folder at `path` that names this table (the vectors stay in Postgres).

        It holds the connection string without its password (a passed connection: its
        parameters, also without password), the schema, table and settings; load_index(path)
        reconnects with it. Same folder rules as the vector indexes' save (atomic replace,
        never over something that is not an index). Returns the absolute path.
        """
        from embedrank.index.storage import write_index

        def work(cur, state):
            layout = self._current_layout(cur)
            count = 0 if layout is None else int(cur.execute(
                sql.SQL("SELECT count(*) FROM {}").format(self._ident)).fetchone()[0])
            next_auto = 0
            if layout is not None and layout.id_kind == "int":
                last, called = cur.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(
                    self._related("auto_id"))).fetchone()
                next_auto = int(last) + 1 if called else int(last)
            return layout, count, next_auto

        layout, count, next_auto = self._run(work, write=False, what="saving a reference")
        if self._conninfo is not None:
            conninfo = _without_password(self._conninfo)
        else:
            conninfo = make_conninfo(**{k: v for k, v in self._conn.info.get_parameters().items() if k != "password"})
        manifest = {"type": _TYPE, "dim": self._dim, "count": count, "slot_count": count, "next_auto_id": next_auto,
                    "id_kind": None if layout is None else layout.id_kind,
                    "config": {"conninfo": conninfo, "schema": self._schema, "table": self._table,
                               "precision": self._precision, "rescore": self._rescore, "oversample": self.oversample,
                               "ef_search": self.ef_search, "probes": self.probes}}
        return write_index(path, lambda directory: [], manifest, timeout=timeout)

    @classmethod
    def load(cls, path, connection=None, *, verify: bool = True) -> PgVectorIndex:
        """Reopens the table an index folder written by save names; connection: a connection
        string or psycopg Connection to use instead of the saved one."""
        from embedrank.index.storage import read_manifest

        directory, manifest = read_manifest(path, verify=verify)
        if manifest["type"] != _TYPE:
            raise IndexFormatError(f"{directory} holds a {manifest['type']}, not a {_TYPE}")
        return cls._open_saved_reference(directory, manifest, connection)

    @classmethod
    def _open_saved_reference(cls, directory: Path, manifest: dict, connection=None) -> PgVectorIndex:
        """load_index's hook for an index whose vectors live elsewhere (see embedrank.index.io)."""
        config = manifest["config"]
        where = directory / "manifest.json"
        try:
            conninfo = config["conninfo"] if connection is None else connection
            if not isinstance(conninfo, (str, psycopg.Connection)):
                raise InvalidTypeError(f"conninfo must be a str, got {type(conninfo).__name__}")
            index = cls(conninfo, config["table"], manifest["dim"], precision=config["precision"],
                        rescore=config["rescore"], oversample=config["oversample"], schema=config["schema"],
                        ef_search=config["ef_search"], probes=config["probes"])
        except (KeyError, InvalidTypeError, InvalidValueError) as exc:
            raise IndexFormatError(f"{where}: bad {_TYPE} reference ({exc})") from None
        if manifest["id_kind"] is not None and index._layout is None:
            index.close()
            raise IndexFormatError(f"{where}: names table {index._where}, which does not exist any more")
        return index


def _id_type(layout: _Layout) -> sql.SQL:
    return sql.SQL("bigint" if layout.id_kind == "int" else "text")


def _id_array(values: list, kind: str) -> np.ndarray:
    if kind == "int":
        return np.array(values, dtype=np.int64)
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _storable(values: list) -> list:
    """The ids a table can hold (a str with a NUL character cannot be one, so it is never found)."""
    return [v for v in values if not isinstance(v, str) or "\x00" not in v]


def _check_text_ids(ids: np.ndarray) -> None:
    bad = [v for v in ids.tolist() if "\x00" in v]
    if bad:
        raise InvalidValueError(f"str ids must not hold a NUL character (Postgres text cannot store it), got "
                                f"{show_ids(bad)}")


register_index_type(_TYPE, PgVectorIndex)
