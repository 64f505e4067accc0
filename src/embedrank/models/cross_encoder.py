"""Cross-encoder inference: (query, document) pairs scored by ONNX Runtime in token-length-sorted batches.

A cross-encoder folder is made with ``embedrank.export_model(hf_dir, out, kind="cross-encoder")``
(fp32 / opt variants verified against torch at export time, int8 measured against it).

Truncation: a pair longer than max_seq_length tokens loses tokens from the end of the
document only; the query is kept whole. The one exception is a query that does not fit
by itself (more than max_seq_length minus the special tokens minus one document token):
there is no document-only cut that works, so that pair is cut "longest first" (the longer
of query and document loses tokens one at a time, as Hugging Face's ``truncation=True``
does) and is reported as a cut query. Both counts are given in one TruncationWarning per
call.
"""

from __future__ import annotations

import os
import warnings
from typing import Sequence

import numpy as np

from embedrank.errors import InvalidTypeError, InvalidValueError, ModelFolderError, TruncationWarning
from embedrank.models.folder import ModelConfig
from embedrank.models.onnx_model import OnnxModel
from embedrank.models.tokenization import check_encodable, check_texts
from embedrank.utils.checks import check_positive_int

ACTIVATIONS = ("sigmoid", None)

__all__ = ["ACTIVATIONS", "CrossEncoder", "TruncationWarning", "check_pairs"]


def check_pairs(pairs) -> tuple[list[str], list[str]]:
    """(queries, documents) from a sequence of (query, document) pairs of str.

    Each pair may be a tuple, a list or a 1-D numpy array of two str. Anything else raises
    TypeError naming the index of the first bad pair.
    """
    if pairs is None or isinstance(pairs, (str, bytes, bytearray)) or not hasattr(pairs, "__iter__"):
        raise InvalidTypeError(f"pairs must be a sequence of (query, document) pairs of str, got {type(pairs).__name__}")
    if isinstance(pairs, dict):
        raise InvalidTypeError("pairs must be a sequence of (query, document) pairs of str, got dict")
    queries: list[str] = []
    documents: list[str] = []
    for i, pair in enumerate(pairs):
        if isinstance(pair, str):
            raise InvalidTypeError(f"pairs[{i}] must be a (query, document) pair of str, got the str {pair!r:.40}; "
                            "to score one pair pass [(query, document)]")
        if not isinstance(pair, (tuple, list, np.ndarray)) or len(pair) != 2:
            what = f"{type(pair).__name__} of length {len(pair)}" if hasattr(pair, "__len__") else type(pair).__name__
            raise InvalidTypeError(f"pairs[{i}] must be a (query, document) pair of str, got {what}")
        query, document = pair[0], pair[1]
        for part, value in (("query", query), ("document", document)):
            if not isinstance(value, str):
                raise InvalidTypeError(f"pairs[{i}]: the {part} must be a str, got {type(value).__name__}")
        queries.append(str(query))
        documents.append(str(document))
    return queries, documents


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, float32, without overflow for large |x|."""
    x = np.asarray(x, dtype=np.float32)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.float32)


class CrossEncoder(OnnxModel):
    """An exported cross-encoder (see :func:`embedrank.export_model`, kind="cross-encoder") run with ONNX Runtime.

    Load with :meth:`load`. Scores are the model's logits, through a sigmoid by default
    (sentence-transformers' default for one label). The session arguments are OnnxModel's.
    """

    KIND = "cross-encoder"
    OTHER_KIND_HINT = ("use Encoder for bi-encoders (a cross-encoder folder comes from "
                       "export_model(..., kind='cross-encoder'))")
    _width_field = "num_labels"

    def __init__(self, config: ModelConfig, variant: str = "fp32", providers=None, num_threads: int | None = None,
                 native_attention: bool | None = None, bf16_attention: bool = False):
        super().__init__(config, variant=variant, providers=providers, num_threads=num_threads,
                         native_attention=native_attention, bf16_attention=bf16_attention)
        self.num_labels = self._output_width()
        self._pair_specials = self.tokenizer.tokenizer.num_special_tokens_to_add(True)

    def _output_width(self) -> int:
        labels = self.config.raw.get("num_labels")
        if labels is not None and (isinstance(labels, bool) or not isinstance(labels, int) or labels < 1):
            raise ModelFolderError(f"{self.config.path / 'embedrank.json'}: field 'num_labels' must be a positive "
                                   f"integer, got {labels!r}")
        return int(labels or self.config.dimension or 1)

    def _check_output(self, output, model_path) -> None:
        if len(output.shape) != 2:
            raise InvalidValueError(f"{model_path}: output {output.name!r} has shape {output.shape}; a cross-encoder "
                                    "gives logits [batch, num_labels]")

    @classmethod
    def load(cls, path: str | os.PathLike, variant: str = "fp32", providers=None,
             num_threads: int | None = None, native_attention: bool | None = None,
             bf16_attention: bool = False) -> CrossEncoder:
        """Opens an embedrank cross-encoder folder. variant: "fp32", "opt" (ORT-fused), "int8" (dynamic int8),
        "bf16" (OpenVINO, see Encoder.load) or "fp16" (float16, for the CUDA provider). native_attention and
        bf16_attention: as for Encoder.load."""
        return super().load(path, variant=variant, providers=providers, num_threads=num_threads,
                            native_attention=native_attention, bf16_attention=bf16_attention)

    # -- scoring -------------------------------------------------------------------------
    def predict(self, pairs, batch_size: int = 32, activation: str | None = "sigmoid",
                show_progress: bool | None = None, max_tokens_per_batch: int | str | None = "auto") -> np.ndarray:
        """Scores (query, document) pairs.

        Returns float32 [n] (one label) or [n, num_labels]; the sigmoid of the logits, or the
        raw logits with activation=None. No pairs give an empty result ([0] or [0, num_labels]).
        Empty strings are scored like any text. Batches hold pairs of similar token length
        (at most batch_size pairs and max_tokens_per_batch padded tokens; None: no token cap;
        "auto": 1024 on the CPU provider, no cap on CUDA, see
        embedrank.runtime.sessions.CPU_MAX_TOKENS_PER_BATCH); the result is in the order of `pairs`.
        Truncation: see the module docstring.
        """
        queries, documents = check_pairs(pairs)
        for part, texts in (("query", queries), ("document", documents)):
            check_encodable(texts, f"the {part} of pairs")
        batch_size = check_positive_int(batch_size, "batch_size")
        max_tokens_per_batch = self._token_budget(max_tokens_per_batch)
        if activation not in ACTIVATIONS:
            raise InvalidValueError(f"unknown activation {activation!r}; expected 'sigmoid' or None (raw logits)")
        shape_tail = () if self.num_labels == 1 else (self.num_labels,)
        if not queries:
            return np.empty((0, *shape_tail), dtype=np.float32)
        encodings = self._tokenize(queries, documents)
        logits = np.empty((len(queries), self.num_labels), dtype=np.float32)
        self._run_batches(encodings, logits, batch_size, max_tokens_per_batch, show_progress, "scoring",
                          lambda output, batch: np.asarray(output, dtype=np.float32).reshape(len(output), self.num_labels))
        scores = sigmoid(logits) if activation == "sigmoid" else logits
        return scores.reshape(len(queries), *shape_tail)

    def rank(self, query: str, docs: Sequence[str], top_k: int | None = None, batch_size: int = 32,
             activation: str | None = "sigmoid", show_progress: bool | None = None) -> list[tuple[int, float]]:
        """Scores each document against `query`; returns (index into docs, score) best first.

        Ties go to the lower index. top_k: the number kept (None: all; more than len(docs):
        all). An empty docs list is a ValueError (there is nothing to rank). Models with more
        than one label have no single score to rank by: ValueError.
        """
        if not isinstance(query, str):
            raise InvalidTypeError(f"query must be a str, got {type(query).__name__}")
        docs = check_texts(docs, "docs") if not isinstance(docs, str) else None
        if docs is None:
            raise InvalidTypeError("docs must be a sequence of str, got a str (pass [document] for one document)")
        if not docs:
            raise InvalidValueError("docs is empty: there is nothing to rank")
        if top_k is not None:
            top_k = check_positive_int(top_k, "top_k")
        if self.num_labels != 1:
            raise InvalidValueError(f"rank needs a one-label model; this one has num_labels={self.num_labels} (use predict)")
        scores = self.predict([(query, d) for d in docs], batch_size=batch_size, activation=activation,
                              show_progress=show_progress)
        order = np.lexsort((np.arange(len(docs)), -scores.astype(np.float64)))
        if top_k is not None:
            order = order[:top_k]
        return [(int(i), float(scores[i])) for i in order]

    # -- internals -----------------------------------------------------------------------
    def _tokenize(self, queries: list[str], documents: list[str]) -> list:
        """Encodings of the pairs, the document cut first (see the module docstring); warns once."""
        limit = self.max_seq_length
        # A query fits when it leaves room for the special tokens and at least one document token.
        query_budget = limit - self._pair_specials - 1
        unique = list(dict.fromkeys(queries))
        query_lengths = dict(zip(unique, self.tokenizer.token_counts(unique)))
        too_long = [i for i, q in enumerate(queries) if query_lengths[q] > query_budget]
        normal = [i for i, q in enumerate(queries) if query_lengths[q] <= query_budget] if too_long else range(len(queries))
        encodings: list = [None] * len(queries)
        n_documents_cut = 0
        if len(normal):
            normal_encodings, n_documents_cut = self.tokenizer.encode([queries[i] for i in normal],
                                                                      [documents[i] for i in normal])
            for i, e in zip(normal, normal_encodings):
                encodings[i] = e
        n_queries_cut = 0
        if too_long:
            long_encodings, _ = self.tokenizer.encode([queries[i] for i in too_long], [documents[i] for i in too_long],
                                                      strategy="longest_first")
            for i, e in zip(too_long, long_encodings):
                encodings[i] = e
                n_queries_cut += 1
        if n_documents_cut or n_queries_cut:
            parts = []
            if n_documents_cut:
                parts.append(f"{n_documents_cut} of {len(queries)} pairs were longer than max_seq_length={limit} "
                             "tokens and had their document truncated")
            if n_queries_cut:
                parts.append(f"{n_queries_cut} pair(s) had a query too long to fit max_seq_length={limit} tokens by "
                             "itself and were truncated longest-first (query included)")
            warnings.warn("; ".join(parts), TruncationWarning, stacklevel=3)
        return encodings
