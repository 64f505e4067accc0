"""Reading a corpus or a query set from the files users have: a BEIR folder, JSONL or plain text.

* a BEIR folder (``corpus.jsonl`` inside): ``{doc_id: {"title", "text"}}`` via :func:`load_beir`'s reader;
* a ``.jsonl`` file: one object per line with ``"_id"`` or ``"id"`` (optional: the line's number
  from 0 is used, blank lines counted), ``"text"`` (required) and ``"title"`` (optional);
* a ``.txt`` file: one text per line, ids are the line numbers from 0 (the file's own line
  numbers: an empty or blank line is skipped but still counted, so the id of a text never
  depends on the lines around it).

Every file is read as UTF-8 (bytes that are not: an error naming the file and line) and only
``"\n"`` ends a line (the ``"\r"`` of ``"\r\n"`` is dropped; a lone ``"\r"`` is part of the text).
Every reader returns ``{id: {"title": str, "text": str}}`` in file order, ids as str.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from embedrank.data.beir import CORPUS_FILE, read_jsonl
from embedrank.data.lines import check_unicode, numbered_lines
from embedrank.errors import InvalidValueError, MissingFileError


def read_corpus(path: str | os.PathLike) -> dict[str, dict[str, str]]:
    """Reads a BEIR folder, a .jsonl or a .txt file (see the module docs)."""
    path = Path(path)
    if path.is_dir():
        if not (path / CORPUS_FILE).is_file():
            raise MissingFileError(f"{path} is a folder without {CORPUS_FILE}: not a BEIR dataset")
        rows = read_jsonl(path / CORPUS_FILE, ("text", "title"))
        return {doc: {"title": title, "text": text} for doc, (text, title) in rows.items()}
    if not path.is_file():
        raise MissingFileError(f"corpus not found: {path}")
    if path.suffix == ".jsonl":
        return _read_loose_jsonl(path)
    if path.suffix == ".txt":
        corpus = {str(lineno - 1): {"title": "", "text": line} for lineno, line in numbered_lines(path) if line.strip()}
        if not corpus:
            raise InvalidValueError(f"{path} holds no text (every line is empty)")
        return corpus
    raise InvalidValueError(f"unsupported corpus file {path}: expected a BEIR folder, a .jsonl or a .txt file")


def _read_loose_jsonl(path: Path) -> dict[str, dict[str, str]]:
    corpus: dict[str, dict[str, str]] = {}
    for lineno, line in numbered_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as error:
            raise InvalidValueError(f"{path}:{lineno}: not valid JSON ({error.msg})") from None
        if not isinstance(obj, dict):
            raise InvalidValueError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        raw_id = obj.get("_id", obj.get("id", lineno - 1))
        if not isinstance(raw_id, (str, int)) or isinstance(raw_id, bool):
            raise InvalidValueError(f"{path}:{lineno}: id must be a string or an integer, got {raw_id!r}")
        doc_id = check_unicode(str(raw_id), f"{path}:{lineno}: the id")
        if doc_id in corpus:
            raise InvalidValueError(f"{path}:{lineno}: duplicate id {doc_id!r}")
        text, title = obj.get("text"), obj.get("title", "")
        if not isinstance(text, str):
            raise InvalidValueError(f"{path}:{lineno}: \"text\" must be a string, got {type(text).__name__}")
        if title is None:
            title = ""
        if not isinstance(title, str):
            raise InvalidValueError(f"{path}:{lineno}: \"title\" must be a string, got {type(title).__name__}")
        corpus[doc_id] = {"title": check_unicode(title, f"{path}:{lineno}: \"title\""),
                          "text": check_unicode(text, f"{path}:{lineno}: \"text\"")}
    if not corpus:
        raise InvalidValueError(f"{path} holds no documents")
    return corpus
