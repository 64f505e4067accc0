"""Score fusion: dense + lexical candidates (hybrid search), and reranker + first stage.

Hybrid: :func:`fuse_candidates` merges a query's dense and lexical candidate lists, by convex
combination of min-max normalized scores or by reciprocal rank fusion (Retriever's
``fusion`` / ``lexical_weight``); :func:`choose_lexical_weight` picks the weight on held-out
queries. Reranking: a reranked document's score is ``logit + w * first_stage_score``
(Retriever's ``first_stage_weight``), the weight chosen on held-out queries (never on the
test set) by :func:`choose_first_stage_weight`, which scores every weight of a grid by NDCG@10.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from embedrank.errors import InvalidValueError

__all__ = ["FUSION_WEIGHTS", "LEXICAL_WEIGHTS", "Candidates", "choose_first_stage_weight", "choose_lexical_weight",
           "describe_choice", "fuse", "fuse_candidates", "rerank_logits", "rerank_on_top"]

# logit units per unit of cosine: 0 (the cross-encoder alone) up to a weight at which the
# first stage decides almost every order
FUSION_WEIGHTS = (0.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0)


# lexical_weight grid for choose_lexical_weight: 0 (dense alone) to 1 (lexical alone)
LEXICAL_WEIGHTS = tuple(round(0.1 * i, 1) for i in range(11))

# One query's candidates: (document indices int64 [c], scores float32 [c], best window int64 [c]), best first.
Candidates = tuple


def fuse_candidates(dense: Candidates, lexical: Candidates, method: str, lexical_weight: float, rrf_k: int,
                    limit: int) -> Candidates:
    """The two candidate lists of one query merged into one, best first, at most `limit`.

    convex: each list's scores min-max normalized over the list (all equal: 1), then
    (1 - w) * dense + w * lexical, a side missing a document adding 0; rrf: (1 - w) / (rrf_k +
    dense rank) + w / (rrf_k + lexical rank), ranks from 1. Ties go to the lower document
    index. A document's window is its dense one when the dense side found it, else its lexical one.
    """
    d_docs, d_scores, d_windows = dense
    l_docs, l_scores, l_windows = lexical
    docs = np.concatenate([d_docs, l_docs])
    if method == "convex":
        parts = [_min_max(d_scores) * (1.0 - lexical_weight), _min_max(l_scores) * lexical_weight]
    else:
        parts = [(1.0 - lexical_weight) / (rrf_k + np.arange(1, d_docs.size + 1, dtype=np.float64)),
                 lexical_weight / (rrf_k + np.arange(1, l_docs.size + 1, dtype=np.float64))]
    contributions = np.concatenate(parts)
    unique, first, inverse = np.unique(docs, return_index=True, return_inverse=True)
    fused = np.bincount(inverse, weights=contributions, minlength=unique.size)
    windows = np.concatenate([d_windows, l_windows])[first]  # dense entries come first in `docs`
    order = np.lexsort((unique, -fused))[:limit]
    return unique[order], fused[order].astype(np.float32), windows[order]


def _min_max(scores: np.ndarray) -> np.ndarray:
    scores = scores.astype(np.float64)
    if scores.size == 0:
        return scores
    low, high = scores.min(), scores.max()
    return np.ones_like(scores) if high <= low else (scores - low) / (high - low)


def choose_lexical_weight(dense: Mapping[str, Candidates], lexical: Mapping[str, Candidates], doc_ids,
                          qrels: Mapping, method: str = "convex", rrf_k: int = 60,
                          weights: Sequence[float] = LEXICAL_WEIGHTS, limit: int = 100) -> tuple[float, dict]:
    """The lexical_weight with the best NDCG@10 of the fused first stage on held-out queries
    (ties to the weight nearest 0.5), and a report {"queries", "ndcg@10": {weight: value}}.

    dense / lexical: {qid: Candidates} of the same queries; doc_ids: document index -> id.
    """
    from embedrank.data.evaluation import evaluate

    if not dense:
        raise InvalidValueError("no held-out queries to choose the lexical weight on")
    weights = [float(w) for w in weights]
    if not weights or any(not 0 <= w <= 1 for w in weights):
        raise InvalidValueError(f"weights must be numbers in [0, 1], got {weights!r}")
    scores = {}
    for w in weights:
        run = {}
        for q in dense:
            docs, fused, _ = fuse_candidates(dense[q], lexical[q], method, w, rrf_k, limit)
            run[q] = {doc_ids[d]: float(s) for d, s in zip(docs.tolist(), fused.tolist())}
        scores[w] = evaluate(run, qrels, ["ndcg@10"])["mean"]["ndcg@10"]
    best = max(weights, key=lambda w: (scores[w], -abs(w - 0.5)))
    return best, {"queries": len(dense), "method": method, "ndcg@10": {str(w): v for w, v in scores.items()}}


def fuse(first_stage: Mapping[str, Mapping[str, float]], logits: Mapping[str, Mapping[str, float]],
         weight: float) -> dict[str, dict[str, float]]:
    """{qid: {doc_id: logit + weight * first-stage score}} over the reranked documents."""
    return {q: {d: float(s) + weight * float(first_stage[q][d]) for d, s in docs.items()} for q, docs in logits.items()}


def choose_first_stage_weight(first_stage: Mapping[str, Mapping[str, float]],
                              logits: Mapping[str, Mapping[str, float]], qrels: Mapping,
                              weights: Sequence[float] = FUSION_WEIGHTS) -> tuple[float, dict]:
    """The weight with the best NDCG@10 (ties to the smaller weight) and a report.

    first_stage / logits: {qid: {doc_id: score}} for the same reranked candidates of held-out
    queries; qrels: their judgements. Returns (weight, {"queries", "first_stage_ndcg@10",
    "fused_ndcg@10": {weight: value}}).
    """
    from embedrank.data.evaluation import evaluate

    if not logits:
        raise InvalidValueError("no held-out queries to choose the fusion weight on")
    missing = [q for q, docs in logits.items() if q not in first_stage or set(docs) - set(first_stage[q])]
    if missing:
        raise InvalidValueError(f"first_stage lacks the candidates of {len(missing)} queries (e.g. {missing[0]!r})")
    weights = [float(w) for w in weights]
    if not weights or any(not np.isfinite(w) or w < 0 for w in weights):
        raise InvalidValueError(f"weights must be finite numbers >= 0, got {weights!r}")
    scores = {w: evaluate(fuse(first_stage, logits, w), qrels, ["ndcg@10"])["mean"]["ndcg@10"] for w in weights}
    best = max(weights, key=lambda w: (scores[w], -w))
    first = evaluate({q: dict(first_stage[q]) for q in logits}, qrels, ["ndcg@10"])["mean"]["ndcg@10"]
    return best, {"queries": len(logits), "first_stage_ndcg@10": first,
                  "fused_ndcg@10": {str(w): v for w, v in scores.items()}}


def rerank_on_top(first_stage: list, reranked: list) -> list:
    """Per query: the reranked hits, then the first-stage hits not among them (in their order):
    a ranking to a depth beyond what was reranked, for evaluation."""
    merged = []
    for first, top in zip(first_stage, reranked):
        seen = {hit.doc_id for hit in top}
        merged.append(top + [hit for hit in first if hit.doc_id not in seen])
    return merged


def rerank_logits(reranker, pairs: Mapping[str, Mapping[str, tuple[str, str]]],
                  show_progress: bool | None = None) -> dict[str, dict[str, float]]:
    """{qid: {doc_id: raw logit}} for {qid: {doc_id: (query text, passage)}}, in one predict call."""
    flat = [pair for docs in pairs.values() for pair in docs.values()]
    logits = iter(reranker.predict(flat, activation=None, show_progress=show_progress).tolist())
    return {q: {d: next(logits) for d in docs} for q, docs in pairs.items()}


def describe_choice(weight: float, report: dict) -> str:
    """One line on a choose_first_stage_weight result: the weight and the NDCG@10 behind it."""
    fused = report["fused_ndcg@10"]
    alone = f"cross-encoder alone {fused['0.0']:.4f}, " if "0.0" in fused else ""
    return (f"{weight:g}, chosen on {report['queries']} held-out queries (NDCG@10 there: bi-encoder "
            f"{report['first_stage_ndcg@10']:.4f}, {alone}fused {fused[str(float(weight))]:.4f})")
