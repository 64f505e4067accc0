"""embedrank.CrossEncoder on a MiniLM cross-encoder with a fresh seeded head (see cross_encoder_fixtures)."""

from __future__ import annotations

import json
import os
import shutil
import threading
import warnings

import numpy as np
import pytest

import embedrank
from embedrank.models.cross_encoder import CrossEncoder, sigmoid
from embedrank.models.encoder import Encoder, TruncationWarning
from embedrank.models.folder import ModelFolderError
from tests.models.cross_encoder_fixtures import cross_encoder_folders
from tests.conftest import SHARED_DATA

LONG_DOC = " ".join(f"sentence {i} of a long passage about retrieval and ranking." for i in range(120))  # > 512 tokens
PAIRS = [
    ("what is photosynthesis", "Photosynthesis converts light energy into chemical energy stored in glucose."),
    ("capital of france", "Paris is the capital and most populous city of France."),
    ("capital of france", "The Treaty of Westphalia (1648) ended the Thirty Years' War."),
    ("", ""),
    ("empty document", ""),
    ("", "an empty query"),
    ("Ünïcödé façade, Tōkyō 東京", "Москва, Αθήνα, القاهرة. Emoji 🙂 and numbers 3.14159."),
    ("how do transformers rank passages", LONG_DOC),
    ("x", "y " * 30),
]
# Rank correlation and logit error of the dynamic-int8 variant against fp32 (measured about
# 0.99 and 0.2 logits on this head; int8 is not verified to 1e-4 at export, only recorded).
INT8_MIN_SPEARMAN = 0.95
INT8_MAX_LOGIT_DIFF = 0.5


@pytest.fixture(scope="module")
def folders(tmp_path_factory, minilm_source):
    return cross_encoder_folders(tmp_path_factory, minilm_source)


@pytest.fixture(scope="module")
def cross_encoder(folders):
    return CrossEncoder.load(folders[1])


@pytest.fixture(scope="module")
def st_model(folders):
    pytest.importorskip("sentence_transformers", reason="needs sentence-transformers (the bench extra)")
    from sentence_transformers import CrossEncoder as STCrossEncoder

    return STCrossEncoder(str(folders[0]), device="cpu")


@pytest.fixture(scope="module")
def scifact_pairs():
    """Real query/document pairs: 4 SciFact test queries x 10 documents (title + the text's first
    600 characters, so the torch reference stays quick on 2 cores)."""

    data = SHARED_DATA / "scifact"
    if not (data / "corpus.jsonl").is_file():
        pytest.skip(f"SciFact not found at {data}")
    corpus, queries, qrels = embedrank.load_beir(data, "test")
    doc_ids = list(corpus)[:10]
    return [(queries[q], f"{corpus[d]['title']} {corpus[d]['text'][:600]}") for q in list(qrels)[:4] for d in doc_ids]


def _st_scores(st_model, pairs, raw: bool) -> np.ndarray:
    import torch

    return st_model.predict(pairs, batch_size=4, activation_fn=torch.nn.Identity() if raw else None)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ranks_a = np.argsort(np.argsort(a)).astype(np.float64)
    ranks_b = np.argsort(np.argsort(b)).astype(np.float64)
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


def test_model_facts(cross_encoder):
    assert cross_encoder.num_labels == 1
    assert cross_encoder.max_seq_length == 512  # tokenizer_config's model_max_length
    assert cross_encoder.providers == ["CPUExecutionProvider"]


@pytest.mark.parametrize("variant", ["fp32", "opt"])
def test_scores_equal_sentence_transformers(folders, st_model, variant):
    model = CrossEncoder.load(folders[1], variant=variant)
    with pytest.warns(TruncationWarning):
        logits = model.predict(PAIRS, activation=None)
    with pytest.warns(TruncationWarning):
        probabilities = model.predict(PAIRS)
    reference_logits = _st_scores(st_model, PAIRS, raw=True)
    reference_probabilities = _st_scores(st_model, PAIRS, raw=False)
    assert logits.dtype == np.float32 and logits.shape == (len(PAIRS),)
    assert np.abs(logits - reference_logits).max() <= 1e-3
    assert np.abs(probabilities - reference_probabilities).max() <= 1e-3
    assert logits.std() > 0.05  # the head tells pairs apart, so the comparison means something


def test_scores_equal_sentence_transformers_on_scifact(cross_encoder, st_model, scifact_pairs):
    ours = cross_encoder.predict(scifact_pairs, activation=None)
    reference = _st_scores(st_model, scifact_pairs, raw=True)
    assert np.abs(ours - reference).max() <= 1e-3


def test_int8_variant_ranks_like_fp32(folders, cross_encoder, scifact_pairs):
    int8 = CrossEncoder.load(folders[1], variant="int8")
    fp32_scores = cross_encoder.predict(scifact_pairs, activation=None)
    int8_scores = int8.predict(scifact_pairs, activation=None)
    assert _spearman(fp32_scores, int8_scores) >= INT8_MIN_SPEARMAN
    assert np.abs(fp32_scores - int8_scores).max() <= INT8_MAX_LOGIT_DIFF
    # a cross-encoder is quantized once, its FFN down-projections fp32 (no cosine to judge a logit by)
    quantization = json.loads((folders[1] / "embedrank.json").read_text())["export"]["quantization"]
    assert quantization["n_kept_fp32"] == 6 and [a["n_kept_fp32"] for a in quantization["attempts"]] == [6]


def test_same_pair_same_score_whatever_the_batch_and_order(cross_encoder, scifact_pairs):
    pairs = scifact_pairs[:40]
    reference = cross_encoder.predict(pairs, batch_size=1)
    for kwargs in ({"batch_size": 3}, {"batch_size": 32}, {"batch_size": 7, "max_tokens_per_batch": 1000},
                   {"batch_size": 32, "max_tokens_per_batch": None}, {"batch_size": 32, "max_tokens_per_batch": "auto"}):
        assert np.abs(cross_encoder.predict(pairs, **kwargs) - reference).max() <= 1e-5
    permutation = np.random.default_rng(0).permutation(len(pairs))
    shuffled = cross_encoder.predict([pairs[i] for i in permutation], batch_size=8)
    assert np.abs(shuffled - reference[permutation]).max() <= 1e-5


def test_padding_to_a_multiple_leaves_scores_unchanged(folders, cross_encoder, scifact_pairs, monkeypatch):
    # what the CUDA provider gets (sessions.CUDA_PAD_TO_MULTIPLE_OF), here on the CPU
    from embedrank.runtime import sessions
    pairs = scifact_pairs[:20]
    reference = cross_encoder.predict(pairs, batch_size=4)
    monkeypatch.setattr(sessions, "pad_multiple", lambda provider: 32)  # read when the session opens
    padded = CrossEncoder.load(folders[1])
    assert padded._pad_multiple == 32
    assert np.abs(padded.predict(pairs, batch_size=4) - reference).max() <= 1e-5


def test_default_token_budget_on_cpu(cross_encoder, scifact_pairs, monkeypatch):
    from embedrank.runtime.sessions import CPU_MAX_TOKENS_PER_BATCH

    shapes = []
    real = cross_encoder._run_batch

    def spy(encodings):
        shapes.append((len(encodings), max(len(e.ids) for e in encodings)))
        return real(encodings)

    monkeypatch.setattr(cross_encoder, "_run_batch", spy)
    pairs = scifact_pairs[:40]
    default = cross_encoder.predict(pairs)
    assert cross_encoder.providers[0] == "CPUExecutionProvider"
    assert all(count * longest <= CPU_MAX_TOKENS_PER_BATCH or count == 1 for count, longest in shapes)
    assert sum(count for count, _ in shapes) == len(pairs) and len(shapes) > 2
    shapes.clear()
    uncapped = cross_encoder.predict(pairs, max_tokens_per_batch=None)
    assert [count for count, _ in shapes] == [32, 8]
    assert np.abs(uncapped - default).max() <= 1e-5


def _run_ids(model: CrossEncoder, ids: list[int], type_ids: list[int]) -> float:
    """The raw logit of one hand-tokenized sequence."""
    feeds = {"input_ids": np.array([ids], dtype=np.int64), "attention_mask": np.ones((1, len(ids)), dtype=np.int64),
             "token_type_ids": np.array([type_ids], dtype=np.int64)}
    names = [i.name for i in model.session.get_inputs()]
    return float(model.session.run(None, {n: feeds[n] for n in names})[0][0, 0])


def _pieces(model: CrossEncoder, text: str) -> list[int]:
    return model.tokenizer.tokenizer.encode(text, add_special_tokens=False).ids


def test_only_the_document_is_truncated(cross_encoder):
    query = "how do transformers rank passages " * 10  # 50 tokens: longest-first would cut it too
    tok = cross_encoder.tokenizer.tokenizer
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    q, d = _pieces(cross_encoder, query), _pieces(cross_encoder, LONG_DOC)
    assert len(q) + len(d) + 3 > 512
    kept = 512 - 3 - len(q)
    ids = [cls_id, *q, sep_id, *d[:kept], sep_id]
    types = [0] * (len(q) + 2) + [1] * (kept + 1)
    expected = _run_ids(cross_encoder, ids, types)
    with pytest.warns(TruncationWarning, match="1 of 1 pairs"):
        got = cross_encoder.predict([(query, LONG_DOC)], activation=None)[0]
    assert abs(got - expected) <= 1e-4
    # and the same as the pair with the document cut by hand to the kept tokens
    cut_end = tok.encode(LONG_DOC, add_special_tokens=False).offsets[kept - 1][1]
    assert abs(cross_encoder.predict([(query, LONG_DOC[:cut_end])], activation=None)[0] - got) <= 1e-5


def test_truncation_is_warned_once_per_call_with_the_count(cross_encoder):
    pairs = [("a", LONG_DOC), ("b", "short"), ("c", LONG_DOC + " more"), ("d", "")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cross_encoder.predict(pairs, batch_size=1)
    truncation = [w for w in caught if issubclass(w.category, TruncationWarning)]
    assert len(truncation) == 1 and "2 of 4 pairs" in str(truncation[0].message)
    assert "document" in str(truncation[0].message)
    cross_encoder.predict([("a", "short"), ("b", "")])  # no warning: filterwarnings=error would fail here


def test_query_that_cannot_fit_is_cut_longest_first_with_a_warning(cross_encoder):
    query = "a very long question " * 200
    doc = "short answer text"
    tok = cross_encoder.tokenizer.tokenizer
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    q, d = _pieces(cross_encoder, query), _pieces(cross_encoder, doc)
    kept_q = 512 - 3 - len(d)  # longest first: the long query loses tokens, the short document stays
    expected = _run_ids(cross_encoder, [cls_id, *q[:kept_q], sep_id, *d, sep_id],
                        [0] * (kept_q + 2) + [1] * (len(d) + 1))
    with pytest.warns(TruncationWarning, match=r"1 pair\(s\) had a query too long"):
        got = cross_encoder.predict([(query, doc), ("fits", "fine")], activation=None)
    assert abs(got[0] - expected) <= 1e-4
    assert np.isfinite(got).all()


def test_rank_orders_best_first_with_ties_to_the_lower_index(cross_encoder):
    query = "capital of france"
    docs = ["The Treaty of Westphalia ended a war.", "Paris is the capital of France.", "The Treaty of Westphalia ended a war.",
            "", "Paris is the capital of France."]
    scores = cross_encoder.predict([(query, d) for d in docs])
    ranked = cross_encoder.rank(query, docs)
    assert [i for i, _ in ranked] == sorted(range(len(docs)), key=lambda i: (-scores[i], i))
    assert [s for _, s in ranked] == pytest.approx(sorted(scores.tolist(), reverse=True), abs=1e-6)
    positions = {i: p for p, (i, _) in enumerate(ranked)}
    assert positions[1] < positions[4] and positions[0] < positions[2]  # equal texts: lower index first
    assert cross_encoder.rank(query, docs, top_k=2) == ranked[:2]
    assert cross_encoder.rank(query, docs, top_k=50) == ranked
    raw = cross_encoder.rank(query, docs, activation=None)
    assert [i for i, _ in raw] == [i for i, _ in ranked]
    assert raw[0][1] == pytest.approx(float(np.log(ranked[0][1] / (1 - ranked[0][1]))), abs=1e-4)


def test_empty_inputs(cross_encoder):
    scores = cross_encoder.predict([])
    assert scores.dtype == np.float32 and scores.shape == (0,)
    with pytest.raises(ValueError, match="docs is empty"):
        cross_encoder.rank("query", [])


@pytest.mark.parametrize("bad, error, match", [
    (None, TypeError, "got NoneType"),
    ("query", TypeError, "got str"),
    (("query", "document"), TypeError, r"pairs\[0\].*pass \[\(query, document\)\]"),
    ([("query",)], TypeError, r"pairs\[0\].*tuple of length 1"),
    ([("q", "d"), ("q", "d", "e")], TypeError, r"pairs\[1\].*length 3"),
    ([("q", 1)], TypeError, r"pairs\[0\]: the document must be a str, got int"),
    ([(None, "d")], TypeError, r"pairs\[0\]: the query must be a str, got NoneType"),
    ([b"qd"], TypeError, r"pairs\[0\]"),
    ({"q": "d"}, TypeError, "got dict"),
    (5, TypeError, "got int"),
])
def test_bad_pairs(cross_encoder, bad, error, match):
    with pytest.raises(error, match=match):
        cross_encoder.predict(bad)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"batch_size": -3}, ValueError, "batch_size"),
    ({"batch_size": 2.5}, ValueError, "batch_size"),
    ({"batch_size": True}, ValueError, "batch_size"),
    ({"activation": "softmax"}, ValueError, "unknown activation 'softmax'"),
    ({"activation": "Sigmoid"}, ValueError, "unknown activation"),
    ({"max_tokens_per_batch": 0}, ValueError, "max_tokens_per_batch"),
    ({"max_tokens_per_batch": "AUTO"}, ValueError, "max_tokens_per_batch"),
    ({"max_tokens_per_batch": 1.5}, ValueError, "max_tokens_per_batch"),
])
def test_bad_predict_settings(cross_encoder, kwargs, error, match):
    with pytest.raises(error, match=match):
        cross_encoder.predict([("q", "d")], **kwargs)


@pytest.mark.parametrize("args, kwargs, error, match", [
    ((None, ["d"]), {}, TypeError, "query must be a str"),
    ((["q"], ["d"]), {}, TypeError, "query must be a str"),
    (("q", "one document"), {}, TypeError, "pass \\[document\\]"),
    (("q", ["d", 3]), {}, TypeError, r"docs\[1\] must be a str"),
    (("q", None), {}, TypeError, "docs"),
    (("q", ["d"]), {"top_k": 0}, ValueError, "top_k"),
    (("q", ["d"]), {"top_k": -1}, ValueError, "top_k"),
    (("q", ["d"]), {"top_k": 1.0}, ValueError, "top_k"),
    (("q", ["d"]), {"top_k": False}, ValueError, "top_k"),
    (("q", ["d"]), {"batch_size": 0}, ValueError, "batch_size"),
    (("q", ["d"]), {"activation": "tanh"}, ValueError, "activation"),
])
def test_bad_rank_arguments(cross_encoder, args, kwargs, error, match):
    with pytest.raises(error, match=match):
        cross_encoder.rank(*args, **kwargs)


def test_wrong_kind_of_folder_is_refused_both_ways(folders, tmp_path):
    bi_encoder = tmp_path / "bi-encoder"  # the same files, embedrank.json saying "bi-encoder"
    bi_encoder.mkdir()
    for name in ("tokenizer.json", "model.onnx"):
        os.link(folders[1] / name, bi_encoder / name)  # hard links: symlinks out of a model folder are refused
    config = json.loads((folders[1] / "embedrank.json").read_text())
    (bi_encoder / "embedrank.json").write_text(json.dumps({**config, "kind": "bi-encoder"}))
    with pytest.raises(ValueError, match="bi-encoder.*use Encoder"):
        CrossEncoder.load(bi_encoder)
    with pytest.raises(ValueError, match="cross-encoder.*use CrossEncoder"):
        Encoder.load(folders[1])


def test_bad_model_folders(folders, tmp_path):
    with pytest.raises(ModelFolderError, match="not found"):
        CrossEncoder.load(tmp_path / "missing")
    with pytest.raises(ModelFolderError, match="embedrank.json"):
        CrossEncoder.load(folders[0])  # the Hugging Face folder, not an export
    with pytest.raises(ValueError, match="unknown variant"):
        CrossEncoder.load(folders[1], variant="bf8")
    with pytest.raises(ModelFolderError, match=r"variant 'fp16' is not in .*model_fp16\.onnx missing; present: fp32"):
        CrossEncoder.load(folders[1], variant="fp16")  # exported without fp16=True
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("embedrank.json", "tokenizer.json", "model.onnx"):
        shutil.copyfile(folders[1] / name, partial / name)
    with pytest.raises(ModelFolderError, match="model_int8.onnx"):
        CrossEncoder.load(partial, variant="int8")
    with pytest.raises(ValueError, match="num_threads"):
        CrossEncoder.load(folders[1], num_threads=0)


def test_threads_and_provider_names(folders, cross_encoder):
    single = CrossEncoder.load(folders[1], providers="cpu", num_threads=1)
    pairs = PAIRS[:3]
    assert np.abs(single.predict(pairs) - cross_encoder.predict(pairs)).max() <= 1e-5


def test_two_labels_give_a_score_per_label(tmp_path_factory, minilm_source):
    hf, export = cross_encoder_folders(tmp_path_factory, minilm_source, num_labels=2, full=False)
    pytest.importorskip("sentence_transformers", reason="needs sentence-transformers (the bench extra)")
    import torch
    from sentence_transformers import CrossEncoder as STCrossEncoder

    model = CrossEncoder.load(export)
    assert model.num_labels == 2
    pairs = PAIRS[:3]
    logits = model.predict(pairs, activation=None)
    assert logits.shape == (3, 2) and logits.dtype == np.float32
    reference = STCrossEncoder(str(hf), device="cpu").predict(pairs, activation_fn=torch.nn.Identity())
    assert np.abs(logits - reference).max() <= 1e-3
    assert np.allclose(model.predict(pairs), sigmoid(logits), atol=1e-6)
    assert model.predict([]).shape == (0, 2)
    with pytest.raises(ValueError, match="num_labels=2"):
        model.rank("q", ["d"])


def test_sigmoid_is_stable_for_large_logits():
    values = sigmoid(np.array([-1000.0, -20.0, 0.0, 20.0, 1000.0]))
    assert values.dtype == np.float32
    assert values[0] == 0.0 and values[-1] == 1.0 and values[2] == 0.5
    assert np.all(np.diff(values) >= 0)


def test_public_name():
    assert embedrank.CrossEncoder is CrossEncoder


def test_one_cross_encoder_shared_by_threads_gives_single_threaded_scores(cross_encoder):
    """Both truncation paths (document only, and longest first for a query too long to fit)
    from several threads at once, against the scores of one thread."""
    n_threads, rounds = 6, 4
    pairs = [[(f"thread {t} query {i}", f"thread {t} " + "a passage about ranking " * (30 + 60 * i)) for i in range(3)]
             + [("question about retrieval " * (130 + 20 * t), "short answer"), ("fits", "fine")]
             for t in range(n_threads)]
    results, errors = [None] * n_threads, []
    start = threading.Barrier(n_threads)

    def body(t):
        try:
            start.wait()
            results[t] = [cross_encoder.predict(pairs[t], batch_size=2, activation=None) for _ in range(rounds)]
        except Exception as error:  # reported by the test thread
            errors.append(repr(error))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        expected = [cross_encoder.predict(p, activation=None) for p in pairs]
        threads = [threading.Thread(target=body, args=(t,)) for t in range(n_threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors, errors[:3]
    for t in range(n_threads):
        for got in results[t]:
            np.testing.assert_allclose(got, expected[t], atol=1e-5)


def test_long_pairs_are_cut_before_tokenization_with_the_same_result(cross_encoder):
    """A 1 MB document and a query that cannot fit give the scores and counts of the whole texts."""
    huge_doc = "relevance of a passage to a question " * 30000
    long_query = "a very long question " * 200
    with pytest.warns(TruncationWarning, match=r"1 of 2 pairs.*document truncated; 1 pair\(s\) had a query too long"):
        got = cross_encoder.predict([("q", huge_doc), (long_query, huge_doc)], activation=None)
    with pytest.warns(TruncationWarning):
        expected = cross_encoder.predict([("q", huge_doc[:20000]), (long_query, huge_doc[:20000])], activation=None)
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("changes, match", [
    ({"num_labels": 2}, "num_labels is 2 but model.onnx gives 1 values per text"),
    ({"num_labels": 1.5}, "'num_labels' must be a positive integer"),
])
def test_wrong_num_labels_is_refused_at_load(folders, tmp_path, changes, match):
    folder = tmp_path / "m"
    folder.mkdir()
    for name in ("tokenizer.json", "model.onnx"):
        os.link(folders[1] / name, folder / name)
    config = json.loads((folders[1] / "embedrank.json").read_text())
    (folder / "embedrank.json").write_text(json.dumps({**config, **changes}))
    with pytest.raises(ModelFolderError, match=match):
        CrossEncoder.load(folder)


def test_lone_surrogate_is_a_clear_error(cross_encoder):
    with pytest.raises(ValueError, match=r"the document of pairs\[1\] cannot be tokenized"):
        cross_encoder.predict([("q", "fine"), ("q", "bad \ud800")])
