"""The compression sweep: retrieval quality against latency and memory across vector compressions.

    rows = embedrank.bench.compression_sweep(encoder, corpus, queries, qrels, reranker=None)
    print(embedrank.bench.format_table(rows))

One row per configuration of the grid

* precision: "float32" (exact inner product), "int8" (per-dimension int8 codes) or "binary"
  (sign bits), the last two with a float32 rescore of the first pass's candidates
  (embedrank.FlatIndex(precision, rescore="float32", oversample=multiplier));
* dim: the full dimension, or a Matryoshka truncation (first `dim` components, renormalized
  with kernels.truncate_normalize; the corpus is embedded once at full dimension);
* multiplier: the rescore multiplier (FlatIndex oversample: the first pass keeps
  k x multiplier candidates). float32 flat search is exact, so it has one row (multiplier 1).
  For HNSW the multiplier sets the candidate list instead: ef = k x multiplier;
* index: "exact" (FlatIndex, a brute-force scan) or "hnsw" (HNSWIndex, M=16,
  ef_construction=200). HNSWIndex stores float32 vectors only, so hnsw rows are float32;
* rerank: off, or on: the cross-encoder reorders each query's best `rerank_depth` documents
  (title + " " + text). A (query, document) pair is scored once and shared by every
  configuration; its rerank latency is rerank_depth x the measured mean time per pair.
  rerank_configs="best" (default) reranks, per precision, the configuration with the best
  NDCG@10, plus the float32 full-dimension exact baseline; "all" reranks every row.

* hybrid (hybrid=True): every first-pass row once more fused with BM25 (a LexicalIndex over
  the same documents, searched once; convex fusion of min-max normalized scores, weight 0.5,
  as Retriever's default); its latency adds the BM25 search's mean per query.

Figures per row: ndcg@10 and recall@100 (embedrank.evaluate, k = 100 retrieved), latency
p50 / mean in ms per query (each query searched alone, query encoding excluded; with rerank,
plus the rerank time), bytes per vector of what the first pass scans (float32: 4 x dim, int8:
dim, binary: dim / 8) and of the whole index in memory (FlatIndex keeps the float32
originals for rescoring: they are read only for the candidates, and memory-mapped after a
load; HNSW: the graph with its links), and the build time.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from embedrank import kernels
from embedrank.utils.documents import document_text
from embedrank.errors import InvalidTypeError, InvalidValueError

__all__ = ["compression_sweep", "format_table", "PRECISIONS", "INDEX_KINDS"]

PRECISIONS = ("float32", "int8", "binary")
INDEX_KINDS = ("exact", "hnsw")
HNSW_SETTINGS = {"M": 16, "ef_construction": 200}


def _check_choices(values, allowed: Sequence, name: str) -> list:
    if isinstance(values, str) or not hasattr(values, "__iter__"):
        raise InvalidTypeError(f"{name} must be a sequence, got {type(values).__name__}")
    values = list(values)
    if not values:
        raise InvalidValueError(f"{name} must not be empty")
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise InvalidValueError(f"unknown {name} {unknown}; expected some of {list(allowed)}")
    return list(dict.fromkeys(values))


def _check_positive_ints(values, name: str, allow_none: bool = False) -> list:
    if isinstance(values, str) or not hasattr(values, "__iter__"):
        raise InvalidTypeError(f"{name} must be a sequence, got {type(values).__name__}")
    values = list(values)
    if not values:
        raise InvalidValueError(f"{name} must not be empty")
    for v in values:
        if v is None and allow_none:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise InvalidValueError(f"{name} must hold positive integers{' or None' if allow_none else ''}, got {v!r}")
    return list(dict.fromkeys(values))


def _make_index(kind: str, precision: str, dim: int, multiplier: int, num_threads):
    from embedrank.index import FlatIndex, HNSWIndex

    if kind == "hnsw":
        return HNSWIndex(dim, **HNSW_SETTINGS, num_threads=num_threads)
    if precision == "float32":
        return FlatIndex(dim, num_threads=num_threads)
    return FlatIndex(dim, precision=precision, rescore="float32", oversample=multiplier, num_threads=num_threads)


def _search_one_by_one(index, queries: np.ndarray, k: int, params: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each query alone: (ids [Q, k], scores [Q, k], seconds [Q])."""
    ids = np.empty((len(queries), k), dtype=np.int64)
    scores = np.empty((len(queries), k), dtype=np.float32)
    seconds = np.empty(len(queries), dtype=np.float64)
    index.search(queries[:1], k, **params)  # warm-up
    for i in range(len(queries)):
        start = time.perf_counter()
        result = index.search(queries[i:i + 1], k, **params)
        seconds[i] = time.perf_counter() - start
        ids[i], scores[i] = result.ids[0], result.scores[0]
    return ids, scores, seconds


def _run(ids: np.ndarray, scores: np.ndarray, query_ids: list[str], doc_ids: list[str]) -> dict:
    return {qid: {doc_ids[d]: float(s) for d, s in zip(row_ids, row_scores) if d >= 0}
            for qid, row_ids, row_scores in zip(query_ids, ids, scores)}


def compression_sweep(encoder, corpus: dict, queries: dict, qrels: dict, reranker=None, *,
                      precisions: Sequence[str] = PRECISIONS, dims: Sequence[int | None] = (None, 256, 128),
                      multipliers: Sequence[int] = (1, 4, 10), index_kinds: Sequence[str] = INDEX_KINDS,
                      rerank: Sequence[bool] | None = None, rerank_configs: str = "best", rerank_depth: int = 100,
                      k: int = 100, batch_size: int = 32, num_threads: int | None = None,
                      doc_vectors: np.ndarray | None = None, query_vectors: np.ndarray | None = None,
                      show_progress: bool | None = None, first_stage_weight: float = 0.0,
                      hybrid: bool = False) -> list[dict]:
    """Runs the grid (see the module docstring); returns one dict per configuration.

    encoder: an embedrank Encoder (unused when doc_vectors and query_vectors are given: full
    dimension float32 [n_docs, d] / [n_queries, d] in the order of corpus / queries).
    corpus {doc_id: {"title", "text"}}, queries {qid: text}, qrels {qid: {doc_id: grade}}
    (load_beir's shapes). dims: None stands for the full dimension. rerank: which of
    (False, True) to run; default (False, True) with a reranker, (False,) without. k: depth
    retrieved (recall@100 needs k >= 100). first_stage_weight: a reranked document's score is
    the cross-encoder logit + this x its first-stage score (Retriever's fusion; 0: the logit).
    hybrid: also the rows fused with BM25 (see the module docstring).
    Row keys: precision, dim, multiplier, index, rerank, hybrid, ndcg@10, recall@100,
    latency_ms_p50, latency_ms_mean, bytes_per_vector, index_bytes_per_vector, build_s.
    """
    precisions = _check_choices(precisions, PRECISIONS, "precisions")
    index_kinds = _check_choices(index_kinds, INDEX_KINDS, "index_kinds")
    multipliers = _check_positive_ints(multipliers, "multipliers")
    dims = _check_positive_ints(dims, "dims", allow_none=True)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidValueError(f"k must be a positive integer, got {k!r}")
    if isinstance(rerank_depth, bool) or not isinstance(rerank_depth, (int, np.integer)) or rerank_depth < 1:
        raise InvalidValueError(f"rerank_depth must be a positive integer, got {rerank_depth!r}")
    if isinstance(first_stage_weight, bool) or not isinstance(first_stage_weight, (int, float)) \
            or not np.isfinite(first_stage_weight) or first_stage_weight < 0:
        raise InvalidValueError(f"first_stage_weight must be a finite number >= 0, got {first_stage_weight!r}")
    if rerank_configs not in ("best", "all"):
        raise InvalidValueError(f"rerank_configs must be 'best' or 'all', got {rerank_configs!r}")
    if rerank is None:
        rerank = (False, True) if reranker is not None else (False,)
    rerank = [bool(r) for r in rerank]
    if True in rerank and reranker is None:
        raise InvalidValueError("rerank includes True but no reranker was given")
    for name, value in (("corpus", corpus), ("queries", queries), ("qrels", qrels)):
        if not isinstance(value, dict) or not value:
            raise InvalidValueError(f"{name} must be a non-empty dict, got {type(value).__name__} of length "
                             f"{len(value) if hasattr(value, '__len__') else '?'}")
    doc_ids, query_ids = list(corpus), list(queries)
    if doc_vectors is None or query_vectors is None:
        if encoder is None:
            raise InvalidValueError("give an encoder, or both doc_vectors and query_vectors")
        doc_vectors = encoder.encode_documents([corpus[d] for d in doc_ids], batch_size=batch_size,
                                               show_progress=show_progress)
        query_vectors = encoder.encode_queries([queries[q] for q in query_ids], batch_size=batch_size,
                                               show_progress=show_progress)
    doc_vectors = np.ascontiguousarray(doc_vectors, dtype=np.float32)
    query_vectors = np.ascontiguousarray(query_vectors, dtype=np.float32)
    if doc_vectors.ndim != 2 or doc_vectors.shape[0] != len(doc_ids):
        raise InvalidValueError(f"doc_vectors must be [{len(doc_ids)}, dim], got shape {doc_vectors.shape}")
    if query_vectors.shape != (len(query_ids), doc_vectors.shape[1]):
        raise InvalidValueError(f"query_vectors must be [{len(query_ids)}, {doc_vectors.shape[1]}], got {query_vectors.shape}")
    full = doc_vectors.shape[1]
    bad_dims = [d for d in dims if d is not None and d > full]
    if bad_dims:
        raise InvalidValueError(f"dims {bad_dims} exceed the embedding dimension {full}")
    dims = list(dict.fromkeys(full if d is None else int(d) for d in dims))
    k = min(int(k), len(doc_ids))

    rows: list[dict] = []
    runs: dict[int, dict] = {}  # row number -> run, for reranking
    for dim in dims:
        docs = doc_vectors if dim == full else kernels.truncate_normalize(doc_vectors, dim, num_threads=num_threads)
        qs = query_vectors if dim == full else kernels.truncate_normalize(query_vectors, dim, num_threads=num_threads)
        for kind in index_kinds:
            for precision in precisions:
                if kind == "hnsw" and precision != "float32":
                    continue  # HNSWIndex stores float32 vectors
                grid = [1] if (kind == "exact" and precision == "float32") else multipliers
                index = None
                for multiplier in grid:
                    if index is None:
                        start = time.perf_counter()
                        index = _make_index(kind, precision, dim, multiplier, num_threads)
                        index.add(docs)
                        build_s = time.perf_counter() - start
                    params = ({"ef": k * multiplier} if kind == "hnsw" else
                              {} if precision == "float32" else {"oversample": multiplier})
                    ids, scores, seconds = _search_one_by_one(index, qs, k, params)
                    run = _run(ids, scores, query_ids, doc_ids)
                    metrics = _evaluate(run, qrels)
                    scanned = {"float32": 4 * dim, "int8": dim, "binary": (dim + 7) // 8}[precision]
                    rows.append({
                        "precision": precision, "dim": dim, "multiplier": multiplier, "index": kind, "rerank": False,
                        "hybrid": False,
                        **metrics,
                        "latency_ms_p50": float(np.median(seconds) * 1e3),
                        "latency_ms_mean": float(seconds.mean() * 1e3),
                        "bytes_per_vector": scanned,
                        "index_bytes_per_vector": index._memory_bytes() / max(len(index), 1),
                        "build_s": build_s,
                    })
                    runs[len(rows) - 1] = (run, seconds)
    first_pass = list(rows)
    if True in rerank:
        rows.extend(_rerank_rows(rows, runs, reranker, corpus, queries, qrels, rerank_configs, rerank_depth,
                                 float(first_stage_weight),
                                 batch_size, full, show_progress))
    if hybrid:
        rows.extend(_hybrid_rows(first_pass, runs, corpus, doc_ids, queries, query_ids, qrels, k))
    if False not in rerank:
        rows = [r for r in rows if r["rerank"]]
    return rows


def _hybrid_rows(rows, runs, corpus, doc_ids, queries, query_ids, qrels, k) -> list[dict]:
    """Each first-pass row fused with one BM25 run (convex, weight 0.5)."""
    from embedrank.index.lexical import LexicalIndex
    from embedrank.retrieval.fusion import fuse_candidates

    lexical = LexicalIndex()
    lexical.add([document_text(corpus[d]) for d in doc_ids], ids=np.arange(len(doc_ids)))
    start = time.perf_counter()
    found = lexical.search([queries[q] for q in query_ids], k)
    lexical_ms = (time.perf_counter() - start) * 1e3 / len(query_ids)
    position = {d: i for i, d in enumerate(doc_ids)}
    out = []
    for number, row in enumerate(rows):
        run, seconds = runs[number]
        fused_run = {}
        for qid, lex_ids, lex_scores in zip(query_ids, found.ids, found.scores):
            dense_docs = np.array([position[d] for d in run[qid]], dtype=np.int64)
            dense = (dense_docs, np.array(list(run[qid].values()), dtype=np.float32), dense_docs)
            live = lex_ids >= 0
            lex = (lex_ids[live].astype(np.int64), lex_scores[live], lex_ids[live].astype(np.int64))
            docs, scores, _ = fuse_candidates(dense, lex, "convex", 0.5, 60, k)
            fused_run[qid] = {doc_ids[d]: float(s) for d, s in zip(docs.tolist(), scores.tolist())}
        out.append({**row, "hybrid": True, **_evaluate(fused_run, qrels),
                    "latency_ms_p50": float(np.median(seconds) * 1e3) + lexical_ms,
                    "latency_ms_mean": float(seconds.mean() * 1e3) + lexical_ms})
    return out


def _evaluate(run: dict, qrels: dict) -> dict:
    from embedrank.data.evaluation import evaluate

    return evaluate(run, qrels, metrics=["ndcg@10", "recall@100"])["mean"]


def _rerank_rows(rows, runs, reranker, corpus, queries, qrels, rerank_configs, depth, weight, batch_size, full_dim,
                 show_progress) -> list[dict]:
    """Reranked copies of the chosen rows; pair scores computed once and shared."""
    if rerank_configs == "all":
        chosen = list(range(len(rows)))
    else:
        chosen = []
        for precision in dict.fromkeys(r["precision"] for r in rows):
            mine = [i for i, r in enumerate(rows) if r["precision"] == precision]
            chosen.append(max(mine, key=lambda i: (rows[i]["ndcg@10"], -i)))
        baseline = [i for i, r in enumerate(rows)
                    if (r["precision"], r["dim"], r["index"]) == ("float32", full_dim, "exact")]
        chosen = sorted(set(chosen + baseline))
    tops = {}
    wanted: dict[tuple[str, str], None] = {}
    for i in chosen:
        run = runs[i][0]
        tops[i] = {qid: sorted(docs, key=lambda d: -docs[d])[:depth] for qid, docs in run.items()}
        for qid, docs in tops[i].items():
            for d in docs:
                wanted[(qid, d)] = None
    pairs = list(wanted)
    start = time.perf_counter()
    scores = reranker.predict([(queries[q], document_text(corpus[d])) for q, d in pairs], batch_size=batch_size,
                              activation=None, show_progress=show_progress)
    per_pair = (time.perf_counter() - start) / max(len(pairs), 1)
    score_of = dict(zip(pairs, scores.tolist()))
    out = []
    for i in chosen:
        first_stage_run, seconds = runs[i]
        run = {}
        for qid, docs in tops[i].items():
            reranked = {d: score_of[(qid, d)] + weight * first_stage_run[qid][d] for d in docs}
            # documents below the rerank depth keep their order, below every reranked one
            rest = sorted(set(first_stage_run[qid]) - set(docs), key=lambda d: -first_stage_run[qid][d])
            low = min(reranked.values(), default=0.0) - 1.0
            run[qid] = {**reranked, **{d: low - j for j, d in enumerate(rest)}}
        rerank_ms = np.array([len(tops[i][q]) for q in tops[i]], dtype=np.float64) * per_pair * 1e3
        total = seconds * 1e3 + rerank_ms
        out.append({**rows[i], "rerank": True, **_evaluate(run, qrels),
                    "latency_ms_p50": float(np.median(total)), "latency_ms_mean": float(total.mean()),
                    "rerank_depth": depth, "rerank_ms_per_pair": per_pair * 1e3, "first_stage_weight": weight})
    return out


def format_table(rows: Sequence[dict]) -> str:
    """The rows as a GitHub markdown table (one line per row, in the given order)."""
    header = ("precision", "dim", "multiplier", "index", "+BM25", "rerank", "NDCG@10", "Recall@100", "ms/query p50",
              "ms/query mean", "bytes/vector scanned", "index bytes/vector")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        multiplier = f"ef={r['multiplier']}xk" if r["index"] == "hnsw" else (
            "-" if r["precision"] == "float32" else f"{r['multiplier']}x")
        cells = (r["precision"], r["dim"], multiplier, r["index"], "hybrid" if r.get("hybrid") else "-",
                 "on" if r["rerank"] else "off",
                 f"{r['ndcg@10']:.4f}", f"{r['recall@100']:.4f}", f"{r['latency_ms_p50']:.3f}",
                 f"{r['latency_ms_mean']:.3f}", f"{r['bytes_per_vector']:g}", f"{r['index_bytes_per_vector']:.0f}")
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"
