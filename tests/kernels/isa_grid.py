"""The fixed, seeded input grid run at every ISA level (see test_isa_levels.py).

`inputs(dim, batch)` builds the same arrays in every process (numpy's seeded generator);
`run_all(kernels)` runs every kernel variant on every grid cell and returns {key: array}.
Keys are "kernel|variant|dim|batch".
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

DIMS = (1, 3, 97, 384, 385, 1024)
BATCHES = (1, 7, 1024)
# Base rows for the searches: several blocks of rows at every dimension, bounded work at 1024.
BASE_ROWS = {1: 2600, 3: 2600, 97: 1400, 384: 800, 385: 800, 1024: 500}
RESCORE_CANDIDATES = 12  # distinct candidate ids per query (plus duplicates and -1 entries)

POOL_HIDDEN = ("float32", "float16")
POOL_MASKS = ("int64", "int32", "bool")
# (variant name, k, allow kind); k "N" means every base row.
FLOAT_SEARCHES = (
    ("k1", 1, None),
    ("k10", 10, None),
    ("kN", "N", None),
    ("k10_dense", 10, "dense"),
    ("k10_sparse", 10, "sparse"),
    ("k10_ids", 10, "ids"),
    ("k10_few", 10, "few"),
    ("k3_none_allowed", 3, "none"),
)
INT8_SEARCHES = (("k10", 10, None), ("k10_dense", 10, "dense"), ("k1_sparse", 1, "sparse"))
HAMMING_SEARCHES = (("k10", 10, None), ("k1", 1, None), ("k10_sparse", 10, "sparse"), ("k10_few", 10, "few"))


def key(*parts) -> str:
    return "|".join(str(p) for p in parts)


def tokens_for(batch: int) -> int:
    return 3 if batch >= 1024 else 5


def k_of(k, n: int) -> int:
    return n if k == "N" else int(k)


def searches_for(table, batch: int):
    """k = N (every row) only for the small batches, so outputs stay small."""
    return [s for s in table if not (s[1] == "N" and batch >= 1024)]


@lru_cache(maxsize=None)
def inputs(dim: int, batch: int) -> dict:
    rng = np.random.default_rng([dim, batch, 20240611])
    t = tokens_for(batch)
    x = {}
    # Pooling: float32 hidden and its float16 copy; a 0/1 mask with at least one token per row.
    hidden = rng.standard_normal((batch, t, dim), dtype=np.float32)
    x["hidden_float32"] = hidden
    x["hidden_float16"] = hidden.astype(np.float16)
    mask = rng.random((batch, t)) < 0.6
    mask[np.arange(batch), rng.integers(0, t, batch)] = True
    x["mask_bool"] = mask
    x["mask_int64"] = mask.astype(np.int64)
    x["mask_int32"] = mask.astype(np.int32)
    # Rows to normalize: one all-zero row (stays zero), one tiny row.
    rows = rng.standard_normal((batch, dim), dtype=np.float32) * 3
    rows[0] = 0.0
    if batch > 1:
        rows[1] *= np.float32(1e-20)
    x["rows"] = rows
    x["truncate_dims"] = np.array(sorted({1, (dim + 1) // 2, dim}), dtype=np.int64)
    # Int8: power-of-two steps and offsets on a 1/8 grid, so half-way values are exact and the
    # round-half-to-even of every level is checked; values run past the range to hit clipping.
    scale = (2.0 ** -rng.integers(3, 7, dim)).astype(np.float32)
    offset = (rng.integers(-8, 9, dim) / 8.0).astype(np.float32)
    enc = offset + scale * np.float32(160.0) * rng.uniform(-1, 1, (batch, dim)).astype(np.float32)
    half = rng.integers(-130, 130, (batch, dim)).astype(np.float32) + np.float32(0.5)
    halves = rng.random((batch, dim)) < 0.3
    enc = np.where(halves, offset + half * scale, enc).astype(np.float32)
    x["int8_offset"], x["int8_scale"], x["int8_x"] = offset, scale, enc
    # Binarize: signs with exact zeros and negative zeros (neither sets a bit).
    b = rng.standard_normal((batch, dim), dtype=np.float32)
    b[rng.random((batch, dim)) < 0.1] = 0.0
    b[rng.random((batch, dim)) < 0.1] = -0.0
    x["bits_x"] = b
    # Search: unit base rows with exact duplicates (ties), unit queries, one equal to a base row.
    n = BASE_ROWS[dim]
    base = rng.standard_normal((n, dim), dtype=np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    dup_src = rng.integers(0, n, 12)
    dup_dst = rng.integers(0, n, 12)
    base[dup_dst] = base[dup_src]
    queries = rng.standard_normal((batch, dim), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    queries[0] = base[dup_src[0]]
    x["base"], x["queries"] = base.astype(np.float32), queries.astype(np.float32)
    x["allow_dense"] = rng.random(n) < 0.7
    x["allow_sparse"] = rng.random(n) < 0.1
    ids = rng.integers(0, n, max(1, n // 30))
    x["allow_ids"] = np.concatenate([ids, ids[: ids.size // 2]])  # duplicates on purpose
    x["allow_few"] = np.array([n - 1, 3 % n, n - 1, 0], dtype=np.int64)  # fewer than k rows: padding
    x["allow_none"] = np.zeros(n, dtype=bool)
    # Int8 search: a quantizer fitted (min-max) on the base, in numpy.
    lo, hi = base.min(axis=0).astype(np.float64), base.max(axis=0).astype(np.float64)
    span = hi - lo
    x["q_offset"] = ((lo + hi) / 2).astype(np.float32)
    x["q_scale"] = np.where(span > 0, span / 254.0, 1.0 / 127.0).astype(np.float32)
    # Hamming: sign bits of base and queries (dimension 1 or 3: a handful of distinct codes,
    # hence masses of exact ties).
    x["base_bits"] = np.packbits(base > 0, axis=1)
    x["query_bits"] = np.packbits(queries > 0, axis=1)
    # Rescore: per query, RESCORE_CANDIDATES distinct ids, then duplicates and -1 entries.
    distinct = np.argsort(rng.random((batch, n)), axis=1)[:, :RESCORE_CANDIDATES]
    cand = np.concatenate([distinct, distinct[:, :4], np.full((batch, 3), -1)], axis=1)
    cand = np.take_along_axis(cand, np.argsort(rng.random(cand.shape), axis=1), axis=1)
    x["candidates"] = cand.astype(np.int64)
    return x


def allow_of(x: dict, kind):
    return None if kind is None else x[f"allow_{kind}"]


def run_cell(K, dim: int, batch: int) -> dict:
    """Every kernel variant on one grid cell; K is the embedrank.kernels module."""
    x = inputs(dim, batch)
    out = {}
    for hd in POOL_HIDDEN:
        for md in POOL_MASKS:
            out[key("pool", f"{hd}_{md}", dim, batch)] = K.mean_pool_normalize(x[f"hidden_{hd}"], x[f"mask_{md}"])
    out[key("pool", "float32_int64_raw", dim, batch)] = K.mean_pool_normalize(
        x["hidden_float32"], x["mask_int64"], normalize=False)
    out[key("normalize", "", dim, batch)] = K.normalize(x["rows"])
    for t in x["truncate_dims"]:
        out[key("truncate", int(t), dim, batch)] = K.truncate_normalize(x["rows"], int(t))
    qz = K.Int8Quantizer(x["int8_offset"], x["int8_scale"])
    out[key("encode", "", dim, batch)] = qz.encode(x["int8_x"])
    out[key("binarize", "", dim, batch)] = K.binarize(x["bits_x"])

    n = x["base"].shape[0]
    for name, k, allow in searches_for(FLOAT_SEARCHES, batch):
        s, i = K.topk_float32(x["queries"], x["base"], k_of(k, n), allow=allow_of(x, allow))
        out[key("topk_float32", name, dim, batch)], out[key("topk_float32_ids", name, dim, batch)] = s, i
    quantizer = K.Int8Quantizer(x["q_offset"], x["q_scale"])
    codes = quantizer.encode(x["base"])
    out[key("codes", "", dim, batch)] = codes
    for precision in ("int8", "float32"):
        for name, k, allow in INT8_SEARCHES:
            s, i = K.topk_int8(x["queries"], codes, quantizer, k, allow=allow_of(x, allow), query_precision=precision)
            out[key(f"topk_int8_{precision}", name, dim, batch)] = s
            out[key(f"topk_int8_{precision}_ids", name, dim, batch)] = i
    for name, k, allow in HAMMING_SEARCHES:
        s, i = K.topk_hamming(x["query_bits"], x["base_bits"], k, allow=allow_of(x, allow))
        out[key("topk_hamming", name, dim, batch)], out[key("topk_hamming_ids", name, dim, batch)] = s, i
    s, i = K.rescore(x["queries"], x["base"], x["candidates"], 5)
    out[key("rescore", "float32", dim, batch)], out[key("rescore_ids", "float32", dim, batch)] = s, i
    s, i = K.rescore(x["queries"], (codes, quantizer), x["candidates"], 5)
    out[key("rescore", "int8", dim, batch)], out[key("rescore_ids", "int8", dim, batch)] = s, i
    return out


# Attention cells (batch, tokens, heads, head_dim): the AVX-512 head sizes 16, 32, 64 and others
# that take the portable loop, token counts around the 16-key and 8-row blocks.
ATTENTION_SHAPES = ((1, 1, 1, 16), (2, 7, 3, 32), (3, 17, 2, 64), (2, 33, 4, 24), (2, 130, 12, 32), (1, 9, 2, 1))


@lru_cache(maxsize=None)
def attention_inputs(batch: int, tokens: int, heads: int, head_dim: int) -> dict:
    """q, k, v [B, T, heads * head_dim] and a key mask with holes; the last sequence (when there
    are two or more) has every key masked."""
    rng = np.random.default_rng([batch, tokens, heads, head_dim, 20261127])
    q, k, v = (rng.standard_normal((batch, tokens, heads * head_dim), dtype=np.float32) * 2 for _ in range(3))
    mask = (rng.random((batch, tokens)) < 0.7).astype(np.int64)
    mask[:, 0] = 1
    if batch > 1:
        mask[-1] = 0
    # a relative position bias as MPNet's: one per head, shared by the sequences ([1, H, T, T])
    bias = rng.standard_normal((1, heads, tokens, tokens), dtype=np.float32)
    return {"q": q, "k": k, "v": v, "mask": mask, "scale": float(1 / np.sqrt(head_dim)), "bias": bias,
            "batch_bias": np.ascontiguousarray(np.broadcast_to(bias, (batch, heads, tokens, tokens)) * 0.5)}


def run_attention(K) -> dict:
    out = {}
    for shape in ATTENTION_SHAPES:
        x = attention_inputs(*shape)
        name = "-".join(map(str, shape))
        out[key("attention", name, 0, 0)] = K.attention(x["q"], x["k"], x["v"], x["mask"], shape[3], x["scale"])
        for bias in ("bias", "batch_bias"):
            out[key("attention_" + bias, name, 0, 0)] = K.attention(x["q"], x["k"], x["v"], x["mask"], shape[3],
                                                                     x["scale"], bias=x[bias])
        if K.bf16_dots_supported():  # the avx512 level on a CPU with AVX512-BF16; refused below it
            out[key("attention_bf16", name, 0, 0)] = K.attention(x["q"], x["k"], x["v"], x["mask"], shape[3],
                                                                 x["scale"], bias=x["bias"], bf16_dots=True)
    return out


def run_all(K) -> dict:
    out = {}
    for dim in DIMS:
        for batch in BATCHES:
            out.update(run_cell(K, dim, batch))
    out.update(run_attention(K))
    return out
