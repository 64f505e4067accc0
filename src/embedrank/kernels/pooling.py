"""Pooling and normalization of transformer outputs (fused C++ kernels)."""

from __future__ import annotations

import numpy as np

from embedrank import _kernels
from embedrank.kernels._checks import as_array, as_float_matrix, check_num_threads, describe, require_finite
from embedrank.errors import InvalidTypeError, InvalidValueError

_MASK_DTYPES = (np.dtype(np.int64), np.dtype(np.int32), np.dtype(np.bool_), np.dtype(np.uint8))


def _as_hidden(hidden) -> np.ndarray:
    h = as_array(hidden, "hidden")
    if h.dtype.kind != "f":
        raise InvalidTypeError(f"hidden must be float32 or float16, got {describe(h)}")
    if h.ndim != 3:
        raise InvalidValueError(f"hidden must be a 3-D array [batch, tokens, dim], got {describe(h)}")
    if h.shape[2] == 0:
        raise InvalidValueError(f"hidden has dimension 0, got {describe(h)}")
    if h.dtype not in (np.float32, np.float16):
        h = h.astype(np.float32)
    return np.ascontiguousarray(h)


def _as_mask(mask, shape: tuple[int, int]) -> np.ndarray:
    m = as_array(mask, "mask")
    if m.dtype.kind not in "biu":
        raise InvalidTypeError(f"mask must be int64, int32 or bool, got {describe(m)}")
    if m.shape != shape:
        raise InvalidValueError(f"mask must have shape {shape} (hidden's [batch, tokens]), got {describe(m)}")
    if m.dtype not in _MASK_DTYPES:
        m = m.astype(np.int64)
    if m.dtype != np.bool_ and m.size and ((m != 0) & (m != 1)).any():
        raise InvalidValueError(f"mask values must be 0 or 1, found {sorted(set(np.unique(m).tolist()) - {0, 1})[:5]}")
    empty = ~m.any(axis=1) if m.size else np.ones(shape[0], dtype=bool)
    if empty.any():
        rows = np.flatnonzero(empty)[:10].tolist()
        raise InvalidValueError(f"mask rows {rows} are all zero: cannot mean-pool a text with no tokens")
    return np.ascontiguousarray(m)


def mean_pool_normalize(hidden, mask, normalize: bool = True, num_threads: int | None = None) -> np.ndarray:
    """Masked mean over tokens, then L2 normalization, in one pass.

    hidden: [B, T, H] float32 or float16 (float64 is converted); mask: [B, T] int64, int32 or
    bool of 0/1. Returns [B, H] float32. A row whose mask is all zero raises ValueError.
    """
    h = _as_hidden(hidden)
    m = _as_mask(mask, h.shape[:2])
    out = np.empty((h.shape[0], h.shape[2]), dtype=np.float32)
    if h.shape[0]:
        _kernels.mean_pool(h, m, bool(normalize), out, check_num_threads(num_threads))
        require_finite(out, "pooled output (hidden holds NaN/Inf or overflows)")
    return out


def cls_pool(hidden, normalize: bool = True, num_threads: int | None = None) -> np.ndarray:
    """The first token's vector of each row: hidden [B, T, H] -> [B, H] float32."""
    h = _as_hidden(hidden)
    if h.shape[1] == 0:
        raise InvalidValueError(f"hidden has no tokens, got {describe(h)}")
    first = np.ascontiguousarray(h[:, 0, :], dtype=np.float32)
    require_finite(first, "hidden")
    return _normalize_prefix(first, first.shape[1], num_threads) if normalize else first


def _normalize_prefix(x: np.ndarray, dim: int, num_threads) -> np.ndarray:
    out = np.empty((x.shape[0], dim), dtype=np.float32)
    if x.shape[0]:
        _kernels.normalize_rows(x, dim, out, check_num_threads(num_threads))
    return out


def normalize(x, num_threads: int | None = None) -> np.ndarray:
    """Rows scaled to unit L2 norm: [N, d] (or [d]) -> float32 of the same shape.

    Every non-zero row comes out with norm 1, whatever its magnitude (rows whose squares
    under- or overflow float32 are measured in double); all-zero rows stay zero. Unlike
    torch's F.normalize there is no 1e-12 clamp, so a row of norm 1e-20 is scaled up too.
    """
    a = as_array(x, "x")
    one_d = a.ndim == 1
    m = as_float_matrix(a, "x", allow_1d=True)
    out = _normalize_prefix(m, m.shape[1], num_threads)
    return out[0] if one_d else out


def truncate_normalize(x, dim: int, num_threads: int | None = None) -> np.ndarray:
    """Matryoshka truncation: keep the first `dim` components of each row, renormalize.

    x: [N, d] (or [d]); 1 <= dim <= d. Returns [N, dim] (or [dim]) float32.
    """
    a = as_array(x, "x")
    one_d = a.ndim == 1
    m = as_float_matrix(a, "x", allow_1d=True)
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
        raise InvalidTypeError(f"dim must be an integer, got {type(dim).__name__}")
    if not 1 <= dim <= m.shape[1]:
        raise InvalidValueError(f"dim must be in [1, {m.shape[1]}], got {dim}")
    out = _normalize_prefix(m, int(dim), num_threads)
    return out[0] if one_d else out
