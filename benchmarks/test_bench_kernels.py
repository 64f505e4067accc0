"""pytest-benchmark suite for the kernels and their peers (run: make bench).

Sizes are modest (20k x 384, 200 queries) so the suite runs in a couple of minutes;
bench_kernels.py prints the full-size table with ratios and targets.
"""

from __future__ import annotations


import pytest

from embedrank.bench import peers  # first: sets OPENBLAS_CORETYPE before faiss loads  # isort: skip
from embedrank.bench import datasets  # isort: skip
import numpy as np  # isort: skip

from embedrank import kernels as K  # noqa: E402

N, NQ, DIM, TOPK = 20_000, 200, 384, 10


@pytest.fixture(scope="module")
def data():
    base = datasets.clustered(n=N, dim=DIM)
    queries = datasets.clustered_queries(n=NQ, dim=DIM)
    quantizer = K.Int8Quantizer().fit(base)
    return {
        "base": base,
        "queries": queries,
        "quantizer": quantizer,
        "codes": quantizer.encode(base),
        "bits": K.binarize(base),
        "qbits": K.binarize(queries),
    }


@pytest.mark.benchmark(group="float32 exact, 200 queries")
def test_embedrank_float32(benchmark, data):
    scores, ids = benchmark(K.topk_float32, data["queries"], data["base"], TOPK)
    assert ids.shape == (NQ, TOPK)


@pytest.mark.benchmark(group="float32 exact, 200 queries")
@pytest.mark.parametrize("peer_name", [p for p in peers.available_peers() if p != "faiss-blas"])
def test_peer_float32(benchmark, data, peer_name):
    peer = peers.available_peers()[peer_name]().build(data["base"])
    _, ids = benchmark(peer.search, data["queries"], TOPK)
    _, truth = K.topk_float32(data["queries"], data["base"], TOPK)
    assert np.mean(ids[:, 0] == truth[:, 0]) > 0.99


@pytest.mark.benchmark(group="single query")
def test_embedrank_single_query(benchmark, data):
    benchmark(K.topk_float32, data["queries"][0], data["base"], TOPK)


@pytest.mark.benchmark(group="quantized, 200 queries")
def test_embedrank_int8(benchmark, data):
    benchmark(K.topk_int8, data["queries"], data["codes"], data["quantizer"], TOPK)


@pytest.mark.benchmark(group="quantized, 200 queries")
def test_embedrank_hamming(benchmark, data):
    benchmark(K.topk_hamming, data["qbits"], data["bits"], TOPK)


@pytest.mark.benchmark(group="quantized, 200 queries")
@pytest.mark.parametrize("peer_name", [p for p in peers.available_peers(binary=True) if p != "numpy-hamming"])
def test_peer_hamming(benchmark, data, peer_name):
    peer = peers.available_peers(binary=True)[peer_name]().build(data["bits"])
    benchmark(peer.search, data["qbits"], TOPK)


@pytest.mark.benchmark(group="rescore")
def test_embedrank_rescore_top100(benchmark, data):
    _, candidates = K.topk_hamming(data["qbits"], data["bits"], 100)
    benchmark(K.rescore, data["queries"], data["base"], candidates, TOPK)


@pytest.mark.benchmark(group="pooling B=64 T=256 H=384")
def test_mean_pool_normalize(benchmark):
    rng = np.random.default_rng(0)
    hidden = rng.standard_normal((64, 256, 384), dtype=np.float32)
    mask = np.ones((64, 256), dtype=np.int64)
    benchmark(K.mean_pool_normalize, hidden, mask)


@pytest.mark.benchmark(group="pooling B=64 T=256 H=384")
def test_mean_pool_numpy_reference(benchmark):
    rng = np.random.default_rng(0)
    hidden = rng.standard_normal((64, 256, 384), dtype=np.float32)
    mask = np.ones((64, 256), dtype=np.int64)

    def reference():
        pooled = (hidden * mask[:, :, None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    benchmark(reference)
