"""Print the machine facts and peer timings that the kernel benchmarks are read against.

    python benchmarks/report_peers.py            # everything, ~4 min on 2 cores
    python benchmarks/report_peers.py --quick    # 20k base rows, fewer repeats
    python benchmarks/report_peers.py --sections machine,faiss-cores

Sections: machine (CPU flags, BLAS cores, read bandwidth), clustered (peers on synthetic
100k x 384), binary (Hamming peers on sign bits of it), glove (peers on GloVe 400k x 50),
faiss-cores (faiss IndexFlatIP under each OPENBLAS_CORETYPE, one subprocess each, since
OpenBLAS reads the variable only when it is loaded).
Times are wall clock; "best" is the minimum and "median" the median of the repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from embedrank.bench import peers  # first: sets OPENBLAS_CORETYPE before anything loads faiss  # isort: skip
from embedrank.bench import datasets  # isort: skip
import numpy as np  # isort: skip

ALL_SECTIONS = ("machine", "clustered", "binary", "glove", "faiss-cores")
# "" = leave OpenBLAS to detect the CPU (an empty value is ignored by OpenBLAS).
FAISS_CORE_CHOICES = ("", "SKYLAKEX", "HASWELL")
# Peers without batched kernels (per-query cost is flat): time their batch on fewer
# queries to keep the report short; q/s stays comparable.
SLOW_PEER_BATCH_QUERIES = {"usearch": 200, "usearch-binary": 200}


def time_call(fn, repeats: int, budget_s: float = 3.0) -> tuple[float, float]:
    """Run fn once to warm up, then up to ``repeats`` times -> (best_s, median_s).

    Slow calls get fewer repeats so one peer stays within about ``budget_s`` (a warm-up
    slower than that is the only measurement).
    """
    start = time.perf_counter()
    fn()
    warm_up = time.perf_counter() - start
    repeats = min(repeats, int(budget_s / max(warm_up, 1e-9)))
    if repeats < 1:
        return warm_up, warm_up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def per_query_seconds(peer, queries: np.ndarray, k: int, budget_s: float = 2.0) -> tuple[float, float, int]:
    """Search queries one at a time (at most about budget_s, at least 10 queries)
    -> (best, median seconds per query, queries timed)."""
    peer.search(queries[:1], k)
    times = []
    spent = 0.0
    for row in queries:
        start = time.perf_counter()
        peer.search(row[None, :], k)
        times.append(time.perf_counter() - start)
        spent += times[-1]
        if spent > budget_s and len(times) >= 10:
            break
    return min(times), statistics.median(times), len(times)


def overlap_at_k(ids: np.ndarray, reference_ids: np.ndarray) -> float:
    """Mean fraction of each row's ids also in the reference row (ties make <1 possible)."""
    return float(
        np.mean([len(np.intersect1d(a, b)) / len(b) for a, b in zip(ids, reference_ids, strict=True)])
    )


def run_peers(title, peer_classes, base, queries, k, repeats, single_queries, bytes_per_row, bandwidth):
    """Time build, batch search and single-query search of each peer; check against the first."""
    print(f"\n== {title}: base {base.shape} {base.dtype}, queries {queries.shape}, k={k}")
    scanned = base.shape[0] * bytes_per_row
    # A plain read of the same footprint, repeated: as cache-resident as the base will be.
    same_size_bw = peers.memory_bandwidth_gbps(threads=1, size_bytes=max(scanned, 1 << 20), repeats=20)
    print(
        f"  1-thread read bandwidth of a {scanned / 1e6:.0f} MB array (same footprint): {same_size_bw:.1f} GB/s"
    )
    reference = None
    for name, cls in peer_classes.items():
        for threads in (None, 1):
            peer = cls(threads=threads)
            start = time.perf_counter()
            peer.build(base)
            build_s = time.perf_counter() - start
            batch = queries[: SLOW_PEER_BATCH_QUERIES.get(name, len(queries))]
            scores, ids = peer.search(batch, k)
            if reference is None:
                reference = scores, ids
            n = len(batch)
            score_err = float(np.max(np.abs(scores.astype(np.float64) - reference[0][:n])))
            best, median = time_call(lambda p=peer, b=batch: p.search(b, k), repeats)
            label = f"{name}[threads={threads or 'all'}]"
            print(
                f"  {label:<28} build {build_s * 1e3:7.1f} ms | {n:4d}-query batch best {best * 1e3:8.1f} ms "
                f"median {median * 1e3:8.1f} ms ({n / best:6.0f} q/s) | "
                f"max|score-ref| {score_err:.2g}, id overlap {overlap_at_k(ids, reference[1][:n]):.4f}"
            )
            if threads == 1 and single_queries > 0:
                q_best, q_median, timed = per_query_seconds(peer, queries[:single_queries], k)
                rate = scanned / q_median / 1e9
                print(
                    f"  {'':<28} {timed:3d} single queries: best {q_best * 1e6:7.0f} us median {q_median * 1e6:7.0f} us"
                    f" -> {rate:5.1f} GB/s = {rate / same_size_bw:4.0%} of same-footprint read"
                    + (f", {rate / bandwidth:4.0%} of 1 GiB (DRAM) read" if bandwidth else "")
                )


def section_machine(args) -> float | None:
    cpu = peers.cpu_info()
    print("== machine")
    print(
        f"  cpu: {cpu['model_name']} (vendor {cpu['vendor']}, family {cpu['family']} model {cpu['model']}),"
        f" {cpu['usable_cpus']} usable of {cpu['logical_cpus']} logical CPUs"
    )
    print("  flags: " + " ".join(f"{f}={'y' if v else 'n'}" for f, v in cpu["flags"].items()))
    print(f"  recommended OPENBLAS_CORETYPE for faiss: {peers.recommended_openblas_coretype(cpu['flags'])}")
    info = peers.blas_info()
    print(f"  OPENBLAS_CORETYPE in force: {info['OPENBLAS_CORETYPE']!r}")
    for which in ("numpy", "faiss"):
        lib = info[which]
        if lib:
            print(
                f"  {which:<6} BLAS: {lib['internal_api']} {lib['version']} core={lib['architecture']} "
                f"threads={lib['num_threads']} ({lib['threading_layer']}) {os.path.basename(lib['filepath'])}"
            )
    size = (256 << 20) if args.quick else (1 << 30)
    bandwidth = {}
    for threads in range(1, min(2, cpu["usable_cpus"]) + 1):
        bandwidth[threads] = peers.memory_bandwidth_gbps(threads=threads, size_bytes=size)
        print(f"  read bandwidth, {threads} thread(s), {size >> 20} MiB: {bandwidth[threads]:.1f} GB/s")
    return bandwidth.get(1)


def section_clustered(args, bandwidth):
    t = time.perf_counter()
    base = datasets.clustered(n=args.n)
    queries = datasets.clustered_queries(n=args.queries)
    print(
        f"\n  clustered {base.shape} + queries {queries.shape} generated in {time.perf_counter() - t:.1f} s"
    )
    run_peers(
        "clustered float32 IP",
        peers.available_peers(),
        base,
        queries,
        args.k,
        args.repeats,
        args.single,
        base.shape[1] * 4,
        bandwidth,
    )
    return base, queries


def section_binary(args, bandwidth, base=None, queries=None):
    if base is None:
        base, queries = datasets.clustered(n=args.n), datasets.clustered_queries(n=args.queries)
    codes, query_codes = peers.pack_sign_bits(base), peers.pack_sign_bits(queries)
    binary_peers = peers.available_peers(binary=True)
    reference = binary_peers.pop("numpy-hamming")
    # Check the fast peers against the numpy reference on a few queries (it is slow).
    ref_dist, _ = reference().build(codes).search(query_codes[:32], args.k)
    for name, cls in binary_peers.items():
        dist, _ = cls().build(codes).search(query_codes[:32], args.k)
        print(
            f"  {name}: Hamming distances equal numpy reference on 32 queries: {np.array_equal(dist, ref_dist)}"
        )
    run_peers(
        "clustered sign bits, Hamming",
        binary_peers,
        codes,
        query_codes,
        args.k,
        args.repeats,
        args.single,
        codes.shape[1],
        bandwidth,
    )


def section_glove(args, bandwidth):
    t = time.perf_counter()
    vectors = datasets.glove()
    print(
        f"\n  glove() {vectors.shape} {vectors.dtype} C-contiguous={vectors.flags.c_contiguous} "
        f"loaded in {time.perf_counter() - t:.2f} s (cache dir {datasets.bench_cache_dir()})"
    )
    base, queries = datasets.holdout_split(vectors, n=args.queries)
    run_peers(
        "glove 6B 50d (held-out queries)",
        peers.available_peers(),
        base,
        queries,
        args.k,
        args.repeats,
        args.single,
        base.shape[1] * 4,
        bandwidth,
    )


def section_faiss_cores(args):
    print(
        f"\n== faiss IndexFlatIP, {args.queries} queries x {args.n} x 384, k={args.k}, by OPENBLAS_CORETYPE"
    )
    for core in FAISS_CORE_CHOICES:
        env = dict(os.environ, OPENBLAS_CORETYPE=core)
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "--faiss-core-child",
            "--n",
            str(args.n),
            "--queries",
            str(args.queries),
            "--k",
            str(args.k),
            "--repeats",
            str(args.repeats),
        ]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        print(
            f"  OPENBLAS_CORETYPE={core or '(unset)':<9} -> faiss core {result['faiss_core']:<9} "
            f"threads=all best {result['best_s'] * 1e3:7.1f} ms median {result['median_s'] * 1e3:7.1f} ms | "
            f"threads=1 best {result['best_1t_s'] * 1e3:7.1f} ms"
        )


def faiss_core_child(args) -> None:
    """Subprocess body of section_faiss_cores: prints one JSON line."""
    base = datasets.clustered(n=args.n)
    queries = datasets.clustered_queries(n=args.queries)
    peer = peers.FaissFlatIP().build(base)
    best, median = time_call(lambda: peer.search(queries, args.k), args.repeats, budget_s=10.0)
    peer_1t = peers.FaissFlatIP(threads=1).build(base)
    best_1t, _ = time_call(lambda: peer_1t.search(queries, args.k), args.repeats, budget_s=10.0)
    info = peers.blas_info()
    print(
        json.dumps(
            {
                "faiss_core": info["faiss"]["architecture"],
                "best_s": best,
                "median_s": median,
                "best_1t_s": best_1t,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sections", default=",".join(ALL_SECTIONS))
    parser.add_argument("--quick", action="store_true", help="20k base rows, 200 queries, 2 repeats")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--single", type=int, default=200, help="queries timed one at a time")
    parser.add_argument("--faiss-core-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.n, args.queries, args.repeats, args.single = 20_000, 200, 2, 50
    if args.faiss_core_child:
        faiss_core_child(args)
        return
    sections = args.sections.split(",")
    unknown = set(sections) - set(ALL_SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {ALL_SECTIONS}")

    started = time.perf_counter()
    bandwidth = section_machine(args) if "machine" in sections else None
    base = queries = None
    if "clustered" in sections:
        base, queries = section_clustered(args, bandwidth)
    if "binary" in sections:
        section_binary(args, bandwidth, base, queries)
    if "glove" in sections:
        section_glove(args, bandwidth)
    if "faiss-cores" in sections:
        section_faiss_cores(args)
    print(f"\n(total {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
