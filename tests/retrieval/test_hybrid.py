"""Hybrid retrieval: a Retriever with a LexicalIndex beside its vector index, on ADI and the real MiniLM."""

from __future__ import annotations

import numpy as np
import pytest

import embedrank
from embedrank.errors import InvalidTypeError, InvalidValueError, RetrieverFormatError
from embedrank.index import FlatIndex, LexicalIndex
from embedrank.retrieval.fusion import fuse_candidates
from embedrank.retrieval.retriever import Retriever

LONG = {"title": "Report", "text": " ".join(f"Paragraph {i} is about card catalogues." for i in range(60))
        + " The last one mentions a unique word: xylophonist."}


@pytest.fixture(scope="module")
def hybrid(encoder, adi):
    retriever = Retriever(encoder, FlatIndex(encoder.dim), lexical=LexicalIndex(), candidates=30, top_k=10)
    retriever.add({**adi[0], "long": LONG})
    return retriever


def _ndcg(retriever, queries, qrels, mode):
    hits = retriever.search(list(queries.values()), mode=mode)
    run = {q: {h.doc_id: h.score for h in hs} for q, hs in zip(queries, hits)}
    return embedrank.evaluate(run, qrels, ["ndcg@10"])["mean"]["ndcg@10"]


def test_lexical_mode_equals_the_lexical_index_over_the_windows(hybrid, adi):
    queries = list(adi[1].values())[:5]
    hits = hybrid.search(queries, mode="lexical", top_k=5)
    for query, found in zip(queries, hits):
        result = hybrid.lexical.search(query, 200)
        best: dict[str, float] = {}
        for window, score in zip(result.ids[0].tolist(), result.scores[0].tolist()):
            if window >= 0:
                doc = hybrid.store.doc_ids[hybrid.store.chunk_doc[window]]
                best.setdefault(doc, score)
        expected = sorted(best.items(), key=lambda kv: -kv[1])[:5]
        assert [h.doc_id for h in found] == [d for d, _ in expected]
        np.testing.assert_allclose([h.score for h in found], [s for _, s in expected], rtol=1e-6)


def test_hybrid_is_the_fusion_of_both_sides(hybrid, adi):
    query = list(adi[1].values())[3]
    dense = hybrid._dense_candidates(hybrid.encoder.encode_queries([query]), hybrid.candidates)[0]
    lexical = hybrid._lexical_candidates([query], hybrid.candidates)[0]
    docs, scores, _ = fuse_candidates(dense, lexical, "convex", 0.5, 60, hybrid.candidates)
    hits = hybrid.search(query)[0]
    assert [h.doc_id for h in hits] == [hybrid.store.doc_ids[d] for d in docs[:10].tolist()]
    assert hybrid.last_timings.lexical_ms > 0 and hybrid.last_timings.encode_ms > 0


def test_lexical_finds_a_rare_word_deep_in_a_long_document(hybrid):
    hits = hybrid.search("xylophonist", mode="lexical", top_k=1)[0]
    assert hits[0].doc_id == "long" and "xylophonist" in hits[0].passage


def test_hybrid_beats_both_inputs_on_adi(hybrid, adi):
    _, queries, qrels = adi
    dense, lexical = _ndcg(hybrid, queries, qrels, "dense"), _ndcg(hybrid, queries, qrels, "lexical")
    both = _ndcg(hybrid, queries, qrels, "hybrid")
    assert both > max(dense, lexical), (dense, lexical, both)


def test_choose_lexical_weight_sets_and_saves_it(encoder, adi, tmp_path):
    corpus, queries, qrels = adi
    retriever = Retriever(encoder, FlatIndex(encoder.dim), lexical=True, candidates=20)
    retriever.add(corpus)
    weight, report = retriever.choose_lexical_weight(queries, qrels, weights=[0.0, 0.3, 0.5, 1.0])
    assert retriever.lexical_weight == weight and set(report["ndcg@10"]) == {"0.0", "0.3", "0.5", "1.0"}
    assert report["ndcg@10"][str(weight)] == max(report["ndcg@10"].values())
    retriever.fusion = "rrf"
    retriever.save(tmp_path / "r")
    loaded = Retriever.load(tmp_path / "r", encoder=encoder)
    assert (loaded.lexical_weight, loaded.fusion) == (weight, "rrf") and isinstance(loaded.lexical, LexicalIndex)
    texts = list(queries.values())[:6]
    assert loaded.search(texts) == retriever.search(texts)
    assert loaded.search(texts, mode="lexical") == retriever.search(texts, mode="lexical")


def test_a_failed_add_leaves_both_indexes_as_they_were(encoder):
    retriever = Retriever(encoder, FlatIndex(encoder.dim), lexical=True)
    retriever.add({"a": "first document"})

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    retriever.store.append = broken
    with pytest.raises(RuntimeError, match="disk full"):
        retriever.add({"b": "second document", "c": "third"})
    assert len(retriever.index) == 1 and len(retriever.lexical) == 1


def test_bad_hybrid_arguments(encoder, hybrid):
    with pytest.raises(InvalidValueError, match="mode must be"):
        hybrid.search("x", mode="sparse")
    dense_only = Retriever(encoder, FlatIndex(encoder.dim))
    with pytest.raises(InvalidValueError, match="needs a lexical index"):
        dense_only.search("x", mode="hybrid")
    with pytest.raises(InvalidTypeError, match="lexical must be None, True or a LexicalIndex"):
        Retriever(encoder, FlatIndex(encoder.dim), lexical="bm25")
    used = LexicalIndex()
    used.add(["x"])
    with pytest.raises(InvalidValueError, match="already holds 1"):
        Retriever(encoder, FlatIndex(encoder.dim), lexical=used)
    with pytest.raises(InvalidValueError, match="fusion must be"):
        Retriever(encoder, FlatIndex(encoder.dim), fusion="max")
    with pytest.raises(InvalidValueError, match="lexical_weight must be"):
        hybrid.lexical_weight = 2
    with pytest.raises(InvalidValueError, match="needs a lexical index"):
        dense_only.choose_lexical_weight({"q": "x"}, {"q": {"a": 1}})


def test_a_lexical_folder_that_does_not_match_is_refused(encoder, tmp_path):
    retriever = Retriever(encoder, FlatIndex(encoder.dim), lexical=True)
    retriever.add({"a": "first document", "b": "second"})
    retriever.save(tmp_path / "r")
    other = LexicalIndex()
    other.add(["only one"], ids=[0])
    other.save(tmp_path / "r" / "lexical")
    with pytest.raises(RetrieverFormatError, match="not a LexicalIndex of the retriever's 2 windows"):
        Retriever.load(tmp_path / "r", encoder=encoder)
