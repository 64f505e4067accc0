"""MNRL, false-negative masking and Matryoshka against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs torch: pip install 'embedrank[train]'")

from embedrank.train.data import TrainingExample  # noqa: E402
from embedrank.train.losses import MatryoshkaLoss, MNRLoss, false_negative_masks, mnrl_loss  # noqa: E402


def _hand_mnrl(q, candidates, scale, masked):
    """Mean over queries of -log softmax(scale * cos)[i], skipping masked (i, j) pairs."""
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    cn = candidates / np.linalg.norm(candidates, axis=1, keepdims=True)
    total = 0.0
    for i in range(len(q)):
        logits = [scale * float(qn[i] @ cn[j]) for j in range(len(cn)) if (i, j) not in masked]
        target = scale * float(qn[i] @ cn[i])
        total += -(target - math.log(sum(math.exp(v) for v in logits)))
    return total / len(q)


def test_mnrl_matches_hand_computation_without_masking():
    rng = np.random.default_rng(0)
    q, p, n = rng.normal(size=(3, 5)), rng.normal(size=(3, 5)), rng.normal(size=(6, 5))
    loss = mnrl_loss(torch.tensor(q), torch.tensor(p), torch.tensor(n), scale=20.0)
    assert float(loss) == pytest.approx(_hand_mnrl(q, np.vstack([p, n]), 20.0, set()), rel=1e-9)


def test_false_negative_masking_on_a_crafted_batch():
    # Queries 0 and 2 share document "a" (same id); query 1's positive has the same text as
    # query 3's, without ids; query 0's hard negative is query 1's positive document "b".
    batch = [
        TrainingExample("q0", "text a", ("text b",), "q0", "a", ("b",), frozenset({"a"})),
        TrainingExample("q1", "text b", ("text z",), "q1", "b", ("z",), frozenset({"b"})),
        TrainingExample("q2", "text a", ("text y",), "q2", "a", ("y",), frozenset({"a"})),
        TrainingExample("q3", "same text", ("text x",)),
    ]
    batch[1] = TrainingExample("q1", "same text", ("text z",), "q1", None, ("z",))
    batch[0] = TrainingExample("q0", "text a", ("text b",), "q0", "a", (None,), frozenset({"a"}))
    query_mask, document_mask = false_negative_masks(batch, 1)
    # columns: positives 0..3, then negatives 4..7 (one per example)
    expected = set()
    expected |= {(0, 2), (2, 0)}  # same document id "a"
    expected |= {(1, 3), (3, 1)}  # same positive text
    assert {tuple(x) for x in query_mask.nonzero().tolist()} == expected
    assert {tuple(x) for x in document_mask.nonzero().tolist()} == {(0, 2), (2, 0), (1, 3), (3, 1)}

    rng = np.random.default_rng(1)
    q, d = rng.normal(size=(4, 6)), rng.normal(size=(8, 6))
    loss = mnrl_loss(torch.tensor(q), torch.tensor(d[:4]), torch.tensor(d[4:]), 20.0, query_mask=query_mask)
    assert float(loss) == pytest.approx(_hand_mnrl(q, d, 20.0, expected), rel=1e-9)
    unmasked = mnrl_loss(torch.tensor(q), torch.tensor(d[:4]), torch.tensor(d[4:]), 20.0)
    assert float(unmasked) != pytest.approx(float(loss))


def test_hard_negative_that_is_another_querys_positive_is_masked_for_that_query_only():
    batch = [TrainingExample("q0", "A", ("B",), "q0", "a", ("b",), frozenset({"a"})),
             TrainingExample("q1", "B", ("C",), "q1", "b", ("c",), frozenset({"b"}))]
    query_mask, _ = false_negative_masks(batch, 1)
    # column 2 is q0's negative "b": relevant to q1, so masked for q1, kept for q0
    assert query_mask.tolist() == [[False, False, False, False], [False, False, True, False]]


def test_relevant_ids_beyond_the_positive_are_masked():
    batch = [TrainingExample("q0", "A", (), "q0", "a", (), frozenset({"a", "b"})),
             TrainingExample("q1", "B", (), "q1", "b", (), frozenset({"b"}))]
    query_mask, _ = false_negative_masks(batch, 0)
    assert query_mask.tolist() == [[False, True], [False, False]]


def test_symmetric_term_is_the_mean_of_both_directions():
    rng = np.random.default_rng(2)
    q, p = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
    forward = _hand_mnrl(q, p, 10.0, set())
    backward = _hand_mnrl(p, q, 10.0, set())
    loss = mnrl_loss(torch.tensor(q), torch.tensor(p), None, 10.0, symmetric=True)
    assert float(loss) == pytest.approx((forward + backward) / 2, rel=1e-9)


def test_matryoshka_is_the_weighted_sum_of_truncated_losses():
    rng = np.random.default_rng(3)
    q, p, n = (torch.tensor(rng.normal(size=s)) for s in ((4, 16), (4, 16), (8, 16)))
    base = MNRLoss(scale=20.0)
    wrapped = MatryoshkaLoss(base, [16, 8, 4], [1.0, 0.5, 0.25])
    expected = sum(w * _hand_mnrl(q[:, :d].numpy(), np.vstack([p[:, :d].numpy(), n[:, :d].numpy()]), 20.0, set())
                   for d, w in ((16, 1.0), (8, 0.5), (4, 0.25)))
    assert float(wrapped(q, p, n)) == pytest.approx(expected, rel=1e-9)
    assert float(MatryoshkaLoss(base, [16, 8])(q, p, n)) == pytest.approx(float(base(q, p, n) + base(q[:, :8], p[:, :8], n[:, :8])))


@pytest.mark.parametrize("dims, weights, message", [
    ([], None, "positive integers"), ([0, 4], None, "positive integers"), ([8, 8], None, "distinct"),
    ([8, 4], [1.0], "2 non-negative"), ([8, 4], [1.0, -1.0], "non-negative"),
])
def test_matryoshka_bad_settings(dims, weights, message):
    with pytest.raises(ValueError, match=message):
        MatryoshkaLoss(MNRLoss(), dims, weights)


def test_matryoshka_dims_larger_than_the_vectors():
    with pytest.raises(ValueError, match="exceed the model's dimension 8"):
        MatryoshkaLoss(MNRLoss(), [16, 8])(torch.ones(2, 8), torch.ones(2, 8))


@pytest.mark.parametrize("scale", [0, -1, float("nan"), True, "20"])
def test_bad_scale(scale):
    with pytest.raises(ValueError, match="scale"):
        MNRLoss(scale=scale)


def test_shape_errors():
    with pytest.raises(ValueError, match="both be \\[B, D\\]"):
        mnrl_loss(torch.ones(2, 4), torch.ones(3, 4))
    with pytest.raises(ValueError, match="query_mask must be"):
        mnrl_loss(torch.ones(2, 4), torch.ones(2, 4), query_mask=torch.zeros(2, 3, dtype=torch.bool))
    batch = [TrainingExample("q", "p", ("n1", "n2"))]
    with pytest.raises(ValueError, match="has 2 negatives, expected 1"):
        false_negative_masks(batch, 1)
