"""BaseIndex: what every index class shares (ids, metadata, filters, locking, persistence).

The public protocol (``add``, ``search``, ``remove``, ``save``, ``len``, ``dim``, ``ids``,
``get_metadata``, ``in``) lives here; a subclass stores and searches vectors by *slot* (an
internal int64 label handed out by :class:`~embedrank.index.ids.IdMap`) through the hooks
below:

A concrete subclass names its manifest type in ``_type_name``; defining the class registers
it with :mod:`embedrank.index.io`, which saves and loads every index type.

Required hooks
    ``_add_vectors(slots, vectors)``: slots int64 [n] (fresh, increasing), vectors float32
    [n, dim] C-contiguous and finite. ``_remove_slots(slots)``: the slots are live.
    ``_search_slots(queries, k, allowed, params) -> (scores float32 [Q, k], slots int64 [Q, k])``
    with -inf / -1 padding; ``allowed`` is None (every live slot) or a bool mask of length
    ``self._idmap.slot_count`` (>= max slot + 1) that is already False for removed slots;
    ``params`` holds only the per-call overrides the caller passed (names already checked
    against ``_search_params()``); the hook must never return a removed or disallowed slot.
    ``_search_params() -> set[str]``. ``_config() -> dict`` (JSON-able; ``cls(dim=..., **config)``
    rebuilds an empty index). ``_save_payload(directory) -> list[str]``.
    ``_load_payload(cls, directory, manifest, mmap) -> instance`` (classmethod).

Optional hooks (each has a do-nothing default here)
    ``_replace_slots(slots, vectors)``: in-place replacement for upsert. Without it an upsert
    removes the old slots and adds the vectors under new slots, in one write lock.
    ``_prepare_add(n_fresh)``: called under the write lock before an add changes anything (a
    FlatIndex reserves its RAM and disk there, so running out leaves the index unchanged).
    ``_after_remove()``: called under the write lock after every remove or upsert, when the
    IdMap and metadata already reflect it (FlatIndex compacts there).
    ``_prepare_save()``: called under the write lock just before a save (FlatIndex compacts
    its tombstones there); the files themselves are written under the read lock.
    ``_after_load()``: called after the base restored the IdMap and metadata on load.
    ``_memory_bytes() -> int``: vector storage in bytes (0 by default), for benchmarks.
    A subclass that renumbers its slots calls ``self._renumber_slots()`` under the write lock:
    it renumbers the live slots 0..n-1 (order kept) in the IdMap and the metadata and returns
    the old slot of each new slot, so the subclass can move its own rows.

Scores are whatever the subclass computes (inner products for both classes); results are
sorted best first. Concurrency: searches (and other reads) share a read lock; add, remove
and upsert take the write lock; save takes the write lock for ``_prepare_save`` and then the
read lock while files are written (searches continue meanwhile).
"""

from __future__ import annotations

import numbers
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from embedrank.errors import IndexFormatError, InvalidTypeError, InvalidValueError
from embedrank.index.ids import IdMap, duplicates, normalize_ids, show_ids
from embedrank.index.io import load_index, register_index_type, save_index
from embedrank.index.metadata import MetadataStore, prepare_metadata
from embedrank.index.result import SearchResult
from embedrank.index.rwlock import ReadWriteLock
from embedrank.index.storage import MAX_DIM

__all__ = ["BaseIndex", "MAX_PADDED_K", "check_dim", "check_k", "check_add_ids", "as_vectors", "as_queries"]

# search() pads results to k columns only up to this many: a k far above the index size must
# not allocate k-sized outputs (see BaseIndex.search).
MAX_PADDED_K = 1024


def check_dim(dim) -> int:
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or dim < 1:
        raise InvalidValueError(f"dim must be a positive integer, got {dim!r}")
    if dim > MAX_DIM:
        raise InvalidValueError(f"dim must be at most {MAX_DIM}, got {int(dim)}")
    return int(dim)


def check_k(k) -> int:
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, numbers.Integral):
        raise InvalidTypeError(f"k must be an integer, got {type(k).__name__} ({k!r})")
    if k < 1:
        raise InvalidValueError(f"k must be >= 1, got {int(k)}")
    return int(k)


def check_add_ids(ids, n: int) -> tuple[np.ndarray | None, str | None]:
    """add()'s `ids` for n items: (None, None) for ids=None, else (the ids, "int" or "str");
    InvalidValueError when there are not n of them or one repeats."""
    if ids is None:
        return None, None
    given, kind = normalize_ids([ids] if isinstance(ids, str) else ids)
    if len(given) != n:
        raise InvalidValueError(f"got {len(given)} ids for {n} vectors")
    dup = duplicates(given)
    if dup:
        raise InvalidValueError(f"ids repeated within this add: {show_ids(dup)}")
    return given, kind


def _as_float_matrix(x, name: str, dim: int) -> np.ndarray:
    if type(x) is np.ndarray and x.dtype == np.float32 and x.flags.c_contiguous and x.shape[-1:] == (dim,) \
            and x.ndim <= 2 and np.isfinite(x).all():
        return x if x.ndim == 2 else x.reshape(1, dim)  # the usual case, without the checks' cost
    if x is None:
        raise InvalidTypeError(f"{name} must be an array of floats, got None")
    if isinstance(x, np.ndarray) and x.dtype.kind in "biu":
        raise InvalidTypeError(f"{name} must be floating point (float32 preferred), got {x.dtype} array of shape {x.shape}; "
                        "integer codes are not vectors (convert with .astype(np.float32) if that is meant)")
    try:
        a = np.asarray(x)
    except (ValueError, TypeError) as exc:
        raise InvalidTypeError(f"{name} could not be read as an array: {exc}") from None
    if a.dtype.kind not in "fiu":
        raise InvalidTypeError(f"{name} must hold real numbers (float32 preferred), got {a.dtype} array of shape {a.shape}")
    if a.ndim == 1:
        a = a.reshape(1, -1)
    if a.ndim != 2:
        raise InvalidValueError(f"{name} must be [n, {dim}] (or [{dim}] for one), got {a.dtype} array of shape {a.shape}")
    if a.shape[1] != dim:
        raise InvalidValueError(f"{name} have dimension {a.shape[1]} but the index has dimension {dim} "
                         f"(got {a.dtype} array of shape {a.shape})")
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.ascontiguousarray(a, dtype=np.float32)
    finite = np.isfinite(out)
    if not finite.all():
        bad = np.argwhere(~finite)[0]
        overflow = a.dtype.kind == "f" and a.dtype != np.float32 and bool(np.isfinite(a).all())
        what = "values too large for float32" if overflow else "NaN or Inf"
        raise InvalidValueError(f"{name} contain {what} (first at row {int(bad[0])}, column {int(bad[1])})")
    return out


def as_vectors(vectors, dim: int) -> np.ndarray:
    """`vectors` [n, dim] (or [dim]) as C-contiguous finite float32."""
    return _as_float_matrix(vectors, "vectors", dim)


def as_queries(queries, dim: int) -> np.ndarray:
    """`queries` [Q, dim] (or [dim]) as C-contiguous finite float32."""
    return _as_float_matrix(queries, "queries", dim)


class BaseIndex(ABC):
    """Common machinery of FlatIndex and HNSWIndex; see the module docstring for the hooks."""

    _type_name: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        # a concrete class names its manifest type; embedrank.index.io builds it on load
        if cls.__dict__.get("_type_name"):
            register_index_type(cls._type_name, cls)

    def __init__(self, dim: int | None) -> None:
        # None: an index of texts rather than vectors (LexicalIndex); its items and queries go
        # through the _as_items / _as_queries hooks instead of the float checks
        self._dim = None if dim is None else check_dim(dim)
        self._lock = ReadWriteLock()
        self._save_mutex = threading.Lock()  # one save at a time per instance
        self._idmap = IdMap()
        self._metadata = MetadataStore()

    # -- hooks ---------------------------------------------------------------------------
    @abstractmethod
    def _add_vectors(self, slots: np.ndarray, vectors: np.ndarray) -> None: ...

    @abstractmethod
    def _remove_slots(self, slots: np.ndarray) -> None: ...

    @abstractmethod
    def _search_slots(self, queries: np.ndarray, k: int, allowed: np.ndarray | None,
                      params: dict) -> tuple[np.ndarray, np.ndarray]: ...

    @abstractmethod
    def _search_params(self) -> set[str]: ...

    @abstractmethod
    def _config(self) -> dict: ...

    @abstractmethod
    def _save_payload(self, directory: Path) -> list[str]: ...

    @classmethod
    @abstractmethod
    def _load_payload(cls, directory: Path, manifest: dict, mmap: bool) -> BaseIndex: ...

    def _prepare_add(self, n_fresh: int) -> None:
        """Called under the write lock before an add changes anything, with the number of new
        vectors; a subclass takes the room it needs here so a failure leaves the index as it was."""

    def _after_remove(self) -> None:
        """Optional: runs under the write lock after a remove or an upsert."""

    def _prepare_save(self) -> None:
        """Optional: runs under the write lock just before the files are written."""

    def _after_load(self) -> None:
        """Optional: runs after load restored the IdMap and the metadata."""

    def _memory_bytes(self) -> int:
        return 0

    def _as_items(self, items):
        """What add() stores, checked: float32 [n, dim] for vector indexes. Whatever it returns
        must support len() and boolean-mask indexing (rows kept in order)."""
        return as_vectors(items, self._dim)

    def _as_queries(self, queries):
        """What search() takes, checked: float32 [Q, dim] for vector indexes (len() = Q)."""
        return as_queries(queries, self._dim)

    def _renumber_slots(self) -> np.ndarray:
        """Renumbers live slots 0..n-1 (order kept) in the IdMap and metadata; call under the
        write lock. Returns kept_old_slots: new slot i was old slot kept_old_slots[i]."""
        kept = self._idmap.compact()
        self._metadata.remap(kept)
        return kept

    # -- properties ----------------------------------------------------------------------
    @property
    def dim(self) -> int | None:
        """The dimension of the stored vectors (None for an index of texts)."""
        return self._dim

    def __len__(self) -> int:
        """The number of live vectors."""
        with self._lock.read():
            return len(self._idmap)

    def __contains__(self, user_id) -> bool:
        try:
            ids = normalize_ids([user_id])[0]
        except (TypeError, ValueError):
            return False
        with self._lock.read():
            if self._idmap.kind is not None and (ids.dtype == object) != (self._idmap.kind == "str"):
                return False
            return ids.tolist()[0] in self._idmap

    def ids(self) -> np.ndarray:
        """The live ids, in insertion order (int64 array, or an object array of str)."""
        with self._lock.read():
            if self._idmap.kind is None:
                return np.empty(0, dtype=np.int64)
            return self._idmap.live_ids()

    def get_metadata(self, ids) -> list[dict | None]:
        """The metadata dict of each id (None where it was stored without); KeyError for unknown ids."""
        with self._lock.read():
            slots = self._idmap.slots_of(self._idmap.normalize(ids, single_ok=True))
            return self._metadata.get(slots)

    def __repr__(self) -> str:
        config = ", ".join(f"{k}={v!r}" for k, v in self._config().items())
        dim = "" if self._dim is None else f"dim={self._dim}{', ' if config else ''}"
        what = "vectors" if self._dim is not None else "documents"
        return f"{type(self).__name__}({dim}{config}) with {len(self)} {what}"

    # -- add -----------------------------------------------------------------------------
    def add(self, vectors, ids=None, metadata=None, *, upsert: bool = False) -> np.ndarray:
        """Adds vectors [n, dim] (or [dim]) float; returns their ids.

        ids: None (fresh int ids: one past the largest int id ever held, upwards) or n ids,
        all int (>= 0) or all str, the same kind as the index already holds. metadata: None or
        n dicts (JSON-serializable, str keys) or None entries. An id already present (or
        repeated in `ids`): ValueError naming it, unless upsert=True, which replaces that
        vector and its metadata (a None entry, or metadata=None, leaves it without metadata).
        Nothing is changed when an error is raised.
        """
        x = self._as_items(vectors)
        n = len(x)
        prepared = prepare_metadata(metadata, n)
        given, kind = check_add_ids(ids, n)
        with self._lock.write():
            if given is None:
                given = self._idmap.auto_ids(n) if n or self._idmap.kind != "str" else np.empty(0, dtype=object)
            else:
                self._idmap.check_kind(kind)
            if n == 0:
                return given
            existing = self._idmap.find(given)
            present = existing >= 0
            if present.any() and not upsert:
                raise InvalidValueError(f"ids already in the index: {show_ids(given[present].tolist())} "
                                 "(pass upsert=True to replace them)")
            fresh = ~present
            self._prepare_add(int(fresh.sum()))  # may raise (no memory or disk): nothing changed yet
            if present.any():
                self._replace(existing[present], x[present], _subset(prepared, present))
            if fresh.any():
                self._insert(given[fresh], x[fresh], _subset(prepared, fresh))  # a mask's rows: a fresh copy
            if present.any():
                self._after_remove()
            return given

    def _insert(self, ids: np.ndarray, vectors: np.ndarray, prepared) -> None:
        next_auto = self._idmap.next_auto_id
        slots = self._idmap.allocate(ids)
        try:
            self._add_vectors(slots, vectors)
        except BaseException:
            self._idmap.undo_allocate(slots, next_auto)
            raise
        try:
            self._metadata.put(slots, prepared)  # checked by prepare_metadata: fails only on a bug or no memory
        except BaseException:
            self._remove_slots(slots)
            self._idmap.release(slots)
            raise

    def _replace(self, old_slots: np.ndarray, vectors: np.ndarray, prepared) -> None:
        replace = getattr(self, "_replace_slots", None)
        if replace is not None:
            replace(old_slots, vectors)
            self._metadata.put(old_slots, prepared)
            return
        ids = self._idmap.ids_of(old_slots)
        self._remove_slots(old_slots)
        self._idmap.release(old_slots)
        self._metadata.delete(old_slots)
        self._insert(ids, vectors, prepared)

    # -- remove --------------------------------------------------------------------------
    def remove(self, ids) -> None:
        """Removes ids (a sequence, or one id). Unknown ids: KeyError listing them, nothing removed."""
        wanted, kind = normalize_ids(ids, single_ok=True)
        with self._lock.write():
            self._idmap.check_kind(kind)
            slots = np.unique(self._idmap.slots_of(wanted))
            if slots.size == 0:
                return
            self._remove_slots(slots)
            self._idmap.release(slots)
            self._metadata.delete(slots)
            self._after_remove()

    # -- search --------------------------------------------------------------------------
    def search(self, queries, k: int, filter=None, *, return_metadata: bool = False, **params: Any) -> SearchResult:
        """The k best vectors per query: queries [Q, dim] (or [dim]) float -> SearchResult [Q, k].

        filter: None, a sequence/array of allowed ids (ids not in the index simply never match;
        ids of the other kind are a TypeError), or a dict of metadata conditions
        ``{"field": value, "field2": [v1, v2]}`` (equality / in-set, AND; a field no live
        vector has matches nothing). When fewer than k vectors exist or pass the filter, rows
        are padded with id -1 (None for str ids) and score -inf; searching an empty index
        returns only padding. Columns: ``min(k, max(len(index), MAX_PADDED_K))``, so padding
        stops at MAX_PADDED_K (1024) columns when k is above both that and the number of
        vectors (k = 10**7 on 4 vectors gives 1024 columns, not 10**7). params: per-call
        overrides of the index's search settings (see the class); unknown names are a TypeError.
        """
        unknown = sorted(set(params) - self._search_params())
        if unknown:
            raise InvalidTypeError(f"{type(self).__name__}.search() got unknown parameter(s) {unknown}; "
                            f"accepted: {sorted(self._search_params())}")
        k = check_k(k)
        q = self._as_queries(queries)
        if filter is not None and not isinstance(filter, (Mapping, np.ndarray, list, tuple, set, frozenset, range)):
            raise InvalidTypeError("filter must be None, a sequence of allowed ids or a dict of metadata conditions, "
                            f"got {type(filter).__name__}")
        with self._lock.read():
            k = min(k, max(len(self._idmap), MAX_PADDED_K))
            allowed = self._allowed(filter)
            nq = len(q)
            nothing = len(self._idmap) == 0 or (allowed is not None and not allowed.any())
            if nothing or nq == 0:
                scores = np.full((nq, k), -np.inf, dtype=np.float32)
                slots = np.full((nq, k), -1, dtype=np.int64)
            else:
                scores, slots = self._search_slots(q, k, allowed, dict(params))
            ids = self._idmap.ids_of(slots)
            meta = None
            if return_metadata:
                flat = self._metadata.get(slots.reshape(-1))
                meta = [flat[row * k:(row + 1) * k] for row in range(nq)]
        return SearchResult(ids=ids, scores=np.ascontiguousarray(scores, dtype=np.float32), metadata=meta)

    def _allowed(self, filter) -> np.ndarray | None:
        """The filter as a bool mask over slots (live ones only), or None for no filter."""
        if filter is None:
            return None
        if isinstance(filter, Mapping):
            slots = self._metadata.match(filter)
            if slots is None:
                return None
        else:
            ids = normalize_ids(list(filter) if isinstance(filter, (set, frozenset)) else filter)[0]
            if ids.size:
                try:
                    self._idmap.check_kind("str" if ids.dtype == object else "int")
                except TypeError as exc:
                    raise InvalidTypeError(f"filter: {exc}") from None
            slots = self._idmap.find(ids)
            slots = slots[slots >= 0]
        mask = np.zeros(self._idmap.slot_count, dtype=bool)
        mask[slots] = True
        return mask

    # -- persistence ---------------------------------------------------------------------
    def save(self, path, *, timeout: float | None = None) -> Path:
        """Saves the index as a directory at `path` (atomically replacing an index there).

        A crash at any moment of the save leaves the previous index (or the new one) loadable.
        Anything at `path` that is not an embedrank index is never overwritten (IndexFormatError).
        Saves to one path run one at a time, across threads and processes (an OS lock on the
        hidden file ``.NAME.lock`` beside it): a second save waits, and a load of the path
        waits for the save to finish. timeout: seconds to wait for another save or load of
        `path` (None: no limit), then LockTimeoutError with nothing written. Returns the
        absolute path.
        """
        with self._save_mutex:
            return save_index(self, path, timeout=timeout)

    @classmethod
    def load(cls, path, mmap: bool = True, *, verify: bool = True, timeout: float | None = None) -> BaseIndex:
        """Loads an index saved by this class (see :func:`embedrank.load_index`)."""
        index = load_index(path, mmap=mmap, verify=verify, timeout=timeout)
        if not isinstance(index, cls):
            raise IndexFormatError(f"{Path(path).absolute()} holds a {type(index).__name__}, not a {cls.__name__}")
        return index


def _subset(prepared, mask: np.ndarray):
    if prepared is None:
        return None
    return [p for p, keep in zip(prepared, mask.tolist()) if keep]
