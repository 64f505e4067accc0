"""Assertions shared by the kernel tests: float top-k results against exact scores, robust to
near ties (two rows whose exact scores differ by less than the tolerance may come in either order)."""

from __future__ import annotations

import numpy as np

from tests.kernels import reference as ref


def assert_padding(scores, ids, m: int, pad_score) -> None:
    assert (ids[:, m:] == -1).all(), f"ids past the {m} allowed rows must be -1, got {ids[:, m:][:2]}"
    tail = scores[:, m:]
    if np.isinf(pad_score):
        assert np.isneginf(tail).all(), f"scores past the {m} allowed rows must be -inf, got {tail[:2]}"
    else:
        assert (tail == pad_score).all(), f"distances past the {m} allowed rows must be {pad_score}, got {tail[:2]}"


def expected_float_topk(exact, k: int, allow=None) -> tuple[np.ndarray, np.ndarray]:
    """The reference top-(k + 1) that assert_float_topk compares with (to compute it once)."""
    exact = np.asarray(exact, dtype=np.float64)
    return ref.topk_from_scores(exact, min(k + 1, exact.shape[1]), allow)


def assert_float_topk(scores, ids, exact, k: int, allow=None, atol: float = 1e-5, rtol: float = 1e-5,
                      what: str = "", expected=None, strict_ties: bool = True) -> None:
    """Checks a float (scores, ids) [Q, k] result against exact [Q, N] scores.

    - shapes, dtypes, padding (-inf, -1) past the allowed rows;
    - ids valid, allowed and distinct; each returned score equals its row's exact score;
    - scores sorted best first, equal scores in increasing id order (with strict_ties=False only
      where the exact scores are equal too: for results whose scores get a per-query term added
      after the ranking, e.g. the int8 offset, which can round two different scores together);
    - the score sequence equals the exact top-k score sequence (no better row was skipped);
    - ids equal the reference ids wherever the reference has no near tie (gap > tolerance).
    """
    exact = np.asarray(exact, dtype=np.float64)
    nq, n = exact.shape
    assert scores.shape == (nq, k) and ids.shape == (nq, k), f"{what}: shapes {scores.shape}, {ids.shape}"
    assert scores.dtype == np.float32 and ids.dtype == np.int64, f"{what}: dtypes {scores.dtype}, {ids.dtype}"
    if allow is not None and np.ndim(allow) == 2:
        allowed = np.asarray(allow, dtype=bool)
    else:
        allowed = np.broadcast_to(ref.allowed_rows(allow, n), (nq, n))
    counts = np.minimum(allowed.sum(axis=1), k)
    if nq and (counts != counts[0]).any():  # ragged padding: one query at a time
        for i in range(nq):
            one = None if expected is None else (expected[0][i : i + 1], expected[1][i : i + 1])
            assert_float_topk(scores[i : i + 1], ids[i : i + 1], exact[i : i + 1], k, allowed[i : i + 1],
                              atol, rtol, f"{what} query {i}", one, strict_ties)
        return
    m = int(counts[0]) if nq else 0
    assert_padding(scores, ids, m, -np.inf)
    if m == 0 or nq == 0:
        return
    s, i = scores[:, :m], ids[:, :m]
    assert ((i >= 0) & (i < n)).all(), f"{what}: ids out of range: {i[(i < 0) | (i >= n)][:5]}"
    assert np.take_along_axis(allowed, i, axis=1).all(), f"{what}: a row that is not allowed was returned"
    si = np.sort(i, axis=1)
    assert (np.diff(si, axis=1) > 0).all(), f"{what}: an id was returned twice"
    own = np.take_along_axis(exact, i, axis=1)
    tol = atol + rtol * np.abs(own)
    bad = np.abs(s - own) > tol
    assert not bad.any(), f"{what}: returned scores differ from the rows' exact scores: {s[bad][:5]} vs {own[bad][:5]}"
    assert (s[:, :-1] >= s[:, 1:]).all(), f"{what}: scores are not sorted best first"
    tie = s[:, :-1] == s[:, 1:]
    if not strict_ties:
        tie &= own[:, :-1] == own[:, 1:]
    assert (i[:, :-1][tie] < i[:, 1:][tie]).all(), f"{what}: equal scores not in increasing id order"
    if expected is None:
        expected = ref.topk_from_scores(exact, min(m + 1, n), allowed)
    ref_s, ref_i = expected
    top = ref_s[:, :m]
    bad = np.abs(s - top) > atol + rtol * np.abs(top)
    assert not bad.any(), (
        f"{what}: score sequence differs from the exact top-{m}: got {s[bad][:5]}, expected {top[bad][:5]}"
    )
    # ids must match wherever the reference order is unambiguous.
    ext = ref_s[:, : m + 1] if ref_s.shape[1] > m else np.concatenate([ref_s, np.full((nq, 1), -np.inf)], axis=1)
    gap_tol = 2 * (atol + rtol * np.abs(ext[:, :m]))
    prev_gap = np.concatenate([np.full((nq, 1), np.inf), ext[:, :m - 1] - ext[:, 1:m]], axis=1)
    next_gap = ext[:, :m] - ext[:, 1 : m + 1]
    clear = (prev_gap > gap_tol) & (next_gap > gap_tol)
    wrong = clear & (i != ref_i[:, :m])
    assert not wrong.any(), (
        f"{what}: ids differ from the reference where there is no near tie: "
        f"got {i[wrong][:5]}, expected {ref_i[:, :m][wrong][:5]}"
    )


def assert_exact_topk(got, expected, what: str = "") -> None:
    """Identical ids and scores (integer kernels, or float kernels on exactly representable data)."""
    (gs, gi), (es, ei) = got, expected
    assert gs.shape == es.shape and gi.shape == ei.shape, f"{what}: shapes {gs.shape} vs {es.shape}"
    np.testing.assert_array_equal(gi, ei, err_msg=f"{what}: ids")
    np.testing.assert_array_equal(gs, np.asarray(es).astype(gs.dtype), err_msg=f"{what}: scores")
