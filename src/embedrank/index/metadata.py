"""MetadataStore: one JSON dict per vector in SQLite, and filters on its top-level fields.

The live store is an in-memory SQLite database (the standard library's sqlite3), so edits
never touch a saved index; :meth:`MetadataStore.save` copies it into a file of the index
directory with SQLite's backup API and :meth:`MetadataStore.load` copies such a file back
into memory. Rows are keyed by slot.

Filters: ``{"lang": "en", "year": [2020, 2021]}`` keeps the vectors whose metadata has
``lang == "en"`` AND ``year`` in {2020, 2021}. Values are compared as canonical JSON:
1 and 1.0 are equal, True and 1 are not, "1" and 1 are not. A list, tuple or set of values
means "in this set" (an empty one matches nothing); an empty dict is no condition at all
(every live vector passes). A field that no live vector has matches nothing (no error: the
answer must not depend on what concurrent writes happen to have stored). Only scalar values (str,
int, float, bool, None) can be matched: a stored list or dict is returned with the
metadata but never equals a filter value.
"""

from __future__ import annotations

import json
import math
import numbers
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from embedrank.errors import InvalidTypeError, InvalidValueError

__all__ = ["MetadataStore", "METADATA_FILE", "compile_filter", "prepare_metadata"]

METADATA_FILE = "metadata.sqlite"
SCHEMA_VERSION = 1
_CHUNK = 500  # host parameters per statement (SQLite's limit was 999 before 3.32)
_CACHE_SIZE = 16  # filters remembered (slot arrays), dropped on every change

_SCHEMA = f"""
CREATE TABLE info (name TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO info VALUES ('format', 'embedrank-index-metadata'), ('schema_version', '{SCHEMA_VERSION}');
CREATE TABLE docs (slot INTEGER PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE fields (slot INTEGER NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL);
CREATE INDEX fields_key_value ON fields (key, value);
CREATE INDEX fields_slot ON fields (slot);
"""

Prepared = tuple[str, list[tuple[str, str]]]  # (the dict as JSON, [(field, canonical value)])


def _to_builtin(value):
    if isinstance(value, np.generic):
        return value.item()
    raise InvalidTypeError(f"{type(value).__name__} is not JSON-serializable")


_encode_str = json.encoder.encode_basestring  # what json.dumps(..., ensure_ascii=False) does to a str


def _canonical_fast(value, where: str) -> str:
    """canonical() with a fast path for the built-in scalar types."""
    kind = type(value)
    if kind is str:
        return _encode_str(value)
    if kind is int:
        return str(value)
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    return canonical(value, where)


def canonical(value, where: str) -> str:
    """The canonical JSON of a scalar filter/metadata value (integral floats as ints)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, str)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        v = float(value)
        if not math.isfinite(v):
            raise InvalidValueError(f"{where}: NaN and Inf cannot be stored or matched, got {v}")
        if v.is_integer() and abs(v) < 2**63:
            return str(int(v))
        return json.dumps(v)
    raise InvalidTypeError(f"{where}: values must be str, int, float, bool or None, got {type(value).__name__} ({value!r})")


def _prepare_one(item, where: str) -> Prepared | None:
    if item is None:
        return None
    if not isinstance(item, Mapping):
        raise InvalidTypeError(f"{where} must be a dict or None, got {type(item).__name__}")
    bad_keys = [k for k in item if not isinstance(k, str)]
    if bad_keys:
        raise InvalidTypeError(f"{where} keys must be str, got {bad_keys[:5]!r}")
    try:
        doc = json.dumps(dict(item), ensure_ascii=False, allow_nan=False, default=_to_builtin, sort_keys=True)
    except ValueError as exc:
        raise InvalidValueError(f"{where} holds NaN or Inf, which JSON cannot store ({exc})") from None
    except (TypeError, RecursionError) as exc:
        raise InvalidTypeError(f"{where} is not JSON-serializable: {exc}") from None
    _check_encodable(doc, where)
    rows = []
    for key, value in item.items():
        if isinstance(value, (list, tuple, dict, Mapping)):
            rows.append((key, json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"),
                                         default=_to_builtin)))
        else:
            rows.append((key, _canonical_fast(value, f"{where}[{key!r}]")))
    return doc, rows


def prepare_metadata(metadata, n: int, names: Sequence[str] | None = None) -> list[Prepared | None] | None:
    """Checks `metadata` (None or n dicts / Nones) and serializes it; nothing is stored yet.
    names: what an error calls each entry (default "metadata[i]")."""
    if metadata is None:
        return None
    if isinstance(metadata, (Mapping, str, bytes)) or not isinstance(metadata, Sequence):
        raise InvalidTypeError(f"metadata must be a list of dicts (one per vector) or None, got {type(metadata).__name__}")
    if len(metadata) != n:
        raise InvalidValueError(f"metadata has {len(metadata)} entries but there are {n} vectors")
    names = names if names is not None else [f"metadata[{i}]" for i in range(n)]
    return [_prepare_one(item, name) for item, name in zip(metadata, names)]


def compile_filter(conditions) -> dict[str, list[str]]:
    """A metadata filter dict, checked: field -> the sorted canonical JSON values it accepts.

    The one reading of the filter grammar (see the module docstring), shared by every store
    that evaluates filters (this SQLite store, embedrank.integrations.pgvector's SQL). A field
    mapped to an empty list accepts nothing. Errors: a non-dict filter, a non-str field name, a
    dict or other non-list iterable as a value (an operator such as ``{"$ne": 1}`` included),
    or a value that is not a str/int/float/bool/None: InvalidTypeError; NaN or Inf:
    InvalidValueError.
    """
    if not isinstance(conditions, Mapping):
        raise InvalidTypeError(f"a metadata filter must be a dict, got {type(conditions).__name__}")
    compiled: dict[str, list[str]] = {}
    for key, wanted in conditions.items():
        if not isinstance(key, str):
            raise InvalidTypeError(f"filter field names must be str, got {type(key).__name__} ({key!r})")
        _check_encodable(key, "filter field name")
        if isinstance(wanted, (list, tuple, set, frozenset, np.ndarray)):
            values = list(wanted.tolist() if isinstance(wanted, np.ndarray) else wanted)
            compiled[key] = sorted({canonical(v, f"filter[{key!r}]") for v in values})
        elif isinstance(wanted, (Mapping,)) or (not isinstance(wanted, (str, bytes)) and hasattr(wanted, "__iter__")):
            raise InvalidTypeError(f"filter[{key!r}] must be a value or a list of values, got {type(wanted).__name__}")
        else:
            compiled[key] = [canonical(wanted, f"filter[{key!r}]")]
        for value in compiled[key]:
            _check_encodable(value, f"filter[{key!r}]")
    return compiled


def _check_encodable(text: str, where: str) -> None:
    """SQLite and Postgres take UTF-8: a lone surrogate would fail only inside the INSERT or query."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidValueError(f"{where} holds a str that is not valid Unicode (a lone surrogate "
                                f"{exc.object[exc.start:exc.end]!r})") from None


def _filter_key(conditions: dict) -> tuple:
    return tuple(sorted((k, tuple(sorted(v))) for k, v in conditions.items()))


class MetadataStore:
    """Metadata of the live vectors, keyed by slot; thread-safe (one internal mutex)."""

    def __init__(self, connection: sqlite3.Connection | None = None) -> None:
        if connection is None:
            connection = sqlite3.connect(":memory:", check_same_thread=False)
            connection.executescript(_SCHEMA)
        self._conn = connection
        self._mutex = threading.Lock()
        self._cache: OrderedDict = OrderedDict()

    def close(self) -> None:
        with self._mutex:
            self._conn.close()

    def _changed(self) -> None:
        self._cache.clear()

    # -- writes --------------------------------------------------------------------------
    def put(self, slots: np.ndarray, prepared: list[Prepared | None] | None) -> None:
        """Sets the metadata of `slots` (replacing what they had; None entries clear it)."""
        slot_list = [int(s) for s in slots]
        with self._mutex, self._conn:
            self._delete_locked(slot_list)
            if prepared is None:
                return
            docs = [(s, p[0]) for s, p in zip(slot_list, prepared) if p is not None]
            fields = [(s, key, value) for s, p in zip(slot_list, prepared) if p is not None for key, value in p[1]]
            self._conn.executemany("INSERT INTO docs (slot, doc) VALUES (?, ?)", docs)
            self._conn.executemany("INSERT INTO fields (slot, key, value) VALUES (?, ?, ?)", fields)
            self._changed()

    def delete(self, slots: np.ndarray) -> None:
        with self._mutex, self._conn:
            self._delete_locked([int(s) for s in slots])

    def _delete_locked(self, slot_list: list[int]) -> None:
        for start in range(0, len(slot_list), _CHUNK):
            chunk = slot_list[start: start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            self._conn.execute(f"DELETE FROM docs WHERE slot IN ({marks})", chunk)
            self._conn.execute(f"DELETE FROM fields WHERE slot IN ({marks})", chunk)
        self._changed()

    def remap(self, kept_old_slots: np.ndarray) -> None:
        """After a compaction: the row of old slot kept_old_slots[i] moves to slot i."""
        pairs = [(int(old), new) for new, old in enumerate(kept_old_slots.tolist())]
        with self._mutex, self._conn:
            c = self._conn
            c.execute("CREATE TEMP TABLE remap (old INTEGER PRIMARY KEY, new INTEGER NOT NULL)")
            try:
                c.executemany("INSERT INTO remap VALUES (?, ?)", pairs)
                c.execute("CREATE TEMP TABLE docs_new AS SELECT remap.new AS slot, docs.doc AS doc "
                          "FROM docs JOIN remap ON remap.old = docs.slot")
                c.execute("CREATE TEMP TABLE fields_new AS SELECT remap.new AS slot, fields.key AS key, "
                          "fields.value AS value FROM fields JOIN remap ON remap.old = fields.slot")
                c.execute("DELETE FROM docs")
                c.execute("DELETE FROM fields")
                c.execute("INSERT INTO docs (slot, doc) SELECT slot, doc FROM docs_new")
                c.execute("INSERT INTO fields (slot, key, value) SELECT slot, key, value FROM fields_new")
            finally:
                c.execute("DROP TABLE IF EXISTS temp.remap")
                c.execute("DROP TABLE IF EXISTS temp.docs_new")
                c.execute("DROP TABLE IF EXISTS temp.fields_new")
            self._changed()

    # -- reads ---------------------------------------------------------------------------
    def get(self, slots) -> list[dict | None]:
        """The metadata dict of each slot (None for no metadata or a negative slot)."""
        slot_list = [int(s) for s in np.asarray(slots).reshape(-1)]
        wanted = sorted({s for s in slot_list if s >= 0})
        found: dict[int, str] = {}
        with self._mutex:
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start: start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                found.update(self._conn.execute(f"SELECT slot, doc FROM docs WHERE slot IN ({marks})", chunk))
        return [json.loads(found[s]) if s in found else None for s in slot_list]

    def fields(self) -> list[str]:
        with self._mutex:
            return [row[0] for row in self._conn.execute("SELECT DISTINCT key FROM fields ORDER BY key")]

    def count(self) -> int:
        with self._mutex:
            return int(self._conn.execute("SELECT COUNT(*) FROM docs").fetchone()[0])

    def match(self, conditions) -> np.ndarray | None:
        """Sorted int64 slots whose metadata satisfies every condition (None: no conditions)."""
        compiled = compile_filter(conditions)
        cache_key = _filter_key(compiled)
        with self._mutex:
            cached = self._cache.get(cache_key)
            if cached is not None:
                self._cache.move_to_end(cache_key)
                return cached
            result: np.ndarray | None = None
            for key, values in compiled.items():
                slots: list[int] = []
                for start in range(0, max(len(values), 1), _CHUNK):
                    chunk = values[start: start + _CHUNK]
                    if not chunk:
                        break
                    marks = ",".join("?" * len(chunk))
                    slots.extend(row[0] for row in self._conn.execute(
                        f"SELECT slot FROM fields WHERE key = ? AND value IN ({marks})", (key, *chunk)))
                found = np.unique(np.array(slots, dtype=np.int64))
                result = found if result is None else np.intersect1d(result, found, assume_unique=True)
                if result.size == 0:
                    break
            if result is None:
                return None
            result.setflags(write=False)
            self._cache[cache_key] = result
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
            return result

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Writes a consistent copy of the store to a new SQLite file at `path`."""
        target = sqlite3.connect(str(path))
        try:
            with self._mutex:
                self._conn.backup(target)
        finally:
            target.close()

    @classmethod
    def load(cls, path: Path, error: type[Exception], live_slots: np.ndarray | None = None) -> MetadataStore:
        """Reads the SQLite file at `path` into a fresh store; a bad file raises `error` naming it.

        Only the rows of the expected tables and columns are copied, into a database built
        from this module's own schema: a file holding anything else (a trigger, a view, an
        extra table or column) is refused, so nothing written by someone else ever runs.
        live_slots: int64 [n], the index's live slots; a row of any other slot is refused.
        """
        memory = sqlite3.connect(":memory:", check_same_thread=False)
        memory.executescript(_SCHEMA)
        try:
            source = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
            try:
                source.execute("PRAGMA trusted_schema = OFF")
                problem = _schema_problem(source)
                if problem is None:
                    info = dict(source.execute("SELECT name, value FROM info"))
                    if info.get("format") != "embedrank-index-metadata":
                        problem = "not an embedrank metadata database"
                    elif info.get("schema_version") != str(SCHEMA_VERSION):
                        problem = (f"unsupported metadata schema version {info.get('schema_version')!r} "
                                   f"(this embedrank reads {SCHEMA_VERSION})")
                if problem is None:
                    docs = source.execute("SELECT slot, doc FROM docs").fetchall()
                    fields = source.execute("SELECT slot, key, value FROM fields").fetchall()
            finally:
                source.close()
            if problem is None:
                problem = _rows_problem(docs, fields, live_slots)
            if problem is None:
                with memory:
                    memory.executemany("INSERT INTO docs (slot, doc) VALUES (?, ?)", docs)
                    memory.executemany("INSERT INTO fields (slot, key, value) VALUES (?, ?, ?)", fields)
        except (sqlite3.Error, ValueError, OverflowError) as exc:
            memory.close()
            raise error(f"{path}: not a readable metadata database ({type(exc).__name__}: {exc})") from None
        if problem is not None:
            memory.close()
            raise error(f"{path}: {problem}")
        return cls(memory)


# The schema objects a saved store holds, as sqlite_master lists them: (type, name) -> columns.
_TABLES = {"info": ("name", "value"), "docs": ("slot", "doc"), "fields": ("slot", "key", "value")}
_INDEXES = {"fields_key_value", "fields_slot", "sqlite_autoindex_info_1"}


def _schema_problem(source: sqlite3.Connection) -> str | None:
    """What makes the file's schema other than the one this module writes (None: nothing)."""
    tables = set()
    for kind, name in source.execute("SELECT type, name FROM sqlite_master"):
        if kind == "table" and name in _TABLES:
            tables.add(name)
            continue
        if kind == "index" and name in _INDEXES:
            continue
        return f"unexpected {kind} {name!r} in the metadata database (refused: only the tables " \
               f"{sorted(_TABLES)} are read)"
    if tables != set(_TABLES):
        return f"not an embedrank metadata database (missing tables {sorted(set(_TABLES) - tables)})"
    for table, columns in _TABLES.items():
        found = tuple(row[1] for row in source.execute(f"PRAGMA table_info({table})"))
        if found != columns:
            return f"table {table!r} has columns {list(found)}, expected {list(columns)}"
    return None


def _rows_problem(docs: list, fields: list, live_slots: np.ndarray | None) -> str | None:
    """What is wrong with the rows read (None: nothing): types, JSON, and slots not live."""
    doc_slots = set()
    for slot, doc in docs:
        if type(slot) is not int or type(doc) is not str:
            return f"docs row of slot {slot!r} has the wrong types"
        try:
            value = json.loads(doc)
            doc.encode("utf-8")
        except (ValueError, RecursionError):
            return f"docs row of slot {slot} is not valid JSON"
        if not isinstance(value, dict):
            return f"docs row of slot {slot} is not a JSON object"
        doc_slots.add(slot)
    for slot, key, value in fields:
        if type(slot) is not int or type(key) is not str or type(value) is not str:
            return f"fields row of slot {slot!r} has the wrong types"
        if slot not in doc_slots:
            return f"fields row of slot {slot} has no docs row"
    if live_slots is not None:
        dead = doc_slots - set(np.asarray(live_slots).tolist())
        if dead:
            return f"metadata stored for slots that hold no live vector: {sorted(dead)[:5]}"
    return None
