"""Choosing the fusion weight: crafted scores where the cross-encoder, the first stage or a mix wins."""

from __future__ import annotations

import numpy as np
import pytest

from embedrank.retrieval.fusion import FUSION_WEIGHTS, choose_first_stage_weight, fuse

QRELS = {"q1": {"a": 1}, "q2": {"x": 1}}


def test_fuse_adds_the_weighted_first_stage_score():
    assert fuse({"q": {"a": 0.5, "b": 0.25}}, {"q": {"a": 1.0, "b": -2.0}}, 4.0) == {"q": {"a": 3.0, "b": -1.0}}


def test_cross_encoder_alone_wins_when_it_is_right_and_the_first_stage_wrong():
    first = {"q1": {"a": 0.1, "b": 0.9}, "q2": {"x": 0.2, "y": 0.8}}
    logits = {"q1": {"a": 5.0, "b": 0.0}, "q2": {"x": 5.0, "y": 0.0}}
    weight, report = choose_first_stage_weight(first, logits, QRELS)
    assert weight == 0.0  # ties to the smallest weight; 0 and 2.5 both still rank a and x first
    assert report["fused_ndcg@10"]["0.0"] == 1.0 and report["first_stage_ndcg@10"] < 1.0
    assert report["fused_ndcg@10"]["80.0"] < 1.0 and report["queries"] == 2


def test_the_first_stage_wins_when_the_cross_encoder_is_noise():
    first = {"q1": {"a": 0.9, "b": 0.1}, "q2": {"x": 0.9, "y": 0.2}}
    logits = {"q1": {"a": 0.0, "b": 3.0}, "q2": {"x": 0.0, "y": 3.0}}
    weight, report = choose_first_stage_weight(first, logits, QRELS)
    assert weight == 5.0  # the smallest weight with 0.8 x w > 3 (both queries right)
    assert report["fused_ndcg@10"][str(weight)] == 1.0 == report["first_stage_ndcg@10"]


def test_a_mix_beats_both_when_each_is_right_once():
    # q1: the cross-encoder is right by a wide margin, the first stage wrong by a little;
    # q2: the cross-encoder is wrong by a little, the first stage right by a wide margin
    first = {"q1": {"a": 0.45, "b": 0.55}, "q2": {"x": 0.9, "y": 0.1}}
    logits = {"q1": {"a": 4.0, "b": 0.0}, "q2": {"x": 0.0, "y": 1.0}}
    weight, report = choose_first_stage_weight(first, logits, QRELS)
    assert report["fused_ndcg@10"][str(weight)] == 1.0
    assert report["fused_ndcg@10"]["0.0"] < 1.0 and report["first_stage_ndcg@10"] < 1.0
    assert 0 < weight < 40


def test_custom_grid_and_bad_inputs():
    first = {"q1": {"a": 0.9, "b": 0.1}}
    logits = {"q1": {"a": 0.0, "b": 1.0}}
    assert choose_first_stage_weight(first, logits, QRELS, weights=[0, 7])[0] == 7.0
    with pytest.raises(ValueError, match="no held-out queries"):
        choose_first_stage_weight(first, {}, QRELS)
    with pytest.raises(ValueError, match="first_stage lacks the candidates of 1 queries"):
        choose_first_stage_weight({"q1": {"a": 0.9}}, logits, QRELS)
    with pytest.raises(ValueError, match="weights must be finite numbers >= 0"):
        choose_first_stage_weight(first, logits, QRELS, weights=[-1.0])
    with pytest.raises(ValueError, match="weights must be finite numbers >= 0"):
        choose_first_stage_weight(first, logits, QRELS, weights=[])


def test_default_grid_starts_at_the_cross_encoder_alone():
    assert FUSION_WEIGHTS[0] == 0.0 and list(FUSION_WEIGHTS) == sorted(FUSION_WEIGHTS)


class _PairScorer:
    """A stand-in cross-encoder whose raw logit is the passage length: one predict call, recorded."""

    def __init__(self):
        self.calls = []

    def predict(self, pairs, activation="sigmoid", show_progress=None):
        self.calls.append((list(pairs), activation))
        return np.array([len(p) for _, p in pairs], dtype=np.float32)


def test_rerank_logits_maps_each_pair_back_in_one_call():
    from embedrank.retrieval.fusion import rerank_logits

    scorer = _PairScorer()
    pairs = {"q1": {"a": ("first", "xx"), "b": ("first", "xxxxx")}, "q2": {}, "q3": {"c": ("third", "x")}}
    assert rerank_logits(scorer, pairs) == {"q1": {"a": 2.0, "b": 5.0}, "q2": {}, "q3": {"c": 1.0}}
    assert scorer.calls == [([("first", "xx"), ("first", "xxxxx"), ("third", "x")], None)]  # raw logits


def test_describe_choice_names_the_weight_and_its_ndcg():
    from embedrank.retrieval.fusion import describe_choice

    report = {"queries": 12, "first_stage_ndcg@10": 0.5, "fused_ndcg@10": {"0.0": 0.25, "2.5": 0.75}}
    assert describe_choice(2.5, report) == ("2.5, chosen on 12 held-out queries (NDCG@10 there: bi-encoder 0.5000, "
                                            "cross-encoder alone 0.2500, fused 0.7500)")
    without_zero = {"queries": 3, "first_stage_ndcg@10": 0.5, "fused_ndcg@10": {"5.0": 0.6}}
    assert describe_choice(5, without_zero) == ("5, chosen on 3 held-out queries (NDCG@10 there: bi-encoder 0.5000, "
                                                "fused 0.6000)")


# -- hybrid: dense + lexical candidate lists ---------------------------------------------------
from embedrank.retrieval.fusion import choose_lexical_weight, fuse_candidates  # noqa: E402


def _cands(docs, scores, windows=None):
    docs = np.array(docs, dtype=np.int64)
    return docs, np.array(scores, dtype=np.float32), np.array(windows if windows is not None else docs * 10, np.int64)


def test_convex_fusion_is_the_weighted_sum_of_min_max_scores():
    dense = _cands([0, 1, 2], [0.9, 0.7, 0.5])
    lexical = _cands([2, 3], [12.0, 4.0], [21, 31])
    docs, scores, windows = fuse_candidates(dense, lexical, "convex", 0.5, 60, 10)
    # dense normalized: 1, 0.5, 0; lexical: doc 2 -> 1, doc 3 -> 0
    expected = {0: 0.5, 1: 0.25, 2: 0.5, 3: 0.0}
    assert dict(zip(docs.tolist(), scores.tolist())) == pytest.approx(expected)
    assert docs.tolist() == [0, 2, 1, 3]  # the tie 0/2 goes to the lower document
    assert dict(zip(docs.tolist(), windows.tolist()))[2] == 20  # the dense window wins
    assert fuse_candidates(dense, lexical, "convex", 1.0, 60, 1)[0].tolist() == [2]
    assert fuse_candidates(dense, lexical, "convex", 0.0, 60, 2)[0].tolist() == [0, 1]


def test_rrf_uses_ranks_only():
    dense = _cands([5, 6], [100.0, -3.0])
    lexical = _cands([6, 7], [1.0, 0.5])
    docs, scores, _ = fuse_candidates(dense, lexical, "rrf", 0.5, 60, 10)
    expected = {5: 0.5 / 61, 6: 0.5 / 62 + 0.5 / 61, 7: 0.5 / 62}
    assert dict(zip(docs.tolist(), scores.tolist())) == pytest.approx(expected, rel=1e-6)
    assert docs.tolist()[0] == 6


def test_one_side_empty_and_equal_scores():
    empty = _cands([], [])
    docs, scores, _ = fuse_candidates(_cands([3, 4], [1.0, 1.0]), empty, "convex", 0.5, 60, 10)
    assert docs.tolist() == [3, 4] and scores.tolist() == [0.5, 0.5]


def test_choose_lexical_weight_prefers_the_side_that_is_right():
    # query a: dense right; query b: lexical right -> a mix wins over either alone
    # (third documents keep the min-max normalized scores of the first two apart from 0 and 1)
    dense = {"a": _cands([0, 1, 9], [0.9, 0.85, 0.1]), "b": _cands([2, 3, 9], [0.9, 0.88, 0.1])}
    lexical = {"a": _cands([1, 0, 8], [5.0, 4.9, 0.0]), "b": _cands([3, 2, 8], [9.0, 1.0, 0.0])}
    qrels = {"a": {"d0": 1}, "b": {"d3": 1}}
    names = [f"d{i}" for i in range(10)]
    weight, report = choose_lexical_weight(dense, lexical, names, qrels)
    assert report["ndcg@10"][str(weight)] == 1.0
    assert report["ndcg@10"]["0.0"] < 1.0 and report["ndcg@10"]["1.0"] < 1.0
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        choose_lexical_weight(dense, lexical, names, qrels, weights=[1.5])
