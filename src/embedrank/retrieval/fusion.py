"""Score fusion for two-stage retrieval: choosing the weight of the first-stage score.

A reranked document's score is ``logit + w * first_stage_score`` (Retriever's
``first_stage_weight``). The weight is chosen on held-out queries (never on the test set):
:func:`choose_first_stage_weight` scores every weight of a grid by NDCG@10 on them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from embedrank.errors import InvalidValueError

__all__ = ["FUSION_WEIGHTS", "choose_first_stage_weight", "describe_choice", "fuse", "rerank_logits"]

# logit units per unit of cosine: 0 (the cross-encoder alone) up to a weight at which the
# first stage decides almost every order
FUSION_WEIGHTS = (0.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0)


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
