"""Tokenization with padding and truncation managed here, not by tokenizer.json.

Some tokenizer.json files bake in padding and truncation (all-MiniLM-L6-v2's pads and
truncates at 128): padding to a fixed length would make mean pooling average pad tokens,
and a baked truncation silently ignores the model's max_seq_length. Both are turned off on
load; texts are truncated at the model's max_seq_length (counted, so callers can warn) and
each batch is padded to its own longest sequence.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from embedrank.errors import InvalidTypeError, InvalidValueError, MissingFileError

_PAD_TOKENS = ("[PAD]", "<pad>", "<PAD>")


@dataclass
class TokenizedBatch:
    """Token ids of one padded batch: each array [b, L] int64."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray


def check_texts(texts, name: str = "texts") -> list[str]:
    """A list of str from a str (one text) or a sequence of str; others raise TypeError naming the index."""
    if isinstance(texts, str):
        return [texts]
    if texts is None:
        raise InvalidTypeError(f"{name} must be a string or a sequence of strings, got None")
    if isinstance(texts, (bytes, bytearray)) or not hasattr(texts, "__iter__"):
        raise InvalidTypeError(f"{name} must be a string or a sequence of strings, got {type(texts).__name__}")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise InvalidTypeError(f"{name}[{i}] must be a str, got {type(t).__name__}")
    return out


class TextTokenizer:
    """A `tokenizers.Tokenizer` loaded from tokenizer.json, truncating at `max_length`."""

    def __init__(self, path: str | os.PathLike, max_length: int):
        from tokenizers import Tokenizer

        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"tokenizer file not found: {path}")
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as error:  # tokenizers raises a bare Exception on bad JSON
            raise InvalidValueError(f"{path} is not a valid tokenizer.json: {error}") from None
        if max_length < 2:
            raise InvalidValueError(f"max_length must be >= 2, got {max_length}")
        baked_padding = tok.padding
        self.pad_id = self._pad_id(tok, baked_padding)
        tok.no_padding()
        tok.no_truncation()
        self._tokenizer = tok
        self.max_length = int(max_length)
        self.path = path

    @staticmethod
    def _pad_id(tok, baked_padding) -> int:
        if baked_padding and baked_padding.get("pad_id") is not None:
            return int(baked_padding["pad_id"])
        for token in _PAD_TOKENS:
            token_id = tok.token_to_id(token)
            if token_id is not None:
                return int(token_id)
        return 0

    @property
    def tokenizer(self):
        """The underlying tokenizers.Tokenizer (no padding, no truncation)."""
        return self._tokenizer

    def encode(self, texts: Sequence[str], pairs: Sequence[str] | None = None):
        """Tokenizes a batch, truncating at max_length.

        For pairs, only the second text (the document) is truncated. Returns
        (encodings, n_truncated): a list of tokenizers.Encoding and how many inputs were cut.
        """
        tok = self._tokenizer
        strategy = "only_second" if pairs is not None else "longest_first"
        tok.enable_truncation(self.max_length, strategy=strategy)
        try:
            if pairs is None:
                encodings = tok.encode_batch(list(texts), add_special_tokens=True)
            else:
                encodings = tok.encode_batch(list(zip(texts, pairs)), add_special_tokens=True)
        finally:
            tok.no_truncation()
        n_truncated = sum(1 for e in encodings if e.overflowing)
        return encodings, n_truncated

    def pad(self, encodings: Sequence, multiple_of: int = 1) -> TokenizedBatch:
        """Pads a batch of encodings to its own longest sequence, rounded up to `multiple_of`
        tokens but never past max_length (fewer distinct shapes for the kernels that plan per
        shape, as cuDNN's attention does on CUDA; padding is masked, vectors don't change)."""
        if isinstance(multiple_of, bool) or not isinstance(multiple_of, int) or multiple_of < 1:
            raise InvalidValueError(f"multiple_of must be a positive integer, got {multiple_of!r}")
        longest = max(len(e.ids) for e in encodings)
        length = min(-(-longest // multiple_of) * multiple_of, max(longest, self.max_length))
        b = len(encodings)
        input_ids = np.full((b, length), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((b, length), dtype=np.int64)
        token_type_ids = np.zeros((b, length), dtype=np.int64)
        for row, e in enumerate(encodings):
            n = len(e.ids)
            input_ids[row, :n] = e.ids
            attention_mask[row, :n] = 1
            token_type_ids[row, :n] = e.type_ids
        return TokenizedBatch(input_ids, attention_mask, token_type_ids)


def length_sorted_batches(lengths: Sequence[int], batch_size: int, max_tokens_per_batch: int | None = None) -> list[np.ndarray]:
    """Groups indices into batches of similar length, longest first.

    Each batch holds at most `batch_size` items and, when `max_tokens_per_batch` is given,
    at most that many tokens once padded (count x its longest length; a single longer item
    still forms a batch of one). Returns arrays of original indices.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if max_tokens_per_batch is not None and (
        isinstance(max_tokens_per_batch, bool) or not isinstance(max_tokens_per_batch, int) or max_tokens_per_batch < 1
    ):
        raise InvalidValueError(f"max_tokens_per_batch must be a positive integer or None, got {max_tokens_per_batch!r}")
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    batches = []
    start = 0
    while start < order.size:
        longest = int(lengths[order[start]])
        count = min(batch_size, order.size - start)
        if max_tokens_per_batch is not None:
            count = max(1, min(count, max_tokens_per_batch // max(longest, 1)))
        batches.append(order[start:start + count])
        start += count
    return batches
