"""Vector indexes: exact / quantized flat search (FlatIndex) and HNSW graphs (HNSWIndex).

Both share one protocol (``add``, ``search``, ``remove``, ``save``; ``load_index`` reads
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

__all__ = ["BaseIndex", "FlatIndex", "HNSWIndex", "IndexFormatError", "QueryHits", "SearchResult", "load_index"]


def __getattr__(name: str):
    # hnsw (and hnswlib) is imported on first use of HNSWIndex.
    if name == "HNSWIndex":
        value = importlib.import_module("embedrank.index.hnsw").HNSWIndex
        globals()[name] = value
        return value
    raise AttributeError(f"module 'embedrank.index' has no attribute {name!r}")
