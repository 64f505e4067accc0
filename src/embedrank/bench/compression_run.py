"""The compression sweep on SciFact test (see embedrank.bench.compression for the grid).

    python -m embedrank.bench.compression_run [--data ../shared/data/scifact] [--model DIR] [--reranker DIR] [--quick]

Vectors: all-MiniLM-L6-v2 (fp32 export), documents as title + " " + text at max_seq_length
256 (one vector per document, no chunking), embedded once; the encoder benchmark's cache
(~/.cache/embedrank/bench/scifact_minilm.npz, the same model and texts) is reused when its
shape matches. Grid: {float32, int8, binary} x dims {384, 256, 128} x rescore multipliers
{1, 4, 10} x {exact, HNSW} at k = 100. Rerank rows only with a trained cross-encoder
(--reranker; default: $EMBEDRANK_RERANKER, else the one `embedrank demo` trained and cached
for SciFact): the fresh-head test cross-encoder's scores are meaningless for quality, so
without a trained one the rerank rows are reported as not run. --first-stage-weight fuses the
first-stage score into the rerank score (default: the weight the demo chose on held-out train
queries, recorded beside its reranker; else 0). Writes JSON (--output) and the table (--markdown).
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from pathlib import Path

import numpy as np

import embedrank
from embedrank.bench import datasets
from embedrank.bench.compression import compression_sweep, format_table
from embedrank.bench.outputs import add_output_arguments, default_data_dir, write_outputs
from embedrank.utils.threads import available_cores



def trained_reranker() -> Path | None:
    """$EMBEDRANK_RERANKER, else the newest SciFact reranker in the demo cache, else None."""
    from embedrank.apps.demo import DEFAULT_CACHE

    if os.environ.get("EMBEDRANK_RERANKER"):
        return Path(os.environ["EMBEDRANK_RERANKER"])
    found = sorted((DEFAULT_CACHE / "models").glob("reranker-scifact-*steps"), key=lambda p: p.stat().st_mtime)
    found = [p for p in found if (p / "embedrank.json").is_file()]
    return found[-1] if found else None


def recorded_fusion_weight(reranker: Path | None) -> float:
    """The fusion weight the demo chose for this reranker (0 when none was recorded)."""
    record = None if reranker is None else reranker.parent / f"{reranker.name}.fusion.json"
    if record is None or not record.is_file():
        return 0.0
    return float(json.loads(record.read_text())["first_stage_weight"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=default_data_dir("scifact"))
    parser.add_argument("--model", type=Path, default=None, help="embedrank MiniLM folder (default: the bench cache)")
    parser.add_argument("--reranker", type=Path, default=None, help="trained cross-encoder folder (default: see above)")
    parser.add_argument("--first-stage-weight", type=float, default=None,
                        help="rerank score = logit + this x first-stage score (default: see above)")
    parser.add_argument("--reranker-variant", default="opt")
    parser.add_argument("--rerank-depth", type=int, default=20)
    parser.add_argument("--threads", type=int, default=available_cores())
    parser.add_argument("--quick", action="store_true", help="one truncated dim, multipliers 1 and 4")
    add_output_arguments(parser, "compression_sweep")
    args = parser.parse_args(argv)
    if args.reranker is None:
        args.reranker = trained_reranker()
    if args.first_stage_weight is None:
        args.first_stage_weight = recorded_fusion_weight(args.reranker)
    warnings.simplefilter("ignore", embedrank.TruncationWarning)

    from embedrank.bench.encoder import exported_model, model_cache_dir

    corpus, queries, qrels = embedrank.load_beir(args.data, split="test")
    queries = {q: queries[q] for q in queries if q in qrels}
    model_dir = args.model or exported_model(model_cache_dir())
    encoder = embedrank.Encoder.load(model_dir, num_threads=args.threads)
    doc_vectors = query_vectors = None
    cached = datasets.bench_cache_dir() / "scifact_minilm.npz"
    if cached.is_file():
        with np.load(cached) as arrays:
            if arrays["documents"].shape == (len(corpus), encoder.dim):
                doc_vectors = arrays["documents"]
                print(f"document vectors from {cached}", flush=True)
    if doc_vectors is None:
        doc_vectors = encoder.encode_documents(list(corpus.values()), show_progress=False)
    query_vectors = encoder.encode_queries([queries[q] for q in queries])

    reranker = None
    if args.reranker is not None:
        reranker = embedrank.CrossEncoder.load(args.reranker, variant=args.reranker_variant, num_threads=args.threads)
    dims = (None, 128) if args.quick else (None, 256, 128)
    multipliers = (1, 4) if args.quick else (1, 4, 10)
    rows = compression_sweep(encoder, corpus, queries, qrels, reranker, dims=dims, multipliers=multipliers,
                             rerank_depth=args.rerank_depth, num_threads=args.threads, doc_vectors=doc_vectors,
                             query_vectors=query_vectors, first_stage_weight=args.first_stage_weight,
                             hybrid=True)
    note = (f"rerank rows: {args.reranker} ({args.reranker_variant}), top {args.rerank_depth} reranked, score = "
            f"logit + {args.first_stage_weight:g} x first-stage score; best configuration per precision + the "
            "float32 exact baseline" if reranker is not None else
            "rerank rows: not run (no trained cross-encoder; the fresh-head test model's scores are meaningless)")
    results = {"data": str(args.data), "documents": len(corpus), "queries": len(queries), "k": 100,
               "threads": args.threads, "model": str(model_dir), "reranker": str(args.reranker) if reranker else None,
               "note": note, "rows": rows}
    table = format_table(rows) + f"\n{note}\n"
    print(table)
    write_outputs(args, results, table)


if __name__ == "__main__":
    main()
