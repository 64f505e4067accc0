"""Contrastive losses for bi-encoders (torch).

Multiple Negatives Ranking Loss (MNRL): for query i, the candidates are every positive in the
batch plus every explicit hard negative; the target is its own positive. Scores are cosine
similarities times `scale`. A candidate that is the same document as one of query i's
relevant documents (same id, or same text when ids are unknown) is masked out (-inf) instead
of being used as a negative: the in-batch false negatives. The optional symmetric term scores
each positive against the batch's queries, with the same masking.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from embedrank.train.data import TrainingExample
from embedrank.errors import InvalidValueError

__all__ = ["false_negative_masks", "mnrl_loss", "matryoshka_loss", "MNRLoss", "MatryoshkaLoss"]


def false_negative_masks(examples: Sequence[TrainingExample], num_negatives: int,
                         negative_keys: Sequence[Sequence[str]] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean masks of the in-batch false negatives.

    Candidates are laid out as [the B positives, then each example's num_negatives negatives].
    Returns (query_mask [B, B + B*K], document_mask [B, B]): True where a candidate (or, for
    the symmetric term, another query) must not count as a negative.
    """
    b = len(examples)
    keys = [e.positive_key() for e in examples]
    for i, e in enumerate(examples):
        row = list(negative_keys[i]) if negative_keys is not None else e.negative_keys()
        if len(row) != num_negatives:
            raise InvalidValueError(f"example {i} has {len(row)} negatives, expected {num_negatives}")
        keys.extend(row)
    text_keys = [f"text:{e.positive}" for e in examples]
    query_mask = torch.zeros(b, len(keys), dtype=torch.bool)
    for i, e in enumerate(examples):
        relevant = e.relevant_keys()
        for j, key in enumerate(keys):
            if j != i and (key in relevant or (j < b and text_keys[j] in relevant)):
                query_mask[i, j] = True
    document_mask = torch.zeros(b, b, dtype=torch.bool)
    for i in range(b):
        for j in range(b):
            # query j is a correct match for positive i when i's document is relevant to j
            if i != j and (keys[i] in examples[j].relevant_keys() or text_keys[i] in examples[j].relevant_keys()):
                document_mask[i, j] = True
    return query_mask, document_mask


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarities [len(a), len(b)], in float32 at least (half precision is upcast)."""
    if a.dtype in (torch.float16, torch.bfloat16):
        a, b = a.float(), b.float()
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


def mnrl_loss(queries: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor | None = None,
              scale: float = 20.0, symmetric: bool = False, query_mask: torch.Tensor | None = None,
              document_mask: torch.Tensor | None = None) -> torch.Tensor:
    """MNRL over queries [B, D], positives [B, D], negatives [B*K, D] (or None); a scalar.

    query_mask [B, B + B*K] / document_mask [B, B]: True entries are masked out (see
    false_negative_masks). The loss is the mean cross-entropy (averaged with the symmetric
    document->query term when symmetric=True).
    """
    if queries.ndim != 2 or positives.shape != queries.shape:
        raise InvalidValueError(f"queries and positives must both be [B, D], got {tuple(queries.shape)} and "
                         f"{tuple(positives.shape)}")
    candidates = positives if negatives is None or negatives.numel() == 0 else torch.cat([positives, negatives])
    if candidates.shape[1] != queries.shape[1]:
        raise InvalidValueError(f"negatives have dimension {candidates.shape[1]}, queries {queries.shape[1]}")
    b = queries.shape[0]
    target = torch.arange(b, device=queries.device)
    scores = _cosine(queries, candidates) * scale
    if query_mask is not None:
        if tuple(query_mask.shape) != tuple(scores.shape):
            raise InvalidValueError(f"query_mask must be {tuple(scores.shape)}, got {tuple(query_mask.shape)}")
        scores = scores.masked_fill(query_mask.to(scores.device), float("-inf"))
    loss = F.cross_entropy(scores, target)
    if symmetric:
        back = _cosine(positives, queries) * scale
        if document_mask is not None:
            back = back.masked_fill(document_mask.to(back.device), float("-inf"))
        loss = (loss + F.cross_entropy(back, target)) / 2
    return loss


class MNRLoss:
    """mnrl_loss with its settings bound: loss(queries, positives, negatives, masks)."""

    def __init__(self, scale: float = 20.0, symmetric: bool = False):
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            raise InvalidValueError(f"scale must be a positive number, got {scale!r}")
        self.scale = float(scale)
        self.symmetric = bool(symmetric)

    def __call__(self, queries, positives, negatives=None, query_mask=None, document_mask=None) -> torch.Tensor:
        return mnrl_loss(queries, positives, negatives, self.scale, self.symmetric, query_mask, document_mask)


def matryoshka_loss(loss, dims: Sequence[int], weights: Sequence[float] | None, queries, positives,
                    negatives=None, **kwargs) -> torch.Tensor:
    """sum_d weight_d * loss(first d dimensions of every vector); cosine re-normalizes them."""
    weights = [1.0] * len(dims) if weights is None else list(weights)
    total = 0.0
    for dim, weight in zip(dims, weights):
        cut = None if negatives is None else negatives[:, :dim]
        total = total + weight * loss(queries[:, :dim], positives[:, :dim], cut, **kwargs)
    return total


class MatryoshkaLoss:
    """Wraps a loss so that truncated vectors (e.g. 384/256/128/64 dimensions) are trained too."""

    def __init__(self, loss, dims: Sequence[int], weights: Sequence[float] | None = None):
        dims = list(dims)
        if not dims or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
            raise InvalidValueError(f"matryoshka dims must be positive integers, got {dims!r}")
        if len(set(dims)) != len(dims):
            raise InvalidValueError(f"matryoshka dims must be distinct, got {dims!r}")
        if weights is not None:
            weights = list(weights)
            if len(weights) != len(dims) or any(not isinstance(w, (int, float)) or w < 0 for w in weights):
                raise InvalidValueError(f"matryoshka weights must be {len(dims)} non-negative numbers, got {weights!r}")
        self.loss, self.dims, self.weights = loss, dims, weights

    def check_dimension(self, dimension: int) -> None:
        too_big = [d for d in self.dims if d > dimension]
        if too_big:
            raise InvalidValueError(f"matryoshka dims {too_big} exceed the model's dimension {dimension}")

    def __call__(self, queries, positives, negatives=None, **kwargs) -> torch.Tensor:
        self.check_dimension(queries.shape[1])
        return matryoshka_loss(self.loss, self.dims, self.weights, queries, positives, negatives, **kwargs)
