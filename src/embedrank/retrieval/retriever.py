"""Retrieval: dense (bi-encoder) and lexical (BM25) candidates, fused, then cross-encoder reranking.

    retriever = Retriever(Encoder.load(model), FlatIndex(384), reranker=CrossEncoder.load(ce),
                          lexical=LexicalIndex())          # lexical: optional (hybrid search)
    retriever.add(corpus)                      # {doc_id: {"title", "text"}} or a list of texts
    hits = retriever.search(["what is ..."])   # [[Hit(doc_id, score, text, passage), ...]]
    hits = retriever.search(["..."], mode="lexical")       # "dense" | "lexical" | "hybrid"

What is indexed: with chunking=True each document (title + " " + text) is split into
overlapping token windows (the encoder's defaults: 224 tokens, 32 overlap for a 256-token
model) and every window is one vector; short documents are one window. The index stores the
window vectors under int ids 0, 1, ... (one per window, in the order added); the retriever
keeps the window -> document map and each window's character span. A lexical index, when
given, holds the same windows' texts under the same ids.

How a query is answered, in batches of `query_batch_size` queries:

1. encode: the queries' vectors (with the model's query prompt);
2. search: the index's best windows (dense: the vector index; lexical: BM25 over the same
   windows; hybrid, the default with a lexical index: both), then their documents: a document's score is the max
   (aggregate="max") or the mean (aggregate="mean") of its windows' scores among the windows
   found, and its passage is its best window found. The index is asked for
   ``candidates * min(4, most windows of any document)`` windows so that about `candidates`
   distinct documents come back (fewer when the corpus or the windows run out). "max" is
   the document's true best window score whenever the document is found; "mean" averages
   only the windows that were found (windows outside the candidate list are not scored).
   Hybrid: each side's `candidates` documents are fused (settings ``fusion``:
   "convex", min-max normalized scores mixed with ``lexical_weight``, or "rrf", reciprocal
   rank fusion; see :func:`~embedrank.retrieval.fusion.fuse_candidates`), keeping `candidates`;
   ``choose_lexical_weight`` picks the weight on held-out queries and the retriever keeps it;
3. rerank (when there is a reranker): the cross-encoder scores (query, passage) for the
   candidates. The passage (the best window) rather than the whole document: it fits the
   cross-encoder's window, while a long document would be cut to its beginning. With
   rerank_text="document" the pair is (query, title + " " + text) instead (the cross-encoder
   then cuts the document). The reranked score is the cross-encoder's raw logit (its order
   is the sigmoid's order, without the sigmoid's saturation to ties at 1.0), plus
   ``first_stage_weight`` times the first-stage score when that weight is not 0 (score
   fusion: a cross-encoder trained on little data ranks better with the bi-encoder's
   evidence kept; choose the weight on held-out queries, never on the test set);
4. the best `top_k` documents, ties to the document added first.

``last_timings`` holds the stage times of the latest search (a :class:`SearchTimings`).
The settings are one frozen :class:`~embedrank.retrieval.settings.RetrieverSettings`
(``retriever.settings``); ``retriever.top_k = 5`` and the like replace it with a checked copy.
The corpus and its windows live in a :class:`~embedrank.retrieval.store.DocumentStore`.
``save(path)`` writes the settings, the corpus, the window map, the index (and the lexical
index, in ``lexical/``) and the model references (folder paths, variants, fingerprints) into one folder, atomically;
``Retriever.load(path)`` reopens it, refusing models whose fingerprint changed.

The folder's format (format_version 2): retriever.json records the SHA-256 of documents.jsonl
and chunks.npz ("files") and of its own content ("checksum": the SHA-256 of the JSON with
that field removed, keys sorted, compact separators, ASCII); load verifies all three and checks
every window span against its document, so an edited or damaged file is a
RetrieverFormatError naming it instead of shifted passages. The index folder has its own
checksums. Folders of format_version 1 (written before checksums) still load, with the
spans and rows checked but no checksum to compare.

A save killed mid-way (SIGKILL, power loss) leaves the old folder in place and a hidden
``.NAME.saving-*`` sibling: the next save removes such leftovers, and so does the next load,
except a leftover that a live save (of any process) is still writing: each save holds an
exclusive flock on its temporary folder until it is swapped into place, and load removes only
non-empty leftovers whose lock it can take (a killed process's locks are released by the
kernel; a save's folder is empty until its lock is held). Where the OS cannot swap two
folders atomically, a save killed between its two renames can also leave ``.NAME.old-*``: load
puts it back when the folder is missing, and the next save removes it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedrank.errors import ExistingPathError, InvalidTypeError, InvalidValueError, RetrieverFormatError
from embedrank.index.metadata import compile_filter, prepare_metadata
from embedrank.models.encoder import Encoder
from embedrank.models.tokenization import check_texts
from embedrank.retrieval.fusion import LEXICAL_WEIGHTS, choose_lexical_weight, fuse_candidates
from embedrank.retrieval.settings import AGGREGATES, RERANK_TEXTS, RetrieverSettings
from embedrank.data.lines import check_unicode
from embedrank.retrieval.store import DocumentStore, sha256_hex
from embedrank.utils.documents import join_title
from embedrank.utils.files import leftover_siblings, recover_directory, write_directory
from embedrank.utils.checks import check_positive_int

__all__ = ["AGGREGATES", "Hit", "RERANK_TEXTS", "Retriever", "RetrieverFormatError", "RetrieverSettings",
           "SearchTimings"]

FORMAT = "embedrank-retriever"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: written before checksums were recorded
SAVING_TAG = "saving"
CONFIG_FILE = "retriever.json"
INDEX_DIR = "index"
LEXICAL_DIR = "lexical"
MODES = ("dense", "lexical", "hybrid")
MAX_WINDOW_OVERSAMPLE = 4
_SETTINGS = frozenset(RetrieverSettings.names())


@dataclass(frozen=True)
class Hit:
    """One result: the document's id, its score, its text (title + " " + text, as indexed) and
    the passage that matched (its best window; the whole text when it was not chunked)."""

    doc_id: str
    score: float
    text: str
    passage: str


@dataclass(frozen=True)
class SearchTimings:
    """Wall-clock milliseconds of one search() call, per stage, summed over its query batches.

    encode_ms: query encoding; search_ms: vector index search and per-document aggregation;
    rerank_ms: cross-encoder scoring (0 without reranking); total_ms: the whole call;
    lexical_ms: BM25 search, aggregation and fusion (0 in dense mode).
    """

    queries: int
    encode_ms: float
    search_ms: float
    rerank_ms: float
    total_ms: float
    lexical_ms: float = 0.0

    def per_query_ms(self) -> dict:
        n = max(self.queries, 1)
        return {"encode": self.encode_ms / n, "search": self.search_ms / n, "lexical": self.lexical_ms / n,
                "rerank": self.rerank_ms / n, "total": self.total_ms / n}


class Retriever:
    """Dense, lexical or hybrid retrieval with optional cross-encoder reranking (see the module docstring).

    encoder: an embedrank Encoder; index: an empty FlatIndex, HNSWIndex or PgVectorIndex
    (embedrank.integrations.pgvector: the vectors in a Postgres table) of the encoder's
    dimension; reranker: a CrossEncoder or None; lexical: None, an empty LexicalIndex, or True
    (a LexicalIndex with its defaults). The other arguments are the fields of
    :class:`RetrieverSettings` (candidates, top_k, chunking, aggregate, rerank_text,
    max_tokens, overlap, query_batch_size, batch_size, first_stage_weight, fusion,
    lexical_weight, rrf_k); each is also an attribute, and assigning one replaces ``settings``
    with a checked copy.
    """

    def __init__(self, encoder: Encoder, index, reranker=None, candidates: int = 100, top_k: int = 10,
                 chunking: bool = True, aggregate: str = "max", *, rerank_text: str = "passage",
                 max_tokens: int | None = None, overlap: int | None = None, query_batch_size: int = 32,
                 batch_size: int = 32, first_stage_weight: float = 0.0, lexical=None, fusion: str = "convex",
                 lexical_weight: float = 0.5, rrf_k: int = 60):
        if not isinstance(encoder, Encoder):
            raise InvalidTypeError(f"encoder must be an embedrank Encoder, got {type(encoder).__name__}")
        for method in ("add", "search", "save", "__len__"):
            if not hasattr(index, method):
                raise InvalidTypeError(
                    f"index must be an embedrank index (FlatIndex, HNSWIndex or PgVectorIndex), got {type(index).__name__}")
        if index.dim != encoder.dim:
            raise InvalidValueError(f"the index holds {index.dim}-dimensional vectors but the encoder makes {encoder.dim}")
        if len(index) != 0:
            raise InvalidValueError(f"the index already holds {len(index)} vectors; a Retriever starts from an empty "
                                    "index (use Retriever.load for a saved retriever)")
        settings = RetrieverSettings(candidates=candidates, top_k=top_k, chunking=chunking, aggregate=aggregate,
                                     rerank_text=rerank_text, max_tokens=max_tokens, overlap=overlap,
                                     query_batch_size=query_batch_size, batch_size=batch_size,
                                     first_stage_weight=first_stage_weight, fusion=fusion,
                                     lexical_weight=lexical_weight, rrf_k=rrf_k)
        self._assemble(encoder, index, reranker, settings, DocumentStore(), _check_lexical(lexical))

    def _assemble(self, encoder: Encoder, index, reranker, settings: RetrieverSettings, store: DocumentStore,
                  lexical=None) -> None:
        self.settings = settings
        self.encoder = encoder
        self.index = index
        self.lexical = lexical
        self.reranker = reranker
        self.store = store
        self.last_timings: SearchTimings | None = None

    # -- settings: one frozen record, each field readable and assignable by name ------------
    def __getattr__(self, name: str):
        # only called when normal lookup fails: the settings' fields
        if name in _SETTINGS and "settings" in self.__dict__:
            return getattr(self.__dict__["settings"], name)
        raise AttributeError(f"'Retriever' object has no attribute {name!r}")

    def __setattr__(self, name: str, value) -> None:
        if name in _SETTINGS:
            value = self.settings.replace(**{name: value})
            name = "settings"
        elif name == "settings" and not isinstance(value, RetrieverSettings):
            raise InvalidTypeError(f"settings must be a RetrieverSettings, got {type(value).__name__}")
        object.__setattr__(self, name, value)

    @property
    def reranker(self):
        return self._reranker

    @reranker.setter
    def reranker(self, value) -> None:
        from embedrank.models.cross_encoder import CrossEncoder

        if value is not None and not isinstance(value, CrossEncoder):
            raise InvalidTypeError(f"reranker must be an embedrank CrossEncoder or None, got {type(value).__name__}")
        if value is not None and value.num_labels != 1:
            raise InvalidValueError(f"the reranker must give one score per pair; it has num_labels={value.num_labels}")
        self._reranker = value

    # -- the corpus ----------------------------------------------------------------------
    def __len__(self) -> int:
        """Documents added."""
        return len(self.store)

    @property
    def n_chunks(self) -> int:
        """Windows (index vectors) added."""
        return self.store.n_windows

    def __contains__(self, doc_id) -> bool:
        return doc_id in self.store

    def document(self, doc_id: str) -> dict:
        """{"title", "text"} of an added document (UnknownIdError, a KeyError, when absent)."""
        return self.store.document(doc_id)

    def add(self, corpus, show_progress: bool | None = None, metadata=None) -> list[str]:
        """Encodes and indexes documents; returns their ids in the order added.

        corpus: a BEIR-style dict {doc_id (str): {"title": str, "text": str}} (a str value is
        taken as the text, title empty) or a list of texts, whose ids are assigned as the
        strings "0", "1", ... counting on from the number of documents already added and
        skipping ids already in use. metadata: None, or per document a dict of JSON values
        (or None) that ``search(filter={...})`` matches: a dict {doc_id: dict} naming only
        documents of this call, or a list aligned with the corpus; every window of a document
        carries its metadata, in the dense and the lexical index alike. An empty corpus, a
        duplicate id (within the call or already added), a wrongly typed entry, metadata that
        does not fit, or a text or id holding a lone surrogate raises before anything is
        added; when encoding or indexing fails midway (an error, an interrupt) whatever the
        index took is removed again: documents, windows and index are as they were.
        """
        if len(self.index) != self.n_chunks:  # the rollback below removes the ids from n_chunks on
            raise InvalidValueError(f"the index holds {len(self.index)} vectors but the retriever {self.n_chunks} "
                                    "windows: it was changed outside the retriever")
        if self.lexical is not None and len(self.lexical) != self.n_chunks:
            raise InvalidValueError(f"the lexical index holds {len(self.lexical)} windows but the retriever "
                                    f"{self.n_chunks}: it was changed outside the retriever")
        ids, titles, texts = self._check_corpus(corpus)
        per_doc = _document_metadata(metadata, ids)
        docs = [{"title": t, "text": x} for t, x in zip(titles, texts)]
        if self.chunking:
            chunked = self.encoder.encode_documents(docs, chunking=True, max_tokens=self.max_tokens,
                                                    overlap=self.overlap, batch_size=self.batch_size,
                                                    show_progress=show_progress)
            vectors = chunked.embeddings
            owners = chunked.chunk_to_doc
            starts = np.array([c.start for c in chunked.chunks], dtype=np.int64)
            ends = np.array([c.end for c in chunked.chunks], dtype=np.int64)
        else:
            vectors = self.encoder.encode_documents(docs, chunking=False, batch_size=self.batch_size,
                                                    show_progress=show_progress)
            owners = np.arange(len(docs), dtype=np.int64)
            starts = np.zeros(len(docs), dtype=np.int64)
            ends = np.array([len(join_title(t, x)) for t, x in zip(titles, texts)], dtype=np.int64)
        first_chunk = self.n_chunks
        window_ids = np.arange(first_chunk, first_chunk + len(vectors), dtype=np.int64)
        window_metadata = None if per_doc is None else [per_doc[o] for o in owners.tolist()]
        try:
            self.index.add(vectors, ids=window_ids, metadata=window_metadata)
            if self.lexical is not None:
                full = [join_title(t, x) for t, x in zip(titles, texts)]
                self.lexical.add([full[o][a:b] for o, a, b in zip(owners.tolist(), starts.tolist(), ends.tolist())],
                                 ids=window_ids, metadata=window_metadata)
            self.store.append(ids, titles, texts, owners, starts, ends)
        except BaseException:
            self._forget_windows(window_ids)
            raise
        return ids

    def _forget_windows(self, window_ids: np.ndarray) -> None:
        """Removes from the indexes whichever of `window_ids` a failed add left in them."""
        for index in (self.index, self.lexical):
            if index is None:
                continue
            present = [int(i) for i in window_ids if int(i) in index]
            if present:
                index.remove(present)

    def _check_corpus(self, corpus) -> tuple[list[str], list[str], list[str]]:
        if isinstance(corpus, dict):
            if not corpus:
                raise InvalidValueError("corpus is empty: nothing to add")
            ids, titles, texts = [], [], []
            for doc_id, doc in corpus.items():
                if not isinstance(doc_id, str):
                    raise InvalidTypeError(f"document ids must be str, got {type(doc_id).__name__} {doc_id!r}")
                if isinstance(doc, str):
                    title, text = "", doc
                elif isinstance(doc, dict):
                    if "text" not in doc:
                        raise InvalidValueError(f"document {doc_id!r} has no 'text' field (keys: {sorted(doc)})")
                    title, text = doc.get("title") or "", doc["text"]
                    if not isinstance(title, str) or not isinstance(text, str):
                        bad = "title" if not isinstance(title, str) else "text"
                        raise InvalidTypeError(f"document {doc_id!r}: {bad} must be a str, got {type(doc[bad]).__name__}")
                else:
                    raise InvalidTypeError(f"document {doc_id!r} must be a dict with 'text' (and 'title') or a str, "
                                    f"got {type(doc).__name__}")
                check_unicode(doc_id, f"document id {doc_id!a}")
                check_unicode(title, f"document {doc_id!r}: the title")
                check_unicode(text, f"document {doc_id!r}: the text")
                ids.append(doc_id)
                titles.append(title)
                texts.append(text)
        elif isinstance(corpus, (list, tuple)):
            if not corpus:
                raise InvalidValueError("corpus is empty: nothing to add")
            texts = check_texts(corpus, "corpus")
            for i, text in enumerate(texts):
                check_unicode(text, f"corpus[{i}]")
            ids, number = [], len(self.store)
            while len(ids) < len(texts):
                if str(number) not in self.store:
                    ids.append(str(number))
                number += 1
            titles = [""] * len(texts)
        else:
            raise InvalidTypeError(f"corpus must be a dict {{doc_id: {{'title', 'text'}}}} or a list of texts, "
                            f"got {type(corpus).__name__}")
        already = [d for d in ids if d in self.store]
        if already:
            raise InvalidValueError(f"{len(already)} document id(s) already added: {already[:5]}")
        return ids, titles, texts

    # -- search --------------------------------------------------------------------------
    def search(self, queries, top_k: int | None = None, candidates: int | None = None, rerank: bool | None = None,
               show_progress: bool | None = None, mode: str | None = None, filter=None) -> list[list[Hit]]:
        """The best documents for each query: a list (one per query) of up to top_k Hits, best first.

        queries: a list of str (one str is taken as a list of one). top_k / candidates
        override the retriever's settings for this call; rerank=False skips the reranker
        (None: rerank when there is one). mode: "dense", "lexical" or "hybrid" (None: hybrid
        when the retriever has a lexical index, else dense). filter: None; a dict of metadata
        conditions (the indexes' grammar: field -> value or list of accepted values) on the
        metadata given to ``add``; or a list/set of document ids (ids never added match
        nothing). Both sides of a hybrid search and the reranker see only matching documents;
        fewer than top_k may match. An empty retriever gives empty lists. The stage times are
        in ``last_timings``.
        """
        started = time.perf_counter()
        queries = check_texts(queries, "queries")
        for i, query in enumerate(queries):
            check_unicode(query, f"queries[{i}]")
        top_k = self.top_k if top_k is None else check_positive_int(top_k, "top_k")
        candidates = self.candidates if candidates is None else check_positive_int(candidates, "candidates")
        candidates = max(candidates, top_k)
        if rerank is not None and not isinstance(rerank, (bool, np.bool_)):
            raise InvalidTypeError(f"rerank must be True, False or None, got {rerank!r}")
        if rerank and self.reranker is None:
            raise InvalidValueError("rerank=True but this retriever has no reranker")
        use_reranker = self.reranker is not None and rerank is not False
        mode = self._check_mode(mode)
        allowed = self._window_filter(filter)
        encode_s = search_s = lexical_s = rerank_s = 0.0
        results: list[list[Hit]] = []
        if queries and self.n_chunks:
            for start in range(0, len(queries), self.query_batch_size):
                batch = queries[start:start + self.query_batch_size]
                t0 = time.perf_counter()
                dense = lexical = None
                if mode != "lexical":
                    vectors = self.encoder.encode_queries(batch, batch_size=self.batch_size, show_progress=False)
                t1 = time.perf_counter()
                if mode != "lexical":
                    dense = self._dense_candidates(vectors, candidates, allowed)
                t2 = time.perf_counter()
                if mode != "dense":
                    lexical = self._lexical_candidates(batch, candidates, allowed)
                found = dense if lexical is None else lexical if dense is None else [
                    fuse_candidates(d, x, self.fusion, self.lexical_weight, self.rrf_k, candidates)
                    for d, x in zip(dense, lexical)]
                t3 = time.perf_counter()
                if use_reranker:
                    found = self._rerank(batch, found, show_progress)
                    rerank_s += time.perf_counter() - t3
                results.extend(self._hits(docs, scores, windows, top_k) for docs, scores, windows in found)
                encode_s, search_s = encode_s + t1 - t0, search_s + t2 - t1
                if mode != "dense":  # dense mode reports 0, not the cost of skipping the stage
                    lexical_s += t3 - t2
        else:
            results = [[] for _ in queries]
        total = time.perf_counter() - started
        self.last_timings = SearchTimings(len(queries), encode_s * 1e3, search_s * 1e3, rerank_s * 1e3, total * 1e3,
                                          lexical_s * 1e3)
        return results

    def _check_mode(self, mode: str | None) -> str:
        if mode is None:
            return "dense" if self.lexical is None else "hybrid"
        if mode not in MODES:
            raise InvalidValueError(f"mode must be 'dense', 'lexical' or 'hybrid', got {mode!r}")
        if mode != "dense" and self.lexical is None:
            raise InvalidValueError(f"mode={mode!r} needs a lexical index; this retriever has none "
                                    "(build it with Retriever(..., lexical=LexicalIndex()))")
        return mode

    def _window_budget(self, candidates: int) -> int:
        """Windows to ask an index for so that about `candidates` distinct documents come back."""
        return min(self.n_chunks, candidates * min(MAX_WINDOW_OVERSAMPLE, max(self.store.most_windows, 1)))

    def _window_filter(self, filter):
        """search()'s filter as the indexes take it: a metadata dict as is (checked by them),
        document ids as the array of their window ids; None for none."""
        if filter is None:
            return None
        if isinstance(filter, Mapping):
            compile_filter(filter)  # checked here too: an empty retriever or query list searches no index
            return filter
        if (isinstance(filter, (str, bytes)) or not isinstance(filter, (list, tuple, set, frozenset, np.ndarray))
                or (isinstance(filter, np.ndarray) and filter.ndim != 1)):
            raise InvalidTypeError("filter must be None, a dict of metadata conditions or a list/set of document "
                                   f"ids, got {type(filter).__name__}")
        wanted = list(filter)
        bad = next((d for d in wanted if not isinstance(d, str)), None)
        if bad is not None:
            raise InvalidTypeError(f"filter: document ids are str, got {type(bad).__name__} {bad!r}")
        rows = [self.store.position[d] for d in wanted if d in self.store.position]
        return np.flatnonzero(np.isin(self.store.chunk_doc, np.asarray(rows, dtype=np.int64))).astype(np.int64)

    def _dense_candidates(self, vectors: np.ndarray, candidates: int, allowed=None) -> list[tuple]:
        """Per query: (document indices, scores, best window of each), best first, at most
        `candidates`; allowed: an index filter (see _window_filter)."""
        return self._documents(self.index.search(vectors, self._window_budget(candidates), filter=allowed),
                               candidates)

    def _lexical_candidates(self, queries: list[str], candidates: int, allowed=None) -> list[tuple]:
        """As _dense_candidates, from the lexical index (BM25 scores)."""
        return self._documents(self.lexical.search(queries, self._window_budget(candidates), filter=allowed),
                               candidates)

    def _documents(self, result, candidates: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """A window search result aggregated to documents (see the module docstring, step 2)."""
        out = []
        for ids, scores in zip(result.ids, result.scores):
            live = (ids >= 0) & np.isfinite(scores)
            windows = ids[live].astype(np.int64)
            scores = scores[live]
            docs = self.store.chunk_doc[windows]
            # windows come best first: a document's first window is its best one
            unique_docs, first, inverse = np.unique(docs, return_index=True, return_inverse=True)
            if self.aggregate == "max":
                doc_scores = scores[first]
            else:
                sums = np.bincount(inverse, weights=scores.astype(np.float64), minlength=unique_docs.size)
                doc_scores = (sums / np.bincount(inverse, minlength=unique_docs.size)).astype(np.float32)
            order = np.lexsort((unique_docs, -doc_scores.astype(np.float64)))[:candidates]
            out.append((unique_docs[order], doc_scores[order].astype(np.float32), windows[first[order]]))
        return out

    def _rerank(self, queries: list[str], found: list, show_progress) -> list:
        """Cross-encoder scores for every (query, candidate) of the batch in one predict call."""
        pairs = []
        for query, (docs, _, windows) in zip(queries, found):
            texts = (self.store.passage(w) for w in windows) if self.rerank_text == "passage" else (
                self.store.full_text(d) for d in docs)
            pairs.extend((query, t) for t in texts)
        if not pairs:
            return found
        scores = self.reranker.predict(pairs, batch_size=self.batch_size, activation=None, show_progress=show_progress)
        out, offset = [], 0
        for docs, first_scores, windows in found:
            mine = scores[offset:offset + len(docs)]
            offset += len(docs)
            if self.first_stage_weight:
                mine = (mine + np.float32(self.first_stage_weight) * first_scores).astype(np.float32)
            order = np.lexsort((docs, -mine.astype(np.float64)))
            out.append((docs[order], mine[order], windows[order]))
        return out

    def _hits(self, docs: np.ndarray, scores: np.ndarray, windows: np.ndarray, top_k: int) -> list[Hit]:
        store = self.store
        return [Hit(store.doc_ids[d], float(s), store.full_text(d), store.passage(w))
                for d, s, w in zip(docs[:top_k].tolist(), scores[:top_k].tolist(), windows[:top_k].tolist())]

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Writes the retriever folder at `path` (replacing a retriever saved there); returns it.

        Holds retriever.json (format, settings, counts; encoder and reranker folder paths,
        variants and fingerprints), documents.jsonl and chunks.npz (the DocumentStore) and
        index/ (the index's own format), written through embedrank.utils.files.write_directory:
        a crash leaves the old folder or the new one, never a mix. A non-empty `path` that is
        not a saved retriever is refused (ExistingPathError).
        """
        held: list[int] = []

        def write(folder: Path) -> None:
            try:
                held.append(_lock_folder(folder, blocking=True))
            except OSError:  # a file system without flock: loads cannot lock it either, so they keep it
                pass
            self._write(folder)

        try:
            return write_directory(path, write, tag=SAVING_TAG, is_whole=_is_retriever,
                                   check_replaceable=_check_replaceable)
        finally:
            # held until the folder is in place: a load in another process must not take it
            # for a dead save's leftover
            for fd in held:
                os.close(fd)

    def _write(self, folder: Path) -> None:
        checksums = self.store.write(folder)
        self.index.save(folder / INDEX_DIR)
        if self.lexical is not None:
            self.lexical.save(folder / LEXICAL_DIR)
        config = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "documents": len(self.store),
            "chunks": self.n_chunks,
            "settings": self.settings.to_dict(),
            "encoder": _model_reference(self.encoder),
            "reranker": None if self.reranker is None else _model_reference(self.reranker),
            "lexical": self.lexical is not None,
            "files": checksums,
        }
        config["checksum"] = _config_checksum(config)
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike, encoder: Encoder | None = None, reranker=None,
             num_threads: int | None = None, mmap: bool = True) -> Retriever:
        """Reopens a saved retriever: the corpus, the index and the models it references.

        encoder / reranker: already loaded models to use instead of the saved folder paths
        (e.g. after moving the model folders); their fingerprints must still match.
        num_threads: for the models opened here. RetrieverFormatError naming the file for a
        folder that is not a saved retriever, is damaged (a checksum differs) or is
        inconsistent; InvalidValueError when a model's fingerprint differs from the one the
        retriever was built with. Hidden leftovers of killed saves beside the folder are
        removed (see the module docs).
        """
        from embedrank.index import load_index
        from embedrank.models.cross_encoder import CrossEncoder

        path = Path(path)
        config = _read_config(path)
        remove_dead_saves(path)
        try:
            settings = RetrieverSettings.from_dict(config["settings"])
        except (InvalidValueError, InvalidTypeError) as error:
            raise RetrieverFormatError(f"{path / CONFIG_FILE}: {error}") from None
        encoder_ref, reranker_ref = config["encoder"], config.get("reranker")
        if encoder is None:
            encoder = Encoder.load(encoder_ref["path"], variant=encoder_ref["variant"], num_threads=num_threads,
                                   bf16_attention=encoder_ref.get("bf16_attention") is True)
        _check_fingerprint("encoder", encoder, encoder_ref)
        if reranker is None and reranker_ref is not None:
            reranker = CrossEncoder.load(reranker_ref["path"], variant=reranker_ref["variant"], num_threads=num_threads,
                                         bf16_attention=reranker_ref.get("bf16_attention") is True)
        if reranker is not None and reranker_ref is not None:
            _check_fingerprint("reranker", reranker, reranker_ref)
        store = DocumentStore.read(path, config.get("files"))
        index = load_index(path / INDEX_DIR, mmap=mmap)
        lexical = None
        if config.get("lexical"):
            from embedrank.index.lexical import LexicalIndex

            lexical = load_index(path / LEXICAL_DIR, mmap=mmap)
            if not isinstance(lexical, LexicalIndex) or len(lexical) != store.n_windows:
                raise RetrieverFormatError(f"{path / LEXICAL_DIR}: not a LexicalIndex of the retriever's "
                                           f"{store.n_windows} windows")
        n_docs, n_chunks = len(store), store.n_windows
        if (config["documents"], config["chunks"]) != (n_docs, n_chunks) or len(index) != n_chunks:
            raise RetrieverFormatError(
                f"{path}: inconsistent files ({n_docs} documents, {n_chunks} windows, {len(index)} index vectors; "
                f"retriever.json says {config['documents']} and {config['chunks']})")
        if index.dim != encoder.dim:
            raise InvalidValueError(f"the saved index holds {index.dim}-dimensional vectors but the encoder makes "
                                    f"{encoder.dim}")
        retriever = cls.__new__(cls)
        retriever._assemble(encoder, index, reranker, settings, store, lexical)
        return retriever

    # -- hybrid: the lexical weight --------------------------------------------------------
    def choose_lexical_weight(self, queries, qrels, weights=LEXICAL_WEIGHTS) -> tuple[float, dict]:
        """Sets ``lexical_weight`` to the weight whose fused first stage has the best NDCG@10 on
        held-out queries ({qid: text}, with their qrels; never the test set) and returns
        (weight, report). Saved with the retriever like every setting."""
        if self.lexical is None:
            raise InvalidValueError("choose_lexical_weight needs a lexical index; this retriever has none")
        if not isinstance(queries, dict) or not queries:
            raise InvalidValueError("queries must be a non-empty dict {query id: text}")
        qids = [q for q in queries if q in qrels]
        if not qids:
            raise InvalidValueError("none of the queries has qrels")
        texts = check_texts([queries[q] for q in qids], "queries")
        dense, lexical = {}, {}
        for start in range(0, len(qids), self.query_batch_size):
            batch = texts[start:start + self.query_batch_size]
            vectors = self.encoder.encode_queries(batch, batch_size=self.batch_size, show_progress=False)
            for q, d, x in zip(qids[start:], self._dense_candidates(vectors, self.candidates),
                               self._lexical_candidates(batch, self.candidates)):
                dense[q], lexical[q] = d, x
        weight, report = choose_lexical_weight(dense, lexical, self.store.doc_ids, qrels, self.fusion, self.rrf_k,
                                               weights, self.candidates)
        self.lexical_weight = weight
        return weight, report


def _document_metadata(metadata, ids: list[str]) -> list | None:
    """add()'s metadata as one entry (dict or None) per document of `ids`, or None."""
    if metadata is None:
        return None
    if isinstance(metadata, Mapping):
        known = set(ids)
        unknown = [d for d in metadata if d not in known]
        if unknown:
            raise InvalidValueError(f"metadata names {len(unknown)} document(s) not in this corpus: {unknown[:5]}")
        entries = [metadata.get(d) for d in ids]
    elif isinstance(metadata, (list, tuple)):
        if len(metadata) != len(ids):
            raise InvalidValueError(f"metadata has {len(metadata)} entries but the corpus {len(ids)} documents")
        entries = list(metadata)
    else:
        raise InvalidTypeError(f"metadata must be None, a dict {{doc_id: dict}} or a list of dicts, "
                               f"got {type(metadata).__name__}")
    # the indexes' own checks, before anything is encoded
    prepare_metadata(entries, len(entries), names=[f"the metadata of document {d!r}" for d in ids])
    return entries


def _check_lexical(lexical):
    from embedrank.index.lexical import LexicalIndex

    if lexical is None or lexical is False:
        return None
    if lexical is True:
        return LexicalIndex()
    if not isinstance(lexical, LexicalIndex):
        raise InvalidTypeError(f"lexical must be None, True or a LexicalIndex, got {type(lexical).__name__}")
    if len(lexical) != 0:
        raise InvalidValueError(f"the lexical index already holds {len(lexical)} documents; a Retriever starts "
                                "from an empty one")
    return lexical


def _model_reference(model) -> dict:
    reference = {"path": str(Path(model.config.path).absolute()), "variant": model.variant,
                 "fingerprint": model.config.fingerprint, "kind": model.config.kind}
    if getattr(model, "bf16_attention_layers", 0):  # only when on: retrievers saved before it read the same
        reference["bf16_attention"] = True
    return reference


def _check_fingerprint(role: str, model, reference: dict) -> None:
    saved, current = reference.get("fingerprint") or "", model.config.fingerprint or ""
    if saved and current and saved != current:
        raise InvalidValueError(f"the {role} at {model.config.path} has fingerprint {current[:19]}..., but this "
                                f"retriever was built with {saved[:19]}... ({reference.get('path')}): its vectors "
                                "would not match")


def _is_retriever(folder: Path) -> bool:
    return (folder / CONFIG_FILE).is_file()


def _check_replaceable(path: Path) -> None:
    if not os.path.lexists(path):
        return
    if not path.is_dir():
        raise ExistingPathError(f"{path} exists and is not a folder")
    if any(path.iterdir()) and not _is_retriever(path):
        raise ExistingPathError(f"{path} is not empty and is not a saved retriever: not overwriting it")


def _config_checksum(config: dict) -> str:
    """SHA-256 of retriever.json's content without its "checksum" field, in one canonical form
    (sorted keys, compact, ASCII) so that the reader recomputes it from the parsed values."""
    rest = {key: value for key, value in config.items() if key != "checksum"}
    return "sha256:" + sha256_hex(json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                                             allow_nan=False).encode("ascii"))


def _read_config(path: Path) -> dict:
    recover_directory(path.absolute(), _is_retriever)
    if not path.is_dir():
        raise RetrieverFormatError(f"retriever folder not found: {path}")
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise RetrieverFormatError(f"{config_path} is missing: not a saved retriever")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RetrieverFormatError(f"{config_path} is not valid JSON: {error}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise RetrieverFormatError(f"{config_path} is not an embedrank retriever file")
    version = config.get("format_version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise RetrieverFormatError(f"{config_path} has format_version {version!r}; this embedrank reads "
                                   f"{', '.join(map(str, READABLE_VERSIONS))}")
    if version >= 2:
        if not isinstance(config.get("checksum"), str):
            raise RetrieverFormatError(f"{config_path} lacks the field 'checksum'")
        try:
            expected = _config_checksum(config)
        except ValueError:  # a NaN or infinity put in by hand
            expected = None
        if config["checksum"] != expected:
            raise RetrieverFormatError(f"{config_path} is damaged or was edited: its checksum does not match "
                                       "its content")
        files = config.get("files")
        if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
            raise RetrieverFormatError(f"{config_path}: 'files' must map file names to checksums")
    else:
        config.pop("files", None)  # version 1 recorded none: nothing to compare
    for key in ("documents", "chunks", "settings", "encoder"):
        if key not in config:
            raise RetrieverFormatError(f"{config_path} lacks the field {key!r}")
    for key in ("documents", "chunks"):
        if isinstance(config[key], bool) or not isinstance(config[key], int) or config[key] < 0:
            raise RetrieverFormatError(f"{config_path}: {key!r} must be an integer >= 0, got {config[key]!r}")
    if not isinstance(config["settings"], dict):
        raise RetrieverFormatError(f"{config_path}: 'settings' must be an object")
    for role in ("encoder", "reranker"):
        reference = config.get(role)
        if reference is None and role == "reranker":
            continue
        if not isinstance(reference, dict) or not all(isinstance(reference.get(k), str) for k in ("path", "variant")) \
                or not isinstance(reference.get("fingerprint") or "", str):
            raise RetrieverFormatError(f"{config_path}: {role!r} must be an object with 'path', 'variant' and "
                                       "'fingerprint' strings")
    return config


# -- leftovers of killed saves ------------------------------------------------------------------
def _lock_folder(folder: Path, blocking: bool) -> int | None:
    """An open descriptor of `folder` holding an exclusive flock on it; None when another
    process holds the lock and blocking is False. The kernel releases the lock when the
    holder exits, SIGKILL included."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except OSError as error:
        os.close(fd)
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def remove_dead_saves(path: str | os.PathLike) -> list[Path]:
    """Removes the ``.NAME.saving-*`` folders that killed saves of the retriever at `path` left;
    returns them. One that a live save holds locked, or that is still empty (a save that has not
    taken its lock yet), is kept. Errors (permissions, a folder vanishing meanwhile) are ignored:
    what is left stays for the next save."""
    removed = []
    try:
        candidates = leftover_siblings(Path(path).absolute(), SAVING_TAG)
    except OSError:  # a parent folder that cannot be listed: loading does not need it
        return removed
    for leftover in candidates:
        try:
            fd = _lock_folder(leftover, blocking=False)
        except OSError:
            continue
        if fd is None:
            continue
        try:
            with os.scandir(leftover) as entries:
                written = any(entries)
            if written:
                shutil.rmtree(leftover, ignore_errors=True)
                removed.append(leftover)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed
