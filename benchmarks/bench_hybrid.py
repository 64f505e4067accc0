"""Dense, BM25 and hybrid retrieval quality on every data set in ../shared/data, one script.

    python benchmarks/bench_hybrid.py --model EXPORTED_MINILM_FOLDER [--variant int8] [--data ../shared/data]

For each BEIR folder (SciFact, Cranfield, ADI): one Retriever with the default settings
(chunked documents, FlatIndex float32 over the encoder's vectors, LexicalIndex with English
stop words and the Snowball stemmer) is built once; its test queries are then run in each
mode: dense, lexical (BM25), hybrid with convex fusion at the default weight 0.5, hybrid with
reciprocal rank fusion (k=60), and, where the folder has a train split (SciFact), hybrid with
the convex weight chosen on the train queries (``Retriever.choose_lexical_weight``).
Reports NDCG@10 and recall@100 to benchmarks/results/hybrid.{json,md}.

Three stages (``--reranker CROSS_ENCODER_FOLDER``, e.g. with the fine-tuned bi-encoder as
``--model``; benchmarks/bench_train.py makes both): on the data sets with a train split, both
weights are chosen on held-out train queries, never on test: the lexical weight of the hybrid
first stage (``choose_lexical_weight``), then the cross-encoder's first-stage weight
(``choose_first_stage_weight`` over that hybrid's top ``--rerank-depth``), and the test queries
are run hybrid + rerank with them (dense + rerank is bench_train.py's two-stage figure). ``--choose-on dev`` takes the held-out
queries from the 10% dev slice that bench_train.py kept out of training (``split_by_query``,
seed 0) — use it for fine-tuned models, which have seen the other train queries.
``--name`` sets the results' file stem (default ``hybrid``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from embedrank import CrossEncoder, Encoder, FlatIndex, Retriever
from embedrank.data.beir import available_splits, load_beir
from embedrank.data.evaluation import evaluate
from embedrank.retrieval.fusion import choose_first_stage_weight, rerank_logits, rerank_on_top

RESULTS = Path(__file__).resolve().parent / "results"
DATASETS = ("scifact", "cranfield", "adi")
DEPTH = 100


def run_of(retriever: Retriever, queries: dict, mode: str, rerank: bool = False) -> tuple[dict, float]:
    """({qid: {doc_id: score}}, seconds). With rerank, the best rerank_depth documents come
    reranked (retriever.candidates) and the rest of the top DEPTH follow in first-stage order,
    scored by rank (the two lists' scores are on different scales)."""
    ids = list(queries)
    texts = [queries[q] for q in ids]
    start = time.perf_counter()
    hits = retriever.search(texts, top_k=DEPTH, candidates=DEPTH, mode=mode, rerank=False)
    if rerank:
        hits = rerank_on_top(hits, retriever.search(texts, top_k=retriever.candidates, mode=mode, rerank=True))
        seconds = time.perf_counter() - start
        return {q: {h.doc_id: float(len(found) - r) for r, h in enumerate(found)} for q, found in zip(ids, hits)}, seconds
    seconds = time.perf_counter() - start
    return {q: {h.doc_id: float(h.score) for h in found} for q, found in zip(ids, hits)}, seconds


def held_out(folder: Path, choose_on: str) -> tuple[dict, dict]:
    """The held-out train queries the weights are chosen on: all of the train split, or (dev)
    the 10% slice benchmarks/bench_train.py kept out of fine-tuning (same split, seed 0)."""
    _, queries, qrels = load_beir(folder, split="train")
    if choose_on == "dev":
        from embedrank.train import RetrievalData, split_by_query

        _, dev_ids = split_by_query(RetrievalData.from_beir(folder, "train").query_ids(), 0.1, 0)
        queries = {q: queries[q] for q in dev_ids if q in queries}
    return queries, {q: qrels[q] for q in queries}


def choose_rerank_weight(retriever: Retriever, queries: dict, qrels: dict, mode: str) -> tuple[float, dict]:
    """The cross-encoder's first_stage_weight chosen on held-out queries over the `mode` first stage."""
    ids = list(queries)
    texts = [queries[q] for q in ids]
    found = retriever.search(texts, top_k=retriever.candidates, mode=mode, rerank=False)
    first = {q: {h.doc_id: h.score for h in hits} for q, hits in zip(ids, found)}
    logits = rerank_logits(retriever.reranker, {q: {h.doc_id: (text, h.passage) for h in hits}
                                                for q, text, hits in zip(ids, texts, found)})
    return choose_first_stage_weight(first, logits, qrels)


def measure(folder: Path, encoder: Encoder, reranker: CrossEncoder | None = None, rerank_depth: int = DEPTH,
            choose_on: str = "train", rerank_weight: float | None = None) -> dict:
    """The rows of one data set. With a reranker, a data set with train queries gets its rerank
    weight chosen on them; one without gets `rerank_weight` (given, e.g. the SciFact choice), if any."""
    corpus, queries, qrels = load_beir(folder, split="test")
    retriever = Retriever(encoder, FlatIndex(encoder.dim), reranker=reranker, candidates=rerank_depth, lexical=True)
    start = time.perf_counter()
    retriever.add(corpus)
    rows = {"docs": len(corpus), "queries": len(queries), "index_s": time.perf_counter() - start, "modes": {}}

    def record(label: str, mode: str, rerank: bool = False) -> None:
        run, seconds = run_of(retriever, queries, mode, rerank)
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
        train_queries, train_qrels = held_out(folder, choose_on)
        retriever.fusion = "convex"
        weight, report = retriever.choose_lexical_weight(train_queries, train_qrels)
        rows["lexical_weight_choice"] = {"on": choose_on, **report}
        record(f"hybrid convex {weight} (chosen on {choose_on})", "hybrid")
        if reranker is not None:
            # dense + rerank is benchmarks/bench_train.py's two-stage figure; here the third stage on the hybrid
            for mode, label in (("hybrid", f"hybrid convex {weight}"),):
                w, report = choose_rerank_weight(retriever, train_queries, train_qrels, mode)
                rows[f"rerank_weight_choice_{mode}"] = {"on": choose_on, **report}
                retriever.first_stage_weight = w
                record(f"{label} + rerank top {rerank_depth} (first-stage weight {w:g}, chosen on {choose_on})",
                       mode, rerank=True)
    elif reranker is not None and rerank_weight is not None:
        retriever.fusion, retriever.lexical_weight = "convex", 0.5
        retriever.first_stage_weight = rerank_weight
        record(f"hybrid convex 0.5 + rerank top {rerank_depth} (first-stage weight {rerank_weight:g}, given: "
               "no train queries here)", "hybrid", rerank=True)
    return rows


def write_report(data: dict, stem: str = "hybrid") -> None:
    reranker = f"; reranker: {data['reranker']} ({data['reranker_variant']})" if data.get("reranker") else ""
    lines = ["# Dense, BM25 and hybrid retrieval", "",
             f"Model: {data['model']} ({data['variant']}){reranker}; CPU: {data['cpu']}. Default Retriever settings (chunked "
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
    (RESULTS / f"{stem}.md").write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="an embedrank model folder (embedrank export)")
    parser.add_argument("--variant", default="int8")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--reranker", help="a cross-encoder folder: adds the three-stage rows")
    parser.add_argument("--reranker-variant", default="int8")
    parser.add_argument("--rerank-depth", type=int, default=DEPTH, help="candidates the cross-encoder scores")
    parser.add_argument("--choose-on", choices=("train", "dev"), default="train",
                        help="held-out queries for the weights: the whole train split, or bench_train.py's dev slice")
    parser.add_argument("--rerank-weight", type=float, default=None,
                        help="first-stage weight of the rerank row on data sets without train queries "
                             "(no rerank row there without it)")
    parser.add_argument("--name", default="hybrid", help="file stem of the results")
    args = parser.parse_args()
    encoder = Encoder.load(args.model, variant=args.variant)
    reranker = CrossEncoder.load(args.reranker, variant=args.reranker_variant) if args.reranker else None
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")
    data = {"model": str(args.model), "variant": args.variant, "reranker": args.reranker,
            "reranker_variant": args.reranker_variant if args.reranker else None, "choose_on": args.choose_on,
            "cpu": f"{cpu}, {os.cpu_count()} cores",
            "command": "python benchmarks/bench_hybrid.py " + " ".join(os.sys.argv[1:]), "datasets": {}}
    for name in args.datasets.split(","):
        folder = args.data / name
        if not folder.is_dir():
            print(f"skipping {name}: {folder} not found")
            continue
        data["datasets"][name] = measure(folder, encoder, reranker, args.rerank_depth, args.choose_on,
                                         args.rerank_weight)
        print(name, json.dumps(data["datasets"][name]["modes"]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    write_report(data, args.name)


if __name__ == "__main__":
    main()
