"""Filtered search over an HnswGraph, chosen by how many vectors pass the filter.

* Exact search over just the allowed vectors (from the graph's float32 copy, scored by
  ``embedrank.kernels.topk_float32``): recall 1.0, cost ~ allowed x (fetch / Q + scan).
* A graph search for ``k' = max(ef, ceil(k * OVERSAMPLE / selectivity))`` neighbours per
  query, the filter applied to them in numpy; queries still short of k allowed hits get a
  wider search (``k'`` x 4), then exact search as the last resort. Cost ~ Q x k' x graph step.

The cheaper one by that model is used (always exact at or below ``EXACT_MAX_COUNT``
allowed vectors). With the batched scan of one allowed vector for one query as the unit, one
graph candidate costs ``EXACT_COST_RATIO`` and the per-call pass over one allowed vector
``FETCH_COST`` (amortized over the queries of the call).

hnswlib's own ``filter=`` callback is never used: it calls into Python once per visited node,
which is orders of magnitude slower (benchmarks/results/index.md).
"""

from __future__ import annotations

import math

import numpy as np

from embedrank.index.hnsw_graph import HnswGraph

# A cost model for exact-over-the-subset versus graph search: a graph candidate costs a few
# hundred times an allowed vector in the exact kernel's blocked scan. The constants make it
# pick the faster side at every selectivity of the filters section of
# benchmarks/results/index.md (python -m embedrank.bench.index).
EXACT_COST_RATIO = 300.0
FETCH_COST = 9.0
EXACT_MAX_COUNT = 256
# Candidates per wanted hit in the graph path, on top of 1 / selectivity.
OVERSAMPLE = 2.0
WIDEN = 4
MAX_WIDENINGS = 2


def filtered_search(graph: HnswGraph, queries: np.ndarray, k: int, ef: int, allowed: np.ndarray,
                    num_threads: int) -> tuple[np.ndarray, np.ndarray]:
    """allowed: bool [any length], True = may be returned (labels past its end are not allowed).
    -> (scores float32 [Q, k], labels int64 [Q, k]), -inf / -1 padded; never a label that is
    not live or not allowed."""
    live = graph.live_mask
    mask = np.zeros(live.size, dtype=bool)
    n = min(live.size, allowed.size)
    mask[:n] = allowed[:n] & live[:n]
    allowed_labels = np.flatnonzero(mask).astype(np.int64)
    n_allowed = int(allowed_labels.size)
    n_live = len(graph)
    if n_allowed == 0 or n_live == 0 or queries.shape[0] == 0:
        nq = queries.shape[0]
        return np.full((nq, k), -np.inf, dtype=np.float32), np.full((nq, k), -1, dtype=np.int64)
    want = candidates_wanted(k, ef, n_allowed / n_live)
    if n_allowed <= max(k, EXACT_MAX_COUNT) or prefer_exact(n_allowed, want, queries.shape[0]):
        return graph.exact(queries, allowed_labels, k, num_threads)
    return _oversampled(graph, queries, k, want, mask, allowed_labels, num_threads)


def candidates_wanted(k: int, ef: int, selectivity: float) -> int:
    """Graph candidates per query so that about k * OVERSAMPLE of them pass the filter."""
    return max(ef, math.ceil(k * OVERSAMPLE / selectivity))


def prefer_exact(n_allowed: int, want: int, n_queries: int) -> bool:
    """The cost model above: exact search over n_allowed vectors vs graph searches for want."""
    exact_cost = n_allowed * (FETCH_COST / n_queries + 1.0)
    return exact_cost <= EXACT_COST_RATIO * want


def _oversampled(graph: HnswGraph, queries: np.ndarray, k: int, want: int, mask: np.ndarray,
                 allowed_labels: np.ndarray, num_threads: int) -> tuple[np.ndarray, np.ndarray]:
    nq = queries.shape[0]
    scores = np.full((nq, k), -np.inf, dtype=np.float32)
    labels = np.full((nq, k), -1, dtype=np.int64)
    pending = np.arange(nq)
    for attempt in range(MAX_WIDENINGS + 1):
        if pending.size == 0:
            break
        if want >= len(graph) or attempt == MAX_WIDENINGS:
            break  # a search this wide costs more than the exact one below
        found = graph.knn_all(queries[pending], want, num_threads)
        if found is None:
            break
        cand_scores, cand_labels = found
        passes = mask[cand_labels]  # graph labels are live, hence < mask.size
        # Stable: keep each row's best-first order among the candidates that pass.
        order = np.argsort(~passes, axis=1, kind="stable")[:, :k]
        hits = np.take_along_axis(passes, order, axis=1)
        complete = hits.sum(axis=1) >= min(k, allowed_labels.size)
        rows = pending[complete]
        scores[rows] = np.take_along_axis(cand_scores[complete], order[complete], axis=1)
        labels[rows] = np.take_along_axis(cand_labels[complete], order[complete], axis=1)
        pending = pending[~complete]
        want *= WIDEN
    if pending.size:
        exact_scores, exact_labels = graph.exact(queries[pending], allowed_labels, k, num_threads)
        scores[pending] = exact_scores
        labels[pending] = exact_labels
    return scores, labels
