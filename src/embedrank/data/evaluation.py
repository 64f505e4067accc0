"""Retrieval evaluation with trec_eval's conventions, plus TREC run and qrels files.

:func:`evaluate` scores a run (``{query_id: {doc_id: score}}``) against relevance
judgements (``{query_id: {doc_id: grade}}``) and gives the same numbers as trec_eval
(as exposed by pytrec_eval) and as BEIR's ``EvaluateRetrieval.evaluate``:

* **Ranking.** Each query's documents are ranked by score, highest first; equal scores
  are ordered by document id, *descending* (plain string comparison, as trec_eval's
  ``strcmp`` on UTF-8 bytes). The order of the run dictionary never matters. Scores are
  compared as float64; trec_eval stores them as C floats, so two scores closer than float32
  resolves (about 1e-7 relative) tie there and are ordered by id, here by score.
* **Relevance.** A judged document is relevant when its grade is >= 1 (trec_eval's
  ``relevance_level`` 1); grades <= 0 are judged non-relevant. nDCG uses the grade itself
  as the gain (trec_eval's ``ndcg_cut``): DCG@k = sum of grade / log2(rank + 1) over the
  relevant documents in the top k; the ideal DCG@k comes from the judgements (grades
  sorted high to low, cut at k), whether or not those documents were retrieved.
  Judged documents missing from the run simply count as missed.
* **Metrics.** ``ndcg@k`` (pytrec_eval ``ndcg_cut_k``), ``recall@k`` (``recall_k``:
  relevant in top k / all relevant), ``precision@k`` (``P_k``: relevant in top k / k,
  even when fewer than k documents were retrieved), ``map@k`` (``map_cut_k``: sum of the
  precision at each relevant document ranked <= k, divided by the number of relevant
  documents), ``mrr@k`` (1 / rank of the first relevant document if it is within the top
  k, else 0: BEIR's MRR@k), and without a cut ``map`` (``map``), ``mrr`` (``recip_rank``)
  and ``ndcg`` (``ndcg``). A judged query with no relevant document scores 0 everywhere.
* **Which queries count** (the mean is over exactly the queries in ``per_query``):

  - queries with no judgements (absent from ``qrels``, or an empty dict there) never count;
  - a judged query present in the run counts, even if its run is empty (it scores 0);
  - a judged query *absent* from the run is skipped with ``missing_queries="skip"``
    (the default): this is what trec_eval does without ``-c``, what pytrec_eval returns,
    and so what BEIR averages over (its published numbers divide by the number of queries
    pytrec_eval returned). With ``missing_queries="zero"`` it counts with 0 for every
    metric (trec_eval ``-c``), so the mean is over every judged query.

  When no query counts, every mean is 0.0 and ``per_query`` is empty.

Where BEIR differs from this module, only in corner cases: BEIR's own MRR@k breaks score
ties by the order of the run dictionary (Python's stable sort) instead of trec_eval's
document-id order, and divides by the number of judged queries (it raises ``KeyError``
when a judged query is missing from the run); BEIR's ``evaluate`` also drops, by default,
documents whose id equals the query id (``ignore_identical_ids``), which this module
never does: remove them from the run first if you want that.
"""

from __future__ import annotations

import bisect
import math
import numbers
import os
import re
from collections.abc import Iterable, Mapping

import numpy as np

from embedrank.data.beir import add_judgement, read_beir_qrels
from embedrank.data.lines import numbered_lines
from embedrank.errors import InvalidTypeError, InvalidValueError

__all__ = [
    "evaluate",
    "KNOWN_METRICS",
    "DEFAULT_METRICS",
    "read_trec_run",
    "write_trec_run",
    "read_trec_qrels",
    "write_trec_qrels",
    "read_beir_qrels",
]

DEFAULT_METRICS = ("ndcg@10", "recall@100", "map@100", "mrr@10", "precision@10")
_CUT_METRICS = ("ndcg", "recall", "precision", "map", "mrr")
_UNCUT_METRICS = ("map", "mrr", "ndcg")
KNOWN_METRICS = tuple(f"{m}@k" for m in _CUT_METRICS) + _UNCUT_METRICS
_MISSING_MODES = ("skip", "zero")
_NAME_RE = re.compile(r"([a-z]+)@(.*)")
_NUMERIC_KINDS = "iuf"


# --------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------


def _parse_metrics(metrics: str | Iterable[str]) -> list[tuple[str, str, int | None]]:
    """``[(name, kind, k)]``, duplicates dropped, order kept; k is None for uncut metrics."""
    if isinstance(metrics, str):
        metrics = [metrics]
    try:
        names = list(metrics)
    except TypeError:
        raise InvalidTypeError(f"metrics must be a list of metric names, got {type(metrics).__name__}") from None
    if not names:
        raise InvalidValueError(f"metrics is empty; known metrics: {', '.join(KNOWN_METRICS)}")
    known = ", ".join(KNOWN_METRICS)
    parsed: list[tuple[str, str, int | None]] = []
    seen: set[str] = set()
    for name in names:
        if not isinstance(name, str):
            raise InvalidTypeError(f"metric names must be strings, got {name!r}; known metrics: {known}")
        if name in seen:
            continue
        seen.add(name)
        if name in _UNCUT_METRICS:
            parsed.append((name, name, None))
            continue
        match = _NAME_RE.fullmatch(name)
        if match is None or match.group(1) not in _CUT_METRICS:
            raise InvalidValueError(f"unknown metric {name!r}; known metrics: {known} (k a positive integer)")
        kind, k_text = match.groups()
        if not (k_text.isascii() and k_text.isdigit()) or int(k_text) <= 0:
            raise InvalidValueError(f"bad cutoff in metric {name!r}: k must be a positive integer, as in '{kind}@10'")
        parsed.append((name, kind, int(k_text)))
    return parsed


def _check_id(value: object, what: str) -> None:
    if not isinstance(value, str):
        raise InvalidTypeError(f"{what} {value!r} is a {type(value).__name__}; ids must be strings")


def _run_scores(qid: str, docs: object) -> np.ndarray:
    """The scores of one query's run as float64, in the dict's order, after checking them."""
    if not isinstance(docs, Mapping):
        raise InvalidTypeError(
            f"run[{qid!r}] must be a dict {{doc_id: score}}, got {type(docs).__name__}; "
            "a run is {query_id: {doc_id: score}}"
        )
    if not docs:
        return np.empty(0, dtype=np.float64)
    if set(map(type, docs)) != {str}:  # fast path; the loop allows str subclasses
        for doc in docs:
            _check_id(doc, f"run[{qid!r}] document id")
    values = list(docs.values())
    try:
        scores = np.asarray(values)
    except (ValueError, TypeError):  # e.g. ragged sequences
        scores = np.asarray(values, dtype=object)
    if scores.dtype.kind in _NUMERIC_KINDS and scores.ndim == 1:
        if scores.dtype.kind == "f" and scores.dtype.itemsize < 8:
            # numpy may have rounded Python floats to a narrower type (float32 scalars mixed
            # with floats): convert each value on its own, as float() does.
            scores = np.array(values, dtype=np.float64)
        scores = scores.astype(np.float64, copy=False)
    else:  # something numpy could not turn into one numeric column: find the culprit
        for doc, value in docs.items():
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
                raise InvalidTypeError(f"run[{qid!r}][{doc!r}] = {value!r} is not a number")
        scores = np.array([float(v) for v in values], dtype=np.float64)  # e.g. ints beyond int64
    if np.isnan(scores).any():
        doc = list(docs)[int(np.flatnonzero(np.isnan(scores))[0])]
        raise InvalidValueError(f"run[{qid!r}][{doc!r}] is NaN; scores must be comparable numbers")
    return scores


def _check_run(run: object) -> None:
    if not isinstance(run, Mapping):
        raise InvalidTypeError(f"run must be a dict {{query_id: {{doc_id: score}}}}, got {type(run).__name__}")
    for qid in run:
        _check_id(qid, "run query id")


def _grade(qid: str, doc: str, value: object) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise InvalidTypeError(f"qrels[{qid!r}][{doc!r}] = {value!r}: grades must be integers")
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    raise InvalidTypeError(f"qrels[{qid!r}][{doc!r}] = {value!r}: grades must be integers")


def _check_qrels(qrels: object) -> dict[str, dict[str, int]]:
    if not isinstance(qrels, Mapping):
        raise InvalidTypeError(f"qrels must be a dict {{query_id: {{doc_id: grade}}}}, got {type(qrels).__name__}")
    out: dict[str, dict[str, int]] = {}
    for qid, docs in qrels.items():
        _check_id(qid, "qrels query id")
        if not isinstance(docs, Mapping):
            raise InvalidTypeError(f"qrels[{qid!r}] must be a dict {{doc_id: grade}}, got {type(docs).__name__}")
        judged = {}
        for doc, value in docs.items():
            _check_id(doc, f"qrels[{qid!r}] document id")
            judged[doc] = _grade(qid, doc, value)
        out[qid] = judged
    return out


# --------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------


def _ranks(docs: Mapping[str, object], scores: np.ndarray, targets: list[str]) -> np.ndarray:
    """1-based trec_eval ranks of ``targets`` (all in ``docs``): score desc, then doc id desc."""
    target_scores = np.fromiter((float(docs[d]) for d in targets), dtype=np.float64, count=len(targets))
    ordered = np.sort(scores)
    right = np.searchsorted(ordered, target_scores, side="right")
    ranks = len(scores) - right + 1  # 1 + the number of strictly higher scores
    tied = right - np.searchsorted(ordered, target_scores, side="left") > 1
    if tied.any():
        keys = list(docs)
        groups: dict[float, list[str]] = {}  # tied score -> its doc ids, sorted
        for i in np.flatnonzero(tied):
            score = float(target_scores[i])
            if score not in groups:
                groups[score] = sorted(keys[j] for j in np.flatnonzero(scores == score))
            group = groups[score]
            ranks[i] += len(group) - bisect.bisect_right(group, targets[i])  # ids above it
    return ranks


def _query_metrics(
    docs: Mapping[str, object],
    scores: np.ndarray,
    judged: dict[str, int],
    parsed: list[tuple[str, str, int | None]],
) -> dict[str, float]:
    ideal = np.array(sorted((g for g in judged.values() if g > 0), reverse=True), dtype=np.float64)
    num_rel = len(ideal)
    if num_rel == 0:
        return {name: 0.0 for name, _, _ in parsed}
    found = [d for d, g in judged.items() if g > 0 and d in docs]
    if found:
        ranks = _ranks(docs, scores, found)
        order = np.argsort(ranks, kind="stable")
        ranks = ranks[order].astype(np.float64)
        gains = np.array([judged[found[i]] for i in order], dtype=np.float64)
    else:
        ranks = gains = np.empty(0, dtype=np.float64)
    discounted = gains / np.log2(ranks + 1.0)
    precisions = np.arange(1, len(ranks) + 1, dtype=np.float64) / ranks
    ideal_dcg = np.cumsum(ideal / np.log2(np.arange(2, num_rel + 2, dtype=np.float64)))

    out: dict[str, float] = {}
    for name, kind, k in parsed:
        hits = len(ranks) if k is None else int(np.searchsorted(ranks, k, side="right"))
        if kind == "ndcg":
            cut = num_rel if k is None else min(k, num_rel)
            value = float(discounted[:hits].sum() / ideal_dcg[cut - 1])
        elif kind == "map":
            value = float(precisions[:hits].sum() / num_rel)
        elif kind == "mrr":
            value = float(1.0 / ranks[0]) if hits else 0.0
        elif kind == "recall":
            value = hits / num_rel
        else:  # precision
            value = hits / k
        out[name] = value
    return out


def evaluate(
    run: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    metrics: str | Iterable[str] = DEFAULT_METRICS,
    *,
    missing_queries: str = "skip",
) -> dict[str, dict]:
    """Score ``run`` against ``qrels`` with trec_eval's conventions (see the module docs).

    Args:
        run: ``{query_id: {doc_id: score}}``; higher scores rank first, ties by doc id
            descending. Queries without judgements are ignored.
        qrels: ``{query_id: {doc_id: grade}}`` with integer grades; >= 1 is relevant.
        metrics: names among ``ndcg@k``, ``recall@k``, ``precision@k``, ``map@k``,
            ``mrr@k`` (k >= 1), ``map``, ``mrr``, ``ndcg``.
        missing_queries: ``"skip"`` (default; trec_eval, pytrec_eval and BEIR) leaves judged
            queries that are absent from the run out of the mean; ``"zero"`` (trec_eval
            ``-c``) counts them with 0 for every metric.

    Returns:
        ``{"mean": {metric: value}, "per_query": {query_id: {metric: value}}}``; the mean is
        the plain average over the queries in ``per_query`` (in qrels order).
    """
    parsed = _parse_metrics(metrics)
    if missing_queries not in _MISSING_MODES:
        raise InvalidValueError(f"missing_queries must be one of {_MISSING_MODES}, got {missing_queries!r}")
    _check_run(run)
    judgements = _check_qrels(qrels)
    checked = {qid: _run_scores(qid, docs) for qid, docs in run.items()}

    per_query: dict[str, dict[str, float]] = {}
    for qid, judged in judgements.items():
        if not judged:
            continue
        if qid not in run:
            if missing_queries == "zero":
                per_query[qid] = {name: 0.0 for name, _, _ in parsed}
            continue
        per_query[qid] = _query_metrics(run[qid], checked[qid], judged, parsed)

    if per_query:
        table = np.array([[values[name] for name, _, _ in parsed] for values in per_query.values()])
        means = table.mean(axis=0)
        mean = {name: float(means[i]) for i, (name, _, _) in enumerate(parsed)}
    else:
        mean = {name: 0.0 for name, _, _ in parsed}
    return {"mean": mean, "per_query": per_query}


# --------------------------------------------------------------------------------------
# TREC files
# --------------------------------------------------------------------------------------


def _check_token(value: str, what: str) -> None:
    if not value or any(ch.isspace() for ch in value):
        raise InvalidValueError(f"{what} {value!r} cannot be written to a TREC file: it is empty or has whitespace")


def _ranked(docs: Mapping[str, object], scores: np.ndarray) -> list[tuple[str, float]]:
    """Documents in trec_eval order: score descending, then doc id descending."""
    pairs = list(zip(docs, scores.tolist()))
    pairs.sort(key=lambda pair: (pair[1], pair[0]), reverse=True)
    return pairs


def write_trec_run(
    run: Mapping[str, Mapping[str, float]],
    path: str | os.PathLike,
    tag: str = "embedrank",
    depth: int | None = None,
) -> None:
    """Write ``run`` as a TREC run file: ``qid Q0 docid rank score tag`` per line.

    Queries keep the run's order; within a query documents are ranked as trec_eval ranks
    them (score descending, ties by doc id descending), so the rank column agrees with
    trec_eval. ``depth`` keeps only the top ``depth`` documents of each query. Scores are
    written with ``repr`` (shortest text that reads back as the same float64).
    """
    _check_run(run)
    if not isinstance(tag, str):
        raise InvalidTypeError(f"tag must be a string, got {type(tag).__name__}")
    _check_token(tag, "tag")
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth <= 0):
        raise InvalidValueError(f"depth must be a positive integer or None, got {depth!r}")
    lines: list[str] = []
    for qid, docs in run.items():
        scores = _run_scores(qid, docs)
        _check_token(qid, "query id")
        ranked = _ranked(docs, scores)
        if depth is not None:
            ranked = ranked[: int(depth)]
        for rank, (doc, score) in enumerate(ranked, start=1):
            _check_token(doc, f"run[{qid!r}] document id")
            lines.append(f"{qid} Q0 {doc} {rank} {score!r} {tag}\n")
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(lines)


def read_trec_run(path: str | os.PathLike) -> dict[str, dict[str, float]]:
    """Read a TREC run file (``qid Q0 docid rank score tag``, whitespace separated).

    The rank column is ignored (trec_eval ranks by score); blank lines are skipped. A line
    with the wrong number of fields, a score that is not a number (or NaN), or a document
    listed twice for a query raises ``ValueError`` naming the file and line.
    """
    run: dict[str, dict[str, float]] = {}
    first_line: dict[tuple[str, str], int] = {}
    for lineno, line in numbered_lines(path):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 6:
            raise InvalidValueError(
                f"{path}:{lineno}: expected 6 fields 'qid Q0 docid rank score tag', got {len(fields)}: {line.rstrip()!r}"
            )
        qid, _, doc, _, score_text, _ = fields
        try:
            score = float(score_text)
        except ValueError:
            raise InvalidValueError(f"{path}:{lineno}: score {score_text!r} is not a number") from None
        if math.isnan(score):
            raise InvalidValueError(f"{path}:{lineno}: score is NaN")
        docs = run.setdefault(qid, {})
        if doc in docs:
            raise InvalidValueError(
                f"{path}:{lineno}: document {doc!r} is listed twice for query {qid!r} "
                f"(first on line {first_line[qid, doc]})"
            )
        first_line[qid, doc] = lineno
        docs[doc] = score
    return run


def write_trec_qrels(qrels: Mapping[str, Mapping[str, int]], path: str | os.PathLike) -> None:
    """Write ``qrels`` as a TREC qrels file: ``qid 0 docid grade`` per line, in dict order."""
    judgements = _check_qrels(qrels)
    lines: list[str] = []
    for qid, docs in judgements.items():
        _check_token(qid, "query id")
        for doc, grade in docs.items():
            _check_token(doc, f"qrels[{qid!r}] document id")
            lines.append(f"{qid} 0 {doc} {grade}\n")
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(lines)


def read_trec_qrels(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    """Read a TREC qrels file (``qid iteration docid grade``, whitespace separated).

    The iteration column is ignored; blank lines are skipped. A line with the wrong number
    of fields, a grade that is not an integer, or a document judged twice with different
    grades raises ``ValueError`` naming the file and line (an exact repeat is accepted).
    """
    qrels: dict[str, dict[str, int]] = {}
    first_line: dict[tuple[str, str], int] = {}
    for lineno, line in numbered_lines(path):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 4:
            raise InvalidValueError(
                f"{path}:{lineno}: expected 4 fields 'qid 0 docid grade', got {len(fields)}: {line.rstrip()!r}"
            )
        qid, _, doc, grade_text = fields
        try:
            grade = int(grade_text)
        except ValueError:
            raise InvalidValueError(f"{path}:{lineno}: grade {grade_text!r} is not an integer") from None
        add_judgement(qrels, first_line, qid, doc, grade, f"{path}:{lineno}")
    return qrels

