"""embedrank.Retriever on the real MiniLM export, ADI (82 documents) and a MiniLM cross-encoder
with a fresh seeded head (see cross_encoder_fixtures; its scores are arbitrary, which is fine
for checking that reranking follows them)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import embedrank
from embedrank.models.chunking import aggregate_chunk_scores
from embedrank.models.cross_encoder import CrossEncoder
from embedrank.errors import InvalidValueError
from embedrank.index import FlatIndex, HNSWIndex
from embedrank.retrieval.retriever import Hit, Retriever, RetrieverFormatError, SearchTimings, _config_checksum
from tests.conftest import REPO

FILLER = " ".join(f"Paragraph {i} discusses library catalogues, indexing vocabularies and card files." for i in range(40))
LONG_DOC = {"title": "A long report", "text": FILLER + " Finally, volcanic eruptions in Iceland disrupted air travel across Europe."}


@pytest.fixture(scope="module")
def adi_retriever(encoder, adi):
    corpus = adi[0]
    retriever = Retriever(encoder, FlatIndex(encoder.dim), candidates=20, top_k=10)
    retriever.add({**corpus, "long": LONG_DOC})
    return retriever


def _texts(corpus: dict) -> list[str]:
    return [f"{d['title']} {d['text']}".strip() if d.get("title") else d["text"] for d in corpus.values()]


def test_search_equals_exact_numpy_search_on_adi(encoder, adi):
    corpus, queries, _ = adi
    retriever = Retriever(encoder, FlatIndex(encoder.dim), chunking=False, candidates=10, top_k=10)
    assert retriever.add(corpus) == list(corpus)
    query_texts = list(queries.values())
    hits = retriever.search(query_texts)
    doc_vectors = encoder.encode_documents(list(corpus.values()))
    scores = encoder.encode_queries(query_texts) @ doc_vectors.T
    ids = list(corpus)
    assert len(hits) == len(query_texts)
    for row, found in zip(scores, hits):
        assert len(found) == 10 and all(isinstance(h, Hit) for h in found)
        expected = np.argsort(-row, kind="stable")[:10]
        assert [h.doc_id for h in found] == [ids[i] for i in expected]
        assert [h.score for h in found] == pytest.approx(row[expected].tolist(), abs=1e-5)
        for h in found:
            assert h.passage == h.text == _texts({h.doc_id: corpus[h.doc_id]})[0]


def test_quality_on_adi_is_that_of_the_encoder(adi_retriever, adi):
    _, queries, qrels = adi
    ids = list(queries)
    hits = adi_retriever.search([queries[q] for q in ids], top_k=10)
    run = {q: {h.doc_id: h.score for h in found} for q, found in zip(ids, hits)}
    ndcg = embedrank.evaluate(run, qrels, metrics=["ndcg@10"])["mean"]["ndcg@10"]
    assert ndcg > 0.3  # MiniLM on ADI; a broken pipeline (shuffled ids, wrong map) gives ~0.05


def test_long_document_is_chunked_and_its_best_window_is_the_passage(adi_retriever, encoder):
    assert adi_retriever.n_chunks > len(adi_retriever)  # the long document has several windows
    hits = adi_retriever.search(["volcanic eruption in Iceland"], top_k=3)[0]
    assert hits[0].doc_id == "long"
    assert "Iceland" in hits[0].passage and hits[0].passage in hits[0].text
    assert len(hits[0].passage) < len(hits[0].text)
    assert not hits[0].passage.startswith("A long report")  # the last window, not the first
    assert hits[0].text == f"{LONG_DOC['title']} {LONG_DOC['text']}"
    # the score is the best window's: the passage embedded alone gives the same score
    passage_score = float(encoder.encode_queries(["volcanic eruption in Iceland"])[0] @ encoder.encode_documents([hits[0].passage])[0])
    assert hits[0].score == pytest.approx(passage_score, abs=1e-4)


@pytest.mark.parametrize("how", ["max", "mean"])
def test_aggregation_of_window_scores(encoder, how):
    corpus = {"long": LONG_DOC, "short": {"title": "", "text": "Volcanoes erupt lava and ash."},
              "other": {"title": "Cards", "text": "Library card catalogues list books by author."}}
    retriever = Retriever(encoder, FlatIndex(encoder.dim), aggregate=how, candidates=3, top_k=3)
    retriever.add(corpus)
    query = "volcanic eruption in Iceland"
    hits = retriever.search([query])[0]
    chunked = encoder.encode_documents(list(corpus.values()), chunking=True)
    window_scores = encoder.encode_queries([query])[0] @ chunked.embeddings.T
    expected = aggregate_chunk_scores(window_scores, chunked.chunk_to_doc, 3, how=how)  # every window is found here
    assert {h.doc_id: h.score for h in hits} == pytest.approx(dict(zip(corpus, expected.tolist())), abs=1e-5)
    assert [h.score for h in hits] == sorted([h.score for h in hits], reverse=True)


def test_reranking_orders_candidates_by_the_cross_encoder(encoder, reranker, adi):
    corpus, queries, _ = adi
    plain = Retriever(encoder, FlatIndex(encoder.dim), candidates=15, top_k=15)
    plain.add(corpus)
    reranked = Retriever(encoder, FlatIndex(encoder.dim), reranker=reranker, candidates=15, top_k=5)
    reranked.add(corpus)
    query_texts = list(queries.values())[:6]
    before, after = plain.search(query_texts), reranked.search(query_texts)
    moved = 0
    for query, candidates, hits in zip(query_texts, before, after):
        logits = reranker.predict([(query, h.passage) for h in candidates], activation=None)
        order = sorted(range(len(candidates)), key=lambda i: (-logits[i], i))[:5]
        assert [h.doc_id for h in hits] == [candidates[i].doc_id for i in order]
        assert [h.score for h in hits] == pytest.approx([float(logits[i]) for i in order], abs=1e-5)
        moved += [h.doc_id for h in hits] != [h.doc_id for h in candidates[:5]]
    assert moved > 0  # the reranker changed some order
    timings = reranked.last_timings
    assert isinstance(timings, SearchTimings) and timings.queries == 6
    assert timings.encode_ms > 0 and timings.search_ms > 0 and timings.rerank_ms > 0
    assert timings.total_ms >= timings.encode_ms + timings.search_ms + timings.rerank_ms
    assert set(timings.per_query_ms()) == {"encode", "search", "lexical", "rerank", "total"}
    assert timings.lexical_ms == 0.0  # dense mode: no BM25 stage ran
    without = reranked.search(query_texts, rerank=False, top_k=5)
    assert [[h.doc_id for h in hits] for hits in without] == [[h.doc_id for h in hits[:5]] for hits in before]
    assert reranked.last_timings.rerank_ms == 0


def test_first_stage_weight_fuses_the_bi_encoder_score_into_the_rerank(encoder, reranker, adi, tmp_path):
    corpus, queries, _ = adi
    plain = Retriever(encoder, FlatIndex(encoder.dim), candidates=15, top_k=15)
    plain.add(corpus)
    weight = 30.0
    fused = Retriever(encoder, FlatIndex(encoder.dim), reranker=reranker, candidates=15, top_k=15,
                      first_stage_weight=weight)
    fused.add(corpus)
    query_texts = list(queries.values())[:5]
    before, after = plain.search(query_texts), fused.search(query_texts)
    for query, candidates, hits in zip(query_texts, before, after):
        logits = reranker.predict([(query, h.passage) for h in candidates], activation=None)
        expected = {h.doc_id: float(logit) + weight * h.score for h, logit in zip(candidates, logits)}
        assert {h.doc_id: h.score for h in hits} == pytest.approx(expected, abs=1e-4)
        assert [h.score for h in hits] == pytest.approx(sorted(expected.values(), reverse=True), abs=1e-4)
    # a huge weight keeps the first-stage order; the setting survives save / load
    fused.first_stage_weight = 1e6
    assert [[h.doc_id for h in hits] for hits in fused.search(query_texts)] == [
        [h.doc_id for h in hits] for hits in before]
    fused.first_stage_weight = weight
    loaded = Retriever.load(fused.save(tmp_path / "fused"), encoder=encoder, reranker=reranker)
    assert loaded.first_stage_weight == weight and loaded.search(query_texts) == after


def test_rerank_on_the_whole_document(encoder, reranker):
    corpus = {"long": LONG_DOC, "short": {"title": "", "text": "Volcanoes erupt lava and ash."}}
    retriever = Retriever(encoder, FlatIndex(encoder.dim), reranker=reranker, rerank_text="document", top_k=2)
    retriever.add(corpus)
    query = "volcanic eruption in Iceland"
    with pytest.warns(embedrank.TruncationWarning, match="1 of 2 pairs"):  # the whole long document is cut
        hits = retriever.search([query])[0]
    with pytest.warns(embedrank.TruncationWarning):
        expected = reranker.predict([(query, f"{d['title']} {d['text']}".strip()) for d in corpus.values()],
                                    activation=None)
    assert {h.doc_id: h.score for h in hits} == pytest.approx(dict(zip(corpus, expected.tolist())), abs=1e-5)


def test_query_batches_do_not_change_results(encoder, adi):
    corpus, queries, _ = adi
    texts = list(queries.values())[:10]
    one = Retriever(encoder, FlatIndex(encoder.dim), query_batch_size=1, top_k=5)
    many = Retriever(encoder, FlatIndex(encoder.dim), query_batch_size=4, top_k=5)
    one.add(corpus)
    many.add(corpus)
    a, b = one.search(texts), many.search(texts)
    assert [[h.doc_id for h in x] for x in a] == [[h.doc_id for h in x] for x in b]
    assert one.search(texts[0]) == [a[0]]  # one str is a list of one


def test_list_of_texts_gets_string_ids_and_later_adds_continue(encoder):
    retriever = Retriever(encoder, FlatIndex(encoder.dim), top_k=4)
    assert retriever.add(["alpha particles", "beta decay"]) == ["0", "1"]
    assert retriever.add(["gamma rays", "delta wing aircraft"]) == ["2", "3"]
    hits = retriever.search(["aircraft wings"])[0]
    assert hits[0].doc_id == "3" and hits[0].text == "delta wing aircraft"
    assert len(retriever) == 4 and "2" in retriever and retriever.document("2") == {"title": "", "text": "gamma rays"}
    with pytest.raises(KeyError, match="'9'"):
        retriever.document("9")


def test_empty_retriever_and_no_queries(encoder):
    retriever = Retriever(encoder, FlatIndex(encoder.dim))
    assert retriever.search(["anything"]) == [[]]
    retriever.add(["one document"])
    assert retriever.search([]) == []
    assert retriever.search(["q"], top_k=5)[0][0].doc_id == "0"  # fewer documents than top_k: what exists


def test_hnsw_index_works_too(encoder, adi):
    corpus, queries, _ = adi
    flat = Retriever(encoder, FlatIndex(encoder.dim), top_k=5)
    hnsw = Retriever(encoder, HNSWIndex(encoder.dim, ef=200), top_k=5)
    flat.add(corpus)
    hnsw.add(corpus)
    texts = list(queries.values())[:10]
    same = sum(a[0].doc_id == b[0].doc_id for a, b in zip(flat.search(texts), hnsw.search(texts)))
    assert same >= 9  # 82 documents, ef 200: the graph search is all but exact


def test_save_and_load_round_trip(encoder, reranker, adi, tmp_path):
    corpus, queries, _ = adi
    retriever = Retriever(encoder, FlatIndex(encoder.dim, precision="int8"), reranker=reranker, candidates=12,
                          top_k=4, aggregate="mean")
    retriever.add({**corpus, "long": LONG_DOC})
    texts = list(queries.values())[:4] + ["volcanic eruption in Iceland"]
    before = retriever.search(texts)
    saved = retriever.save(tmp_path / "saved")
    # (.index.lock: the lock file of the index's own writes)
    assert sorted(p.name for p in saved.iterdir() if not p.name.endswith(".lock")) == ["chunks.npz", "documents.jsonl",
                                                                                        "index", "retriever.json"]
    loaded = Retriever.load(tmp_path / "saved")
    assert loaded.search(texts) == before
    assert (loaded.candidates, loaded.top_k, loaded.aggregate, loaded.chunking) == (12, 4, "mean", True)
    assert loaded.encoder.variant == "fp32" and loaded.reranker is not None
    assert len(loaded) == len(retriever) and loaded.n_chunks == retriever.n_chunks
    # saving again over it replaces it; adds after a load continue the ids
    loaded.add(["a new document about volcanic ash clouds"])
    loaded.save(tmp_path / "saved")
    again = Retriever.load(tmp_path / "saved", encoder=encoder, reranker=reranker)
    assert len(again) == len(retriever) + 1 and again.document("83")["text"].startswith("a new document")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock")]  # no temporary folder left


def test_load_recovers_a_save_cut_between_its_renames(encoder, tmp_path):
    retriever = Retriever(encoder, FlatIndex(encoder.dim))
    retriever.add(["first", "second"])
    retriever.save(tmp_path / "r")
    os.replace(tmp_path / "r", tmp_path / ".r.old-1-2")  # as if the process died after moving it aside
    assert len(Retriever.load(tmp_path / "r")) == 2


def test_load_refuses_bad_folders_and_changed_models(encoder, reranker, tmp_path):
    retriever = Retriever(encoder, FlatIndex(encoder.dim))
    retriever.add(["first", "second"])
    path = retriever.save(tmp_path / "r")
    with pytest.raises(RetrieverFormatError, match="not found"):
        Retriever.load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RetrieverFormatError, match="retriever.json is missing"):
        Retriever.load(tmp_path / "empty")
    config = json.loads((path / "retriever.json").read_text())
    write_config(path, {**config, "encoder": {**config["encoder"], "fingerprint": "sha256:0000"}})
    with pytest.raises(ValueError, match="fingerprint"):
        Retriever.load(path)
    write_config(path, {**config, "documents": 3})
    with pytest.raises(RetrieverFormatError, match="inconsistent"):
        Retriever.load(path)
    write_config(path, {**config, "format_version": 99})
    with pytest.raises(RetrieverFormatError, match="format_version"):
        Retriever.load(path)
    (path / "retriever.json").write_text("{not json")
    with pytest.raises(RetrieverFormatError, match="not valid JSON"):
        Retriever.load(path)
    (path / "documents.jsonl").write_text('{"_id": "0", "title": ""}\n')
    write_config(path, config, record_files=True)
    with pytest.raises(RetrieverFormatError, match="documents.jsonl:1"):
        Retriever.load(path)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a saved retriever"):
        retriever.save(tmp_path / "foreign")
    assert (tmp_path / "foreign" / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="bi-encoder.*use Encoder"):
        Retriever.load(path, reranker=CrossEncoder.load(encoder.config.path))


@pytest.mark.parametrize("corpus, error, match", [
    ({}, ValueError, "corpus is empty"),
    ([], ValueError, "corpus is empty"),
    ("just a string", TypeError, "corpus must be a dict"),
    (None, TypeError, "corpus must be a dict"),
    ({1: {"text": "t"}}, TypeError, "document ids must be str"),
    ({"a": {"title": "t"}}, ValueError, "'a' has no 'text'"),
    ({"a": {"text": 5}}, TypeError, "'a': text must be a str, got int"),
    ({"a": {"text": "t", "title": 3}}, TypeError, "'a': title must be a str, got int"),
    ({"a": ["t"]}, TypeError, "'a' must be a dict"),
    (["ok", 3], TypeError, r"corpus\[1\] must be a str"),
])
def test_bad_corpus(encoder, corpus, error, match):
    retriever = Retriever(encoder, FlatIndex(encoder.dim))
    with pytest.raises(error, match=match):
        retriever.add(corpus)
    assert len(retriever) == 0 and len(retriever.index) == 0


def test_duplicate_ids_are_refused_and_nothing_is_added(encoder):
    retriever = Retriever(encoder, FlatIndex(encoder.dim))
    retriever.add({"a": {"title": "", "text": "first"}})
    with pytest.raises(ValueError, match=r"already added: \['a'\]"):
        retriever.add({"b": {"text": "second"}, "a": {"text": "again"}})
    assert len(retriever) == 1 and len(retriever.index) == 1
    assert retriever.add(["x"]) == ["1"]  # counting on after one document
    with pytest.raises(ValueError, match="already added"):
        retriever.add({"1": {"text": "clash with an assigned id"}})
    retriever.add({"3": {"text": "an id a list would have been given"}})
    assert retriever.add(["y", "z"]) == ["4", "5"]  # "3" is taken: skipped


@pytest.mark.parametrize("kwargs, error, match", [
    ({"candidates": 0}, ValueError, "candidates"),
    ({"top_k": -1}, ValueError, "top_k"),
    ({"top_k": 2.0}, ValueError, "top_k"),
    ({"aggregate": "median"}, ValueError, "aggregate"),
    ({"rerank_text": "title"}, ValueError, "rerank_text"),
    ({"chunking": "yes"}, TypeError, "chunking"),
    ({"query_batch_size": 0}, ValueError, "query_batch_size"),
    ({"batch_size": True}, ValueError, "batch_size"),
    ({"max_tokens": 0}, ValueError, "max_tokens"),
    ({"overlap": -1}, ValueError, "overlap"),
    ({"reranker": "model"}, TypeError, "reranker must be an embedrank CrossEncoder"),
    ({"first_stage_weight": -1.0}, ValueError, "first_stage_weight"),
    ({"first_stage_weight": float("nan")}, ValueError, "first_stage_weight"),
    ({"first_stage_weight": "1"}, ValueError, "first_stage_weight"),
    ({"first_stage_weight": True}, ValueError, "first_stage_weight"),
])
def test_bad_settings(encoder, kwargs, error, match):
    with pytest.raises(error, match=match):
        Retriever(encoder, FlatIndex(encoder.dim), **kwargs)


def test_bad_models_and_indexes(encoder):
    with pytest.raises(TypeError, match="encoder must be an embedrank Encoder"):
        Retriever("model", FlatIndex(384))
    with pytest.raises(TypeError, match="index must be an embedrank index"):
        Retriever(encoder, np.zeros((3, 384)))
    with pytest.raises(ValueError, match="384"):
        Retriever(encoder, FlatIndex(128))
    filled = FlatIndex(encoder.dim)
    filled.add(np.ones((1, encoder.dim), dtype=np.float32))
    with pytest.raises(ValueError, match="already holds 1 vectors"):
        Retriever(encoder, filled)


def test_bad_search_arguments(adi_retriever):
    with pytest.raises(TypeError, match=r"queries\[1\] must be a str"):
        adi_retriever.search(["ok", None])
    with pytest.raises(TypeError, match="queries"):
        adi_retriever.search(None)
    with pytest.raises(InvalidValueError, match=r"queries\[1\] holds a lone surrogate"):
        adi_retriever.search(["ok", "bad \ud800"])  # not the tokenizer's TypeError
    with pytest.raises(ValueError, match="top_k"):
        adi_retriever.search(["q"], top_k=0)
    with pytest.raises(ValueError, match="candidates"):
        adi_retriever.search(["q"], candidates=-5)
    with pytest.raises(ValueError, match="no reranker"):
        adi_retriever.search(["q"], rerank=True)
    with pytest.raises(TypeError, match="rerank"):
        adi_retriever.search(["q"], rerank="yes")
    with pytest.raises(ValueError, match="top_k"):
        adi_retriever.top_k = 0


def test_public_names():
    assert embedrank.Retriever is Retriever and embedrank.Hit is Hit


# -- damaged, edited and half-written folders; all-or-nothing adds ------------------------------

def sha256_file(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def write_config(folder: Path, config: dict, record_files: bool = False) -> None:
    """Writes retriever.json as an editor who also fixed the checksums would (what a bug or a
    forger could do): to reach the checks behind them."""
    config = dict(config)
    if record_files:
        config["files"] = {name: sha256_file(folder / name) for name in ("documents.jsonl", "chunks.npz")}
    if config.get("format_version") == 2:
        config["checksum"] = _config_checksum(config)
    (folder / "retriever.json").write_text(json.dumps(config, indent=2))


def as_version_1(folder: Path) -> None:
    """Rewrites retriever.json as format_version 1 wrote it (no checksums)."""
    config = json.loads((folder / "retriever.json").read_text())
    for key in ("files", "checksum"):
        config.pop(key)
    (folder / "retriever.json").write_text(json.dumps({**config, "format_version": 1}, indent=2))


@pytest.fixture()
def saved(encoder, tmp_path):
    retriever = Retriever(encoder, FlatIndex(encoder.dim), top_k=3)
    retriever.add({"a": "Cats purr when they are content.", "long": LONG_DOC,
                   "c": {"title": "Stocks", "text": "The stock market fell sharply on Monday."}})
    return retriever.save(tmp_path / "r")


def test_an_edited_documents_file_is_refused(saved, encoder):
    lines = (saved / "documents.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (saved / "documents.jsonl").write_text(lines[2] + lines[1] + lines[0], encoding="utf-8")
    with pytest.raises(RetrieverFormatError, match=r"documents.jsonl is damaged or was edited"):
        Retriever.load(saved, encoder=encoder)


@pytest.mark.parametrize("edit", [
    lambda c: {**c, "settings": {**c["settings"], "top_k": 7}},
    lambda c: {**c, "files": {**c["files"], "chunks.npz": "sha256:" + "0" * 64}},
    lambda c: {key: value for key, value in c.items() if key != "checksum"},
])
def test_an_edited_retriever_json_is_refused(saved, encoder, edit):
    config = json.loads((saved / "retriever.json").read_text())
    (saved / "retriever.json").write_text(json.dumps(edit(config)))
    with pytest.raises(RetrieverFormatError, match="retriever.json"):
        Retriever.load(saved, encoder=encoder)


def write_chunks(folder: Path, **columns) -> None:
    with np.load(folder / "chunks.npz") as arrays:
        current = {name: arrays[name] for name in arrays.files}
    buffer = io.BytesIO()
    np.savez(buffer, **{**current, **columns})
    (folder / "chunks.npz").write_bytes(buffer.getvalue())


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("change, match", [
    (lambda a: {"end": a["end"] + 10_000}, "outside its document"),
    (lambda a: {"start": a["start"] - 1 - a["start"]}, "outside its document"),
    (lambda a: {"start": a["end"] + 1}, "outside its document"),
    (lambda a: {"chunk_doc": a["chunk_doc"][::-1].copy()}, "document order"),
    (lambda a: {"chunk_doc": np.where(a["chunk_doc"] == 2, 1, a["chunk_doc"])}, "'c' has no window"),
    (lambda a: {"start": np.r_[a["start"][:1], a["start"][2:3], a["start"][1:2], a["start"][3:]],
                "end": np.r_[a["end"][:1], a["end"][2:3], a["end"][1:2], a["end"][3:]]}, "starts before"),
    (lambda a: {"start": a["start"].astype(np.float64)}, "float64"),
])
def test_window_spans_are_checked(saved, encoder, version, change, match):
    with np.load(saved / "chunks.npz") as arrays:
        columns = {name: arrays[name] for name in arrays.files}
    assert (columns["chunk_doc"] == 1).sum() >= 3  # the long document has several windows
    write_chunks(saved, **change(columns))
    if version == 1:
        as_version_1(saved)
    else:
        write_config(saved, json.loads((saved / "retriever.json").read_text()), record_files=True)
    with pytest.raises(RetrieverFormatError, match=rf"chunks.npz: .*{match}"):
        Retriever.load(saved, encoder=encoder)


def test_format_version_1_folders_still_load(saved, encoder):
    before = Retriever.load(saved, encoder=encoder).search(["volcanic eruption in Iceland"])
    as_version_1(saved)
    loaded = Retriever.load(saved, encoder=encoder)
    assert loaded.search(["volcanic eruption in Iceland"]) == before
    assert json.loads(loaded.save(saved).joinpath("retriever.json").read_text())["format_version"] == 2


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("damage", [
    lambda data: data[: len(data) // 2],
    lambda data: b"",
    lambda data: data[:100] + bytes(len(data) - 100),
    lambda data: b"not a zip file at all",
])
def test_a_damaged_chunks_file_is_a_retriever_format_error(saved, encoder, version, damage):
    chunks = saved / "chunks.npz"
    chunks.write_bytes(damage(chunks.read_bytes()))
    if version == 1:
        as_version_1(saved)  # no checksum to catch it first: the file itself is read
    with pytest.raises(RetrieverFormatError, match="chunks.npz"):
        Retriever.load(saved, encoder=encoder)


def test_a_documents_file_with_wrong_rows_is_refused(saved, encoder):
    as_version_1(saved)
    good = (saved / "documents.jsonl").read_text(encoding="utf-8")
    for rows, match in [('{"_id": 3, "title": "", "text": "x"}\n', "documents.jsonl:1 is not a document row"),
                        ("[1, 2]\n", "documents.jsonl:1 is not a document row"),
                        (good.splitlines(keepends=True)[0] * 3, "documents.jsonl:2: document id 'a' is repeated")]:
        (saved / "documents.jsonl").write_text(rows, encoding="utf-8")
        with pytest.raises(RetrieverFormatError, match=match):
            Retriever.load(saved, encoder=encoder)


class FailingAdd:
    """Wraps an index's add: stores the first vector, then fails (a disk or memory fault midway)."""

    def __init__(self, index):
        self.original = index.add

    def __call__(self, vectors, ids=None, **kwargs):
        self.original(vectors[:1], ids=ids[:1], **kwargs)
        raise MemoryError("no memory left midway")


def test_add_is_all_or_nothing_when_the_index_fails_midway(encoder):
    retriever = Retriever(encoder, FlatIndex(encoder.dim))
    retriever.add(["first document"])
    retriever.index.add = FailingAdd(retriever.index)
    with pytest.raises(MemoryError):
        retriever.add({"b": "second", "long": LONG_DOC})
    assert (len(retriever), retriever.n_chunks, len(retriever.index)) == (1, 1, 1)
    del retriever.index.add
    assert retriever.add({"b": "second", "long": LONG_DOC}) == ["b", "long"]  # the same add works afterwards
    assert len(retriever.index) == retriever.n_chunks > 3


def test_add_is_all_or_nothing_when_the_store_fails(encoder, monkeypatch):
    retriever = Retriever(encoder, FlatIndex(encoder.dim))
    retriever.add(["first document"])

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(retriever.store, "append", fail)
    with pytest.raises(KeyboardInterrupt):
        retriever.add(["second document"])
    assert (len(retriever), retriever.n_chunks, len(retriever.index)) == (1, 1, 1)


def test_document_store_append_changes_nothing_on_failure():
    from embedrank.retrieval.store import DocumentStore

    store = DocumentStore()
    store.append(["a"], [""], ["x"], np.zeros(1, np.int64), np.zeros(1, np.int64), np.ones(1, np.int64))

    class Interrupting(list):
        def __iter__(self):
            yield "b"
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.append(["b", "c"], Interrupting(), ["y", "z"], np.array([0, 1]), np.zeros(2, np.int64),
                     np.ones(2, np.int64))
    assert (store.doc_ids, store.titles, store.texts, store.position, store.n_windows) == (
        ["a"], [""], ["x"], {"a": 0}, 1)


@pytest.mark.parametrize("corpus, match", [
    ({"a\ud800": "text"}, r"document id 'a\\ud800' holds a lone surrogate"),
    ({"a": "text \udfff"}, "document 'a': the text holds a lone surrogate"),
    ({"a": {"title": "\ud83d", "text": "x"}}, "document 'a': the title holds a lone surrogate"),
    (["fine", "bad \ud800"], r"corpus\[1\] holds a lone surrogate"),
])
def test_lone_surrogates_are_refused_before_anything_changes(encoder, tmp_path, corpus, match):
    retriever = Retriever(encoder, FlatIndex(encoder.dim))
    retriever.add(["first document"])
    with pytest.raises(InvalidValueError, match=match):
        retriever.add(corpus)
    assert (len(retriever), retriever.n_chunks, len(retriever.index)) == (1, 1, 1)
    retriever.save(tmp_path / "r")  # still saveable


# -- saves killed with SIGKILL: leftovers --------------------------------------------------------

def save_worker(path: Path, mode: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.retrieval.save_worker", str(path), mode], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def leftovers(path: Path) -> list[Path]:
    # the .NAME.lock file that serializes writers of the path is not a leftover
    return sorted(p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.") and p.name != f".{path.name}.lock")


def test_load_removes_what_saves_killed_midway_left(saved, encoder):
    for _ in range(2):
        worker = save_worker(saved, "kill")
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == -9, err
    left = leftovers(saved)  # each save removes the earlier ones: the last killed save's copy
    assert len(left) == 1 and (left[0] / "documents.jsonl").is_file()
    loaded = Retriever.load(saved, encoder=encoder)
    assert len(loaded) == 3  # the save that was killed changed nothing
    assert leftovers(saved) == []


def test_load_keeps_the_folder_a_live_save_is_writing(saved, encoder):
    worker = save_worker(saved, "pause")
    try:
        assert worker.stdout.readline().strip() == "writing", worker.stderr.read() if worker.poll() else ""
        writing = leftovers(saved)
        assert len(writing) == 1
        assert len(Retriever.load(saved, encoder=encoder)) == 3  # the old folder, whole
        assert leftovers(saved) == writing  # not taken for a dead save's leftover
        out, err = worker.communicate("go\n", timeout=300)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0 and out.strip() == "saved", err
    assert len(Retriever.load(saved, encoder=encoder)) == 4
    assert leftovers(saved) == []


def test_load_keeps_an_empty_leftover(saved, encoder):
    fresh = saved.parent / ".r.saving-just-made"  # a save between creating its folder and locking it
    fresh.mkdir()
    Retriever.load(saved, encoder=encoder)
    assert fresh.is_dir()
    Retriever.load(saved, encoder=encoder).save(saved)  # the next save clears every leftover
    assert leftovers(saved) == []


def test_without_flock_saves_work_and_loads_keep_leftovers(saved, encoder, monkeypatch):
    import errno
    import fcntl

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "no locks on this file system")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    left = saved.parent / ".r.saving-from-another-process"  # its saver may be alive: nothing tells
    left.mkdir()
    (left / "documents.jsonl").write_text("")
    retriever = Retriever.load(saved, encoder=encoder)
    assert left.is_dir()
    retriever.add(["one more"])
    retriever.save(saved)  # the next save still clears leftovers, as before
    assert len(Retriever.load(saved, encoder=encoder)) == 4 and leftovers(saved) == []


@pytest.mark.skipif(not embedrank.kernels.bf16_dots_supported(), reason="needs AVX512-BF16 at the avx512 ISA level")
def test_a_bf16_attention_encoder_is_saved_and_loaded_as_such(minilm_export, tmp_path):
    encoder = embedrank.Encoder.load(minilm_export, bf16_attention=True)
    retriever = Retriever(encoder, FlatIndex(encoder.dim))
    retriever.add(["first document about lava", "second document about ice"])
    before = retriever.search(["lava"])
    config = json.loads((retriever.save(tmp_path / "r") / "retriever.json").read_text())
    assert config["encoder"]["bf16_attention"] is True
    loaded = Retriever.load(tmp_path / "r")
    assert loaded.encoder.bf16_attention_layers == 6 and loaded.search(["lava"]) == before
    # an encoder without it writes no such field, so retrievers saved before it read the same
    plain = Retriever(embedrank.Encoder.load(minilm_export), FlatIndex(encoder.dim))
    assert "bf16_attention" not in json.loads((plain.save(tmp_path / "p") / "retriever.json").read_text())["encoder"]
