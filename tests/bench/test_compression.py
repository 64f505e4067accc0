"""embedrank.bench.compression_sweep on ADI with a tiny grid (real MiniLM vectors)."""

from __future__ import annotations


import numpy as np
import pytest

import embedrank
from embedrank.bench.compression import compression_sweep, format_table
from embedrank.utils.documents import document_text


@pytest.fixture(scope="module")
def vectors(encoder, adi):
    corpus, queries, _ = adi
    return encoder.encode_documents(list(corpus.values())), encoder.encode_queries(list(queries.values()))


@pytest.fixture(scope="module")
def rows(encoder, adi, reranker):
    corpus, queries, qrels = adi
    return compression_sweep(encoder, corpus, queries, qrels, reranker, dims=(None, 64), multipliers=(1, 10),
                             k=10, rerank_depth=5)


def _exact_metrics(doc_vectors, query_vectors, adi, k=10):
    corpus, queries, qrels = adi
    doc_ids = list(corpus)
    scores = query_vectors @ doc_vectors.T
    run = {}
    for qid, row in zip(queries, scores):
        top = np.argsort(-row, kind="stable")[:k]
        run[qid] = {doc_ids[i]: float(row[i]) for i in top}
    return run, embedrank.evaluate(run, qrels, metrics=["ndcg@10", "recall@100"])["mean"]


def test_grid_shape(rows):
    plain = [r for r in rows if not r["rerank"]]
    # per dim: exact float32 (1) + int8 (2 multipliers) + binary (2) + hnsw float32 (2)
    assert len(plain) == 2 * 7
    assert {(r["precision"], r["index"]) for r in plain} == {("float32", "exact"), ("int8", "exact"),
                                                              ("binary", "exact"), ("float32", "hnsw")}
    for r in plain:
        assert 0 <= r["ndcg@10"] <= 1 and 0 <= r["recall@100"] <= 1
        assert r["latency_ms_p50"] > 0 and r["latency_ms_mean"] > 0 and r["build_s"] > 0
    bytes_of = {(r["precision"], r["dim"]): r["bytes_per_vector"] for r in plain if r["index"] == "exact"}
    assert bytes_of == {("float32", 384): 1536, ("int8", 384): 384, ("binary", 384): 48,
                        ("float32", 64): 256, ("int8", 64): 64, ("binary", 64): 8}
    int8_row = next(r for r in plain if r["precision"] == "int8" and r["dim"] == 384)
    assert int8_row["index_bytes_per_vector"] == pytest.approx(384 + 1536)  # codes + the float32 originals


def test_exact_rows_equal_a_numpy_search(rows, vectors, adi):
    docs, queries = vectors
    full = next(r for r in rows if (r["precision"], r["dim"], r["index"], r["rerank"]) == ("float32", 384, "exact", False))
    expected = _exact_metrics(docs, queries, adi)[1]
    assert full["ndcg@10"] == pytest.approx(expected["ndcg@10"], abs=1e-9)
    assert full["recall@100"] == pytest.approx(expected["recall@100"], abs=1e-9)
    small = next(r for r in rows if (r["precision"], r["dim"], r["index"], r["rerank"]) == ("float32", 64, "exact", False))
    truncated = embedrank.kernels.truncate_normalize(docs, 64), embedrank.kernels.truncate_normalize(queries, 64)
    assert small["ndcg@10"] == pytest.approx(_exact_metrics(*truncated, adi)[1]["ndcg@10"], abs=1e-9)


def test_enough_rescoring_recovers_the_float32_ranking(rows):
    # 10 x k = 100 candidates >= 82 documents: every document is rescored in float32
    for dim in (384, 64):
        exact = next(r for r in rows if (r["precision"], r["dim"], r["index"], r["rerank"]) == ("float32", dim, "exact", False))
        for precision in ("int8", "binary"):
            full_rescore = next(r for r in rows if (r["precision"], r["dim"], r["multiplier"], r["rerank"]) == (precision, dim, 10, False))
            assert full_rescore["ndcg@10"] == pytest.approx(exact["ndcg@10"], abs=1e-6)


def test_rerank_rows_follow_the_cross_encoder(rows, reranker, vectors, adi):
    corpus, queries, qrels = adi
    reranked = [r for r in rows if r["rerank"]]
    assert {r["precision"] for r in reranked} == {"float32", "int8", "binary"}
    baseline = next(r for r in reranked if (r["precision"], r["dim"], r["index"]) == ("float32", 384, "exact"))
    plain = next(r for r in rows if not r["rerank"] and (r["precision"], r["dim"], r["index"]) == ("float32", 384, "exact"))
    assert baseline["latency_ms_p50"] > plain["latency_ms_p50"]
    # by hand: the top 5 reordered by the cross-encoder, the rest after them
    run, _ = _exact_metrics(*vectors, adi)
    by_hand = {}
    for qid, docs in run.items():
        top = sorted(docs, key=lambda d: -docs[d])
        logits = reranker.predict([(queries[qid], document_text(corpus[d])) for d in top[:5]], activation=None)
        by_hand[qid] = {**dict(zip(top[:5], logits.tolist())),
                        **{d: float(logits.min()) - 1 - j for j, d in enumerate(top[5:])}}
    expected = embedrank.evaluate(by_hand, qrels, metrics=["ndcg@10", "recall@100"])["mean"]
    assert baseline["ndcg@10"] == pytest.approx(expected["ndcg@10"], abs=1e-6)
    assert baseline["recall@100"] == pytest.approx(plain["recall@100"], abs=1e-9)  # reranking only reorders


def test_first_stage_weight_fuses_scores_in_the_rerank_rows(reranker, vectors, adi):
    corpus, queries, qrels = adi
    weight = 25.0
    fused = compression_sweep(None, corpus, queries, qrels, reranker, precisions=["float32"], dims=[None],
                              multipliers=[1], index_kinds=["exact"], rerank=[True], k=10, rerank_depth=5,
                              doc_vectors=vectors[0], query_vectors=vectors[1], first_stage_weight=weight)
    assert len(fused) == 1 and fused[0]["first_stage_weight"] == weight
    run, _ = _exact_metrics(*vectors, adi)
    by_hand = {}
    for qid, docs in run.items():
        top = sorted(docs, key=lambda d: -docs[d])
        logits = reranker.predict([(queries[qid], document_text(corpus[d])) for d in top[:5]], activation=None)
        head = {d: float(logit) + weight * docs[d] for d, logit in zip(top[:5], logits)}
        by_hand[qid] = {**head, **{d: min(head.values()) - 1 - j for j, d in enumerate(top[5:])}}
    expected = embedrank.evaluate(by_hand, qrels, metrics=["ndcg@10"])["mean"]
    assert fused[0]["ndcg@10"] == pytest.approx(expected["ndcg@10"], abs=1e-6)


def test_format_table(rows):
    table = format_table(rows)
    lines = table.strip().splitlines()
    assert len(lines) == 2 + len(rows)
    assert lines[0].startswith("| precision | dim |")
    assert any("| binary | 64 | 10x | exact | - | off |" in line for line in lines)
    assert any("| float32 | 384 | ef=10xk | hnsw | - | off |" in line for line in lines)


def test_precomputed_vectors_and_rerank_off_only(adi, vectors):
    corpus, queries, qrels = adi
    rows = compression_sweep(None, corpus, queries, qrels, precisions=["binary"], dims=[32], multipliers=[2],
                             index_kinds=["exact"], k=10, doc_vectors=vectors[0], query_vectors=vectors[1])
    assert len(rows) == 1 and rows[0]["dim"] == 32 and rows[0]["bytes_per_vector"] == 4 and not rows[0]["rerank"]


def test_hybrid_rows_fuse_each_first_pass_row_with_bm25(adi, vectors):
    from embedrank.index.lexical import LexicalIndex
    from embedrank.retrieval.fusion import fuse_candidates
    from embedrank.utils.documents import document_text

    corpus, queries, qrels = adi
    rows = compression_sweep(None, corpus, queries, qrels, precisions=["float32"], dims=[None], multipliers=[1],
                             index_kinds=["exact"], k=100, doc_vectors=vectors[0], query_vectors=vectors[1],
                             hybrid=True)
    assert [r["hybrid"] for r in rows] == [False, True]
    doc_ids = list(corpus)
    lexical = LexicalIndex()
    lexical.add([document_text(corpus[d]) for d in doc_ids], ids=np.arange(len(doc_ids)))
    dense_run, _ = _exact_metrics(vectors[0], vectors[1], adi, k=len(doc_ids))
    run = {}
    for qid, text in queries.items():
        found = lexical.search(text, 100)
        live = found.ids[0] >= 0
        lex = (found.ids[0][live], found.scores[0][live], found.ids[0][live])
        dense_docs = np.array([doc_ids.index(d) for d in dense_run[qid]], dtype=np.int64)
        dense = (dense_docs, np.array(list(dense_run[qid].values()), np.float32), dense_docs)
        docs, scores, _ = fuse_candidates(dense, lex, "convex", 0.5, 60, 100)
        run[qid] = {doc_ids[d]: float(s) for d, s in zip(docs, scores)}
    expected = embedrank.evaluate(run, qrels, metrics=["ndcg@10", "recall@100"])["mean"]
    assert rows[1]["ndcg@10"] == pytest.approx(expected["ndcg@10"], abs=1e-9)
    assert rows[1]["ndcg@10"] > rows[0]["ndcg@10"]  # BM25 helps MiniLM on ADI


@pytest.mark.parametrize("kwargs, error, match", [
    ({"precisions": ["fp16"]}, ValueError, "unknown precisions"),
    ({"precisions": []}, ValueError, "precisions must not be empty"),
    ({"precisions": "int8"}, TypeError, "precisions must be a sequence"),
    ({"index_kinds": ["ivf"]}, ValueError, "unknown index_kinds"),
    ({"dims": [0]}, ValueError, "dims"),
    ({"dims": [1000]}, ValueError, "exceed the embedding dimension 384"),
    ({"multipliers": [0]}, ValueError, "multipliers"),
    ({"k": 0}, ValueError, "k must be"),
    ({"rerank": [True]}, ValueError, "no reranker"),
    ({"rerank_configs": "some"}, ValueError, "rerank_configs"),
    ({"rerank_depth": 0}, ValueError, "rerank_depth"),
    ({"first_stage_weight": -1.0}, ValueError, "first_stage_weight"),
    ({"first_stage_weight": float("inf")}, ValueError, "first_stage_weight"),
])
def test_bad_arguments(adi, vectors, kwargs, error, match):
    corpus, queries, qrels = adi
    with pytest.raises(error, match=match):
        compression_sweep(None, corpus, queries, qrels, doc_vectors=vectors[0], query_vectors=vectors[1], **kwargs)


def test_bad_data(adi, vectors):
    corpus, queries, qrels = adi
    with pytest.raises(ValueError, match="corpus must be a non-empty dict"):
        compression_sweep(None, {}, queries, qrels, doc_vectors=vectors[0], query_vectors=vectors[1])
    with pytest.raises(ValueError, match="doc_vectors must be"):
        compression_sweep(None, corpus, queries, qrels, doc_vectors=vectors[0][:5], query_vectors=vectors[1])
    with pytest.raises(ValueError, match="query_vectors must be"):
        compression_sweep(None, corpus, queries, qrels, doc_vectors=vectors[0], query_vectors=vectors[1][:, :10])
    with pytest.raises(ValueError, match="give an encoder"):
        compression_sweep(None, corpus, queries, qrels)


def test_public_name():
    import embedrank.bench

    assert embedrank.bench.compression_sweep is compression_sweep
