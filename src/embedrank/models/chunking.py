"""Splitting long documents into overlapping token windows, and folding chunk scores back."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from embedrank.errors import InvalidTypeError, InvalidValueError


@dataclass(frozen=True)
class Chunk:
    """One window of a document: its text and character span [start, end) in the document."""

    text: str
    start: int
    end: int


def default_chunking(max_seq_length: int) -> tuple[int, int]:
    """(max_tokens, overlap) for a model: 224/32 for 256-token models, 400/50 for 512-token ones.

    Room is left for the special tokens and the prompt; other lengths scale the same way.
    """
    if max_seq_length >= 512:
        return 400, 50
    if max_seq_length >= 256:
        return 224, 32
    return max(8, int(max_seq_length * 0.875)), max(0, max_seq_length // 8)


def chunk(text: str, tokenizer, max_tokens: int, overlap: int) -> list[Chunk]:
    """Splits `text` on token boundaries into windows of `max_tokens` tokens, each sharing
    `overlap` tokens with the previous one.

    tokenizer: a `tokenizers.Tokenizer` or an object with a `.tokenizer` attribute holding one
    (embedrank's TextTokenizer). Tokens are counted without special tokens. Chunk texts are
    slices of `text` (character offsets from the tokenizer), from the first token's start to
    the last token's end. A text of at most `max_tokens` tokens (the empty text included) is
    one chunk holding the whole text.
    """
    if not isinstance(text, str):
        raise InvalidTypeError(f"text must be a str, got {type(text).__name__}")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise InvalidValueError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < max_tokens:
        raise InvalidValueError(f"overlap must be an integer in [0, max_tokens={max_tokens}), got {overlap!r}")
    tok = getattr(tokenizer, "tokenizer", tokenizer)
    if not hasattr(tok, "encode"):
        raise InvalidTypeError(f"tokenizer must be a tokenizers.Tokenizer, got {type(tokenizer).__name__}")
    truncation = tok.truncation
    tok.no_truncation()
    try:
        encoding = tok.encode(text, add_special_tokens=False)
    finally:
        if truncation:
            tok.enable_truncation(**{k: v for k, v in truncation.items() if k in ("max_length", "stride", "strategy", "direction")})
    offsets = [(s, e) for s, e in encoding.offsets]
    if len(offsets) <= max_tokens:
        return [Chunk(text, 0, len(text))]
    chunks = []
    step = max_tokens - overlap
    first = 0
    while True:
        last = min(first + max_tokens, len(offsets)) - 1
        start, end = offsets[first][0], offsets[last][1]
        chunks.append(Chunk(text[start:end], start, end))
        if last == len(offsets) - 1:
            break
        first += step
    return chunks


def aggregate_chunk_scores(scores: np.ndarray, chunk_to_doc: np.ndarray, n_docs: int, how: str = "max") -> np.ndarray:
    """Per-document scores from per-chunk scores.

    scores: [..., n_chunks] float; chunk_to_doc: [n_chunks] int document index of each chunk.
    Returns [..., n_docs] float32 (max or mean over each document's chunks; -inf for a document
    with no chunk).
    """
    scores = np.asarray(scores, dtype=np.float32)
    chunk_to_doc = np.asarray(chunk_to_doc)
    if chunk_to_doc.ndim != 1 or scores.shape[-1] != chunk_to_doc.shape[0]:
        raise InvalidValueError(f"chunk_to_doc must be [n_chunks={scores.shape[-1]}], got shape {chunk_to_doc.shape}")
    if chunk_to_doc.size and (chunk_to_doc.min() < 0 or chunk_to_doc.max() >= n_docs):
        raise InvalidValueError(f"chunk_to_doc holds document indices outside [0, {n_docs})")
    flat = scores.reshape(-1, scores.shape[-1])
    out = np.full((flat.shape[0], n_docs), -np.inf, dtype=np.float32)
    if how == "max":
        for row in range(flat.shape[0]):
            np.maximum.at(out[row], chunk_to_doc, flat[row])
    elif how == "mean":
        counts = np.bincount(chunk_to_doc, minlength=n_docs)
        for row in range(flat.shape[0]):
            sums = np.bincount(chunk_to_doc, weights=flat[row], minlength=n_docs)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[row] = np.where(counts > 0, sums / np.maximum(counts, 1), -np.inf)
    else:
        raise InvalidValueError(f"how must be 'max' or 'mean', got {how!r}")
    return out.reshape(scores.shape[:-1] + (n_docs,))
