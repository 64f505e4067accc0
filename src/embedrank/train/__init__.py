"""embedrank.train: fine-tuning bi-encoders and cross-encoders (extra `train`: torch, transformers).

Importing this package does not import torch; the torch-backed names load on first use.
Data (examples, splits) and hard-negative mining need no torch.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "TrainingExample": "embedrank.train.data",
    "RetrievalData": "embedrank.train.data",
    "examples_from_pairs": "embedrank.train.data",
    "split_by_query": "embedrank.train.data",
    "mine_hard_negatives": "embedrank.train.mining",
    "MinedNegatives": "embedrank.train.mining",
    "BiEncoderConfig": "embedrank.train.bi_encoder",
    "TrainingResult": "embedrank.train.bi_encoder",
    "train_bi_encoder": "embedrank.train.bi_encoder",
    "evaluate_bi_encoder": "embedrank.train.bi_encoder",
    "CrossEncoderConfig": "embedrank.train.cross_encoder",
    "train_cross_encoder": "embedrank.train.cross_encoder",
    "evaluate_reranker": "embedrank.train.cross_encoder",
    "BiEncoderModel": "embedrank.train.models",
    "CrossEncoderModel": "embedrank.train.models",
    "mnrl_loss": "embedrank.train.losses",
    "MNRLoss": "embedrank.train.losses",
    "MatryoshkaLoss": "embedrank.train.losses",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'embedrank.train' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
