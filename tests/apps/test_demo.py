"""`embedrank demo` pieces: the held-out split, the fusion-weight choice, the rerank merge, and a
whole run on ADI (no train split: no reranker) with the exported model pre-seeded in the cache."""

from __future__ import annotations

import json
import shutil

import pytest

from embedrank.apps import demo
from embedrank.data.demo_data import DemoData, load_beir_demo
from embedrank.retrieval.fusion import FUSION_WEIGHTS, rerank_on_top
from embedrank.retrieval.retriever import Hit
from tests.conftest import SHARED_DATA

ADI = SHARED_DATA / "adi"
needs_adi = pytest.mark.skipif(not (ADI / "corpus.jsonl").is_file(), reason=f"needs the ADI data at {ADI}")


def hit(doc_id: str) -> Hit:
    return Hit(doc_id, 0.0, "", "")


def test_rerank_on_top_keeps_the_first_stage_tail_in_order():
    first = [[hit(d) for d in "abcdef"], [hit(d) for d in "xyz"]]
    top = [[hit("c"), hit("a")], [hit("z")]]
    merged = rerank_on_top(first, top)
    assert [[h.doc_id for h in hits] for hits in merged] == [list("cabdef"), list("zxy")]


def toy_data(n_train: int) -> DemoData:
    corpus = {f"d{i}": {"title": "", "text": f"text {i}"} for i in range(10)}
    train_queries = {f"t{i}": f"query {i}" for i in range(n_train)}
    train_qrels = {f"t{i}": {f"d{i % 10}": 1} for i in range(n_train)}
    train_qrels["t0"] = {"d0": 0}  # judged but nothing relevant: never used
    return DemoData("toy", corpus, {}, {}, train_queries, train_qrels)


@pytest.mark.parametrize("n_train", [3, 40, 809])
def test_held_out_train_queries_are_disjoint_judged_and_seeded(n_train):
    data = toy_data(n_train)
    train, held_out = demo._held_out_train_queries(data)
    assert set(train).isdisjoint(held_out) and held_out
    assert set(train) | set(held_out) == {q for q in data.train_qrels if q != "t0"}
    assert len(held_out) == min(demo.FUSION_DEV_QUERIES, max(1, (n_train - 1) // 5))
    assert (train, held_out) == demo._held_out_train_queries(data)


@needs_adi
def test_fusion_weight_is_the_best_on_the_held_out_queries_and_cached(encoder_and_retriever, test_cross_encoder,
                                                                      tmp_path):
    retriever, data = encoder_and_retriever
    # ADI has no train split: its test queries stand in for train queries here
    data = DemoData(data.name, data.corpus, {}, {}, data.queries, data.qrels)
    folder = tmp_path / "reranker-adi-1steps"
    folder.mkdir()
    weight = demo.choose_fusion_weight(tmp_path, folder, retriever, test_cross_encoder, data)
    record = json.loads((tmp_path / "reranker-adi-1steps.fusion.json").read_text())
    assert weight == record["first_stage_weight"] and weight in FUSION_WEIGHTS
    scores = {float(w): v for w, v in record["fused_ndcg@10"].items()}
    assert set(scores) == set(FUSION_WEIGHTS)
    assert scores[weight] == max(scores.values())
    assert 0 < record["first_stage_ndcg@10"] <= 1
    # the second call reads the record and computes nothing
    assert demo.choose_fusion_weight(tmp_path, folder, retriever, None, data) == weight


@pytest.fixture(scope="module")
def encoder_and_retriever(minilm_export):
    from embedrank.models.encoder import Encoder
    from embedrank.index import FlatIndex
    from embedrank.retrieval.retriever import Retriever

    data = load_beir_demo(ADI)
    encoder = Encoder.load(minilm_export)
    retriever = Retriever(encoder, FlatIndex(encoder.dim))
    retriever.add(data.corpus)
    return retriever, data


@pytest.fixture(scope="module")
def test_cross_encoder(tmp_path_factory, minilm_source):
    from embedrank.models.cross_encoder import CrossEncoder
    from tests.models.cross_encoder_fixtures import cross_encoder_folders

    return CrossEncoder.load(cross_encoder_folders(tmp_path_factory, minilm_source)[1])


@needs_adi
def test_whole_demo_on_adi(minilm_export, tmp_path, capsys):
    cache = tmp_path / "cache"
    shutil.copytree(minilm_export, cache / "models" / "all-MiniLM-L6-v2")
    figures = demo.run_demo(data=ADI, cache_dir=cache, questions=2, show_progress=False)
    out = capsys.readouterr().out
    assert "(cached)" in out and "reranker: none (the data set has no train split" in out
    assert out.count("\n  Q: ") == 2 and "[5/5] evaluation on 35 test queries" in out
    rows = {row["config"]: row for row in figures["rows"]}
    assert len(rows) == 7 and not any("rerank" in config for config in rows)
    exact = rows["exact float32"]
    assert 0.3 < exact["ndcg@10"] <= 1 and 0 < exact["recall@100"] <= 1  # MiniLM on ADI: far above random
    dense = [config for config in rows if "BM25" not in config]
    for config in dense:  # rescoring and HNSW recover exact search on 82 documents
        assert rows[config]["ndcg@10"] == pytest.approx(exact["ndcg@10"], abs=0.02)
    bm25 = rows["BM25 (LexicalIndex, English stems)"]["ndcg@10"]
    hybrid = rows["hybrid float32 + BM25 (convex, weight 0.5)"]["ndcg@10"]
    assert 0.3 < bm25 <= 1 and hybrid > max(bm25, exact["ndcg@10"])
    assert (cache / "embeddings.sqlite").is_file()
