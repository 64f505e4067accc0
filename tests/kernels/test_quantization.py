"""embedrank.kernels.quantization: Int8Quantizer (fit, encode, decode, persistence) and binarize."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embedrank.kernels import Int8Quantizer, binarize
from tests.kernels import reference as ref

EXAMPLES = int(os.environ.get("EMBEDRANK_TEST_EXAMPLES", "60"))  # more: a deeper search
PROPERTY = settings(max_examples=EXAMPLES, deadline=None)


@st.composite
def sample_case(draw):
    n = draw(st.integers(1, 60))
    dim = draw(st.one_of(st.integers(1, 40), st.sampled_from([63, 64, 65, 384, 385])))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    spread = draw(st.sampled_from([1e-4, 1.0, 1e4]))
    x = (rng.standard_normal((n, dim)) * spread + rng.normal(0, spread, dim)).astype(np.float32)
    if draw(st.booleans()):
        x[:, rng.integers(0, dim)] = np.float32(rng.normal())  # a constant dimension
    return x


def inv_scale_of(q: Int8Quantizer) -> np.ndarray:
    return (np.float32(1) / q.scale).astype(np.float32)


# ---- fit ---------------------------------------------------------------------------------------
@PROPERTY
@given(sample_case())
def test_fit_minmax_ranges(x):
    q = Int8Quantizer().fit(x)
    offset, scale = ref.minmax_range(x)
    np.testing.assert_array_equal(q.offset, offset.astype(np.float32))
    np.testing.assert_array_equal(q.scale, scale.astype(np.float32))
    assert q.dim == x.shape[1] and q.method == "minmax" and q.percentile is None
    assert q.offset.dtype == q.scale.dtype == q.inv_scale.dtype == np.float32


@PROPERTY
@given(sample_case(), st.sampled_from([90.0, 99.0, 99.9, 100.0]))
def test_fit_percentile_ranges(x, percentile):
    q = Int8Quantizer().fit(x, method="percentile", percentile=percentile)
    lo, hi = np.percentile(x, [100 - percentile, percentile], axis=0)
    span = hi - lo
    np.testing.assert_allclose(q.offset, (lo + hi) / 2, rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(q.scale, np.where(span > 0, span / 254, 1 / 127), rtol=1e-6)
    assert q.method == "percentile" and q.percentile == percentile


def test_percentile_clips_outliers_that_minmax_keeps():
    x = np.linspace(-1, 1, 10001, dtype=np.float32)[:, None].copy()
    x[0] = -1000.0
    minmax, pct = Int8Quantizer().fit(x), Int8Quantizer().fit(x, method="percentile", percentile=99.0)
    assert minmax.scale[0] > 3.9 and pct.scale[0] < 0.01
    assert pct.encode(np.array([[-1000.0]], np.float32))[0, 0] == -127


# ---- encode / decode ---------------------------------------------------------------------------
@PROPERTY
@given(sample_case(), st.integers(0, 2**32 - 1))
def test_encode_is_the_documented_formula_exactly(x, seed):
    q = Int8Quantizer().fit(x)
    rng = np.random.default_rng(seed)
    # Inside and far outside the fitted range.
    probe = (q.offset + q.scale * rng.uniform(-300, 300, (17, x.shape[1]))).astype(np.float32)
    for data in (x, probe):
        codes = q.encode(data)
        assert codes.dtype == np.int8 and codes.shape == data.shape
        np.testing.assert_array_equal(codes, ref.int8_encode(data, q.offset, inv_scale_of(q)))
        assert codes.min(initial=0) >= -127


@PROPERTY
@given(sample_case())
def test_decode_encode_error_is_at_most_half_a_step_inside_the_range(x):
    q = Int8Quantizer().fit(x)
    back = q.decode(q.encode(x)).astype(np.float64)
    assert q.decode(q.encode(x)).dtype == np.float32
    err = np.abs(back - x)
    # half a step, plus float32 rounding of the encode and decode arithmetic
    bound = q.scale / 2 * (1 + 1e-4) + 4 * np.finfo(np.float32).eps * (np.abs(x) + np.abs(q.offset))
    assert (err <= bound).all(), f"max excess {(err - bound).max()}"
    np.testing.assert_allclose(q.decode(q.encode(x)), ref.int8_decode(q.encode(x), q.offset, q.scale), rtol=1e-6,
                               atol=1e-6 * np.abs(q.offset).max())


def test_values_outside_the_range_clip_to_127():
    q = Int8Quantizer().fit(np.array([[0.0, -1.0], [1.0, 1.0]], np.float32))
    x = np.array([[5.0, -7.0], [-3e38, 3e38], [1.0 + 1e-3, -1.0 - 1e-3]], np.float32)
    np.testing.assert_array_equal(q.encode(x), [[127, -127], [-127, 127], [127, -127]])


def test_range_ends_map_to_plus_minus_127():
    x = np.random.default_rng(1).standard_normal((200, 33)).astype(np.float32)
    q = Int8Quantizer().fit(x)
    codes = q.encode(x)
    np.testing.assert_array_equal(codes[x.argmin(axis=0), np.arange(33)], -127)
    np.testing.assert_array_equal(codes[x.argmax(axis=0), np.arange(33)], 127)


def test_constant_dimension_gets_step_one_over_127():
    x = np.array([[2.5, 0.0], [2.5, 1.0], [2.5, 2.0]], np.float32)
    q = Int8Quantizer().fit(x)
    assert q.scale[0] == np.float32(1 / 127) and q.offset[0] == 2.5
    codes = q.encode(np.array([[2.5, 1.0], [3.0, 1.0], [2.0, 1.0], [9.0, 1.0]], np.float32))
    np.testing.assert_array_equal(codes[:, 0], ref.int8_encode([[2.5], [3.0], [2.0], [9.0]], [2.5], [127.0])[:, 0])
    np.testing.assert_array_equal(codes[:, 0], [0, 64, -64, 127])  # 63.5 rounds half to even
    assert q.decode(codes)[0, 0] == 2.5


def test_round_half_to_even():
    q = Int8Quantizer(offset=np.zeros(8), scale=np.full(8, 0.5))  # codes = rint(2 x)
    x = np.array([[0.25, 0.75, 1.25, -0.25, -0.75, -1.25, 63.25, -63.75]], np.float32)
    np.testing.assert_array_equal(q.encode(x), [[0, 2, 2, 0, -2, -2, 126, -127]])


def test_encode_non_finite_names_the_first_bad_row():
    q = Int8Quantizer().fit(np.random.default_rng(2).standard_normal((10, 5)).astype(np.float32))
    x = np.zeros((2000, 5), np.float32)
    x[1500, 2] = np.inf
    x[1700, 0] = np.nan
    with pytest.raises(ValueError, match=r"x contains NaN or Inf \(row 1500\)"):
        q.encode(x)


@pytest.mark.parametrize("threads", [1, 3])
def test_encode_and_binarize_thread_count_does_not_change_the_result(threads):
    x = np.random.default_rng(3).standard_normal((3000, 29)).astype(np.float32)
    q = Int8Quantizer().fit(x[:100])
    np.testing.assert_array_equal(q.encode(x, num_threads=threads), q.encode(x))
    np.testing.assert_array_equal(binarize(x, num_threads=threads), binarize(x))


def test_encode_non_contiguous_and_float64_are_converted():
    x = np.random.default_rng(4).standard_normal((30, 20))
    q = Int8Quantizer().fit(x[:, ::2])
    expected = q.encode(np.ascontiguousarray(x[:, ::2], dtype=np.float32))
    np.testing.assert_array_equal(q.encode(x[:, ::2]), expected)
    np.testing.assert_array_equal(q.encode(np.asfortranarray(x[:, ::2].astype(np.float32))), expected)


# ---- persistence -------------------------------------------------------------------------------
@PROPERTY
@given(sample_case(), st.sampled_from(["minmax", "percentile"]))
def test_to_dict_from_dict_round_trip_through_json(x, method):
    q = Int8Quantizer().fit(x, method=method)
    state = json.loads(json.dumps(q.to_dict()))
    back = Int8Quantizer.from_dict(state)
    np.testing.assert_array_equal(back.offset, q.offset)
    np.testing.assert_array_equal(back.scale, q.scale)
    np.testing.assert_array_equal(back.inv_scale, q.inv_scale)
    np.testing.assert_array_equal(back.encode(x), q.encode(x))
    assert (back.method, back.percentile) == (q.method, q.percentile)


@pytest.mark.parametrize("state, match", [
    ({"type": "Other", "version": 1}, r"not an Int8Quantizer state"),
    ([1, 2], r"not an Int8Quantizer state"),
    ({"type": "Int8Quantizer", "version": 99, "offset": [0.0], "scale": [1.0]}, r"unsupported Int8Quantizer state version 99"),
    ({"type": "Int8Quantizer", "version": 1, "offset": [0.0, 1.0], "scale": [1.0]}, r"equal length, got 2 and 1"),
    ({"type": "Int8Quantizer", "version": 1, "offset": [0.0], "scale": [0.0]}, r"scale finite and > 0"),
    ({"type": "Int8Quantizer", "version": 1, "offset": [float("nan")], "scale": [1.0]}, r"offset must be finite"),
    ({"type": "Int8Quantizer", "version": 1, "offset": [0.0]}, r"offset and scale must be given together"),
])
def test_from_dict_rejects_bad_states(state, match):
    with pytest.raises(ValueError, match=match):
        Int8Quantizer.from_dict(state)


# ---- binarize ----------------------------------------------------------------------------------
@PROPERTY
@given(st.integers(0, 20), st.one_of(st.integers(1, 70), st.sampled_from([255, 256, 257, 1024])),
       st.integers(0, 2**32 - 1))
def test_binarize_is_packbits_of_positive(n, dim, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    special = np.array([0.0, -0.0, 1e-45, -1e-45, 3e38, -3e38], np.float32)
    pick = rng.random((n, dim)) < 0.3
    x[pick] = rng.choice(special, pick.sum())
    got = binarize(x)
    assert got.dtype == np.uint8 and got.shape == (n, (dim + 7) // 8)
    np.testing.assert_array_equal(got, ref.packbits(x))


def test_binarize_non_finite_names_the_row():
    x = np.zeros((3, 9), np.float32)
    x[2, 8] = np.nan
    with pytest.raises(ValueError, match=r"x contains NaN or Inf \(row 2\)"):
        binarize(x)


# ---- bad inputs --------------------------------------------------------------------------------
FITTED = Int8Quantizer().fit(np.arange(12, dtype=np.float32).reshape(3, 4))

BAD_INPUTS = [
    (lambda: FITTED.encode(np.ones((2, 5), np.float32)), ValueError, r"x has dimension 5 but the quantizer was fitted for 4"),
    (lambda: FITTED.encode(np.ones(4, np.float32)), ValueError, r"x must be a 2-D array"),
    (lambda: FITTED.encode(np.ones((2, 4), object)), TypeError, r"x must hold real numbers.*object"),
    (lambda: FITTED.encode("text"), TypeError, r"x must hold real numbers"),
    (lambda: FITTED.encode(np.ones((2, 4), np.float32), num_threads=0), ValueError, r"num_threads"),
    (lambda: FITTED.decode(np.ones((2, 4), np.int16)), TypeError, r"codes must be a int8 array, got int16"),
    (lambda: FITTED.decode(np.ones((2, 4), np.float32)), TypeError, r"codes must be a int8 array, got float32"),
    (lambda: FITTED.decode(np.ones((2, 3), np.int8)), ValueError, r"codes have dimension 3 but the quantizer was fitted for 4"),
    (lambda: FITTED.decode(np.ones((2, 3, 4), np.int8)), ValueError, r"codes must be a 2-D array"),
    (lambda: Int8Quantizer().fit(np.ones((0, 4), np.float32)), ValueError, r"sample is empty"),
    (lambda: Int8Quantizer().fit(np.ones(4, np.float32)), ValueError, r"sample must be a 2-D array"),
    (lambda: Int8Quantizer().fit(np.array([[1.0, np.nan]], np.float32)), ValueError, r"sample contains NaN or Inf"),
    (lambda: Int8Quantizer().fit(np.ones((3, 4)), method="median"), ValueError, r"method must be 'minmax' or 'percentile', got 'median'"),
    (lambda: Int8Quantizer().fit(np.ones((3, 4)), method="percentile", percentile=50), ValueError, r"percentile must be in \(50, 100\], got 50"),
    (lambda: Int8Quantizer().fit(np.ones((3, 4)), method="percentile", percentile=100.5), ValueError, r"percentile must be in \(50, 100\], got 100.5"),
    (lambda: Int8Quantizer().fit(np.ones((3, 4)), method="percentile", percentile=True), ValueError, r"percentile must be in"),
    (lambda: Int8Quantizer(offset=[0.0, 1.0], scale=[1.0]), ValueError, r"equal length"),
    (lambda: Int8Quantizer(offset=[0.0], scale=[-1.0]), ValueError, r"scale finite and > 0"),
    (lambda: Int8Quantizer(offset=[], scale=[]), ValueError, r"non-empty"),
    (lambda: binarize(np.ones((2, 3, 4), np.float32)), ValueError, r"x must be a 2-D array"),
    (lambda: binarize(np.ones((2, 0), np.float32)), ValueError, r"x has dimension 0"),
    (lambda: binarize(np.array([[None, 1.0]])), TypeError, r"x must hold real numbers"),
    (lambda: binarize(np.ones((2, 3), np.float32), num_threads=-1), ValueError, r"num_threads .* got -1"),
]


@pytest.mark.parametrize("call, error, match", BAD_INPUTS,
                         ids=[f"{n:02d}-{m[:32]}".replace(" ", "_") for n, (_, _, m) in enumerate(BAD_INPUTS)])
def test_bad_input_raises_naming_the_problem(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("use", ["encode", "decode", "to_dict", "topk_int8", "rescore"])
def test_unfitted_quantizer_is_a_value_or_type_error(use):
    """Like every other bad input: ValueError or TypeError, naming the problem."""
    from embedrank.kernels import rescore, topk_int8

    q = Int8Quantizer()
    calls = {
        "encode": lambda: q.encode(np.ones((2, 4), np.float32)),
        "decode": lambda: q.decode(np.ones((2, 4), np.int8)),
        "to_dict": q.to_dict,
        "topk_int8": lambda: topk_int8(np.ones((1, 4), np.float32), np.ones((3, 4), np.int8), q, 1),
        "rescore": lambda: rescore(np.ones((1, 4), np.float32), (np.ones((3, 4), np.int8), q), np.zeros((1, 2), np.int64), 1),
    }
    with pytest.raises((ValueError, TypeError), match=r"Int8Quantizer is not fitted"):
        calls[use]()


def test_decode_non_contiguous_codes():
    codes = FITTED.encode(np.arange(24, dtype=np.float32).reshape(6, 4))
    np.testing.assert_array_equal(FITTED.decode(codes[::2]), FITTED.decode(np.ascontiguousarray(codes[::2])))
