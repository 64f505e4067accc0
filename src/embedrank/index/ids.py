"""IdMap: user ids (int64 or str, one kind per index) <-> internal int64 slots.

A slot is the index's own label for a stored vector (a row for FlatIndex, a graph label for
HNSWIndex). Slots are handed out in increasing order and never reused, except that
:meth:`IdMap.compact` renumbers the live slots densely (0..n-1, keeping their order) for a
class that compacts its storage. Int ids are non-negative int64 (-1 is the padding value
in results); str ids are any Python str (None is their padding).
"""

from __future__ import annotations
from embedrank.errors import InvalidTypeError, InvalidValueError, UnknownIdError

import json
import numbers
import tokenize
from pathlib import Path

import numpy as np

__all__ = ["IdMap", "INT_IDS_FILE", "STR_IDS_FILE"]

INT_IDS_FILE = "ids.npy"
STR_IDS_FILE = "ids.json"
_INT64_MAX = np.iinfo(np.int64).max
_SHOWN = 10  # ids named in an error message


def show_ids(ids) -> str:
    """At most _SHOWN ids for an error message, with the total count when there are more."""
    ids = list(ids)
    text = ", ".join(repr(i) for i in ids[:_SHOWN])
    more = f", ... ({len(ids)} in all)" if len(ids) > _SHOWN else ""
    return f"[{text}{more}]"


def _kind_of_value(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        raise InvalidTypeError(f"ids must be int or str, got a bool ({value!r})")
    if isinstance(value, numbers.Integral):
        return "int"
    if isinstance(value, str):
        return "str"
    raise InvalidTypeError(f"ids must be int or str, got {type(value).__name__} ({value!r})")


def normalize_ids(ids, *, single_ok: bool = False) -> tuple[np.ndarray, str | None]:
    """`ids` as (array, kind): an int64 array ("int") or an object array of str ("str").

    Accepts a sequence or a 1-D array; with `single_ok` a lone int or str is one id. An empty
    input gives kind None. Mixing ints and strs, bools, floats or None: TypeError; a negative
    or too large int: ValueError.
    """
    if single_ok and (isinstance(ids, (str, numbers.Integral)) and not isinstance(ids, (bool, np.bool_))):
        ids = [ids]
    if isinstance(ids, (str, bytes)):
        raise InvalidTypeError("ids must be a sequence of ids, got a single str (wrap it in a list)")
    if isinstance(ids, np.ndarray):
        if ids.ndim != 1:
            raise InvalidValueError(f"ids must be 1-D, got an array of shape {ids.shape}")
        if ids.dtype.kind in "iu":
            if ids.size and ids.dtype.kind == "u" and ids.max() > _INT64_MAX:
                raise InvalidValueError(f"ids must fit in int64, got {int(ids.max())}")
            arr = ids.astype(np.int64, copy=True)
            return _check_ints(arr), ("int" if arr.size else None)
        if ids.dtype.kind == "U":
            values = ids.tolist()
            _check_strs(values)
            return np.array(values, dtype=object), ("str" if ids.size else None)
        if ids.dtype.kind != "O":
            raise InvalidTypeError(f"ids must be int or str, got an array of dtype {ids.dtype}")
        values = ids.tolist()
    else:
        try:
            values = list(ids)
        except TypeError:
            raise InvalidTypeError(f"ids must be a sequence of int or str, got {type(ids).__name__}") from None
    if not values:
        return np.empty(0, dtype=np.int64), None
    kinds = {_kind_of_value(v) for v in values}
    if len(kinds) > 1:
        raise InvalidTypeError("ids mix int and str: one index holds one kind of id")
    kind = kinds.pop()
    if kind == "int":
        ints = [int(v) for v in values]
        if max(ints) > _INT64_MAX:
            raise InvalidValueError(f"ids must fit in int64, got {max(ints)}")
        if min(ints) < 0:
            arr = np.array([i for i in ints if i < 0][:_SHOWN], dtype=object)
            raise InvalidValueError(f"int ids must be >= 0 (-1 is the padding of results), got {show_ids(arr)}")
        return np.array(ints, dtype=np.int64), "int"
    _check_strs(values)
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr, "str"


def _check_strs(values: list) -> None:
    """Str ids must be valid Unicode: a lone surrogate cannot be written to ids.json (UTF-8)."""
    try:
        "".join(values).encode("utf-8")
    except UnicodeEncodeError:
        bad = [v for v in values if not _encodable(v)]
        raise InvalidValueError(f"str ids must be valid Unicode, got {show_ids(bad)} (a lone surrogate "
                                "cannot be saved)") from None


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_ints(arr: np.ndarray) -> np.ndarray:
    if arr.size and arr.min() < 0:
        raise InvalidValueError(f"int ids must be >= 0 (-1 is the padding of results), got {show_ids(arr[arr < 0])}")
    return arr


def duplicates(ids: np.ndarray) -> list:
    """The ids that occur more than once in `ids` (each once, in first-seen order)."""
    seen: set = set()
    dup: dict = {}
    for value in ids.tolist():
        if value in seen:
            dup[value] = None
        seen.add(value)
    return list(dup)


class IdMap:
    """The two-way map between user ids and slots, with the live/removed state of each slot."""

    def __init__(self) -> None:
        self.kind: str | None = None
        self._slot_ids = np.full(0, -1, dtype=np.int64)  # int64 (-1 dead) or object (None dead)
        self._live = np.zeros(0, dtype=bool)
        self._slot_count = 0
        self._slots: dict = {}  # live id -> slot
        self._next_auto = 0

    # -- size ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._slots)

    @property
    def slot_count(self) -> int:
        """One past the highest slot handed out (the length of :meth:`live_mask`)."""
        return self._slot_count

    @property
    def next_auto_id(self) -> int:
        return self._next_auto

    # -- checks --------------------------------------------------------------------------
    def check_kind(self, kind: str | None) -> None:
        if kind is not None and self.kind is not None and kind != self.kind:
            raise InvalidTypeError(f"this index holds {self.kind} ids, got {kind} ids (one kind of id per index)")

    def normalize(self, ids, *, single_ok: bool = False) -> np.ndarray:
        arr, kind = normalize_ids(ids, single_ok=single_ok)
        self.check_kind(kind)
        return arr

    # -- lookups -------------------------------------------------------------------------
    def find(self, ids: np.ndarray) -> np.ndarray:
        """Slots of `ids` (normalized), -1 where an id is not live."""
        get = self._slots.get
        return np.fromiter((get(i, -1) for i in ids.tolist()), dtype=np.int64, count=len(ids))

    def slots_of(self, ids: np.ndarray) -> np.ndarray:
        """Slots of `ids` (normalized); KeyError listing every id that is not in the index."""
        slots = self.find(ids)
        missing = ids[slots < 0]
        if missing.size:
            raise UnknownIdError(f"ids not in the index: {show_ids(missing.tolist())}")
        return slots

    def ids_of(self, slots: np.ndarray) -> np.ndarray:
        """User ids of `slots` (any shape, -1 = padding): int64 with -1, or object with None."""
        slots = np.asarray(slots, dtype=np.int64)
        if self.kind == "int" and slots.size and slots.min() >= 0:  # no padding: one gather
            return self._slot_ids[slots]
        pad = slots < 0
        if self.kind == "str":
            out = self._slot_ids[np.where(pad, 0, slots)] if self._slot_count else np.full(slots.shape, None, dtype=object)
            out = np.array(out, dtype=object, copy=True)
            out[pad] = None
            return out
        if not self._slot_count:
            return np.full(slots.shape, -1, dtype=np.int64)
        return np.where(pad, -1, self._slot_ids[np.where(pad, 0, slots)]).astype(np.int64)

    def live_mask(self) -> np.ndarray:
        """bool [slot_count]: True for live slots (a copy)."""
        return self._live[: self._slot_count].copy()

    def live_view(self) -> np.ndarray:
        """bool [slot_count]: a read-only view of the live flags (valid until the next change)."""
        view = self._live[: self._slot_count].view()
        view.setflags(write=False)
        return view

    def live_slots(self) -> np.ndarray:
        return np.flatnonzero(self._live[: self._slot_count])

    def live_ids(self) -> np.ndarray:
        """The live ids in slot order (int64 or object array of str)."""
        return self._slot_ids[self.live_slots()].copy()

    def __contains__(self, user_id) -> bool:
        return user_id in self._slots

    # -- changes -------------------------------------------------------------------------
    def auto_ids(self, n: int) -> np.ndarray:
        """n fresh int ids: one past the largest int id this index has ever held, upwards."""
        if self.kind == "str":
            raise InvalidTypeError("this index holds str ids: pass ids= to add()")
        if self._next_auto + n - 1 > _INT64_MAX:
            # the index once held an id near the int64 limit: counting on from it cannot work
            raise InvalidValueError(f"cannot give {n} automatic ids: they would count on from {self._next_auto} "
                                    f"(one past the largest id this index has held) beyond the int64 limit "
                                    f"{_INT64_MAX}; pass ids= to add()")
        return np.arange(self._next_auto, self._next_auto + n, dtype=np.int64)

    def _reserve(self, needed: int) -> None:
        capacity = self._live.shape[0]
        if needed <= capacity:
            return
        new_capacity = max(needed, 2 * capacity, 1024)
        live = np.zeros(new_capacity, dtype=bool)
        live[: self._slot_count] = self._live[: self._slot_count]
        if self.kind == "str":
            slot_ids = np.full(new_capacity, None, dtype=object)
        else:
            slot_ids = np.full(new_capacity, -1, dtype=np.int64)
        slot_ids[: self._slot_count] = self._slot_ids[: self._slot_count]
        self._live, self._slot_ids = live, slot_ids

    def allocate(self, ids: np.ndarray) -> np.ndarray:
        """New slots for `ids` (normalized, none of them live): returns the slots."""
        n = len(ids)
        if n == 0:
            return np.empty(0, dtype=np.int64)
        kind = "str" if ids.dtype == object else "int"
        self.check_kind(kind)
        if self.kind is None:
            self.kind = kind
            self._slot_ids = np.full(self._live.shape[0], None if kind == "str" else -1,
                                     dtype=object if kind == "str" else np.int64)
        start = self._slot_count
        self._reserve(start + n)
        slots = np.arange(start, start + n, dtype=np.int64)
        self._slot_ids[start: start + n] = ids
        self._live[start: start + n] = True
        self._slot_count = start + n
        self._slots.update(zip(ids.tolist(), slots.tolist()))
        if kind == "int":
            self._next_auto = max(self._next_auto, int(ids.max()) + 1)
        return slots

    def undo_allocate(self, slots: np.ndarray, next_auto: int) -> None:
        """Takes back the slots of the last :meth:`allocate` (when storing the vectors failed)."""
        for user_id in self._slot_ids[slots].tolist():
            self._slots.pop(user_id, None)
        self._live[slots] = False
        self._slot_ids[slots] = None if self.kind == "str" else -1
        if slots.size and int(slots.max()) == self._slot_count - 1:
            self._slot_count = int(slots.min())
        self._next_auto = next_auto

    def release(self, slots: np.ndarray) -> None:
        """Marks `slots` removed (they must be live)."""
        for user_id in self._slot_ids[slots].tolist():
            del self._slots[user_id]
        self._live[slots] = False
        self._slot_ids[slots] = None if self.kind == "str" else -1

    def compact(self) -> np.ndarray:
        """Renumbers the live slots 0..n-1 in their order; returns the old slot of each new slot."""
        kept = self.live_slots()
        n = kept.size
        ids = self._slot_ids[kept].copy()
        self._slot_ids[:n] = ids
        self._slot_ids[n: self._slot_count] = None if self.kind == "str" else -1
        self._live[:n] = True
        self._live[n: self._slot_count] = False
        self._slot_count = n
        self._slots = dict(zip(ids.tolist(), range(n)))
        return kept

    # -- persistence ---------------------------------------------------------------------
    def state(self) -> dict:
        """The manifest fields: id kind, next auto id, slot count."""
        return {"id_kind": self.kind, "next_auto_id": self._next_auto, "slot_count": self._slot_count}

    def save(self, directory: Path) -> list[str]:
        """Writes the slot -> id table (dead slots: -1 / null); returns the file name."""
        table = self._slot_ids[: self._slot_count]
        if self.kind == "str":
            path = directory / STR_IDS_FILE
            path.write_text(json.dumps(table.tolist(), ensure_ascii=False), encoding="utf-8")
            return [STR_IDS_FILE]
        with open(directory / INT_IDS_FILE, "wb") as handle:
            np.save(handle, np.ascontiguousarray(table, dtype=np.int64), allow_pickle=False)
        return [INT_IDS_FILE]

    @classmethod
    def load(cls, directory: Path, state: dict, error: type[Exception]) -> IdMap:
        """Reads what :meth:`save` wrote; inconsistencies raise `error` naming the file."""
        kind = state.get("id_kind")
        slot_count = state.get("slot_count")
        next_auto = state.get("next_auto_id")
        if kind not in (None, "int", "str") or type(slot_count) is not int or type(next_auto) is not int \
                or slot_count < 0 or next_auto < 0:
            raise error(f"{directory / 'manifest.json'}: bad id fields (id_kind={kind!r}, slot_count={slot_count!r}, "
                        f"next_auto_id={next_auto!r})")
        idmap = cls()
        idmap._next_auto = next_auto
        if kind is None:
            if slot_count:
                raise error(f"{directory / 'manifest.json'}: slot_count={slot_count} but no id kind")
            return idmap
        if kind == "str":
            path = directory / STR_IDS_FILE
            try:
                values = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise error(f"{path}: cannot read the str ids ({exc})") from None
            if not isinstance(values, list) or not all(v is None or isinstance(v, str) for v in values):
                raise error(f"{path}: expected a JSON list of str or null")
            if not all(v is None or _encodable(v) for v in values):
                raise error(f"{path}: holds a str id that is not valid Unicode (a lone surrogate)")
            table = np.empty(len(values), dtype=object)
            table[:] = values
            live = np.array([v is not None for v in values], dtype=bool)
        else:
            path = directory / INT_IDS_FILE
            try:
                table = np.load(path, allow_pickle=False)
            except (OSError, ValueError, EOFError, SyntaxError, tokenize.TokenError) as exc:
                raise error(f"{path}: cannot read the int ids ({exc})") from None
            if table.dtype != np.int64 or table.ndim != 1:
                raise error(f"{path}: expected a 1-D int64 array, got {table.dtype} of shape {table.shape}")
            if table.size and int(table.min()) < -1:
                raise error(f"{path}: holds id {int(table.min())} (ids are >= 0, -1 marks a removed slot)")
            live = table >= 0
            if live.any() and next_auto <= int(table.max()):
                raise error(f"{directory / 'manifest.json'}: next_auto_id={next_auto} would hand out an id the "
                            f"index already holds (largest: {int(table.max())})")
        if table.shape[0] != slot_count:
            raise error(f"{path}: holds {table.shape[0]} slots but the manifest says {slot_count}")
        idmap.kind = kind
        idmap._slot_ids = np.array(table, copy=True)
        idmap._live = live
        idmap._slot_count = slot_count
        live_slots = np.flatnonzero(live)
        live_ids = table[live_slots].tolist()
        idmap._slots = dict(zip(live_ids, live_slots.tolist()))
        if len(idmap._slots) != live_slots.size:
            raise error(f"{path}: the same id is stored in two slots")
        return idmap
