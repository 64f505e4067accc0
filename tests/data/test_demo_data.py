"""The demo's data: SciFact from ../shared/data, or BBC News headlines as known-item queries."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedrank.data.demo_data import load_bbc_known_item, load_beir_demo, load_demo_data
from tests.conftest import SHARED_DATA

SCIFACT = SHARED_DATA / "scifact"


def write_article(folder: Path, category: str, name: str, text: str) -> None:
    (folder / category).mkdir(parents=True, exist_ok=True)
    (folder / category / f"{name}.txt").write_text(text, encoding="utf-8")


def test_bbc_known_item_queries_are_headlines_and_bodies_lose_them(tmp_path):
    write_article(tmp_path, "tech", "001", "Robots learn to cook\n\nA lab taught robots to fry eggs.\nMore text.")
    write_article(tmp_path, "sport", "002", "Cup final tonight\n\nThe two sides meet at eight.")
    write_article(tmp_path, "sport", "003", "Headline only\n")  # no body: skipped
    data = load_bbc_known_item(n_queries=10, folder=tmp_path)
    assert sorted(data.corpus) == ["sport/002", "tech/001"]
    assert data.corpus["tech/001"] == {"title": "", "text": "A lab taught robots to fry eggs.\nMore text."}
    assert data.queries == {"q-sport/002": "Cup final tonight", "q-tech/001": "Robots learn to cook"} or \
        set(data.queries.values()) == {"Cup final tonight", "Robots learn to cook"}
    for qid, judged in data.qrels.items():
        (doc_id,) = judged
        assert qid == f"q-{doc_id}" and judged[doc_id] == 1
        assert data.queries[qid] not in data.corpus[doc_id]["text"]


def test_bbc_sample_is_seeded(tmp_path):
    for i in range(20):
        write_article(tmp_path, "business", f"{i:03d}", f"Headline {i}\n\nBody {i}.")
    first = load_bbc_known_item(n_queries=5, seed=3, folder=tmp_path)
    again = load_bbc_known_item(n_queries=5, seed=3, folder=tmp_path)
    other = load_bbc_known_item(n_queries=5, seed=4, folder=tmp_path)
    assert first.queries == again.queries and len(first.queries) == 5
    assert first.queries != other.queries


def test_bbc_train_split_is_the_other_headlines(tmp_path):
    for i in range(12):
        write_article(tmp_path, "politics", f"{i:03d}", f"Headline {i}\n\nBody {i}.")
    data = load_bbc_known_item(n_queries=5, folder=tmp_path)
    tested = {doc for judged in data.qrels.values() for doc in judged}
    trained = {doc for judged in data.train_qrels.values() for doc in judged}
    assert len(tested) == 5 and len(trained) == 7 and tested.isdisjoint(trained)
    assert tested | trained == set(data.corpus)
    for qid, judged in data.train_qrels.items():
        (doc_id,) = judged
        assert data.train_queries[qid] == f"Headline {int(doc_id.split('/')[1])}" and judged[doc_id] == 1
    everything = load_bbc_known_item(n_queries=50, folder=tmp_path)  # every article tested: no train split
    assert everything.train_queries is None and everything.train_qrels is None


def test_bbc_empty_folder_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no articles"):
        load_bbc_known_item(folder=tmp_path)


def test_missing_beir_folder_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_demo_data(tmp_path / "nowhere")


@pytest.mark.skipif(not SCIFACT.is_dir(), reason=f"needs the SciFact data at {SCIFACT}")
def test_scifact_with_its_train_split():
    data = load_beir_demo(SCIFACT)
    assert (len(data.corpus), len(data.queries), len(data.train_queries)) == (5183, 300, 809)
    assert not set(data.queries) & set(data.train_queries)
