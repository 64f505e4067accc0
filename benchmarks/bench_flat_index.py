"""FlatIndex against the raw embedrank kernels it wraps, and the cascade's recall and speed.

    flock /tmp/embedrank-cpu.lock python benchmarks/bench_flat_index.py            # 100k x 384 + SciFact
    python benchmarks/bench_flat_index.py --rows 20000 --queries 200               # quick look

For each configuration (float32 exact; int8 with and without float32 rescoring; binary with
float32 / int8 / no rescoring) this times, in one process on the same data and queries:

- ``FlatIndex.search`` (validation, read lock, id mapping, padding included), and
- the same pipeline called directly on the kernels (``topk_float32``; ``topk_int8`` then
  ``rescore``; ``binarize`` + ``topk_hamming`` then ``rescore``),

for a batch of queries and for single queries (where the wrapper's fixed cost shows most),
and reports the wrapper overhead as a ratio, recall@10 against float32 exact search, and the
bytes per vector each configuration keeps. A filtered line (10% of rows allowed through a
metadata dict) is compared with the kernel given the same allow mask. Data: synthetic
clustered 100k x 384 (embedrank.bench.datasets.clustered) and, when present, the real MiniLM
SciFact embeddings in ~/.cache/embedrank/bench/scifact_minilm.npz (written by the encoder
benchmark). Timings: the best of several repeats within a time budget.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from embedrank.bench import datasets
from embedrank.index import FlatIndex
from embedrank.kernels import binarize, rescore, topk_float32, topk_hamming, topk_int8

K = 10
CONFIGS = [("float32", None, 1), ("int8", None, 4), ("int8", "float32", 4), ("binary", None, 10),
           ("binary", "int8", 10), ("binary", "float32", 10)]


def best_time(fn, budget_s: float, min_repeats: int = 3) -> float:
    fn()  # warm up (page-in, caches, thread pool)
    times = []
    end = time.perf_counter() + budget_s
    while len(times) < min_repeats or time.perf_counter() < end:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        if len(times) >= 200:
            break
    return min(times)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found.tolist(), truth.tolist())]))


def raw_pipeline(index: FlatIndex, precision: str, how: str | None, oversample: int):
    """The same search as index.search, written directly against the kernels."""
    n = len(index)
    f32, codes, bits, quantizer = None, None, None, index.quantizer
    if index._f32 is not None:
        f32 = index._f32[:n]
    if index._codes is not None:
        codes = index._codes[:n]
    if index._bits is not None:
        bits = index._bits[:n]

    def run(queries, allow=None):
        pool = K * oversample if how else K
        if precision == "float32":
            return topk_float32(queries, f32, K, allow=allow)
        if precision == "int8":
            scores, rows = topk_int8(queries, codes, quantizer, pool, allow=allow)
        else:
            distances, rows = topk_hamming(binarize(queries), bits, pool, allow=allow)
            scores = index.dim - 2 * distances.astype(np.float32)
        if how == "float32":
            return rescore(queries, f32, rows, K)
        if how == "int8":
            return rescore(queries, (codes, quantizer), rows, K)
        return scores[:, :K], rows[:, :K]

    return run


def bench_dataset(name: str, base: np.ndarray, queries: np.ndarray, budget_s: float) -> list[str]:
    n, dim = base.shape
    truth = topk_float32(queries, base, K)[1]
    rng = np.random.default_rng(0)
    groups = np.where(rng.random(n) < 0.1, "in", "out")
    allowed = groups == "in"
    lines = [f"\n### {name}: {n} x {dim}, {queries.shape[0]} queries, k={K}, threads: all ({os.cpu_count()} cores)\n",
             "| config | recall@10 | batch ms/query: FlatIndex | raw kernels | ratio | single query ms: FlatIndex "
             "| raw | ratio | filtered 10% batch ms/query: FlatIndex | raw | bytes/vector |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for precision, how, oversample in CONFIGS:
        index = FlatIndex(dim, precision, how, oversample=oversample)
        index.add(base, metadata=[{"g": g} for g in groups.tolist()])
        raw = raw_pipeline(index, precision, how, oversample)
        found = index.search(queries, K).ids
        raw_ids = raw(queries)[1]
        if not np.array_equal(found, raw_ids):
            raise AssertionError(f"{precision}/{how}: FlatIndex and the raw kernels disagree")
        nq = queries.shape[0]
        t_index = best_time(lambda: index.search(queries, K), budget_s) / nq
        t_raw = best_time(lambda: raw(queries), budget_s) / nq
        single = queries[:1]
        t1_index = best_time(lambda: index.search(single, K), budget_s / 2)
        t1_raw = best_time(lambda: raw(single), budget_s / 2)
        f_index = best_time(lambda: index.search(queries, K, filter={"g": "in"}), budget_s) / nq
        f_raw = best_time(lambda: raw(queries, allow=allowed), budget_s) / nq
        label = precision + (f" -> {how} (x{oversample})" if how else "")
        lines.append(f"| {label} | {recall(found, truth):.4f} | {t_index * 1e3:.4f} | {t_raw * 1e3:.4f} | "
                     f"{t_index / t_raw:.3f} | {t1_index * 1e3:.3f} | {t1_raw * 1e3:.3f} | {t1_index / t1_raw:.2f} | "
                     f"{f_index * 1e3:.4f} | {f_raw * 1e3:.4f} | {index._memory_bytes() / n:.0f} |")
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of repeats per timing")
    parser.add_argument("--skip-scifact", action="store_true")
    args = parser.parse_args()
    lines = ["# FlatIndex vs raw kernels"]
    base = datasets.clustered(args.rows, 384)
    queries = datasets.clustered_queries(args.queries, 384)
    print(lines[0], flush=True)
    lines += bench_dataset("clustered", base, queries, args.budget)
    scifact = datasets.bench_cache_dir() / "scifact_minilm.npz"
    if not args.skip_scifact:
        if scifact.exists():
            data = np.load(scifact)
            lines += bench_dataset("SciFact MiniLM", np.ascontiguousarray(data["documents"]),
                                   np.ascontiguousarray(data["queries"]), args.budget)
        else:
            lines.append(f"\nSciFact skipped: {scifact} is absent (run the encoder benchmark first)")
            print(lines[-1])


if __name__ == "__main__":
    main()
