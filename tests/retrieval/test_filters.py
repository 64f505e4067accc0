"""Retriever.search(filter=...): metadata given to add(), or document ids, on both sides of a
hybrid search and through the reranker; kept by save/load; bad filters and metadata refused."""

from __future__ import annotations

import numpy as np
import pytest

from embedrank.errors import InvalidTypeError, InvalidValueError
from embedrank.index import FlatIndex, HNSWIndex, LexicalIndex
from embedrank.retrieval.retriever import Retriever

LONG = " ".join(f"Paragraph {i} is about indexing of documents and their retrieval." for i in range(80))


@pytest.fixture(scope="module")
def corpus_and_metadata(adi):
    corpus = {**adi[0], "long": {"title": "Long", "text": LONG}}
    ids = list(corpus)
    # every third document in 'even' years; the long one (many windows) in its own group
    metadata = {d: {"year": 2000 + (i % 3), "group": "long" if d == "long" else "adi"} for i, d in enumerate(ids)}
    return corpus, metadata


@pytest.fixture(scope="module")
def filtered(encoder, corpus_and_metadata):
    corpus, metadata = corpus_and_metadata
    retriever = Retriever(encoder, FlatIndex(encoder.dim), lexical=LexicalIndex(), candidates=40, top_k=10)
    retriever.add(corpus, metadata=metadata)
    return retriever


def _unfiltered_then_kept(retriever, query, allowed_docs, mode, top_k):
    """The reference: the same retriever searched without a filter over every document, then
    the allowed documents kept in their order (BM25 statistics stay those of the whole index)."""
    everything = retriever.search(query, mode=mode, top_k=10_000, candidates=10_000)[0]
    allowed = set(allowed_docs)
    return [h for h in everything if h.doc_id in allowed][:top_k]


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_a_metadata_filter_equals_searching_only_the_matching_documents(filtered, corpus_and_metadata, adi, mode):
    _, metadata = corpus_and_metadata
    allowed = [d for d, m in metadata.items() if m["year"] == 2001]
    for query in list(adi[1].values())[:4]:
        hits = filtered.search(query, mode=mode, filter={"year": 2001})[0]
        assert hits and all(metadata[h.doc_id]["year"] == 2001 for h in hits)
        if mode != "hybrid":  # hybrid's min-max normalization depends on the candidate lists: only the membership is fixed
            expected = _unfiltered_then_kept(filtered, query, allowed, mode, 10)
            assert [h.doc_id for h in hits] == [h.doc_id for h in expected]
            np.testing.assert_allclose([h.score for h in hits], [h.score for h in expected], rtol=1e-5, atol=1e-6)


def test_a_document_id_filter_and_value_lists(filtered, corpus_and_metadata):
    _, metadata = corpus_and_metadata
    few = ["long", "3", "7", "never-added"]
    for mode in ("dense", "lexical", "hybrid"):
        hits = filtered.search("indexing of documents", mode=mode, filter=few, top_k=10)[0]
        assert {h.doc_id for h in hits} <= {"long", "3", "7"} and "long" in {h.doc_id for h in hits}
    hits = filtered.search("indexing", filter={"year": [2000, 2002]}, top_k=50)[0]
    assert hits and all(metadata[h.doc_id]["year"] in (2000, 2002) for h in hits)
    assert filtered.search("indexing", filter={"group": "nobody"})[0] == []
    assert filtered.search("indexing", filter=[])[0] == []


def test_a_filter_reaches_the_reranker(encoder, adi, corpus_and_metadata, tmp_path_factory, minilm_source):
    from embedrank import CrossEncoder
    from tests.models.cross_encoder_fixtures import cross_encoder_folders

    _, folder = cross_encoder_folders(tmp_path_factory, minilm_source, full=False)
    reranker = CrossEncoder.load(folder)
    corpus, metadata = corpus_and_metadata
    retriever = Retriever(encoder, FlatIndex(encoder.dim), reranker=reranker, lexical=True, candidates=20)
    retriever.add(corpus, metadata=metadata)
    hits = retriever.search(list(adi[1].values())[0], filter={"year": 2002}, rerank=True)[0]
    assert hits and all(metadata[h.doc_id]["year"] == 2002 for h in hits)


def test_filters_survive_save_and_load_with_hnsw(encoder, corpus_and_metadata, tmp_path):
    corpus, metadata = corpus_and_metadata
    retriever = Retriever(encoder, HNSWIndex(encoder.dim), lexical=True, candidates=30)
    retriever.add(corpus, metadata=metadata)
    before = retriever.search("retrieval of documents", filter={"group": "long"})[0]
    loaded = Retriever.load(retriever.save(tmp_path / "r"))
    after = loaded.search("retrieval of documents", filter={"group": "long"})[0]
    assert [h.doc_id for h in before] == [h.doc_id for h in after] == ["long"]


def test_list_metadata_aligned_with_a_list_corpus(encoder):
    retriever = Retriever(encoder, FlatIndex(encoder.dim))
    ids = retriever.add(["cats purr", "dogs bark", "cats sleep"], metadata=[{"pet": "cat"}, None, {"pet": "cat"}])
    hits = retriever.search("an animal", filter={"pet": "cat"})[0]
    assert {h.doc_id for h in hits} == {ids[0], ids[2]}


@pytest.mark.parametrize("metadata, error, needle", [
    ({"no-such-doc": {"a": 1}}, InvalidValueError, "not in this corpus"),
    ([{"a": 1}], InvalidValueError, "1 entries but the corpus 2"),
    ("a=1", InvalidTypeError, "metadata must be"),
    ({"x": {"a": float("nan")}}, InvalidValueError, "NaN or Inf"),
    ({"x": {1: "int key"}}, InvalidTypeError, "keys must be str"),
])
def test_bad_metadata_is_refused_before_anything_is_added(encoder, metadata, error, needle):
    retriever = Retriever(encoder, FlatIndex(encoder.dim), lexical=True)
    with pytest.raises(error, match=needle):
        retriever.add({"x": "one text", "y": "another"}, metadata=metadata)
    assert len(retriever.store) == 0 and len(retriever.index) == 0 and len(retriever.lexical) == 0


@pytest.mark.parametrize("bad, error", [
    ("3", InvalidTypeError), (3, InvalidTypeError), ([3], InvalidTypeError), (np.array("3"), InvalidTypeError),
    ({"year": {"$gt": 2000}}, InvalidTypeError), ({"year": float("inf")}, InvalidValueError),
    ({"year": "\ud800"}, InvalidValueError), ({"\ud800": 1}, InvalidValueError),
])
def test_bad_filters_get_a_clear_error(filtered, encoder, bad, error):
    with pytest.raises(error):
        filtered.search("indexing", filter=bad)
    if isinstance(bad, dict):  # checked even where no index is searched
        with pytest.raises(error):
            filtered.search([], filter=bad)
        with pytest.raises(error):
            Retriever(encoder, FlatIndex(encoder.dim)).search("anything", filter=bad)


def test_bad_metadata_names_the_document(encoder):
    retriever = Retriever(encoder, FlatIndex(encoder.dim))
    with pytest.raises(InvalidTypeError, match="document '3'"):
        retriever.add({"7": "a", "1": "b", "3": "c"}, metadata={"1": {"ok": 1}, "3": "oops"})
