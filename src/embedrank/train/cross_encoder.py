"""Training a cross-encoder (reranker) on mined negatives: pointwise BCE or listwise softmax.

    >>> model, result = train_cross_encoder("all-MiniLM-L6-v2", examples, CrossEncoderConfig(loss="listwise"),
    ...                                     evaluations={"dev": (dev, dev_candidates)}, select_on="dev")

The base folder may be a cross-encoder or any encoder (then a new one-logit head is added:
AutoModelForSequenceClassification(num_labels=1)). Each example contributes its positive and
num_negatives negatives: "bce" scores each pair against its 1/0 label, "listwise" takes a
softmax over [positive, negatives] with the positive as the target. The folder written is an
embedrank cross-encoder folder (CrossEncoder.load(out_dir)) with the HF folder in ``hf/``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from embedrank.train.bi_encoder import (TrainingResult, check_examples, check_out_dir, config_dict,
                                        pick_negatives, save_and_export)
from embedrank.train.data import RetrievalData, TrainingExample
from embedrank.train.models import CrossEncoderModel
from embedrank.train.optim import check_number, check_positive_int, make_optimizer, optimizer_step, training_steps
from embedrank.train.runtime import autocast, autocast_dtype, resolve_device, seed_everything
from embedrank.errors import InvalidValueError
from embedrank.utils.progress import progress_bar

__all__ = ["CrossEncoderConfig", "train_cross_encoder", "evaluate_reranker", "score_pairs", "LOSSES"]

LOSSES = ("bce", "listwise")


@dataclass
class CrossEncoderConfig:
    """Hyperparameters; batch_size counts examples (each brings 1 + num_negatives pairs)."""

    epochs: int = 1
    batch_size: int = 8
    num_negatives: int = 3
    loss: str = "listwise"
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float | None = 1.0
    max_seq_length: int | None = None
    seed: int = 0
    device: str | None = "cpu"
    precision: str = "auto"
    max_steps: int | None = None
    eval_batch_size: int = 64

    def check(self) -> None:
        check_positive_int(self.epochs, "epochs")
        check_positive_int(self.batch_size, "batch_size")
        check_positive_int(self.num_negatives, "num_negatives")
        if self.loss not in LOSSES:
            raise InvalidValueError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        check_number(self.learning_rate, "learning_rate", 0.0, 1.0, low_open=True)
        check_number(self.warmup_ratio, "warmup_ratio", 0.0, 1.0)
        check_number(self.weight_decay, "weight_decay", 0.0)
        check_number(self.max_grad_norm, "max_grad_norm", 0.0, low_open=True, allow_none=True)
        check_positive_int(self.max_seq_length, "max_seq_length", allow_none=True)
        check_positive_int(self.max_steps, "max_steps", allow_none=True)
        check_positive_int(self.eval_batch_size, "eval_batch_size")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InvalidValueError(f"seed must be a non-negative integer, got {self.seed!r}")


def score_pairs(model: CrossEncoderModel, pairs: Sequence[tuple[str, str]], batch_size: int = 64,
                device: torch.device | str = "cpu", dtype=None, show_progress: bool | None = False) -> np.ndarray:
    """[n] float32 logits of (query, document) pairs (eval mode, length-sorted batches)."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    encodings, _ = model.tokenizer.encode([q for q, _ in pairs], [d for _, d in pairs])
    order = np.argsort([-len(e.ids) for e in encodings], kind="stable")
    out = np.empty(len(pairs), dtype=np.float32)
    bar = progress_bar(len(pairs), show_progress, "reranking", unit="pair", min_total=0, leave=False)
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            rows = order[start:start + batch_size]
            batch = model.tokenizer.pad([encodings[i] for i in rows])
            features = {"input_ids": torch.from_numpy(batch.input_ids).to(device),
                        "attention_mask": torch.from_numpy(batch.attention_mask).to(device)}
            if model.use_types:
                features["token_type_ids"] = torch.from_numpy(batch.token_type_ids).to(device)
            with autocast(device, dtype):
                out[rows] = model(features).float().cpu().numpy()
            bar.update(len(rows))
    bar.close()
    model.train(was_training)
    return out


def evaluate_reranker(model: CrossEncoderModel, data: RetrievalData, candidates: Mapping[str, Sequence[str]],
                      device: torch.device | str = "cpu", dtype=None, batch_size: int = 64,
                      show_progress: bool | None = False) -> dict[str, float]:
    """NDCG@10 of reranking `candidates` ({query_id: [doc ids]}, a first-stage run) for data's queries."""
    from embedrank.data.evaluation import evaluate

    query_ids = [q for q in data.query_ids() if q in candidates]
    if not query_ids:
        raise InvalidValueError("candidates name none of the evaluation queries")
    pairs, owners = [], []
    for q in query_ids:
        for d in candidates[q]:
            if d not in data.corpus:
                raise InvalidValueError(f"candidate {d!r} of query {q!r} is not in the corpus")
            pairs.append((data.queries[q], data.corpus[d]))
            owners.append((q, d))
    scores = score_pairs(model, pairs, batch_size, device, dtype, show_progress)
    run: dict[str, dict[str, float]] = {q: {} for q in query_ids}
    for (q, d), s in zip(owners, scores.tolist()):
        run[q][d] = s
    metrics = evaluate(run, {q: data.qrels[q] for q in query_ids}, ["ndcg@10"])["mean"]
    return {k: round(v, 6) for k, v in metrics.items()}


def train_cross_encoder(model_dir: str | os.PathLike, examples: Sequence[TrainingExample],
                        config: CrossEncoderConfig | None = None, *,
                        evaluations: Mapping[str, tuple[RetrievalData, Mapping[str, Sequence[str]]]] | None = None,
                        select_on: str | None = None, random_negatives: Mapping[str, str] | None = None,
                        out_dir: str | os.PathLike | None = None, export: bool = True, overwrite: bool = False,
                        show_progress: bool | None = None, log=None, model: CrossEncoderModel | None = None,
                        ) -> tuple[CrossEncoderModel, TrainingResult]:
    """Trains a cross-encoder from `model_dir`; returns (model, result).

    evaluations: {name: (RetrievalData, {query_id: [candidate doc ids]})}, reranked and scored
    (NDCG@10) after every epoch; select_on picks the best epoch. Other arguments as
    train_bi_encoder.
    """
    config = config or CrossEncoderConfig()
    config.check()
    evaluations = dict(evaluations or {})
    if select_on is not None and select_on not in evaluations:
        raise InvalidValueError(f"select_on={select_on!r} is not one of the evaluations {sorted(evaluations)}")
    check_examples(examples, config.num_negatives, random_negatives)
    if out_dir is not None:
        check_out_dir(Path(out_dir), overwrite)
    device = resolve_device(config.device)
    dtype = autocast_dtype(device, config.precision)
    seed_everything(config.seed)
    if model is None:
        model = CrossEncoderModel.load(model_dir, config.max_seq_length)
    model.to(device)
    total = training_steps(len(examples), config.batch_size, config.epochs, config.max_steps)
    optimizer, scheduler = make_optimizer(model, config.learning_rate, config.weight_decay, total,
                                          int(config.warmup_ratio * total))
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    rng = np.random.default_rng(config.seed)
    pool_ids = list(random_negatives) if random_negatives is not None else []
    result = TrainingResult(config=config_dict(config))
    best_state = None
    started = time.perf_counter()
    model.train()
    k = config.num_negatives
    bar = progress_bar(total, show_progress, "training", unit="step", min_total=0, leave=False)
    for epoch in range(1, config.epochs + 1):
        epoch_started, losses = time.perf_counter(), []
        order = rng.permutation(len(examples))
        for start in range(0, len(order), config.batch_size):
            if result.steps >= total:
                break
            batch = [examples[i] for i in order[start:start + config.batch_size]]
            queries, documents = [], []
            for example in batch:
                negatives, _ = pick_negatives(example, k, rng, random_negatives, pool_ids)
                queries.extend([example.query] * (1 + k))
                documents.extend([example.positive, *negatives])
            features = model.features(queries, documents, device)
            with autocast(device, dtype):
                logits = model(features).float().view(len(batch), 1 + k)
                if config.loss == "listwise":
                    loss = F.cross_entropy(logits, torch.zeros(len(batch), dtype=torch.long, device=device))
                else:
                    labels = torch.zeros_like(logits)
                    labels[:, 0] = 1.0
                    loss = F.binary_cross_entropy_with_logits(logits, labels)
            (scaler.scale(loss) if scaler is not None else loss).backward()
            optimizer_step(model, optimizer, scheduler, scaler, config.max_grad_norm)
            losses.append(float(loss.detach()))
            result.steps += 1
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}", epoch=epoch)
        entry = {"epoch": epoch, "loss": float(np.mean(losses)) if losses else None,
                 "train_seconds": round(time.perf_counter() - epoch_started, 2), "metrics": {}}
        for name, (data, candidates) in evaluations.items():
            eval_started = time.perf_counter()
            entry["metrics"][name] = evaluate_reranker(model, data, candidates, device, dtype,
                                                       config.eval_batch_size, show_progress)
            entry["metrics"][name]["seconds"] = round(time.perf_counter() - eval_started, 2)
        result.history.append(entry)
        if select_on is not None:
            score = entry["metrics"][select_on]["ndcg@10"]
            if result.best_score is None or score > result.best_score:
                result.best_score, result.best_epoch = score, epoch
                best_state = {k_: v.detach().to("cpu", copy=True) for k_, v in model.state_dict().items()}
        else:
            result.best_epoch = epoch
        if log is not None:
            parts = [f"epoch {epoch}", f"loss {entry['loss']:.4f}" if entry["loss"] is not None else "loss -",
                     f"{entry['train_seconds']:.0f}s"]
            parts += [f"{n} ndcg@10 {m['ndcg@10']:.4f}" for n, m in entry["metrics"].items()]
            log(" | ".join(parts))
        if result.steps >= total:
            break
    bar.close()
    result.train_seconds = round(time.perf_counter() - started, 2)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    if out_dir is not None:
        result.out_dir = save_and_export(model, out_dir, kind="cross-encoder", export=export, overwrite=overwrite)
    return model, result
