"""IdMap: id normalization, slots, removal, compaction, auto ids and persistence."""

from __future__ import annotations

import numpy as np
import pytest

from embedrank.index.ids import IdMap, normalize_ids, show_ids
from embedrank.index.storage import IndexFormatError


@pytest.mark.parametrize("ids, kind, values", [
    ([3, 1, 2], "int", [3, 1, 2]),
    (np.array([3, 1], dtype=np.uint16), "int", [3, 1]),
    ((np.int64(5), 6), "int", [5, 6]),
    (range(3), "int", [0, 1, 2]),
    (["a", "b"], "str", ["a", "b"]),
    (np.array(["x", "yz"]), "str", ["x", "yz"]),
    (np.array(["x", "y"], dtype=object), "str", ["x", "y"]),
    ([], None, []),
])
def test_normalize_ids(ids, kind, values):
    arr, got_kind = normalize_ids(ids)
    assert got_kind == kind and arr.tolist() == values
    assert arr.dtype == (object if kind == "str" else np.int64)


def test_normalize_single_ids_only_when_allowed():
    assert normalize_ids("abc", single_ok=True)[0].tolist() == ["abc"]
    assert normalize_ids(7, single_ok=True)[0].tolist() == [7]
    with pytest.raises(TypeError, match="single str"):
        normalize_ids("abc")
    with pytest.raises(TypeError, match="got bool"):
        normalize_ids(True, single_ok=True)
    with pytest.raises(ValueError, match=r"\(-1 is the padding"):
        normalize_ids(np.array([1, -1]))


def test_show_ids_caps_long_lists():
    assert show_ids([1, 2]) == "[1, 2]"
    assert show_ids(range(12)).endswith(", ... (12 in all)]")


def test_allocate_find_release_and_padding():
    idmap = IdMap()
    slots = idmap.allocate(np.array(["a", "b", "c"], dtype=object))
    assert slots.tolist() == [0, 1, 2] and idmap.kind == "str" and len(idmap) == 3
    assert idmap.find(np.array(["c", "zz"], dtype=object)).tolist() == [2, -1]
    with pytest.raises(KeyError, match=r"\['zz'\]"):
        idmap.slots_of(np.array(["zz", "a"], dtype=object))
    idmap.release(np.array([1]))
    assert "b" not in idmap and idmap.live_mask().tolist() == [True, False, True]
    assert idmap.ids_of(np.array([[2, -1], [0, 0]])).tolist() == [["c", None], ["a", "a"]]
    assert idmap.allocate(np.array(["b"], dtype=object)).tolist() == [3]  # slots are not reused


def test_auto_ids_continue_past_every_int_id_ever_held():
    idmap = IdMap()
    assert idmap.auto_ids(2).tolist() == [0, 1]
    idmap.allocate(np.array([0, 1, 10]))
    idmap.release(idmap.slots_of(np.array([10])))
    assert idmap.auto_ids(2).tolist() == [11, 12]
    next_auto = idmap.next_auto_id
    slots = idmap.allocate(np.array([50, 51]))
    idmap.undo_allocate(slots, next_auto)
    assert 50 not in idmap and idmap.slot_count == 3 and idmap.auto_ids(1).tolist() == [11]


def test_auto_ids_refuse_to_count_past_the_int64_limit():
    """An index that once held an id near 2**63 - 1 cannot hand out automatic ids beyond it:
    a clear InvalidValueError, not numpy's OverflowError (found by the structure fuzzer)."""
    import embedrank
    from embedrank.errors import InvalidValueError

    top = np.iinfo(np.int64).max
    idmap = IdMap()
    idmap.allocate(np.array([top - 2]))
    assert idmap.auto_ids(2).tolist() == [top - 1, top]  # up to the limit itself is fine
    with pytest.raises(InvalidValueError, match=r"beyond the int64 limit .* pass ids="):
        idmap.auto_ids(3)
    index = embedrank.FlatIndex(4)
    index.add(np.eye(4, dtype=np.float32)[:1], ids=[top])
    with pytest.raises(InvalidValueError, match="int64 limit"):
        index.add(np.eye(4, dtype=np.float32)[1:2])
    assert len(index) == 1  # the refused add left nothing behind
    index.add(np.eye(4, dtype=np.float32)[1:2], ids=[5])
    assert sorted(index.ids().tolist()) == [5, top]


def test_compact_renumbers_live_slots_in_order():
    idmap = IdMap()
    idmap.allocate(np.arange(10, 20))
    idmap.release(np.array([0, 3, 4, 9]))
    kept = idmap.compact()
    assert kept.tolist() == [1, 2, 5, 6, 7, 8]
    assert idmap.slot_count == 6 and idmap.live_ids().tolist() == [11, 12, 15, 16, 17, 18]
    assert idmap.slots_of(np.array([15, 18])).tolist() == [2, 5]


@pytest.mark.parametrize("ids", [np.arange(5, 10), np.array(["é", "b", "c", "d", "e"], dtype=object)])
def test_save_and_load_with_dead_slots(tmp_path, ids):
    idmap = IdMap()
    idmap.allocate(ids)
    idmap.release(np.array([1]))
    names = idmap.save(tmp_path)
    loaded = IdMap.load(tmp_path, idmap.state(), IndexFormatError)
    assert len(names) == 1 and loaded.kind == idmap.kind and loaded.slot_count == 5
    assert loaded.live_ids().tolist() == idmap.live_ids().tolist()
    assert loaded.next_auto_id == idmap.next_auto_id and ids[1] not in loaded


def test_load_rejects_inconsistent_tables(tmp_path):
    idmap = IdMap()
    idmap.allocate(np.array([1, 2, 3]))
    idmap.save(tmp_path)
    with pytest.raises(IndexFormatError, match="holds 3 slots but the manifest says 4"):
        IdMap.load(tmp_path, {**idmap.state(), "slot_count": 4}, IndexFormatError)
    np.save(tmp_path / "ids.npy", np.array([1, 1, 2]))
    with pytest.raises(IndexFormatError, match="same id is stored in two slots"):
        IdMap.load(tmp_path, idmap.state(), IndexFormatError)
    np.save(tmp_path / "ids.npy", np.array([1.0, 2.0, 3.0]))
    with pytest.raises(IndexFormatError, match="expected a 1-D int64 array"):
        IdMap.load(tmp_path, idmap.state(), IndexFormatError)
    with pytest.raises(IndexFormatError, match="bad id fields"):
        IdMap.load(tmp_path, {**idmap.state(), "id_kind": "uuid"}, IndexFormatError)
