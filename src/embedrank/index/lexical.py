"""LexicalIndex: BM25 over an inverted index, with the vector indexes' ids, metadata and files.

    index = LexicalIndex()                                   # English: stop words + Snowball stems
    index.add(["first text", "second text"], ids=["a", "b"], metadata=[{"lang": "en"}, None])
    result = index.search(["text query"], k=10, filter={"lang": "en"})   # SearchResult [Q, k]

The protocol is BaseIndex's (add / upsert / remove / search / save / load_index / ids /
metadata and filters); what is added and searched are texts, analyzed by an
:class:`~embedrank.index.analysis.Analyzer`. Scoring is Lucene's BM25 (bm25s's default):

    score(q, d) = sum over query terms t (repeats count) of
                  idf(t) * tf(t, d) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl)),
    idf(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

with N, df and avgdl over the live documents, so scores after any add or remove equal those
of an index built from scratch on the same documents. A document that shares no term with a
query never appears (a query of only stop words finds nothing: padding).

Storage: term ids -> postings (slots increasing, term frequencies) in compressed-sparse-row
segments; each add appends a segment, and the newest segments are merged while the newest holds
at least half the postings of the one before it (sizes shrink geometrically from the oldest, so
each posting is merged O(log n) times and n one-document adds cost O(n log n)). A
remove drops the postings at once and renumbers the slots once a fifth are dead. The C++
kernel (embedrank._kernels.bm25_topk) is exact either way: below MAXSCORE_MIN_SLOTS documents
it scores term at a time into a dense accumulator per thread, above it document at a time with
MaxScore pruning (per-term score bounds cached per segment), keeping the k best. Files: terms.json (the vocabulary), terms.npy / offsets.npy /
docs.npy / tfs.npy (one merged segment) and doc_lengths.npy, checked on load.
"""

from __future__ import annotations

import json
import math
import numbers
import threading
from pathlib import Path

import numpy as np

from embedrank import _kernels
from embedrank.errors import IndexFormatError, InvalidTypeError, InvalidValueError
from embedrank.index.analysis import Analyzer, AnalyzedTexts
from embedrank.index.base import BaseIndex
from embedrank.utils.threads import available_cores, check_num_threads

__all__ = ["LexicalIndex"]

MAX_SEGMENTS = 24  # a backstop: the size tiers alone stay under about log2(postings) segments
VOCAB_FILE = "terms.json"
ARRAY_FILES = ("terms.npy", "offsets.npy", "docs.npy", "tfs.npy", "doc_lengths.npy")
# From this many slots on, queries use the kernel's MaxScore path (document at a time, pruned);
# below it term at a time into a dense accumulator is faster (measured: SciFact's 5k documents
# ~1.5x faster term at a time, 200k synthetic Zipfian documents ~4x faster with MaxScore).
MAXSCORE_MIN_SLOTS = 32_768
# Renumber the slots when this fraction of them is dead (removed documents).
RENUMBER_FRACTION = 0.2


class _Segment:
    """Postings of some documents: term ids (int32, increasing), offsets (int64 [t + 1]),
    docs (int32 slots, increasing within a term) and tfs (float32 > 0); bounds (float32 [t]):
    the kernel's cache of each term's largest tf / (tf + norm), NaN until a query needs it and
    again after any change of the document norms."""

    __slots__ = ("terms", "offsets", "docs", "tfs", "bounds")

    def __init__(self, terms: np.ndarray, offsets: np.ndarray, docs: np.ndarray, tfs: np.ndarray) -> None:
        self.terms, self.offsets, self.docs, self.tfs = terms, offsets, docs, tfs
        self.bounds = np.full(terms.size, np.nan, dtype=np.float32)

    @classmethod
    def from_pairs(cls, term_of: np.ndarray, doc_of: np.ndarray, tfs: np.ndarray) -> _Segment:
        """From postings already sorted by (term, doc)."""
        terms, starts = np.unique(term_of, return_index=True)
        offsets = np.empty(terms.size + 1, dtype=np.int64)
        offsets[:-1] = starts
        offsets[-1] = term_of.size
        return cls(terms.astype(np.int32), offsets, np.ascontiguousarray(doc_of, dtype=np.int32),
                   np.ascontiguousarray(tfs, dtype=np.float32))

    def term_per_posting(self) -> np.ndarray:
        return np.repeat(self.terms, np.diff(self.offsets))

    @property
    def n_postings(self) -> int:
        return int(self.docs.size)

    def as_tuple(self) -> tuple:
        return (self.terms, self.offsets, self.docs, self.tfs)

    def kernel_arguments(self, maxscore: bool) -> tuple:
        """The kernel's segment tuple; without the bound cache the kernel scores term at a time."""
        return (self.terms, self.offsets, self.docs, self.tfs, self.bounds if maxscore else None)


class LexicalIndex(BaseIndex):
    """BM25 over texts (see the module docstring).

    k1 (>= 0) and b (in [0, 1]): BM25's term-frequency saturation and length normalization
    (bm25s's and Lucene's defaults 1.5 / 0.75 and 1.2 / 0.75 differ little). language /
    stopwords: the Analyzer's. num_threads: for batched searches (None: all cores).
    add(texts, ids=None, metadata=None, upsert=False): texts is a list of str (or one str);
    search(queries, k, filter=None): queries a list of str (or one str).
    """

    _type_name = "LexicalIndex"

    def __init__(self, k1: float = 1.5, b: float = 0.75, language: str | None = "english",
                 stopwords="default", num_threads: int | None = None) -> None:
        super().__init__(None)
        self.k1 = _real(k1, "k1", 0.0, math.inf)
        self.b = _real(b, "b", 0.0, 1.0)
        self.analyzer = Analyzer(language, stopwords)
        self.num_threads = check_num_threads(num_threads)
        self._threads = self.num_threads or available_cores()
        self._vocab: dict[str, int] = {}
        self._terms: list[str] = []
        self._df = np.zeros(0, dtype=np.int64)           # [V] live documents holding the term
        self._doc_lengths = np.zeros(0, dtype=np.float32)  # [slot_count]; 0 for dead slots
        self._total_length = 0.0
        self._segments: list[_Segment] = []
        self._norm = np.zeros(0, dtype=np.float32)        # [slot_count]: k1 * (1 - b + b * |d| / avgdl)
        # add and remove only mark the norms stale: rebuilding them is O(slots), too much for
        # every one-document add; the next search rebuilds them once (see _fresh_norm)
        self._norm_stale = False
        self._norm_mutex = threading.Lock()

    # -- hooks: items and queries are texts ------------------------------------------------
    def _as_items(self, items) -> AnalyzedTexts:
        return self.analyzer.analyze(_texts(items, "texts"))

    def _as_queries(self, queries) -> AnalyzedTexts:
        return self.analyzer.analyze(_texts(queries, "queries"))

    def _config(self) -> dict:
        return {"k1": self.k1, "b": self.b, **self.analyzer.config(), "num_threads": self.num_threads}

    def _search_params(self) -> set[str]:
        return set()

    def _memory_bytes(self) -> int:
        postings = sum(s.terms.nbytes + s.offsets.nbytes + s.docs.nbytes + s.tfs.nbytes for s in self._segments)
        vocab = sum(len(t) + 49 + 8 + 72 for t in self._terms)  # str object + list slot + dict entry, roughly
        norm = 4 * self._idmap.slot_count  # float32 per slot, as the next search holds it
        return postings + vocab + self._df.nbytes + self._doc_lengths.nbytes + norm

    @property
    def vocabulary_size(self) -> int:
        """Distinct terms ever added (terms of removed documents stay, with df 0)."""
        with self._lock.read():
            return len(self._terms)

    # -- add / remove ----------------------------------------------------------------------
    def _add_vectors(self, slots: np.ndarray, docs: AnalyzedTexts) -> None:
        # global ids of the batch's terms (new terms appended; undone below if anything fails)
        vocab_before = len(self._terms)
        try:
            to_global = np.fromiter((self._term_id(t) for t in docs.terms), dtype=np.int64, count=len(docs.terms))
            lengths = docs.lengths
            term_of = to_global[docs.codes]
            doc_of = np.repeat(slots.astype(np.int64), lengths)
            width = int(slots.max()) + 1 if slots.size else 1
            keys, tfs = np.unique(term_of * width + doc_of, return_counts=True)
            segment = _Segment.from_pairs(keys // width, keys % width, tfs)
            df = np.bincount(segment.term_per_posting(), minlength=len(self._terms))
            slot_count = self._idmap.slot_count
            doc_lengths = _grown(self._doc_lengths, slot_count)
            doc_lengths[slots] = lengths
        except BaseException:
            self._forget_terms(vocab_before)
            raise
        self._df = _grown(self._df, len(self._terms)) + df
        self._doc_lengths = doc_lengths
        self._total_length += float(lengths.sum())
        self._segments.append(segment)
        self._merge_tiers()
        self._norm_stale = True

    def _term_id(self, term: str) -> int:
        found = self._vocab.get(term)
        if found is None:
            found = self._vocab[term] = len(self._terms)
            self._terms.append(term)
        return found

    def _forget_terms(self, count: int) -> None:
        for term in self._terms[count:]:
            del self._vocab[term]
        del self._terms[count:]

    def _remove_slots(self, slots: np.ndarray) -> None:
        dead = np.zeros(max(self._idmap.slot_count, 1), dtype=bool)
        dead[slots] = True
        kept_segments = []
        df = self._df.copy()
        for segment in self._segments:
            gone = dead[segment.docs]
            if gone.any():
                term_of = segment.term_per_posting()
                df -= np.bincount(term_of[gone], minlength=df.size)
                keep = ~gone
                segment = _Segment.from_pairs(term_of[keep], segment.docs[keep], segment.tfs[keep])
            if segment.n_postings:
                kept_segments.append(segment)
        self._segments = kept_segments
        self._df = df
        self._total_length -= float(self._doc_lengths[slots].sum())
        self._doc_lengths = self._doc_lengths.copy()
        self._doc_lengths[slots] = 0
        self._norm_stale = True

    def _after_remove(self) -> None:
        live = len(self._idmap)
        if self._idmap.slot_count - live > RENUMBER_FRACTION * max(self._idmap.slot_count, 1):
            old_of_new = self._renumber_slots()
            new_of_old = np.full(max(int(old_of_new.max(initial=-1)) + 1, 1), -1, dtype=np.int64)
            new_of_old[old_of_new] = np.arange(old_of_new.size)
            # postings only hold live slots (removed ones were dropped), so every lookup hits
            self._segments = [_Segment(s.terms, s.offsets, new_of_old[s.docs].astype(np.int32), s.tfs)
                              for s in self._segments]
            self._doc_lengths = np.ascontiguousarray(self._doc_lengths[old_of_new])
        if live == 0:
            self._total_length = 0.0  # no drift from float sums
        self._norm_stale = True

    def _prepare_save(self) -> None:
        if len(self._segments) > 1:
            self._merge_segments()

    def _merge_tiers(self) -> None:
        """Merges the newest two segments while the newest is at least half the size of the
        one before it, or while there are more than MAX_SEGMENTS."""
        segments = self._segments
        while len(segments) >= 2 and (2 * segments[-1].n_postings >= segments[-2].n_postings
                                      or len(segments) > MAX_SEGMENTS):
            segments = segments[:-2] + [_merged(segments[-2:])]
        self._segments = segments  # a new list: nothing holding the old one sees it change

    def _merge_segments(self) -> None:
        if self._segments:
            self._segments = [_merged(self._segments)]

    def _fresh_norm(self) -> np.ndarray:
        """The norms [slot_count], rebuilt first if an add or remove made them stale; call under
        the read lock."""
        # Only writers set _norm_stale, under the write lock, so it cannot change while readers
        # hold the read lock. The first search after a change rebuilds here; the others wait on
        # the mutex, and none reads the norms or the segments' bounds before passing it, so the
        # bounds are never reset under a running kernel.
        with self._norm_mutex:
            if self._norm_stale:
                self._rebuild_norm()
                self._norm_stale = False
            return self._norm

    def _rebuild_norm(self) -> None:
        slot_count = self._idmap.slot_count
        live = len(self._idmap)
        lengths = _grown(self._doc_lengths, slot_count)[:slot_count]
        mean = self._total_length / live if live else 1.0
        mean = mean if mean > 0 else 1.0
        self._norm = (self.k1 * (1.0 - self.b + self.b * lengths.astype(np.float64) / mean)).astype(np.float32)
        for segment in self._segments:  # the norms changed: the per-term bounds are stale
            segment.bounds.fill(np.nan)

    # -- search ----------------------------------------------------------------------------
    def _search_slots(self, queries: AnalyzedTexts, k: int, allowed: np.ndarray | None,
                      params: dict) -> tuple[np.ndarray, np.ndarray]:
        norm = self._fresh_norm()
        nq = len(queries)
        local = np.fromiter((self._vocab.get(t, -1) for t in queries.terms), dtype=np.int64, count=len(queries.terms))
        term_of = local[queries.codes] if queries.codes.size else np.zeros(0, dtype=np.int64)
        query_of = np.repeat(np.arange(nq, dtype=np.int64), queries.lengths)
        known = term_of >= 0
        term_of, query_of = term_of[known], query_of[known]
        vocab = max(len(self._terms), 1)
        keys, counts = np.unique(query_of * vocab + term_of, return_counts=True)
        q_terms = keys % vocab
        q_bounds = np.searchsorted(keys // vocab, np.arange(nq + 1), side="left").astype(np.int64)
        n = len(self._idmap)
        df = self._df[q_terms].astype(np.float64)
        idf = np.log1p((n - df + 0.5) / (df + 0.5))
        weights = (idf * counts).astype(np.float32)
        scores = np.empty((nq, k), dtype=np.float32)
        slots = np.empty((nq, k), dtype=np.int64)
        allow = None if allowed is None else allowed.view(np.uint8)
        maxscore = self._idmap.slot_count >= MAXSCORE_MIN_SLOTS
        _kernels.bm25_topk([s.kernel_arguments(maxscore) for s in self._segments], q_terms.astype(np.int32), weights, q_bounds,
                           norm, allow, k, scores, slots, self._threads)
        return scores, slots

    # -- files -----------------------------------------------------------------------------
    def _save_payload(self, directory: Path) -> list[str]:
        segment = self._segments[0] if self._segments else _Segment(
            np.zeros(0, np.int32), np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32))
        (directory / VOCAB_FILE).write_text(json.dumps(self._terms, ensure_ascii=False), encoding="utf-8")
        lengths = _grown(self._doc_lengths, self._idmap.slot_count)[:self._idmap.slot_count]
        for name, array in zip(ARRAY_FILES, (*segment.as_tuple(), lengths)):
            np.save(directory / name, array, allow_pickle=False)
        return [VOCAB_FILE, *ARRAY_FILES]

    @classmethod
    def _load_payload(cls, directory: Path, manifest: dict, mmap: bool) -> LexicalIndex:
        config = manifest.get("config")
        if manifest.get("dim") is not None or not isinstance(config, dict):
            raise IndexFormatError(f"{directory / 'manifest.json'}: not a LexicalIndex manifest (dim must be null "
                                   "and config an object)")
        for name in (VOCAB_FILE, *ARRAY_FILES):
            if name not in manifest.get("files", {}):
                raise IndexFormatError(f"{directory / name}: missing from the manifest's file list")
        try:
            index = cls(**config)
        except (InvalidValueError, InvalidTypeError, TypeError) as error:
            raise IndexFormatError(f"{directory / 'manifest.json'}: bad LexicalIndex config ({error})") from None
        terms = json.loads((directory / VOCAB_FILE).read_text(encoding="utf-8"))
        if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms) or len(set(terms)) != len(terms):
            raise IndexFormatError(f"{directory / VOCAB_FILE}: must be a list of distinct strings")
        arrays = [np.load(directory / name, allow_pickle=False) for name in ARRAY_FILES]
        segment_arrays, lengths = arrays[:4], arrays[4]
        _check_postings(directory, segment_arrays, lengths, len(terms), manifest["slot_count"])
        index._terms = terms
        index._vocab = {t: i for i, t in enumerate(terms)}
        segment = _Segment(*(np.ascontiguousarray(a) for a in segment_arrays))
        index._segments = [segment] if segment.n_postings else []
        index._doc_lengths = np.ascontiguousarray(lengths, dtype=np.float32)
        index._df = np.bincount(segment.term_per_posting(), minlength=len(terms)).astype(np.int64)
        return index

    def _after_load(self) -> None:
        live = np.zeros(self._idmap.slot_count, dtype=bool)
        live[self._idmap.live_slots()] = True
        with_postings = np.zeros(self._idmap.slot_count, dtype=bool)
        for segment in self._segments:
            with_postings[segment.docs] = True
        if (with_postings & ~live).any() or (self._doc_lengths[~live] != 0).any():
            raise IndexFormatError("the postings or document lengths hold documents that are not live ids")
        self._total_length = float(self._doc_lengths.sum(dtype=np.float64))
        self._norm_stale = True


def _merged(segments: list[_Segment]) -> _Segment:
    """One segment holding the postings of `segments` (per term, slots increasing)."""
    term_of = np.concatenate([s.term_per_posting() for s in segments])
    docs = np.concatenate([s.docs for s in segments])
    tfs = np.concatenate([s.tfs for s in segments])
    order = np.lexsort((docs, term_of))
    return _Segment.from_pairs(term_of[order], docs[order], tfs[order])


def _texts(texts, name: str) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, np.ndarray) and texts.dtype.kind in "US":
        texts = texts.tolist()
    if not isinstance(texts, (list, tuple, np.ndarray)):
        raise InvalidTypeError(f"{name} must be a str or a list of str, got {type(texts).__name__}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidTypeError(f"{name}[{i}] must be a str, got {type(text).__name__} ({text!r:.60})")
    return list(texts)


def _real(value, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low <= value <= high:
        raise InvalidValueError(f"{name} must be a number in [{low}, {high}], got {value!r}")
    return float(value)


def _grown(array: np.ndarray, size: int) -> np.ndarray:
    """`array` zero-padded to at least `size` entries (a copy)."""
    out = np.zeros(max(size, array.size), dtype=array.dtype)
    out[:array.size] = array
    return out


def _check_postings(directory: Path, arrays: list[np.ndarray], lengths: np.ndarray, vocab: int,
                    slot_count: int) -> None:
    """IndexFormatError unless the arrays are one well-formed segment over `vocab` terms and
    `slot_count` slots whose document lengths equal their summed term frequencies."""
    terms, offsets, docs, tfs = arrays

    def bad(name: str, why: str):
        raise IndexFormatError(f"{directory / name}: {why}")

    for name, array, dtype in zip(ARRAY_FILES, (*arrays, lengths),
                                  (np.int32, np.int64, np.int32, np.float32, np.float32)):
        if array.ndim != 1 or array.dtype != dtype:
            bad(name, f"must be a 1-D {np.dtype(dtype).name} array, got {array.dtype} of shape {array.shape}")
    if offsets.size != terms.size + 1 or offsets[0] != 0 or offsets[-1] != docs.size or docs.size != tfs.size:
        bad("offsets.npy", "does not match terms.npy and docs.npy")
    if (np.diff(offsets) <= 0).any():
        bad("offsets.npy", "must be strictly increasing (no term without postings)")
    if terms.size and (terms[0] < 0 or terms[-1] >= vocab or (np.diff(terms) <= 0).any()):
        bad("terms.npy", f"must be increasing term ids below the vocabulary size {vocab}")
    if docs.size and (docs.min() < 0 or docs.max() >= slot_count):
        bad("docs.npy", f"holds slots outside [0, {slot_count})")
    step = np.diff(docs.astype(np.int64))
    starts = np.zeros(docs.size, dtype=bool)
    starts[offsets[:-1][offsets[:-1] < docs.size]] = True
    if (step <= 0)[~starts[1:]].any():
        bad("docs.npy", "a term's postings must have increasing slots")
    if not np.isfinite(tfs).all() or (tfs <= 0).any() or (tfs != np.round(tfs)).any():
        bad("tfs.npy", "term frequencies must be positive integers")
    if lengths.size != slot_count or not np.isfinite(lengths).all() or (lengths < 0).any():
        bad("doc_lengths.npy", f"must hold {slot_count} finite lengths >= 0")
    if not np.array_equal(np.bincount(docs, weights=tfs, minlength=slot_count), lengths.astype(np.float64)):
        bad("doc_lengths.npy", "does not equal the documents' summed term frequencies")
