"""Tokenization with padding and truncation managed here, not by tokenizer.json.

Some tokenizer.json files bake in padding and truncation (all-MiniLM-L6-v2's pads and
truncates at 128): padding to a fixed length would make mean pooling average pad tokens,
and a baked truncation silently ignores the model's max_seq_length. Both are turned off on
load; texts are truncated at the model's max_seq_length (counted, so callers can warn) and
each batch is padded to its own longest sequence.

Thread safety: a `tokenizers.Tokenizer`'s truncation is a setting on the object, so
toggling it around a call races with every other thread using the same object. Each
TextTokenizer instead holds one tokenizer per truncation setting, configured once at load
and never changed, so any number of threads may encode through one TextTokenizer.

Long texts: the Rust tokenizer materializes every token of a text before truncating it,
so a 1 MB text costs hundreds of MB for 256 tokens kept. A text longer than the character
budget is first cut to a prefix ending at a word boundary (ASCII whitespace) that already
has more than max_length tokens; see `cut_long_texts` for why the result and the
truncation count are the same as for the whole text.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Mapping, Set
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
    # a mapping would give its keys and a set an arbitrary order: neither is a list of texts
    if isinstance(texts, (bytes, bytearray, Mapping, Set)) or not hasattr(texts, "__iter__"):
        raise InvalidTypeError(f"{name} must be a string or a sequence of strings, got {type(texts).__name__}")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise InvalidTypeError(f"{name}[{i}] must be a str, got {type(t).__name__}")
    return out


# The first character budget for cutting a long text, per token kept: English averages four
# to five characters per WordPiece token, so ten per token almost always gives a prefix
# with enough tokens at the first try; the budget only costs speed when it is short (it
# doubles), never correctness.
CHARS_PER_TOKEN_BUDGET = 10
# From the start of the text to the last non-whitespace character followed by ASCII whitespace.
_WORD_END = re.compile(r".*[^ \t\n\r](?=[ \t\n\r])", re.S)


def check_encodable(texts: Sequence[str], name: str = "texts") -> None:
    """Raises InvalidValueError naming `name`[i] for the first text that is not valid Unicode
    (a lone surrogate such as "\\ud800", which tokenizers rejects with a bare TypeError)."""
    for i, text in enumerate(texts):
        if text.isascii():
            continue
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise InvalidValueError(f"{name}[{i}] cannot be tokenized: {error.reason} at character {error.start} "
                                    f"({text[error.start]!r}); texts must be valid Unicode (no lone surrogates)") from None


def _unencodable(texts: Sequence[str], pairs: Sequence[str] | None) -> InvalidValueError:
    """The error for texts that tokenizers cannot take: names the first text that cannot be
    encoded as UTF-8 (a lone surrogate such as "\\ud800")."""
    for name, values in (("texts", texts), ("pairs", pairs)):
        for i, text in enumerate(values or ()):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as error:
                return InvalidValueError(f"{name}[{i}] cannot be tokenized: {error.reason} at character {error.start} "
                                         f"({text[error.start]!r}); texts must be valid Unicode (no lone surrogates)")
    return InvalidValueError("a text could not be tokenized")


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
        # one tokenizer per truncation strategy, set here and never changed (see the module docstring)
        self._truncating = {}
        for strategy in ("longest_first", "only_second"):
            copy = Tokenizer.from_str(tok.to_str())
            copy.no_padding()
            copy.enable_truncation(self.max_length, strategy=strategy)
            self._truncating[strategy] = copy
        self.char_budget = CHARS_PER_TOKEN_BUDGET * (self.max_length + 1)

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

    def encode(self, texts: Sequence[str], pairs: Sequence[str] | None = None, strategy: str | None = None):
        """Tokenizes a batch, truncating at max_length.

        strategy: "only_second" (the default for pairs: only the second text, the document, is
        cut) or "longest_first" (the default for single texts). Returns (encodings,
        n_truncated): a list of tokenizers.Encoding and how many inputs were cut. Safe to call
        from several threads at once.
        """
        if strategy is None:
            strategy = "only_second" if pairs is not None else "longest_first"
        tok = self._truncating[strategy]
        texts = self.cut_long_texts(texts)
        try:
            if pairs is None:
                encodings = tok.encode_batch(texts, add_special_tokens=True)
            else:
                encodings = tok.encode_batch(list(zip(texts, self.cut_long_texts(pairs))), add_special_tokens=True)
        except TypeError:
            # tokenizers raises a bare TypeError for a str it cannot convert (a lone surrogate)
            raise _unencodable(texts, pairs) from None
        n_truncated = sum(1 for e in encodings if e.overflowing)
        return encodings, n_truncated

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text without special tokens, exact up to max_length; a longer text
        may be reported with any count above max_length (see cut_long_texts)."""
        texts = self.cut_long_texts(texts)
        try:
            return [len(e.ids) for e in self._tokenizer.encode_batch(texts, add_special_tokens=False)]
        except TypeError:
            raise _unencodable(texts, None) from None

    def cut_long_texts(self, texts: Sequence[str]) -> list[str]:
        """The texts, each one longer than char_budget characters replaced by a prefix that
        tokenizes to the same first max_length tokens and still has more than max_length.

        Why the result is exact: the prefix ends where a non-whitespace character meets ASCII
        whitespace. The tokenizers embedrank loads (BERT WordPiece, SentencePiece's Metaspace,
        byte-level BPE) normalize character by character and split words at whitespace, so the
        prefix's tokens are the first tokens of the whole text. A prefix with more than
        max_length tokens therefore truncates to the same tokens as the whole text, and the
        whole text is counted as truncated exactly when it was. The character budget is only
        a first guess: when the prefix has max_length tokens or fewer (long runs of
        whitespace, or no whitespace at all) the budget is doubled, up to the whole text.
        """
        texts = list(texts)
        for i, text in enumerate(texts):
            if len(text) > self.char_budget:
                texts[i] = self._cut(text)
        return texts

    def _cut(self, text: str) -> str:
        budget = self.char_budget
        while budget < len(text):
            match = _WORD_END.match(text, 0, budget + 1)
            if match:
                prefix = text[:match.end()]
                try:
                    n = len(self._tokenizer.encode(prefix, add_special_tokens=False).ids)
                except TypeError:
                    return text  # encode() reports the bad text with its index
                if n > self.max_length:
                    return prefix
            budget *= 2
        return text

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
