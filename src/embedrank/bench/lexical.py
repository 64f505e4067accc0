"""The lexical benchmark: embedrank.LexicalIndex against bm25s and tantivy, side by side in one process.

    python -m embedrank.bench.lexical                          # SciFact, Cranfield, ADI + 1M synthetic
    python -m embedrank.bench.lexical --synthetic-docs 200000  # a smaller synthetic corpus
    python -m embedrank.bench.lexical --quick                  # ADI + 20k synthetic (a smoke run)

Run timed work alone (nothing else busy on the cores): the figures are wall-clock times.

Per data set: index build (documents/s: analysis + indexing, from the raw texts, best of 3
builds unless one takes 2 s, so the first data set does not carry one-time start-up costs), query
throughput (queries/s for the whole query set in one batch call, one thread, analysis
included, best of 3 runs unless one takes 2 s; tantivy has no batch call, so its queries run
one by one), NDCG@10 (real data sets) and memory per document.
Analyzers: embedrank and bm25s use the same one (``\\w\\w+`` tokens, lower case, Lucene's 33
English stop words, Snowball English stems), so their BM25 scores must agree; tantivy uses
its own ``en_stem`` tokenizer (no stop words), as its users get it. BM25 parameters: k1=1.5,
b=0.75 for embedrank and bm25s (bm25s's defaults); tantivy's are fixed at 1.2 / 0.75.
Memory: embedrank's postings + vocabulary (``_memory_bytes``), bm25s's score matrix and
vocabulary arrays, tantivy's index directory on disk.

The synthetic corpus: N documents of Poisson(60) words drawn from a Zipfian (s = 1.07)
vocabulary of 200,000 made-up words, seeded; 1,000 queries of 2-6 words from the same law.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from embedrank.bench.outputs import add_output_arguments, default_data_dir, markdown_table, write_outputs
from embedrank.bench.peers import cpu_info

DATASETS = ("scifact", "cranfield", "adi")
TANTIVY_SPECIAL = str.maketrans({c: " " for c in '+-&|!(){}[]^"~*?:\\/\''})


def synthetic_corpus(n_docs: int, n_queries: int = 1000, vocab: int = 200_000, seed: int = 0):
    """(texts, queries): Zipfian made-up words (see the module docstring)."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    lengths = rng.integers(4, 11, size=vocab)
    words = ["".join(letters[rng.integers(0, 26, size=n)]) for n in lengths]
    ranks = np.arange(1, vocab + 1, dtype=np.float64)
    p = ranks ** -1.07
    p /= p.sum()
    doc_lengths = rng.poisson(60, size=n_docs)
    tokens = rng.choice(vocab, size=int(doc_lengths.sum()), p=p)
    words_arr = np.array(words, dtype=object)
    bounds = np.concatenate(([0], np.cumsum(doc_lengths)))
    texts = [" ".join(words_arr[tokens[bounds[i]:bounds[i + 1]]]) for i in range(n_docs)]
    q_lengths = rng.integers(2, 7, size=n_queries)
    queries = [" ".join(words_arr[rng.choice(vocab, size=n, p=p)]) for n in q_lengths]
    return texts, queries


def beir_texts(name: str, data_dir: Path):
    from embedrank.data.beir import load_beir

    corpus, queries, qrels = load_beir(data_dir / name, "test")
    ids = list(corpus)
    texts = [(corpus[d].get("title", "") + " " + corpus[d]["text"]).strip() for d in ids]
    return ids, texts, queries, qrels


def best_of(work, repeats: int = 3, min_seconds: float = 2.0):
    """(result, seconds): the fastest of `repeats` runs (fewer when one run takes min_seconds)."""
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - t0)
        if best >= min_seconds:
            break
    return result, best


def run_embedrank(texts, queries, k):
    from embedrank.index.lexical import LexicalIndex

    def build_index():
        index = LexicalIndex(num_threads=1)
        index.add(texts, ids=np.arange(len(texts)))
        return index

    index, build = best_of(build_index)
    index.search(queries[:10], k)
    result, search = best_of(lambda: index.search(queries, k))
    return {"build_s": build, "search_s": search, "memory_bytes": index._memory_bytes(),
            "ids": result.ids, "scores": result.scores}


def run_bm25s(texts, queries, k):
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")

    def build_index():
        tokens = bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False)
        model = bm25s.BM25()
        model.index(tokens, show_progress=False)
        return model

    model, build = best_of(build_index)
    (docs, scores), search = best_of(lambda: model.retrieve(
        bm25s.tokenize(queries, stopwords="en", stemmer=stemmer, show_progress=False, return_ids=False),
        k=min(k, len(texts)), show_progress=False, n_threads=1))
    ids = docs.astype(np.int64)
    out_scores = scores.astype(np.float32)
    out_scores[out_scores <= 0] = -np.inf  # bm25s pads with score-0 documents; they did not match
    ids[~np.isfinite(out_scores)] = -1
    memory = sum(a.nbytes for a in model.scores.values() if hasattr(a, "nbytes")) + \
        sum(len(t) + 49 + 8 + 72 for t in model.vocab_dict)
    return {"build_s": build, "search_s": search, "memory_bytes": memory, "ids": ids, "scores": out_scores}


def run_tantivy(texts, queries, k):
    import tantivy

    directories = []
    try:
        builder = tantivy.SchemaBuilder()
        builder.add_text_field("body", stored=False, tokenizer_name="en_stem")
        builder.add_unsigned_field("id", stored=True, fast=True)
        schema = builder.build()

        def build_index():
            directories.append(tempfile.mkdtemp(prefix="tantivy-bench-"))
            index = tantivy.Index(schema, path=directories[-1])
            writer = index.writer(heap_size=500_000_000, num_threads=1)
            for i, text in enumerate(texts):
                doc = tantivy.Document()
                doc.add_text("body", text)
                doc.add_unsigned("id", i)
                writer.add_document(doc)
            writer.commit()
            writer.wait_merging_threads()
            index.reload()
            return index

        index, build = best_of(build_index)
        directory = directories[-1]
        searcher = index.searcher()
        def search_all():
            ids = np.full((len(queries), k), -1, dtype=np.int64)
            scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
            for row, text in enumerate(queries):
                cleaned = text.translate(TANTIVY_SPECIAL).strip()
                if not cleaned:
                    continue
                query = index.parse_query(cleaned, ["body"])
                for col, (score, address) in enumerate(searcher.search(query, k).hits):
                    ids[row, col] = searcher.doc(address)["id"][0]
                    scores[row, col] = score
            return ids, scores

        (ids, scores), search = best_of(search_all)
        disk = sum(f.stat().st_size for f in Path(directory).iterdir() if f.is_file())
        return {"build_s": build, "search_s": search, "memory_bytes": disk, "ids": ids, "scores": scores}
    finally:
        for directory in directories:
            shutil.rmtree(directory, ignore_errors=True)


SYSTEMS = {"embedrank": run_embedrank, "bm25s": run_bm25s, "tantivy": run_tantivy}


def ndcg(ids: np.ndarray, doc_ids: list[str], qids: list[str], qrels: dict) -> float:
    from embedrank.data.evaluation import evaluate

    run = {}
    for q, row in zip(qids, ids):
        kept = [int(i) for i in row if i >= 0]
        run[q] = {doc_ids[i]: float(len(kept) - r) for r, i in enumerate(kept)}
    return evaluate(run, qrels, ["ndcg@10"])["mean"]["ndcg@10"]


def bench_set(name, texts, queries, k, results, rows, qids=None, doc_ids=None, qrels=None):
    print(f"\n{name}: {len(texts)} documents, {len(queries)} queries", flush=True)
    section = {"documents": len(texts), "queries": len(queries), "systems": {}}
    outputs = {}
    for system, run in SYSTEMS.items():
        gc.collect()
        out = run(texts, queries, k)
        entry = {"build_docs_per_s": len(texts) / out["build_s"], "queries_per_s": len(queries) / out["search_s"],
                 "memory_bytes_per_doc": out["memory_bytes"] / len(texts), "load_average_1min": os.getloadavg()[0]}
        if qrels is not None:
            entry["ndcg@10"] = ndcg(out["ids"], doc_ids, qids, qrels)
        section["systems"][system] = entry
        outputs[system] = out
        print(f"  {system:<10} build {entry['build_docs_per_s']:>10,.0f} docs/s   search "
              f"{entry['queries_per_s']:>9,.1f} q/s   {entry['memory_bytes_per_doc']:>7.0f} B/doc"
              + (f"   NDCG@10 {entry['ndcg@10']:.4f}" if "ndcg@10" in entry else ""), flush=True)
    a, b = outputs["embedrank"], outputs["bm25s"]
    both = np.isfinite(a["scores"]) & np.isfinite(b["scores"])
    section["max_score_diff_vs_bm25s"] = float(np.abs(a["scores"][both] - b["scores"][both]).max()) if both.any() else 0.0
    results[name] = section
    ours = section["systems"]["embedrank"]
    for system, entry in section["systems"].items():
        rows.append([name, system, f"{entry['build_docs_per_s']:,.0f}",
                     f"{ours['build_docs_per_s'] / entry['build_docs_per_s']:.2f}x",
                     f"{entry['queries_per_s']:,.1f}", f"{ours['queries_per_s'] / entry['queries_per_s']:.2f}x",
                     f"{entry['memory_bytes_per_doc']:.0f}",
                     f"{entry['ndcg@10']:.4f}" if "ndcg@10" in entry else "-"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--synthetic-docs", type=int, default=1_000_000)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="ADI and 20k synthetic documents")
    add_output_arguments(parser, "lexical")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    datasets = ["adi"] if args.quick else [d for d in args.datasets.split(",") if d]
    n_synthetic = 20_000 if args.quick else args.synthetic_docs
    info = cpu_info()
    results: dict = {"cpu": info.get("model_name"), "python": sys.version.split()[0], "k": args.k}
    rows: list = []
    data_dir = default_data_dir("x").parent
    for name in datasets:
        if not (data_dir / name).is_dir():
            print(f"{name}: not found under {data_dir}, skipped")
            continue
        doc_ids, texts, queries, qrels = beir_texts(name, data_dir)
        qids = list(queries)
        bench_set(name, texts, [queries[q] for q in qids], args.k, results, rows, qids, doc_ids, qrels)
    if n_synthetic:
        texts, queries = synthetic_corpus(n_synthetic)
        bench_set(f"synthetic-{n_synthetic}", texts, queries, args.k, results, rows)
    header = ["data", "system", "build docs/s", "embedrank x", "queries/s", "embedrank x", "bytes/doc", "NDCG@10"]
    loads = [e["load_average_1min"] for section in results.values() if isinstance(section, dict)
             for e in section.get("systems", {}).values()]
    markdown = (f"# Lexical search: embedrank.LexicalIndex vs bm25s vs tantivy\n\nCPU: {results['cpu']}; one "
                f"thread each; k={args.k}; 1-minute load average during the run {min(loads):.1f}-{max(loads):.1f} "
                f"on {os.cpu_count()} cores. `python -m embedrank.bench.lexical` (see its docstring for the "
                "protocol). \"embedrank x\": embedrank's figure over the row's.\n\n" + markdown_table(header, rows))
    write_outputs(args, results, markdown)
    print("\n" + markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
