"""Plain numpy references for the kernels of embedrank.kernels (kept in the tests on purpose).

Float work is done in float64 unless a function states the kernel's exact float32 formula.
Top-k references break ties by the lower id (a stable sort of the negated scores).
"""

from __future__ import annotations

import numpy as np

HAMMING_PAD = np.iinfo(np.int32).max


# ---- pooling ---------------------------------------------------------------------------------
def mean_pool(hidden: np.ndarray, mask: np.ndarray, normalize: bool = True) -> np.ndarray:
    """Masked mean over tokens of hidden [B, T, H] (any float dtype) -> float64 [B, H]."""
    h = np.asarray(hidden).astype(np.float64)
    m = (np.asarray(mask) != 0).astype(np.float64)
    pooled = (h * m[:, :, None]).sum(axis=1) / m.sum(axis=1)[:, None]
    return l2_normalize(pooled) if normalize else pooled


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows divided by their norm, in float64; all-zero rows stay zero.

    Each row is scaled by its largest |value| before squaring, so rows of any finite
    magnitude (1e-300 or 1e300) come out with norm 1.
    """
    x = np.asarray(x, dtype=np.float64)
    scale = np.abs(x).max(axis=-1, keepdims=True) if x.shape[-1] else np.ones(x.shape[:-1] + (1,))
    scale = np.where(scale > 0, scale, 1.0)
    scaled = x / scale
    norms = np.sqrt((scaled * scaled).sum(axis=-1, keepdims=True))
    return scaled / np.where(norms > 0, norms, 1.0)


def truncate_normalize(x: np.ndarray, dim: int) -> np.ndarray:
    return l2_normalize(np.asarray(x, dtype=np.float64)[..., :dim])


# ---- quantization ----------------------------------------------------------------------------
def int8_encode(x: np.ndarray, offset: np.ndarray, inv_scale: np.ndarray) -> np.ndarray:
    """The kernel's formula, in float32: clip(rint((x - offset) * inv_scale), -127, 127)."""
    x = np.asarray(x, dtype=np.float32)
    offset = np.asarray(offset, dtype=np.float32)
    inv_scale = np.asarray(inv_scale, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        q = np.rint((x - offset) * inv_scale)
    return np.clip(q, -127, 127).astype(np.int8)


def int8_decode(codes: np.ndarray, offset: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """offset + scale * code, in float64."""
    return np.asarray(offset, np.float64) + np.asarray(scale, np.float64) * np.asarray(codes, np.float64)


def minmax_range(sample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(offset, scale) of Int8Quantizer.fit(method="minmax"), in float64."""
    s = np.asarray(sample, dtype=np.float32).astype(np.float64)
    lo, hi = s.min(axis=0), s.max(axis=0)
    span = hi - lo
    return (lo + hi) / 2.0, np.where(span > 0, span / 254.0, 1.0 / 127.0)


def packbits(x: np.ndarray) -> np.ndarray:
    return np.packbits(np.asarray(x) > 0, axis=1)


# ---- top-k -----------------------------------------------------------------------------------
def allowed_rows(allow, n: int) -> np.ndarray:
    """allow (None, bool mask [n] or row ids) -> bool mask [n]."""
    if allow is None:
        return np.ones(n, dtype=bool)
    a = np.asarray(allow)
    if a.dtype == np.bool_:
        return a.copy()
    mask = np.zeros(n, dtype=bool)
    mask[a] = True
    return mask


def topk_from_scores(scores: np.ndarray, k: int, allow=None, pad_score=-np.inf) -> tuple[np.ndarray, np.ndarray]:
    """Best-first (highest score, then lowest id) top-k of a [Q, N] score matrix; rows not
    allowed are never returned; padding (pad_score, -1) where fewer than k rows are allowed.

    allow: None, a bool mask [N], row ids, or a bool mask [Q, N] (one per query)."""
    scores = np.asarray(scores)
    nq, n = scores.shape
    if allow is not None and np.ndim(allow) == 2:
        return _topk_per_query_mask(scores, k, np.asarray(allow, dtype=bool), pad_score)
    allowed = allowed_rows(allow, n)
    idx = np.flatnonzero(allowed)
    m = min(k, idx.size)
    out_scores = np.full((nq, k), pad_score, dtype=np.float64)
    out_ids = np.full((nq, k), -1, dtype=np.int64)
    if m and nq:
        sub = scores[:, idx]
        order = np.argsort(-sub, axis=1, kind="stable")[:, :m]
        out_ids[:, :m] = idx[order]
        out_scores[:, :m] = np.take_along_axis(sub, order, axis=1)
    return out_scores, out_ids


def _topk_per_query_mask(scores, k, allowed, pad_score):
    nq, n = scores.shape
    assert allowed.shape == (nq, n)
    keyed = np.where(allowed, -scores.astype(np.float64), np.inf)
    order = np.argsort(keyed, axis=1, kind="stable")[:, :k]
    counts = np.minimum(allowed.sum(axis=1), k)
    valid = np.arange(min(k, n))[None, :] < counts[:, None]
    out_scores = np.full((nq, k), pad_score, dtype=np.float64)
    out_ids = np.full((nq, k), -1, dtype=np.int64)
    out_ids[:, : order.shape[1]] = np.where(valid, order, -1)
    out_scores[:, : order.shape[1]] = np.where(valid, np.take_along_axis(scores, order, axis=1), pad_score)
    return out_scores, out_ids


def inner_products(queries: np.ndarray, base: np.ndarray) -> np.ndarray:
    return np.asarray(queries, np.float64) @ np.asarray(base, np.float64).T


def topk_inner_product(queries, base, k, allow=None):
    return topk_from_scores(inner_products(queries, base), k, allow)


def hamming_distances(query_bits: np.ndarray, base_bits: np.ndarray) -> np.ndarray:
    """[Q, B] x [N, B] uint8 -> [Q, N] int64 popcount(q xor b) = |q| + |b| - 2 q.b over bits
    (the bit inner product via float64 BLAS is exact: integers far below 2**53)."""
    q = np.unpackbits(np.asarray(query_bits, np.uint8), axis=1).astype(np.float64)
    b = np.unpackbits(np.asarray(base_bits, np.uint8), axis=1).astype(np.float64)
    both = np.rint(q @ b.T).astype(np.int64)
    return q.sum(axis=1).astype(np.int64)[:, None] + b.sum(axis=1).astype(np.int64)[None, :] - 2 * both


def topk_hamming(query_bits, base_bits, k, allow=None) -> tuple[np.ndarray, np.ndarray]:
    """Ascending distance, ties to the lower id; padding (INT32_MAX, -1)."""
    d = hamming_distances(query_bits, base_bits)
    neg, ids = topk_from_scores(-d, k, allow, pad_score=-HAMMING_PAD)
    return (-neg).astype(np.int64), ids


def fold_quantizer(queries, offset, scale) -> tuple[np.ndarray, np.ndarray]:
    """As the wrapper does it: scaled = q * scale (float32), bias = q . offset (float64 -> float32)."""
    q = np.asarray(queries, np.float32)
    scaled = (q * np.asarray(scale, np.float32)).astype(np.float32)
    bias = (q.astype(np.float64) @ np.asarray(offset, np.float32).astype(np.float64)).astype(np.float32)
    return scaled, bias


def quantize_queries(scaled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-query symmetric int8: step = max|x| / 127 (1 for a zero row), codes = clip(rint(x / step))."""
    scaled = np.asarray(scaled, np.float32)
    peak = np.abs(scaled).max(axis=1)
    step = np.where(peak > 0, peak / np.float32(127.0), np.float32(1.0)).astype(np.float32)
    codes = np.clip(np.rint(scaled / step[:, None]), -127, 127).astype(np.int8)
    return codes, step


def int_dots(a_codes: np.ndarray, b_codes: np.ndarray) -> np.ndarray:
    """Exact integer inner products of int8 matrices (via float64 BLAS: every partial sum is an
    integer far below 2**53)."""
    return np.rint(np.asarray(a_codes, np.float64) @ np.asarray(b_codes, np.float64).T).astype(np.int64)


def topk_int8_int8(queries, codes, offset, scale, k, allow=None) -> tuple[np.ndarray, np.ndarray]:
    """query_precision="int8", bit for bit: ids ranked by the exact integer dot (ties to the lower
    id), scores = float32(dot) * step + bias in float32."""
    scaled, bias = fold_quantizer(queries, offset, scale)
    q_codes, step = quantize_queries(scaled)
    dots = int_dots(q_codes, codes)
    _, ids = topk_from_scores(dots, k, allow)
    raw = np.take_along_axis(dots, np.maximum(ids, 0), axis=1).astype(np.float32)
    scores = raw * step[:, None]
    scores = (scores + bias[:, None]).astype(np.float32)
    scores[ids < 0] = -np.inf
    return scores, ids


def asymmetric_scores(queries, codes, offset, scale) -> np.ndarray:
    """q . decode(code) for every (query, code) pair, float64 [Q, N]."""
    return inner_products(queries, int8_decode(codes, offset, scale))


def rescore(queries, rows, candidates, k) -> tuple[np.ndarray, np.ndarray]:
    """Exact scores of each query's distinct candidates (-1 ignored) against float rows [N, d]
    (decode int8 codes first), best first with ties to the lower id, padded with (-inf, -1)."""
    q = np.asarray(queries, np.float64)
    rows = np.asarray(rows, np.float64)
    cand = np.asarray(candidates, np.int64)
    out_scores = np.full((q.shape[0], k), -np.inf)
    out_ids = np.full((q.shape[0], k), -1, dtype=np.int64)
    for i in range(q.shape[0]):
        ids = np.unique(cand[i][cand[i] >= 0])
        if ids.size == 0:
            continue
        s = rows[ids] @ q[i]
        order = np.argsort(-s, kind="stable")[:k]
        out_ids[i, : order.size] = ids[order]
        out_scores[i, : order.size] = s[order]
    return out_scores, out_ids


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray, head_dim: int, scale: float,
              bias: np.ndarray | None = None) -> np.ndarray:
    """Multi-head attention in float64, as the unfused graph computes it: scaled scores plus an
    optional bias [1 or B, heads, T, T] (MPNet's relative position bias), an additive mask of
    finfo(float32).min on padded keys, softmax over keys, every query row kept."""
    b, t, width = q.shape
    heads = width // head_dim
    split = lambda x: x.astype(np.float64).reshape(b, t, heads, head_dim).transpose(0, 2, 1, 3)  # noqa: E731
    qh, kh, vh = split(q), split(k), split(v)
    scores = scale * qh @ kh.transpose(0, 1, 3, 2)
    if bias is not None:
        scores = scores + bias.astype(np.float64)
    additive = np.where(mask[:, None, None, :] != 0, 0.0, np.finfo(np.float32).min)
    scores = scores + additive
    # a row with every key masked: all scores equal finfo.min (the products are absorbed) -> uniform
    scores = np.where((mask != 0).any(axis=1)[:, None, None, None], scores, 0.0)
    scores -= scores.max(axis=-1, keepdims=True)
    weights = np.exp(scores)
    weights /= weights.sum(axis=-1, keepdims=True)
    return (weights @ vh).transpose(0, 2, 1, 3).reshape(b, t, width)


def round_bf16(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to bfloat16 (to nearest, ties to even), returned as float32."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16
    return rounded.astype(np.uint32).view(np.float32)


def attention_bf16(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray, head_dim: int, scale: float,
                   bias: np.ndarray | None = None) -> np.ndarray:
    """attention with bf16 products, as the kernel's bf16_dots computes them: q, the float32
    product k * scale and v rounded to bf16; the softmax weights exp(s - max) rounded to bf16
    for P V and divided by the sum of the unrounded ones. Sequences with no attended key take
    the float32 path (the mean of their value rows)."""
    b, t, width = q.shape
    heads = width // head_dim
    split = lambda x: x.astype(np.float64).reshape(b, t, heads, head_dim).transpose(0, 2, 1, 3)  # noqa: E731
    qh = split(round_bf16(q))
    kh = split(round_bf16((k * np.float32(scale)).astype(np.float32)))
    vh = split(round_bf16(v))
    scores = qh @ kh.transpose(0, 1, 3, 2)
    if bias is not None:
        scores = scores + bias.astype(np.float64)
    scores = np.where(mask[:, None, None, :] != 0, scores, -np.inf)
    attended = (mask != 0).any(axis=1)
    scores = np.where(attended[:, None, None, None], scores, 0.0)
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    rounded = round_bf16(weights.astype(np.float32)).astype(np.float64)
    out = (rounded @ vh) / weights.sum(axis=-1, keepdims=True)
    out = out.transpose(0, 2, 1, 3).reshape(b, t, width)
    plain = attention(q, k, v, mask, head_dim, scale, bias)
    return np.where(attended[:, None, None], out, plain)
