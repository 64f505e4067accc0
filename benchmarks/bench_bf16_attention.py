"""embedrank's fused attention with bf16 products (bf16_dots / bf16_attention) against its fp32 products.

    python benchmarks/bench_bf16_attention.py [--data ../shared/data/scifact] [--documents 1500] [--rounds 5]

1. The kernel alone: embedrank.kernels.attention at all-MiniLM-L6-v2's shape (8 sequences,
   12 heads of 32) for 64, 128 and 256 tokens, best of 20 calls, GFLOP/s against the measured
   fp32 and bf16 peaks (embedrank.bench.roofline).
2. all-MiniLM-L6-v2 int8 with and without bf16_attention=True: documents/s over --documents
   SciFact documents (cut at 256 tokens) in --rounds interleaved chunks, and NDCG@10 on the test
   queries from those vectors; the same once more with the whole subset in one call, because
   dynamic int8 quantizes each batch with its own scale and so the vectors (and NDCG) depend on
   which texts share a batch.

Writes benchmarks/results/bf16_attention.{json,md}. Needs a CPU with AVX512-BF16.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import embedrank
from embedrank.bench.encoder import exported_model, interleaved_passes, model_cache_dir, retrieval_quality, timed
from embedrank.bench.peers import cpu_info
from embedrank.bench.roofline import measured_peaks
from embedrank.kernels import attention, bf16_dots_supported
from embedrank.utils.documents import document_text
from embedrank.utils.threads import available_cores

RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_encoder_peers import corpus_sample  # noqa: E402


def kernel_timings(threads: int, peaks: dict) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for tokens in (64, 128, 256):
        q, k, v = (rng.standard_normal((8, tokens, 384)).astype(np.float32) for _ in range(3))
        mask = np.ones((8, tokens), np.int64)
        flops = 8 * 12 * 2 * 2 * tokens * tokens * 32
        row = {"tokens": tokens}
        for name, bf16 in (("fp32", False), ("bf16", True)):
            attention(q, k, v, mask, 32, num_threads=threads, bf16_dots=bf16)
            best = min(timed(lambda: attention(q, k, v, mask, 32, num_threads=threads, bf16_dots=bf16))[1]
                       for _ in range(20))
            row[name] = {"ms": best * 1e3, "gflops": flops / best / 1e9, "of_peak": flops / best / 1e9 / peaks[name]}
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact")
    parser.add_argument("--documents", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not bf16_dots_supported():
        sys.exit("this CPU (or ISA level) has no AVX512-BF16: nothing to measure")
    threads = available_cores()
    info = cpu_info()
    peaks = {p: m["gops"] for p, m in measured_peaks(threads, info["flags"], info["vendor"]).items()}
    kernel = kernel_timings(threads, peaks)

    corpus, queries, qrels = embedrank.load_beir(args.data, split="test")
    doc_ids = corpus_sample(sorted(corpus), qrels, args.documents)
    docs = [document_text(corpus[d]) for d in doc_ids]
    query_ids = sorted(queries)
    query_texts = [queries[q] for q in query_ids]
    folder = exported_model(model_cache_dir())
    encoders = {"int8": embedrank.Encoder.load(folder, variant="int8", num_threads=threads),
                "int8 + bf16 attention": embedrank.Encoder.load(folder, variant="int8", num_threads=threads,
                                                                bf16_attention=True)}
    for encoder in encoders.values():
        encoder.encode(docs[:8])
    fp32 = embedrank.Encoder.load(folder, num_threads=threads)
    reference = fp32.encode(docs)
    reference_ndcg = retrieval_quality(reference, fp32.encode(query_texts), doc_ids, query_ids, qrels)["ndcg@10"]
    vectors, seconds = interleaved_passes({n: e.encode for n, e in encoders.items()}, docs, args.rounds)
    systems = {}
    for name, encoder in encoders.items():
        query_vectors = encoder.encode(query_texts)
        whole = encoder.encode(docs)
        cosine = (vectors[name] * reference).sum(axis=1)
        systems[name] = {
            "docs_per_s": len(docs) / sum(seconds[name]), "seconds": seconds[name],
            "ndcg@10": retrieval_quality(vectors[name], query_vectors, doc_ids, query_ids, qrels)["ndcg@10"],
            "ndcg@10_one_call": retrieval_quality(whole, query_vectors, doc_ids, query_ids, qrels)["ndcg@10"],
            "cosine_to_fp32_min": float(cosine.min()), "cosine_to_fp32_mean": float(cosine.mean())}
        print(name, json.dumps(systems[name]), flush=True)
    results = {"cpu": info, "threads": threads, "peaks": peaks, "kernel": kernel, "documents": len(docs),
               "rounds": args.rounds, "fp32_ndcg@10": reference_ndcg, "systems": systems}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bf16_attention.json").write_text(json.dumps(results, indent=1))
    (args.out / "bf16_attention.md").write_text(report(results))
    print(report(results))


def report(results: dict) -> str:
    info = results["cpu"]
    lines = ["# Fused attention with bf16 products", "",
             f"CPU: **{info['model_name']}** (vendor {info['vendor']}, family {info['family']} model {info['model']}), "
             f"{results['threads']} threads. Measured peaks: fp32 {results['peaks']['fp32']:.0f}, bf16 "
             f"{results['peaks']['bf16']:.0f} GFLOP/s. Made by `benchmarks/bench_bf16_attention.py`.", "",
             "## The kernel (8 sequences, 12 heads of 32, best of 20)", "",
             "| tokens | fp32 ms | fp32 GFLOP/s (of peak) | bf16 ms | bf16 GFLOP/s (of peak) | speed-up |",
             "|---|---|---|---|---|---|"]
    for row in results["kernel"]:
        f, b = row["fp32"], row["bf16"]
        lines.append(f"| {row['tokens']} | {f['ms']:.2f} | {f['gflops']:.0f} ({100 * f['of_peak']:.0f}%) | {b['ms']:.2f} | "
                     f"{b['gflops']:.0f} ({100 * b['of_peak']:.0f}%) | {f['ms'] / b['ms']:.2f}x |")
    lines += ["", f"## all-MiniLM-L6-v2 int8, {results['documents']} SciFact documents cut at 256 tokens, "
              f"{results['rounds']} interleaved rounds (fp32 NDCG@10 {results['fp32_ndcg@10']:.4f})", "",
              "| system | docs/s | NDCG@10 (chunks as timed) | NDCG@10 (one call) | cosine to fp32, min / mean |",
              "|---|---|---|---|---|"]
    for name, s in results["systems"].items():
        lines.append(f"| {name} | {s['docs_per_s']:.1f} | {s['ndcg@10']:.4f} | {s['ndcg@10_one_call']:.4f} | "
                     f"{s['cosine_to_fp32_min']:.4f} / {s['cosine_to_fp32_mean']:.5f} |")
    lines += ["", "The two NDCG columns differ for one system because dynamic int8 takes each batch's own activation "
              "scale: the same texts batched differently give slightly different vectors."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
