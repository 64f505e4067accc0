"""HNSWIndex: approximate nearest-neighbour search on an hnswlib graph.

The common protocol (ids, metadata, filters, locking, persistence) comes from
:class:`~embedrank.index.base.BaseIndex`; the graph is an
:class:`~embedrank.index.hnsw_graph.HnswGraph` (growing capacity, tombstones, replacement,
rebuild) and filtered searches go through :mod:`embedrank.index.hnsw_search`.
"""

from __future__ import annotations

import numbers
from pathlib import Path

import numpy as np

from embedrank.index.base import BaseIndex
from embedrank.index.hnsw_graph import METRICS, HnswGraph
from embedrank.index.hnsw_search import filtered_search
from embedrank.index.storage import IndexFormatError
from embedrank.errors import InvalidTypeError, InvalidValueError
from embedrank.utils.threads import available_cores, check_num_threads

__all__ = ["HNSWIndex"]

GRAPH_FILE = "hnsw_graph.bin"
LABELS_FILE = "hnsw_live_labels.npy"
MAX_M = 2048


def _positive_int(value, name: str, minimum: int = 1, maximum: int | None = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise InvalidTypeError(f"{name} must be an integer, got {type(value).__name__} ({value!r})")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise InvalidValueError(f"{name} must be {bound}, got {int(value)}")
    return int(value)


class HNSWIndex(BaseIndex):
    """An HNSW graph index (hnswlib 0.8) with the embedrank index protocol.

    ``HNSWIndex(dim, M=16, ef_construction=200, ef=64, metric="ip", num_threads=None)``

    * dim: vector dimension. M: graph degree (2..2048; the bottom layer keeps 2M links).
      ef_construction: candidate list size while inserting (quality vs build time).
    * ef: candidate list size while searching (default for every search; override per call
      with ``search(..., ef=128)``; ``max(ef, k)`` is used). Searches with different ef may run
      at the same time: ef is passed per query, never set on the shared graph.
    * metric: "ip" (score = inner product; for unit vectors, cosine), "cosine" (vectors and
      queries are normalized; score = cosine similarity) or "l2" (score = minus the squared
      Euclidean distance, so higher is still better).
    * num_threads: threads for add and search (None: every CPU this process may use).

    Capacity grows by itself. ``remove`` leaves tombstones in the graph that later adds reuse;
    when tombstones pass 30% of the graph's nodes, the graph is rebuilt from the live vectors
    (under the write lock; searches wait). Filters: exact search over the allowed vectors when
    few pass, otherwise an oversampled graph search filtered in numpy (see _hnsw_search).
    Adds, removes and upserts take the write lock; searches share the read lock, so searches
    may run while other threads add and remove. Saved with the hnswlib graph file (``mmap``
    does not apply: the graph is read into memory on load).
    """

    _type_name = "HNSWIndex"

    def __init__(self, dim: int, M: int = 16, ef_construction: int = 200, ef: int = 64, metric: str = "ip",
                 num_threads: int | None = None) -> None:
        super().__init__(dim)
        if not isinstance(metric, str) or metric not in METRICS:
            raise InvalidValueError(f"metric must be one of {', '.join(map(repr, METRICS))}, got {metric!r}")
        self.M = _positive_int(M, "M", 2, MAX_M)
        self.ef_construction = _positive_int(ef_construction, "ef_construction")
        self.ef = _positive_int(ef, "ef")
        self.metric = metric
        self.num_threads = check_num_threads(num_threads)
        self._threads = self.num_threads or available_cores()
        self._graph = HnswGraph(self._dim, metric, self.M, self.ef_construction)

    # -- hooks -----------------------------------------------------------------------------
    def _add_vectors(self, slots: np.ndarray, vectors: np.ndarray) -> None:
        self._graph.add(slots, vectors, self._threads)

    def _remove_slots(self, slots: np.ndarray) -> None:
        self._graph.remove(slots)

    def _after_remove(self) -> None:
        # Under the write lock, with the IdMap already updated: rebuild without tombstones and
        # renumber the slots 0..n-1 so that labels (and filter masks) stay dense.
        if self._graph.needs_rebuild():
            old_slots = self._graph.live_labels()  # ascending, as the IdMap keeps them
            self._graph.rebuild(self._threads, old_slots)  # all or nothing: swapped in at the end
            kept = self._renumber_slots()
            if not np.array_equal(kept, old_slots):  # cannot happen while compact() keeps the order
                raise RuntimeError("HNSWIndex rebuild: the IdMap renumbered the slots in another order")

    def _search_params(self) -> set[str]:
        return {"ef"}

    def _search_slots(self, queries: np.ndarray, k: int, allowed: np.ndarray | None,
                      params: dict) -> tuple[np.ndarray, np.ndarray]:
        ef = _positive_int(params["ef"], "ef") if "ef" in params else self.ef
        if allowed is None:
            return self._graph.knn(queries, k, ef, self._threads)
        return filtered_search(self._graph, queries, k, ef, allowed, self._threads)

    def _config(self) -> dict:
        return {"M": self.M, "ef_construction": self.ef_construction, "ef": self.ef, "metric": self.metric,
                "num_threads": self.num_threads}

    def _memory_bytes(self) -> int:
        return self._graph.memory_bytes()

    def _save_payload(self, directory: Path) -> list[str]:
        self._graph.save(directory / GRAPH_FILE, directory / LABELS_FILE)
        return [GRAPH_FILE, LABELS_FILE]

    @classmethod
    def _load_payload(cls, directory: Path, manifest: dict, mmap: bool) -> HNSWIndex:
        config = manifest.get("config")
        if not isinstance(config, dict):
            raise IndexFormatError(f"{directory / 'manifest.json'}: 'config' must be an object, got {config!r}")
        for name in (GRAPH_FILE, LABELS_FILE):
            if name not in manifest.get("files", {}):
                raise IndexFormatError(f"{directory / name}: missing from the manifest's file list")
        index = cls(dim=manifest["dim"], **config)
        try:
            index._graph = HnswGraph.load(directory / GRAPH_FILE, directory / LABELS_FILE, index._dim, index.metric,
                                          index.M, index.ef_construction, max_label=manifest["slot_count"])
        except RuntimeError as exc:  # hnswlib's own checks of the graph file
            raise IndexFormatError(f"{directory / GRAPH_FILE}: hnswlib cannot read it ({exc})") from None
        return index

    def _after_load(self) -> None:
        live = self._idmap.live_slots()
        if not np.array_equal(np.sort(live), self._graph.live_labels()):
            raise IndexFormatError(f"the graph holds {len(self._graph)} live vectors that do not match the "
                                   f"{live.size} live ids")

    # -- extras ------------------------------------------------------------------------------
    @property
    def tombstones(self) -> int:
        """Removed vectors still in the graph (reused by later adds, or dropped by a rebuild)."""
        with self._lock.read():
            return self._graph.tombstones
