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
