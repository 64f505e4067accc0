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

from embedrank import runtime
from embedrank.encoder import TruncationWarning, _progress
from embedrank.model_config import ModelConfig
from embedrank.runtime import make_session, token_budget
from embedrank.tokenization import TextTokenizer, check_texts, length_sorted_batches

ACTIVATIONS = ("sigmoid", None)

__all__ = ["ACTIVATIONS", "CrossEncoder", "TruncationWarning", "check_pairs"]


def check_pairs(pairs) -> tuple[list[str], list[str]]:
    """(queries, documents) from a sequence of (query, document) pairs of str.

    Each pair may be a tuple, a list or a 1-D numpy array of two str. Anything else raises
    TypeError naming the index of the first bad pair.
    """
    if pairs is None or isinstance(pairs, (str, bytes, bytearray)) or not hasattr(pairs, "__iter__"):
        raise TypeError(f"pairs must be a sequence of (query, document) pairs of str, got {type(pairs).__name__}")
    if isinstance(pairs, dict):
        raise TypeError("pairs must be a sequence of (query, document) pairs of str, got dict")
    queries: list[str] = []
    documents: list[str] = []
    for i, pair in enumerate(pairs):
        if isinstance(pair, str):
            raise TypeError(f"pairs[{i}] must be a (query, document) pair of str, got the str {pair!r:.40}; "
                            "to score one pair pass [(query, document)]")
        if not isinstance(pair, (tuple, list, np.ndarray)) or len(pair) != 2:
            what = f"{type(pair).__name__} of length {len(pair)}" if hasattr(pair, "__len__") else type(pair).__name__
            raise TypeError(f"pairs[{i}] must be a (query, document) pair of str, got {what}")
        query, document = pair[0], pair[1]
        for part, value in (("query", query), ("document", document)):
            if not isinstance(value, str):
                raise TypeError(f"pairs[{i}]: the {part} must be a str, got {type(value).__name__}")
        queries.append(str(query))
        documents.append(str(document))
    return queries, documents


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, float32, without overflow for large |x|."""
    x = np.asarray(x, dtype=np.float32)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.float32)


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class CrossEncoder:
    """An exported cross-encoder (see :func:`embedrank.export_model`, kind="cross-encoder") run with ONNX Runtime.

    Load with :meth:`load`. Scores are the model's logits, through a sigmoid by default
    (sentence-transformers' default for one label).
    """

    def __init__(self, config: ModelConfig, variant: str = "fp32", providers=None, num_threads: int | None = None,
                 native_attention: bool | None = None):
        if config.kind != "cross-encoder":
            raise ValueError(f"{config.path} holds a {config.kind!r} model; use Encoder for bi-encoders "
                             "(a cross-encoder folder comes from export_model(..., kind='cross-encoder'))")
        self.config = config
        self.variant = variant
        model_path = config.variant_path(variant)
        self.session, self.native_attention_layers = make_session(model_path, providers, num_threads,
                                                                    native_attention)
        # the provider that runs the graph decides the batching: token cap and padding granularity
        self._provider = self.session.get_providers()[0]
        self._pad_multiple = runtime.pad_multiple(self._provider)
        self.num_threads = num_threads
        self.tokenizer = TextTokenizer(config.tokenizer_path, config.max_seq_length)
        self._input_names = [i.name for i in self.session.get_inputs()]
        unknown = set(self._input_names) - {"input_ids", "attention_mask", "token_type_ids"}
        if unknown:
            raise ValueError(f"{model_path} has unexpected inputs {sorted(unknown)}")
        output = self.session.get_outputs()[0]
        if len(output.shape) != 2:
            raise ValueError(f"{model_path}: output {output.name!r} has shape {output.shape}; a cross-encoder "
                             "gives logits [batch, num_labels]")
        self._output_name = output.name
        self.num_labels = int(config.raw.get("num_labels") or config.dimension or 1)
        self._pair_specials = self.tokenizer.tokenizer.num_special_tokens_to_add(True)

    @classmethod
    def load(cls, path: str | os.PathLike, variant: str = "fp32", providers=None,
             num_threads: int | None = None, native_attention: bool | None = None) -> CrossEncoder:
        """Opens an embedrank cross-encoder folder. variant: "fp32", "opt" (ORT-fused), "int8" (dynamic int8)
        or "fp16" (float16, for the CUDA provider). native_attention: as for Encoder.load."""
        return cls(ModelConfig.load(path), variant=variant, providers=providers, num_threads=num_threads,
                   native_attention=native_attention)

    # -- properties ----------------------------------------------------------------------
    @property
    def max_seq_length(self) -> int:
        return self.config.max_seq_length

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    # -- scoring -------------------------------------------------------------------------
    def predict(self, pairs, batch_size: int = 32, activation: str | None = "sigmoid",
                show_progress: bool | None = None, max_tokens_per_batch: int | str | None = "auto") -> np.ndarray:
        """Scores (query, document) pairs.

        Returns float32 [n] (one label) or [n, num_labels]; the sigmoid of the logits, or the
        raw logits with activation=None. No pairs give an empty result ([0] or [0, num_labels]).
        Empty strings are scored like any text. Batches hold pairs of similar token length
        (at most batch_size pairs and max_tokens_per_batch padded tokens; None: no token cap;
        "auto": 1024 on the CPU provider, no cap on CUDA, see
        embedrank.runtime.CPU_MAX_TOKENS_PER_BATCH); the result is in the order of `pairs`.
        Truncation: see the module docstring.
        """
        queries, documents = check_pairs(pairs)
        batch_size = _check_positive_int(batch_size, "batch_size")
        max_tokens_per_batch = token_budget(max_tokens_per_batch, self._provider)
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected 'sigmoid' or None (raw logits)")
        shape_tail = () if self.num_labels == 1 else (self.num_labels,)
        if not queries:
            return np.empty((0, *shape_tail), dtype=np.float32)
        encodings = self._tokenize(queries, documents)
        lengths = [len(e.ids) for e in encodings]
        batches = length_sorted_batches(lengths, batch_size, max_tokens_per_batch)
        logits = np.empty((len(queries), self.num_labels), dtype=np.float32)
        progress = _progress(len(queries), show_progress, "scoring")
        try:
            for rows in batches:
                logits[rows] = self._score_batch([encodings[i] for i in rows])
                progress.update(len(rows))
        finally:
            progress.close()
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
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        docs = check_texts(docs, "docs") if not isinstance(docs, str) else None
        if docs is None:
            raise TypeError("docs must be a sequence of str, got a str (pass [document] for one document)")
        if not docs:
            raise ValueError("docs is empty: there is nothing to rank")
        if top_k is not None:
            top_k = _check_positive_int(top_k, "top_k")
        if self.num_labels != 1:
            raise ValueError(f"rank needs a one-label model; this one has num_labels={self.num_labels} (use predict)")
        scores = self.predict([(query, d) for d in docs], batch_size=batch_size, activation=activation,
                              show_progress=show_progress)
        order = np.lexsort((np.arange(len(docs)), -scores.astype(np.float64)))
        if top_k is not None:
            order = order[:top_k]
        return [(int(i), float(scores[i])) for i in order]

    # -- internals -----------------------------------------------------------------------
    def _tokenize(self, queries: list[str], documents: list[str]) -> list:
        """Encodings of the pairs, the document cut first (see the module docstring); warns once."""
        tok = self.tokenizer.tokenizer
        limit = self.max_seq_length
        # A query fits when it leaves room for the special tokens and at least one document token.
        query_budget = limit - self._pair_specials - 1
        unique = list(dict.fromkeys(queries))
        query_lengths = dict(zip(unique, (len(e.ids) for e in tok.encode_batch(unique, add_special_tokens=False))))
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
            tok.enable_truncation(limit, strategy="longest_first")
            try:
                long_encodings = tok.encode_batch([(queries[i], documents[i]) for i in too_long],
                                                  add_special_tokens=True)
            finally:
                tok.no_truncation()
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

    def _score_batch(self, encodings) -> np.ndarray:
        batch = self.tokenizer.pad(encodings, self._pad_multiple)
        feeds = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
                 "token_type_ids": batch.token_type_ids}
        output = self.session.run([self._output_name], {name: feeds[name] for name in self._input_names})[0]
        return np.asarray(output, dtype=np.float32).reshape(len(encodings), self.num_labels)
