"""Reading a corpus or a query set from the files users have: a BEIR folder, JSONL or plain text.

* a BEIR folder (``corpus.jsonl`` inside): ``{doc_id: {"title", "text"}}`` via :func:`load_beir`'s reader;
* a ``.jsonl`` file: one object per line with ``"_id"`` or ``"id"`` (optional: line numbers
  from 0 are used), ``"text"`` (required) and ``"title"`` (optional);
* a ``.txt`` file: one text per line (empty lines skipped), ids are the line numbers from 0.

Every reader returns ``{id: {"title": str, "text": str}}`` in file order, ids as str.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from embedrank.data.beir import CORPUS_FILE, read_jsonl
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
        with open(path, encoding="utf-8") as f:
            lines = [line.rstrip("\n") for line in f]
        texts = [line for line in lines if line.strip()]
        if not texts:
            raise InvalidValueError(f"{path} holds no text (every line is empty)")
        return {str(i): {"title": "", "text": t} for i, t in enumerate(texts)}
    raise InvalidValueError(f"unsupported corpus file {path}: expected a BEIR folder, a .jsonl or a .txt file")


def _read_loose_jsonl(path: Path) -> dict[str, dict[str, str]]:
    corpus: dict[str, dict[str, str]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as error:
                raise InvalidValueError(f"{path}:{lineno}: not valid JSON ({error.msg})") from None
            if not isinstance(obj, dict):
                raise InvalidValueError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            raw_id = obj.get("_id", obj.get("id", len(corpus)))
            if not isinstance(raw_id, (str, int)) or isinstance(raw_id, bool):
                raise InvalidValueError(f"{path}:{lineno}: id must be a string or an integer, got {raw_id!r}")
            doc_id = str(raw_id)
            if doc_id in corpus:
                raise InvalidValueError(f"{path}:{lineno}: duplicate id {doc_id!r}")
            text, title = obj.get("text"), obj.get("title", "")
            if not isinstance(text, str):
                raise InvalidValueError(f"{path}:{lineno}: \"text\" must be a string, got {type(text).__name__}")
            if title is None:
                title = ""
            if not isinstance(title, str):
                raise InvalidValueError(f"{path}:{lineno}: \"title\" must be a string, got {type(title).__name__}")
            corpus[doc_id] = {"title": title, "text": text}
    if not corpus:
        raise InvalidValueError(f"{path} holds no documents")
    return corpus
