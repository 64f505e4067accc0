"""Fine-tuning a bi-encoder with MNRL (in-batch + hard negatives), optionally cached (GradCache)
and Matryoshka, then saving it as a sentence-transformers folder and exporting it.

    >>> result = train_bi_encoder("all-MiniLM-L6-v2", examples, BiEncoderConfig(epochs=2),
    ...                           evaluations={"dev": dev}, select_on="dev", out_dir="models/ft")

The best epoch on `select_on` (NDCG@10) is kept; the folder written is an embedrank model
folder (Encoder.load(out_dir)) holding the Hugging Face folder in ``hf/``.
"""

from __future__ import annotations

import copy
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from embedrank.train.data import RetrievalData, TrainingExample
from embedrank.train.losses import MatryoshkaLoss, MNRLoss, false_negative_masks
from embedrank.train.models import BiEncoderModel
from embedrank.train.optim import check_number, check_positive_int, make_optimizer, optimizer_step, training_steps
from embedrank.train.runtime import RandomState, autocast, autocast_dtype, resolve_device, seed_everything
from embedrank.errors import ExistingPathError, InvalidTypeError, InvalidValueError
from embedrank.utils.progress import progress_bar

__all__ = ["BiEncoderConfig", "TrainingResult", "train_bi_encoder", "evaluate_bi_encoder", "encode_texts",
           "cached_backward", "save_and_export"]

HF_SUBFOLDER = "hf"


@dataclass
class BiEncoderConfig:
    """Hyperparameters. mini_batch_size set: GradCache (the batch is embedded in chunks of that
    size, gradients are exact). num_negatives: explicit negatives per example (0: in-batch only)."""

    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float | None = 1.0
    scale: float = 20.0
    symmetric: bool = False
    num_negatives: int = 1
    query_max_length: int = 64
    document_max_length: int | None = None
    mini_batch_size: int | None = None
    matryoshka_dims: Sequence[int] | None = None
    matryoshka_weights: Sequence[float] | None = None
    seed: int = 0
    device: str | None = "cpu"
    precision: str = "auto"
    max_steps: int | None = None
    eval_batch_size: int = 64

    def check(self) -> None:
        check_positive_int(self.epochs, "epochs")
        check_positive_int(self.batch_size, "batch_size")
        if self.batch_size < 2 and self.num_negatives == 0:
            raise InvalidValueError("batch_size 1 without explicit negatives leaves no negative at all")
        check_number(self.learning_rate, "learning_rate", 0.0, 1.0, low_open=True)
        check_number(self.warmup_ratio, "warmup_ratio", 0.0, 1.0)
        check_number(self.weight_decay, "weight_decay", 0.0)
        check_number(self.max_grad_norm, "max_grad_norm", 0.0, low_open=True, allow_none=True)
        check_number(self.scale, "scale", 0.0, low_open=True)
        if isinstance(self.num_negatives, bool) or not isinstance(self.num_negatives, int) or self.num_negatives < 0:
            raise InvalidValueError(f"num_negatives must be an integer >= 0, got {self.num_negatives!r}")
        check_positive_int(self.query_max_length, "query_max_length")
        check_positive_int(self.document_max_length, "document_max_length", allow_none=True)
        check_positive_int(self.mini_batch_size, "mini_batch_size", allow_none=True)
        check_positive_int(self.max_steps, "max_steps", allow_none=True)
        check_positive_int(self.eval_batch_size, "eval_batch_size")
        if self.matryoshka_dims is not None:
            MatryoshkaLoss(MNRLoss(self.scale), self.matryoshka_dims, self.matryoshka_weights)
        elif self.matryoshka_weights is not None:
            raise InvalidValueError("matryoshka_weights given without matryoshka_dims")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InvalidValueError(f"seed must be a non-negative integer, got {self.seed!r}")


@dataclass
class TrainingResult:
    """history: one dict per epoch (loss, seconds, metrics per evaluation set)."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    best_score: float | None = None
    steps: int = 0
    train_seconds: float = 0.0
    out_dir: Path | None = None
    config: dict = field(default_factory=dict)


# -- batches -----------------------------------------------------------------------------------
def check_examples(examples: Sequence[TrainingExample], num_negatives: int, random_pool: Mapping | None) -> None:
    if isinstance(examples, (str, bytes)) or not isinstance(examples, Sequence):
        raise InvalidTypeError("examples must be a list of TrainingExample (see examples_from_pairs)")
    if not examples:
        raise InvalidValueError("no training examples")
    for i, e in enumerate(examples):
        if not isinstance(e, TrainingExample):
            raise InvalidTypeError(f"examples[{i}] must be a TrainingExample, got {type(e).__name__}")
    if random_pool is None:
        short = [i for i, e in enumerate(examples) if len(e.negatives) < num_negatives]
        if short:
            raise InvalidValueError(f"{len(short)} example(s) have fewer than num_negatives={num_negatives} negatives "
                             f"(first: examples[{short[0]}]); mine some, lower num_negatives, or give a corpus to "
                             "draw random negatives from")


def pick_negatives(example: TrainingExample, k: int, rng: np.random.Generator,
                    random_pool: Mapping[str, str] | None, pool_ids: list[str]) -> tuple[list[str], list[str]]:
    """k (text, key) negatives: a seeded sample of the example's own, topped up at random from the pool."""
    texts, keys = list(example.negatives), example.negative_keys()
    if len(texts) > k:
        chosen = sorted(rng.choice(len(texts), size=k, replace=False).tolist())
        texts, keys = [texts[i] for i in chosen], [keys[i] for i in chosen]
    relevant = example.relevant_keys()
    attempts = 0
    while len(texts) < k:
        doc = pool_ids[int(rng.integers(len(pool_ids)))]
        attempts += 1
        if f"id:{doc}" in relevant or f"text:{random_pool[doc]}" in relevant:
            if attempts > 100 * k:
                raise InvalidValueError(f"could not draw random negatives for query {example.query!r:.60}")
            continue
        texts.append(random_pool[doc])
        keys.append(f"id:{doc}")
    return texts, keys


# -- forward passes ----------------------------------------------------------------------------
def _embed_chunks(model: BiEncoderModel, features: dict[str, torch.Tensor], chunk: int, device, dtype):
    """No-grad embeddings in chunks, with each chunk's RNG state (to replay dropout)."""
    out, states = [], []
    n = features["input_ids"].shape[0]
    with torch.no_grad():
        for start in range(0, n, chunk):
            part = {k: v[start:start + chunk] for k, v in features.items()}
            states.append(RandomState(device))
            with autocast(device, dtype):
                out.append(model(part).float())
    return torch.cat(out), states


def cached_backward(model: BiEncoderModel, groups: Sequence[dict[str, torch.Tensor]], loss_of, chunk: int,
                    device: torch.device, dtype, scaler=None) -> torch.Tensor:
    """GradCache: the loss's gradient with respect to the model, in chunks of `chunk` rows.

    groups: token features per group (e.g. queries, documents). loss_of(*embeddings) -> scalar.
    1) embed every group without a graph; 2) the loss and its gradient with respect to the
    embeddings; 3) re-embed each chunk with the same RNG state (same dropout) and back-propagate
    that gradient. The parameters' .grad equals loss.backward() on the full batch.
    """
    embedded = [_embed_chunks(model, g, chunk, device, dtype) for g in groups]
    leaves = [e.detach().requires_grad_() for e, _ in embedded]
    loss = loss_of(*leaves)
    (scaler.scale(loss) if scaler is not None else loss).backward()
    for group, (_, states), leaf in zip(groups, embedded, leaves):
        n = group["input_ids"].shape[0]
        for i, start in enumerate(range(0, n, chunk)):
            part = {k: v[start:start + chunk] for k, v in group.items()}
            with states[i].replay(), autocast(device, dtype):
                vectors = model(part).float()
            vectors.backward(leaf.grad[start:start + chunk])
    return loss.detach()


def encode_texts(model: BiEncoderModel, texts: Sequence[str], max_length: int | None, batch_size: int,
                 device: torch.device, dtype, show_progress: bool | None = False, desc: str = "encoding") -> np.ndarray:
    """[n, H] float32 L2-normalized vectors (eval mode, length-sorted batches)."""
    was_training = model.training
    model.eval()
    texts = list(texts)
    length = model.max_seq_length if max_length is None else min(max_length, model.max_seq_length)
    model.tokenizer.max_length = length
    encodings, _ = model.tokenizer.encode(texts)
    order = np.argsort([-len(e.ids) for e in encodings], kind="stable")
    out = np.empty((len(texts), model.dimension), dtype=np.float32)
    bar = progress_bar(len(texts), show_progress, desc, unit="text", min_total=0, leave=False)
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            batch = model.tokenizer.pad([encodings[i] for i in rows])
            features = {"input_ids": torch.from_numpy(batch.input_ids).to(device),
                        "attention_mask": torch.from_numpy(batch.attention_mask).to(device)}
            if model.use_types:
                features["token_type_ids"] = torch.from_numpy(batch.token_type_ids).to(device)
            with autocast(device, dtype):
                vectors = torch.nn.functional.normalize(model(features).float(), dim=-1)
            out[rows] = vectors.cpu().numpy()
            bar.update(len(rows))
    bar.close()
    model.train(was_training)
    return out


def evaluate_bi_encoder(model: BiEncoderModel, data: RetrievalData, device: torch.device | str = "cpu",
                        dtype=None, batch_size: int = 64, document_max_length: int | None = None,
                        show_progress: bool | None = False, depth: int = 100) -> dict[str, float]:
    """NDCG@10 and Recall@100 of exact search over data.corpus (the torch model's vectors)."""
    from embedrank.data.evaluation import evaluate
    from embedrank.kernels import topk_float32

    device = torch.device(device)
    query_ids = data.query_ids()
    doc_ids = list(data.corpus)
    docs = encode_texts(model, [data.corpus[d] for d in doc_ids], document_max_length, batch_size, device, dtype,
                        show_progress, "eval corpus")
    queries = encode_texts(model, [data.queries[q] for q in query_ids], None, batch_size, device, dtype)
    scores, rows = topk_float32(queries, docs, min(depth, len(doc_ids)))
    run = {q: {doc_ids[r]: float(s) for r, s in zip(rows[i], scores[i]) if r >= 0} for i, q in enumerate(query_ids)}
    metrics = evaluate(run, {q: data.qrels[q] for q in query_ids}, ["ndcg@10", "recall@100"])["mean"]
    return {k: round(v, 6) for k, v in metrics.items()}


# -- training ----------------------------------------------------------------------------------
def train_bi_encoder(model_dir: str | os.PathLike, examples: Sequence[TrainingExample],
                     config: BiEncoderConfig | None = None, *, evaluations: Mapping[str, RetrievalData] | None = None,
                     select_on: str | None = None, random_negatives: Mapping[str, str] | None = None,
                     out_dir: str | os.PathLike | None = None, export: bool = True, overwrite: bool = False,
                     show_progress: bool | None = None, log=None, model: BiEncoderModel | None = None,
                     ) -> tuple[BiEncoderModel, TrainingResult]:
    """Fine-tunes the bi-encoder in `model_dir` on `examples`; returns (model, result).

    evaluations: {name: RetrievalData} scored (NDCG@10, Recall@100) after every epoch;
    select_on: the one whose NDCG@10 picks the best epoch (else the last epoch is kept).
    random_negatives: {doc_id: text} to top up examples with fewer than num_negatives
    negatives with random documents (never one relevant to the query). out_dir: write the
    best model there (export=True: an embedrank folder with hf/ inside; False: the HF folder).
    log: a callable taking one line of text per epoch (e.g. print).
    """
    config = config or BiEncoderConfig()
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
        model = BiEncoderModel.load(model_dir)
    model.to(device)
    loss_fn = MNRLoss(config.scale, config.symmetric)
    if config.matryoshka_dims is not None:
        loss_fn = MatryoshkaLoss(loss_fn, config.matryoshka_dims, config.matryoshka_weights)
        loss_fn.check_dimension(model.dimension)
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
    bar = progress_bar(total, show_progress, "training", unit="step", min_total=0, leave=False)
    for epoch in range(1, config.epochs + 1):
        epoch_started, losses = time.perf_counter(), []
        order = rng.permutation(len(examples))
        for start in range(0, len(order), config.batch_size):
            if result.steps >= total:
                break
            batch = [examples[i] for i in order[start:start + config.batch_size]]
            loss = _step(model, batch, config, loss_fn, rng, random_negatives, pool_ids, device, dtype, scaler)
            optimizer_step(model, optimizer, scheduler, scaler, config.max_grad_norm)
            losses.append(float(loss))
            result.steps += 1
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}", epoch=epoch)
        entry = {"epoch": epoch, "loss": float(np.mean(losses)) if losses else None,
                 "train_seconds": round(time.perf_counter() - epoch_started, 2), "metrics": {}}
        for name, data in evaluations.items():
            eval_started = time.perf_counter()
            # scored at the model's max_seq_length, as the exported model will run
            entry["metrics"][name] = evaluate_bi_encoder(model, data, device, dtype, config.eval_batch_size,
                                                         None, show_progress)
            entry["metrics"][name]["seconds"] = round(time.perf_counter() - eval_started, 2)
        result.history.append(entry)
        if select_on is not None:
            score = entry["metrics"][select_on]["ndcg@10"]
            if result.best_score is None or score > result.best_score:
                result.best_score, result.best_epoch = score, epoch
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            result.best_epoch = epoch
        if log is not None:
            log(_epoch_line(entry))
        if result.steps >= total:
            break
    bar.close()
    result.train_seconds = round(time.perf_counter() - started, 2)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    if out_dir is not None:
        result.out_dir = save_and_export(model, out_dir, export=export, overwrite=overwrite)
    return model, result


def _step(model, batch, config, loss_fn, rng, random_negatives, pool_ids, device, dtype, scaler) -> torch.Tensor:
    k = config.num_negatives
    negative_texts, negative_keys = [], []
    for example in batch:
        texts, keys = pick_negatives(example, k, rng, random_negatives, pool_ids)
        negative_texts.extend(texts)
        negative_keys.append(keys)
    query_mask, document_mask = false_negative_masks(batch, k, negative_keys)
    queries = model.features([e.query for e in batch], config.query_max_length, device)
    documents = model.features([e.positive for e in batch] + negative_texts, config.document_max_length, device)
    b = len(batch)

    def loss_of(q, d):
        return loss_fn(q, d[:b], d[b:] if k else None, query_mask=query_mask, document_mask=document_mask)

    if config.mini_batch_size is not None:
        return cached_backward(model, [queries, documents], loss_of, config.mini_batch_size, device, dtype, scaler)
    with autocast(device, dtype):
        loss = loss_of(model(queries).float(), model(documents).float())
    (scaler.scale(loss) if scaler is not None else loss).backward()
    return loss.detach()


def _epoch_line(entry: dict) -> str:
    parts = [f"epoch {entry['epoch']}", f"loss {entry['loss']:.4f}" if entry["loss"] is not None else "loss -",
             f"{entry['train_seconds']:.0f}s"]
    for name, metrics in entry["metrics"].items():
        parts.append(f"{name} ndcg@10 {metrics['ndcg@10']:.4f} recall@100 {metrics['recall@100']:.4f}")
    return " | ".join(parts)


def config_dict(config) -> dict:
    out = asdict(config)
    for key, value in out.items():
        if isinstance(value, tuple):
            out[key] = list(value)
    return out


# -- saving ------------------------------------------------------------------------------------
def check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ExistingPathError(f"out_dir is not empty: {out} (pass overwrite=True to replace it)")


def save_and_export(model, out_dir: str | os.PathLike, kind: str = "bi-encoder", export: bool = True,
                    overwrite: bool = False, optimize: bool = True, quantize: bool = True) -> Path:
    """Saves the HF folder and (export=True) exports it through export_model (verified against
    torch) to out_dir, with the HF folder moved into out_dir/hf. export=False: out_dir is the
    HF folder."""
    out = Path(out_dir)
    check_out_dir(out, overwrite)
    if not export:
        if out.exists():
            shutil.rmtree(out)
        return model.save(out)
    from embedrank.export import export_model

    out.parent.mkdir(parents=True, exist_ok=True)
    hf = out.with_name(f".{out.name}.hf-{os.getpid()}")
    if hf.exists():
        shutil.rmtree(hf)
    try:
        model.save(hf)
        export_model(hf, out, kind=kind, optimize=optimize, quantize=quantize, overwrite=True)
        shutil.move(str(hf), str(out / HF_SUBFOLDER))
    finally:
        if hf.exists():
            shutil.rmtree(hf, ignore_errors=True)
    return out


def clone_model(model):
    """A deep copy (for comparisons in tests and sweeps)."""
    return copy.deepcopy(model)
