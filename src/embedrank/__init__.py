"""embedrank: fast, correct embedding retrieval.

The native kernels live in :mod:`embedrank.kernels`, the error family in :mod:`embedrank.errors`.
The model-facing names below are imported on first use, so ``import embedrank`` stays light
(no onnxruntime, no torch). The package's layers are its folders: ``kernels`` (C++), ``runtime``
(ONNX Runtime sessions), ``export``, ``models``, ``index``, ``retrieval``, ``data``, ``train``,
``apps`` and ``bench``; ``utils`` holds the helpers they share.
"""

from __future__ import annotations

import importlib

from embedrank import errors, kernels
from embedrank.errors import (EmbedrankError, EmbedrankWarning, IndexFormatError, ModelFolderError,
                              RetrieverFormatError, TruncationWarning)

__version__ = "0.1.0"

_LAZY = {
    "Encoder": "embedrank.models.encoder",
    "ChunkedEmbeddings": "embedrank.models.encoder",
    "quantize_embeddings": "embedrank.models.encoder",
    "chunk": "embedrank.models.chunking",
    "Chunk": "embedrank.models.chunking",
    "aggregate_chunk_scores": "embedrank.models.chunking",
    "EmbeddingCache": "embedrank.models.cache",
    "export_model": "embedrank.export",
    "import_onnx": "embedrank.export.importer",
    "evaluate": "embedrank.data.evaluation",
    "load_beir": "embedrank.data.beir",
    "FlatIndex": "embedrank.index",
    "HNSWIndex": "embedrank.index",
    "LexicalIndex": "embedrank.index",
    "Analyzer": "embedrank.index.analysis",
    "SearchResult": "embedrank.index",
    "load_index": "embedrank.index",
    "CrossEncoder": "embedrank.models.cross_encoder",
    "Retriever": "embedrank.retrieval.retriever",
    "Hit": "embedrank.retrieval.retriever",
}

__all__ = ["EmbedrankError", "EmbedrankWarning", "IndexFormatError", "ModelFolderError", "RetrieverFormatError",
           "TruncationWarning", "errors", "kernels", "__version__", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'embedrank' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
