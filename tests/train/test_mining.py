"""Hard-negative mining on crafted vectors (a fake encoder): ranges, margins, the reranker filter."""

from __future__ import annotations

import numpy as np
import pytest

from embedrank.train.mining import mine_hard_negatives


class FakeEncoder:
    """Returns fixed vectors: queries by text, documents by text."""

    def __init__(self, query_vectors: dict, doc_vectors: dict):
        self.query_vectors, self.doc_vectors = query_vectors, doc_vectors
        self.calls = []

    def encode_queries(self, texts):
        self.calls.append(("queries", len(texts)))
        return np.array([self.query_vectors[t] for t in texts], dtype=np.float32)

    def encode_documents(self, docs):
        self.calls.append(("documents", len(docs)))
        return np.array([self.doc_vectors[d] for d in docs], dtype=np.float32)


def _setup():
    # One query along e0. Doc i has cosine scores[i] with it (unit vectors in the e0/e1 plane).
    scores = {"pos": 0.80, "d0": 0.95, "d1": 0.85, "d2": 0.78, "d3": 0.75, "d4": 0.70, "d5": 0.60, "d6": 0.50,
              "d7": 0.40, "d8": 0.30, "d9": 0.20}
    docs = {name: f"text of {name}" for name in scores}
    vectors = {f"text of {n}": [s, float(np.sqrt(1 - s * s))] for n, s in scores.items()}
    encoder = FakeEncoder({"query": [1.0, 0.0]}, vectors)
    return {"q": "query"}, docs, {"q": ["pos"]}, encoder


def test_range_skips_top_ranks_and_excludes_positives():
    queries, corpus, positives, encoder = _setup()
    mined = mine_hard_negatives(queries, corpus, positives, encoder, n=3, range_min=2, range_max=6)
    # ranking without the positive: d0 d1 d2 d3 d4 d5 ...; ranks 2..5 -> d2 d3 d4 d5, first 3 kept
    assert mined.negatives == {"q": ["d2", "d3", "d4"]}
    assert mined.scores["q"] == pytest.approx([0.78, 0.75, 0.70], abs=1e-6)
    assert mined.considered == 4 and mined.dropped == 0 and mined.short_queries == []


def test_margin_drops_candidates_close_to_the_positive():
    queries, corpus, positives, encoder = _setup()
    mined = mine_hard_negatives(queries, corpus, positives, encoder, n=10, range_min=0, range_max=10, margin=0.05)
    # kept: score <= 0.80 - 0.05 = 0.75 -> d3 (0.75) onwards; d0, d1, d2 dropped
    assert mined.negatives["q"] == ["d3", "d4", "d5", "d6", "d7", "d8", "d9"]
    assert mined.dropped_margin == 3 and mined.considered == 10
    assert mined.short_queries == ["q"]
    assert mined.summary()["dropped_as_false_negatives"] == 3


def test_relative_margin():
    queries, corpus, positives, encoder = _setup()
    mined = mine_hard_negatives(queries, corpus, positives, encoder, n=2, range_max=10, relative_margin=0.2)
    # kept: score <= 0.80 * 0.8 = 0.64
    assert mined.negatives["q"] == ["d5", "d6"]
    assert mined.dropped_margin == 5


def test_reranker_filters_likely_false_negatives():
    queries, corpus, positives, encoder = _setup()

    class Reranker:
        def predict(self, pairs):
            # the positive scores 5; d6 looks as relevant as the positive, d7 more so
            table = {"text of pos": 5.0, "text of d6": 5.0, "text of d7": 9.0}
            return [table.get(doc, 0.0) for _, doc in pairs]

    mined = mine_hard_negatives(queries, corpus, positives, encoder, n=3, range_min=5, range_max=10,
                                reranker=Reranker())
    assert mined.negatives["q"] == ["d5", "d8", "d9"]
    assert mined.dropped_reranker == 2 and mined.dropped_margin == 0


def test_random_sampling_is_seeded():
    queries, corpus, positives, encoder = _setup()
    a = mine_hard_negatives(queries, corpus, positives, encoder, n=3, range_max=10, sampling="random", seed=1)
    b = mine_hard_negatives(queries, corpus, positives, encoder, n=3, range_max=10, sampling="random", seed=1)
    assert a.negatives == b.negatives and len(a.negatives["q"]) == 3
    assert set(a.negatives["q"]) <= set(corpus) - {"pos"}


def test_qrels_as_positives_and_precomputed_corpus_vectors():
    queries, corpus, _, encoder = _setup()
    vectors = encoder.encode_documents(list(corpus.values()))
    encoder.calls.clear()
    mined = mine_hard_negatives(queries, corpus, {"q": {"pos": 1, "d0": 0}}, encoder, n=1,
                                corpus_embeddings=vectors)
    assert mined.negatives["q"] == ["d0"]  # grade 0 is not a positive
    assert encoder.calls == [("queries", 1)]


def test_with_the_real_encoder(minilm_export):
    import embedrank

    encoder = embedrank.Encoder.load(minilm_export)
    corpus = {"a": "Cats are small furry pets.", "b": "Dogs are loyal animals kept as pets.",
              "c": "The stock market fell today.", "d": "Interest rates were raised by the bank."}
    mined = mine_hard_negatives({"q": "which animals make good pets"}, corpus, {"q": ["a"]}, encoder, n=1)
    assert mined.negatives == {"q": ["b"]}


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 0}, "n must be an integer >= 1"),
    ({"range_min": -1}, "range_min must be"),
    ({"range_min": 5, "range_max": 5}, "range_max must be greater"),
    ({"margin": -0.1}, "margin must be"),
    ({"margin": float("nan")}, "margin must be a finite"),
    ({"relative_margin": 1.0}, "relative_margin must be"),
    ({"sampling": "best"}, "sampling must be"),
])
def test_bad_arguments(kwargs, message):
    queries, corpus, positives, encoder = _setup()
    with pytest.raises(ValueError, match=message):
        mine_hard_negatives(queries, corpus, positives, encoder, **kwargs)


def test_bad_data():
    queries, corpus, positives, encoder = _setup()
    with pytest.raises(ValueError, match="queries is empty"):
        mine_hard_negatives({}, corpus, {}, encoder)
    with pytest.raises(ValueError, match="corpus is empty"):
        mine_hard_negatives(queries, {}, positives, encoder)
    with pytest.raises(ValueError, match="not in the corpus: \\['nope'\\]"):
        mine_hard_negatives(queries, corpus, {"q": ["nope"]}, encoder)
    with pytest.raises(ValueError, match="query 'q' has no positives"):
        mine_hard_negatives(queries, corpus, {}, encoder)
    with pytest.raises(ValueError, match="not in queries"):
        mine_hard_negatives(queries, corpus, {"q": ["pos"], "zz": ["pos"]}, encoder)
    with pytest.raises(TypeError, match="predict"):
        mine_hard_negatives(queries, corpus, positives, encoder, reranker=object())
    with pytest.raises(ValueError, match="corpus_embeddings must be"):
        mine_hard_negatives(queries, corpus, positives, encoder, corpus_embeddings=np.zeros((3, 2)))
