"""Cross-encoder training from all-MiniLM-L6-v2 (new head): both losses, export round trip, bad settings."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs torch: pip install 'embedrank[train]'")

from embedrank.train.bi_encoder import save_and_export  # noqa: E402
from embedrank.train.cross_encoder import (  # noqa: E402
    CrossEncoderConfig,
    evaluate_reranker,
    score_pairs,
    train_cross_encoder,
)
from embedrank.train.data import RetrievalData, examples_from_pairs  # noqa: E402
from tests.train.test_bi_encoder import PAIRS  # noqa: E402


@pytest.fixture(scope="module")
def _loaded_cross_encoder(minilm_dir):
    from embedrank.train.models import CrossEncoderModel

    torch.manual_seed(0)
    return CrossEncoderModel.load(minilm_dir, max_seq_length=48)


@pytest.fixture()
def cross_encoder(_loaded_cross_encoder):
    import copy

    return copy.deepcopy(_loaded_cross_encoder)


def _listwise_loss(model, examples):
    pairs = [(e.query, d) for e in examples for d in (e.positive, *e.negatives)]
    logits = torch.tensor(score_pairs(model, pairs)).view(len(examples), -1)
    return float(torch.nn.functional.cross_entropy(logits, torch.zeros(len(examples), dtype=torch.long)))


@pytest.mark.parametrize("loss", ["listwise", "bce"])
def test_loss_decreases(cross_encoder, loss):
    examples = examples_from_pairs(PAIRS)
    before = _listwise_loss(cross_encoder, examples)
    config = CrossEncoderConfig(epochs=4, batch_size=4, num_negatives=1, loss=loss, learning_rate=1e-4,
                                warmup_ratio=0.0)
    model, result = train_cross_encoder(None, examples, config, model=cross_encoder, show_progress=False)
    after = _listwise_loss(model, examples)
    assert after < before * 0.9, (before, after)
    assert result.steps == 4


def test_export_round_trip(cross_encoder, tiny_beir, tmp_path):
    import embedrank

    data = RetrievalData.from_beir(tiny_beir, "train")
    dev = RetrievalData.from_beir(tiny_beir, "test")
    candidates = {"q9": ["d9", "d10", "d11"], "q10": ["d11", "d12", "d1"]}
    config = CrossEncoderConfig(epochs=2, batch_size=4, num_negatives=2)
    model, result = train_cross_encoder(None, data.examples(), config, model=cross_encoder,
                                        evaluations={"dev": (dev, candidates)}, select_on="dev",
                                        random_negatives=data.corpus, show_progress=False)
    assert result.best_score == max(h["metrics"]["dev"]["ndcg@10"] for h in result.history)
    out = save_and_export(model, tmp_path / "reranker", kind="cross-encoder", optimize=False, quantize=False)
    reranker = embedrank.CrossEncoder.load(out)
    assert reranker.max_seq_length == 48
    pairs = [("what causes tides", "Tides are caused by the gravitational pull of the moon."),
             ("why do stars shine", "Earthquakes happen when tectonic plates slip. " * 10)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the long pair is truncated (TruncationWarning)
        onnx_scores = reranker.predict(pairs, activation=None)
    np.testing.assert_allclose(onnx_scores, score_pairs(model, pairs), atol=1e-4)
    assert evaluate_reranker(model, dev, candidates)["ndcg@10"] == pytest.approx(result.best_score, abs=1e-6)


def test_evaluate_reranker_bad_candidates(cross_encoder, tiny_beir):
    dev = RetrievalData.from_beir(tiny_beir, "test")
    with pytest.raises(ValueError, match="none of the evaluation queries"):
        evaluate_reranker(cross_encoder, dev, {"zz": ["d1"]})
    with pytest.raises(ValueError, match="not in the corpus"):
        evaluate_reranker(cross_encoder, dev, {"q9": ["nope"]})


@pytest.mark.parametrize("settings, message", [
    ({"loss": "hinge"}, "loss must be one of"),
    ({"num_negatives": 0}, "num_negatives must be a positive integer"),
    ({"batch_size": -2}, "batch_size must be a positive integer"),
    ({"learning_rate": 2.0}, "learning_rate must be in"),
    ({"max_seq_length": 0}, "max_seq_length must be a positive integer"),
    ({"max_grad_norm": 0}, "max_grad_norm must be in"),
])
def test_bad_settings(cross_encoder, settings, message):
    with pytest.raises(ValueError, match=message):
        train_cross_encoder(None, examples_from_pairs(PAIRS), CrossEncoderConfig(**settings), model=cross_encoder)


def test_bad_data(cross_encoder):
    with pytest.raises(ValueError, match="no training examples"):
        train_cross_encoder(None, [], CrossEncoderConfig(), model=cross_encoder)
    with pytest.raises(ValueError, match="fewer than num_negatives=3"):
        train_cross_encoder(None, examples_from_pairs(PAIRS), CrossEncoderConfig(num_negatives=3),
                            model=cross_encoder)


def test_max_seq_length_beyond_positions(minilm_dir):
    from embedrank.train.models import CrossEncoderModel

    with pytest.raises(ValueError, match="max_seq_length must be an integer in \\[8, 512\\]"):
        CrossEncoderModel.load(minilm_dir, max_seq_length=4096)
