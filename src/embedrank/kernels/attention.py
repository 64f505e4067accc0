"""Fused multi-head attention (the kernel behind embedrank's onnxruntime Attention op)."""

from __future__ import annotations

import numpy as np

from embedrank import _kernels
from embedrank.kernels._checks import as_array, check_num_threads, describe, require_finite
from embedrank.errors import InvalidTypeError, InvalidValueError


def attention(q, k, v, mask, head_dim: int, scale: float | None = None, num_threads: int | None = None,
              bias=None, bf16_dots: bool = False) -> np.ndarray:
    """softmax(scale * Q K^T + bias over attended keys) V for every head, in one pass per head.

    q, k, v: [B, T, heads * head_dim] float32 (head h in columns h*head_dim:(h+1)*head_dim);
    mask: [B, T] integer or bool, nonzero = key attended (key padding mask); scale defaults to
    1/sqrt(head_dim); bias: None or a finite additive score bias [1 or B, heads, T, T] float32
    (a relative position bias, as MPNet's; batch 1 is shared by every sequence). Returns
    [B, T, heads * head_dim] float32. Every query row is computed, padded ones too; a sequence
    with no attended key averages all its value rows (the bias is then ignored, as an additive
    mask of float32's minimum absorbs it).
    bf16_dots=True: Q K^T and P V on bf16 (q, the scaled k, v and the softmax weights rounded
    to bf16, sums in fp32; twice the fp32 rate), softmax in fp32. It needs AVX512-BF16 at the
    avx512 ISA level (``bf16_dots_supported()``): InvalidValueError elsewhere. Head sizes other
    than 16, 32 and 64 run the fp32 products.
    """
    if not isinstance(bf16_dots, (bool, np.bool_)):
        raise InvalidTypeError(f"bf16_dots must be True or False, got {bf16_dots!r}")
    if bf16_dots and not bf16_dots_supported():
        raise InvalidValueError("bf16_dots=True needs AVX512-BF16 at the avx512 ISA level; this CPU or ISA level "
                                f"({_kernels.active_isa()}) lacks it: use bf16_dots=False")
    arrays = []
    for name, x in (("q", q), ("k", k), ("v", v)):
        a = as_array(x, name)
        if a.dtype.kind != "f":
            raise InvalidTypeError(f"{name} must be a float array, got {describe(a)}")
        if a.ndim != 3:
            raise InvalidValueError(f"{name} must be a 3-D array [batch, tokens, heads * head_dim], got {describe(a)}")
        arrays.append(np.ascontiguousarray(a, dtype=np.float32))
    qa, ka, va = arrays
    if ka.shape != qa.shape or va.shape != qa.shape:
        raise InvalidValueError(f"q, k and v must have one shape, got {qa.shape}, {ka.shape} and {va.shape}")
    if isinstance(head_dim, bool) or not isinstance(head_dim, (int, np.integer)) or head_dim < 1:
        raise InvalidValueError(f"head_dim must be a positive integer, got {head_dim!r}")
    if qa.shape[2] == 0 or qa.shape[2] % head_dim:
        raise InvalidValueError(f"the last dimension of q ({qa.shape[2]}) must be a positive multiple of head_dim={head_dim}")
    m = as_array(mask, "mask")
    if m.dtype.kind not in "biu":
        raise InvalidTypeError(f"mask must be an integer or bool array, got {describe(m)}")
    if m.shape != qa.shape[:2]:
        raise InvalidValueError(f"mask must have shape {qa.shape[:2]} (q's [batch, tokens]), got {describe(m)}")
    scale = 1.0 / float(np.sqrt(head_dim)) if scale is None else float(scale)
    if not np.isfinite(scale):
        raise InvalidValueError(f"scale must be finite, got {scale}")
    for name, a in (("q", qa), ("k", ka), ("v", va)):
        require_finite(a, name)
    heads = qa.shape[2] // head_dim
    bias_array = None
    if bias is not None:
        b = as_array(bias, "bias")
        if b.dtype.kind != "f":
            raise InvalidTypeError(f"bias must be a float array, got {describe(b)}")
        batch, tokens = qa.shape[:2]
        if b.ndim != 4 or b.shape[0] not in (1, batch) or b.shape[1:] != (heads, tokens, tokens):
            raise InvalidValueError(f"bias must have shape [1 or {batch}, {heads}, {tokens}, {tokens}] "
                                    f"([1 or batch, heads, tokens, tokens]), got {describe(b)}")
        bias_array = np.ascontiguousarray(b, dtype=np.float32)
        require_finite(bias_array, "bias")
    out = np.empty_like(qa)
    if qa.size:
        _kernels.attention(qa, ka, va, np.ascontiguousarray(m != 0, dtype=np.int64), out, heads,
                           scale, check_num_threads(num_threads), bias_array, bool(bf16_dots))
    return out


def bf16_dots_supported() -> bool:
    """True when attention(bf16_dots=True) runs here: AVX512-BF16 at the active ISA level (avx512)."""
    return bool(_kernels.bf16_dots_supported())
