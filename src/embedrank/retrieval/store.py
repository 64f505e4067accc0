"""DocumentStore: a Retriever's corpus and its windows, in memory and on disk.

Documents are kept in the order added (position = row); each window (one index vector,
index id = window number) records its document's row and its character span in the
document's text (title + " " + text). On disk: ``documents.jsonl`` (one ``{"_id", "title",
"text"}`` per line) and ``chunks.npz`` (``chunk_doc``, ``start``, ``end``, int64 [n_windows]).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from embedrank.errors import RetrieverFormatError, UnknownIdError
from embedrank.utils.documents import join_title

__all__ = ["CHUNKS_FILE", "DOCS_FILE", "DocumentStore"]

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
        """Adds documents and their windows (owners: int64 [n_windows], rows within `ids`)."""
        first_doc = len(self.doc_ids)
        self.doc_ids.extend(ids)
        self.titles.extend(titles)
        self.texts.extend(texts)
        self.position.update((doc_id, first_doc + i) for i, doc_id in enumerate(ids))
        self.chunk_doc = np.concatenate([self.chunk_doc, owners.astype(np.int64) + first_doc])
        self.chunk_start = np.concatenate([self.chunk_start, starts.astype(np.int64)])
        self.chunk_end = np.concatenate([self.chunk_end, ends.astype(np.int64)])
        self.most_windows = int(np.bincount(self.chunk_doc).max()) if self.n_windows else 0

    # -- files -----------------------------------------------------------------------------
    def write(self, folder: Path) -> None:
        """Writes documents.jsonl and chunks.npz into `folder`."""
        with open(folder / DOCS_FILE, "w", encoding="utf-8") as f:
            for doc_id, title, text in zip(self.doc_ids, self.titles, self.texts):
                f.write(json.dumps({"_id": doc_id, "title": title, "text": text}, ensure_ascii=False) + "\n")
        with open(folder / CHUNKS_FILE, "wb") as f:
            np.savez(f, chunk_doc=self.chunk_doc, start=self.chunk_start, end=self.chunk_end)

    @classmethod
    def read(cls, folder: Path) -> DocumentStore:
        """Reads what write() wrote; RetrieverFormatError naming the file for anything unreadable."""
        store = cls()
        path = folder / DOCS_FILE
        if not path.is_file():
            raise RetrieverFormatError(f"{path} is missing")
        with open(path, encoding="utf-8") as f:
            for line_number, line in enumerate(f, 1):
                try:
                    row = json.loads(line)
                    store.doc_ids.append(row["_id"])
                    store.titles.append(row["title"])
                    store.texts.append(row["text"])
                except (json.JSONDecodeError, KeyError, TypeError) as error:
                    raise RetrieverFormatError(f"{path}:{line_number} is not a document row: {error}") from None
        store.position = {d: i for i, d in enumerate(store.doc_ids)}
        try:
            with np.load(folder / CHUNKS_FILE) as arrays:
                store.chunk_doc, store.chunk_start, store.chunk_end = (
                    np.asarray(arrays[n], dtype=np.int64) for n in ("chunk_doc", "start", "end"))
        except (OSError, KeyError, ValueError) as error:
            raise RetrieverFormatError(f"{folder / CHUNKS_FILE} could not be read: {error}") from None
        n = store.n_windows
        if store.chunk_start.size != n or store.chunk_end.size != n \
                or (n and (store.chunk_doc.min() < 0 or store.chunk_doc.max() >= len(store))):
            raise RetrieverFormatError(f"{folder}: inconsistent files ({len(store)} documents, {n} windows)")
        store.most_windows = int(np.bincount(store.chunk_doc).max()) if n else 0
        return store
