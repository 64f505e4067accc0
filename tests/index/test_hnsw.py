"""HNSWIndex: recall against exact search, growth, tombstones / replacement / rebuild, filters
at 1%, 10% and 50% selectivity, ef per search, bad HNSW-specific input, save / load."""

from __future__ import annotations

import numpy as np
import pytest

from embedrank.bench.datasets import bench_cache_dir, clustered, clustered_queries
from embedrank.index import HNSWIndex, IndexFormatError, load_index
from embedrank.index import hnsw_graph, hnsw_search
from embedrank.kernels import topk_float32

DIM = 64
N = 3000


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return clustered(N, DIM, n_clusters=48, seed=5), clustered_queries(100, DIM, n_clusters=48, seed=5)


@pytest.fixture(scope="module")
def built(data) -> tuple[HNSWIndex, np.ndarray]:
    """An index over `data` with metadata; tests must not modify it."""
    base, _ = data
    index = HNSWIndex(DIM)
    ids = index.add(base, metadata=[{"bucket": i % 100, "even": i % 2 == 0} for i in range(N)])
    return index, ids


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return sum(len(np.intersect1d(a[a >= 0], b)) for a, b in zip(found, truth)) / truth.size


def test_recall_at_default_settings_on_clustered_data(built, data):
    index, ids = built
    base, queries = data
    _, truth = topk_float32(queries, base, 10)
    result = index.search(queries, 10)
    assert result.ids.shape == (100, 10) and result.scores.dtype == np.float32
    assert recall(result.ids, ids[truth]) >= 0.95
    np.testing.assert_allclose(result.scores[:, 0], (base[result.ids[:, 0]] * queries).sum(1), rtol=1e-5, atol=1e-5)


def test_recall_on_real_minilm_embeddings():
    path = bench_cache_dir() / "scifact_minilm.npz"
    if not path.is_file():
        pytest.skip(f"{path} not found (python -m embedrank.bench.encoder writes the SciFact MiniLM embeddings)")
    real = np.load(path)
    docs, queries = real["documents"][:2500], real["queries"]  # half of SciFact: CI-sized
    index = HNSWIndex(docs.shape[1])
    index.add(docs)
    _, truth = topk_float32(queries, docs, 10)
    assert recall(index.search(queries, 10).ids, truth) >= 0.95


def test_ef_per_search_trades_speed_for_recall(built, data):
    index, ids = built
    base, queries = data
    _, truth = topk_float32(queries, base, 10)
    low = recall(index.search(queries, 10, ef=10).ids, ids[truth])
    high = recall(index.search(queries, 10, ef=400).ids, ids[truth])
    assert high >= 0.99 and high > low
    assert index.ef == 64  # a per-call ef does not change the default
    np.testing.assert_array_equal(index.search(queries, 10, ef=64).ids, index.search(queries, 10).ids)


@pytest.mark.parametrize("selectivity", [0.01, 0.1, 0.5])
@pytest.mark.parametrize("strategy", ["auto", "graph"])
def test_filters_by_id_array_recall_and_no_leaks(selectivity, strategy, built, data, monkeypatch):
    index, ids = built
    base, queries = data
    if strategy == "graph":  # the oversampled graph path, even where exact search would be chosen
        monkeypatch.setattr(hnsw_search, "EXACT_MAX_COUNT", 0)
        monkeypatch.setattr(hnsw_search, "EXACT_COST_RATIO", 0.0)
    rows = np.flatnonzero(np.random.default_rng(int(selectivity * 100)).random(N) < selectivity)
    _, truth = topk_float32(queries, base, 10, allow=rows)
    result = index.search(queries, 10, filter=ids[rows])
    assert np.isin(result.ids, ids[rows]).all()
    assert recall(result.ids, ids[truth]) >= 0.95


@pytest.mark.parametrize(("condition", "selectivity"), [({"bucket": 7}, 0.01), ({"bucket": list(range(10))}, 0.1),
                                                        ({"even": True}, 0.5)])
def test_filters_by_metadata_recall_and_no_leaks(condition, selectivity, built, data):
    index, ids = built
    base, queries = data
    field, value = next(iter(condition.items()))
    values = value if isinstance(value, list) else [value]
    rows = np.flatnonzero(np.isin(np.arange(N) % 100, values)) if field == "bucket" else np.arange(0, N, 2)
    assert abs(rows.size / N - selectivity) < 0.01
    _, truth = topk_float32(queries, base, 10, allow=rows)
    result = index.search(queries, 10, filter=condition, return_metadata=True)
    assert np.isin(result.ids, ids[rows]).all()
    assert recall(result.ids, ids[truth]) >= 0.95
    assert all(meta[field] in values for row in result.metadata for meta in row)


def test_filter_with_fewer_matches_than_k_is_padded(built, data):
    index, ids = built
    _, queries = data
    result = index.search(queries[:3], 5, filter=[ids[10], ids[20], 10**9])  # an unknown id never matches
    assert (np.sort(result.ids[:, :2], axis=1) == [ids[10], ids[20]]).all()
    assert (result.ids[:, 2:] == -1).all() and np.isneginf(result.scores[:, 2:]).all()


def test_growth_past_the_initial_capacity(data):
    base, queries = data
    index = HNSWIndex(DIM, ef_construction=64)
    for start in range(0, 2500, 500):
        index.add(base[start:start + 500])
    assert len(index) == 2500 and index._graph.capacity >= 2500 > hnsw_graph.INITIAL_CAPACITY
    found = index.search(base[:2500:50], 1).ids[:, 0]
    assert (found == np.arange(0, 2500, 50)).mean() >= 0.98


def test_removed_ids_never_come_back_through_replacement_and_rebuild(data):
    base, queries = data
    index = HNSWIndex(DIM, ef_construction=64)
    ids = index.add(base[:2000])
    gone = ids[::4]
    index.remove(gone)  # 25%: tombstones, no rebuild yet
    assert len(index) == 1500 and index.tombstones == 500
    probe = np.vstack([base[:2000:4], queries])
    assert not np.isin(index.search(probe, 20).ids, gone).any()
    new_ids = index.add(base[2000:2300])  # takes over tombstoned nodes
    assert index.tombstones == 200 and index._graph.nodes == 2000
    assert not np.isin(index.search(probe, 20).ids, gone).any()
    more_gone = new_ids[:250].tolist() + ids[1::4].tolist()
    index.remove(more_gone)  # tombstones pass 30% of the nodes: rebuilt, slots renumbered
    assert index.tombstones == 0 and index._graph.nodes == len(index) == 1050
    all_gone = np.concatenate([gone, more_gone])
    assert not np.isin(index.search(probe, 20).ids, all_gone).any()
    kept = ids[2::4]
    assert (index.search(base[2:2000:4], 1).ids[:, 0] == kept).mean() >= 0.97  # ids survive the renumbering
    for gone_id in all_gone[:5]:
        assert gone_id not in index
    with pytest.raises(KeyError):
        index.remove([gone[0]])


def test_rebuild_keeps_metadata_and_filters(data):
    base, _ = data
    index = HNSWIndex(DIM, ef_construction=64)
    ids = index.add(base[:1000], metadata=[{"tag": int(i % 3)} for i in range(1000)])
    index.remove(ids[:600])
    assert index.tombstones == 0  # rebuilt
    result = index.search(base[600:700], 3, filter={"tag": 1}, return_metadata=True)
    assert np.isin(result.ids, ids[600:][np.arange(600, 1000) % 3 == 1]).all()
    assert all(m == {"tag": 1} for row in result.metadata for m in row)


def test_upsert_replaces_the_vector(data):
    base, _ = data
    index = HNSWIndex(DIM, ef_construction=64)
    index.add(base[:500], ids=list(range(500)))
    index.add(base[900:901], ids=[3], upsert=True)
    assert len(index) == 500
    assert index.search(base[900], 1).ids[0, 0] == 3
    assert 3 not in index.search(base[3], 5).ids[0] or index.search(base[3], 5).scores[0, 0] < 0.999


def test_cosine_and_l2_metrics(data):
    base, queries = data
    scaled = base[:800] * np.linspace(0.2, 3.0, 800, dtype=np.float32)[:, None]
    for metric in ("cosine", "l2"):
        index = HNSWIndex(DIM, metric=metric, ef_construction=64)
        index.add(scaled)
        result = index.search(queries, 1, ef=200)
        x = scaled[result.ids[:, 0]]
        if metric == "cosine":
            want = (x * queries).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(queries, axis=1)
            exact = (queries @ (scaled / np.linalg.norm(scaled, axis=1, keepdims=True)).T).max(1)
        else:
            want = -((x - queries) ** 2).sum(1)
            exact = -((queries[:, None, :] - scaled[None]) ** 2).sum(-1).min(1)
        np.testing.assert_allclose(result.scores[:, 0], want, rtol=1e-4, atol=1e-4)
        assert np.mean(np.isclose(result.scores[:, 0], exact, rtol=1e-4, atol=1e-4)) >= 0.95
        rows = np.arange(0, 800, 40)  # a 5% filter: exact path, same metric
        filtered = index.search(queries, 1, filter=rows)
        assert np.isin(filtered.ids, rows).all()


def test_empty_index_and_k_beyond_the_count(data):
    base, queries = data
    index = HNSWIndex(DIM)
    empty = index.search(queries[:2], 3)
    assert (empty.ids == -1).all() and np.isneginf(empty.scores).all()
    index.add(base[:4])
    result = index.search(queries[:2], 6)
    assert (np.sort(result.ids[:, :4], axis=1) == np.arange(4)).all() and (result.ids[:, 4:] == -1).all()


def test_str_ids(data):
    base, _ = data
    index = HNSWIndex(DIM)
    index.add(base[:300], ids=[f"doc{i}" for i in range(300)])
    index.remove(["doc5"])
    result = index.search(base[5:7], 2)
    assert result.ids.dtype == object and "doc5" not in result.ids[0] and result.ids[1, 0] == "doc6"


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"M": 1}, ValueError, "M must be in"), ({"M": 0}, ValueError, "M"), ({"M": 5000}, ValueError, "M"),
    ({"M": 2.5}, TypeError, "M must be an integer"), ({"M": True}, TypeError, "M"), ({"M": "16"}, TypeError, "M"),
    ({"ef_construction": 0}, ValueError, "ef_construction"), ({"ef_construction": None}, TypeError, "ef_construction"),
    ({"ef": 0}, ValueError, "ef must be"), ({"ef": -3}, ValueError, "ef"), ({"ef": 8.0}, TypeError, "ef"),
    ({"metric": "dot"}, ValueError, "metric"), ({"metric": None}, ValueError, "metric"),
    ({"metric": "IP"}, ValueError, "metric"),
    ({"num_threads": 0}, ValueError, "num_threads"), ({"num_threads": -1}, ValueError, "num_threads"),
    ({"num_threads": 2.0}, ValueError, "num_threads"), ({"num_threads": True}, ValueError, "num_threads"),
])
def test_bad_constructor_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        HNSWIndex(8, **kwargs)


@pytest.mark.parametrize(("params", "error", "match"), [
    ({"ef": 0}, ValueError, "ef must be"), ({"ef": -1}, ValueError, "ef"), ({"ef": 1.5}, TypeError, "ef"),
    ({"ef": True}, TypeError, "ef"), ({"ef": None}, TypeError, "ef"),
    ({"nprobe": 4}, TypeError, "nprobe"), ({"oversample": 2}, TypeError, "oversample"),
])
def test_bad_search_parameters(params, error, match, built, data):
    index, _ = built
    with pytest.raises(error, match=match):
        index.search(data[1][:2], 3, **params)


def test_save_load_round_trip_with_deletes_and_growth_after_load(tmp_path, data):
    base, queries = data
    index = HNSWIndex(DIM, M=12, ef_construction=80, ef=50, metric="ip", num_threads=2)
    ids = index.add(base[:1500], metadata=[{"n": i} for i in range(1500)])
    index.remove(ids[:200])  # 13%: stays as tombstones
    before = index.search(queries, 10)
    path = index.save(tmp_path / "idx")
    loaded = load_index(path)
    assert isinstance(loaded, HNSWIndex) and len(loaded) == 1300 and loaded.tombstones == 200
    assert (loaded.M, loaded.ef_construction, loaded.ef, loaded.num_threads) == (12, 80, 50, 2)
    after = loaded.search(queries, 10)
    np.testing.assert_array_equal(after.ids, before.ids)
    np.testing.assert_allclose(after.scores, before.scores)
    assert not np.isin(after.ids, ids[:200]).any() and ids[0] not in loaded
    new_ids = loaded.add(base[1500:2500])  # tombstones reused, then growth past the loaded capacity
    assert len(loaded) == 2300 and loaded.tombstones == 0 and new_ids[0] == ids[-1] + 1
    assert (loaded.search(base[1500:2500:25], 1).ids[:, 0] == new_ids[::25]).mean() >= 0.97
    assert loaded.get_metadata([ids[300]]) == [{"n": 300}]
    assert HNSWIndex.load(path).search(queries, 10).ids.tolist() == before.ids.tolist()  # the saved copy is unchanged


def test_load_rejects_a_damaged_graph_file(tmp_path, data):
    base, _ = data
    index = HNSWIndex(DIM)
    index.add(base[:200])
    path = index.save(tmp_path / "idx")
    graph_file = path / "hnsw_graph.bin"
    raw = bytearray(graph_file.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    graph_file.write_bytes(bytes(raw))
    with pytest.raises(IndexFormatError, match="hnsw_graph.bin"):
        load_index(path)


def test_load_rejects_labels_that_disagree_with_the_ids(tmp_path, data):
    base, _ = data
    index = HNSWIndex(DIM)
    index.add(base[:200])
    path = index.save(tmp_path / "idx")
    np.save(path / "hnsw_live_labels.npy", np.arange(150, dtype=np.int64))
    with pytest.raises(IndexFormatError):
        load_index(path, verify=False)  # checksums skipped: the consistency check still catches it


def test_load_rejects_a_truncated_graph_file_even_without_checksums(tmp_path, data):
    base, _ = data
    index = HNSWIndex(DIM)
    index.add(base[:200])
    path = index.save(tmp_path / "idx")
    graph_file = path / "hnsw_graph.bin"
    graph_file.write_bytes(graph_file.read_bytes()[:1000])
    with pytest.raises(IndexFormatError, match="hnsw_graph.bin"):
        load_index(path, verify=False)
