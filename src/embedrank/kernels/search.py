"""Exact top-k search: float32 inner product, int8 codes, Hamming over packed bits, rescoring.

Every search returns ``(scores, ids)`` as ``[Q, k]`` arrays, best first, ties broken by the
lower id. A 1-D query is taken as one query (``Q = 1``). ``k`` larger than the number of base
rows is a ValueError; when ``allow`` leaves fewer than ``k`` rows, the rows past them are
padded with id -1 and score -inf (distance ``INT32_MAX`` for Hamming).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from embedrank import _kernels
from embedrank.kernels._checks import (
    GATHER_BELOW_FRACTION,
    ROW_PATH_MAX_QUERIES,
    allow_mask,
    as_code_matrix,
    as_float_matrix,
    as_array,
    check_k,
    check_nonempty,
    check_num_threads,
    check_same_dim,
    describe,
)
from embedrank.kernels.quantization import Int8Quantizer
from embedrank.errors import InvalidTypeError, InvalidValueError

HAMMING_PAD = np.iinfo(np.int32).max


def _search(kernel: Callable, queries: np.ndarray, base: np.ndarray, k: int, allow, num_threads,
            score_dtype, pad_score) -> tuple[np.ndarray, np.ndarray, bool]:
    """Runs `kernel` with the allow-list handled: dense rows are skipped in the kernel, sparse
    ones copied out first (then ids are mapped back). Returns (scores, ids, all_finite)."""
    n = base.shape[0]
    nq = queries.shape[0]
    threads = check_num_threads(num_threads)
    mask = allow_mask(allow, n)
    scores = np.full((nq, k), pad_score, dtype=score_dtype)
    ids = np.full((nq, k), -1, dtype=np.int64)
    if nq == 0:
        return scores, ids, True
    if mask is None:
        finite = kernel(queries, base, k, None, scores, ids, threads)
        return scores, ids, finite is not False
    allowed = np.flatnonzero(mask)
    if allowed.size == 0:
        return scores, ids, True
    k_run = min(k, int(allowed.size))
    run_scores = np.empty((nq, k_run), dtype=score_dtype)
    run_ids = np.empty((nq, k_run), dtype=np.int64)
    if nq > ROW_PATH_MAX_QUERIES and allowed.size < GATHER_BELOW_FRACTION * n:
        subset = np.ascontiguousarray(base[allowed])
        finite = kernel(queries, subset, k_run, None, run_scores, run_ids, threads)
        valid = run_ids >= 0
        run_ids[valid] = allowed[run_ids[valid]]
    else:
        finite = kernel(queries, base, k_run, mask, run_scores, run_ids, threads)
    scores[:, :k_run] = run_scores
    ids[:, :k_run] = run_ids
    return scores, ids, finite is not False


def _raise_nonfinite(base: np.ndarray, name: str) -> None:
    bad_rows = np.flatnonzero(~np.isfinite(base).all(axis=1))
    if bad_rows.size:
        raise InvalidValueError(f"{name} contains NaN or Inf (row {int(bad_rows[0])})")
    raise InvalidValueError(f"scores overflowed float32: {name} values are too large")


def _as_queries(queries, name: str = "queries") -> np.ndarray:
    return as_float_matrix(queries, name, allow_1d=True)


def topk_float32(queries, base, k: int, allow=None, num_threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k.

    queries: [Q, d] (or [d]) float32; base: [N, d] float32 (float64 is converted; NaN/Inf
    raise ValueError); allow: None, a bool mask [N], or allowed row ids.
    Returns scores [Q, k] float32 and ids [Q, k] int64.
    """
    q = _as_queries(queries)
    b = as_float_matrix(base, "base", check_finite=False)
    check_same_dim(q, b, "queries", "base rows")
    check_nonempty(b, "base")
    k = check_k(k, b.shape[0])
    scores, ids, finite = _search(_kernels.topk_float32, q, b, k, allow, num_threads, np.float32, -np.inf)
    if not finite:
        _raise_nonfinite(b, "base")
    return scores, ids


def _int8_codes(codes, quantizer, rows: np.ndarray | None = None) -> np.ndarray:
    """codes checked: int8 [N, d] of the quantizer's dimension, no -128 anywhere (rows=None) or
    in the rows that will be read (rows: ids, -1 ignored; a rescore must not scan all N)."""
    if not isinstance(quantizer, Int8Quantizer):
        raise InvalidTypeError(f"quantizer must be an Int8Quantizer, got {type(quantizer).__name__}")
    c = as_code_matrix(codes, "codes", np.int8)
    if c.shape[1] != quantizer.dim:
        raise InvalidValueError(f"codes have dimension {c.shape[1]} but the quantizer has {quantizer.dim}")
    check_nonempty(c, "codes")
    read = c if rows is None else c[rows[(rows >= 0) & (rows < c.shape[0])]]
    if read.size and read.min() < -127:
        raise InvalidValueError("codes hold -128, which Int8Quantizer never produces (codes are in [-127, 127])")
    return c


def _fold_quantizer(q: np.ndarray, quantizer: Int8Quantizer) -> tuple[np.ndarray, np.ndarray]:
    """q . decode(c) = (q * scale) . c + q . offset: the scaled queries and the per-query bias."""
    scaled = np.ascontiguousarray(q * quantizer.scale, dtype=np.float32)
    bias = (q.astype(np.float64) @ quantizer.offset.astype(np.float64)).astype(np.float32)
    return scaled, bias


def quantize_queries(scaled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-query symmetric int8 quantization: scaled [Q, d] -> (codes int8 [Q, d], step [Q])."""
    peak = np.abs(scaled).max(axis=1)
    step = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    codes = np.clip(np.rint(scaled / step[:, None]), -127, 127).astype(np.int8)
    return codes, step


def topk_int8(queries, codes, quantizer: Int8Quantizer, k: int, allow=None, query_precision: str = "int8",
              num_threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of float32 queries against int8 codes, scored as q . decode(code) (asymmetric).

    The quantizer's scale and offset are folded into each query. With query_precision="int8"
    (default) the folded query is itself quantized to int8 with one step per query and scored
    by the integer kernel (AVX-512 VNNI where present): fast, approximate. With "float32" the
    folded query stays float32: exact q . decode(code), float speed, a quarter of the memory.
    Returns scores [Q, k] float32 (approximating the float inner product) and ids [Q, k] int64.
    """
    q = _as_queries(queries)
    c = _int8_codes(codes, quantizer)
    check_same_dim(q, c, "queries", "codes")
    k = check_k(k, c.shape[0])
    scaled, bias = _fold_quantizer(q, quantizer)
    if query_precision == "float32":
        scores, ids, _ = _search(_kernels.topk_float32_int8, scaled, c, k, allow, num_threads, np.float32, -np.inf)
        scores += bias[:, None]
    elif query_precision == "int8":
        q_codes, step = quantize_queries(scaled)
        scores, ids, _ = _search(_kernels.topk_int8_int8, q_codes, c, k, allow, num_threads, np.float32, -np.inf)
        scores *= step[:, None]
        scores += bias[:, None]
    else:
        raise InvalidValueError(f"query_precision must be 'int8' or 'float32', got {query_precision!r}")
    return scores, ids


def topk_hamming(query_bits, base_bits, k: int, allow=None, num_threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k smallest Hamming distances between packed bit codes.

    query_bits: [Q, B] (or [B]) uint8; base_bits: [N, B] uint8 (as from :func:`binarize`).
    Returns distances [Q, k] int32 (ascending; INT32_MAX where padded) and ids [Q, k] int64.
    """
    q = as_code_matrix(query_bits, "query_bits", np.uint8, allow_1d=True)
    b = as_code_matrix(base_bits, "base_bits", np.uint8)
    if q.shape[1] != b.shape[1]:
        raise InvalidValueError(f"query_bits have {q.shape[1]} bytes per code but base_bits have {b.shape[1]}")
    check_nonempty(b, "base_bits")
    k = check_k(k, b.shape[0])
    distances, ids, _ = _search(_kernels.topk_hamming, q, b, k, allow, num_threads, np.int32, HAMMING_PAD)
    return distances, ids


def rescore(queries, base, candidates, k: int, num_threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact scores of candidate ids, re-sorted into the top k.

    queries: [Q, d] float32; base: float32 [N, d], or a tuple (codes int8 [N, d], Int8Quantizer)
    scored as q . decode(code); candidates: [Q, c] int64 row ids, -1 for none (duplicates are
    scored once); 1 <= k <= c. Returns scores [Q, k] float32 and ids [Q, k] int64, padded with
    -inf / -1 when a query has fewer than k distinct candidates.
    """
    q = _as_queries(queries)
    cand = as_array(candidates, "candidates")
    if cand.dtype.kind not in "iu":
        raise InvalidTypeError(f"candidates must be integer row ids, got {describe(cand)}")
    if cand.ndim == 1:
        cand = cand.reshape(1, -1)
    if cand.ndim != 2 or cand.shape[0] != q.shape[0]:
        raise InvalidValueError(f"candidates must be [Q={q.shape[0]}, c], got {describe(cand)}")
    cand = np.ascontiguousarray(cand, dtype=np.int64)
    k = check_k(k, cand.shape[1], "candidates per query")
    threads = check_num_threads(num_threads)
    if isinstance(base, tuple):
        if len(base) != 2:
            raise InvalidTypeError("base must be a float32 array or a tuple (codes, quantizer)")
        codes = _int8_codes(base[0], base[1], rows=cand.reshape(-1))
        check_same_dim(q, codes, "queries", "codes")
        n = codes.shape[0]
    else:
        rows = as_float_matrix(base, "base", check_finite=False)
        check_same_dim(q, rows, "queries", "base rows")
        check_nonempty(rows, "base")
        n = rows.shape[0]
    if cand.size and (cand.min() < -1 or cand.max() >= n):
        bad = cand[(cand < -1) | (cand >= n)][:5].tolist()
        raise InvalidValueError(f"candidates hold ids outside [0, {n}) (or -1 for none): {bad}")
    scores = np.empty((q.shape[0], k), dtype=np.float32)
    ids = np.empty((q.shape[0], k), dtype=np.int64)
    if isinstance(base, tuple):
        scaled, bias = _fold_quantizer(q, base[1])
        _kernels.rescore_int8(scaled, codes, cand, k, scores, ids, threads)
        scores += bias[:, None]
    elif not _kernels.rescore_float32(q, rows, cand, k, scores, ids, threads):
        _raise_nonfinite(rows, "base")
    return scores, ids
