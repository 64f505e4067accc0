"""embedrank.kernels.search: exact top-k (float32, int8, Hamming) and rescoring.

Property tests use integer-valued float data wherever they can: every partial sum is then exact
in float32, so scores and ids must equal the numpy reference bit for bit, ties included (base
rows drawn from a few distinct rows give masses of exact ties: the lower id must come first).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embedrank.kernels import (
    Int8Quantizer,
    binarize,
    quantize_queries,
    rescore,
    topk_float32,
    topk_hamming,
    topk_int8,
)
from tests.kernels import reference as ref
from tests.kernels.compare import assert_exact_topk, assert_float_topk

ROOT = Path(__file__).resolve().parents[2]
INT32_MAX = np.iinfo(np.int32).max
EXAMPLES = int(os.environ.get("EMBEDRANK_TEST_EXAMPLES", "60"))  # more: a deeper search
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---- strategies --------------------------------------------------------------------------------
def allow_for(draw, rng, n):
    """None, a bool mask of random density (all-false included), or an id array with
    duplicates (empty included)."""
    kind = draw(st.sampled_from(["none", "mask", "ids"]))
    if kind == "none":
        return None
    if kind == "mask":
        density = draw(st.sampled_from([0.0, 0.03, 0.3, 0.6, 0.95, 1.0]))
        return rng.random(n) < density
    size = draw(st.integers(0, 2 * n))
    return rng.integers(0, n, size).astype(draw(st.sampled_from([np.int64, np.int32, np.uint16])))


@st.composite
def exact_float_case(draw):
    dim = draw(st.one_of(st.integers(1, 40), st.sampled_from([97, 385, 1024, 1031])))
    n = draw(st.integers(1, 300 if dim > 300 else 150))
    nq = draw(st.sampled_from([0, 1, 2, 4, 5, 6, 7, 13, 25, 31]))
    distinct = draw(st.integers(1, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    pool = rng.integers(-3, 4, (distinct, dim)).astype(np.float32)
    base = pool[rng.integers(0, distinct, n)]
    queries = rng.integers(-3, 4, (nq, dim)).astype(np.float32)
    k = draw(st.one_of(st.integers(1, min(n, 12)), st.just(n)))
    return queries, base, k, allow_for(draw, rng, n)


@st.composite
def int8_case(draw):
    dim = draw(st.one_of(st.integers(1, 40), st.sampled_from([64, 97, 256, 1024, 1030])))
    n = draw(st.integers(1, 200))
    nq = draw(st.sampled_from([1, 3, 5, 8, 33, 40]))
    distinct = draw(st.integers(1, 10))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    extremes = draw(st.booleans())  # codes at +-127 only: the saturation corner of the int kernels
    if extremes:
        pool = rng.choice(np.array([-127, 127], dtype=np.int8), (distinct, dim))
    else:
        pool = rng.integers(-127, 128, (distinct, dim)).astype(np.int8)
    codes = pool[rng.integers(0, distinct, n)]
    offset = rng.normal(0, 0.1, dim).astype(np.float32)
    scale = rng.uniform(0.001, 0.02, dim).astype(np.float32)
    queries = rng.standard_normal((nq, dim)).astype(np.float32)
    if extremes:
        queries = np.sign(queries) / scale  # folded queries of equal magnitude: int8 codes +-127
    if draw(st.booleans()):
        queries[0] = 0.0  # a zero query (step 1)
    k = draw(st.one_of(st.integers(1, min(n, 12)), st.just(n)))
    return queries.astype(np.float32), codes, Int8Quantizer(offset, scale), k, allow_for(draw, rng, n)


@st.composite
def hamming_case(draw):
    n_bytes = draw(st.one_of(st.integers(1, 20), st.sampled_from([64, 65, 128])))
    n = draw(st.integers(1, 400))
    nq = draw(st.sampled_from([0, 1, 4, 5, 7, 30]))
    distinct = draw(st.integers(1, 16))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    pool = rng.integers(0, 256, (distinct, n_bytes), dtype=np.uint8)
    base = pool[rng.integers(0, distinct, n)]
    queries = rng.integers(0, 256, (nq, n_bytes), dtype=np.uint8)
    if nq and draw(st.booleans()):
        queries[0] = base[rng.integers(0, n)]  # distance 0
    k = draw(st.one_of(st.integers(1, min(n, 70)), st.just(n)))
    return queries, base, k, allow_for(draw, rng, n)


# ---- topk_float32 ------------------------------------------------------------------------------
@PROPERTY
@given(exact_float_case())
def test_topk_float32_exact_data_equals_reference_ties_to_lower_id(case):
    queries, base, k, allow = case
    got = topk_float32(queries, base, k, allow=allow)
    assert_exact_topk(got, ref.topk_inner_product(queries, base, k, allow), "topk_float32")


@settings(max_examples=max(1, EXAMPLES // 2), deadline=None)
@given(exact_float_case(), st.sampled_from([1, 2, 3]))
def test_topk_float32_same_result_for_any_thread_count(case, threads):
    queries, base, k, allow = case
    a = topk_float32(queries, base, k, allow=allow, num_threads=threads)
    b = topk_float32(queries, base, k, allow=allow)
    assert_exact_topk(a, b, f"num_threads={threads} vs default")


@pytest.mark.parametrize("nq", [1, 3, 5, 64])
def test_topk_float32_random_data_threads_identical_and_near_reference(nq):
    rng = np.random.default_rng(nq)
    base = rng.standard_normal((6000, 48), dtype=np.float32)  # several tasks and blocks
    queries = rng.standard_normal((nq, 48), dtype=np.float32)
    one = topk_float32(queries, base, 17, num_threads=1)
    for threads in (None, 2, 3):
        assert_exact_topk(topk_float32(queries, base, 17, num_threads=threads), one, f"threads={threads}")
    assert_float_topk(*one, ref.inner_products(queries, base), 17, atol=1e-4, rtol=1e-5)


def test_ties_across_blocks_and_workers_go_to_the_lowest_id():
    """One row repeated all over a base of many blocks; every query's best k are its copies,
    and they must come in increasing id order, whichever worker saw them."""
    rng = np.random.default_rng(7)
    base = rng.integers(-2, 3, (9000, 16)).astype(np.float32)
    best = np.full(16, 5.0, dtype=np.float32)
    copies = np.sort(rng.choice(9000, 40, replace=False))
    base[copies] = best
    for nq in (1, 2, 9):
        queries = np.full((nq, 16), 1.0, dtype=np.float32)
        for threads in (1, 2, None):
            s, i = topk_float32(queries, base, 25, num_threads=threads)
            np.testing.assert_array_equal(i, np.broadcast_to(copies[:25], (nq, 25)))
            assert (s == 80.0).all()


def test_one_dimensional_query_is_one_query():
    base = np.eye(4, dtype=np.float32)
    s, i = topk_float32(np.array([0, 0, 1, 0], dtype=np.float32), base, 2)
    assert s.shape == i.shape == (1, 2)
    assert i[0, 0] == 2 and s[0, 0] == 1.0 and i[0, 1] == 0  # the rest tie at 0: lowest id


def test_zero_queries_give_empty_results():
    s, i = topk_float32(np.zeros((0, 5), np.float32), np.ones((3, 5), np.float32), 2)
    assert s.shape == i.shape == (0, 2)
    assert s.dtype == np.float32 and i.dtype == np.int64


@pytest.mark.parametrize("nq", [1, 8])
@pytest.mark.parametrize("allow", [np.zeros(50, bool), np.array([], dtype=np.int64)], ids=["all-false", "no-ids"])
def test_nothing_allowed_gives_only_padding(nq, allow):
    rng = np.random.default_rng(1)
    s, i = topk_float32(rng.standard_normal((nq, 6), dtype=np.float32), rng.standard_normal((50, 6), dtype=np.float32),
                        4, allow=allow)
    assert (i == -1).all() and np.isneginf(s).all()


@pytest.mark.parametrize("nq", [1, 8])
def test_fewer_allowed_than_k_pads_the_tail(nq):
    rng = np.random.default_rng(2)
    base = rng.standard_normal((300, 6), dtype=np.float32)
    queries = rng.standard_normal((nq, 6), dtype=np.float32)
    s, i = topk_float32(queries, base, 5, allow=np.array([17, 250, 17, 3]))
    assert set(i[:, :3].ravel()) == {3, 17, 250}
    assert (i[:, 3:] == -1).all() and np.isneginf(s[:, 3:]).all()
    assert_float_topk(s, i, ref.inner_products(queries, base), 5, np.array([17, 250, 3]))


# ---- topk_int8 ---------------------------------------------------------------------------------
@PROPERTY
@given(int8_case())
def test_topk_int8_query_int8_is_exact_integer_arithmetic(case):
    queries, codes, quantizer, k, allow = case
    got = topk_int8(queries, codes, quantizer, k, allow=allow, query_precision="int8")
    expected = ref.topk_int8_int8(queries, codes, quantizer.offset, quantizer.scale, k, allow)
    assert_exact_topk(got, expected, "topk_int8 int8")


@PROPERTY
@given(int8_case())
def test_topk_int8_query_float32_is_the_asymmetric_inner_product(case):
    queries, codes, quantizer, k, allow = case
    s, i = topk_int8(queries, codes, quantizer, k, allow=allow, query_precision="float32")
    exact = ref.asymmetric_scores(queries, codes, quantizer.offset, quantizer.scale)
    scale = max(1.0, float(np.abs(exact).max()))
    assert_float_topk(s, i, exact, k, allow, atol=2e-6 * scale * np.sqrt(codes.shape[1]), rtol=1e-5,
                      strict_ties=False)


def test_quantize_queries_matches_reference():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((9, 33)).astype(np.float32)
    x[2] = 0.0
    x[4] *= 1e-30
    codes, step = quantize_queries(x)
    e_codes, e_step = ref.quantize_queries(x)
    np.testing.assert_array_equal(codes, e_codes)
    np.testing.assert_array_equal(step, e_step)
    assert codes.dtype == np.int8 and np.abs(codes).max() == 127 and step[2] == 1.0


def test_topk_int8_default_precision_is_int8():
    rng = np.random.default_rng(4)
    codes = rng.integers(-127, 128, (80, 21)).astype(np.int8)
    quantizer = Int8Quantizer(rng.normal(0, 1, 21), rng.uniform(0.01, 0.1, 21))
    queries = rng.standard_normal((6, 21)).astype(np.float32)
    assert_exact_topk(topk_int8(queries, codes, quantizer, 9),
                      topk_int8(queries, codes, quantizer, 9, query_precision="int8"))


# ---- topk_hamming ------------------------------------------------------------------------------
@PROPERTY
@given(hamming_case())
def test_topk_hamming_exact_ascending_ties_to_lower_id(case):
    queries, base, k, allow = case
    d, i = topk_hamming(queries, base, k, allow=allow)
    e_d, e_i = ref.topk_hamming(queries, base, k, allow)
    assert d.dtype == np.int32 and i.dtype == np.int64
    np.testing.assert_array_equal(i, e_i)
    np.testing.assert_array_equal(d, e_d)


@settings(max_examples=max(1, EXAMPLES // 3), deadline=None)
@given(hamming_case(), st.sampled_from([1, 3]))
def test_topk_hamming_same_result_for_any_thread_count(case, threads):
    queries, base, k, allow = case
    assert_exact_topk(topk_hamming(queries, base, k, allow=allow, num_threads=threads),
                      topk_hamming(queries, base, k, allow=allow))


def test_topk_hamming_padding_is_int32_max():
    bits = np.packbits(np.eye(16, dtype=bool), axis=1)
    d, i = topk_hamming(bits[:2], bits, 4, allow=np.array([5]))
    np.testing.assert_array_equal(i, [[5, -1, -1, -1]] * 2)
    np.testing.assert_array_equal(d, [[2, INT32_MAX, INT32_MAX, INT32_MAX]] * 2)


def test_binarize_then_hamming_many_ties_large_k():
    """Dimension 3: 8 distinct codes over 5000 rows, k in the thousands (the counting selector
    must prune many times and keep the lowest ids at the cut)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((5000, 3)).astype(np.float32)
    bits = binarize(x)
    for nq, k in ((1, 3000), (6, 2500)):
        q = bits[:nq]
        assert_exact_topk(topk_hamming(q, bits, k), ref.topk_hamming(q, bits, k))


@pytest.mark.parametrize("n_bytes", [1, 5, 32, 47, 48, 64, 96, 128, 130])
def test_hamming_few_queries_scan_rows_in_place_over_many_blocks(n_bytes):
    """Up to 4 queries score rows where they lie (no panels), in blocks of 8192 rows split over
    the workers: exact at odd and unrolled code widths, ties across block boundaries to the
    lower id, with an allow mask, for any thread count; 5 queries take the panel path."""
    rng = np.random.default_rng(n_bytes)
    n = 3 * 8192 + 77
    distinct = rng.integers(0, 256, size=(300, n_bytes), dtype=np.uint8)
    bits = distinct[rng.integers(0, 300, n)]  # every code ~80 times, in every block: masses of ties
    allow = rng.random(n) < 0.8
    for nq in (1, 2, 4, 5):
        q = rng.integers(0, 256, size=(nq, n_bytes), dtype=np.uint8)
        for k in (1, 10, 500):
            expected = ref.topk_hamming(q, bits, k)
            for threads in (1, 2, 3):
                assert_exact_topk(topk_hamming(q, bits, k, num_threads=threads), expected, f"nq={nq} k={k} t={threads}")
            assert_exact_topk(topk_hamming(q, bits, k, allow=allow), ref.topk_hamming(q, bits, k, allow), "allow")


# ---- rescore -----------------------------------------------------------------------------------
@st.composite
def rescore_case(draw):
    dim = draw(st.integers(1, 50))
    n = draw(st.integers(1, 60))
    nq = draw(st.integers(0, 20))
    c = draw(st.integers(1, 25))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    pool = rng.integers(-3, 4, (draw(st.integers(1, 6)), dim)).astype(np.float32)
    base = pool[rng.integers(0, pool.shape[0], n)]
    queries = rng.integers(-3, 4, (nq, dim)).astype(np.float32)
    candidates = rng.integers(-1, n, (nq, c))  # -1 and duplicates included
    if nq and draw(st.booleans()):
        candidates[0] = -1  # a query with no candidate at all
    k = draw(st.integers(1, c))
    return queries, base, candidates, k


@PROPERTY
@given(rescore_case())
def test_rescore_float32_exact_data_equals_reference(case):
    queries, base, candidates, k = case
    got = rescore(queries, base, candidates, k)
    assert_exact_topk(got, ref.rescore(queries, base, candidates, k), "rescore")
    assert_exact_topk(rescore(queries, base, candidates, k, num_threads=1), got, "rescore num_threads=1")


@PROPERTY
@given(rescore_case(), st.integers(0, 2**32 - 1))
def test_rescore_int8_scores_decoded_codes(case, seed):
    queries, base, candidates, k = case
    rng = np.random.default_rng(seed)
    dim = base.shape[1]
    quantizer = Int8Quantizer(rng.normal(0, 1, dim), rng.uniform(0.01, 0.1, dim))
    codes = np.clip(base.astype(np.int8) * 40, -127, 127).astype(np.int8)
    s, i = rescore(queries, (codes, quantizer), candidates, k)
    decoded = ref.int8_decode(codes, quantizer.offset, quantizer.scale)
    e_s, e_i = ref.rescore(queries, decoded, candidates, k)
    np.testing.assert_array_equal(i == -1, e_i == -1)  # same padding
    allowed = np.zeros((queries.shape[0], base.shape[0]), dtype=bool)
    rows, cols = np.nonzero(candidates >= 0)
    allowed[rows, candidates[rows, cols]] = True
    exact = ref.inner_products(queries, decoded)
    assert_float_topk(s, i, exact, k, allowed, atol=1e-4 * max(1.0, float(np.abs(exact).max(initial=0))), rtol=1e-5,
                      strict_ties=False)


def test_rescore_duplicates_are_scored_once_and_padding_follows():
    base = np.array([[1, 0], [0, 1], [2, 0]], dtype=np.float32)
    s, i = rescore(np.array([[1, 0]], np.float32), base, np.array([[2, 2, -1, 0, 2]]), 4)
    np.testing.assert_array_equal(i, [[2, 0, -1, -1]])
    np.testing.assert_array_equal(s, np.array([[2, 1, -np.inf, -np.inf]], np.float32))


def test_rescore_of_topk_candidates_recovers_the_exact_order():
    """The usual pipeline: int8 candidates, float32 rescoring."""
    rng = np.random.default_rng(6)
    base = rng.standard_normal((3000, 40)).astype(np.float32)
    queries = rng.standard_normal((12, 40)).astype(np.float32)
    quantizer = Int8Quantizer().fit(base)
    _, cand = topk_int8(queries, quantizer.encode(base), quantizer, 100)
    s, i = rescore(queries, base, cand, 10)
    allowed = np.zeros((12, 3000), dtype=bool)
    np.put_along_axis(allowed, cand, True, axis=1)
    assert_float_topk(s, i, ref.inner_products(queries, base), 10, allowed, atol=1e-4)


# ---- bad inputs --------------------------------------------------------------------------------
RNG = np.random.default_rng(11)
BASE = RNG.standard_normal((40, 8)).astype(np.float32)
QUERIES = RNG.standard_normal((6, 8)).astype(np.float32)
QUANTIZER = Int8Quantizer().fit(BASE)
CODES = QUANTIZER.encode(BASE)
BITS = binarize(BASE)


BAD_INPUTS = [
    (lambda: topk_float32(QUERIES[None], BASE, 3), ValueError, r"queries must be a 2-D array.*\(1, 6, 8\)"),
    (lambda: topk_float32(QUERIES, BASE[0], 3), ValueError, r"base must be a 2-D array.*\(8,\)"),
    (lambda: topk_float32(QUERIES, BASE[:, :5], 3), ValueError, r"queries have dimension 8 but base rows have dimension 5"),
    (lambda: topk_float32(QUERIES, BASE[:0], 1), ValueError, r"base is empty"),
    (lambda: topk_float32(QUERIES, BASE.astype(object), 3), TypeError, r"base must hold real numbers.*object"),
    (lambda: topk_float32("abc", BASE, 3), TypeError, r"queries must hold real numbers"),
    (lambda: topk_float32([[1.0, 2.0], [3.0]], BASE, 3), TypeError, r"queries could not be read as an array"),
    (lambda: topk_float32(None, BASE, 3), TypeError, r"queries must be an array"),
    (lambda: topk_float32(QUERIES, BASE, 0), ValueError, r"k must be >= 1, got 0"),
    (lambda: topk_float32(QUERIES, BASE, -3), ValueError, r"k must be >= 1, got -3"),
    (lambda: topk_float32(QUERIES, BASE, 41), ValueError, r"k=41 is larger than the number of base rows \(40\)"),
    (lambda: topk_float32(QUERIES, BASE, 2.5), TypeError, r"k must be an integer, got float"),
    (lambda: topk_float32(QUERIES, BASE, True), TypeError, r"k must be an integer, got bool"),
    (lambda: topk_float32(QUERIES, BASE, "3"), TypeError, r"k must be an integer, got str"),
    (lambda: topk_float32(QUERIES, BASE, 3, allow=np.ones(39, bool)), ValueError, r"allow is a boolean mask of length 39, but the base has 40 rows"),
    (lambda: topk_float32(QUERIES, BASE, 3, allow=np.array([0, 40])), ValueError, r"allow holds row ids outside \[0, 40\): \[40\]"),
    (lambda: topk_float32(QUERIES, BASE, 3, allow=np.array([-1, 2])), ValueError, r"outside \[0, 40\): \[-1\]"),
    (lambda: topk_float32(QUERIES, BASE, 3, allow=np.ones(40)), TypeError, r"allow must be a boolean mask or an integer id array, got float64"),
    (lambda: topk_float32(QUERIES, BASE, 3, allow=np.ones((40, 1), bool)), ValueError, r"allow must be 1-D"),
    (lambda: topk_float32(QUERIES, BASE, 3, num_threads=0), ValueError, r"num_threads must be a positive integer.* got 0"),
    (lambda: topk_float32(QUERIES, BASE, 3, num_threads=-1), ValueError, r"num_threads .* got -1"),
    (lambda: topk_float32(QUERIES, BASE, 3, num_threads=1.5), ValueError, r"num_threads .* got 1.5"),
    (lambda: topk_float32(QUERIES, BASE, 3, num_threads=2**40), ValueError, r"num_threads"),
    (lambda: topk_int8(QUERIES, CODES.astype(np.int16), QUANTIZER, 3), TypeError, r"codes must be a int8 array, got int16"),
    (lambda: topk_int8(QUERIES, CODES.view(np.uint8), QUANTIZER, 3), TypeError, r"codes must be a int8 array, got uint8"),
    (lambda: topk_int8(QUERIES, np.full_like(CODES, -128), QUANTIZER, 3), ValueError, r"codes hold -128"),
    # a rescore checks only the rows it reads (it must not scan all N codes per call)
    (lambda: rescore(QUERIES[:1], (np.where(np.arange(len(CODES))[:, None] == 5, -128, CODES).astype(np.int8), QUANTIZER),
                     np.array([[1, 5, -1]]), 2), ValueError, r"codes hold -128"),
    (lambda: topk_int8(QUERIES, CODES, "quantizer", 3), TypeError, r"quantizer must be an Int8Quantizer, got str"),
    (lambda: topk_int8(QUERIES, CODES[:, :4], QUANTIZER, 3), ValueError, r"codes have dimension 4 but the quantizer has 8"),
    (lambda: topk_int8(QUERIES[:, :4], CODES, QUANTIZER, 3), ValueError, r"queries have dimension 4 but codes have dimension 8"),
    (lambda: topk_int8(QUERIES, CODES, QUANTIZER, 41), ValueError, r"k=41 is larger"),
    (lambda: topk_int8(QUERIES, CODES, QUANTIZER, 3, query_precision="int4"), ValueError, r"query_precision must be 'int8' or 'float32', got 'int4'"),
    (lambda: topk_int8(QUERIES, CODES[:0], QUANTIZER, 1), ValueError, r"codes is empty"),
    (lambda: topk_hamming(BITS[:2].astype(np.int8), BITS, 3), TypeError, r"query_bits must be a uint8 array, got int8"),
    (lambda: topk_hamming(BITS[:2], BITS.astype(np.float32), 3), TypeError, r"base_bits must be a uint8 array, got float32"),
    (lambda: topk_hamming(np.zeros((2, 2), np.uint8), BITS, 3), ValueError, r"query_bits have 2 bytes per code but base_bits have 1"),
    (lambda: topk_hamming(BITS[:2], BITS, 41), ValueError, r"k=41 is larger"),
    (lambda: topk_hamming(BITS[:2], BITS, 3, allow=np.ones(40, np.float32)), TypeError, r"allow must be a boolean mask"),
    (lambda: rescore(QUERIES, BASE, np.full((6, 3), 40), 2), ValueError, r"candidates hold ids outside \[0, 40\) \(or -1 for none\): \[40"),
    (lambda: rescore(QUERIES, BASE, np.full((6, 3), -2), 2), ValueError, r"candidates hold ids outside .*\[-2"),
    (lambda: rescore(QUERIES, (CODES, QUANTIZER), np.full((6, 3), 99), 2), ValueError, r"candidates hold ids outside \[0, 40\)"),
    (lambda: rescore(QUERIES, BASE, np.zeros((6, 3)), 2), TypeError, r"candidates must be integer row ids, got float64"),
    (lambda: rescore(QUERIES, BASE, np.zeros((5, 3), np.int64), 2), ValueError, r"candidates must be \[Q=6, c\], got int64 array of shape \(5, 3\)"),
    (lambda: rescore(QUERIES, BASE, np.zeros((6, 3), np.int64), 4), ValueError, r"k=4 is larger than the number of candidates per query \(3\)"),
    (lambda: rescore(QUERIES, (CODES,), np.zeros((6, 3), np.int64), 2), TypeError, r"tuple \(codes, quantizer\)"),
    (lambda: rescore(QUERIES, (CODES, "q"), np.zeros((6, 3), np.int64), 2), TypeError, r"quantizer must be an Int8Quantizer"),
    (lambda: rescore(QUERIES, BASE[:, :3], np.zeros((6, 3), np.int64), 2), ValueError, r"queries have dimension 8 but base rows have dimension 3"),
    (lambda: rescore(QUERIES, BASE, np.zeros((6, 3), np.int64), 2, num_threads=0), ValueError, r"num_threads"),
]


@pytest.mark.parametrize("call, error, match", BAD_INPUTS,
                         ids=[f"{n:02d}-{m[:32]}".replace(" ", "_") for n, (_, _, m) in enumerate(BAD_INPUTS)])
def test_bad_input_raises_naming_the_problem(call, error, match):
    with pytest.raises(error, match=match):
        call()


def with_bad_value(a: np.ndarray, row: int, col: int, value: float) -> np.ndarray:
    a = a.copy()
    a[row, col] = value
    return a


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("nq", [1, 6])
def test_non_finite_queries_and_base_are_value_errors_naming_the_row(value, nq):
    with pytest.raises(ValueError, match=r"queries contains NaN or Inf \(first at index \(0, 3\)\)"):
        topk_float32(with_bad_value(QUERIES[:nq], 0, 3, value), BASE, 3)
    with pytest.raises(ValueError, match=r"base contains NaN or Inf \(row 37\)"):
        topk_float32(QUERIES[:nq], with_bad_value(BASE, 37, 5, value), 3)
    with pytest.raises(ValueError, match=r"queries contains NaN or Inf"):
        topk_int8(with_bad_value(QUERIES[:nq], 0, 1, value), CODES, QUANTIZER, 3)
    with pytest.raises(ValueError, match=r"base contains NaN or Inf \(row 12\)"):
        rescore(QUERIES[:nq], with_bad_value(BASE, 12, 0, value), np.tile(np.arange(20), (nq, 1)), 3)


@pytest.mark.parametrize("nq", [1, 6])
def test_overflowing_scores_are_a_value_error(nq):
    with pytest.raises(ValueError, match=r"scores overflowed float32"):
        topk_float32(QUERIES[:nq] * np.float32(1e20), BASE * np.float32(1e20), 3)


@pytest.mark.parametrize("nq", [1, 6])
def test_non_contiguous_and_float64_inputs_are_converted(nq):
    rng = np.random.default_rng(12)
    big = rng.standard_normal((81, 16)).astype(np.float32)
    base_view = big[::2, ::2]  # strided in both axes
    queries_f = np.asfortranarray(rng.standard_normal((nq, 8)).astype(np.float32))
    expected = topk_float32(np.ascontiguousarray(queries_f), np.ascontiguousarray(base_view), 5)
    assert not base_view.flags.c_contiguous
    assert_exact_topk(topk_float32(queries_f, base_view, 5), expected, "strided")
    assert_exact_topk(topk_float32(queries_f.astype(np.float64), base_view.astype(np.float64), 5), expected, "float64")
    allow = np.ones(82, bool)[::2]  # a strided boolean mask
    assert_exact_topk(topk_float32(queries_f, base_view, 5, allow=allow), expected, "strided allow")
    codes = CODES[:, ::-1]
    assert_exact_topk(topk_int8(QUERIES[:nq], codes, QUANTIZER, 4),
                      topk_int8(QUERIES[:nq], np.ascontiguousarray(codes), QUANTIZER, 4), "reversed codes")
    bits = np.asfortranarray(BITS)
    assert_exact_topk(topk_hamming(bits[:nq], bits, 4), topk_hamming(BITS[:nq], BITS, 4), "fortran bits")


NASTY_SCRIPT = r"""
import json, sys
import numpy as np
import embedrank
import embedrank.kernels as K

b = np.ones((5, 4), np.float32)
q = np.ones((2, 4), np.float32)
qz = K.Int8Quantizer().fit(np.arange(20, dtype=np.float32).reshape(5, 4))
codes = qz.encode(b)
bits = K.binarize(b)
cases = {
    "huge_k": lambda: K.topk_float32(q, b, 2**62),
    "huger_k": lambda: K.topk_float32(q, b, 10**30),
    "uint64_max_k": lambda: K.topk_float32(q, b, np.uint64(2**64 - 1)),
    "int8_huge_k": lambda: K.topk_int8(q, codes, qz, 2**63 - 1),
    "hamming_huge_k": lambda: K.topk_hamming(bits, bits, 2**40),
    "rescore_huge_k": lambda: K.rescore(q, b, np.zeros((2, 3), np.int64), 2**62),
    "zero_dim_queries": lambda: K.topk_float32(np.ones((2, 0), np.float32), np.ones((5, 0), np.float32), 1),
    "zero_dim_bits": lambda: K.topk_hamming(np.ones((2, 0), np.uint8), np.ones((5, 0), np.uint8), 1),
    "zero_rows_queries": lambda: K.topk_float32(np.ones((0, 4), np.float32), b, 3),
    "zero_rows_queries_int8": lambda: K.topk_int8(np.ones((0, 4), np.float32), codes, qz, 3),
    "zero_rows_queries_int8_f32": lambda: K.topk_int8(np.ones((0, 4), np.float32), codes, qz, 3, query_precision="float32"),
    "zero_rows_queries_hamming": lambda: K.topk_hamming(np.ones((0, 1), np.uint8), bits, 3),
    "zero_rows_queries_allow": lambda: K.topk_float32(np.ones((0, 4), np.float32), b, 3, allow=np.array([1])),
    "zero_rows_base": lambda: K.topk_float32(q, np.ones((0, 4), np.float32), 1),
    "zero_rows_rescore": lambda: K.rescore(np.ones((0, 4), np.float32), b, np.zeros((0, 3), np.int64), 2),
    "zero_candidates": lambda: K.rescore(q, b, np.zeros((2, 0), np.int64), 1),
    "zero_batch_pool": lambda: K.mean_pool_normalize(np.ones((0, 3, 4), np.float32), np.ones((0, 3), np.int64)),
    "zero_tokens_pool": lambda: K.mean_pool_normalize(np.ones((2, 0, 4), np.float32), np.ones((2, 0), np.int64)),
    "zero_dim_pool": lambda: K.mean_pool_normalize(np.ones((2, 3, 0), np.float32), np.ones((2, 3), np.int64)),
    "zero_tokens_cls": lambda: K.cls_pool(np.ones((2, 0, 4), np.float32)),
    "zero_rows_normalize": lambda: K.normalize(np.ones((0, 4), np.float32)),
    "zero_dim_normalize": lambda: K.normalize(np.ones((3, 0), np.float32)),
    "zero_rows_encode": lambda: qz.encode(np.ones((0, 4), np.float32)),
    "zero_rows_binarize": lambda: K.binarize(np.ones((0, 4), np.float32)),
    "zero_dim_binarize": lambda: K.binarize(np.ones((3, 0), np.float32)),
    "zero_rows_fit": lambda: K.Int8Quantizer().fit(np.ones((0, 4), np.float32)),
    "scalar_query": lambda: K.topk_float32(np.float32(1.0), b, 1),
    "huge_num_threads": lambda: K.topk_float32(q, b, 2, num_threads=2**40),
    "many_threads": lambda: K.topk_float32(np.ones((64, 4), np.float32), np.ones((5000, 4), np.float32), 3, num_threads=64),
    "huge_allow_id": lambda: K.topk_float32(q, b, 2, allow=np.array([2**62])),
    "max_dim_truncate": lambda: K.truncate_normalize(b, 2**62),
}
for name, call in cases.items():
    try:
        out = call()
        shapes = [list(a.shape) for a in (out if isinstance(out, tuple) else (out,)) if hasattr(a, "shape")]
        result = {"ok": shapes}
    except Exception as error:  # noqa: BLE001 - any clean Python exception is fine here
        # the built-in the error is (embedrank's errors derive from one), and that it is embedrank's
        builtin = next(c.__name__ for c in type(error).__mro__ if c.__module__ == "builtins")
        result = {"error": builtin, "message": str(error), "embedrank": isinstance(error, embedrank.EmbedrankError)}
    print(json.dumps({"case": name, **result}), flush=True)
print("DONE", flush=True)
"""

# What each nasty case must give: an exception type, or the shapes of the outputs.
NASTY_EXPECTED = {
    "huge_k": "ValueError", "huger_k": "ValueError", "uint64_max_k": "ValueError", "int8_huge_k": "ValueError",
    "hamming_huge_k": "ValueError", "rescore_huge_k": "ValueError",
    "zero_dim_queries": "ValueError", "zero_dim_bits": "ValueError",
    "zero_rows_queries": [[0, 3], [0, 3]], "zero_rows_queries_int8": [[0, 3], [0, 3]],
    "zero_rows_queries_int8_f32": [[0, 3], [0, 3]], "zero_rows_queries_hamming": [[0, 3], [0, 3]],
    "zero_rows_queries_allow": [[0, 3], [0, 3]],
    "zero_rows_base": "ValueError", "zero_rows_rescore": [[0, 2], [0, 2]], "zero_candidates": "ValueError",
    "zero_batch_pool": [[0, 4]], "zero_tokens_pool": "ValueError", "zero_dim_pool": "ValueError",
    "zero_tokens_cls": "ValueError", "zero_rows_normalize": [[0, 4]], "zero_dim_normalize": "ValueError",
    "zero_rows_encode": [[0, 4]], "zero_rows_binarize": [[0, 1]], "zero_dim_binarize": "ValueError",
    "zero_rows_fit": "ValueError", "scalar_query": "ValueError", "huge_num_threads": ("ValueError", "TypeError"),
    "many_threads": [[64, 3], [64, 3]], "huge_allow_id": "ValueError", "max_dim_truncate": "ValueError",
}


def test_nasty_inputs_do_not_crash_the_interpreter():
    env = dict(os.environ)
    env.pop("EMBEDRANK_ISA", None)
    r = subprocess.run([sys.executable, "-c", NASTY_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=120)
    results = {d["case"]: d for d in map(json.loads, (line for line in r.stdout.splitlines() if line.startswith("{")))}
    assert r.returncode == 0 and r.stdout.rstrip().endswith("DONE"), (
        f"exit code {r.returncode}; last case reached: {list(results)[-1:]}\n{r.stderr[-3000:]}")
    wrong = {}
    for name, expected in NASTY_EXPECTED.items():
        got = results[name]
        if isinstance(expected, (str, tuple)):
            ok = (got.get("error") in ((expected,) if isinstance(expected, str) else expected) and got.get("message")
                  and got.get("embedrank"))
        else:
            ok = got.get("ok") == expected
        if not ok:
            wrong[name] = got
    assert not wrong, f"unexpected outcomes (expected {[NASTY_EXPECTED[n] for n in wrong]}): {wrong}"


# ---- memory safety: reads and writes past the end of a buffer ----------------------------------
# Under Electric Fence every allocation ends at an unmapped page: touching memory past the end of
# any buffer is a segmentation fault instead of silently reading a neighbour's memory.
GUARD_INT8_SCRIPT = r"""
import json, sys
import numpy as np
from embedrank.kernels import Int8Quantizer, topk_int8
nq, d, n = map(int, sys.argv[1:4])
rng = np.random.default_rng(0)
codes = rng.integers(-127, 128, (n, d), dtype=np.int8)
queries = rng.standard_normal((nq, d)).astype(np.float32)
scores, ids = topk_int8(queries, codes, Int8Quantizer(np.zeros(d), np.full(d, 0.01)), 5)
print(json.dumps(ids.tolist()))
"""

GUARD_SWEEP_SCRIPT = r"""
import numpy as np
import embedrank.kernels as K
rng = np.random.default_rng(0)
for dim in (1, 3, 17, 97, 385):
    for nq in (1, 7, 40):
        n = 300
        base = rng.standard_normal((n, dim)).astype(np.float32)
        q = rng.standard_normal((nq, dim)).astype(np.float32)
        hidden = rng.standard_normal((nq, 3, dim)).astype(np.float32)
        for m in (np.ones((nq, 3), np.int64), np.ones((nq, 3), np.int32), np.ones((nq, 3), bool)):
            K.mean_pool_normalize(hidden, m)
            K.mean_pool_normalize(hidden.astype(np.float16), m)
        K.cls_pool(hidden)
        K.normalize(q)
        K.truncate_normalize(q, max(1, dim // 2))
        qz = K.Int8Quantizer().fit(base)
        codes, bits = qz.encode(base), K.binarize(base)
        for allow in (None, rng.random(n) < 0.3, rng.random(n) < 0.9):
            K.topk_float32(q, base, 10, allow=allow)
            K.topk_int8(q, codes, qz, 10, allow=allow)
            K.topk_int8(q, codes, qz, 10, allow=allow, query_precision="float32")
            K.topk_hamming(K.binarize(q), bits, 10, allow=allow)
        cand = rng.integers(-1, n, (nq, 20))
        K.rescore(q, base, cand, 5)
        K.rescore(q, (codes, qz), cand, 5)
print("swept", K.capabilities()["active"])
"""

# Electric Fence replaces malloc/memalign but not aligned_alloc (used for the packed panels):
# route aligned_alloc to memalign so that every buffer is guarded (and freed by the same allocator).
ALIGNED_ALLOC_SHIM = "#include <malloc.h>\n#include <stdlib.h>\n" \
                     "void *aligned_alloc(size_t a, size_t s) { return memalign(a, s); }\n"


@pytest.fixture(scope="module")
def guarded_env(tmp_path_factory):
    """Environment that runs a Python subprocess under Electric Fence (skips where unavailable)."""
    import shutil

    efence = next((os.path.join(folder, name) for folder in ("/usr/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib64",
                                                             "/usr/local/lib")
                   for name in ("libefence.so", "libefence.so.0") if os.path.exists(os.path.join(folder, name))), None)
    cc = shutil.which("cc") or shutil.which("gcc")
    if os.environ.get("LD_PRELOAD"):
        pytest.skip(f"LD_PRELOAD is already set ({os.environ['LD_PRELOAD']}): a sanitizer run, not two allocators")
    if efence is None or cc is None:
        pytest.skip("needs Electric Fence (apt-get install electric-fence) and a C compiler")
    folder = tmp_path_factory.mktemp("efence")
    (folder / "shim.c").write_text(ALIGNED_ALLOC_SHIM)
    shim = folder / "libshim.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(shim), str(folder / "shim.c")], check=True)
    env = dict(os.environ, LD_PRELOAD=f"{shim} {efence}", EF_ALLOW_MALLOC_0="1",
               EF_ALIGNMENT="16")  # glibc and SSE code expect 16-byte aligned malloc results
    env.pop("EMBEDRANK_ISA", None)
    return env


@pytest.mark.parametrize("nq, d, n", [(96, 1024, 224), (1024, 1024, 500), (40, 100, 300), (96, 1024, 5000)],
                         ids=["q96-d1024-one-block", "q1024-d1024-three-blocks", "q40-d100", "q96-d1024-many-blocks"])
def test_int8_search_reads_nothing_past_its_buffers(guarded_env, nq, d, n):
    """Query counts whose chunks do not split into whole tiles (the AMX kernel loads 32 query
    rows per tile, whatever is left in the chunk)."""
    r = subprocess.run([sys.executable, "-c", GUARD_INT8_SCRIPT, str(nq), str(d), str(n)], cwd=ROOT,
                       env=guarded_env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"exit code {r.returncode} (-11: touched memory past a buffer)\n{r.stderr[-2000:]}"
    rng = np.random.default_rng(0)
    codes = rng.integers(-127, 128, (n, d), dtype=np.int8)
    queries = rng.standard_normal((nq, d)).astype(np.float32)
    expected = ref.topk_int8_int8(queries, codes, np.zeros(d, np.float32), np.full(d, 0.01, np.float32), 5)
    np.testing.assert_array_equal(np.array(json.loads(r.stdout.strip().splitlines()[-1])), expected[1])


@pytest.mark.parametrize("level", ["scalar", "avx2", "avx512"])
def test_every_kernel_stays_inside_its_buffers(guarded_env, level):
    from embedrank import _kernels
    from embedrank.kernels import ISA_LEVELS

    if ISA_LEVELS.index(level) > ISA_LEVELS.index(_kernels.highest_isa()):
        pytest.skip(f"CPU tops out at {_kernels.highest_isa()}")
    r = subprocess.run([sys.executable, "-c", GUARD_SWEEP_SCRIPT], cwd=ROOT, env=dict(guarded_env, EMBEDRANK_ISA=level),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"exit code {r.returncode} (-11: touched memory past a buffer)\n{r.stderr[-2000:]}"
    assert r.stdout.strip() == f"swept {level}"
