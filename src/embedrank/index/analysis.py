"""Text analysis for the lexical index: Unicode tokens, lower case, stop words, Snowball stems.

    analyzer = Analyzer("english")            # Lucene's English stop words, Snowball English stems
    batch = analyzer.analyze(["The cats sat.", "A cat"])
    batch.terms, batch.codes, batch.bounds    # ['cat', 'sat'], [0, 1, 0], [0, 2, 3]

Tokens are runs of two or more Unicode word characters (``\\w\\w+``, the same tokens as
scikit-learn's and bm25s's default pattern ``\\b\\w\\w+\\b``) of the lower-cased text; stop words are dropped before stemming;
stems come from PyStemmer (the Snowball project's C stemmers). Languages: every algorithm
``Stemmer.algorithms()`` lists. Stop words: "english" has a built-in list (Lucene's 33 English
stop words, the same as bm25s's "en"); other languages have no built-in list and take the
user's words (``stopwords=[...]``) or none.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from embedrank.errors import InvalidTypeError, InvalidValueError, MissingDependencyError

__all__ = ["Analyzer", "AnalyzedTexts", "ENGLISH_STOPWORDS", "stemmer_languages"]

TOKEN_PATTERN = r"\w\w+"  # = scikit-learn's (?u)\b\w\w+\b: a run of word characters is maximal anyway
# Lucene's EnglishAnalyzer stop set.
ENGLISH_STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there these "
    "they this to was will with".split())
# Stems cached per analyzer; past this many distinct tokens the cache starts over (memory bound).
STEM_CACHE_LIMIT = 1 << 20
_UNCACHED = object()


def _stemmer_module():
    try:
        import Stemmer
    except ImportError:
        raise MissingDependencyError("stemming needs PyStemmer: pip install PyStemmer "
                                     "(or pass language=None for no stemming)") from None
    return Stemmer


def stemmer_languages() -> list[str]:
    """The languages the installed PyStemmer can stem."""
    return sorted(_stemmer_module().algorithms())


@dataclass(frozen=True)
class AnalyzedTexts:
    """n analyzed texts: text i's terms are ``terms[codes[bounds[i]:bounds[i + 1]]]`` in order.

    terms: the distinct terms of the batch (list of str); codes: int32 [total tokens] indexes
    into terms; bounds: int64 [n + 1]. Indexing with a bool mask of length n keeps those texts.
    """

    terms: list[str]
    codes: np.ndarray
    bounds: np.ndarray

    def __len__(self) -> int:
        return len(self.bounds) - 1

    @property
    def lengths(self) -> np.ndarray:
        """int64 [n]: terms per text (stop words excluded)."""
        return np.diff(self.bounds)

    def __getitem__(self, mask) -> AnalyzedTexts:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (len(self),):
            raise InvalidValueError(f"mask must be bool [{len(self)}], got shape {mask.shape}")
        lengths = self.lengths[mask]
        keep = np.repeat(mask, self.lengths)
        bounds = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=bounds[1:])
        return AnalyzedTexts(self.terms, self.codes[keep], bounds)


class Analyzer:
    """Tokenizer + lower case + stop words + Snowball stemmer (see the module docstring).

    language: a Snowball language ("english", "german", ...; see stemmer_languages()) or None
    for no stemming. stopwords: "default" (the built-in list for English, none otherwise),
    None (keep every token) or an iterable of words (lower-cased, matched before stemming).
    Thread-safe: one analyzer may serve several threads.
    """

    def __init__(self, language: str | None = "english", stopwords: str | Iterable[str] | None = "default") -> None:
        if language is not None and not isinstance(language, str):
            raise InvalidTypeError(f"language must be a str or None, got {type(language).__name__}")
        self.language = language
        self._stemmer = None
        if language is not None:
            module = _stemmer_module()
            if language not in module.algorithms():
                raise InvalidValueError(f"no Snowball stemmer for language {language!r}; available: "
                                        f"{', '.join(sorted(module.algorithms()))} (or language=None: no stemming)")
            self._stemmer = module.Stemmer(language)
        if isinstance(stopwords, str):
            if stopwords != "default":
                raise InvalidValueError(f"stopwords must be 'default', None or a list of words, got {stopwords!r}")
            words = ENGLISH_STOPWORDS if language == "english" else frozenset()
        elif stopwords is None:
            words = frozenset()
        else:
            try:
                words = list(stopwords)
            except TypeError:
                raise InvalidTypeError(f"stopwords must be 'default', None or an iterable of str, "
                                       f"got {type(stopwords).__name__}") from None
            bad = [w for w in words if not isinstance(w, str)]
            if bad:
                raise InvalidTypeError(f"stopwords must be str, got {type(bad[0]).__name__} {bad[0]!r}")
            words = frozenset(w.lower() for w in words)
        self.stopwords = words
        self._pattern = re.compile(TOKEN_PATTERN)
        self._stems: dict[str, str | None] = {}
        self._stem_lock = threading.Lock()  # PyStemmer objects are not thread-safe

    def config(self) -> dict:
        """JSON-able settings; Analyzer.from_config rebuilds an equal analyzer."""
        default = ENGLISH_STOPWORDS if self.language == "english" else frozenset()
        stopwords = "default" if self.stopwords == default else sorted(self.stopwords)
        return {"language": self.language, "stopwords": stopwords}

    @classmethod
    def from_config(cls, config: dict) -> Analyzer:
        if not isinstance(config, dict) or set(config) != {"language", "stopwords"}:
            raise InvalidValueError(f"an analyzer config has 'language' and 'stopwords', got {config!r}")
        return cls(config["language"], config["stopwords"])

    def __repr__(self) -> str:
        return f"Analyzer(language={self.language!r}, stopwords={len(self.stopwords)} words)"

    def tokens(self, text: str) -> list[str]:
        """The terms of one text, in order (for inspection; analyze() is the fast path)."""
        batch = self.analyze([text])
        return [batch.terms[c] for c in batch.codes.tolist()]

    def analyze(self, texts: list[str]) -> AnalyzedTexts:
        """The terms of each text (a list of str, already type-checked by the caller)."""
        raw, codes, bounds = self._raw_tokens(texts)
        stems = self._stem_all(raw)
        terms: dict[str, int] = {}
        to_term = np.fromiter((-1 if s is None else terms.setdefault(s, len(terms)) for s in stems),
                              dtype=np.int32, count=len(stems))  # per distinct token: cheap
        mapped = to_term[codes] if codes.size else codes
        keep = mapped >= 0
        kept_before = np.zeros(codes.size + 1, dtype=np.int64)
        np.cumsum(keep, out=kept_before[1:])
        return AnalyzedTexts(list(terms), np.ascontiguousarray(mapped[keep]), kept_before[bounds])

    def _raw_tokens(self, texts: list[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(distinct lower-cased tokens, codes int32 [T], bounds int64 [n + 1]) before stop words
        and stems. ASCII texts are tokenized in C++, the others by Python's re (same tokens)."""
        from embedrank import _kernels

        raw, codes, bounds = _kernels.ascii_word_tokens(texts)
        others = [i for i, text in enumerate(texts) if not text.isascii()]
        if not others:
            return raw, codes, bounds
        findall = self._pattern.findall
        token_lists = [findall(texts[i].lower()) for i in others]
        extra_counts = np.fromiter(map(len, token_lists), dtype=np.int64, count=len(others))
        # Each token's id: the C++ vocabulary's, or a new one past it (dict.setdefault driven
        # by map: a loop in C, no Python frame per token).
        ids = dict(zip(raw, range(len(raw))))
        first = np.fromiter(map(ids.setdefault, itertools.chain.from_iterable(token_lists), itertools.count(len(raw))),
                            dtype=np.int64, count=int(extra_counts.sum()))
        added = list(ids)[len(raw):]
        renumber = {old: new for new, old in enumerate((ids[t] for t in added), start=len(raw))}
        if renumber:
            lookup = np.arange(int(first.max()) + 1, dtype=np.int64)
            lookup[list(renumber)] = list(renumber.values())
            first = lookup[first]
        counts = np.diff(bounds)
        counts[others] = extra_counts
        out_bounds = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum(counts, out=out_bounds[1:])
        out = np.empty(int(out_bounds[-1]), dtype=np.int32)
        ascii_lengths = np.diff(bounds)
        shift = np.repeat(out_bounds[:-1] - bounds[:-1], ascii_lengths)
        out[np.arange(codes.size) + shift] = codes
        starts = out_bounds[others]
        shift = np.repeat(starts - np.concatenate(([0], np.cumsum(extra_counts)[:-1])), extra_counts)
        out[np.arange(first.size) + shift] = first
        return raw + added, out, out_bounds

    def _stem_all(self, tokens: list[str]) -> list[str | None]:
        """The stem of each token, None for a stop word (cached per analyzer; another thread
        may clear the cache meanwhile, so every lookup has a fallback)."""
        cache = self._stems
        missing = [t for t in tokens if t not in cache]
        if missing:
            words = [t for t in missing if t not in self.stopwords]
            with self._stem_lock:
                stemmed = self._stemmer.stemWords(words) if self._stemmer is not None else words
                if len(cache) + len(missing) > STEM_CACHE_LIMIT:
                    cache.clear()
                cache.update(dict.fromkeys(missing))  # stop words stay None
                cache.update(zip(words, stemmed))
        out = [cache.get(t, _UNCACHED) for t in tokens]
        if any(s is _UNCACHED for s in out):
            out = [self._stem_one(t) if s is _UNCACHED else s for t, s in zip(tokens, out)]
        return out

    def _stem_one(self, token: str) -> str | None:
        if token in self.stopwords:
            return None
        if self._stemmer is None:
            return token
        with self._stem_lock:
            return self._stemmer.stemWord(token)
