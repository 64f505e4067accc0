"""Scalar quantization: int8 codes with per-dimension ranges, and packed sign bits."""

from __future__ import annotations

import numpy as np

from embedrank import _kernels
from embedrank.kernels._checks import as_code_matrix, as_float_matrix, check_num_threads
from embedrank.errors import InvalidValueError, NotFittedError

_FORMAT_VERSION = 1



class Int8Quantizer:
    """Per-dimension affine int8 quantization.

    Each dimension j keeps a range [lo_j, hi_j] learned by :meth:`fit`; with
    ``offset = (lo + hi) / 2`` and ``scale = (hi - lo) / 254`` a value x is coded as
    ``clip(rint((x - offset) / scale), -127, 127)`` (round half to even) and decoded as
    ``offset + scale * code``. Codes never take -128, which keeps the integer kernels exact.
    A dimension with an empty range (constant in the sample) gets ``scale = 1 / 127``.
    """

    def __init__(self, offset=None, scale=None):
        self._offset: np.ndarray | None = None
        self._scale: np.ndarray | None = None
        self.method: str | None = None
        self.percentile: float | None = None
        if offset is not None or scale is not None:
            self._set(offset, scale)

    # -- state ---------------------------------------------------------------------------
    def _set(self, offset, scale) -> None:
        if offset is None or scale is None:
            raise InvalidValueError("offset and scale must be given together")
        off = np.ascontiguousarray(offset, dtype=np.float32).reshape(-1)
        sc = np.ascontiguousarray(scale, dtype=np.float32).reshape(-1)
        if off.shape != sc.shape or off.size == 0:
            raise InvalidValueError(f"offset and scale must be non-empty and of equal length, got {off.size} and {sc.size}")
        if not (np.isfinite(off).all() and np.isfinite(sc).all()) or (sc <= 0).any():
            raise InvalidValueError("offset must be finite and scale finite and > 0")
        self._offset, self._scale = off, sc
        self._inv_scale = (np.float32(1.0) / sc).astype(np.float32)

    @property
    def is_fitted(self) -> bool:
        return self._scale is not None

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError("Int8Quantizer is not fitted: call fit(sample) or from_dict() first")

    @property
    def offset(self) -> np.ndarray:
        """[d] float32, the centre of each dimension's range."""
        self._require_fitted()
        return self._offset

    @property
    def scale(self) -> np.ndarray:
        """[d] float32, the step of each dimension."""
        self._require_fitted()
        return self._scale

    @property
    def inv_scale(self) -> np.ndarray:
        self._require_fitted()
        return self._inv_scale

    @property
    def dim(self) -> int:
        self._require_fitted()
        return int(self._scale.shape[0])

    # -- learning ------------------------------------------------------------------------
    def fit(self, sample, method: str = "minmax", percentile: float = 99.9) -> Int8Quantizer:
        """Learns the per-dimension ranges from `sample` [n, d] float32.

        method="minmax" takes each dimension's min and max; method="percentile" takes the
        (100 - percentile)-th and percentile-th percentiles, clipping outliers.
        """
        x = as_float_matrix(sample, "sample")
        if x.shape[0] == 0:
            raise InvalidValueError("sample is empty (0 rows): nothing to fit")
        if method == "minmax":
            lo, hi = x.min(axis=0), x.max(axis=0)
        elif method == "percentile":
            if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 50 < percentile <= 100:
                raise InvalidValueError(f"percentile must be in (50, 100], got {percentile!r}")
            lo, hi = np.percentile(x, [100.0 - percentile, percentile], axis=0)
        else:
            raise InvalidValueError(f"method must be 'minmax' or 'percentile', got {method!r}")
        lo, hi = lo.astype(np.float64), hi.astype(np.float64)
        span = hi - lo
        scale = np.where(span > 0, span / 254.0, 1.0 / 127.0)
        self._set((lo + hi) / 2.0, scale)
        self.method = method
        self.percentile = float(percentile) if method == "percentile" else None
        return self

    # -- coding --------------------------------------------------------------------------
    def encode(self, x, num_threads: int | None = None) -> np.ndarray:
        """x [n, d] float32 -> int8 codes [n, d] in [-127, 127]; NaN/Inf raise ValueError."""
        self._require_fitted()
        a = as_float_matrix(x, "x", allow_1d=False, check_finite=False)
        if a.shape[1] != self.dim:
            raise InvalidValueError(f"x has dimension {a.shape[1]} but the quantizer was fitted for {self.dim}")
        codes = np.empty(a.shape, dtype=np.int8)
        bad = _kernels.int8_encode(a, self._offset, self._inv_scale, codes, check_num_threads(num_threads))
        if bad >= 0:
            raise InvalidValueError(f"x contains NaN or Inf (row {bad})")
        return codes

    def decode(self, codes) -> np.ndarray:
        """int8 codes [n, d] -> float32 [n, d] (offset + scale * code)."""
        self._require_fitted()
        c = as_code_matrix(codes, "codes", np.int8)
        if c.shape[1] != self.dim:
            raise InvalidValueError(f"codes have dimension {c.shape[1]} but the quantizer was fitted for {self.dim}")
        return (c.astype(np.float32) * self._scale + self._offset).astype(np.float32)

    # -- persistence ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        """A JSON-serializable description (floats round-trip exactly through JSON)."""
        self._require_fitted()
        return {
            "type": "Int8Quantizer",
            "version": _FORMAT_VERSION,
            "method": self.method,
            "percentile": self.percentile,
            "offset": [float(v) for v in self._offset],
            "scale": [float(v) for v in self._scale],
        }

    @classmethod
    def from_dict(cls, state: dict) -> Int8Quantizer:
        if not isinstance(state, dict) or state.get("type") != "Int8Quantizer":
            raise InvalidValueError("not an Int8Quantizer state (expected a dict with type='Int8Quantizer')")
        if state.get("version") != _FORMAT_VERSION:
            raise InvalidValueError(f"unsupported Int8Quantizer state version {state.get('version')!r}")
        q = cls(state.get("offset"), state.get("scale"))
        q.method = state.get("method")
        q.percentile = state.get("percentile")
        return q

    def __repr__(self) -> str:
        if not self.is_fitted:
            return "Int8Quantizer(unfitted)"
        return f"Int8Quantizer(dim={self.dim}, method={self.method!r})"


def binarize(x, num_threads: int | None = None) -> np.ndarray:
    """Sign bits: x [n, d] float32 -> uint8 [n, ceil(d / 8)], equal to np.packbits(x > 0, axis=1)."""
    a = as_float_matrix(x, "x", check_finite=False)
    out = np.empty((a.shape[0], (a.shape[1] + 7) // 8), dtype=np.uint8)
    bad = _kernels.binarize(a, out, check_num_threads(num_threads))
    if bad >= 0:
        raise InvalidValueError(f"x contains NaN or Inf (row {bad})")
    return out


