"""MetadataStore: preparation, canonical matching, remapping and its SQLite file."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from embedrank.index.metadata import MetadataStore, canonical, prepare_metadata
from embedrank.index.storage import IndexFormatError


def store_with(docs: list) -> MetadataStore:
    store = MetadataStore()
    store.put(np.arange(len(docs)), prepare_metadata(docs, len(docs)))
    return store


@pytest.mark.parametrize("value, text", [
    (1, "1"), (1.0, "1"), (np.int32(4), "4"), (np.float64(2.5), "2.5"), (True, "true"), (None, "null"),
    ("é", '"é"'), (2**60 + 0.0, str(2**60)), (-3.0, "-3"), (1e300, "1e+300"),
])
def test_canonical_values(value, text):
    assert canonical(value, "x") == text


def test_put_get_replace_delete():
    store = store_with([{"a": 1}, None, {"b": [1, {"c": 2}]}])
    assert store.get([0, 1, 2, -1, 99]) == [{"a": 1}, None, {"b": [1, {"c": 2}]}, None, None]
    store.put(np.array([0]), prepare_metadata([{"z": "new"}], 1))
    assert store.get([0]) == [{"z": "new"}] and store.fields() == ["b", "z"]
    store.put(np.array([2]), None)
    assert store.get([2]) == [None] and store.count() == 1
    store.delete(np.array([0]))
    assert store.count() == 0 and store.fields() == []


def test_match_in_sets_and_cache_invalidation():
    store = store_with([{"k": "a"}, {"k": "b"}, {"k": "a", "n": 1}])
    assert store.match({"k": "a"}).tolist() == [0, 2]
    assert store.match({"k": ["a", "b"], "n": 1.0}).tolist() == [2]
    assert store.match({}) is None
    first = store.match({"k": "b"})
    assert store.match({"k": "b"}) is first  # cached
    store.put(np.array([3]), prepare_metadata([{"k": "b"}], 1))
    assert store.match({"k": "b"}).tolist() == [1, 3]  # the cache was dropped on change
    with pytest.raises(ValueError, match="writeable|read-only"):
        first[0] = 5


def test_large_in_sets_and_many_slots_are_chunked():
    n = 2500
    store = store_with([{"i": i} for i in range(n)])
    assert store.match({"i": list(range(0, n, 2))}).size == n // 2
    assert len(store.get(np.arange(n))) == n


def test_remap_after_compaction():
    store = store_with([{"i": i, "even": i % 2 == 0} for i in range(6)])
    store.delete(np.array([0, 3]))
    store.remap(np.array([1, 2, 4, 5]))
    assert store.get([0, 1, 2, 3]) == [{"i": 1, "even": False}, {"i": 2, "even": True}, {"i": 4, "even": True},
                                       {"i": 5, "even": False}]
    assert store.match({"even": True}).tolist() == [1, 2]


def test_save_and_load(tmp_path):
    store = store_with([{"i": i, "s": "x" * i} for i in range(100)])
    store.save(tmp_path / "m.sqlite")
    loaded = MetadataStore.load(tmp_path / "m.sqlite", IndexFormatError)
    assert loaded.get(range(100)) == store.get(range(100))
    loaded.put(np.array([0]), None)  # in memory: the file is not touched
    assert MetadataStore.load(tmp_path / "m.sqlite", IndexFormatError).get([0]) == [{"i": 0, "s": ""}]


def test_load_rejects_other_databases(tmp_path):
    path = tmp_path / "other.sqlite"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE t (x)")
    connection.commit()
    connection.close()
    with pytest.raises(IndexFormatError, match="other.sqlite: unexpected table 't'"):
        MetadataStore.load(path, IndexFormatError)
    (tmp_path / "junk.sqlite").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(IndexFormatError, match="junk.sqlite: not a readable metadata database"):
        MetadataStore.load(tmp_path / "junk.sqlite", IndexFormatError)
