"""embedrank.kernels.attention: fused multi-head attention against a float64 numpy reference."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embedrank import _kernels
from embedrank.kernels import attention, bf16_dots_supported
from tests.kernels import reference as ref

EXAMPLES = int(os.environ.get("EMBEDRANK_TEST_EXAMPLES", "60"))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None)


@st.composite
def attention_case(draw):
    batch = draw(st.integers(0, 4))
    tokens = draw(st.one_of(st.integers(1, 20), st.sampled_from([31, 32, 33, 65])))
    head_dim = draw(st.one_of(st.sampled_from([16, 32, 64]), st.integers(1, 40)))
    heads = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    magnitude = draw(st.sampled_from([1e-3, 1.0, 4.0]))
    q, k, v = (rng.standard_normal((batch, tokens, heads * head_dim)).astype(np.float32) * np.float32(magnitude)
               for _ in range(3))
    density = draw(st.sampled_from([0.0, 0.3, 1.0]))
    mask = rng.random((batch, tokens)) < density
    bias_batch = draw(st.sampled_from([None, 1, batch]))  # none, shared (MPNet's), one per sequence
    bias = None if bias_batch is None else rng.standard_normal((bias_batch, heads, tokens, tokens)).astype(np.float32)
    return q, k, v, mask, head_dim, bias


@PROPERTY
@given(attention_case(), st.sampled_from([None, 1, 2]))
def test_attention_matches_the_reference(case, threads):
    q, k, v, mask, head_dim, bias = case
    scale = 1 / np.sqrt(head_dim)
    got = attention(q, k, v, mask, head_dim, num_threads=threads, bias=bias)
    assert got.shape == q.shape and got.dtype == np.float32
    # each output is a convex combination of value rows: float32 rounding scales with their size
    atol = 1e-5 * max(1.0, float(np.abs(v).max(initial=0.0)))
    np.testing.assert_allclose(got, ref.attention(q, k, v, mask, head_dim, scale, bias), rtol=1e-4, atol=atol)


needs_bf16_dots = pytest.mark.skipif(not bf16_dots_supported(), reason="needs AVX512-BF16 at the avx512 ISA level")


def bf16_tolerance(v: np.ndarray) -> float:
    # A weight whose float32 exp differs from the reference's in the last bit can round to the
    # neighbouring bf16 (a relative step of 2^-8); a wrong pairing or layout errs by whole values.
    return 2.0**-8 * max(1.0, float(np.abs(v).max(initial=0.0)))


@needs_bf16_dots
@PROPERTY
@given(attention_case(), st.sampled_from([None, 1, 2]))
def test_bf16_dots_match_the_bf16_reference(case, threads):
    q, k, v, mask, head_dim, bias = case
    scale = 1 / np.sqrt(head_dim)
    got = attention(q, k, v, mask, head_dim, num_threads=threads, bias=bias, bf16_dots=True)
    assert got.shape == q.shape and got.dtype == np.float32
    if head_dim in (16, 32, 64):
        expected, atol = ref.attention_bf16(q, k, v, mask, head_dim, scale, bias), bf16_tolerance(v)
    else:  # other head sizes run the fp32 products
        expected, atol = ref.attention(q, k, v, mask, head_dim, scale, bias), 1e-5 * max(1.0, float(np.abs(v).max(initial=0.0)))
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=atol)


@needs_bf16_dots
def test_bf16_dots_stay_close_to_fp32_on_encoder_sized_heads():
    rng = np.random.default_rng(7)
    q, k, v = (rng.standard_normal((2, 77, 12 * 32)).astype(np.float32) for _ in range(3))
    mask = np.ones((2, 77), bool)
    mask[1, 50:] = False
    fp32 = attention(q, k, v, mask, 32)
    bf16 = attention(q, k, v, mask, 32, bf16_dots=True)
    assert not np.array_equal(fp32, bf16)  # the bf16 products really ran
    cosine = (fp32 * bf16).sum(-1) / np.linalg.norm(fp32, axis=-1) / np.linalg.norm(bf16, axis=-1)
    assert cosine.min() > 0.999


def test_bf16_dots_where_the_cpu_or_level_lacks_them_are_refused_by_name():
    q = np.ones((1, 3, 32), np.float32)
    mask = np.ones((1, 3), np.int64)
    with pytest.raises(TypeError, match="bf16_dots must be True or False"):
        attention(q, q, q, mask, 32, bf16_dots="yes")
    highest = _kernels.highest_isa()
    try:
        _kernels.set_isa("scalar")
        assert not bf16_dots_supported()
        with pytest.raises(ValueError, match=r"bf16_dots=True needs AVX512-BF16 .* \(scalar\) lacks it"):
            attention(q, q, q, mask, 32, bf16_dots=True)
        # the C++ kernel itself runs the fp32 products there (the onnxruntime op's fallback)
        out = np.empty_like(q)
        _kernels.attention(q, q, q, mask, out, 1, 0.5, 1, None, True)
        np.testing.assert_allclose(out, attention(q, q, q, mask, 32, scale=0.5), rtol=1e-6)
    finally:
        _kernels.set_isa(highest)


def test_a_bias_moves_the_weights_and_a_shared_bias_equals_its_copies():
    rng = np.random.default_rng(4)
    q, k, v = (rng.standard_normal((3, 10, 64)).astype(np.float32) for _ in range(3))
    mask = np.ones((3, 10), np.int64)
    mask[1, 7:] = 0
    bias = rng.standard_normal((1, 2, 10, 10)).astype(np.float32) * 3
    shared = attention(q, k, v, mask, 32, bias=bias)
    np.testing.assert_array_equal(shared, attention(q, k, v, mask, 32, bias=np.repeat(bias, 3, axis=0)))
    assert np.abs(shared - attention(q, k, v, mask, 32)).max() > 0.1
    # a bias that strongly favours key 2 makes every row copy value row 2
    favour = np.zeros((1, 2, 10, 10), np.float32)
    favour[..., 2] = 60.0
    out = attention(np.zeros_like(q), k, v, mask, 32, bias=favour)
    np.testing.assert_allclose(out, np.broadcast_to(v[:, 2:3], out.shape), rtol=1e-5, atol=1e-5)


def test_masked_keys_change_nothing_and_padded_queries_are_computed():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 12, 64)).astype(np.float32) for _ in range(3))
    mask = np.array([[1] * 9 + [0] * 3])
    base = attention(q, k, v, mask, 32)
    k2, v2 = k.copy(), v.copy()
    k2[:, 9:] = 1e3
    v2[:, 9:] = -1e3
    np.testing.assert_array_equal(attention(q, k2, v2, mask, 32), base)
    # a padded query row is attention over the attended keys, like any other row
    np.testing.assert_allclose(base[:, 9:], ref.attention(q, k, v, mask, 32, 1 / np.sqrt(32))[:, 9:], rtol=1e-4,
                               atol=1e-5)


def test_a_sequence_with_no_attended_key_averages_its_values():
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((1, 5, 32)).astype(np.float32) for _ in range(3))
    out = attention(q, k, v, np.zeros((1, 5), np.int64), 32)
    np.testing.assert_allclose(out, np.broadcast_to(v.mean(axis=1, keepdims=True), out.shape), rtol=1e-5, atol=1e-6)


def test_scale_and_heads_are_independent():
    rng = np.random.default_rng(2)
    q, k, v = (rng.standard_normal((2, 6, 96)).astype(np.float32) for _ in range(3))
    mask = np.ones((2, 6), np.int64)
    out = attention(q, k, v, mask, 32, scale=0.5)
    for h in range(3):
        cols = slice(32 * h, 32 * (h + 1))
        one = attention(q[..., cols], k[..., cols], v[..., cols], mask, 32, scale=0.5)
        np.testing.assert_allclose(out[..., cols], one, rtol=1e-6, atol=1e-6)


def test_bad_inputs_name_the_problem():
    q = np.zeros((2, 3, 8), np.float32)
    mask = np.ones((2, 3), np.int64)
    with pytest.raises(TypeError, match="q must be a float array"):
        attention(q.astype(np.int32), q, q, mask, 4)
    with pytest.raises(ValueError, match="k must be a 3-D array"):
        attention(q, q[0], q, mask, 4)
    with pytest.raises(ValueError, match="one shape"):
        attention(q, q, q[:, :2], mask, 4)
    for bad in (0, -1, 3, 2.0, True):
        with pytest.raises(ValueError, match="head_dim"):
            attention(q, q, q, mask, bad)
    with pytest.raises(ValueError, match=r"mask must have shape \(2, 3\)"):
        attention(q, q, q, mask[:, :2], 4)
    with pytest.raises(TypeError, match="mask must be an integer or bool"):
        attention(q, q, q, mask.astype(np.float32), 4)
    with pytest.raises(ValueError, match="scale must be finite"):
        attention(q, q, q, mask, 4, scale=float("nan"))
    nan = q.copy()
    nan[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match=r"v contains NaN or Inf \(first at index \(1, 2, 3\)\)"):
        attention(q, q, nan, mask, 4)
    with pytest.raises(ValueError, match="num_threads"):
        attention(q, q, q, mask, 4, num_threads=0)
    bias = np.zeros((1, 2, 3, 3), np.float32)
    attention(q, q, q, mask, 4, bias=bias)  # heads = 8 / 4 = 2
    for bad in (bias[0], np.zeros((3, 2, 3, 3), np.float32), np.zeros((1, 1, 3, 3), np.float32),
                np.zeros((1, 2, 3, 2), np.float32)):
        with pytest.raises(ValueError, match=r"bias must have shape \[1 or 2, 2, 3, 3\]"):
            attention(q, q, q, mask, 4, bias=bad)
    with pytest.raises(TypeError, match="bias must be a float array"):
        attention(q, q, q, mask, 4, bias=bias.astype(np.int32))
    inf = bias.copy()
    inf[0, 1, 2, 0] = -np.inf
    with pytest.raises(ValueError, match=r"bias contains NaN or Inf"):
        attention(q, q, q, mask, 4, bias=inf)


def test_empty_batch_and_float64_input():
    empty = np.zeros((0, 4, 8), np.float32)
    assert attention(empty, empty, empty, np.zeros((0, 4), bool), 4).shape == (0, 4, 8)
    rng = np.random.default_rng(3)
    q = rng.standard_normal((1, 4, 8))
    mask = np.ones((1, 4), bool)
    np.testing.assert_allclose(attention(q, q, q, mask, 4), ref.attention(q, q, q, mask, 4, 0.5), rtol=1e-4, atol=1e-5)
