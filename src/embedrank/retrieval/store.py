"""DocumentStore: a Retriever's corpus and its windows, in memory and on disk.

Documents are kept in the order added (position = row); each window (one index vector,
index id = window number) records its document's row and its character span in the
document's text (title + " " + text). On disk: ``documents.jsonl`` (one ``{"_id", "title",
"text"}`` per line) and ``chunks.npz`` (``chunk_doc``, ``start``, ``end``, int64 [n_windows]).

What is read back is checked before it is used: the files' SHA-256 against the ones the
caller recorded (the Retriever keeps them in retriever.json), every row's types, unique ids,
and the windows: each document has at least one, in document order, each span inside its
document's text (0 <= start <= end <= len(text)) and a document's windows in text order. A
damaged or edited file is a RetrieverFormatError naming it, never shifted passages.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
import zlib
from pathlib import Path

import numpy as np

from embedrank.errors import RetrieverFormatError, UnknownIdError
from embedrank.utils.documents import join_title

__all__ = ["CHUNKS_FILE", "DOCS_FILE", "DocumentStore", "sha256_hex"]

DOCS_FILE = "documents.jsonl"
CHUNKS_FILE = "chunks.npz"


class DocumentStore:
    """Documents (id, title, text) and their windows (document row, start, end)."""

    def __init__(self) -> None:
        self.doc_ids: list[str] = []
        self.titles: list[str] = []
        self.texts: list[str] = []
        self.position: dict[str, int] = {}
        self.chunk_doc = np.empty(0, dtype=np.int64)
        self.chunk_start = np.empty(0, dtype=np.int64)
        self.chunk_end = np.empty(0, dtype=np.int64)
        self.most_windows = 0

    def __len__(self) -> int:
        return len(self.doc_ids)

    @property
    def n_windows(self) -> int:
        return int(self.chunk_doc.size)

    def __contains__(self, doc_id) -> bool:
        return doc_id in self.position

    def document(self, doc_id: str) -> dict:
        """{"title", "text"} of a stored document (UnknownIdError naming the id when absent)."""
        if doc_id not in self.position:
            raise UnknownIdError(f"no document with id {doc_id!r}")
        i = self.position[doc_id]
        return {"title": self.titles[i], "text": self.texts[i]}

    def full_text(self, row: int) -> str:
        """The text that was embedded for document `row`: title + " " + text."""
        return join_title(self.titles[row], self.texts[row])

    def passage(self, window: int) -> str:
        """The characters of window `window` in its document's full text."""
        text = self.full_text(int(self.chunk_doc[window]))
        return text[int(self.chunk_start[window]):int(self.chunk_end[window])]

    def append(self, ids: list[str], titles: list[str], texts: list[str], owners: np.ndarray, starts: np.ndarray,
               ends: np.ndarray) -> None:
        """Adds documents and their windows (owners: int64 [n_windows], rows within `ids`).

        All or nothing: on any exception (memory, an interrupt) the store is as it was.
        """
        first_doc = len(self.doc_ids)
        chunk_doc = np.concatenate([self.chunk_doc, owners.astype(np.int64) + first_doc])
        chunk_start = np.concatenate([self.chunk_start, starts.astype(np.int64)])
        chunk_end = np.concatenate([self.chunk_end, ends.astype(np.int64)])
        most_windows = int(np.bincount(chunk_doc).max()) if chunk_doc.size else 0
        try:
            self.doc_ids.extend(ids)
            self.titles.extend(titles)
            self.texts.extend(texts)
            self.position.update((doc_id, first_doc + i) for i, doc_id in enumerate(ids))
        except BaseException:
            for doc_id in self.doc_ids[first_doc:]:
                self.position.pop(doc_id, None)
            del self.doc_ids[first_doc:], self.titles[first_doc:], self.texts[first_doc:]
            raise
        self.chunk_doc, self.chunk_start, self.chunk_end = chunk_doc, chunk_start, chunk_end
        self.most_windows = most_windows

    # -- files -----------------------------------------------------------------------------
    def write(self, folder: Path) -> dict[str, str]:
        """Writes documents.jsonl and chunks.npz into `folder`; returns {file name: "sha256:..."}."""
        checksums = {}
        with open(folder / DOCS_FILE, "wb") as f:
            digest = hashlib.sha256()
            for doc_id, title, text in zip(self.doc_ids, self.titles, self.texts):
                line = (json.dumps({"_id": doc_id, "title": title, "text": text}, ensure_ascii=False) + "\n").encode()
                digest.update(line)
                f.write(line)
            checksums[DOCS_FILE] = "sha256:" + digest.hexdigest()
        buffer = io.BytesIO()
        np.savez(buffer, chunk_doc=self.chunk_doc, start=self.chunk_start, end=self.chunk_end)
        (folder / CHUNKS_FILE).write_bytes(buffer.getvalue())
        checksums[CHUNKS_FILE] = "sha256:" + sha256_hex(buffer.getvalue())
        return checksums

    @classmethod
    def read(cls, folder: Path, checksums: dict[str, str] | None = None) -> DocumentStore:
        """Reads what write() wrote, checked (see the module docs); RetrieverFormatError naming the
        file for anything missing, damaged or inconsistent. checksums: what write() returned
        (None for folders saved before checksums were recorded: the contents are still checked)."""
        store = cls()
        docs_data = _read_checked(folder / DOCS_FILE, checksums)
        path = folder / DOCS_FILE
        for line_number, line in enumerate(docs_data.split(b"\n")[:-1] if docs_data.endswith(b"\n")
                                           else docs_data.split(b"\n"), 1):
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise RetrieverFormatError(f"{path}:{line_number} is not a document row: {error}") from None
            fields = [row.get(key) for key in ("_id", "title", "text")] if isinstance(row, dict) else None
            if fields is None or not all(isinstance(value, str) for value in fields):
                raise RetrieverFormatError(f"{path}:{line_number} is not a document row: expected "
                                           '{"_id", "title", "text"} strings')
            doc_id, title, text = fields
            if doc_id in store.position:
                raise RetrieverFormatError(f"{path}:{line_number}: document id {doc_id!r} is repeated "
                                           f"(first on line {store.position[doc_id] + 1})")
            store.position[doc_id] = len(store.doc_ids)
            store.doc_ids.append(doc_id)
            store.titles.append(title)
            store.texts.append(text)
        chunks_path = folder / CHUNKS_FILE
        chunks_data = _read_checked(chunks_path, checksums)
        try:
            with np.load(io.BytesIO(chunks_data), allow_pickle=False) as arrays:
                columns = [arrays[n] for n in ("chunk_doc", "start", "end")]
        except (OSError, KeyError, ValueError, EOFError, NotImplementedError, zipfile.BadZipFile, zlib.error) as error:
            raise RetrieverFormatError(f"{chunks_path} could not be read: {error}") from None
        for name, column in zip(("chunk_doc", "start", "end"), columns):
            if column.ndim != 1 or column.dtype.kind not in "iu" or column.size != columns[0].size:
                raise RetrieverFormatError(f"{chunks_path}: {name} is a {column.dtype} array of shape {column.shape}; "
                                           f"expected int64 [{columns[0].size}]")
        store.chunk_doc, store.chunk_start, store.chunk_end = (np.asarray(c, dtype=np.int64) for c in columns)
        store._check_windows(chunks_path)
        store.most_windows = int(np.bincount(store.chunk_doc).max()) if store.n_windows else 0
        return store

    def _check_windows(self, path: Path) -> None:
        """RetrieverFormatError unless every document has windows, in order, inside its text."""
        doc, start, end = self.chunk_doc, self.chunk_start, self.chunk_end
        n_docs = len(self)
        problem = None
        if doc.size and (doc.min() < 0 or doc.max() >= n_docs):
            problem = f"a window belongs to document row {int(doc.min() if doc.min() < 0 else doc.max())} of {n_docs}"
        elif np.any(np.diff(doc) < 0):
            problem = "windows are not in document order"
        elif n_docs and np.bincount(doc, minlength=n_docs).min() == 0:
            problem = f"document {self.doc_ids[int(np.argmin(np.bincount(doc, minlength=n_docs)))]!r} has no window"
        else:
            lengths = np.fromiter((len(join_title(t, x)) for t, x in zip(self.titles, self.texts)), dtype=np.int64,
                                  count=n_docs)
            bad = np.flatnonzero((start < 0) | (start > end) | (end > lengths[doc]))
            same_doc = doc[1:] == doc[:-1]
            backwards = np.flatnonzero(same_doc & ((start[1:] < start[:-1]) | (end[1:] < end[:-1])))
            if bad.size:
                w = int(bad[0])
                problem = (f"window {w} spans [{int(start[w])}, {int(end[w])}) outside its document "
                           f"{self.doc_ids[int(doc[w])]!r} of {int(lengths[doc[w]])} characters")
            elif backwards.size:
                w = int(backwards[0]) + 1
                problem = f"window {w} of document {self.doc_ids[int(doc[w])]!r} starts before the window ahead of it"
        if problem:
            raise RetrieverFormatError(f"{path}: {problem} ({n_docs} documents, {doc.size} windows)")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_checked(path: Path, checksums: dict[str, str] | None) -> bytes:
    """The bytes of `path`, verified against checksums[path.name] when checksums are given."""
    if not path.is_file():
        raise RetrieverFormatError(f"{path} is missing")
    data = path.read_bytes()
    if checksums is not None:
        expected = checksums.get(path.name)
        if expected is None:
            raise RetrieverFormatError(f"{path}: no checksum recorded for it")
        if "sha256:" + sha256_hex(data) != expected:
            raise RetrieverFormatError(f"{path} is damaged or was edited: its checksum does not match the one "
                                       "recorded when the retriever was saved")
    return data
