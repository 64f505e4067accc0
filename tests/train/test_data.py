"""Training data: examples, BEIR splits, the split by query, and their bad inputs."""

from __future__ import annotations

import pytest

from embedrank.train.data import RetrievalData, TrainingExample, examples_from_pairs, split_by_query
from tests.train.conftest import write_beir


def test_examples_from_pairs():
    out = examples_from_pairs([("q", "p"), ("q2", "p2", "n"), ("q3", "p3", ["n1", "n2"])])
    assert out[0] == TrainingExample("q", "p")
    assert out[1].negatives == ("n",)
    assert out[2].negatives == ("n1", "n2")
    assert out[2].negative_keys() == ["text:n1", "text:n2"]


@pytest.mark.parametrize("rows, error, message", [
    ([], ValueError, "empty"),
    ("query", TypeError, "iterable"),
    ([("q",)], ValueError, "rows\\[0\\] must be"),
    ([("q", "p", "n", "x")], ValueError, "rows\\[0\\] must be"),
    ([("q", "")], ValueError, "positive is empty"),
    ([("q", 3)], TypeError, "positive must be a str"),
    ([("q", "p", ["n", None])], TypeError, "negative 1 must be a str"),
])
def test_examples_from_pairs_bad_rows(rows, error, message):
    with pytest.raises(error, match=message):
        examples_from_pairs(rows)


def test_from_beir_examples_and_subset(tiny_beir):
    data = RetrievalData.from_beir(tiny_beir, "train")
    assert data.query_ids() == [f"q{i}" for i in range(1, 9)]
    assert data.corpus["d1"].startswith("Photosynthesis Plants convert")
    examples = data.examples({"q1": ["d8", "d9"]})
    assert examples[0].negatives == (data.corpus["d8"], data.corpus["d9"])
    assert examples[0].relevant_ids == frozenset({"d1"})
    assert examples[1].negatives == ()
    sub = data.subset(["q2", "q3"])
    assert list(sub.qrels) == ["q2", "q3"] and sub.corpus is data.corpus
    with pytest.raises(ValueError, match="unknown query ids"):
        data.subset(["nope"])
    with pytest.raises(ValueError, match="unknown document ids"):
        data.examples({"q1": ["zzz"]})


def test_unknown_document_ids_in_qrels(tmp_path):
    folder = write_beir(tmp_path / "bad", train={"q1": "d1", "q2": "missing-doc"})
    with pytest.raises(ValueError, match="not in the corpus: \\['missing-doc'\\]"):
        RetrievalData.from_beir(folder, "train")


def test_empty_and_inconsistent_data():
    with pytest.raises(ValueError, match="corpus is empty"):
        RetrievalData({}, {"q": "x"}, {"q": {"d": 1}})
    with pytest.raises(ValueError, match="qrels are empty"):
        RetrievalData({"d": "x"}, {}, {})
    with pytest.raises(ValueError, match="have no text"):
        RetrievalData({"d": "x"}, {}, {"q": {"d": 1}})
    with pytest.raises(ValueError, match="no grade >= 1"):
        RetrievalData({"d": "x"}, {"q": "y"}, {"q": {"d": 0}})


def test_split_by_query_is_seeded_disjoint_and_complete():
    ids = [f"q{i}" for i in range(100)]
    train, dev = split_by_query(ids, 0.2, seed=7)
    assert len(dev) == 20 and len(train) == 80
    assert set(train) | set(dev) == set(ids) and not set(train) & set(dev)
    assert (train, dev) == split_by_query(ids, 0.2, seed=7)
    assert dev != split_by_query(ids, 0.2, seed=8)[1]
    assert train == [q for q in ids if q in set(train)]  # input order kept


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5, True, "0.1"])
def test_split_by_query_bad_fraction(fraction):
    with pytest.raises(ValueError, match="dev_fraction"):
        split_by_query(["a", "b", "c"], fraction)


def test_split_by_query_needs_two_queries():
    with pytest.raises(ValueError, match="at least 2 distinct"):
        split_by_query(["a", "a"], 0.5)
