"""LexicalIndex (BM25) against a plain-Python BM25, bm25s, and its own saved files."""

from __future__ import annotations

import json
import math
import re
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embedrank import _kernels
from embedrank.errors import IndexFormatError, InvalidTypeError, InvalidValueError, UnknownIdError
from embedrank.index import load_index
from embedrank.index.analysis import ENGLISH_STOPWORDS, Analyzer
from embedrank.index import lexical as lexical_module
from embedrank.index.lexical import LexicalIndex

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
WORDS = ["cat", "cats", "dog", "dogs", "running", "runs", "fish", "the", "a", "of", "blue", "sky", "x1", "zebra"]


def reference_bm25(docs: list[list[str]], query: list[str], k1=1.5, b=0.75) -> np.ndarray:
    """Lucene BM25 of every document for one analyzed query, written from the formula."""
    n = len(docs)
    avgdl = sum(map(len, docs)) / n if n else 1.0
    avgdl = avgdl or 1.0
    df = Counter(t for d in docs for t in set(d))
    scores = np.zeros(n)
    for i, doc in enumerate(docs):
        tf = Counter(doc)
        for t in query:
            if tf[t]:
                idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
                scores[i] += idf * tf[t] / (tf[t] + k1 * (1 - b + b * len(doc) / avgdl))
    return scores


def expected_top(analyzer: Analyzer, texts: list[str], query: str, k: int):
    docs = [analyzer.tokens(t) for t in texts]
    scores = reference_bm25(docs, analyzer.tokens(query))
    order = sorted((i for i in range(len(texts)) if scores[i] > 0), key=lambda i: (-scores[i], i))[:k]
    return order, scores[order]


texts_strategy = st.lists(st.lists(st.sampled_from(WORDS), max_size=12).map(" ".join), min_size=1, max_size=23)


@settings(max_examples=60, deadline=None)
@given(texts=texts_strategy, query=st.lists(st.sampled_from(WORDS), min_size=1, max_size=5).map(" ".join),
       k=st.integers(1, 9))
def test_scores_equal_the_formula_on_odd_sizes(texts, query, k):
    index = LexicalIndex()
    index.add(texts)
    result = index.search([query], k)
    order, scores = expected_top(index.analyzer, texts, query, k)
    found = [i for i in result.ids[0].tolist() if i != -1]
    assert found == order
    np.testing.assert_allclose(result.scores[0][:len(order)], scores, rtol=1e-5)
    assert np.isneginf(result.scores[0][len(order):]).all()


@settings(max_examples=40, deadline=None)
@given(texts=texts_strategy, removed=st.sets(st.integers(0, 22)), query=st.sampled_from(WORDS))
def test_after_remove_and_upsert_scores_equal_a_fresh_index(texts, removed, query):
    ids = [f"d{i}" for i in range(len(texts))]
    index = LexicalIndex()
    index.add(texts, ids=ids)
    gone = [f"d{i}" for i in sorted(removed) if i < len(texts)]
    if gone:
        index.remove(gone)
    index.add(["zebra sky blue", "dogs"], ids=["d0", "new"], upsert=True)
    live = {i: t for i, t in zip(ids, texts) if i not in gone}
    live["d0"] = "zebra sky blue"
    live["new"] = "dogs"
    fresh = LexicalIndex()
    fresh.add(list(live.values()), ids=list(live))
    a, b = index.search([query], 30), fresh.search([query], 30)
    assert dict(zip(a.ids[0].tolist(), a.scores[0].tolist())) == pytest.approx(
        dict(zip(b.ids[0].tolist(), b.scores[0].tolist())), rel=1e-5)
    assert sorted(index.ids().tolist()) == sorted(live)


def test_many_small_adds_merge_segments_and_keep_scores():
    rng = np.random.default_rng(3)
    texts = [" ".join(rng.choice(WORDS, size=rng.integers(0, 9))) for _ in range(60)]
    one, many = LexicalIndex(), LexicalIndex()
    one.add(texts)
    for i, text in enumerate(texts):
        many.add([text], ids=[i])
    queries = ["cat dog", "running sky", "zebra", "blue fish of"]
    a, b = one.search(queries, 7), many.search(queries, 7)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)


def _zipf_texts(rng, n: int, vocab: int = 400) -> list[str]:
    """n texts of 1-30 words drawn Zipf-like from w0..w{vocab-1} (lengths vary, so BM25 ties are rare)."""
    p = 1.0 / np.arange(1, vocab + 1)
    p /= p.sum()
    words = np.array([f"w{i}" for i in range(vocab)], dtype=object)
    return [" ".join(words[rng.choice(vocab, size=rng.integers(1, 31), p=p)]) for _ in range(n)]


def assert_same_hits(got, want, tol=1e-6):
    """Scores equal to tol; ids equal, except that hits with tied scores may swap (also across the k-th place)."""
    np.testing.assert_allclose(got.scores, want.scores, rtol=tol, atol=tol)
    for g_row, w_row, s_row in zip(got.ids.tolist(), want.ids.tolist(), want.scores.tolist()):
        assert len(set(g_row) - {-1}) == len([g for g in g_row if g != -1])
        for column, (g, w) in enumerate(zip(g_row, w_row)):
            if g != w:
                tied = [w_row[j] for j in range(len(w_row)) if abs(s_row[j] - s_row[column]) <= tol]
                assert g in tied or (g not in w_row and abs(s_row[column] - s_row[-1]) <= tol), (g, w, s_row[column])


# Small indexes search term at a time; MAXSCORE_MIN_SLOTS = 1 sends them through MaxScore, whose
# per-segment bounds depend on the norms and must be reset whenever those are rebuilt.
@pytest.fixture(params=["term_at_a_time", "maxscore"])
def search_path(request, monkeypatch):
    if request.param == "maxscore":
        monkeypatch.setattr(lexical_module, "MAXSCORE_MIN_SLOTS", 1)
    return request.param


def test_one_by_one_adds_equal_one_batch_add(search_path):
    rng = np.random.default_rng(5)
    texts = _zipf_texts(rng, 2000)
    batch, single = LexicalIndex(language=None), LexicalIndex(language=None)
    batch.add(texts)
    for i, text in enumerate(texts):
        single.add([text], ids=[i])
        sizes = [segment.n_postings for segment in single._segments]
        # size tiers: each segment holds more than twice the postings of the next newer one,
        # so one-document adds stay O(n log n) (merging everything every few adds was O(n^2))
        assert all(older > 2 * newer for older, newer in zip(sizes, sizes[1:])), sizes
    assert len(single._segments) <= np.log2(sum(sizes)) + 1
    queries = [" ".join(q) for q in (rng.choice([f"w{i}" for i in range(400)], size=rng.integers(1, 5))
                                     for _ in range(40))]
    for k in (1, 10, 100):
        got, want = single.search(queries, k), batch.search(queries, k)
        np.testing.assert_array_equal(got.ids, want.ids)
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6, atol=1e-6)


def test_interleaved_adds_searches_and_removes_equal_a_fresh_index(search_path):
    rng = np.random.default_rng(6)
    texts = _zipf_texts(rng, 600)
    queries = ["w0 w5", "w1", "w3 w17 w40", "w2 w9 w120 w300"]
    index = LexicalIndex(language=None)
    live: dict[int, str] = {}
    for step, text in enumerate(texts):
        index.add([text], ids=[step])
        live[step] = text
        if step % 3 == 2:  # remove one live document at random (slots die; a fifth dead renumbers them)
            gone = int(rng.choice(list(live)))
            index.remove(gone)
            del live[gone]
        if step % 7 == 0 or step == len(texts) - 1:
            fresh = LexicalIndex(language=None)
            fresh.add(list(live.values()), ids=list(live))
            assert_same_hits(index.search(queries, 10), fresh.search(queries, 10))
    assert index.ids().tolist() == list(live)


def test_searches_before_and_after_a_long_document_equal_a_fresh_index(search_path):
    """One long document multiplies avgdl, so every other norm drops and every score (and MaxScore
    bound cached by the searches before it) rises: the next search must see all of it."""
    rng = np.random.default_rng(8)
    texts = [" ".join(rng.choice([f"w{i}" for i in range(12)], size=rng.integers(1, 4))) for _ in range(300)]
    queries = ["w0 w1 w2 w3", "w4 w5 w6", "w7 w8 w9 w10 w11", "w0 w6 w11"]
    index = LexicalIndex(language=None)
    index.add(texts)
    for k in (1, 3, 10):
        index.search(queries, k)
    long_text = " ".join(["filler"] * 5000)
    index.add([long_text], ids=[len(texts)])
    fresh = LexicalIndex(language=None)
    fresh.add(texts + [long_text])
    for k in (1, 3, 10):
        assert_same_hits(index.search(queries, k), fresh.search(queries, k))


def test_concurrent_searches_after_each_add_see_fresh_scores(search_path):
    """Readers race to rebuild the norms after every add; each result must equal a fresh index's
    over the documents added by then (every text holds "common", so the hit count tells how many)."""
    rng = np.random.default_rng(7)
    texts = ["common " + t for t in _zipf_texts(rng, 150)]
    query = "common w0 w4 w11"
    index = LexicalIndex(language=None, num_threads=1)
    first_result: dict = {}  # hit count -> the first result seen with that many hits
    errors: list = []
    seen = threading.Condition()
    done = threading.Event()

    def reader():
        try:
            while not done.is_set():
                result = index.search(query, 1000)
                with seen:
                    first_result.setdefault(int((result.ids[0] >= 0).sum()), result)
                    seen.notify_all()
        except BaseException as error:  # noqa: BLE001 (reported by the main thread)
            errors.append(error)
            with seen:
                seen.notify_all()

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for t in readers:
        t.start()
    try:
        for i, text in enumerate(texts):
            index.add([text], ids=[i])
            with seen:  # the next add waits until some reader has searched this state (a hang guard, not a timing)
                assert seen.wait_for(lambda: i + 1 in first_result or errors, timeout=120)
    finally:
        done.set()
        for t in readers:
            t.join()
    assert not errors
    assert set(range(1, len(texts) + 1)) <= set(first_result)
    for count, result in first_result.items():
        fresh = LexicalIndex(language=None)
        if count:
            fresh.add(texts[:count])
        assert_same_hits(result, fresh.search(query, 1000))


def test_stop_word_queries_and_empty_documents_find_nothing():
    index = LexicalIndex()
    index.add(["", "the of and", "cat"], ids=["empty", "stops", "cat"])
    result = index.search(["the", "", "cat"], 3)
    assert result.ids[0].tolist() == [None, None, None] and np.isneginf(result.scores[0]).all()
    assert result.ids[1].tolist() == [None, None, None]
    assert result.ids[2].tolist()[0] == "cat"
    assert len(index) == 3


def test_filters_by_metadata_and_ids():
    index = LexicalIndex()
    index.add(["cat dog", "cat", "dog cat cat"], ids=["a", "b", "c"],
              metadata=[{"lang": "en"}, {"lang": "fr"}, {"lang": "en"}])
    assert set(index.search("cat", 5, filter={"lang": "en"}).ids[0].tolist()) == {"a", "c", None}
    assert index.search("cat", 5, filter=["b"]).ids[0].tolist()[0] == "b"
    assert index.search("cat", 5, filter={"lang": "de"}).ids[0].tolist()[0] is None
    assert index.get_metadata("b") == [{"lang": "fr"}]


def test_bad_input_names_the_problem():
    index = LexicalIndex()
    with pytest.raises(InvalidTypeError, match=r"texts\[1\] must be a str"):
        index.add(["fine", 3])
    with pytest.raises(InvalidTypeError, match="queries must be a str or a list"):
        index.search(42, 3)
    with pytest.raises(InvalidValueError, match="no Snowball stemmer for language 'klingon'"):
        LexicalIndex(language="klingon")
    with pytest.raises(InvalidValueError, match="k1 must be"):
        LexicalIndex(k1=-1)
    with pytest.raises(InvalidValueError, match="b must be"):
        LexicalIndex(b=1.5)
    index.add(["a cat"], ids=["x"])
    with pytest.raises(InvalidValueError, match="already in the index"):
        index.add(["a dog"], ids=["x"])
    with pytest.raises(UnknownIdError):
        index.remove(["nope"])
    with pytest.raises(InvalidValueError, match="k must be >= 1"):
        index.search("cat", 0)
    assert len(index) == 1 and index.search("cat", 1).ids[0].tolist() == ["x"]


def test_a_huge_document_is_indexed_whole():
    index = LexicalIndex()
    index.add(["needle " + "hay " * 1_000_000, "needle"], ids=["big", "small"])
    result = index.search("hay needle", 2)
    assert set(result.ids[0].tolist()) == {"big", "small"}


def test_languages_and_custom_stop_words():
    german = LexicalIndex(language="german", stopwords=["der", "die"])
    german.add(["Die Häuser der Stadt", "ein Haus"], ids=["a", "b"])
    assert german.analyzer.tokens("Die Häuser") == ["haus"]
    assert set(german.search("häuser", 2).ids[0].tolist()) == {"a", "b"}
    plain = LexicalIndex(language=None, stopwords=None)
    assert plain.analyzer.tokens("The Cats") == ["the", "cats"]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)
                | st.text(alphabet="aB_1 .,\t-Z9\u00e9", max_size=30), max_size=8))
def test_native_and_python_tokens_agree(texts):
    analyzer = Analyzer(language=None, stopwords=None)
    batch = analyzer.analyze(texts)
    got = [[batch.terms[c] for c in batch.codes[batch.bounds[i]:batch.bounds[i + 1]].tolist()]
           for i in range(len(texts))]
    assert got == [re.findall(r"(?u)\b\w\w+\b", t.lower()) for t in texts]


def test_save_load_round_trip(tmp_path):
    index = LexicalIndex(k1=1.2, b=0.6, stopwords=["cat"])
    index.add(["cat dog", "blue sky", "dog dog"], ids=["a", "b", "c"], metadata=[{"n": 1}, None, {"n": 3}])
    index.remove(["b"])
    index.save(tmp_path / "lex")
    loaded = load_index(tmp_path / "lex")
    assert isinstance(loaded, LexicalIndex) and (loaded.k1, loaded.b) == (1.2, 0.6)
    assert loaded.analyzer.stopwords == frozenset({"cat"})
    a, b = index.search(["dog", "sky"], 3), loaded.search(["dog", "sky"], 3)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.scores, b.scores)
    loaded.add(["more dog"], ids=["d"])
    assert "d" in loaded and loaded.get_metadata("c") == [{"n": 3}]


def _saved(tmp_path) -> Path:
    index = LexicalIndex()
    index.add(["cat dog", "blue sky", "dog dog fish"], ids=["a", "b", "c"])
    return index.save(tmp_path / "lex")


@pytest.mark.parametrize("damage", ["docs_out_of_range", "offsets_backwards", "lengths_mismatch", "terms_not_list",
                                    "tfs_zero", "config_language", "docs_dtype"])
def test_crafted_files_are_index_format_errors(tmp_path, damage):
    path = _saved(tmp_path)
    if damage == "docs_out_of_range":
        docs = np.load(path / "docs.npy")
        docs[0] = 10**6
        np.save(path / "docs.npy", docs)
    elif damage == "offsets_backwards":
        offsets = np.load(path / "offsets.npy")
        offsets[1], offsets[2] = offsets[2], offsets[1]
        np.save(path / "offsets.npy", offsets)
    elif damage == "lengths_mismatch":
        lengths = np.load(path / "doc_lengths.npy")
        lengths[0] += 1
        np.save(path / "doc_lengths.npy", lengths)
    elif damage == "terms_not_list":
        (path / "terms.json").write_text('{"cat": 0}')
    elif damage == "tfs_zero":
        tfs = np.load(path / "tfs.npy")
        tfs[0] = 0
        np.save(path / "tfs.npy", tfs)
    elif damage == "config_language":
        manifest = json.loads((path / "manifest.json").read_text())
        manifest["config"]["language"] = "klingon"
        (path / "manifest.json").write_text(json.dumps(manifest))
    elif damage == "docs_dtype":
        np.save(path / "docs.npy", np.load(path / "docs.npy").astype(np.int64))
    with pytest.raises(IndexFormatError):
        load_index(path, verify=False)
    if damage != "config_language":  # the manifest itself has no checksum entry; the files do
        with pytest.raises(IndexFormatError):
            load_index(path)


@pytest.mark.parametrize("maxscore", [False, True])
def test_kernel_refuses_postings_outside_the_index(maxscore):
    bounds = np.full(1, np.nan, np.float32) if maxscore else None
    segment = (np.array([0], np.int32), np.array([0, 2], np.int64), np.array([0, 99], np.int32),
               np.array([1, 1], np.float32), bounds)
    scores, slots = np.empty((1, 2), np.float32), np.empty((1, 2), np.int64)
    with pytest.raises(ValueError, match="outside the index"):
        _kernels.bm25_topk([segment], np.array([0], np.int32), np.array([1], np.float32), np.array([0, 1], np.int64),
                           np.ones(3, np.float32), None, 2, scores, slots, 1)
    bad_offsets = (np.array([0], np.int32), np.array([0, 5], np.int64), np.array([0, 1], np.int32),
                   np.array([1, 1], np.float32), bounds)
    with pytest.raises(ValueError, match="offsets out of range"):
        _kernels.bm25_topk([bad_offsets], np.array([0], np.int32), np.array([1], np.float32),
                           np.array([0, 1], np.int64), np.ones(3, np.float32), None, 2, scores, slots, 1)


class _Arguments:
    def __init__(self, arguments: tuple) -> None:
        self.arguments = arguments

    def kernel_arguments(self, maxscore: bool) -> tuple:
        return self.arguments


def _search_both_ways(index: LexicalIndex, queries: list[str], k: int, allowed=None):
    """The kernel's MaxScore path (bound caches given) and its term-at-a-time path (none), on the
    same postings and queries."""
    q = index._as_queries(queries)
    index._fresh_norm()  # as search() would: the rebuild resets the real segments' bounds, not the stand-ins'
    out = []
    for maxscore in (True, False):
        segments = [seg.kernel_arguments(maxscore) for seg in index._segments]
        original = index._segments
        try:
            index._segments = [_Arguments(a) for a in segments]
            out.append(index._search_slots(q, k, allowed, {}))
        finally:
            index._segments = original
    return out


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6), n_docs=st.integers(1, 300), k=st.integers(1, 17), batches=st.integers(1, 4),
       filtered=st.booleans())
def test_maxscore_and_term_at_a_time_agree(seed, n_docs, k, batches, filtered):
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(60)]
    p = 1.0 / np.arange(1, 61)
    p /= p.sum()
    texts = [" ".join(rng.choice(vocab, size=rng.integers(0, 30), p=p)) for _ in range(n_docs)]
    index = LexicalIndex(language=None)
    for part in np.array_split(np.arange(n_docs), batches):  # several segments
        if part.size:
            index.add([texts[i] for i in part], ids=part.tolist())
    queries = [" ".join(rng.choice(vocab, size=rng.integers(1, 8), p=p)) for _ in range(9)]
    allowed = (rng.random(index._idmap.slot_count) < 0.5) if filtered else None
    (s1, i1), (s2, i2) = _search_both_ways(index, queries, k, allowed)
    np.testing.assert_allclose(s1, s2, rtol=1e-5)
    # ids equal except where two scores tie within rounding
    differs = i1 != i2
    assert np.allclose(s1[differs], s2[differs], rtol=1e-5)


def test_searches_during_adds_see_whole_batches():
    index = LexicalIndex()
    index.add(["seed text"], ids=["seed"])
    errors = []

    def writer():
        for i in range(40):
            index.add([f"cat number{i}", f"cat other{i}"], ids=[f"a{i}", f"b{i}"])

    def reader():
        try:
            for _ in range(80):
                ids = [i for i in index.search("cat", 200).ids[0].tolist() if i is not None]
                # both documents of an add arrive together
                assert sorted(i[1:] for i in ids if i[0] == "a") == sorted(i[1:] for i in ids if i[0] == "b")
        except AssertionError as error:
            errors.append(error)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(index) == 81


@pytest.mark.skipif(not (DATA / "scifact").is_dir(), reason=f"SciFact not found at {DATA / 'scifact'}")
def test_equals_bm25s_on_scifact():
    bm25s = pytest.importorskip("bm25s", reason="bm25s (the reference engine) is not installed")
    stemmer = pytest.importorskip("Stemmer").Stemmer("english")
    corpus = [json.loads(line) for line in (DATA / "scifact" / "corpus.jsonl").read_text().splitlines()][:1500]
    queries = [json.loads(line)["text"] for line in (DATA / "scifact" / "queries.jsonl").read_text().splitlines()][:100]
    texts = [(d["title"] + " " + d["text"]).strip() for d in corpus]
    assert set(bm25s.stopwords.STOPWORDS_EN) == ENGLISH_STOPWORDS
    index = LexicalIndex()
    index.add(texts)
    model = bm25s.BM25()
    model.index(bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False)
    docs, scores = model.retrieve(bm25s.tokenize(queries, stopwords="en", stemmer=stemmer, show_progress=False),
                                  k=10, show_progress=False, n_threads=1)
    ours = index.search(queries, 10)
    np.testing.assert_allclose(ours.scores, scores, rtol=1e-5, atol=1e-5)
    same = np.mean([set(ours.ids[i].tolist()) == set(docs[i].tolist()) for i in range(len(queries))])
    assert same >= 0.98  # ties at the 10th place may break differently


def test_a_vector_index_manifest_with_null_dim_is_refused(tmp_path):
    from embedrank.index import FlatIndex

    index = FlatIndex(4)
    index.add(np.ones((2, 4), np.float32))
    path = index.save(tmp_path / "flat")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["dim"] = None
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError):
        load_index(path)


def test_large_index_takes_the_maxscore_path_with_the_same_results():
    from embedrank.index.lexical import MAXSCORE_MIN_SLOTS

    rng = np.random.default_rng(11)
    vocab = np.array([f"t{i}" for i in range(3000)], dtype=object)
    p = 1.0 / np.arange(1, 3001) ** 1.1
    p /= p.sum()
    n = MAXSCORE_MIN_SLOTS + 1000
    words = rng.choice(3000, size=n * 12, p=p).reshape(n, 12)
    index = LexicalIndex(language=None)
    index.add([" ".join(vocab[row]) for row in words])
    queries = [" ".join(vocab[rng.choice(3000, size=4, p=p)]) for _ in range(20)]
    public = index.search(queries, 10)
    (_, _), (taat_scores, taat_slots) = _search_both_ways(index, queries, 10)
    np.testing.assert_allclose(public.scores, taat_scores, rtol=1e-5)
    assert (public.ids == taat_slots).mean() > 0.99  # only near-ties may swap
