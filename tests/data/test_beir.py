"""embedrank.load_beir: the real folders in shared/data, BEIR's GenericDataLoader shapes, errors.

Tests on shared/data skip when the folder is absent (set EMBEDRANK_DATA_DIR to point elsewhere);
the rest build small BEIR folders in a temporary directory.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from pathlib import Path

import pytest

import embedrank
from embedrank.data.beir import available_splits, load_beir, read_beir_qrels
from tests.conftest import SHARED_DATA


def data_dir() -> Path:
    env = os.environ.get("EMBEDRANK_DATA_DIR")
    return Path(env) if env else SHARED_DATA


def dataset_folder(name: str) -> Path:
    folder = data_dir() / name
    if not (folder / "corpus.jsonl").is_file():
        pytest.skip(f"dataset {name!r} not found at {folder} (shared/data beside the repo, or set EMBEDRANK_DATA_DIR)")
    return folder


def generic_data_loader(folder: Path, split: str):
    """What BEIR's GenericDataLoader(folder).load(split) returns (its logic, restated)."""
    corpus, queries, qrels = {}, {}, {}
    with open(folder / "corpus.jsonl", encoding="utf8") as f:
        for line in f:
            obj = json.loads(line)
            corpus[obj.get("_id")] = {"text": obj.get("text"), "title": obj.get("title")}
    with open(folder / "queries.jsonl", encoding="utf8") as f:
        for line in f:
            obj = json.loads(line)
            queries[obj.get("_id")] = obj.get("text")
    with open(folder / "qrels" / f"{split}.tsv", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_MINIMAL)
        next(reader)
        for row in reader:
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    queries = {qid: queries[qid] for qid in qrels}
    return corpus, queries, qrels


# --------------------------------------------------------------------------------------
# Real data
# --------------------------------------------------------------------------------------

COUNTS = {  # shared/data/README.md: docs, judged queries, qrels rows
    ("scifact", "test"): (5183, 300, 339),
    ("scifact", "train"): (5183, 809, 919),
    ("cranfield", "test"): (1400, 225, 1837),
    ("adi", "test"): (82, 35, 170),
}


@pytest.mark.parametrize(("name", "split"), list(COUNTS))
def test_real_datasets_load_like_beir(name, split):
    folder = dataset_folder(name)
    corpus, queries, qrels = load_beir(folder, split)
    docs, judged, rows = COUNTS[name, split]
    assert (len(corpus), len(queries), sum(map(len, qrels.values()))) == (docs, judged, rows)
    assert (corpus, queries, qrels) == generic_data_loader(folder, split)
    assert list(queries) == list(qrels)  # qrels order, judged queries only
    for doc in corpus.values():
        assert set(doc) == {"title", "text"} and all(isinstance(v, str) for v in doc.values())
    assert all(isinstance(q, str) and isinstance(t, str) for q, t in queries.items())
    assert all(type(g) is int and isinstance(d, str) for docs in qrels.values() for d, g in docs.items())
    assert all(d in corpus for docs in qrels.values() for d in docs)


def test_cranfield_grades_and_string_ids():
    corpus, queries, qrels = load_beir(str(dataset_folder("cranfield")))  # a str path works too
    assert Counter(g for docs in qrels.values() for g in docs.values()) == {5: 225, 4: 128, 3: 387, 2: 734, 1: 363}
    assert "1" in queries and "486" in qrels["1"] and qrels["1"]["486"] == 5
    assert corpus["471"]["text"] == ""  # empty in the original, kept as empty


def test_scifact_splits():
    folder = dataset_folder("scifact")
    assert available_splits(folder) == ["test", "train"]
    with pytest.raises(ValueError, match=r"unknown split 'dev' .*available splits: test, train"):
        load_beir(folder, "dev")
    test_queries = load_beir(folder)[1]  # split defaults to "test"
    train_queries = load_beir(folder, "train")[1]
    assert len(test_queries) == 300 and not set(test_queries) & set(train_queries)
    assert embedrank.load_beir is load_beir


# --------------------------------------------------------------------------------------
# Small folders
# --------------------------------------------------------------------------------------

HEADER = "query-id\tcorpus-id\tscore\n"


def make_folder(root: Path, corpus=None, queries=None, qrels=None) -> Path:
    """A BEIR folder; corpus/queries are lists of dicts or raw text, qrels {split: raw text}."""
    root.mkdir(parents=True, exist_ok=True)
    if corpus is None:
        corpus = [{"_id": "d1", "title": "T1", "text": "one"}, {"_id": "d2", "title": "", "text": "two"}]
    if queries is None:
        queries = [{"_id": "q1", "text": "first"}, {"_id": "q2", "text": "second"}, {"_id": "q3", "text": "third"}]
    if qrels is None:
        qrels = {"test": HEADER + "q2\td1\t1\nq1\td2\t2\nq1\td1\t0\n"}
    for name, rows in (("corpus.jsonl", corpus), ("queries.jsonl", queries)):
        if rows is not False:
            text = rows if isinstance(rows, str) else "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
            (root / name).write_text(text, encoding="utf-8")
    if qrels is not False:
        (root / "qrels").mkdir(exist_ok=True)
        for split, text in qrels.items():
            (root / "qrels" / f"{split}.tsv").write_text(text, encoding="utf-8")
    return root


def test_small_folder(tmp_path):
    corpus, queries, qrels = load_beir(make_folder(tmp_path / "ds"))
    assert corpus == {"d1": {"title": "T1", "text": "one"}, "d2": {"title": "", "text": "two"}}
    assert queries == {"q2": "second", "q1": "first"} and list(queries) == ["q2", "q1"]  # q3 unjudged: dropped
    assert qrels == {"q2": {"d1": 1}, "q1": {"d2": 2, "d1": 0}}  # zero grades are kept
    assert (corpus, queries, qrels) == generic_data_loader(tmp_path / "ds", "test")


def test_lenient_where_beir_is(tmp_path):
    folder = make_folder(
        tmp_path / "ds",
        corpus='{"_id": 7, "text": "no title", "metadata": {"x": 1}}\n\n{"_id": "é", "title": null, "text": "ü"}\r\n',
        queries=[{"_id": "q1", "text": "a", "extra": 1}],
        qrels={"test": "q1\t7\t1\r\nq1\té\t-1\nq1\tnot-in-corpus\t1\nq1\t7\t1\n\n"},  # no header; a repeat
    )
    corpus, queries, qrels = load_beir(folder)
    assert corpus == {"7": {"title": "", "text": "no title"}, "é": {"title": "", "text": "ü"}}
    assert queries == {"q1": "a"}
    assert qrels == {"q1": {"7": 1, "é": -1, "not-in-corpus": 1}}


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset folder not found: .*nowhere"):
        load_beir(tmp_path / "nowhere")
    folder = make_folder(tmp_path / "a", corpus=False)
    with pytest.raises(FileNotFoundError, match=r"BEIR file not found: .*a[/\\]corpus\.jsonl"):
        load_beir(folder)
    folder = make_folder(tmp_path / "b", queries=False)
    with pytest.raises(FileNotFoundError, match=r"BEIR file not found: .*b[/\\]queries\.jsonl"):
        load_beir(folder)
    folder = make_folder(tmp_path / "c", qrels=False)
    with pytest.raises(FileNotFoundError, match=r"qrels folder not found: .*c[/\\]qrels"):
        load_beir(folder)
    folder = make_folder(tmp_path / "d", qrels={})
    with pytest.raises(ValueError, match=r"unknown split 'test' .*available splits: none"):
        load_beir(folder)
    with pytest.raises(FileNotFoundError, match="qrels file not found"):
        read_beir_qrels(tmp_path / "d" / "qrels" / "test.tsv")


def test_unknown_split_lists_the_available_ones(tmp_path):
    folder = make_folder(tmp_path / "ds", qrels={"test": HEADER, "train": HEADER, "dev": HEADER})
    for split in ("validation", "../test", "test.tsv", ""):
        with pytest.raises(ValueError, match=r"available splits: dev, test, train"):
            load_beir(folder, split)
    with pytest.raises(TypeError, match="split must be a string"):
        load_beir(folder, None)
    assert load_beir(folder, "dev") == (load_beir(folder)[0], {}, {})  # a header-only file: no judgements


@pytest.mark.parametrize(
    ("corpus", "match"),
    [
        ('{"_id": "d1", "text": "a"}\n{"_id": "d2", "text": "b"\n', r"corpus\.jsonl:2: invalid JSON"),
        ('{"_id": "d1", "text": "a"}\n\n["d2", "b"]\n', r"corpus\.jsonl:3: expected a JSON object"),
        ('{"text": "a"}\n', r"corpus\.jsonl:1: missing '_id'"),
        ('{"_id": null, "text": "a"}\n', r"corpus\.jsonl:1: '_id' must be a string"),
        ('{"_id": 1.5, "text": "a"}\n', r"corpus\.jsonl:1: '_id' must be a string"),
        ('{"_id": "", "text": "a"}\n', r"corpus\.jsonl:1: '_id' is empty"),
        ('{"_id": "d1", "title": "t"}\n', r"corpus\.jsonl:1: missing 'text'"),
        ('{"_id": "d1", "text": ["a"]}\n', r"corpus\.jsonl:1: 'text' must be a string"),
        ('{"_id": "d1", "text": "a", "title": 3}\n', r"corpus\.jsonl:1: 'title' must be a string"),
        ('{"_id": "d1", "text": "a"}\n{"_id": "d1", "text": "b"}\n', r"corpus\.jsonl:2: duplicate _id 'd1' \(first on line 1\)"),
    ],
)
def test_bad_corpus_lines(tmp_path, corpus, match):
    with pytest.raises(ValueError, match=match):
        load_beir(make_folder(tmp_path / "ds", corpus=corpus))


@pytest.mark.parametrize(
    ("queries", "match"),
    [
        ('{"_id": "q1", "text": "a"}\n{"_id": "q2"}\n', r"queries\.jsonl:2: missing 'text'"),
        ('{"_id": "q1", "text": "a"}\nnot json\n', r"queries\.jsonl:2: invalid JSON"),
        ('{"_id": "q1", "text": "a"}\n{"_id": "q1", "text": "b"}\n', r"queries\.jsonl:2: duplicate _id 'q1'"),
    ],
)
def test_bad_query_lines(tmp_path, queries, match):
    with pytest.raises(ValueError, match=match):
        load_beir(make_folder(tmp_path / "ds", queries=queries))


@pytest.mark.parametrize(
    ("qrels", "match"),
    [
        (HEADER + "q1\td1\t1\nq1 d2 1\n", r"test\.tsv:3: expected 3 tab-separated fields"),
        (HEADER + "q1\td1\t1\textra\n", r"test\.tsv:2: expected 3 tab-separated fields"),
        (HEADER + "q1\td1\t1.0\n", r"test\.tsv:2: score '1.0' is not an integer"),
        (HEADER + "q1\td1\t\n", r"test\.tsv:2: score '' is not an integer"),
        (HEADER + "\td1\t1\n", r"test\.tsv:2: empty query or corpus id"),
        (HEADER + "q1\td1\t1\nq1\td1\t2\n", r"test\.tsv:3: document 'd1' of query 'q1' is judged 2 here but 1 on line 2"),
        (HEADER + "q1\td1\t1\nq9\td1\t1\n", r"query id\(s\) judged in .*test\.tsv are not in .*queries\.jsonl: 'q9'"),
    ],
)
def test_bad_qrels_lines(tmp_path, qrels, match):
    with pytest.raises(ValueError, match=match):
        load_beir(make_folder(tmp_path / "ds", qrels={"test": qrels}))


def test_read_beir_qrels_header_detection(tmp_path):
    path = tmp_path / "q.tsv"
    path.write_text("qid\tdocid\trel\nq1\td1\t3\n", encoding="utf-8")
    assert read_beir_qrels(path) == {"q1": {"d1": 3}}
    path.write_text("q1\td1\t3\nq1\td2\t0\n", encoding="utf-8")  # no header: the first row is data
    assert read_beir_qrels(str(path)) == {"q1": {"d1": 3, "d2": 0}}
    path.write_text("q1\td1\t3\nquery-id\tcorpus-id\tscore\n", encoding="utf-8")  # a header only on line 1
    with pytest.raises(ValueError, match=r"q\.tsv:2: score 'score' is not an integer"):
        read_beir_qrels(path)
