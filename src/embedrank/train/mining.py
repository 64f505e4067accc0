"""Hard-negative mining with embedrank's own encoder and exact search (no torch).

    >>> mined = mine_hard_negatives(queries, corpus, qrels, Encoder.load("models/minilm"),
    ...                             n=5, range_min=10, range_max=100, margin=0.05)
    >>> mined.negatives["q1"], mined.dropped_margin

For each query the corpus is ranked by inner product (exact, embedrank.kernels.topk_float32;
the encoder's vectors are L2-normalized, so this is cosine). The query's own relevant
documents are removed from the ranking; of the rest, ranks [range_min, range_max) are the
candidates (skipping the top ranks, where unjudged relevant documents crowd). A candidate is
kept only if it scores below the query's weakest positive by the margin:

    score <= positive - margin                and   score <= positive * (1 - relative_margin)

otherwise it is dropped as a likely false negative (counted in ``dropped_margin``). With a
``reranker`` (any object with ``predict(pairs) -> scores``, e.g. embedrank.CrossEncoder), the
surviving candidates are scored with the query and dropped when they score at or above the
weakest positive minus ``reranker_margin`` (``dropped_reranker``). The first ``n`` survivors
(best scoring first, or a seeded random sample with sampling="random") are the negatives.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from embedrank.utils.documents import document_text
from embedrank.kernels import topk_float32
from embedrank.errors import InvalidTypeError, InvalidValueError

__all__ = ["MinedNegatives", "mine_hard_negatives"]


@dataclass
class MinedNegatives:
    """The result of :func:`mine_hard_negatives`.

    negatives / scores: {query_id: [doc ids] / [first-stage scores]}, best first;
    considered: candidates in [range_min, range_max) over all queries; dropped_margin /
    dropped_reranker: candidates dropped as likely false negatives by the margin rules / by
    the reranker; short_queries: queries that got fewer than n negatives.
    """

    negatives: dict[str, list[str]]
    scores: dict[str, list[float]]
    considered: int = 0
    dropped_margin: int = 0
    dropped_reranker: int = 0
    short_queries: list[str] = field(default_factory=list)

    @property
    def dropped(self) -> int:
        return self.dropped_margin + self.dropped_reranker

    def summary(self) -> dict:
        kept = sum(len(v) for v in self.negatives.values())
        return {"queries": len(self.negatives), "considered": self.considered, "kept": kept,
                "dropped_as_false_negatives": self.dropped, "dropped_margin": self.dropped_margin,
                "dropped_reranker": self.dropped_reranker, "short_queries": len(self.short_queries)}


def _check_number(value, name: str, low: float, high: float | None = None, allow_none: bool = True):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidValueError(f"{name} must be a finite number{' or None' if allow_none else ''}, got {value!r}")
    if value < low or (high is not None and value >= high):
        bound = f"[{low}, {high})" if high is not None else f">= {low}"
        raise InvalidValueError(f"{name} must be {bound}, got {value!r}")
    return float(value)


def _check_int(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise InvalidValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _as_dict(items, name: str) -> dict:
    if isinstance(items, Mapping):
        return dict(items)
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise InvalidTypeError(f"{name} must be a dict {{id: text}} or a list of texts, got {type(items).__name__}")
    return {str(i): t for i, t in enumerate(items)}


def _positive_ids(positives, query_ids: list[str], corpus: dict) -> dict[str, list[str]]:
    if not isinstance(positives, Mapping):
        raise InvalidTypeError("positives must be a dict {query_id: [doc ids]} or qrels {query_id: {doc_id: grade}}")
    out = {}
    for qid in query_ids:
        if qid not in positives:
            raise InvalidValueError(f"query {qid!r} has no positives")
        value = positives[qid]
        if isinstance(value, str):
            ids = [value]
        elif isinstance(value, Mapping):
            ids = [d for d, g in value.items() if g >= 1]
        else:
            ids = list(value)
        unknown = [d for d in ids if d not in corpus]
        if unknown:
            raise InvalidValueError(f"positives of query {qid!r} name document ids not in the corpus: {unknown[:5]}")
        if not ids:
            raise InvalidValueError(f"query {qid!r} has no positive document")
        out[qid] = ids
    unknown_queries = [q for q in positives if q not in set(query_ids)]
    if unknown_queries:
        raise InvalidValueError(f"positives name query ids not in queries: {unknown_queries[:5]}")
    return out


def _encode(encoder, method: str, items: list) -> np.ndarray:
    fn = getattr(encoder, method, None) or getattr(encoder, "encode", None)
    if fn is None:
        raise InvalidTypeError(f"encoder must have {method}() or encode(), got {type(encoder).__name__}")
    vectors = np.ascontiguousarray(fn(items), dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(items):
        raise InvalidValueError(f"encoder.{method} returned shape {vectors.shape} for {len(items)} inputs")
    return vectors


def mine_hard_negatives(queries, corpus, positives, encoder, n: int = 5, range_min: int = 0, range_max: int = 100,
                        margin: float | None = None, relative_margin: float | None = None, reranker=None,
                        reranker_margin: float = 0.0, sampling: str = "top", seed: int = 0,
                        corpus_embeddings: np.ndarray | None = None) -> MinedNegatives:
    """Mines up to `n` hard negatives per query (see the module docs for the rules).

    queries: {query_id: text} (or a list, ids "0", "1", ...); corpus: {doc_id: str or BEIR
    dict}; positives: {query_id: [doc ids]} or qrels {query_id: {doc_id: grade}} (grade >= 1
    relevant), for every query. encoder: an embedrank.Encoder (or any object with
    encode_queries / encode_documents returning [n, d] float32). corpus_embeddings: [N, d]
    float32 in corpus order, to skip encoding the corpus. margin >= 0, relative_margin in
    [0, 1), or None for no such rule.
    """
    n = _check_int(n, "n", 1)
    range_min = _check_int(range_min, "range_min", 0)
    range_max = _check_int(range_max, "range_max", 1)
    if range_max <= range_min:
        raise InvalidValueError(f"range_max must be greater than range_min, got range_min={range_min}, range_max={range_max}")
    margin = _check_number(margin, "margin", 0.0)
    relative_margin = _check_number(relative_margin, "relative_margin", 0.0, 1.0)
    reranker_margin = _check_number(reranker_margin, "reranker_margin", 0.0, allow_none=False)
    if sampling not in ("top", "random"):
        raise InvalidValueError(f"sampling must be 'top' or 'random', got {sampling!r}")
    if reranker is not None and not callable(getattr(reranker, "predict", None)):
        raise InvalidTypeError(f"reranker must have a predict(pairs) method, got {type(reranker).__name__}")
    queries = _as_dict(queries, "queries")
    corpus = _as_dict(corpus, "corpus")
    if not queries:
        raise InvalidValueError("queries is empty")
    if not corpus:
        raise InvalidValueError("corpus is empty")
    query_ids = list(queries)
    positive_ids = _positive_ids(positives, query_ids, corpus)
    doc_ids = list(corpus)
    row_of = {d: i for i, d in enumerate(doc_ids)}

    if corpus_embeddings is None:
        corpus_embeddings = _encode(encoder, "encode_documents", list(corpus.values()))
    else:
        corpus_embeddings = np.ascontiguousarray(corpus_embeddings, dtype=np.float32)
        if corpus_embeddings.ndim != 2 or corpus_embeddings.shape[0] != len(doc_ids):
            raise InvalidValueError(f"corpus_embeddings must be [{len(doc_ids)}, d], got {corpus_embeddings.shape}")
    query_vectors = _encode(encoder, "encode_queries", [queries[q] for q in query_ids])
    if query_vectors.shape[1] != corpus_embeddings.shape[1]:
        raise InvalidValueError(f"query vectors have dimension {query_vectors.shape[1]}, "
                         f"corpus vectors {corpus_embeddings.shape[1]}")
    max_positives = max(len(v) for v in positive_ids.values())
    depth = min(range_max + max_positives, len(doc_ids))
    top_scores, top_rows = topk_float32(query_vectors, corpus_embeddings, depth)

    rng = np.random.default_rng(seed)
    result = MinedNegatives({}, {})
    pending: list[tuple[str, list[int], list[float], float]] = []
    for qi, qid in enumerate(query_ids):
        own = {row_of[d] for d in positive_ids[qid]}
        positive_score = float(min(query_vectors[qi] @ corpus_embeddings[r] for r in own))
        ranked = [(int(r), float(s)) for r, s in zip(top_rows[qi], top_scores[qi]) if r >= 0 and int(r) not in own]
        window = ranked[range_min:range_max]
        result.considered += len(window)
        kept_rows, kept_scores = [], []
        for row, score in window:
            too_close = ((margin is not None and score > positive_score - margin)
                         or (relative_margin is not None and score > positive_score * (1.0 - relative_margin)))
            if too_close:
                result.dropped_margin += 1
            else:
                kept_rows.append(row)
                kept_scores.append(score)
        pending.append((qid, kept_rows, kept_scores, positive_score))

    if reranker is not None:
        pending = [_rerank_filter(reranker, reranker_margin, queries[qid], corpus, doc_ids, positive_ids[qid],
                                  qid, rows, scores, pos, result) for qid, rows, scores, pos in pending]

    for qid, rows, scores, _ in pending:
        picks = list(range(len(rows)))
        if sampling == "random" and len(picks) > n:
            picks = sorted(rng.choice(len(picks), size=n, replace=False).tolist())
        picks = picks[:n]
        result.negatives[qid] = [doc_ids[rows[i]] for i in picks]
        result.scores[qid] = [scores[i] for i in picks]
        if len(picks) < n:
            result.short_queries.append(qid)
    return result


def _rerank_filter(reranker, reranker_margin, query, corpus, doc_ids, positives, qid, rows, scores, positive_score,
                   result: MinedNegatives):
    if not rows:
        return qid, rows, scores, positive_score
    pairs = [(query, document_text(corpus[d])) for d in positives]
    pairs += [(query, document_text(corpus[doc_ids[r]])) for r in rows]
    values = np.asarray(reranker.predict(pairs), dtype=np.float64).reshape(-1)
    if values.shape[0] != len(pairs):
        raise InvalidValueError(f"reranker.predict returned {values.shape[0]} scores for {len(pairs)} pairs")
    threshold = values[:len(positives)].min() - reranker_margin
    keep = [i for i, v in enumerate(values[len(positives):]) if v < threshold]
    result.dropped_reranker += len(rows) - len(keep)
    return qid, [rows[i] for i in keep], [scores[i] for i in keep], positive_score
