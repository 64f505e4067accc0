"""SearchResult: the ids, scores (and optionally metadata) of a batch of searches."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = ["QueryHits", "SearchResult"]


class QueryHits(NamedTuple):
    """One query's hits, best first: ids [k], scores [k] float32, metadata (list of k or None)."""

    ids: np.ndarray
    scores: np.ndarray
    metadata: list | None


@dataclass(frozen=True)
class SearchResult:
    """Results of ``index.search(queries, k)``, one row per query, best first.

    ids: [Q, k] int64 (padding -1) for an index with int ids, or an object array of str
    (padding None) for one with str ids. scores: [Q, k] float32, padding -inf. metadata:
    None unless asked for (``return_metadata=True``); then Q lists of k dicts, with None for
    padding and for vectors stored without metadata. A row is padded when fewer than k
    vectors exist or pass the filter.
    """

    ids: np.ndarray
    scores: np.ndarray
    metadata: list[list[dict | None]] | None = None

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def __getitem__(self, query: int) -> QueryHits:
        meta = None if self.metadata is None else self.metadata[query]
        return QueryHits(self.ids[query], self.scores[query], meta)

    def __iter__(self) -> Iterator[QueryHits]:
        for query in range(len(self)):
            yield self[query]
