"""HnswGraph (the hnswlib wrapper under HNSWIndex): growth, tombstones, replacement, revival,
rebuild, ef per search (also under concurrent searches), metrics, and the filtered search
strategies against exact search."""

from __future__ import annotations

import threading

import hnswlib
import numpy as np
import pytest

from embedrank.bench.datasets import clustered, clustered_queries
from embedrank.index import hnsw_search
from embedrank.index.hnsw_graph import INITIAL_CAPACITY, HnswGraph
from embedrank.kernels import topk_float32

DIM = 48
N = 4000


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return clustered(N, DIM, n_clusters=32, seed=3), clustered_queries(100, DIM, n_clusters=32, seed=3)


@pytest.fixture(scope="module")
def graph(data) -> HnswGraph:
    base, _ = data
    g = HnswGraph(DIM, "ip", M=16, ef_construction=100)
    g.add(np.arange(N), base, 2)
    return g


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return sum(len(np.intersect1d(a[a >= 0], b[b >= 0])) for a, b in zip(found, truth)) / truth.size


def test_capacity_grows_by_doubling_and_everything_stays_findable(data):
    base, _ = data
    g = HnswGraph(DIM, capacity=100)
    for start in range(0, 1500, 300):
        g.add(np.arange(start, start + 300), base[start:start + 300], 2)
    assert len(g) == g.nodes == 1500
    # 100 -> 300 (the first batch needs more than double) -> 600 -> 1200 -> 2400: doubling.
    assert g.capacity == 2400
    _, labels = g.knn(base[:1500], 1, 64, 2)
    assert (labels[:, 0] == np.arange(1500)).mean() > 0.99  # each vector finds itself


def test_default_initial_capacity_is_small_and_grows():
    g = HnswGraph(4)
    assert g.capacity == INITIAL_CAPACITY
    g.add(np.arange(INITIAL_CAPACITY + 1), np.random.default_rng(0).standard_normal((INITIAL_CAPACITY + 1, 4)), 1)
    assert g.capacity == 2 * INITIAL_CAPACITY


def test_ef_search_is_exactly_hnswlib_ef_search(data):
    """ef is never set on the shared graph: asking max(ef, k) results from an ef_=1 graph must
    give exactly what hnswlib's own set_ef(ef) + k=10 gives on the same (deterministic) graph."""
    base, queries = data
    n = 1500
    ours = HnswGraph(DIM, "ip", M=12, ef_construction=60, capacity=n)
    ours.add(np.arange(n), base[:n], 1)  # one thread: the graph is deterministic
    raw = hnswlib.Index(space="ip", dim=DIM)
    raw.init_index(max_elements=n, M=12, ef_construction=60, random_seed=100, allow_replace_deleted=True)
    raw.add_items(base[:n], np.arange(n), num_threads=1)
    for ef in (10, 17, 200):
        raw.set_ef(ef)
        raw_labels, raw_dist = raw.knn_query(queries, k=10, num_threads=1)
        scores, labels = ours.knn(queries, 10, ef, 1)
        np.testing.assert_array_equal(labels, raw_labels.astype(np.int64))
        np.testing.assert_allclose(scores, 1 - raw_dist, rtol=0, atol=1e-6)


def test_concurrent_searches_with_different_ef_get_their_own_ef(graph, data):
    queries = data[1][:40]
    expected = {ef: graph.knn(queries, 10, ef, 1) for ef in (10, 40, 400)}
    assert not np.array_equal(expected[10][1], expected[400][1])  # the settings do differ
    errors = []

    def worker(ef: int) -> None:
        try:
            for _ in range(6):
                scores, labels = graph.knn(queries, 10, ef, 1)
                np.testing.assert_array_equal(labels, expected[ef][1])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(ef,)) for ef in (10, 40, 400, 10, 400)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_recall_of_default_search(graph, data):
    base, queries = data
    _, truth = topk_float32(queries, base, 10)
    assert recall(graph.knn(queries, 10, 64, 2)[1], truth) >= 0.95


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_scores_follow_the_metric(metric, data):
    base, queries = data
    base = base[:1000] * np.linspace(0.5, 2.0, 1000, dtype=np.float32)[:, None]  # unequal norms
    g = HnswGraph(DIM, metric, capacity=1000)
    g.add(np.arange(1000), base, 2)
    scores, labels = g.knn(queries, 5, 200, 2)
    x, q = base[labels], queries[:, None, :]
    if metric == "ip":
        want = (x * q).sum(-1)
    elif metric == "cosine":
        want = (x * q).sum(-1) / np.linalg.norm(x, axis=-1) / np.linalg.norm(q, axis=-1)
    else:
        want = -((x - q) ** 2).sum(-1)
    np.testing.assert_allclose(scores, want, rtol=1e-4, atol=1e-4)
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    exact_scores, exact_labels = g.exact(queries, np.arange(1000), 5, 2)  # exact path: same metric
    assert recall(labels, exact_labels) >= 0.98
    np.testing.assert_allclose(exact_scores[:, 0], np.maximum(exact_scores[:, 0], scores[:, 0]), rtol=1e-5, atol=1e-4)


def test_tombstones_are_never_returned_and_are_reused(data):
    base, queries = data
    g = HnswGraph(DIM, capacity=1000)
    g.add(np.arange(1000), base[:1000], 2)
    removed = np.arange(0, 1000, 5)
    g.remove(removed)
    assert len(g) == 1000 - removed.size and g.tombstones == removed.size and g.nodes == 1000
    _, labels = g.knn(base[removed], 20, 64, 2)  # their own vectors as queries
    assert not np.isin(labels, removed).any()
    # New labels take over the tombstoned nodes: no growth.
    g.add(np.arange(5000, 5000 + removed.size), base[2000:2000 + removed.size], 2)
    assert g.nodes == 1000 and g.tombstones == 0 and g.capacity == 1000
    _, labels = g.knn(np.concatenate([base[removed], queries]), 20, 64, 2)
    assert not np.isin(labels, removed).any()
    _, own = g.knn(base[2000:2000 + removed.size], 1, 64, 2)
    assert (own[:, 0] == np.arange(5000, 5000 + removed.size)).mean() > 0.97


def test_a_removed_label_added_again_is_revived_with_its_new_vector(data):
    base, _ = data
    g = HnswGraph(DIM, capacity=600)
    g.add(np.arange(500), base[:500], 2)
    g.remove(np.array([7, 8, 9]))
    g.add(np.array([1000]), base[1000:1001], 1)  # takes over one of the three tombstones
    g.add(np.array([7, 8, 9]), base[600:603], 1)  # 7/8/9: revived in place or new, never doubled
    # 500 - 3 + 1 + 3 live; two of 7/8/9 reuse their own node, one needs a new node.
    assert len(g) == 501 and g.tombstones == 0 and g.nodes == 501
    np.testing.assert_array_equal(g.vectors(np.array([7, 8, 9, 1000])), np.vstack([base[600:603], base[1000:1001]]))
    labels = g.knn(base[600:603], 1, 64, 1)[1][:, 0]
    np.testing.assert_array_equal(labels, [7, 8, 9])
    g.remove(np.array([7, 8, 9, 1000]))  # every label still maps to exactly one node
    assert len(g) == 497 and g.tombstones == 4


def test_add_rejects_live_labels_and_remove_rejects_dead_ones(graph):
    with pytest.raises(ValueError, match="already live"):
        graph.add(np.array([3]), np.zeros((1, DIM), np.float32), 1)
    with pytest.raises(KeyError, match="not live"):
        graph.remove(np.array([N + 10]))


def test_rebuild_drops_tombstones_and_can_relabel(data):
    base, queries = data
    g = HnswGraph(DIM, capacity=1000)
    g.add(np.arange(1000), base[:1000], 2)
    g.remove(np.arange(0, 1000, 2))
    assert g.needs_rebuild()
    kept = np.arange(1, 1000, 2)
    g.rebuild(2, old_labels=kept)
    assert not g.needs_rebuild() and g.tombstones == 0 and g.nodes == len(g) == 500
    np.testing.assert_array_equal(g.live_labels(), np.arange(500))
    np.testing.assert_array_equal(g.vectors(np.arange(500)), base[kept])
    _, labels = g.knn(base[kept], 1, 64, 2)
    assert (labels[:, 0] == np.arange(500)).mean() > 0.98
    with pytest.raises(ValueError, match="live labels"):
        g.rebuild(1, old_labels=np.arange(3))


def test_k_beyond_the_live_count_is_padded_and_exact_when_few_remain(data):
    base, queries = data
    g = HnswGraph(DIM, capacity=300)
    g.add(np.arange(300), base[:300], 2)
    g.remove(np.arange(290))  # ten live nodes among 290 tombstones
    scores, labels = g.knn(queries, 15, 10, 2)
    assert (np.sort(labels[:, :10], axis=1) == np.arange(290, 300)).all()
    assert (labels[:, 10:] == -1).all() and np.isneginf(scores[:, 10:]).all()
    empty = HnswGraph(DIM)
    scores, labels = empty.knn(queries, 3, 10, 1)
    assert (labels == -1).all() and np.isneginf(scores).all()


@pytest.mark.parametrize("selectivity", [0.01, 0.1, 0.5])
@pytest.mark.parametrize("strategy", ["auto", "graph", "exact"])
def test_filtered_search_recall_and_no_leaks(selectivity, strategy, graph, data, monkeypatch):
    base, queries = data
    if strategy == "graph":  # force the oversampled graph path even where exact would be chosen
        monkeypatch.setattr(hnsw_search, "EXACT_MAX_COUNT", 0)
        monkeypatch.setattr(hnsw_search, "EXACT_COST_RATIO", 0.0)
    elif strategy == "exact":
        monkeypatch.setattr(hnsw_search, "EXACT_MAX_COUNT", N)
    rng = np.random.default_rng(int(selectivity * 1000))
    allowed = rng.random(N) < selectivity
    _, truth = topk_float32(queries, base, 10, allow=allowed)
    scores, labels = hnsw_search.filtered_search(graph, queries, 10, 64, allowed, 2)
    assert allowed[labels[labels >= 0]].all()
    assert (labels >= 0).all()  # at least 40 vectors pass: never short
    assert recall(labels, truth) >= 0.95
    assert (np.diff(scores, axis=1) <= 1e-6).all()


def test_filtered_search_returns_only_what_passes(graph, data):
    _, queries = data
    allowed = np.zeros(N, dtype=bool)
    allowed[[5, 77, 3001]] = True
    scores, labels = hnsw_search.filtered_search(graph, queries, 10, 64, allowed, 2)
    assert (np.sort(labels[:, :3], axis=1) == [5, 77, 3001]).all()
    assert (labels[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()
    none = hnsw_search.filtered_search(graph, queries, 10, 64, np.zeros(N, dtype=bool), 2)[1]
    assert (none == -1).all()
    short_mask = np.ones(10, dtype=bool)  # shorter than the label range: the rest is disallowed
    assert np.isin(hnsw_search.filtered_search(graph, queries, 4, 64, short_mask, 2)[1], np.arange(10)).all()


def test_save_and_load_keep_graph_tombstones_and_growth(tmp_path, data):
    base, queries = data
    g = HnswGraph(DIM, capacity=1000)
    g.add(np.arange(1000), base[:1000], 2)
    g.remove(np.arange(100))
    g.save(tmp_path / "g.bin", tmp_path / "live.npy")
    h = HnswGraph.load(tmp_path / "g.bin", tmp_path / "live.npy", DIM, "ip", 16, 200, max_label=10**6)
    assert len(h) == 900 and h.tombstones == 100
    np.testing.assert_array_equal(h.knn(queries, 10, 64, 1)[1], g.knn(queries, 10, 64, 1)[1])
    h.add(np.array([50]), base[1500:1501], 1)  # a removed label comes back
    h.add(np.arange(2000, 3000), base[2000:3000], 2)  # growth past the loaded capacity
    assert len(h) == 1901 and h.capacity >= 1901
    assert h.knn(base[1500:1501], 1, 64, 1)[1][0, 0] == 50
    np.save(tmp_path / "bad.npy", np.array([99999], dtype=np.int64))
    with pytest.raises(ValueError, match="tombstone marks do not match"):
        HnswGraph.load(tmp_path / "g.bin", tmp_path / "bad.npy", DIM, "ip", 16, 200, max_label=10**6)


def test_unknown_metric_is_rejected():
    with pytest.raises(ValueError, match="metric"):
        HnswGraph(4, "dot")
