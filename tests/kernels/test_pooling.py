"""embedrank.kernels.pooling: masked mean pooling, CLS pooling, normalization, truncation."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embedrank.kernels import cls_pool, mean_pool_normalize, normalize, truncate_normalize
from tests.kernels import reference as ref

EXAMPLES = int(os.environ.get("EMBEDRANK_TEST_EXAMPLES", "60"))  # more: a deeper search
PROPERTY = settings(max_examples=EXAMPLES, deadline=None)
MASK_DTYPES = (np.int64, np.int32, np.bool_, np.uint8)


@st.composite
def pooling_case(draw):
    batch = draw(st.integers(0, 9))
    tokens = draw(st.integers(1, 9))
    dim = draw(st.one_of(st.integers(1, 40), st.sampled_from([63, 64, 65, 127, 385])))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    magnitude = draw(st.sampled_from([1e-30, 1e-3, 1.0, 1e3]))
    hidden = (rng.standard_normal((batch, tokens, dim)) * magnitude).astype(np.float32)
    if batch and draw(st.booleans()):
        hidden[0] = 0.0  # pools to zero: stays zero after normalization
    density = draw(st.sampled_from([0.1, 0.5, 1.0]))
    mask = rng.random((batch, tokens)) < density
    mask[np.arange(batch), rng.integers(0, tokens, batch)] = True
    dtype = draw(st.sampled_from(MASK_DTYPES))
    return hidden, mask.astype(dtype)


@PROPERTY
@given(pooling_case(), st.booleans())
def test_mean_pool_float32_matches_reference(case, norm):
    hidden, mask = case
    got = mean_pool_normalize(hidden, mask, normalize=norm)
    assert got.dtype == np.float32 and got.shape == (hidden.shape[0], hidden.shape[2])
    expected = ref.mean_pool(hidden, mask, normalize=norm)
    np.testing.assert_allclose(got, expected, rtol=2e-6, atol=1e-6 * np.abs(expected).max(initial=0) + 1e-37)


@PROPERTY
@given(pooling_case())
def test_mean_pool_float16_matches_reference(case):
    hidden, mask = case
    h16 = np.clip(hidden, -6e4, 6e4).astype(np.float16)
    got = mean_pool_normalize(h16, mask)
    np.testing.assert_allclose(got, ref.mean_pool(h16, mask), rtol=2e-6, atol=1e-6)


def test_every_finite_float16_value_is_converted_exactly():
    """Every finite float16 bit pattern (subnormals included), pooled alone, gives its value."""
    finite = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    finite = finite[np.isfinite(finite)]
    pad = (-finite.size) % 16
    h = np.concatenate([finite, np.zeros(pad, np.float16)]).reshape(-1, 1, 16)
    got = mean_pool_normalize(h, np.ones((h.shape[0], 1), np.int64), normalize=False)
    np.testing.assert_array_equal(got.ravel()[: finite.size], finite.astype(np.float32))


@pytest.mark.parametrize("dtype", MASK_DTYPES)
def test_mask_dtypes_give_identical_results(dtype):
    rng = np.random.default_rng(1)
    hidden = rng.standard_normal((11, 7, 33)).astype(np.float32)
    mask = rng.random((11, 7)) < 0.5
    mask[:, 3] = True
    np.testing.assert_array_equal(mean_pool_normalize(hidden, mask.astype(dtype)), mean_pool_normalize(hidden, mask))


def test_masked_tokens_are_ignored_whatever_they_hold():
    rng = np.random.default_rng(2)
    hidden = rng.standard_normal((3, 5, 16)).astype(np.float32)
    mask = np.array([[1, 1, 0, 0, 0], [1, 0, 1, 0, 1], [0, 0, 0, 0, 1]])
    poisoned = hidden.copy()
    poisoned[mask == 0] = 1e30
    np.testing.assert_array_equal(mean_pool_normalize(poisoned, mask), mean_pool_normalize(hidden, mask))


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_mean_pool_thread_count_does_not_change_the_result(threads):
    rng = np.random.default_rng(3)
    hidden = rng.standard_normal((50, 4, 40)).astype(np.float32)
    mask = np.ones((50, 4), np.int64)
    mask[::3, 1:] = 0
    np.testing.assert_array_equal(mean_pool_normalize(hidden, mask, num_threads=threads),
                                  mean_pool_normalize(hidden, mask))


def test_non_contiguous_and_float64_hidden_are_converted():
    rng = np.random.default_rng(4)
    big = rng.standard_normal((6, 10, 34)).astype(np.float32)
    view = big[::2, ::2, ::2]
    mask = np.asfortranarray(np.ones((3, 5), np.int32))
    expected = mean_pool_normalize(np.ascontiguousarray(view), np.ones((3, 5), np.int32))
    np.testing.assert_array_equal(mean_pool_normalize(view, mask), expected)
    np.testing.assert_array_equal(mean_pool_normalize(view.astype(np.float64), mask), expected)


def test_cls_pool_takes_the_first_token():
    rng = np.random.default_rng(5)
    hidden = rng.standard_normal((4, 3, 19)).astype(np.float32)
    np.testing.assert_allclose(cls_pool(hidden), ref.l2_normalize(hidden[:, 0]), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(cls_pool(hidden, normalize=False), hidden[:, 0])
    np.testing.assert_allclose(cls_pool(hidden.astype(np.float16)),
                               ref.l2_normalize(hidden[:, 0].astype(np.float16)), rtol=1e-6, atol=1e-7)


# ---- normalize / truncate_normalize ------------------------------------------------------------
@st.composite
def rows_case(draw):
    n = draw(st.integers(0, 20))
    dim = draw(st.one_of(st.integers(1, 70), st.sampled_from([255, 256, 257, 1024])))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = (rng.standard_normal((n, dim)) * draw(st.sampled_from([1e-18, 1.0, 1e15]))).astype(np.float32)
    if n:
        x[rng.integers(0, n)] = 0.0
    return x


@PROPERTY
@given(rows_case())
def test_normalize_matches_reference(x):
    got = normalize(x)
    assert got.shape == x.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, ref.l2_normalize(x), rtol=2e-6, atol=1e-7)
    zero = ~x.any(axis=1)
    assert (got[zero] == 0).all()


@PROPERTY
@given(rows_case(), st.data())
def test_truncate_normalize_matches_reference(x, data):
    dim = data.draw(st.integers(1, x.shape[1]))
    got = truncate_normalize(x, dim)
    assert got.shape == (x.shape[0], dim)
    np.testing.assert_allclose(got, ref.truncate_normalize(x, dim), rtol=2e-6, atol=1e-7)


def test_one_dimensional_rows_stay_one_dimensional():
    v = np.array([3.0, 4.0, 12.0], dtype=np.float32)
    np.testing.assert_allclose(normalize(v), v / 13, rtol=1e-6)
    np.testing.assert_allclose(truncate_normalize(v, 2), [0.6, 0.8], rtol=1e-6)
    assert normalize(v).shape == (3,) and truncate_normalize(v, 2).shape == (2,)


def test_normalize_non_contiguous_and_float64_are_converted():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((40, 30))
    expected = normalize(x.astype(np.float32))
    np.testing.assert_array_equal(normalize(x), expected)
    np.testing.assert_array_equal(normalize(np.asfortranarray(x.astype(np.float32))), expected)
    np.testing.assert_array_equal(truncate_normalize(x.T.copy().T, 7), truncate_normalize(x.astype(np.float32), 7))


@pytest.mark.parametrize("threads", [1, 3])
def test_normalize_thread_count_does_not_change_the_result(threads):
    x = np.random.default_rng(7).standard_normal((1000, 24)).astype(np.float32)
    np.testing.assert_array_equal(normalize(x, num_threads=threads), normalize(x))


# ---- bad inputs --------------------------------------------------------------------------------
H = np.ones((2, 3, 4), np.float32)
M = np.ones((2, 3), np.int64)

BAD_INPUTS = [
    (lambda: mean_pool_normalize(H[0], M), ValueError, r"hidden must be a 3-D array \[batch, tokens, dim\], got float32 array of shape \(3, 4\)"),
    (lambda: mean_pool_normalize(H[None], M), ValueError, r"hidden must be a 3-D array"),
    (lambda: mean_pool_normalize(H.astype(np.int32), M), TypeError, r"hidden must be float32 or float16, got int32"),
    (lambda: mean_pool_normalize(H.astype(object), M), TypeError, r"hidden must be float32 or float16, got object"),
    (lambda: mean_pool_normalize("hidden", M), TypeError, r"hidden must be float32 or float16"),
    (lambda: mean_pool_normalize(None, M), TypeError, r"hidden must be an array, got None"),
    (lambda: mean_pool_normalize(np.ones((2, 3, 0), np.float32), M), ValueError, r"hidden has dimension 0"),
    (lambda: mean_pool_normalize(H, M[:, :2]), ValueError, r"mask must have shape \(2, 3\) .*got int64 array of shape \(2, 2\)"),
    (lambda: mean_pool_normalize(H, M.T), ValueError, r"mask must have shape \(2, 3\)"),
    (lambda: mean_pool_normalize(H, M * 2), ValueError, r"mask values must be 0 or 1, found \[2\]"),
    (lambda: mean_pool_normalize(H, -M), ValueError, r"mask values must be 0 or 1, found \[-1\]"),
    (lambda: mean_pool_normalize(H, M.astype(np.float32)), TypeError, r"mask must be int64, int32 or bool, got float32"),
    (lambda: mean_pool_normalize(H, M.astype(object)), TypeError, r"mask must be int64, int32 or bool, got object"),
    (lambda: mean_pool_normalize(H, np.array([[1, 1, 0], [0, 0, 0]])), ValueError, r"mask rows \[1\] are all zero"),
    (lambda: mean_pool_normalize(H, M, num_threads=0), ValueError, r"num_threads must be a positive integer.* got 0"),
    (lambda: mean_pool_normalize(H, M, num_threads=-1), ValueError, r"num_threads .* got -1"),
    (lambda: mean_pool_normalize(np.full((2, 3, 4), np.nan, np.float32), M), ValueError, r"pooled output .*NaN"),
    (lambda: mean_pool_normalize(np.full((2, 3, 4), 3e38, np.float32), M), ValueError, r"pooled output .*overflows"),
    (lambda: cls_pool(np.ones((2, 0, 4), np.float32)), ValueError, r"hidden has no tokens"),
    (lambda: cls_pool(np.full((2, 3, 4), np.inf, np.float32)), ValueError, r"hidden contains NaN or Inf"),
    (lambda: normalize(np.ones((2, 3, 4), np.float32)), ValueError, r"x must be a 2-D array \[n, dim\]"),
    (lambda: normalize(np.ones((3, 0), np.float32)), ValueError, r"x has dimension 0"),
    (lambda: normalize(np.array([["a", "b"]])), TypeError, r"x must hold real numbers"),
    (lambda: normalize(np.array([[1.0, np.nan]], np.float32)), ValueError, r"x contains NaN or Inf \(first at index \(0, 1\)\)"),
    (lambda: normalize(np.ones((2, 3), np.float32), num_threads=0), ValueError, r"num_threads"),
    (lambda: truncate_normalize(np.ones((2, 3), np.float32), 0), ValueError, r"dim must be in \[1, 3\], got 0"),
    (lambda: truncate_normalize(np.ones((2, 3), np.float32), 4), ValueError, r"dim must be in \[1, 3\], got 4"),
    (lambda: truncate_normalize(np.ones((2, 3), np.float32), 2.5), TypeError, r"dim must be an integer, got float"),
    (lambda: truncate_normalize(np.ones((2, 3), np.float32), True), TypeError, r"dim must be an integer, got bool"),
    (lambda: truncate_normalize(np.ones((2, 3), np.float32), None), TypeError, r"dim must be an integer, got NoneType"),
]


@pytest.mark.parametrize("call, error, match", BAD_INPUTS,
                         ids=[f"{n:02d}-{m[:32]}".replace(" ", "_") for n, (_, _, m) in enumerate(BAD_INPUTS)])
def test_bad_input_raises_naming_the_problem(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_all_zero_mask_rows_are_listed():
    mask = np.ones((6, 2), np.int32)
    mask[[1, 4]] = 0
    with pytest.raises(ValueError, match=r"mask rows \[1, 4\] are all zero"):
        mean_pool_normalize(np.ones((6, 2, 3), np.float32), mask)
