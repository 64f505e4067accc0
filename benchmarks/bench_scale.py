"""Millions of vectors on one node: a streamed FlatIndex cascade against faiss and usearch, and HNSW.

    python benchmarks/bench_scale.py --sizes 1M,3M,10M --hnsw-sizes 1M,3M --workdir /big/disk
    python benchmarks/bench_scale.py --sizes 200k --hnsw-sizes 200k --queries 50    # quick look

For each size N (synthetic clustered 384-d vectors, embedrank.bench.datasets.ClusterMixture,
generated on the fly in seeded chunks, never all in RAM):

1. Build: ``FlatIndex(384, "binary", "int8+float32", on_disk=("float32",))`` fed chunk by
   chunk (sign bits and int8 codes in RAM, float32 originals in a scratch file); the exact
   float32 top 10 of the held-out queries is kept up to date chunk by chunk (numpy matmul),
   so the ground truth needs no second pass. Then ``save`` (timed; disk bytes reported).
2. Query, in a fresh process (so RSS is the index's own): ``load_index(path,
   mmap=("float32",))`` (timed, checksums verified), RSS after load and after warm-up, then
   single-query p50/p99 latency and recall@10 for binary -> int8 -> float32 and binary ->
   float32 cascades at several oversampling factors; beside them, at the same memory (the
   same sign bits in RAM, the same memory-mapped originals): faiss ``IndexBinaryFlat`` and
   usearch's exact Hamming search, each followed by numpy float32 rescoring of their
   candidates (the recipe their documentation gives for binary + rescoring).
3. HNSW (embedrank's HNSWIndex over hnswlib, M=16, ef_construction=100) for the sizes in
   --hnsw-sizes: build time, memory, and QPS at the smallest ef with recall@10 >= 0.95.

Writes benchmarks/results/scale.{json,md} and scale.png (latency and memory against N).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from embedrank.bench.datasets import ClusterMixture

DIM = 384
CLUSTERS = 1024
SEED = 7
K = 10
CHUNK = 100_000
RESULTS = Path(__file__).resolve().parent / "results"
# (label, rescore, oversample, refine): candidates k*oversample from the bits, k*refine after int8
CASCADES = [("binary>int8>float32", "int8+float32", 30, 4), ("binary>int8>float32", "int8+float32", 100, 4),
            ("binary>int8>float32", "int8+float32", 300, 4), ("binary>int8>float32", "int8+float32", 1000, 4),
            ("binary>int8>float32", "int8+float32", 1000, 10), ("binary>float32", "float32", 100, None),
            ("binary>float32", "float32", 300, None)]
PEER_OVERSAMPLE = {"faiss IndexBinaryFlat": (100, 300, 1000), "usearch exact hamming": (300,)}  # usearch: ~1 s a query at 10M


def parse_size(text: str) -> int:
    text = text.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def chunks(n: int, mixture: ClusterMixture):
    for number, start in enumerate(range(0, n, CHUNK)):
        yield mixture.sample(min(CHUNK, n - start), np.random.default_rng([SEED, 0, number]))


def queries_of(n_queries: int, mixture: ClusterMixture) -> np.ndarray:
    return mixture.sample(n_queries, np.random.default_rng([SEED, 1]))


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# -- 1. build ----------------------------------------------------------------------------------
def build(n: int, n_queries: int, workdir: Path) -> dict:
    from embedrank.index import FlatIndex

    mixture = ClusterMixture(DIM, CLUSTERS, SEED)
    queries = queries_of(n_queries, mixture)
    best_scores = np.full((n_queries, K), -np.inf, dtype=np.float32)
    best_ids = np.full((n_queries, K), -1, dtype=np.int64)
    scratch = workdir / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    index = FlatIndex(DIM, "binary", "int8+float32", on_disk=("float32",), scratch_dir=scratch)
    add_s = generate_s = truth_s = 0.0
    offset = 0
    source = chunks(n, mixture)
    while True:
        t0 = time.perf_counter()
        chunk = next(source, None)
        t1 = time.perf_counter()
        generate_s += t1 - t0
        if chunk is None:
            break
        index.add(chunk)
        t2 = time.perf_counter()
        add_s += t2 - t1
        scores = queries @ chunk.T  # exact ground truth, merged chunk by chunk
        top = np.argpartition(-scores, min(K, scores.shape[1] - 1), axis=1)[:, :K]
        merged_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, axis=1)], axis=1)
        merged_ids = np.concatenate([best_ids, top + offset], axis=1)
        order = np.lexsort((merged_ids, -merged_scores), axis=1)[:, :K]
        best_scores = np.take_along_axis(merged_scores, order, axis=1)
        best_ids = np.take_along_axis(merged_ids, order, axis=1)
        offset += chunk.shape[0]
        truth_s += time.perf_counter() - t2
    build_rss = rss_bytes()
    path = workdir / f"flat-{n}"
    if path.exists():
        shutil.rmtree(path)
    t0 = time.perf_counter()
    index.save(path)
    save_s = time.perf_counter() - t0
    del index
    gc.collect()
    np.save(workdir / f"truth-{n}.npy", best_ids)
    np.save(workdir / f"queries-{n}.npy", queries)
    stats = {"n": n, "build_s": add_s, "generate_s": generate_s, "truth_s": truth_s, "save_s": save_s,
            "build_docs_per_s": n / add_s, "rss_while_building_bytes": build_rss, "disk_bytes": dir_bytes(path),
            "files": {p.name: p.stat().st_size for p in path.iterdir() if p.is_file()}}
    (workdir / f"build-{n}.json").write_text(json.dumps(stats), encoding="utf-8")
    return stats


# -- 2. query (run in a fresh process) -----------------------------------------------------------
def latencies(fn, queries: np.ndarray) -> np.ndarray:
    fn(queries[:1])  # page in the code path
    out = np.empty(len(queries))
    for i in range(len(queries)):
        start = time.perf_counter()
        fn(queries[i:i + 1])
        out[i] = time.perf_counter() - start
    return out


def summary(seconds: np.ndarray, found: np.ndarray, truth: np.ndarray) -> dict:
    recall = np.mean([len(set(f.tolist()) & set(t.tolist())) / K for f, t in zip(found, truth)])
    return {"p50_ms": float(np.percentile(seconds, 50) * 1e3), "p99_ms": float(np.percentile(seconds, 99) * 1e3),
            "mean_ms": float(seconds.mean() * 1e3), "recall_at_10": float(recall)}


def query(n: int, workdir: Path, threads: int, peers: bool) -> dict:
    from embedrank.index import load_index

    path = workdir / f"flat-{n}"
    truth = np.load(workdir / f"truth-{n}.npy")
    queries = np.load(workdir / f"queries-{n}.npy")
    rss_start = rss_bytes()
    t0 = time.perf_counter()
    index = load_index(path, mmap=("float32",))
    load_s = time.perf_counter() - t0
    index.num_threads = threads
    rss_loaded = rss_bytes()
    rows = []
    for label, how, oversample, refine in CASCADES:
        params = {"rescore": how, "oversample": oversample} | ({"refine": refine} if refine else {})
        found = np.empty((len(queries), K), dtype=np.int64)

        def one(q, params=params):
            found[one.i] = index.search(q, K, **params).ids[0]
            one.i += 1

        one.i = -1  # the warm-up call fills row -1, overwritten by the last query
        seconds = latencies(one, queries)
        rows.append({"system": "embedrank FlatIndex", "cascade": label, "oversample": oversample, "refine": refine}
                    | summary(seconds, found, truth) | {"rss_after_bytes": rss_bytes()})
    rss_warm = rss_bytes()
    result = {"n": n, "load_s": load_s, "rss_before_load_bytes": rss_start, "rss_after_load_bytes": rss_loaded,
              "rss_after_queries_bytes": rss_warm, "rows": rows, "threads": threads}
    if peers:
        result["peers"] = peer_rows(index, queries, truth, threads)
        result["rss_after_peers_bytes"] = rss_bytes()
    return result


def float32_rescore(originals: np.ndarray, query_row: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """numpy: the k best candidates by exact inner product (sorted candidate ids read the file in order)."""
    candidates = np.sort(candidates[candidates >= 0])
    scores = originals[candidates] @ query_row
    return candidates[np.argsort(-scores, kind="stable")[:K]]


def peer_rows(index, queries: np.ndarray, truth: np.ndarray, threads: int) -> list[dict]:
    """faiss IndexBinaryFlat and usearch exact Hamming search over the same bits, then numpy
    float32 rescoring from the same memory-mapped originals."""
    import faiss
    from usearch.index import MetricKind, search as usearch_search

    bits = np.ascontiguousarray(index._bits[: len(index)])
    originals = index._f32
    query_bits = np.packbits(queries > 0, axis=1)
    faiss.omp_set_num_threads(threads)
    flat = faiss.IndexBinaryFlat(DIM)
    flat.add(bits)
    rows = []
    for oversample in sorted({o for values in PEER_OVERSAMPLE.values() for o in values}):
        pool = K * oversample
        for name, first_pass in (
                ("faiss IndexBinaryFlat", lambda qb: flat.search(qb, pool)[1][0]),
                ("usearch exact hamming", lambda qb: usearch_search(bits, qb, pool, MetricKind.Hamming, exact=True,
                                                                   threads=threads).keys.reshape(-1))):
            if oversample not in PEER_OVERSAMPLE[name]:
                continue
            found = np.empty((len(queries), K), dtype=np.int64)

            def one(q, first_pass=first_pass):
                i = one.i
                candidates = first_pass(query_bits[max(i, 0):max(i, 0) + 1]).astype(np.int64)
                got = float32_rescore(originals, q[0], candidates)
                found[i, :len(got)] = got
                one.i += 1

            one.i = -1
            seconds = latencies(one, queries)
            rows.append({"system": name, "cascade": "binary>float32 (numpy rescoring)", "oversample": oversample,
                         "refine": None} | summary(seconds, found, truth) | {"rss_after_bytes": rss_bytes()})
    del flat
    return rows


# -- 3. HNSW ------------------------------------------------------------------------------------
def hnsw(n: int, n_queries: int, threads: int) -> dict:
    from embedrank.index import HNSWIndex

    mixture = ClusterMixture(DIM, CLUSTERS, SEED)
    queries = queries_of(n_queries, mixture)
    rss_start = rss_bytes()
    index = HNSWIndex(DIM, M=16, ef_construction=100, num_threads=threads)
    build_s = 0.0
    truth_scores, truth_ids = None, None
    offset = 0
    for chunk in chunks(n, mixture):
        t0 = time.perf_counter()
        index.add(chunk)
        build_s += time.perf_counter() - t0
        scores = queries @ chunk.T
        ids = np.broadcast_to(np.arange(offset, offset + chunk.shape[0]), scores.shape)
        if truth_scores is not None:
            scores, ids = np.concatenate([truth_scores, scores], 1), np.concatenate([truth_ids, ids], 1)
        top = np.argsort(-scores, axis=1, kind="stable")[:, :K]
        truth_scores, truth_ids = np.take_along_axis(scores, top, 1), np.take_along_axis(ids, top, 1)
        offset += chunk.shape[0]
    rss_built = rss_bytes()
    rows = []
    for ef in (16, 32, 64, 128, 256, 512):
        found = index.search(queries, K, ef=max(ef, K)).ids
        recall = np.mean([len(set(f.tolist()) & set(t.tolist())) / K for f, t in zip(found, truth_ids)])
        start = time.perf_counter()
        for i in range(len(queries)):
            index.search(queries[i:i + 1], K, ef=max(ef, K))
        qps = len(queries) / (time.perf_counter() - start)
        rows.append({"ef": ef, "recall_at_10": float(recall), "qps_single_query": qps})
        if recall >= 0.99:
            break
    at = next((r for r in rows if r["recall_at_10"] >= 0.95), None)
    return {"n": n, "build_s": build_s, "build_docs_per_s": n / build_s, "rss_bytes": rss_built - rss_start,
            "rows": rows, "at_recall_0.95": at}


# -- report ---------------------------------------------------------------------------------------
def gib(b: float) -> str:
    return f"{b / 2**30:.2f}"


def write_report(data: dict) -> None:
    lines = ["# Millions of vectors on one node", "",
             f"CPU: {data['cpu']}, {data['cores']} cores; {data['threads']} search threads. Synthetic clustered "
             f"{DIM}-d vectors ({CLUSTERS} clusters, generated in seeded chunks of {CHUNK:,}); {data['queries']} "
             f"held-out queries, one per call; recall@10 against exact float32 search over all N.", "",
             "## Build (streamed) and load", "",
             "| N | build s | docs/s | save s | disk GiB | RSS building GiB | load s (checksums) | RSS loaded GiB | RSS after queries GiB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for size in data["sizes"]:
        b, q = size["build"], size["query"]
        lines.append(f"| {b['n']:,} | {b['build_s']:.1f} | {b['build_docs_per_s']:,.0f} | {b['save_s']:.1f} | "
                     f"{gib(b['disk_bytes'])} | {gib(b['rss_while_building_bytes'])} | {q['load_s']:.1f} | "
                     f"{gib(q['rss_after_load_bytes'])} | {gib(q['rss_after_queries_bytes'])} |")
    lines += ["", "## Single-query latency and recall", "",
              "RSS: the query process's resident memory after that row's 200 queries (rows run top to bottom; mapped "
              "pages of the float32 file that a row read count from then on).", "",
              "| N | system | cascade | oversample | refine | p50 ms | p99 ms | recall@10 | RSS GiB |",
              "|---|---|---|---|---|---|---|---|---|"]
    for size in data["sizes"]:
        q = size["query"]
        for r in q["rows"] + q.get("peers", []):
            lines.append(f"| {q['n']:,} | {r['system']} | {r['cascade']} | {r['oversample']} | {r['refine'] or ''} | "
                         f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['recall_at_10']:.4f} | "
                         f"{gib(r['rss_after_bytes']) if 'rss_after_bytes' in r else ''} |")
    if data.get("hnsw"):
        lines += ["", "## HNSW (embedrank HNSWIndex over hnswlib, M=16, ef_construction=100)", "",
                  "| N | build s | docs/s | memory GiB | ef at recall >= 0.95 | recall@10 | QPS (1 query per call) |",
                  "|---|---|---|---|---|---|---|"]
        for h in data["hnsw"]:
            at = h["at_recall_0.95"] or {}
            lines.append(f"| {h['n']:,} | {h['build_s']:.0f} | {h['build_docs_per_s']:,.0f} | {gib(h['rss_bytes'])} | "
                         f"{at.get('ef', 'not reached')} | {at.get('recall_at_10', float('nan')):.4f} | "
                         f"{at.get('qps_single_query', float('nan')):.0f} |")
    lines += ["", "Targets at 10M x 384: p99 <= 100 ms at recall@10 >= 0.99 with RSS <= 8 GiB.", "",
              "    " + data["command"], ""]
    (RESULTS / "scale.md").write_text("\n".join(lines), encoding="utf-8")


def plot(data: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = data["sizes"]
    ns = [s["build"]["n"] for s in sizes]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    labels = sorted({(r["system"], r["cascade"], r["oversample"], r["refine"]) for s in sizes
                     for r in s["query"]["rows"] + s["query"].get("peers", [])}, key=str)
    for label in labels:
        points = [(s["build"]["n"], r["p99_ms"]) for s in sizes for r in s["query"]["rows"] + s["query"].get("peers", [])
                  if (r["system"], r["cascade"], r["oversample"], r["refine"]) == label]
        if label[2] == 100 and label[3] in (None, 4):
            left.plot(*zip(*points), marker="o", label=f"{label[0]}, {label[1]}, x{label[2]}")
    left.axhline(100, color="grey", linestyle=":")
    left.set(xscale="log", yscale="log", xlabel="N vectors", ylabel="p99 ms (1 query)", title="Latency")
    left.legend(fontsize=7)
    right.plot(ns, [s["query"]["rss_after_queries_bytes"] / 2**30 for s in sizes], marker="o", label="RSS after queries")
    right.plot(ns, [s["build"]["disk_bytes"] / 2**30 for s in sizes], marker="s", label="index on disk")
    right.axhline(8, color="grey", linestyle=":")
    right.set(xscale="log", yscale="log", xlabel="N vectors", ylabel="GiB", title="Memory and disk")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / "scale.png", dpi=110)


def data_from_log(log: Path, command: str, threads: int, queries: int) -> dict:
    """The results dict rebuilt from the JSON lines a run printed to stderr (a run stopped
    part-way, or run in pieces: later lines for the same N replace earlier ones)."""
    sizes, builds, hnsw_runs = {}, {}, {}
    for line in log.read_text(encoding="utf-8").splitlines():
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        if "load_s" in record:
            sizes[record["n"]] = record
        elif "build_s" in record and "files" in record:
            builds[record["n"]] = record
        elif "at_recall_0.95" in record:
            hnsw_runs[record["n"]] = record
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": threads, "queries": queries, "command": command,
            "sizes": [{"build": builds[n], "query": sizes[n]} for n in sorted(sizes) if n in builds],
            "hnsw": [hnsw_runs[n] for n in sorted(hnsw_runs)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1M,3M,10M")
    parser.add_argument("--hnsw-sizes", default="1M,3M")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/embedrank-scale"))
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the index folders")
    parser.add_argument("--reuse", action="store_true",
                        help="query an index folder already in --workdir (with its build-N.json) instead of building")
    parser.add_argument("--report-from", type=Path, nargs="+",
                        help="write the report from the stderr logs of earlier runs instead of running")
    parser.add_argument("--query-phase", type=int, help=argparse.SUPPRESS)  # internal: the fresh process of step 2
    args = parser.parse_args()
    if args.query_phase:
        print(json.dumps(query(args.query_phase, args.workdir, args.threads, not args.no_peers)))
        return
    if args.report_from:
        merged = Path(args.workdir) / "merged.log"
        args.workdir.mkdir(parents=True, exist_ok=True)
        merged.write_text("\n".join(p.read_text(encoding="utf-8") for p in args.report_from), encoding="utf-8")
        data = data_from_log(merged, "python benchmarks/bench_scale.py " + " ".join(sys.argv[1:]), args.threads,
                             args.queries)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "scale.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
        write_report(data)
        plot(data)
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    data = {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": args.threads, "queries": args.queries,
            "command": "python benchmarks/bench_scale.py " + " ".join(sys.argv[1:]), "sizes": [], "hnsw": []}
    for n in [parse_size(s) for s in args.sizes.split(",") if s]:
        print(f"building {n:,}", file=sys.stderr, flush=True)
        reuse = args.workdir / f"build-{n}.json"
        if args.reuse and reuse.exists() and (args.workdir / f"flat-{n}").is_dir():
            built = json.loads(reuse.read_text(encoding="utf-8"))
        else:
            built = build(n, args.queries, args.workdir)
        print(json.dumps(built), file=sys.stderr, flush=True)
        child = subprocess.run([sys.executable, __file__, "--query-phase", str(n), "--workdir", str(args.workdir),
                                "--threads", str(args.threads)] + (["--no-peers"] if args.no_peers else []),
                               capture_output=True, text=True, check=True)
        measured = json.loads(child.stdout.strip().splitlines()[-1])
        print(json.dumps(measured), file=sys.stderr, flush=True)
        data["sizes"].append({"build": built, "query": measured})
        if not args.keep:
            shutil.rmtree(args.workdir / f"flat-{n}")
    for n in [parse_size(s) for s in args.hnsw_sizes.split(",") if s]:
        print(f"hnsw {n:,}", file=sys.stderr, flush=True)
        data["hnsw"].append(hnsw(n, args.queries, args.threads))
        print(json.dumps(data["hnsw"][-1]), file=sys.stderr, flush=True)
        gc.collect()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scale.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    write_report(data)
    plot(data)


if __name__ == "__main__":
    main()
