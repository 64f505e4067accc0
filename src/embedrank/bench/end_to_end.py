"""End-to-end latency per query of the Retriever on SciFact, with and without reranking.

    python -m embedrank.bench.end_to_end [--data ../shared/data/scifact] [--model DIR] [--quick]

The retriever: all-MiniLM-L6-v2 (--encoder-variant, fp32 by default), chunked documents
(224-token windows), FlatIndex float32, 100 candidates, top 10. Reranker: MiniLM with a
fresh seeded one-label head (the reranker benchmark's model; the work per pair is that of any
MiniLM-L6 cross-encoder, its scores are meaningless, so no quality is reported for the
reranked runs), --reranker-variant (int8 by default), on (query, best passage) pairs.
Each query is searched alone (search([query])) and the retriever's stage timings are
recorded: p50 / p95 / mean of total ms per query and the mean of each stage. Without
reranking: all judged test queries (and their NDCG@10); with reranking: the first
--rerank-queries of them (100 cross-encoder pairs per query make it slow on 2 cores).
Corpus encoding is not timed (an embedding cache under the bench cache folder makes reruns
fast; queries are encoded without it).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

import embedrank
from embedrank.bench import datasets
from embedrank.bench.outputs import add_output_arguments, default_data_dir, markdown_table, write_outputs
from embedrank.utils.threads import available_cores


def _summary(timings: list) -> dict:
    totals = np.array([t.total_ms for t in timings])
    return {"queries": len(timings), "p50_ms": float(np.percentile(totals, 50)),
            "p95_ms": float(np.percentile(totals, 95)), "mean_ms": float(totals.mean()),
            "stages_mean_ms": {"encode": float(np.mean([t.encode_ms for t in timings])),
                               "search": float(np.mean([t.search_ms for t in timings])),
                               "rerank": float(np.mean([t.rerank_ms for t in timings]))}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=default_data_dir("scifact"))
    parser.add_argument("--model", type=Path, default=None, help="embedrank MiniLM folder (default: the bench cache)")
    parser.add_argument("--encoder-variant", default="fp32")
    parser.add_argument("--reranker-variant", default="int8")
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--rerank-queries", type=int, default=30)
    parser.add_argument("--threads", type=int, default=available_cores())
    parser.add_argument("--quick", action="store_true", help="first 500 documents, 30 queries, 5 reranked")
    add_output_arguments(parser, "end_to_end")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", embedrank.TruncationWarning)

    from embedrank.bench.encoder import exported_model, model_cache_dir
    from embedrank.bench.reranker import fresh_head_cross_encoder

    corpus, queries, qrels = embedrank.load_beir(args.data, split="test")
    query_ids = [q for q in queries if q in qrels]
    if args.quick:
        corpus = dict(list(corpus.items())[:500])
        query_ids, args.rerank_queries = query_ids[:30], 5
    model_dir = args.model or exported_model(model_cache_dir())
    cache = datasets.bench_cache_dir() / "end_to_end_embeddings.sqlite"
    cache.parent.mkdir(parents=True, exist_ok=True)
    encoder = embedrank.Encoder.load(model_dir, variant=args.encoder_variant, num_threads=args.threads, cache=cache)
    _, reranker_dir = fresh_head_cross_encoder()
    reranker = embedrank.CrossEncoder.load(reranker_dir, variant=args.reranker_variant, num_threads=args.threads)
    retriever = embedrank.Retriever(encoder, embedrank.FlatIndex(encoder.dim, num_threads=args.threads),
                                    reranker=reranker, candidates=args.candidates, top_k=10)
    start = time.perf_counter()
    retriever.add(corpus)
    build_s = time.perf_counter() - start
    encoder.close()  # the cache served the corpus only: queries are encoded for real, as in use
    retriever.encoder = embedrank.Encoder.load(model_dir, variant=args.encoder_variant, num_threads=args.threads)
    print(f"{len(corpus)} documents -> {retriever.n_chunks} windows in {build_s:.0f} s; {args.threads} threads", flush=True)

    retriever.search([queries[query_ids[0]]], rerank=False)  # warm-up
    plain, run = [], {}
    for qid in query_ids:
        hits = retriever.search([queries[qid]], rerank=False)[0]
        plain.append(retriever.last_timings)
        run[qid] = {h.doc_id: h.score for h in hits}
    ndcg = embedrank.evaluate(run, qrels, metrics=["ndcg@10"])["mean"]["ndcg@10"]
    reranked = []
    retriever.search([queries[query_ids[0]]])  # warm-up
    for qid in query_ids[:args.rerank_queries]:
        retriever.search([queries[qid]])
        reranked.append(retriever.last_timings)

    results = {"documents": len(corpus), "windows": retriever.n_chunks, "candidates": args.candidates, "top_k": 10,
               "threads": args.threads, "encoder": f"{model_dir} ({args.encoder_variant})",
               "reranker": f"MiniLM + fresh seeded head ({args.reranker_variant})", "index": "FlatIndex float32",
               "corpus_build_s": build_s,
               "without_rerank": {**_summary(plain), "ndcg@10": ndcg},
               "with_rerank": _summary(reranked)}
    rows = []
    for name, key in (("bi-encoder only", "without_rerank"), (f"+ rerank {args.candidates} (int8 CE)"
                                                            if args.reranker_variant == "int8" else
                                                            f"+ rerank {args.candidates}", "with_rerank")):
        s = results[key]
        rows.append((name, s["queries"], f"{s['p50_ms']:.1f}", f"{s['p95_ms']:.1f}", f"{s['mean_ms']:.1f}",
                     f"{s['stages_mean_ms']['encode']:.1f}", f"{s['stages_mean_ms']['search']:.2f}",
                     f"{s['stages_mean_ms']['rerank']:.1f}"))
    table = markdown_table(("pipeline", "queries", "p50 ms", "p95 ms", "mean ms", "encode ms", "search ms", "rerank ms"),
                           rows)
    print(table)
    print(f"NDCG@10 without rerank: {ndcg:.4f}")
    write_outputs(args, results, table)


if __name__ == "__main__":
    main()
