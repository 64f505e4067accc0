"""Dense, BM25 and hybrid retrieval quality on every data set in ../shared/data, one script.

    python benchmarks/bench_hybrid.py --model EXPORTED_MINILM_FOLDER [--variant int8] [--data ../shared/data]

For each BEIR folder (SciFact, Cranfield, ADI): one Retriever with the default settings
(chunked documents, FlatIndex float32 over the encoder's vectors, LexicalIndex with English
stop words and the Snowball stemmer) is built once; its test queries are then run in each
mode: dense, lexical (BM25), hybrid with convex fusion at the default weight 0.5, hybrid with
reciprocal rank fusion (k=60), and, where the folder has a train split (SciFact), hybrid with
the convex weight chosen on the train queries (``Retriever.choose_lexical_weight``).
Reports NDCG@10 and recall@100 to benchmarks/results/hybrid.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from embedrank import Encoder, FlatIndex, Retriever
from embedrank.data.beir import available_splits, load_beir
from embedrank.data.evaluation import evaluate

RESULTS = Path(__file__).resolve().parent / "results"
DATASETS = ("scifact", "cranfield", "adi")
DEPTH = 100


def run_of(retriever: Retriever, queries: dict, mode: str) -> tuple[dict, float]:
    ids = list(queries)
    start = time.perf_counter()
    hits = retriever.search([queries[q] for q in ids], top_k=DEPTH, mode=mode)
    seconds = time.perf_counter() - start
    return {q: {h.doc_id: float(h.score) for h in found} for q, found in zip(ids, hits)}, seconds


def measure(folder: Path, encoder: Encoder) -> dict:
    corpus, queries, qrels = load_beir(folder, split="test")
    retriever = Retriever(encoder, FlatIndex(encoder.dim), lexical=True)
    start = time.perf_counter()
    retriever.add(corpus)
    rows = {"docs": len(corpus), "queries": len(queries), "index_s": time.perf_counter() - start, "modes": {}}

    def record(label: str, mode: str) -> None:
        run, seconds = run_of(retriever, queries, mode)
        scores = evaluate(run, qrels, ["ndcg@10", "recall@100"])["mean"]
        rows["modes"][label] = {"ndcg@10": scores["ndcg@10"], "recall@100": scores["recall@100"],
                                "ms_per_query": seconds * 1e3 / len(queries)}

    record("dense", "dense")
    record("BM25", "lexical")
    retriever.fusion, retriever.lexical_weight = "convex", 0.5
    record("hybrid convex 0.5", "hybrid")
    retriever.fusion = "rrf"
    record("hybrid RRF k=60", "hybrid")
    if "train" in available_splits(folder):
        _, train_queries, train_qrels = load_beir(folder, split="train")
        retriever.fusion = "convex"
        weight, _ = retriever.choose_lexical_weight(train_queries, train_qrels)
        record(f"hybrid convex {weight} (chosen on train)", "hybrid")
    return rows


def write_report(data: dict) -> None:
    lines = ["# Dense, BM25 and hybrid retrieval", "",
             f"Model: {data['model']} ({data['variant']}); CPU: {data['cpu']}. Default Retriever settings (chunked "
             "documents; BM25 with English stop words and Snowball stems; convex fusion of min-max normalized "
             "scores over the top candidates of each side). NDCG@10 / recall@100 on the test queries.", "",
             "| data | docs | queries | mode | NDCG@10 | recall@100 | ms / query |", "|---|---|---|---|---|---|---|"]
    for name, rows in data["datasets"].items():
        for label, m in rows["modes"].items():
            lines.append(f"| {name} | {rows['docs']} | {rows['queries']} | {label} | {m['ndcg@10']:.4f} | "
                         f"{m['recall@100']:.4f} | {m['ms_per_query']:.1f} |")
    lines += ["", "Hybrid (convex 0.5) above both of its inputs:", ""]
    for name, rows in data["datasets"].items():
        m = rows["modes"]
        hybrid, dense, bm25 = (m[k]["ndcg@10"] for k in ("hybrid convex 0.5", "dense", "BM25"))
        lines.append(f"- {name}: {hybrid:.4f} vs dense {dense:.4f} and BM25 {bm25:.4f}: "
                     f"{'yes' if hybrid > max(dense, bm25) else 'no'}")
    lines += ["", "    " + data["command"], ""]
    (RESULTS / "hybrid.md").write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="an embedrank model folder (embedrank export)")
    parser.add_argument("--variant", default="int8")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    args = parser.parse_args()
    encoder = Encoder.load(args.model, variant=args.variant)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")
    data = {"model": str(args.model), "variant": args.variant, "cpu": f"{cpu}, {os.cpu_count()} cores",
            "command": "python benchmarks/bench_hybrid.py " + " ".join(os.sys.argv[1:]), "datasets": {}}
    for name in args.datasets.split(","):
        folder = args.data / name
        if not folder.is_dir():
            print(f"skipping {name}: {folder} not found")
            continue
        data["datasets"][name] = measure(folder, encoder)
        print(name, json.dumps(data["datasets"][name]["modes"]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "hybrid.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    write_report(data)


if __name__ == "__main__":
    main()
