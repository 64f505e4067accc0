"""Argument validation shared by the kernel wrappers.

Python validates and allocates; C++ computes. Every check names the argument and what was
wrong with it (shape, dtype, value). Non-contiguous inputs are accepted by copying; float64
(and integer) inputs are converted to float32.
"""

from __future__ import annotations

import numbers

import numpy as np

from embedrank.utils import threads
from embedrank.errors import InvalidTypeError, InvalidValueError


def describe(a: np.ndarray) -> str:
    return f"{a.dtype} array of shape {a.shape}"


def as_array(x, name: str) -> np.ndarray:
    if x is None:
        raise InvalidTypeError(f"{name} must be an array, got None")
    try:
        a = np.asarray(x)
    except (ValueError, TypeError) as error:  # ragged lists and the like
        raise InvalidTypeError(f"{name} could not be read as an array: {error}") from None
    return a


def as_float_matrix(x, name: str, *, allow_1d: bool = False, check_finite: bool = True) -> np.ndarray:
    """A C-contiguous float32 [n, d] view or copy of `x` (1-D becomes [1, d] if allowed)."""
    a = as_array(x, name)
    if a.dtype.kind not in "fiu":
        raise InvalidTypeError(f"{name} must hold real numbers (float32 preferred), got {describe(a)}")
    if a.ndim == 1 and allow_1d:
        a = a.reshape(1, -1)
    if a.ndim != 2:
        raise InvalidValueError(f"{name} must be a 2-D array [n, dim], got {describe(a)}")
    if a.shape[1] == 0:
        raise InvalidValueError(f"{name} has dimension 0, got {describe(a)}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if check_finite:
        require_finite(a, name)
    return a


def require_finite(a: np.ndarray, name: str) -> None:
    if not np.isfinite(a).all():
        bad = np.argwhere(~np.isfinite(a))[0]
        raise InvalidValueError(f"{name} contains NaN or Inf (first at index {tuple(int(i) for i in bad)})")


def as_code_matrix(x, name: str, dtype: type, *, allow_1d: bool = False) -> np.ndarray:
    """A C-contiguous [n, width] array of exactly `dtype` (int8 codes or uint8 packed bits)."""
    a = as_array(x, name)
    if a.dtype != np.dtype(dtype):
        raise InvalidTypeError(f"{name} must be a {np.dtype(dtype)} array, got {describe(a)}")
    if a.ndim == 1 and allow_1d:
        a = a.reshape(1, -1)
    if a.ndim != 2:
        raise InvalidValueError(f"{name} must be a 2-D array [n, width], got {describe(a)}")
    if a.shape[1] == 0:
        raise InvalidValueError(f"{name} has width 0, got {describe(a)}")
    return np.ascontiguousarray(a)


def check_k(k, n: int, what: str = "base rows") -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise InvalidTypeError(f"k must be an integer, got {type(k).__name__}")
    k = int(k)
    if k <= 0:
        raise InvalidValueError(f"k must be >= 1, got {k}")
    if k > n:
        raise InvalidValueError(f"k={k} is larger than the number of {what} ({n})")
    return k


def check_num_threads(num_threads) -> int:
    """`num_threads` for the native kernels: 0 means the library default (all available cores,
    as embedrank.utils.threads.available_cores() counts them). Validated by utils.threads."""
    checked = threads.check_num_threads(num_threads)
    return 0 if checked is None else checked


def check_same_dim(queries: np.ndarray, base: np.ndarray, q_name: str, b_name: str) -> None:
    if queries.shape[1] != base.shape[1]:
        raise InvalidValueError(
            f"{q_name} have dimension {queries.shape[1]} but {b_name} have dimension {base.shape[1]}"
        )


def check_nonempty(base: np.ndarray, name: str) -> None:
    if base.shape[0] == 0:
        raise InvalidValueError(f"{name} is empty (0 rows): nothing to search")


def allow_mask(allow, n: int) -> np.ndarray | None:
    """`allow` as one uint8 per base row: a boolean mask [n] or an array of allowed row ids."""
    if allow is None:
        return None
    a = as_array(allow, "allow")
    if a.size == 0 and a.dtype.kind == "f":  # [] reads as float64: no allowed ids
        a = a.astype(np.int64)
    if a.ndim != 1:
        raise InvalidValueError(f"allow must be 1-D (a boolean mask or row ids), got {describe(a)}")
    if a.dtype == np.bool_:
        if a.shape[0] != n:
            raise InvalidValueError(f"allow is a boolean mask of length {a.shape[0]}, but the base has {n} rows")
        return np.ascontiguousarray(a).view(np.uint8)
    if a.dtype.kind in "iu":
        if a.size and (a.min() < 0 or a.max() >= n):
            bad = a[(a < 0) | (a >= n)][:5].tolist()
            raise InvalidValueError(f"allow holds row ids outside [0, {n}): {bad}")
        mask = np.zeros(n, dtype=np.uint8)
        mask[a] = 1
        return mask
    raise InvalidTypeError(f"allow must be a boolean mask or an integer id array, got {describe(a)}")


# Below this fraction of allowed rows, a batched search copies the allowed rows out and
# searches them densely instead of skipping rows inside the kernel.
GATHER_BELOW_FRACTION = 0.5
ROW_PATH_MAX_QUERIES = 4

