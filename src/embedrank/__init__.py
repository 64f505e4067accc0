"""embedrank: fast, correct embedding retrieval.

The native kernels live in :mod:`embedrank.kernels`. The model-facing names below are
imported on first use, so ``import embedrank`` stays light (no onnxruntime, no torch).
"""

from __future__ import annotations

import importlib

from embedrank import kernels

__version__ = "0.1.0"

_LAZY = {
    "Encoder": "embedrank.encoder",
    "ChunkedEmbeddings": "embedrank.encoder",
    "TruncationWarning": "embedrank.encoder",
    "quantize_embeddings": "embedrank.encoder",
    "chunk": "embedrank.chunking",
    "Chunk": "embedrank.chunking",
    "aggregate_chunk_scores": "embedrank.chunking",
    "EmbeddingCache": "embedrank.cache",
    "export_model": "embedrank.export",
    "ModelFolderError": "embedrank.model_config",
    "evaluate": "embedrank.evaluation",
    "load_beir": "embedrank.beir",
    "FlatIndex": "embedrank.index",
    "HNSWIndex": "embedrank.index",
    "SearchResult": "embedrank.index",
    "IndexFormatError": "embedrank.index",
    "load_index": "embedrank.index",
    "CrossEncoder": "embedrank.cross_encoder",
    "Retriever": "embedrank.retriever",
    "Hit": "embedrank.retriever",
}

__all__ = ["kernels", "__version__", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'embedrank' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
