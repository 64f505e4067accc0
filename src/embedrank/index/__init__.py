"""Indexes: exact / quantized flat search (FlatIndex), HNSW graphs (HNSWIndex) and BM25 over
texts (LexicalIndex). ``add_npy`` / ``add_batches`` stream vectors into any of them one batch
at a time (with ``FlatIndex(on_disk=...)``, past the machine's RAM).

All share one protocol (``add``, ``search``, ``remove``, ``save``; ``load_index`` reads
either back), int or str ids, per-vector metadata in SQLite with dict filters, and a
reader-writer lock that lets searches run while vectors are added and removed.
"""

from __future__ import annotations

import importlib

from embedrank.errors import IndexFormatError
from embedrank.index.base import BaseIndex
from embedrank.index.flat import FlatIndex
from embedrank.index.io import load_index
from embedrank.index.result import QueryHits, SearchResult
from embedrank.index.streaming import add_batches, add_npy

__all__ = ["BaseIndex", "FlatIndex", "HNSWIndex", "IndexFormatError", "LexicalIndex", "QueryHits", "SearchResult",
           "add_batches", "add_npy", "load_index"]


def __getattr__(name: str):
    # hnsw (and hnswlib) and lexical (and PyStemmer) are imported on first use.
    if name in ("HNSWIndex", "LexicalIndex"):
        module = "embedrank.index.hnsw" if name == "HNSWIndex" else "embedrank.index.lexical"
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'embedrank.index' has no attribute {name!r}")
