"""Bi-encoder training on all-MiniLM-L6-v2, a few steps at short lengths: loss, GradCache,
seeds, export round trip, bad settings."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs torch: pip install 'embedrank[train]'")

from embedrank.train.bi_encoder import (  # noqa: E402
    BiEncoderConfig,
    cached_backward,
    encode_texts,
    evaluate_bi_encoder,
    save_and_export,
    train_bi_encoder,
)
from embedrank.train.data import RetrievalData, examples_from_pairs  # noqa: E402
from embedrank.train.losses import MNRLoss, false_negative_masks  # noqa: E402

PAIRS = [
    ("how do plants make sugar", "Plants convert light energy into glucose.", "Volcanoes erupt when magma rises."),
    ("what makes ATP", "The mitochondrion produces ATP.", "Tides are caused by the moon."),
    ("which hormone controls blood sugar", "Insulin regulates blood glucose.", "Rain forms from vapour."),
    ("how do vaccines work", "Vaccines train the immune system.", "Stars fuse hydrogen."),
]
SHORT = {"query_max_length": 16, "document_max_length": 24}


def _batch_loss(model, examples, loss_fn=MNRLoss()):
    """The MNRL of one batch in eval mode (no dropout): a deterministic number."""
    model.eval()
    qm, dm = false_negative_masks(examples, 1)
    with torch.no_grad():
        q = model(model.features([e.query for e in examples], 16))
        d = model(model.features([e.positive for e in examples] + [n for e in examples for n in e.negatives], 24))
    model.train()
    return float(loss_fn(q, d[:len(examples)], d[len(examples):], query_mask=qm, document_mask=dm))


def test_loss_decreases(bi_encoder):
    examples = examples_from_pairs(PAIRS)
    before = _batch_loss(bi_encoder, examples)
    config = BiEncoderConfig(epochs=4, batch_size=4, learning_rate=1e-4, warmup_ratio=0.0, **SHORT)
    model, result = train_bi_encoder(None, examples, config, model=bi_encoder, show_progress=False)
    after = _batch_loss(model, examples)
    assert after < before * 0.8, (before, after)
    assert result.steps == 4 and [h["epoch"] for h in result.history] == [1, 2, 3, 4]


def test_gradcache_gradients_equal_plain_gradients(bi_encoder):
    examples = examples_from_pairs(PAIRS)
    model = bi_encoder
    model.eval()  # dropout off: the same function either way
    qm, dm = false_negative_masks(examples, 1)
    loss_fn = MNRLoss(symmetric=True)
    queries = model.features([e.query for e in examples], 16)
    documents = model.features([e.positive for e in examples] + [e.negatives[0] for e in examples], 24)

    def loss_of(q, d):
        return loss_fn(q, d[:4], d[4:], query_mask=qm, document_mask=dm)

    model.zero_grad()
    plain = loss_of(model(queries), model(documents))
    plain.backward()
    plain_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    cached = cached_backward(model, [queries, documents], loss_of, chunk=3, device=torch.device("cpu"), dtype=None)
    cached_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert float(cached) == pytest.approx(float(plain.detach()), rel=1e-5)
    assert cached_grads.keys() == plain_grads.keys() and len(plain_grads) > 50
    for name, grad in plain_grads.items():
        torch.testing.assert_close(cached_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_gradcache_replays_dropout(bi_encoder):
    """In train mode each chunk is re-run with its RNG state: the loss from the first pass equals
    the loss of the re-run embeddings."""
    model = bi_encoder
    model.train()
    features = model.features(["a b c d", "e f g", "h i"], 16)
    seen = []

    def loss_of(q):
        seen.append(q.detach().clone())
        return q.pow(2).sum()

    torch.manual_seed(0)
    cached_backward(model, [features], loss_of, chunk=2, device=torch.device("cpu"), dtype=None)
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    model.zero_grad()
    # same surrogate computed directly with the same RNG sequence as the replay
    torch.manual_seed(0)
    direct = torch.cat([model({k: v[s:s + 2] for k, v in features.items()}) for s in (0, 2)])
    torch.testing.assert_close(direct.detach(), seen[0])
    direct.pow(2).sum().backward()
    torch.testing.assert_close(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]),
                               grads, rtol=1e-4, atol=1e-6)


def test_cached_training_matches_plain_training_in_eval_mode_loss(bi_encoder):
    examples = examples_from_pairs(PAIRS)
    config = BiEncoderConfig(epochs=1, batch_size=4, mini_batch_size=2, **SHORT)
    _, result = train_bi_encoder(None, examples, config, model=bi_encoder, show_progress=False)
    assert result.steps == 1 and np.isfinite(result.history[0]["loss"])


def test_same_seed_same_weights(_loaded_bi_encoder):
    import copy

    examples = examples_from_pairs(PAIRS)
    config = BiEncoderConfig(epochs=1, batch_size=2, seed=3, **SHORT)
    weights = []
    for _ in range(2):
        model, _ = train_bi_encoder(None, examples, config, model=copy.deepcopy(_loaded_bi_encoder),
                                    show_progress=False)
        weights.append({k: v.clone() for k, v in model.state_dict().items()})
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
    other, _ = train_bi_encoder(None, examples, BiEncoderConfig(epochs=1, batch_size=2, seed=4, **SHORT),
                                model=copy.deepcopy(_loaded_bi_encoder), show_progress=False)
    assert any(not torch.equal(weights[0][k], v) for k, v in other.state_dict().items())


def test_matryoshka_training_runs_and_checks_dims(bi_encoder):
    examples = examples_from_pairs(PAIRS)
    config = BiEncoderConfig(epochs=1, batch_size=4, matryoshka_dims=[384, 256, 128, 64], **SHORT)
    _, result = train_bi_encoder(None, examples, config, model=bi_encoder, show_progress=False)
    assert np.isfinite(result.history[0]["loss"])
    with pytest.raises(ValueError, match="exceed the model's dimension 384"):
        train_bi_encoder(None, examples, BiEncoderConfig(matryoshka_dims=[512, 64], **SHORT), model=bi_encoder)


def test_export_round_trip_and_best_epoch(bi_encoder, tiny_beir, tmp_path):
    import embedrank

    data = RetrievalData.from_beir(tiny_beir, "train")
    dev = RetrievalData.from_beir(tiny_beir, "test")
    examples = data.examples()
    config = BiEncoderConfig(epochs=2, batch_size=4, num_negatives=1, **SHORT)
    model, result = train_bi_encoder(None, examples, config, model=bi_encoder, evaluations={"dev": dev},
                                     select_on="dev", random_negatives=data.corpus, show_progress=False)
    scores = [h["metrics"]["dev"]["ndcg@10"] for h in result.history]
    assert result.best_score == max(scores) and result.best_epoch == 1 + scores.index(max(scores))
    out = save_and_export(model, tmp_path / "ft", optimize=False, quantize=False)
    assert (out / "hf" / "modules.json").is_file() and (out / "hf" / "1_Pooling" / "config.json").is_file()
    encoder = embedrank.Encoder.load(out)
    assert encoder.config.pooling == "mean" and encoder.config.normalize is True
    assert encoder.max_seq_length == 256
    texts = ["what causes tides", "Stars shine by fusing hydrogen into helium. " * 3]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_vectors = encoder.encode(texts)
    torch_vectors = encode_texts(model, texts, None, 8, torch.device("cpu"), None)
    np.testing.assert_allclose(onnx_vectors, torch_vectors, atol=1e-4)
    # the exported model scores the dev split as the torch model did in training
    again = evaluate_bi_encoder(model, dev)
    assert again["ndcg@10"] == pytest.approx(result.best_score, abs=1e-6)


@pytest.mark.parametrize("settings, message", [
    ({"epochs": 0}, "epochs must be a positive integer"),
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"learning_rate": 0}, "learning_rate must be in"),
    ({"learning_rate": float("nan")}, "learning_rate must be a finite"),
    ({"warmup_ratio": 1.5}, "warmup_ratio must be in"),
    ({"scale": -1.0}, "scale must be in"),
    ({"num_negatives": -1}, "num_negatives must be an integer >= 0"),
    ({"mini_batch_size": 0}, "mini_batch_size must be a positive integer"),
    ({"matryoshka_dims": [64, 64]}, "distinct"),
    ({"matryoshka_weights": [1.0]}, "without matryoshka_dims"),
    ({"seed": -1}, "seed must be"),
    ({"precision": "fp8"}, "precision must be one of"),
    ({"precision": "bf16"}, "needs a GPU"),
    ({"device": "tpu"}, "device"),
])
def test_bad_settings(bi_encoder, settings, message):
    examples = examples_from_pairs(PAIRS)
    with pytest.raises(ValueError, match=message):
        train_bi_encoder(None, examples, BiEncoderConfig(**settings), model=bi_encoder, show_progress=False)


def test_bad_data(bi_encoder, tmp_path):
    with pytest.raises(ValueError, match="no training examples"):
        train_bi_encoder(None, [], BiEncoderConfig(), model=bi_encoder)
    with pytest.raises(TypeError, match="TrainingExample"):
        train_bi_encoder(None, [("q", "p")], BiEncoderConfig(), model=bi_encoder)
    no_negatives = examples_from_pairs([(q, p) for q, p, _ in PAIRS])
    with pytest.raises(ValueError, match="fewer than num_negatives=1"):
        train_bi_encoder(None, no_negatives, BiEncoderConfig(num_negatives=1), model=bi_encoder)
    with pytest.raises(ValueError, match="select_on='dev' is not one of"):
        train_bi_encoder(None, no_negatives, BiEncoderConfig(num_negatives=0), model=bi_encoder, select_on="dev")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        train_bi_encoder(None, no_negatives, BiEncoderConfig(num_negatives=0), model=bi_encoder,
                         out_dir=tmp_path / "full")
    assert (tmp_path / "full" / "x").read_text() == "keep me"


def test_missing_model_folder(tmp_path):
    from embedrank.train.models import BiEncoderModel

    with pytest.raises(FileNotFoundError, match="model folder not found"):
        BiEncoderModel.load(tmp_path / "nope")
