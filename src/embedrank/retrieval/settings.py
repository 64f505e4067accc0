"""RetrieverSettings: every setting of a Retriever in one frozen, validated record.

Written to ``retriever.json`` and read back as a whole (``to_dict`` / ``from_dict``); a
Retriever changes a setting by replacing the record, so a value is checked the same way
whether it comes from the constructor, an assignment or a saved file.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass

from embedrank.errors import InvalidTypeError, InvalidValueError
from embedrank.utils.checks import check_positive_int

__all__ = ["AGGREGATES", "FUSIONS", "RERANK_TEXTS", "RetrieverSettings"]

AGGREGATES = ("max", "mean")
RERANK_TEXTS = ("passage", "document")
FUSIONS = ("convex", "rrf")
# Settings that retriever.json files written before them lack.
OPTIONAL_IN_FILES = ("first_stage_weight", "fusion", "lexical_weight", "rrf_k")


@dataclass(frozen=True)
class RetrieverSettings:
    """How a Retriever indexes and answers (see embedrank.retrieval.retriever).

    candidates: documents fetched per query for reranking (raised to top_k when smaller);
    top_k: documents returned per query; chunking: split long documents into token windows
    (max_tokens / overlap: the window, None for the encoder's default); aggregate: "max" or
    "mean" of a document's window scores; rerank_text: "passage" (the best window) or
    "document"; first_stage_weight: finite float >= 0 added as weight x first-stage score to
    the cross-encoder logit (0: the logit alone); query_batch_size: queries per batch;
    batch_size: texts per encoder / cross-encoder batch. Hybrid search (a retriever with a
    lexical index): fusion "convex" (each side's candidate scores min-max normalized, then
    (1 - lexical_weight) x dense + lexical_weight x lexical) or "rrf" (reciprocal rank fusion,
    (1 - lexical_weight) / (rrf_k + dense rank) + lexical_weight / (rrf_k + lexical rank));
    lexical_weight in [0, 1].
    """

    candidates: int = 100
    top_k: int = 10
    chunking: bool = True
    aggregate: str = "max"
    rerank_text: str = "passage"
    max_tokens: int | None = None
    overlap: int | None = None
    query_batch_size: int = 32
    batch_size: int = 32
    first_stage_weight: float = 0.0
    fusion: str = "convex"
    lexical_weight: float = 0.5
    rrf_k: int = 60

    def __post_init__(self) -> None:
        def put(name, value):
            object.__setattr__(self, name, value)

        for name in ("candidates", "top_k", "query_batch_size", "batch_size"):
            put(name, check_positive_int(getattr(self, name), name))
        if not isinstance(self.chunking, bool) and type(self.chunking).__name__ != "bool_":
            raise InvalidTypeError(f"chunking must be True or False, got {self.chunking!r}")
        put("chunking", bool(self.chunking))
        if self.aggregate not in AGGREGATES:
            raise InvalidValueError(f"aggregate must be 'max' or 'mean', got {self.aggregate!r}")
        if self.rerank_text not in RERANK_TEXTS:
            raise InvalidValueError(f"rerank_text must be 'passage' or 'document', got {self.rerank_text!r}")
        if self.max_tokens is not None:
            put("max_tokens", check_positive_int(self.max_tokens, "max_tokens"))
        if self.overlap is not None:
            if isinstance(self.overlap, bool) or not isinstance(self.overlap, numbers.Integral) or self.overlap < 0:
                raise InvalidValueError(f"overlap must be a non-negative integer or None, got {self.overlap!r}")
            put("overlap", int(self.overlap))
        weight = self.first_stage_weight
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not math.isfinite(weight) or weight < 0:
            raise InvalidValueError(f"first_stage_weight must be a finite number >= 0, got {weight!r}")
        put("first_stage_weight", float(weight))
        if self.fusion not in FUSIONS:
            raise InvalidValueError(f"fusion must be 'convex' or 'rrf', got {self.fusion!r}")
        weight = self.lexical_weight
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not 0 <= weight <= 1:
            raise InvalidValueError(f"lexical_weight must be a number in [0, 1], got {weight!r}")
        put("lexical_weight", float(weight))
        put("rrf_k", check_positive_int(self.rrf_k, "rrf_k"))

    def replace(self, **changes) -> RetrieverSettings:
        """A copy with `changes` applied and checked (unknown names: InvalidTypeError)."""
        unknown = sorted(set(changes) - set(self.names()))
        if unknown:
            raise InvalidTypeError(f"unknown Retriever setting(s) {unknown}; known: {list(self.names())}")
        return dataclasses.replace(self, **changes)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def to_dict(self) -> dict:
        """The settings as JSON-ready values."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> RetrieverSettings:
        """Settings from to_dict()'s output. Every name must be there except those added since
        the format began (OPTIONAL_IN_FILES, which take their default); a missing or unknown
        name is an InvalidValueError (a file from another embedrank, or edited)."""
        if not isinstance(values, dict):
            raise InvalidTypeError(f"settings must be a JSON object, got {type(values).__name__}")
        unknown = sorted(set(values) - set(cls.names()))
        missing = sorted(set(cls.names()) - set(values) - set(OPTIONAL_IN_FILES))
        if unknown or missing:
            raise InvalidValueError(f"settings lack {missing}" if missing else f"unknown setting(s) {unknown}")
        return cls(**values)
