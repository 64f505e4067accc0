"""pytest-benchmark: HNSWIndex against raw hnswlib (the same graph), faiss and usearch, and the
FlatIndex cascade against float32 exact (run: make bench-pytest).

20k x 384 clustered vectors, 200 queries, k=10: minutes, not an hour; bench_index.py prints
the full sweep (recall-vs-QPS, build times, memory) and the filter and tombstone tables.
"""

from __future__ import annotations


import pytest

from embedrank.bench import peers  # noqa: F401  first: sets OPENBLAS_CORETYPE before faiss loads  # isort: skip
from embedrank.bench import datasets  # isort: skip
import numpy as np  # isort: skip

from embedrank.index import FlatIndex, HNSWIndex  # noqa: E402

N, NQ, DIM, K, EF = 20_000, 200, 384, 10, 64


@pytest.fixture(scope="module")
def data():
    base = datasets.clustered(n=N, dim=DIM)
    queries = datasets.clustered_queries(n=NQ, dim=DIM)
    exact = np.argsort(-(queries @ base.T), axis=1)[:, :K]
    return base, queries, exact


@pytest.fixture(scope="module")
def hnsw(data):
    index = HNSWIndex(DIM, M=16, ef_construction=200, ef=EF)
    index.add(data[0])
    return index


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(f.tolist()) & set(e.tolist())) / K for f, e in zip(found, exact)]))


@pytest.mark.benchmark(group="HNSW ef=64, 200 queries, same graph")
def test_hnswindex_search(benchmark, data, hnsw):
    result = benchmark(hnsw.search, data[1], K)
    benchmark.extra_info["recall@10"] = recall(result.ids, data[2])


@pytest.mark.benchmark(group="HNSW ef=64, 200 queries, same graph")
def test_raw_hnswlib_same_graph(benchmark, data, hnsw):
    graph = hnsw._graph._index
    graph.set_ef(EF)
    try:
        labels, _ = benchmark(graph.knn_query, data[1], k=K)
    finally:
        graph.set_ef(1)  # HnswGraph's own setting (it passes ef per search)
    benchmark.extra_info["recall@10"] = recall(labels.astype(np.int64), data[2])


@pytest.mark.benchmark(group="HNSW ef=64, 200 queries, single-query calls")
def test_hnswindex_single_queries(benchmark, data, hnsw):
    singles = [q[None, :] for q in data[1][:50]]
    benchmark(lambda: [hnsw.search(q, K) for q in singles])


@pytest.mark.benchmark(group="HNSW ef=64, 200 queries, single-query calls")
def test_raw_hnswlib_single_queries(benchmark, data, hnsw):
    graph = hnsw._graph._index
    singles = [q[None, :] for q in data[1][:50]]
    graph.set_ef(EF)
    try:
        benchmark(lambda: [graph.knn_query(q, k=K) for q in singles])
    finally:
        graph.set_ef(1)


@pytest.mark.benchmark(group="HNSW ef=64, 200 queries, each library's own graph")
@pytest.mark.parametrize("library", ["faiss", "usearch"])
def test_peer_hnsw(benchmark, data, library):
    base, queries, exact = data
    if library == "faiss":
        faiss = pytest.importorskip("faiss")
        index = faiss.IndexHNSWFlat(DIM, 16, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 200
        index.add(base)
        index.hnsw.efSearch = EF
        _, ids = benchmark(index.search, queries, K)
    else:
        usearch_index = pytest.importorskip("usearch.index")
        index = usearch_index.Index(ndim=DIM, metric="ip", connectivity=16, expansion_add=200, expansion_search=EF)
        index.add(np.arange(N), base)
        ids = benchmark(index.search, queries, K).keys
    benchmark.extra_info["recall@10"] = recall(np.asarray(ids, dtype=np.int64), exact)


@pytest.mark.benchmark(group="FlatIndex cascade, 200 queries")
@pytest.mark.parametrize("precision, rescore, oversample", [("float32", None, 1), ("int8", "float32", 4),
                                                            ("binary", "float32", 10)])
def test_flat_cascade(benchmark, data, precision, rescore, oversample):
    base, queries, exact = data
    index = FlatIndex(DIM, precision=precision, rescore=rescore, oversample=oversample)
    index.add(base)
    result = benchmark(index.search, queries, K)
    benchmark.extra_info["recall@10"] = recall(result.ids, exact)
