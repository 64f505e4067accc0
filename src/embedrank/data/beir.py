"""Load a dataset in BEIR's folder layout.

A BEIR dataset folder holds ``corpus.jsonl`` (one ``{"_id", "title", "text"}`` object a
line), ``queries.jsonl`` (``{"_id", "text"}``) and ``qrels/<split>.tsv`` (a header line,
then ``query-id<TAB>corpus-id<TAB>score``). :func:`load_beir` returns the same three
dictionaries as BEIR's ``GenericDataLoader(folder).load(split)``:

* ``corpus``: ``{doc_id: {"title": str, "text": str}}`` in file order;
* ``queries``: ``{query_id: text}`` for the queries judged in that split only, in qrels
  order (BEIR drops the others too);
* ``qrels``: ``{query_id: {doc_id: int}}``.

It is stricter than BEIR where BEIR would silently load something else: a missing file,
a line that is not valid JSON or lacks ``_id``/``text``, a repeated id, a malformed qrels
line, a query judged in the qrels but absent from ``queries.jsonl`` (BEIR: ``KeyError``),
or an unknown split each raise an error that names the file and line. Differences that
are harmless: a missing or null ``title`` loads as ``""`` (BEIR: ``None``); integer
``_id`` values are turned into strings; the qrels header line is recognised by its
non-integer score field (BEIR skips the first line unconditionally, which would drop a
judgement from a file without a header); extra JSON fields are ignored, as in BEIR.
Qrels documents that are not in the corpus are allowed (BEIR does not check either).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from embedrank.data.lines import check_unicode, numbered_lines
from embedrank.errors import InvalidTypeError, InvalidValueError, MissingFileError

__all__ = ["load_beir", "read_beir_qrels", "available_splits"]

CORPUS_FILE = "corpus.jsonl"
QUERIES_FILE = "queries.jsonl"
QRELS_FOLDER = "qrels"


def _read_id(obj: dict, path: Path, lineno: int) -> str:
    if "_id" not in obj:
        raise InvalidValueError(f"{path}:{lineno}: missing '_id'")
    value = obj["_id"]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidValueError(f"{path}:{lineno}: '_id' must be a string, got {value!r}")
    value = str(value)
    if not value:
        raise InvalidValueError(f"{path}:{lineno}: '_id' is empty")
    return check_unicode(value, f"{path}:{lineno}: '_id'")


def _read_text(obj: dict, key: str, path: Path, lineno: int, required: bool) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise InvalidValueError(f"{path}:{lineno}: missing {key!r}")
        return ""
    if not isinstance(value, str):
        raise InvalidValueError(f"{path}:{lineno}: {key!r} must be a string, got {type(value).__name__}")
    return check_unicode(value, f"{path}:{lineno}: {key!r}")


def read_jsonl(path: Path, fields: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """``{_id: (field values)}``; the first field is required, later ones default to ''."""
    if not path.is_file():
        raise MissingFileError(f"BEIR file not found: {path}")
    rows: dict[str, tuple[str, ...]] = {}
    first_line: dict[str, int] = {}
    for lineno, line in numbered_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InvalidValueError(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise InvalidValueError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        key = _read_id(obj, path, lineno)
        if key in rows:
            raise InvalidValueError(f"{path}:{lineno}: duplicate _id {key!r} (first on line {first_line[key]})")
        first_line[key] = lineno
        rows[key] = tuple(
            _read_text(obj, name, path, lineno, required=(i == 0)) for i, name in enumerate(fields)
        )
    return rows


def read_beir_qrels(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    """Read a BEIR qrels file: ``query-id<TAB>corpus-id<TAB>score`` lines, integer scores.

    The first line is taken as a header when its score field is not an integer. Blank
    lines are skipped. A line without exactly three tab-separated fields, an empty id, a
    non-integer score or a pair judged twice with different scores raises ``ValueError``
    naming the file and line (an exact repeat is accepted). Grades are kept as they are,
    0 and negative ones included.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"BEIR qrels file not found: {path}")
    qrels: dict[str, dict[str, int]] = {}
    first_line: dict[tuple[str, str], int] = {}
    for lineno, line in numbered_lines(path):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            raise InvalidValueError(
                f"{path}:{lineno}: expected 3 tab-separated fields 'query-id, corpus-id, score', "
                f"got {len(fields)}: {line!r}"
            )
        qid, doc, score_text = fields  # ids as they are (BEIR does not strip them either)
        try:
            score = int(score_text)
        except ValueError:
            if lineno == 1:  # header
                continue
            raise InvalidValueError(f"{path}:{lineno}: score {score_text!r} is not an integer") from None
        if not qid or not doc:
            raise InvalidValueError(f"{path}:{lineno}: empty query or corpus id: {line!r}")
        add_judgement(qrels, first_line, qid, doc, score, f"{path}:{lineno}")
    return qrels


def available_splits(path: str | os.PathLike) -> list[str]:
    """The splits of a BEIR folder: the names of ``qrels/*.tsv``, sorted."""
    folder = Path(path) / QRELS_FOLDER
    if not folder.is_dir():
        raise MissingFileError(f"BEIR qrels folder not found: {folder}")
    return sorted(p.stem for p in folder.glob("*.tsv") if p.is_file())


def load_beir(
    path: str | os.PathLike, split: str = "test"
) -> tuple[dict[str, dict[str, str]], dict[str, str], dict[str, dict[str, int]]]:
    """Load a BEIR-layout folder: ``(corpus, queries, qrels)`` as BEIR's GenericDataLoader.

    ``queries`` keeps only the queries judged in ``split`` (``qrels/<split>.tsv``), in the
    qrels' order. See the module docs for the error cases.
    """
    root = Path(path)
    if not root.is_dir():
        raise MissingFileError(f"BEIR dataset folder not found: {root}")
    if not isinstance(split, str):
        raise InvalidTypeError(f"split must be a string, got {type(split).__name__}")
    for name in (CORPUS_FILE, QUERIES_FILE):
        if not (root / name).is_file():
            raise MissingFileError(f"BEIR file not found: {root / name}")
    splits = available_splits(root)
    if split not in splits:
        listed = ", ".join(splits) if splits else f"none (no .tsv file in {root / QRELS_FOLDER})"
        raise InvalidValueError(f"unknown split {split!r} for {root}; available splits: {listed}")
    qrels = read_beir_qrels(root / QRELS_FOLDER / f"{split}.tsv")

    corpus_rows = read_jsonl(root / CORPUS_FILE, ("text", "title"))
    corpus = {doc: {"title": title, "text": text} for doc, (text, title) in corpus_rows.items()}
    all_queries = {qid: text for qid, (text,) in read_jsonl(root / QUERIES_FILE, ("text",)).items()}

    missing = [qid for qid in qrels if qid not in all_queries]
    if missing:
        shown = ", ".join(repr(q) for q in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise InvalidValueError(
            f"{len(missing)} query id(s) judged in {root / QRELS_FOLDER / (split + '.tsv')} are not in "
            f"{root / QUERIES_FILE}: {shown}"
        )
    queries = {qid: all_queries[qid] for qid in qrels}
    return corpus, queries, qrels


def add_judgement(qrels: dict, first_line: dict, qid: str, doc: str, grade: int, where: str) -> None:
    """Records one qrels row; the same (query, document) judged differently twice is a ValueError."""
    docs = qrels.setdefault(qid, {})
    if doc in docs and docs[doc] != grade:
        raise InvalidValueError(
            f"{where}: document {doc!r} of query {qid!r} is judged {grade} here but "
            f"{docs[doc]} on line {first_line[qid, doc]}"
        )
    first_line.setdefault((qid, doc), where.rsplit(":", 1)[-1])
    docs[doc] = grade
