"""FlatIndex against a numpy reference: exact search, the quantized cascade, filters, removals,
upserts, str ids, metadata, growth and compaction."""

from __future__ import annotations

import numpy as np
import pytest

from embedrank.index import FlatIndex, SearchResult, load_index
from embedrank.kernels import Int8Quantizer
from tests.index.reference import clustered, exact_topk, queries_near, recall_at_k, small_ints

COMBOS = [("float32", None), ("int8", "float32"), ("int8", None), ("binary", "float32"), ("binary", "int8"),
          ("binary", "int8+float32"), ("binary", None)]


def test_exact_float32_equals_numpy_argsort_with_ties_to_lower_id():
    base = small_ints(500, 16, seed=1)  # exact integer dot products, many ties
    queries = small_ints(20, 16, seed=2)
    index = FlatIndex(16)
    index.add(base)
    result = index.search(queries, 10)
    scores, rows = exact_topk(queries, base, 10)
    np.testing.assert_array_equal(result.ids, rows)
    np.testing.assert_array_equal(result.scores, scores.astype(np.float32))
    assert result.ids.dtype == np.int64 and result.scores.dtype == np.float32


def test_exact_float32_random_data_matches_reference():
    base = clustered(3000, 97, seed=3)
    queries = queries_near(base, 25, seed=4)
    index = FlatIndex(97)
    index.add(base[:1000])
    index.add(base[1000:])
    result = index.search(queries, 15)
    scores, rows = exact_topk(queries, base, 15)
    np.testing.assert_allclose(result.scores, scores, rtol=0, atol=1e-5)
    assert recall_at_k(result.ids, rows) == 1.0


def test_one_query_as_1d_gives_one_row():
    index = FlatIndex(8)
    index.add(np.eye(8, dtype=np.float32))
    result = index.search(np.eye(8, dtype=np.float32)[3], 2)
    assert result.ids.shape == (1, 2) and result.ids[0, 0] == 3 and len(result) == 1
    ids, scores, metadata = result[0]
    assert ids[0] == 3 and scores[0] == 1.0 and metadata is None
    assert [hits.ids[0] for hits in result] == [3]


@pytest.mark.parametrize("precision, rescore", [c for c in COMBOS if c[1] is not None])
def test_cascade_recall_on_clustered_data(precision, rescore):
    base = clustered(4000, 64, clusters=40, seed=5)
    queries = queries_near(base, 50, seed=6)
    index = FlatIndex(64, precision, rescore, oversample=20)
    index.add(base)
    result = index.search(queries, 10)
    _, truth = exact_topk(queries, base, 10)
    if rescore == "int8":  # the cascade finds int8's own top 10; int8 itself is close to float32
        decoded = index.quantizer.decode(index.quantizer.encode(base))
        _, int8_truth = exact_topk(queries, decoded, 10)
        assert recall_at_k(result.ids, int8_truth) >= 0.99
        assert recall_at_k(result.ids, truth) >= 0.9
    else:
        assert recall_at_k(result.ids, truth) >= 0.99
    if rescore == "float32":  # rescored scores are the exact float32 inner products
        exact = np.einsum("qd,qkd->qk", queries, base[result.ids])
        np.testing.assert_allclose(result.scores, exact, rtol=0, atol=1e-5)
    assert (np.diff(result.scores, axis=1) <= 0).all()


def test_int8_without_rescore_scores_approximate_the_dot_product():
    base = clustered(2000, 32, seed=7)
    queries = queries_near(base, 10, seed=8)
    index = FlatIndex(32, "int8", rescore=None)
    index.add(base)
    result = index.search(queries, 5)
    exact = np.einsum("qd,qkd->qk", queries, base[result.ids])
    np.testing.assert_allclose(result.scores, exact, atol=0.05)
    assert index.oversample == 4


def test_binary_without_rescore_scores_are_dim_minus_twice_hamming():
    base = clustered(1000, 20, seed=9)  # 20 bits: a partial last byte
    queries = queries_near(base, 6, seed=10)
    index = FlatIndex(20, "binary", rescore=None)
    index.add(base)
    result = index.search(queries, 7)
    signs_q = np.where(queries > 0, 1, -1)
    signs_b = np.where(base > 0, 1, -1)
    expected = signs_q @ signs_b.T
    np.testing.assert_array_equal(result.scores, np.take_along_axis(expected, result.ids, axis=1).astype(np.float32))
    np.testing.assert_array_equal(result.scores[:, 0], expected.max(axis=1))
    assert index.oversample == 10


def test_per_search_params_override_and_are_checked():
    base = clustered(3000, 32, seed=11)
    queries = queries_near(base, 30, seed=12)
    index = FlatIndex(32, "binary", "float32", oversample=1)
    index.add(base)
    _, truth = exact_topk(queries, base, 10)
    low = recall_at_k(index.search(queries, 10).ids, truth)
    high = recall_at_k(index.search(queries, 10, oversample=30).ids, truth)
    assert high > low and high >= 0.99
    raw = index.search(queries, 10, rescore=None)
    assert (np.abs(raw.scores) == np.round(raw.scores)).all()  # Hamming-based scores are integers
    with pytest.raises(ValueError, match="int8 codes"):
        index.search(queries, 10, rescore="int8")
    with pytest.raises(ValueError, match="oversample"):
        index.search(queries, 10, oversample=0)
    with pytest.raises(TypeError, match=r"unknown parameter\(s\) \['ef'\]"):
        index.search(queries, 10, ef=32)


def test_user_quantizer_is_used_and_saved(tmp_path):
    base = clustered(500, 16, seed=13)
    quantizer = Int8Quantizer().fit(base * 2)  # a wider range than the data
    index = FlatIndex(16, "int8", quantizer=quantizer)
    index.add(base[:1])  # a one-row first add would fit a degenerate range on its own
    index.add(base[1:])
    np.testing.assert_array_equal(index.quantizer.scale, quantizer.scale)
    loaded = load_index(index.save(tmp_path / "ix"))
    np.testing.assert_array_equal(loaded.quantizer.offset, quantizer.offset)
    _, truth = exact_topk(base[:20], base, 5)
    assert recall_at_k(loaded.search(base[:20], 5).ids, truth) >= 0.99


def test_quantizer_fitted_on_first_add_clips_later_outliers_but_rescore_stays_exact():
    base = clustered(400, 16, seed=14)
    index = FlatIndex(16, "int8", "float32", oversample=50)
    index.add(base)
    outlier = np.full((1, 16), 3.0, dtype=np.float32)  # far outside the fitted range
    index.add(outlier, ids=[10_000])
    result = index.search(outlier, 1)
    assert result.ids[0, 0] == 10_000
    assert result.scores[0, 0] == pytest.approx(float((outlier @ outlier.T)[0, 0]), rel=1e-6)


@pytest.mark.parametrize("precision, rescore", [("float32", None), ("int8", "float32"), ("binary", "float32")])
@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.5])
def test_metadata_filter_never_leaks_and_equals_reference(precision, rescore, fraction):
    n = 3000
    base = clustered(n, 32, seed=15)
    queries = queries_near(base, 12, seed=16)
    rng = np.random.default_rng(17)
    allowed = rng.random(n) < fraction
    metadata = [{"group": "in" if a else "out", "n": i} for i, a in enumerate(allowed)]
    index = FlatIndex(32, precision, rescore, oversample=50)
    index.add(base, metadata=metadata)
    result = index.search(queries, 10, filter={"group": "in"})
    returned = result.ids[result.ids >= 0]
    assert allowed[returned].all()
    _, truth = exact_topk(queries, base, 10, allowed)
    if precision == "float32":
        np.testing.assert_array_equal(result.ids, truth)
    else:
        assert recall_at_k(result.ids, truth) >= 0.99
    by_ids = index.search(queries, 10, filter=np.flatnonzero(allowed))
    np.testing.assert_array_equal(by_ids.ids, result.ids)


def test_filter_with_fewer_matches_than_k_pads():
    index = FlatIndex(4)
    index.add(np.eye(4, dtype=np.float32), metadata=[{"t": "a"}, {"t": "b"}, {"t": "a"}, None])
    result = index.search(np.ones(4, dtype=np.float32), 3, filter={"t": "a"}, return_metadata=True)
    assert result.ids.tolist() == [[0, 2, -1]]
    assert result.scores[0, 2] == -np.inf
    assert result.metadata == [[{"t": "a"}, {"t": "a"}, None]]
    nothing = index.search(np.ones(4, dtype=np.float32), 2, filter={"t": "zzz"})
    assert nothing.ids.tolist() == [[-1, -1]] and np.isneginf(nothing.scores).all()
    assert index.search(np.ones(4), 2, filter=[]).ids.tolist() == [[-1, -1]]
    assert index.search(np.ones(4), 2, filter=[3, 99]).ids.tolist() == [[3, -1]]  # 99 is simply never matched


def test_filter_semantics_and_sets_and_and():
    index = FlatIndex(2)
    meta = [{"lang": "en", "year": 2020}, {"lang": "de", "year": 2021}, {"lang": "en", "year": 2021.0},
            {"lang": "en", "year": True}, {"lang": "en", "year": "2021"}, {"lang": "en", "tags": ["x"]}]
    index.add(np.ones((6, 2), dtype=np.float32), metadata=meta)
    q = np.ones(2, dtype=np.float32)

    def ids(f):
        r = index.search(q, 6, filter=f).ids[0]
        return sorted(r[r >= 0].tolist())

    assert ids({"lang": "en", "year": [2020, 2021]}) == [0, 2]  # 2021.0 == 2021; True and "2021" are not
    assert ids({"year": 1}) == []  # True is not 1
    assert ids({"year": "2021"}) == [4]
    assert ids({"year": True}) == [3]
    assert ids({"lang": ("de",)}) == [1]
    assert ids({"year": []}) == []
    assert ids({}) == [0, 1, 2, 3, 4, 5]
    assert ids({"tags": "x"}) == []  # stored lists are not matched by scalars


def test_removed_ids_never_come_back(tmp_path):
    base = clustered(2000, 24, seed=18)
    index = FlatIndex(24, compact_threshold=0.9)  # keep tombstones in memory
    index.add(base)
    removed = np.arange(0, 2000, 3)
    index.remove(removed)
    assert len(index) == 2000 - removed.size
    assert index._tombstones == removed.size
    result = index.search(base[removed[:50]], 20)
    assert not np.isin(result.ids, removed).any()
    filtered = index.search(base[:5], 5, filter=removed.tolist())
    assert (filtered.ids == -1).all()
    keep = np.ones(2000, dtype=bool)
    keep[removed] = False
    _, truth = exact_topk(base[:30], base, 10, keep)
    np.testing.assert_array_equal(index.search(base[:30], 10).ids, truth)
    loaded = load_index(index.save(tmp_path / "ix"))  # compacted on save
    assert index._tombstones == 0 and loaded._tombstones == 0
    assert len(loaded) == len(index)
    np.testing.assert_array_equal(loaded.search(base[:30], 10).ids, truth)
    assert not np.isin(loaded.ids(), removed).any()
    assert not any(int(r) in loaded for r in removed[:10])


def test_compaction_past_threshold_keeps_results_and_metadata():
    base = clustered(1000, 16, seed=19)
    index = FlatIndex(16, "int8", "float32", compact_threshold=0.25)
    index.add(base, metadata=[{"i": i} for i in range(1000)])
    index.remove(np.arange(0, 200))  # 20%: tombstones stay
    assert index._tombstones == 200
    index.remove(np.arange(200, 300))  # 30%: compacted
    assert index._tombstones == 0 and index._rows == 700
    assert index.get_metadata([300, 999]) == [{"i": 300}, {"i": 999}]
    result = index.search(base[300:310], 3, filter={"i": list(range(300, 1000, 2))}, return_metadata=True)
    assert all(m["i"] == i for row_m, row_i in zip(result.metadata, result.ids) for m, i in zip(row_m, row_i))
    assert (result.ids % 2 == 0).all()
    keep = np.arange(1000) >= 300
    _, truth = exact_topk(base[:40], base, 10, keep)
    assert recall_at_k(index.search(base[:40], 10).ids, truth) >= 0.99
    new_ids = index.add(base[:5])
    assert new_ids.tolist() == [1000, 1001, 1002, 1003, 1004]  # auto ids never reuse removed ones


def test_upsert_replaces_vector_and_metadata():
    index = FlatIndex(3, "binary", "int8")
    index.add(np.eye(3, dtype=np.float32), ids=[7, 8, 9], metadata=[{"v": 1}, {"v": 2}, {"v": 3}])
    with pytest.raises(ValueError, match=r"already in the index: \[8\]"):
        index.add(np.ones((1, 3), dtype=np.float32), ids=[8])
    new = np.array([[0, 0, 1], [1, 0, 0]], dtype=np.float32)
    returned = index.add(new, ids=[8, 10], metadata=[{"v": 20}, None], upsert=True)
    assert returned.tolist() == [8, 10] and len(index) == 4
    assert index.get_metadata([8, 10, 7]) == [{"v": 20}, None, {"v": 1}]
    result = index.search(np.array([0, 0, 1], dtype=np.float32), 2)
    assert sorted(result.ids[0].tolist()) == [8, 9]
    top = index.search(np.array([0, 1, 0], dtype=np.float32), 1)
    assert top.scores[0, 0] < 0.9  # 8 no longer points along y


def test_str_ids_and_metadata_round_trip(tmp_path):
    base = clustered(50, 8, seed=20)
    names = [f"doc-{i}-é" for i in range(50)]
    meta = [{"title": n, "year": 2000 + i % 5, "nested": {"a": [1, 2]}} for i, n in enumerate(names)]
    index = FlatIndex(8)
    returned = index.add(base, ids=names, metadata=meta)
    assert returned.dtype == object and returned.tolist() == names
    result = index.search(base[:3], 60, return_metadata=True)
    assert result.ids.dtype == object and result.ids[0, -1] is None and result.ids[0, 0] == names[0]
    assert result.metadata[1][0] == meta[1] and result.metadata[0][-1] is None
    index.remove(["doc-3-é"])
    loaded = load_index(index.save(tmp_path / "ix"), mmap=False)
    assert loaded.ids().tolist() == [n for n in names if n != "doc-3-é"]
    assert loaded.get_metadata("doc-4-é") == [meta[4]]
    with pytest.raises(KeyError, match="doc-3"):
        loaded.get_metadata(["doc-3-é"])
    filtered = loaded.search(base[:2], 5, filter={"year": 2001})
    assert all(i is None or int(i.split("-")[1]) % 5 == 1 for i in filtered.ids.ravel())
    np.testing.assert_array_equal(filtered.ids, index.search(base[:2], 5, filter={"year": 2001}).ids)


@pytest.mark.parametrize("precision, rescore", COMBOS)
@pytest.mark.parametrize("mmap", [True, False])
def test_save_load_round_trip(tmp_path, precision, rescore, mmap):
    base = clustered(600, 40, seed=21)
    queries = queries_near(base, 9, seed=22)
    index = FlatIndex(40, precision, rescore, oversample=3)
    index.add(base, ids=np.arange(600) * 2, metadata=[{"p": i % 4} for i in range(600)])
    index.remove([0, 2, 4])
    path = index.save(tmp_path / "ix")
    loaded = load_index(path, mmap=mmap)
    assert isinstance(loaded, FlatIndex) and loaded.dim == 40 and len(loaded) == 597
    assert (loaded.precision, loaded.rescore, loaded.oversample) == (precision, index.rescore, 3)
    for f in (None, {"p": [1, 3]}):
        a, b = index.search(queries, 12, filter=f, return_metadata=True), loaded.search(queries, 12, filter=f,
                                                                                         return_metadata=True)
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.scores, b.scores)
        assert a.metadata == b.metadata
    arrays = [a for a in (loaded._f32, loaded._codes, loaded._bits) if a is not None]
    assert all(isinstance(a, np.memmap) for a in arrays) == mmap
    loaded.add(base[:2], ids=[5000, 5001])  # a memory-mapped index becomes writable on change
    assert 5000 in loaded and len(loaded) == 599
    assert FlatIndex.load(path, mmap=mmap).search(queries, 3).ids.tolist() == index.search(queries, 3).ids.tolist()


def test_cascade_reads_float32_originals_memory_mapped(tmp_path):
    base = clustered(2000, 32, seed=23)
    index = FlatIndex(32, "binary", "float32")
    index.add(base)
    loaded = load_index(index.save(tmp_path / "ix"), mmap=True)
    assert isinstance(loaded._f32, np.memmap) and not loaded._f32.flags.writeable
    np.testing.assert_array_equal(loaded.search(base[:5], 5).ids, index.search(base[:5], 5).ids)
    assert isinstance(loaded._f32, np.memmap)  # searching never copies them into memory


def test_many_small_adds_grow_geometrically():
    index = FlatIndex(4, "int8")
    reallocations = 0
    last = None
    x = np.random.default_rng(24).standard_normal((3000, 4)).astype(np.float32)
    for row in range(3000):
        index.add(x[row])
        if index._f32 is not last:
            reallocations += 1
            last = index._f32
    assert reallocations <= 6  # 256 -> 512 -> ... -> 4096
    assert len(index) == 3000 and index.ids().tolist() == list(range(3000))
    np.testing.assert_array_equal(index._f32[:3000], x)


def test_empty_index_and_k_larger_than_index():
    index = FlatIndex(5)
    empty = index.search(np.ones((2, 5)), 3)
    assert isinstance(empty, SearchResult) and empty.ids.tolist() == [[-1] * 3] * 2 and np.isneginf(empty.scores).all()
    index.add(np.eye(5, dtype=np.float32)[:2])
    result = index.search(np.ones(5), 4)
    assert result.ids.tolist() == [[0, 1, -1, -1]] and np.isneginf(result.scores[0, 2:]).all()
    index.remove([0, 1])
    assert len(index) == 0 and index.search(np.ones(5), 2).ids.tolist() == [[-1, -1]]
    assert index.search(np.empty((0, 5), dtype=np.float32), 2).ids.shape == (0, 2)


def test_public_names_and_empty_adds():
    import embedrank

    assert embedrank.FlatIndex is FlatIndex and embedrank.load_index is load_index
    assert issubclass(embedrank.IndexFormatError, ValueError) and embedrank.SearchResult is SearchResult
    index = FlatIndex(3)
    index.add(np.ones((1, 3), dtype=np.float32), ids=["a"])
    assert index.add(np.empty((0, 3), dtype=np.float32)).tolist() == []
    assert index.add(np.empty((0, 3), dtype=np.float32), ids=[]).tolist() == []
    assert len(index) == 1 and "a" in index and "b" not in index and 0 not in index
