"""`embedrank finetune` and `embedrank train-reranker` (registered by embedrank.apps.cli).

    embedrank finetune --model HF_DIR --data BEIR_DIR --split train [--eval-split test] --out OUT
    embedrank train-reranker --model HF_DIR --data BEIR_DIR --split train --out OUT

Both carve a dev slice from the training queries (--dev-fraction, split by query, seeded) to
pick the best epoch, mine hard negatives with the base model (exported to ONNX in a temporary
folder, or --mining-model), train, and write an embedrank model folder (the HF folder in
OUT/hf). --eval-split scores another split every epoch (reported only, never used to choose).
Importing this module does not import torch.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from embedrank.errors import ExistingPathError, InvalidValueError
from embedrank.apps import arguments

__all__ = ["register"]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="base Hugging Face / sentence-transformers folder")
    parser.add_argument("--data", required=True, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/)")
    parser.add_argument("--split", default="train", help="qrels split to train on (default: train)")
    parser.add_argument("--eval-split", default=None, help="another split scored every epoch (reported only)")
    parser.add_argument("--dev-fraction", type=arguments.fraction, default=0.1,
                        help="training queries held out to pick the best epoch (0: keep the last epoch)")
    parser.add_argument("--out", required=True, help="the embedrank model folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    parser.add_argument("--epochs", type=arguments.positive_int, default=1)
    parser.add_argument("--batch-size", type=arguments.positive_int, default=None)
    parser.add_argument("--lr", type=arguments.positive_float, default=None, help="peak learning rate")
    parser.add_argument("--warmup-ratio", type=arguments.fraction, default=0.1)
    parser.add_argument("--num-negatives", type=arguments.non_negative_int, default=None, help="negatives per example")
    parser.add_argument("--negatives", choices=("mined", "random"), default="mined",
                        help="mined hard negatives (default) or random documents")
    parser.add_argument("--mining-model", default=None,
                        help="embedrank bi-encoder folder to mine with (default: --model exported to a temp folder)")
    parser.add_argument("--range-min", type=arguments.non_negative_int, default=3, help="mining: skip the top ranks")
    parser.add_argument("--range-max", type=arguments.positive_int, default=50, help="mining: deepest rank considered")
    parser.add_argument("--relative-margin", type=arguments.fraction, default=0.05,
                        help="mining: keep candidates scoring below positive * (1 - margin)")
    parser.add_argument("--seed", type=arguments.non_negative_int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                        help="auto: fp32 on CPU, bf16 (else fp16) autocast on GPU")
    parser.add_argument("--max-steps", type=arguments.positive_int, default=None, help="stop after this many steps")
    parser.add_argument("--no-optimize", action="store_true", help="export without the ORT-optimized variant")
    parser.add_argument("--no-quantize", action="store_true", help="export without the int8 variant")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or epoch lines")
    parser.add_argument("--threads", type=arguments.positive_int, default=None, help="torch threads")


def register(subparsers) -> None:
    """Adds `finetune` and `train-reranker` to an argparse subparsers object."""
    finetune = subparsers.add_parser(
        "finetune", help="fine-tune a bi-encoder (MNRL, hard negatives) -> embedrank model folder",
        description="Fine-tune a bi-encoder on a BEIR split with MNRL (in-batch + hard negatives) and export it.")
    _common(finetune)
    finetune.add_argument("--scale", type=arguments.positive_float, default=20.0, help="MNRL scale (1 / temperature)")
    finetune.add_argument("--symmetric", action="store_true", help="add the document->query term")
    finetune.add_argument("--query-max-length", type=arguments.positive_int, default=64)
    finetune.add_argument("--document-max-length", type=arguments.positive_int, default=None,
                          help="training truncation of documents (default: the model's max_seq_length)")
    finetune.add_argument("--mini-batch-size", type=arguments.positive_int, default=None, help="GradCache chunk size")
    finetune.add_argument("--matryoshka-dims", default=None, help="e.g. 384,256,128,64")
    finetune.set_defaults(run=run_finetune)

    reranker = subparsers.add_parser(
        "train-reranker", help="train a cross-encoder on mined negatives -> embedrank cross-encoder folder",
        description="Train a cross-encoder (new one-logit head on --model) on mined hard negatives and export it.")
    _common(reranker)
    reranker.add_argument("--loss", choices=("listwise", "bce"), default="listwise")
    reranker.add_argument("--max-seq-length", type=arguments.positive_int, default=None)
    reranker.add_argument("--eval-candidates", type=arguments.positive_int, default=20,
                          help="first-stage candidates reranked per evaluation query")
    reranker.set_defaults(run=run_train_reranker)


def _dims(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        dims = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InvalidValueError(f"--matryoshka-dims must be comma-separated integers, got {text!r}") from None
    if not dims:
        raise InvalidValueError("--matryoshka-dims is empty")
    return dims


def _say(args):
    return None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))


def _show(args) -> bool | None:
    return False if args.quiet else None


class _Prepared:
    """The data, the split, the mining encoder and the negatives shared by both commands."""

    def __init__(self, args, work: Path):
        from embedrank.train.data import RetrievalData, split_by_query

        data = RetrievalData.from_beir(args.data, args.split)
        self.corpus = data.corpus
        ids = data.query_ids()
        if args.dev_fraction > 0:
            train_ids, dev_ids = split_by_query(ids, args.dev_fraction, args.seed)
            self.train, self.dev = data.subset(train_ids), data.subset(dev_ids)
        else:
            self.train, self.dev = data, None
        self.extra = RetrievalData.from_beir(args.data, args.eval_split) if args.eval_split else None
        self.work = work
        self.args = args
        self._encoder = None
        self.mining_summary: dict | None = None

    def encoder(self):
        if self._encoder is None:
            import embedrank

            folder = self.args.mining_model
            if folder is None:
                from embedrank.export import export_model

                folder = export_model(self.args.model, self.work / "mining-model", optimize=False, quantize=False)
            self._encoder = embedrank.Encoder.load(folder, num_threads=self.args.threads)
        return self._encoder

    def negatives(self) -> dict[str, list[str]] | None:
        if self.args.negatives == "random":
            return None
        from embedrank.train.mining import mine_hard_negatives

        ids = self.train.query_ids()
        n = max(5, self.args.num_negatives or 0)
        mined = mine_hard_negatives({q: self.train.queries[q] for q in ids}, self.corpus,
                                    {q: self.train.relevant(q) for q in ids}, self.encoder(), n=n,
                                    range_min=self.args.range_min, range_max=self.args.range_max,
                                    relative_margin=self.args.relative_margin, seed=self.args.seed)
        self.mining_summary = mined.summary()
        say = _say(self.args)
        if say:
            say(f"mined negatives: {json.dumps(self.mining_summary)}")
        return mined.negatives

    def candidates(self, data, depth: int) -> dict[str, list[str]]:
        """{query id: the bi-encoder's best `depth` document ids, best first}."""
        return {q: list(docs) for q, docs in self.scored_candidates(data, depth).items()}

    def scored_candidates(self, data, depth: int) -> dict[str, dict[str, float]]:
        """{query id: {document id: bi-encoder score}} for the best `depth` documents, best first."""
        from embedrank.kernels import topk_float32

        encoder = self.encoder()
        doc_ids = list(self.corpus)
        if not hasattr(self, "_corpus_vectors"):
            self._corpus_vectors = encoder.encode_documents([self.corpus[d] for d in doc_ids],
                                                            show_progress=_show(self.args))
        ids = data.query_ids()
        scores, rows = topk_float32(encoder.encode_queries([data.queries[q] for q in ids]), self._corpus_vectors,
                                    min(depth, len(doc_ids)))
        return {q: {doc_ids[r]: float(s) for r, s in zip(rows[i], scores[i]) if r >= 0} for i, q in enumerate(ids)}


def _check_args(args) -> None:
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        raise ExistingPathError(f"{out} exists and is not empty (pass --overwrite to replace it)")
    if args.range_max <= args.range_min:
        raise InvalidValueError(f"--range-max ({args.range_max}) must be greater than --range-min ({args.range_min})")


def _finish(args, result, extra: dict) -> int:
    summary = {"out": str(args.out), "best_epoch": result.best_epoch, "best_dev_ndcg@10": result.best_score,
               "train_seconds": result.train_seconds, "history": result.history, **extra}
    (Path(args.out) / "training.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(args.out)
    return 0


def run_finetune(args) -> int:
    """The `finetune` command: returns the exit status."""
    _check_args(args)
    import torch

    from embedrank.train.bi_encoder import BiEncoderConfig, save_and_export, train_bi_encoder

    if args.threads:
        torch.set_num_threads(args.threads)
    config = BiEncoderConfig(
        epochs=args.epochs, batch_size=args.batch_size or 32, learning_rate=args.lr or 2e-5,
        warmup_ratio=args.warmup_ratio, scale=args.scale, symmetric=args.symmetric,
        num_negatives=1 if args.num_negatives is None else args.num_negatives,
        query_max_length=args.query_max_length, document_max_length=args.document_max_length,
        mini_batch_size=args.mini_batch_size, matryoshka_dims=_dims(args.matryoshka_dims), seed=args.seed,
        device=args.device, precision=args.precision, max_steps=args.max_steps)
    config.check()
    with tempfile.TemporaryDirectory(prefix="embedrank-finetune-") as work:
        prepared = _Prepared(args, Path(work))
        negatives = prepared.negatives()
        examples = prepared.train.examples(negatives)
        evaluations = {}
        if prepared.dev is not None:
            evaluations["dev"] = prepared.dev
        if prepared.extra is not None:
            evaluations[args.eval_split] = prepared.extra
        model, result = train_bi_encoder(
            args.model, examples, config, evaluations=evaluations,
            select_on="dev" if prepared.dev is not None else None, random_negatives=prepared.corpus,
            show_progress=_show(args), log=_say(args))
        save_and_export(model, args.out, overwrite=args.overwrite, optimize=not args.no_optimize,
                        quantize=not args.no_quantize)
    return _finish(args, result, {"mining": prepared.mining_summary, "settings": result.config})


def run_train_reranker(args) -> int:
    """The `train-reranker` command: returns the exit status."""
    _check_args(args)
    import torch

    from embedrank.train.bi_encoder import save_and_export
    from embedrank.train.cross_encoder import CrossEncoderConfig, train_cross_encoder

    if args.threads:
        torch.set_num_threads(args.threads)
    config = CrossEncoderConfig(
        epochs=args.epochs, batch_size=args.batch_size or 8, learning_rate=args.lr or 3e-5,
        warmup_ratio=args.warmup_ratio, num_negatives=args.num_negatives or 3, loss=args.loss,
        max_seq_length=args.max_seq_length, seed=args.seed, device=args.device, precision=args.precision,
        max_steps=args.max_steps)
    config.check()
    with tempfile.TemporaryDirectory(prefix="embedrank-reranker-") as work:
        prepared = _Prepared(args, Path(work))
        negatives = prepared.negatives()
        examples = prepared.train.examples(negatives)
        evaluations = {}
        if prepared.dev is not None:
            evaluations["dev"] = (prepared.dev, prepared.candidates(prepared.dev, args.eval_candidates))
        if prepared.extra is not None:
            evaluations[args.eval_split] = (prepared.extra, prepared.candidates(prepared.extra, args.eval_candidates))
        model, result = train_cross_encoder(
            args.model, examples, config, evaluations=evaluations,
            select_on="dev" if prepared.dev is not None else None, random_negatives=prepared.corpus,
            show_progress=_show(args), log=_say(args))
        save_and_export(model, args.out, kind="cross-encoder", overwrite=args.overwrite,
                        optimize=not args.no_optimize, quantize=not args.no_quantize)
        fusion = _choose_fusion(args, prepared) if prepared.dev is not None else None
    return _finish(args, result, {"mining": prepared.mining_summary, "settings": result.config, "fusion": fusion})


def _choose_fusion(args, prepared) -> dict:
    """The first-stage weight for Retriever(first_stage_weight=...), chosen on the dev queries
    with the exported cross-encoder over the bi-encoder's --eval-candidates."""
    import embedrank
    from embedrank.retrieval.fusion import choose_first_stage_weight, describe_choice, rerank_logits

    reranker = embedrank.CrossEncoder.load(args.out, num_threads=args.threads)
    first_stage = prepared.scored_candidates(prepared.dev, args.eval_candidates)
    pairs = {q: {d: (prepared.dev.queries[q], prepared.corpus[d]) for d in docs} for q, docs in first_stage.items()}
    reranked = rerank_logits(reranker, pairs, show_progress=_show(args))
    weight, report = choose_first_stage_weight(first_stage, reranked, prepared.dev.qrels)
    say = _say(args)
    if say:
        say(f"fusion weight {describe_choice(weight, report)}; use it with "
            f"`embedrank index ... --reranker {args.out} --first-stage-weight {weight:g}`")
    return {"first_stage_weight": weight, **report}
