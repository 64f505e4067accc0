"""HnswGraph: an hnswlib 0.8 graph with growing capacity, tombstones and ef per search.

Labels are internal int64 "slots" (>= 0), unique among live vectors. What this adds on top
of ``hnswlib.Index``:

* **Capacity grows by itself.** Before an add that would not fit, ``resize_index`` doubles
  the capacity (or more, to fit the batch). Callers never see ``max_elements``.
* **Deletes are tombstones.** ``remove`` calls ``mark_deleted``; the node stays in the graph
  (searches walk through it but never return it). Later adds reuse tombstoned nodes
  (``allow_replace_deleted`` / ``replace_deleted=True``). A label that is itself tombstoned
  and added again is revived in place (``unmark_deleted`` + update), because hnswlib's
  replacement path would otherwise leave two nodes with one label.
* **Rebuild.** ``needs_rebuild()`` is True when tombstones exceed
  ``REBUILD_TOMBSTONE_FRACTION`` of the graph's nodes (only reachable by removing more than
  is added back); ``rebuild()`` then makes a fresh graph of the live vectors (optionally
  relabelled 0..n-1), so searches stop paying for the dead nodes they walk through.
  HNSWIndex checks after every remove.
* **ef per search, safe under concurrent searches.** hnswlib keeps ``ef`` as index-global
  state, so ``set_ef`` + ``knn_query`` from two threads with different ef would race. This
  class never changes that state after construction: ``ef_`` stays 1 and every query asks
  for ``max(ef, k)`` neighbours. hnswlib searches with ``max(ef_, k)`` candidates, so
  asking for ``ef`` results is exactly an ``ef`` search; the first k are its top k.
* **A float32 copy of the vectors** (by label, unit-norm for "cosine") serves exact
  filtered search and rebuilds: hnswlib's ``get_items`` goes through Python lists (~30 us per
  384-d vector). It costs dim x 4 bytes per vector on top of the graph; it is not saved
  (load reads it back from the graph's level-0 block in one copy).
* **Scores, higher is better.** metric "ip": inner product (1 - hnswlib's ip distance);
  "cosine": cosine similarity (hnswlib normalizes stored vectors and queries);
  "l2": minus the squared Euclidean distance.

Not thread-safe for writes: the caller serializes add/remove/rebuild against everything
else (HNSWIndex does it with its reader-writer lock). Concurrent searches are safe.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import hnswlib
import numpy as np

from embedrank.kernels import topk_float32
from embedrank.errors import InvalidValueError, UnknownIdError

METRICS = ("ip", "cosine", "l2")
# Rebuild when tombstones are more than this share of the graph's nodes: recall at a fixed ef
# does not drop as nodes die, but dead nodes are still walked, so QPS falls with their share
# (the tombstones section of benchmarks/results/index.md); 30% bounds that slowdown, and a
# rebuild costs one build of the live vectors.
REBUILD_TOMBSTONE_FRACTION = 0.30
# Below this many nodes a rebuild is not worth its bookkeeping.
REBUILD_MIN_NODES = 256
INITIAL_CAPACITY = 1024
SEED = 100


class HnswGraph:
    """An HNSW graph over float32 vectors labelled by int64 slots (see the module docstring)."""

    def __init__(self, dim: int, metric: str = "ip", M: int = 16, ef_construction: int = 200,
                 capacity: int = INITIAL_CAPACITY) -> None:
        if metric not in METRICS:
            raise InvalidValueError(f"metric must be one of {METRICS}, got {metric!r}")
        self.dim = int(dim)
        self.metric = metric
        self.M = int(M)
        self.ef_construction = int(ef_construction)
        self._index = self._new_index(max(int(capacity), 1))
        self._live_mask = np.zeros(0, dtype=bool)  # [>= max label + 1], True where live
        self._vectors = np.zeros((0, self.dim), dtype=np.float32)  # [same length, dim], by label
        self._live = 0
        self._removed_labels: set[int] = set()  # labels that may still be tombstones in hnswlib

    def _new_index(self, capacity: int) -> hnswlib.Index:
        index = hnswlib.Index(space=self.metric, dim=self.dim)
        index.init_index(max_elements=capacity, M=self.M, ef_construction=self.ef_construction,
                         random_seed=SEED, allow_replace_deleted=True)
        index.set_ef(1)  # never changed again: see "ef per search" above
        return index

    # ------------------------------------------------------------------ state

    def __len__(self) -> int:
        return self._live

    @property
    def nodes(self) -> int:
        """Nodes in the graph, live and tombstoned."""
        return int(self._index.element_count)

    @property
    def tombstones(self) -> int:
        return self.nodes - self._live

    @property
    def capacity(self) -> int:
        return int(self._index.max_elements)

    @property
    def live_mask(self) -> np.ndarray:
        """bool [>= max label + 1]: True where the label is live (a view; do not modify)."""
        return self._live_mask

    def live_labels(self) -> np.ndarray:
        return np.flatnonzero(self._live_mask).astype(np.int64)

    def memory_bytes(self) -> int:
        """Bytes held: hnswlib's graph (its serialized size), the vector copy and the live mask."""
        return int(self._index.index_file_size()) + self._vectors.nbytes + self._live_mask.nbytes

    # ------------------------------------------------------------------ writes

    def add(self, labels: np.ndarray, vectors: np.ndarray, num_threads: int) -> None:
        """labels int64 [n] (>= 0, not live, distinct); vectors float32 [n, dim] finite."""
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if labels.size == 0:
            return
        if labels.min() < 0:
            raise InvalidValueError(f"labels must be >= 0, got {int(labels.min())}")
        if self._is_live(labels).any():
            live = labels[self._is_live(labels)][:5].tolist()
            raise InvalidValueError(f"labels already live: {live}")
        revive = np.zeros(labels.size, dtype=bool)
        if self._removed_labels:
            for i, label in enumerate(labels.tolist()):
                if label in self._removed_labels:
                    self._removed_labels.discard(label)
                    try:
                        self._index.unmark_deleted(label)  # still a tombstone: reuse its node
                        revive[i] = True
                    except RuntimeError:
                        pass  # its node was already taken over by another label
        fresh = ~revive
        n_revived = int(revive.sum())
        spare_tombstones = self.tombstones - n_revived
        new_nodes = max(0, int(fresh.sum()) - spare_tombstones)
        self._ensure_capacity(self.nodes + new_nodes)
        self._grow_arrays(int(labels.max()) + 1)
        if n_revived:
            self._index.add_items(vectors[revive], labels[revive], num_threads=num_threads, replace_deleted=False)
        if fresh.any():
            self._index.add_items(vectors[fresh], labels[fresh], num_threads=num_threads, replace_deleted=True)
        self._vectors[labels] = _unit_rows(vectors) if self.metric == "cosine" else vectors
        self._live_mask[labels] = True
        self._live += labels.size

    def remove(self, labels: np.ndarray) -> None:
        """labels int64 [n], all live: tombstones them (see :meth:`needs_rebuild`)."""
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        if labels.size == 0:
            return
        if not self._is_live(labels).all():
            dead = labels[~self._is_live(labels)][:5].tolist()
            raise UnknownIdError(f"labels not live: {dead}")
        for label in labels.tolist():
            self._index.mark_deleted(label)
            self._removed_labels.add(label)
        self._live_mask[labels] = False
        self._live -= labels.size

    def needs_rebuild(self) -> bool:
        """True when tombstones are more than REBUILD_TOMBSTONE_FRACTION of the nodes."""
        return self.nodes >= REBUILD_MIN_NODES and self.tombstones > REBUILD_TOMBSTONE_FRACTION * self.nodes

    def rebuild(self, num_threads: int, old_labels: np.ndarray | None = None) -> None:
        """A fresh graph of the live vectors only, without tombstones.

        old_labels: None keeps every label; else int64 [live count], a permutation of the
        live labels: the vector of old_labels[i] gets label i (dense relabelling).
        """
        live = self.live_labels()
        if old_labels is None:
            old_labels, new_labels = live, live
        else:
            old_labels = np.ascontiguousarray(old_labels, dtype=np.int64)
            if old_labels.size != live.size or not np.array_equal(np.sort(old_labels), live):
                raise InvalidValueError(f"old_labels must be the {live.size} live labels, got {old_labels.size} labels")
            new_labels = np.arange(live.size, dtype=np.int64)
        vectors = self.vectors(old_labels)
        index = self._new_index(max(INITIAL_CAPACITY, 2 * live.size))
        if live.size:
            index.add_items(vectors, new_labels, num_threads=num_threads)
        size = max(INITIAL_CAPACITY, int(new_labels.max(initial=-1)) + 1)
        mask = np.zeros(size, dtype=bool)
        mask[new_labels] = True
        stored = np.zeros((size, self.dim), dtype=np.float32)
        stored[new_labels] = vectors
        self._index, self._live_mask, self._vectors = index, mask, stored
        self._removed_labels = set()

    def _ensure_capacity(self, needed: int) -> None:
        capacity = self.capacity
        if needed > capacity:
            self._index.resize_index(max(2 * capacity, needed))

    def _grow_arrays(self, size: int) -> None:
        """The live mask and the vector copy cover labels < size (doubling)."""
        if size > self._live_mask.size:
            new_size = max(size, 2 * self._live_mask.size)
            grown = np.zeros(new_size, dtype=bool)
            grown[: self._live_mask.size] = self._live_mask
            vectors = np.zeros((new_size, self.dim), dtype=np.float32)
            vectors[: self._vectors.shape[0]] = self._vectors
            self._live_mask, self._vectors = grown, vectors

    def _is_live(self, labels: np.ndarray) -> np.ndarray:
        inside = labels < self._live_mask.size
        out = np.zeros(labels.size, dtype=bool)
        out[inside] = self._live_mask[labels[inside]]
        return out

    # ------------------------------------------------------------------ reads

    def vectors(self, labels: np.ndarray) -> np.ndarray:
        """float32 [n, dim] as stored (unit-norm for metric "cosine"); labels must be live.

        Served from a float32 copy kept beside the graph: hnswlib's get_items converts through
        Python lists (~30 us per 384-d vector), far too slow for exact filtered search.
        """
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        return self._vectors[labels]

    def knn(self, queries: np.ndarray, k: int, ef: int, num_threads: int) -> tuple[np.ndarray, np.ndarray]:
        """Graph search: queries float32 [Q, dim] -> (scores float32 [Q, k], labels int64 [Q, k]).

        Runs an ``max(ef, k)`` search; padded with -inf / -1 past the live count. If the graph
        cannot reach k live nodes (possible with many tombstones), the batch is answered by
        exact search instead, so the result is never short when enough vectors are live.
        """
        nq = queries.shape[0]
        if self._live == 0 or nq == 0:
            return np.full((nq, k), -np.inf, dtype=np.float32), np.full((nq, k), -1, dtype=np.int64)
        want = min(max(ef, k), self._live)
        try:
            found, distances = self._index.knn_query(queries, k=want, num_threads=num_threads)
        except RuntimeError:
            return self.exact(queries, self.live_labels(), k, num_threads)
        if want >= k:  # the usual case: no padding
            return self._to_scores(distances[:, :k]), found[:, :k].view(np.int64)
        scores = np.full((nq, k), -np.inf, dtype=np.float32)
        labels = np.full((nq, k), -1, dtype=np.int64)
        labels[:, :want] = found.view(np.int64)
        scores[:, :want] = self._to_scores(distances)
        return scores, labels

    def knn_all(self, queries: np.ndarray, want: int, num_threads: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The ``want`` best labels per query from one graph search -> (scores, labels)
        [Q, want] best first, or None when the graph could not reach that many live nodes."""
        want = min(want, self._live)
        try:
            found, distances = self._index.knn_query(queries, k=want, num_threads=num_threads)
        except RuntimeError:
            return None
        return self._to_scores(distances), found.view(np.int64)

    def _to_scores(self, distances: np.ndarray) -> np.ndarray:
        if self.metric == "l2":
            scores = np.negative(distances, dtype=np.float32)
        else:
            scores = np.subtract(np.float32(1.0), distances, dtype=np.float32)
        _check_finite(scores)
        return scores

    def exact(self, queries: np.ndarray, labels: np.ndarray, k: int, num_threads: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k over the given live labels -> (scores float32 [Q, k], labels int64 [Q, k]),
        padded with -inf / -1 when fewer than k labels are given."""
        nq = queries.shape[0]
        scores = np.full((nq, k), -np.inf, dtype=np.float32)
        out = np.full((nq, k), -1, dtype=np.int64)
        if labels.size == 0 or nq == 0:
            return scores, out
        k_run = min(k, labels.size)
        if self.metric != "l2":
            # The kernel reads only the allowed rows of the copy (in place, or gathered first).
            q = _unit_rows(queries) if self.metric == "cosine" else queries
            mask = np.zeros(self._vectors.shape[0], dtype=bool)
            mask[labels] = True
            top_scores, rows = topk_float32(q, self._vectors, k_run, allow=mask, num_threads=num_threads)
            scores[:, :k_run] = top_scores
            out[:, :k_run] = rows
            return scores, out
        # -|q - x|^2 = 2 (q . x - |x|^2 / 2) - |q|^2: an inner product on one extra column.
        base = self.vectors(labels)
        with np.errstate(over="ignore", invalid="ignore"):
            base = np.hstack([base, -0.5 * np.einsum("ij,ij->i", base, base)[:, None]]).astype(np.float32)
        if not np.isfinite(base).all():
            raise InvalidValueError("scores overflowed float32: base values are too large")
        q = np.hstack([queries, np.ones((nq, 1), dtype=np.float32)])
        top_scores, rows = topk_float32(q, base, k_run, num_threads=num_threads)
        with np.errstate(over="ignore", invalid="ignore"):
            top_scores = 2 * top_scores - np.einsum("ij,ij->i", queries, queries)[:, None]
        _check_finite(np.where(rows >= 0, top_scores, 0))
        scores[:, :k_run] = top_scores
        out[:, :k_run] = labels[rows]
        return scores, out

    # ------------------------------------------------------------------ persistence

    def save(self, graph_path: Path, labels_path: Path) -> None:
        """The hnswlib graph file and the live labels (int64 .npy)."""
        self._index.save_index(str(graph_path))
        with open(labels_path, "wb") as f:
            np.save(f, self.live_labels(), allow_pickle=False)

    @classmethod
    def load(cls, graph_path: Path, labels_path: Path, dim: int, metric: str, M: int,
             ef_construction: int, max_label: int) -> HnswGraph:
        """Inverse of :meth:`save`. ValueError when the two files disagree or the graph file is
        not one :meth:`save` could have written (checked before hnswlib reads it: hnswlib trusts
        its file and a crafted one would crash the process). Labels must be < max_label."""
        graph = cls.__new__(cls)
        graph.dim, graph.metric, graph.M, graph.ef_construction = int(dim), metric, int(M), int(ef_construction)
        if metric not in METRICS:
            raise InvalidValueError(f"metric must be one of {METRICS}, got {metric!r}")
        live = np.load(labels_path, allow_pickle=False)
        if live.dtype != np.int64 or live.ndim != 1:
            raise InvalidValueError(f"{labels_path.name}: expected int64 [n] labels, got {live.dtype} {live.shape}")
        check_graph_file(graph_path, graph.dim, graph.M, live, max_label, metric)
        index = hnswlib.Index(space=metric, dim=int(dim))
        index.load_index(str(graph_path), max_elements=0, allow_replace_deleted=True)
        index.set_ef(1)
        graph._index = index
        present = np.asarray(index.get_ids_list(), dtype=np.int64)
        if live.size > index.element_count or not np.isin(live, present).all():
            raise InvalidValueError(f"{labels_path.name} lists labels that {graph_path.name} does not hold")
        size = int(max(present.max(initial=-1), live.max(initial=-1))) + 1
        graph._live_mask = np.zeros(size, dtype=bool)
        graph._live_mask[live] = True
        graph._vectors = np.zeros((size, graph.dim), dtype=np.float32)
        node_labels, node_vectors = _stored_vectors(index, graph.dim)
        graph._vectors[node_labels] = node_vectors
        graph._live = int(live.size)
        graph._removed_labels = set(np.setdiff1d(present, live).tolist())
        return graph


def _stored_vectors(index: hnswlib.Index, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels int64 [nodes], vectors float32 [nodes, dim]) of every node, read in one copy of
    hnswlib's level-0 block (its pickle state), where each node is [links | vector | label]."""
    state = index.__getstate__()[0]
    nodes, width = int(state["cur_element_count"]), int(state["size_data_per_element"])
    block = np.asarray(state["data_level0"]).view(np.uint8)[: nodes * width].reshape(nodes, width)
    at, label_at = int(state["offset_data"]), int(state["label_offset"])
    if label_at - at != 4 * dim:
        raise InvalidValueError(f"the graph file holds {(label_at - at) // 4}-dimensional vectors, expected {dim}")
    vectors = np.ascontiguousarray(block[:, at:at + 4 * dim]).view(np.float32)
    labels = np.ascontiguousarray(block[:, label_at:label_at + 8]).view(np.uint64).ravel().astype(np.int64)
    return labels, vectors


def _check_finite(scores: np.ndarray) -> None:
    """Raises like FlatIndex when a score overflowed float32 (inf) or is NaN."""
    if not np.isfinite(scores).all():
        raise InvalidValueError("scores overflowed float32: vectors or queries values are too large")


# hnswlib 0.8's file (HierarchicalNSW::saveIndex): a header of size_t fields (and one int, one
# uint32, one double), the level-0 block [cur_element_count, size_data_per_element], then per
# element a uint32 byte count and that many bytes of upper-level link lists.
_HEADER = struct.Struct("<QQQQQQiIQQQdQ")
_DELETE_MARK = 0x01  # bit of the third byte of a level-0 link header
_NO_NODE = 0xFFFFFFFF  # the entry point of an empty graph
_MAX_LEVEL = 64  # levels are -log(U) / log(M) with U from a 32-bit generator: far below this


def check_graph_file(path: Path, dim: int, M: int, live: np.ndarray, max_label: int, metric: str) -> None:
    """Checks an hnswlib graph file's structure before hnswlib reads it: header fields against
    (dim, M), every neighbour id, link count, level and the entry point, labels (unique,
    < max_label), the tombstone marks against `live` (int64 [n] live labels) and finite
    vectors. InvalidValueError naming the first problem."""
    data = np.fromfile(path, dtype=np.uint8)
    name = path.name

    def bad(what: str) -> InvalidValueError:
        return InvalidValueError(f"{name}: {what} (not a graph embedrank wrote, or damaged)")

    if data.size < _HEADER.size:
        raise bad(f"{data.size} bytes, shorter than the header")
    (offset_level0, max_elements, count, size_per_element, label_offset, offset_data, max_level, entry,
     max_m, max_m0, m, mult, ef_construction) = _HEADER.unpack_from(data, 0)
    links0 = 4 + 4 * max_m0
    expected = {"offsetLevel0": (offset_level0, 0), "M": (m, M), "maxM": (max_m, M), "maxM0": (max_m0, 2 * M),
                "offsetData": (offset_data, links0), "label_offset": (label_offset, links0 + 4 * dim),
                "size_data_per_element": (size_per_element, links0 + 4 * dim + 8)}
    for field, (found, want) in expected.items():
        if found != want:
            raise bad(f"header field {field} is {found}, expected {want}")
    if not (math.isfinite(mult) and abs(mult - 1 / math.log(M)) <= 1e-9 * (1 / math.log(M))):
        raise bad(f"header field mult is {mult}, expected 1/ln(M)")
    if not 1 <= ef_construction <= 1 << 31:
        raise bad(f"header field ef_construction is {ef_construction}")
    level0_end = _HEADER.size + count * size_per_element
    if count > (data.size - _HEADER.size) // (size_per_element + 4) or level0_end > data.size:
        raise bad(f"{count} elements do not fit in {data.size} bytes")
    if max_elements < count or max_elements > max(1024, 4 * count):
        raise bad(f"capacity {max_elements} for {count} elements")
    block = data[_HEADER.size:level0_end].reshape(count, size_per_element)
    header = np.ascontiguousarray(block[:, :4])
    n_links = header[:, :2].copy().view(np.uint16).ravel()
    if count and int(n_links.max()) > max_m0:
        raise bad(f"element {int(np.argmax(n_links))} has {int(n_links.max())} level-0 links, above maxM0={max_m0}")
    neighbours = np.ascontiguousarray(block[:, 4:links0]).view(np.uint32).reshape(count, max_m0)
    used = np.arange(max_m0)[None, :] < n_links[:, None]
    if used.any() and int(neighbours[used].max()) >= count:
        raise bad(f"a level-0 neighbour id {int(neighbours[used].max())} is out of range (elements: {count})")
    labels = np.ascontiguousarray(block[:, label_offset:label_offset + 8]).view(np.uint64).ravel()
    if count and int(labels.max()) >= max_label:
        raise bad(f"label {int(labels.max())} is out of range (at most {max_label - 1})")
    if np.unique(labels).size != count:
        raise bad("two elements share a label")
    deleted = (header[:, 2] & _DELETE_MARK).astype(bool)
    live_set = np.zeros(max(max_label, 1), dtype=bool)
    if live.size:
        if int(live.min()) < 0 or int(live.max()) >= max_label:
            raise bad("the live labels are out of range")
        live_set[live] = True
    if not np.array_equal(~deleted, live_set[labels.astype(np.int64)]) or int((~deleted).sum()) != live.size:
        raise bad("the tombstone marks do not match the live labels")
    if metric != "cosine":
        vectors = np.ascontiguousarray(block[:, offset_data:label_offset]).view(np.float32)
        if not np.isfinite(vectors).all():
            raise bad("a stored vector holds NaN or Inf")
    # Upper levels: a variable-length record per element, so a walk.
    links = 4 + 4 * max_m
    levels = np.zeros(count, dtype=np.int64)
    at = level0_end
    raw = data.tobytes() if count else b""
    for element in range(count):
        if at + 4 > data.size:
            raise bad("truncated upper-level link lists")
        (size,) = struct.unpack_from("<I", raw, at)
        at += 4
        if size:
            if size % links or size // links > _MAX_LEVEL or at + size > data.size:
                raise bad(f"element {element} has an upper-level block of {size} bytes")
            level_block = np.frombuffer(raw, dtype=np.uint32, count=size // 4, offset=at).reshape(-1, max_m + 1)
            counts = level_block[:, 0] & 0xFFFF
            if int(counts.max()) > max_m:
                raise bad(f"element {element} has {int(counts.max())} upper-level links, above maxM={max_m}")
            ids = level_block[:, 1:][np.arange(max_m)[None, :] < counts[:, None]]
            if ids.size and int(ids.max()) >= count:
                raise bad(f"element {element} has an upper-level neighbour id {int(ids.max())} out of range")
            levels[element] = size // links
            at += size
    if at != data.size:
        raise bad(f"{data.size - at} bytes after the last element")
    if count == 0:
        if entry != _NO_NODE or max_level != -1:
            raise bad(f"an empty graph with entry point {entry} and max level {max_level}")
        return
    if entry >= count:
        raise bad(f"entry point {entry} is out of range (elements: {count})")
    if max_level != int(levels.max()) or levels[entry] != max_level:
        raise bad(f"max level {max_level} and entry point {entry} (level {int(levels[entry])}) do not match the "
                  f"elements' levels (highest: {int(levels.max())})")


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, np.float32(1e-30)), dtype=np.float32)
