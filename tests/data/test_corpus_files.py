"""Reading corpora and run / qrels files: ids are line numbers as documented, only "\\n" ends a
line, and bytes that are not UTF-8 are an error naming the file and the line."""

from __future__ import annotations

import json

import pytest

from embedrank.data.beir import load_beir, read_beir_qrels
from embedrank.data.corpus_files import read_corpus
from embedrank.data.evaluation import read_trec_qrels, read_trec_run
from embedrank.errors import EmbedrankError, FormatError, InvalidValueError


def test_txt_ids_are_the_files_line_numbers(tmp_path):
    source = tmp_path / "texts.txt"
    source.write_bytes(b"first\n\n   \nfourth\r\nfifth\n")
    corpus = read_corpus(source)
    # blank lines are skipped but counted: "fourth" is line 3 from 0 whatever comes before it
    assert corpus == {"0": {"title": "", "text": "first"}, "3": {"title": "", "text": "fourth"},
                      "4": {"title": "", "text": "fifth"}}


def test_txt_lone_carriage_return_does_not_split_a_line(tmp_path):
    source = tmp_path / "texts.txt"
    source.write_bytes(b"one\rstill one\nline two\r\n\xef\xbb\xbfnot a BOM here\n")
    corpus = read_corpus(source)
    assert list(corpus) == ["0", "1", "2"]
    assert corpus["0"]["text"] == "one\rstill one"
    assert corpus["1"]["text"] == "line two"  # the \r of \r\n is not part of the text
    assert corpus["2"]["text"] == "\ufeffnot a BOM here"  # only the file's first bytes are a BOM


def test_a_byte_order_mark_is_not_part_of_the_first_text(tmp_path):
    source = tmp_path / "texts.txt"
    source.write_bytes(b"\xef\xbb\xbffirst\nsecond\n")
    assert read_corpus(source)["0"]["text"] == "first"
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_bytes(b'\xef\xbb\xbf{"_id": "a", "text": "x"}\n')
    assert read_corpus(jsonl) == {"a": {"title": "", "text": "x"}}


def test_jsonl_without_ids_uses_the_line_number(tmp_path):
    source = tmp_path / "docs.jsonl"
    source.write_text('{"text": "a"}\n\n{"text": "c"}\n', encoding="utf-8")
    assert list(read_corpus(source)) == ["0", "2"]


LATIN1 = "café au lait\n".encode("latin-1")


@pytest.mark.parametrize("name, content, read", [
    ("texts.txt", b"fine\n" + LATIN1, read_corpus),
    ("docs.jsonl", b'{"_id": "a", "text": "fine"}\n' + b'{"_id": "b", "text": "' + LATIN1[:-1] + b'"}\n',
     read_corpus),
    ("run.trec", b"q1 Q0 d1 1 0.5 x\n" + b"q1 Q0 d\xe9 2 0.4 x\n", read_trec_run),
    ("qrels.trec", b"q1 0 d1 1\n" + b"q1 0 d\xe9 1\n", read_trec_qrels),
    ("qrels.tsv", b"query-id\tcorpus-id\tscore\n" + b"q1\td\xe9\t1\n", read_beir_qrels),
])
def test_latin1_bytes_name_the_file_and_line(tmp_path, name, content, read):
    source = tmp_path / name
    source.write_bytes(content)
    with pytest.raises(FormatError, match=rf"{name}:2: not UTF-8 text \(byte 0xe9"):
        read(source)


def test_latin1_in_a_beir_folder_names_the_file_and_line(tmp_path):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n')
    (tmp_path / "queries.jsonl").write_bytes(b'{"_id": "q1", "text": "caf\xe9"}\n')
    with pytest.raises(FormatError, match=r"queries.jsonl:1: not UTF-8"):
        load_beir(tmp_path)


@pytest.mark.parametrize("row, where", [
    ({"_id": "a\ud800", "text": "x"}, "the id"),
    ({"_id": "a", "text": "x\udfff"}, '"text"'),
    ({"_id": "a", "title": "\ud83d", "text": "x"}, '"title"'),
])
def test_lone_surrogates_are_refused_with_the_line(tmp_path, row, where):
    source = tmp_path / "docs.jsonl"
    source.write_text('{"_id": "ok", "text": "fine"}\n' + json.dumps(row) + "\n", encoding="ascii")
    with pytest.raises(InvalidValueError, match=rf"docs.jsonl:2: {where} holds a lone surrogate"):
        read_corpus(source)
    beir = tmp_path / "beir"
    beir.mkdir()
    (beir / "corpus.jsonl").write_text(json.dumps(row) + "\n", encoding="ascii")
    with pytest.raises(EmbedrankError, match="corpus.jsonl:1: .* holds a lone surrogate"):
        read_corpus(beir)
