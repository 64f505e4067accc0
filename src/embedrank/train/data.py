"""Training data: (query, positive[, negatives]) examples from BEIR qrels or plain lists, and
a seeded split by query for held-out model selection. No torch here."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from embedrank.utils.documents import document_text
from embedrank.errors import InvalidTypeError, InvalidValueError

__all__ = ["RetrievalData", "TrainingExample", "examples_from_pairs", "split_by_query"]


@dataclass(frozen=True)
class TrainingExample:
    """One training pair: a query, a relevant document and optional hard negatives.

    Ids are optional; when given they decide which in-batch documents are the same document
    (false-negative masking). relevant_ids: every document judged relevant to the query
    (never used as a negative for it).
    """

    query: str
    positive: str
    negatives: tuple[str, ...] = ()
    query_id: str | None = None
    positive_id: str | None = None
    negative_ids: tuple[str | None, ...] = ()
    relevant_ids: frozenset[str] = field(default_factory=frozenset)

    def positive_key(self) -> str:
        """The identity of the positive: its id when known, else its text."""
        return f"id:{self.positive_id}" if self.positive_id is not None else f"text:{self.positive}"

    def negative_keys(self) -> list[str]:
        ids = self.negative_ids or (None,) * len(self.negatives)
        return [f"id:{i}" if i is not None else f"text:{t}" for t, i in zip(self.negatives, ids)]

    def relevant_keys(self) -> set[str]:
        """Keys of every document relevant to this query (ids and the positive's text)."""
        return {self.positive_key(), f"text:{self.positive}", *(f"id:{i}" for i in self.relevant_ids)}


def _check_str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidTypeError(f"{what} must be a str, got {type(value).__name__}")
    if not value.strip():
        raise InvalidValueError(f"{what} is empty")
    return value


def examples_from_pairs(rows: Iterable) -> list[TrainingExample]:
    """Examples from (query, positive) or (query, positive, negatives) rows.

    negatives: one str or a sequence of str. Raises ValueError on an empty list, an empty
    text or a row of the wrong length, TypeError on a non-str text.
    """
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Iterable):
        raise InvalidTypeError("rows must be an iterable of (query, positive[, negatives]) tuples")
    out = []
    for i, row in enumerate(rows):
        if isinstance(row, TrainingExample):
            out.append(row)
            continue
        if isinstance(row, (str, bytes)) or not isinstance(row, Sequence) or len(row) not in (2, 3):
            raise InvalidValueError(f"rows[{i}] must be (query, positive) or (query, positive, negatives), got {row!r:.80}")
        query = _check_str(row[0], f"rows[{i}] query")
        positive = _check_str(row[1], f"rows[{i}] positive")
        negatives: tuple[str, ...] = ()
        if len(row) == 3:
            raw = row[2]
            raw = [raw] if isinstance(raw, str) else list(raw)
            negatives = tuple(_check_str(n, f"rows[{i}] negative {j}") for j, n in enumerate(raw))
        out.append(TrainingExample(query, positive, negatives))
    if not out:
        raise InvalidValueError("no training examples: the list of rows is empty")
    return out


@dataclass
class RetrievalData:
    """A corpus, queries and their relevance judgements (grades >= 1 are relevant).

    corpus: {doc_id: text}; queries: {query_id: text}; qrels: {query_id: {doc_id: grade}}.
    """

    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]

    def __post_init__(self) -> None:
        if not self.corpus:
            raise InvalidValueError("the corpus is empty")
        if not self.qrels:
            raise InvalidValueError("no relevance judgements (qrels are empty)")
        unknown_queries = [q for q in self.qrels if q not in self.queries]
        if unknown_queries:
            raise InvalidValueError(f"{len(unknown_queries)} judged query id(s) have no text: {unknown_queries[:5]}")
        unknown_docs = sorted({d for docs in self.qrels.values() for d, g in docs.items()
                               if g >= 1 and d not in self.corpus})
        if unknown_docs:
            raise InvalidValueError(f"{len(unknown_docs)} relevant document id(s) in the qrels are not in the corpus: "
                             f"{unknown_docs[:5]}")
        if not any(g >= 1 for docs in self.qrels.values() for g in docs.values()):
            raise InvalidValueError("the qrels judge no document relevant (no grade >= 1)")

    @classmethod
    def from_beir(cls, path: str | os.PathLike, split: str = "train") -> RetrievalData:
        """Loads a BEIR folder's split (see embedrank.load_beir); titles are joined to texts."""
        from embedrank.data.beir import load_beir

        corpus, queries, qrels = load_beir(path, split)
        return cls({d: document_text(doc) for d, doc in corpus.items()}, dict(queries), qrels)

    def relevant(self, query_id: str) -> list[str]:
        return [d for d, g in self.qrels.get(query_id, {}).items() if g >= 1]

    def query_ids(self) -> list[str]:
        """The judged queries with at least one relevant document, in qrels order."""
        return [q for q in self.qrels if self.relevant(q)]

    def subset(self, query_ids: Iterable[str]) -> RetrievalData:
        """The same corpus with only `query_ids` (their qrels and texts)."""
        ids = list(query_ids)
        unknown = [q for q in ids if q not in self.qrels]
        if unknown:
            raise InvalidValueError(f"unknown query ids {unknown[:5]}")
        return RetrievalData(self.corpus, {q: self.queries[q] for q in ids}, {q: self.qrels[q] for q in ids})

    def examples(self, negatives: Mapping[str, Sequence[str]] | None = None) -> list[TrainingExample]:
        """One example per (query, relevant document); negatives: {query_id: [doc ids]}."""
        out = []
        for qid in self.query_ids():
            relevant = frozenset(self.relevant(qid))
            negative_ids = tuple(negatives.get(qid, ())) if negatives is not None else ()
            bad = [d for d in negative_ids if d not in self.corpus]
            if bad:
                raise InvalidValueError(f"negatives of query {qid!r} name unknown document ids {bad[:5]}")
            for doc in self.relevant(qid):
                out.append(TrainingExample(
                    self.queries[qid], self.corpus[doc], tuple(self.corpus[d] for d in negative_ids),
                    qid, doc, negative_ids, relevant))
        return out


def split_by_query(query_ids: Sequence[str], dev_fraction: float = 0.1, seed: int = 0) -> tuple[list[str], list[str]]:
    """Splits query ids into (train, dev) by a seeded shuffle; both keep the input order.

    Every judgement of a query lands on the same side, so dev queries are unseen in training.
    """
    if isinstance(dev_fraction, bool) or not isinstance(dev_fraction, (int, float)) or not 0 < dev_fraction < 1:
        raise InvalidValueError(f"dev_fraction must be in (0, 1), got {dev_fraction!r}")
    ids = list(dict.fromkeys(query_ids))
    if len(ids) < 2:
        raise InvalidValueError(f"need at least 2 distinct queries to split, got {len(ids)}")
    n_dev = min(max(1, round(len(ids) * dev_fraction)), len(ids) - 1)
    order = np.random.default_rng(seed).permutation(len(ids))
    dev = set(order[:n_dev].tolist())
    return [q for i, q in enumerate(ids) if i not in dev], [q for i, q in enumerate(ids) if i in dev]
