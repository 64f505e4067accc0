"""Plain numpy references and data for the index tests."""

from __future__ import annotations

import numpy as np


def exact_topk(queries: np.ndarray, base: np.ndarray, k: int, allowed: np.ndarray | None = None):
    """(scores float64 [Q, k], rows int64 [Q, k]) of the exact inner product, ties to the lower
    row, padded with -inf / -1 when fewer than k rows are allowed."""
    q = np.atleast_2d(np.asarray(queries, dtype=np.float64))
    scores = q @ np.asarray(base, dtype=np.float64).T
    if allowed is not None:
        scores[:, ~allowed] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(scores, order, axis=1)
    order = np.where(np.isfinite(top), order, -1)
    if order.shape[1] < k:
        pad = k - order.shape[1]
        order = np.pad(order, ((0, 0), (0, pad)), constant_values=-1)
        top = np.pad(top, ((0, 0), (0, pad)), constant_values=-np.inf)
    return top, order


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(f[f >= 0].tolist()) & set(t[t >= 0].tolist())) for f, t in zip(found, truth))
    total = sum(int((t >= 0).sum()) for t in truth)
    return hits / max(total, 1)


def clustered(n: int, dim: int, clusters: int = 32, seed: int = 0, spread: float = 0.35) -> np.ndarray:
    """Unit-norm float32 rows drawn around `clusters` random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def small_ints(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Vectors of small integers (as float32): their dot products are exact, and tie often."""
    return np.random.default_rng(seed).integers(-2, 3, (n, dim)).astype(np.float32)


def queries_near(base: np.ndarray, n: int, seed: int = 1, noise: float = 0.3) -> np.ndarray:
    """Unit-norm perturbed copies of random base rows (queries from the same distribution)."""
    rng = np.random.default_rng(seed)
    rows = base[rng.integers(0, base.shape[0], n)].astype(np.float64)
    x = rows + noise * rng.standard_normal(rows.shape) / np.sqrt(base.shape[1])
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
