"""The `embedrank` command line.

    embedrank export MODEL_DIR OUT_DIR          HF folder -> embedrank model folder (ONNX, verified)
    embedrank encode MODEL INPUT OUT.npy        embed a corpus (BEIR folder, .jsonl or .txt)
    embedrank index --model M --data D --out R  build a retriever (encoder + index + corpus)
    embedrank search R "question" ...           two-stage search in a saved retriever
    embedrank eval ...                          NDCG / Recall / MAP / MRR / P@k of a run or a retriever
    embedrank finetune / train-reranker         fine-tuning (extra `train`)
    embedrank bench                             the benchmark suite -> report.md, plots, JSON
    embedrank demo                              the whole job on real data

A user error prints one line on stderr and exits with status 2 (no traceback). Progress bars
show on a terminal; --quiet turns them off.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from embedrank.models.folder import DEFAULT_VARIANT_FILES, RUNTIME_VARIANTS
from embedrank.errors import EmbedrankError, UsageError
from embedrank.apps import arguments

ENCODER_VARIANTS = (*DEFAULT_VARIANT_FILES, *RUNTIME_VARIANTS)
RERANKER_VARIANTS = tuple(v for v in ENCODER_VARIANTS if not v.startswith("pooled"))  # logits: nothing to pool


def _progress(args: argparse.Namespace) -> bool | None:
    return False if getattr(args, "quiet", False) else None


# -- export ----------------------------------------------------------------------------------

def _export(args: argparse.Namespace) -> int:
    from embedrank.export import export_model

    path = export_model(args.model_dir, args.out_dir, kind=args.kind, optimize=not args.no_optimize,
                        quantize=not args.no_quantize, pooled=args.pooled, fp16=args.fp16, overwrite=args.overwrite)
    print(path)
    return 0


# -- encode ----------------------------------------------------------------------------------

def _replace_atomically(path: Path, write) -> Path:
    """Writes a file through write(binary file) beside `path`, then renames it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def ids_file(vectors_path: str | os.PathLike) -> Path:
    """Where `encode` writes the ids of OUTPUT.npy: OUTPUT.ids.jsonl."""
    return Path(vectors_path).with_suffix(".ids.jsonl")


def write_ids(path: Path, ids) -> Path:
    """One JSON string per line, ASCII only: an id holding a newline (or any other line
    separator) is escaped, so line i is always the id of vector i."""
    return _replace_atomically(path, lambda f: f.write(
        "".join(json.dumps(doc_id, ensure_ascii=True) + "\n" for doc_id in ids).encode("ascii")))


def read_ids(path: str | os.PathLike) -> list[str]:
    """The ids `encode` wrote: OUTPUT.ids.jsonl, or the OUTPUT.ids.txt of older versions (one id
    per line as it was; such a file cannot hold an id with a line break)."""
    from embedrank.data.lines import numbered_lines
    from embedrank.errors import FormatError

    path = Path(path)
    if path.suffix == ".txt":
        return [line for _, line in numbered_lines(path)]
    ids = []
    for lineno, line in numbered_lines(path):
        try:
            doc_id = json.loads(line)
        except json.JSONDecodeError as error:
            raise FormatError(f"{path}:{lineno}: not a JSON string ({error.msg})") from None
        if not isinstance(doc_id, str):
            raise FormatError(f"{path}:{lineno}: expected a JSON string, got {type(doc_id).__name__}")
        ids.append(doc_id)
    return ids


def _encode(args: argparse.Namespace) -> int:
    from embedrank.data.corpus_files import read_corpus
    from embedrank.models.encoder import Encoder

    out = Path(args.output)
    if out.suffix != ".npy":
        raise UsageError(f"the output must be a .npy file, got {out}")
    corpus = read_corpus(args.input)
    options = dict(batch_size=args.batch_size, truncate_dim=args.truncate_dim, precision=args.precision,
                   show_progress=_progress(args), max_tokens_per_batch=args.max_tokens_per_batch)
    with Encoder.load(args.model, variant=args.variant, num_threads=args.threads) as encoder:
        if args.role == "queries":
            vectors = encoder.encode_queries([doc["text"] for doc in corpus.values()], **options)
        elif args.role == "documents":
            vectors = encoder.encode_documents(list(corpus.values()), **options)
        else:
            vectors = encoder.encode([doc["text"] for doc in corpus.values()], **options)
    # the ids first: a failure between the two writes leaves no new .npy without its ids
    ids_path = write_ids(ids_file(out), corpus)
    _replace_atomically(out, lambda f: np.save(f, vectors))
    stale = out.with_suffix(".ids.txt")  # what older versions wrote for this output: no longer its ids
    if stale.is_file():
        stale.unlink()
    print(f"{out}: {vectors.shape[0]} x {vectors.shape[1]} {vectors.dtype} (ids in {ids_path})")
    return 0


# -- index / search --------------------------------------------------------------------------

def _make_index(kind: str, dim: int, precision: str, rescore: str | None):
    from embedrank.index import FlatIndex, HNSWIndex

    if kind == "hnsw":
        if precision != "float32":
            raise UsageError("--index hnsw stores float32 vectors; --precision applies to --index flat")
        return HNSWIndex(dim)
    return FlatIndex(dim, precision=precision, rescore=rescore)


def _index(args: argparse.Namespace) -> int:
    from embedrank.data.corpus_files import read_corpus
    from embedrank.models.cross_encoder import CrossEncoder
    from embedrank.models.encoder import Encoder
    from embedrank.retrieval.retriever import Retriever

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise UsageError(f"{out} exists and is not empty (pass --overwrite to replace it)")
    corpus = read_corpus(args.data)
    encoder = Encoder.load(args.model, variant=args.variant, num_threads=args.threads)
    rescore = None if args.precision == "float32" else "float32"
    index = _make_index(args.index, encoder.dim, args.precision, rescore)
    reranker = (CrossEncoder.load(args.reranker, variant=args.reranker_variant, num_threads=args.threads)
                if args.reranker else None)
    lexical = None
    if args.lexical:
        from embedrank.index.lexical import LexicalIndex

        lexical = LexicalIndex(language=None if args.language == "none" else args.language)
    retriever = Retriever(encoder, index, reranker=reranker, candidates=args.candidates, top_k=args.top_k,
                          chunking=not args.no_chunking, first_stage_weight=args.first_stage_weight,
                          lexical=lexical, fusion=args.fusion, lexical_weight=args.lexical_weight)
    retriever.add(corpus, show_progress=_progress(args))
    retriever.save(out)
    print(f"{out}: {len(corpus)} documents, {len(index)} vectors ({args.index}, {args.precision})"
          f"{' + BM25 over the same windows' if lexical is not None else ''}")
    return 0


def _search(args: argparse.Namespace) -> int:
    from embedrank.retrieval.retriever import Retriever

    retriever = Retriever.load(args.retriever, num_threads=args.threads)
    results = retriever.search(args.queries, top_k=args.k, rerank=False if args.no_rerank else None,
                               show_progress=_progress(args), mode=args.mode)
    if args.json:
        print(json.dumps([[{"doc_id": h.doc_id, "score": float(h.score), "passage": h.passage} for h in hits]
                          for hits in results], ensure_ascii=False, indent=1))
        return 0
    for query, hits in zip(args.queries, results):
        print(f"? {query}")
        for rank, hit in enumerate(hits, 1):
            passage = " ".join(hit.passage.split())
            print(f"  {rank:2d}. [{hit.doc_id}] {hit.score:.4f}  {passage[:args.width]}"
                  f"{'...' if len(passage) > args.width else ''}")
    return 0


# -- eval ------------------------------------------------------------------------------------

def _read_qrels(path: str) -> dict:
    from embedrank.data.beir import read_beir_qrels
    from embedrank.data.evaluation import read_trec_qrels

    from embedrank.data.lines import numbered_lines

    first = next((line for _, line in numbered_lines(path)), "")
    return read_beir_qrels(path) if first.startswith("query-id") else read_trec_qrels(path)


def _print_metrics(result: dict, as_json: bool, per_query: bool) -> None:
    if as_json:
        print(json.dumps(result if per_query else {"mean": result["mean"]}, indent=1))
        return
    n = len(result["per_query"])
    print(f"{'metric':<14} {'mean':>8}   ({n} judged queries)")
    for name, value in result["mean"].items():
        print(f"{name:<14} {value:8.4f}")
    if per_query:
        for qid, values in result["per_query"].items():
            print(qid, " ".join(f"{name}={value:.4f}" for name, value in values.items()))


def _eval(args: argparse.Namespace) -> int:
    from embedrank.data.evaluation import DEFAULT_METRICS, evaluate, read_trec_run, write_trec_run

    metrics = args.metrics.split(",") if args.metrics else list(DEFAULT_METRICS)
    if args.run:
        if args.retriever or args.data:
            raise UsageError("give either --run with --qrels, or a retriever with --data")
        if not args.qrels:
            raise UsageError("--run needs --qrels (a BEIR qrels .tsv or a TREC qrels file)")
        run, qrels = read_trec_run(args.run), _read_qrels(args.qrels)
    else:
        if not (args.retriever and args.data):
            raise UsageError("give a retriever folder and --data BEIR_DIR (or --run RUN --qrels QRELS)")
        from embedrank.data.beir import load_beir
        from embedrank.retrieval.retriever import Retriever

        _, queries, qrels = load_beir(args.data, split=args.split)
        retriever = Retriever.load(args.retriever, num_threads=args.threads)
        ids = list(queries)
        hits = retriever.search([queries[q] for q in ids], top_k=args.depth,
                                rerank=False if args.no_rerank else None, show_progress=_progress(args),
                                mode=args.mode)
        run = {qid: {h.doc_id: float(h.score) for h in found} for qid, found in zip(ids, hits)}
        if args.save_run:
            write_trec_run(run, args.save_run, tag="embedrank")
    _print_metrics(evaluate(run, qrels, metrics), args.json, args.per_query)
    return 0


# -- bench / demo ----------------------------------------------------------------------------

def _bench(args: argparse.Namespace) -> int:
    from embedrank.bench.suite import SECTIONS, run_suite

    sections = args.sections.split(",") if args.sections else list(SECTIONS)
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise UsageError(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    report = run_suite(Path(args.out), sections, quick=args.quick, show_progress=_progress(args))
    print(report)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from embedrank.apps.demo import run_demo

    run_demo(data=args.data, cache_dir=args.cache_dir, questions=args.questions, quick=args.quick,
             show_progress=_progress(args))
    return 0


# -- the parser ------------------------------------------------------------------------------


def _add_train_commands(commands, common: argparse.ArgumentParser) -> None:
    try:
        from embedrank.apps.train_commands import register
    except ImportError as error:  # the train extra (torch) is missing: say so when used
        missing = str(error)
        for name in ("finetune", "train-reranker"):
            sub = commands.add_parser(name, parents=[common], help=f"{name} (needs: pip install 'embedrank[train]')")
            sub.set_defaults(handler=lambda args, missing=missing: (_ for _ in ()).throw(
                UsageError(f"needs the train extra (pip install 'embedrank[train]'): {missing}")))
        return
    register(commands)


def _add_serve_command(commands, common: argparse.ArgumentParser) -> None:
    from embedrank.serve.cli import register

    register(commands, common)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="no progress bars")
    common.add_argument("--threads", type=arguments.positive_int, default=None, help="threads for inference (default: all)")

    parser = argparse.ArgumentParser(prog="embedrank", description="Fast, correct embedding retrieval.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    export = commands.add_parser("export", parents=[common],
                                 help="export a local Hugging Face model folder to an embedrank model folder",
                                 description="Export a local Hugging Face model folder to ONNX (fp32, ORT-optimized "
                                             "and int8 variants), verified against the torch model. Fully offline.")
    export.add_argument("model_dir", help="local Hugging Face model folder")
    export.add_argument("out_dir", help="the embedrank model folder to write")
    export.add_argument("--kind", choices=("bi-encoder", "cross-encoder"), default="bi-encoder")
    export.add_argument("--no-optimize", action="store_true", help="skip the ORT-optimized variant")
    export.add_argument("--no-quantize", action="store_true", help="skip the int8 variant")
    export.add_argument("--pooled", action="store_true", help="also write a variant with pooling inside the graph")
    export.add_argument("--fp16", action="store_true", help="also write float16 variants (for the CUDA provider)")
    export.add_argument("--overwrite", action="store_true", help="replace a non-empty out_dir")
    export.set_defaults(handler=_export)

    encode = commands.add_parser("encode", parents=[common], help="embed a corpus into a .npy file",
                                 description="Embed every text of INPUT (a BEIR folder, a .jsonl file with "
                                             "\"text\" [\"title\", \"_id\"] per line, or a .txt file with one text "
                                             "per line) and write OUTPUT.npy plus OUTPUT.ids.jsonl (the id of row i "
                                             "on line i, as a JSON string).")
    encode.add_argument("model", help="embedrank model folder (see `embedrank export`)")
    encode.add_argument("input", help="BEIR folder, .jsonl or .txt")
    encode.add_argument("output", help="the .npy file to write")
    encode.add_argument("--role", choices=("documents", "queries", "plain"), default="documents",
                        help="apply the model's document or query prompt (default: documents)")
    encode.add_argument("--variant", choices=ENCODER_VARIANTS, default="fp32")
    encode.add_argument("--precision", choices=("float32", "int8", "uint8", "binary", "ubinary"), default="float32")
    encode.add_argument("--batch-size", type=arguments.positive_int, default=32)
    encode.add_argument("--max-tokens-per-batch", type=arguments.token_budget, default="auto",
                        help='padded tokens per batch: "auto" (1024 on a CPU, no cap on CUDA), "none" or a number')
    encode.add_argument("--truncate-dim", type=arguments.positive_int, default=None, help="Matryoshka truncation")
    encode.set_defaults(handler=_encode)

    index = commands.add_parser("index", parents=[common], help="build a retriever from a corpus",
                                description="Embed a corpus (BEIR folder, .jsonl or .txt), index it and save a "
                                            "retriever folder (model references, index, corpus) for `search`.")
    index.add_argument("--model", required=True, help="embedrank bi-encoder folder")
    index.add_argument("--data", required=True, help="BEIR folder, .jsonl or .txt")
    index.add_argument("--out", required=True, help="the retriever folder to write")
    index.add_argument("--index", choices=("flat", "hnsw"), default="flat")
    index.add_argument("--precision", choices=("float32", "int8", "binary"), default="float32",
                       help="flat index codes (int8 and binary are rescored with float32)")
    index.add_argument("--variant", choices=ENCODER_VARIANTS, default="fp32")
    index.add_argument("--reranker", default=None, help="embedrank cross-encoder folder (two-stage search)")
    index.add_argument("--reranker-variant", choices=RERANKER_VARIANTS, default="fp32")
    index.add_argument("--candidates", type=arguments.positive_int, default=100, help="first-stage candidates to rerank")
    index.add_argument("--top-k", type=arguments.positive_int, default=10)
    index.add_argument("--first-stage-weight", type=arguments.non_negative_float, default=0.0,
                       help="rerank score = cross-encoder logit + this x bi-encoder score (choose it on held-out queries)")
    index.add_argument("--no-chunking", action="store_true", help="embed documents whole (truncated)")
    index.add_argument("--lexical", action="store_true",
                       help="also index the windows with BM25 (hybrid search: see `search --mode`)")
    index.add_argument("--language", default="english",
                       help="the BM25 analyzer's Snowball stemmer language, or 'none' (with --lexical)")
    index.add_argument("--fusion", choices=("convex", "rrf"), default="convex",
                       help="hybrid fusion: min-max normalized scores mixed, or reciprocal rank fusion")
    index.add_argument("--lexical-weight", type=float, default=0.5, help="weight of the BM25 side in [0, 1]")
    index.add_argument("--overwrite", action="store_true")
    index.set_defaults(handler=_index)

    search = commands.add_parser("search", parents=[common], help="search a saved retriever",
                                 description="Answer queries with a retriever folder written by `embedrank index`.")
    search.add_argument("retriever", help="retriever folder")
    search.add_argument("queries", nargs="+", help="one or more queries")
    search.add_argument("-k", type=arguments.positive_int, default=None, help="results per query (default: the retriever's)")
    search.add_argument("--no-rerank", action="store_true", help="first stage only")
    search.add_argument("--mode", choices=("dense", "lexical", "hybrid"), default=None,
                        help="first stage (default: hybrid for a retriever built with --lexical, else dense)")
    search.add_argument("--json", action="store_true", help="print JSON")
    search.add_argument("--width", type=arguments.positive_int, default=120, help="passage characters shown")
    search.set_defaults(handler=_search)

    evaluate = commands.add_parser("eval", parents=[common], help="evaluate a run or a retriever",
                                   description="Either score a TREC run file against qrels (--run, --qrels), or "
                                               "run a retriever over a BEIR split and score it (RETRIEVER --data).")
    evaluate.add_argument("retriever", nargs="?", help="retriever folder (with --data)")
    evaluate.add_argument("--data", help="BEIR folder with the queries and qrels")
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument("--run", help="TREC run file")
    evaluate.add_argument("--qrels", help="BEIR qrels .tsv or TREC qrels file")
    evaluate.add_argument("--metrics", default=None,
                          help="comma-separated, e.g. ndcg@10,recall@100 (default: ndcg@10,recall@100,map@100,"
                               "mrr@10,precision@10)")
    evaluate.add_argument("--depth", type=arguments.positive_int, default=100, help="documents retrieved per query")
    evaluate.add_argument("--no-rerank", action="store_true")
    evaluate.add_argument("--mode", choices=("dense", "lexical", "hybrid"), default=None,
                        help="first stage (default: hybrid for a retriever built with --lexical, else dense)")
    evaluate.add_argument("--save-run", default=None, help="also write the run as a TREC file")
    evaluate.add_argument("--per-query", action="store_true")
    evaluate.add_argument("--json", action="store_true")
    evaluate.set_defaults(handler=_eval)

    _add_train_commands(commands, common)
    _add_serve_command(commands, common)

    bench = commands.add_parser("bench", parents=[common], help="run the benchmark suite and write a report",
                                description="Kernels, encoder, index, reranker, end-to-end and compression "
                                            "benchmarks against FP32 and the installed peers; writes report.md, "
                                            "PNG plots and JSON.")
    bench.add_argument("--out", default="bench-report", help="report folder (default: ./bench-report)")
    bench.add_argument("--sections", default=None, help="comma-separated subset of the sections")
    bench.add_argument("--quick", action="store_true", help="small sizes (minutes, not an hour)")
    bench.set_defaults(handler=_bench)

    demo = commands.add_parser("demo", parents=[common], help="the whole job on real data",
                               description="Export the default model, index a real corpus, answer example "
                                           "questions with two-stage retrieval and print the evaluation table.")
    demo.add_argument("--data", default=None, help="BEIR folder (default: ../shared/data/scifact if present)")
    demo.add_argument("--cache-dir", default=None, help="where models and embeddings are cached")
    demo.add_argument("--questions", type=arguments.positive_int, default=3, help="example questions to show")
    demo.add_argument("--quick", action="store_true", help="a smaller corpus sample")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        # commands registered by other modules (embedrank.apps.train_commands) may use `run`
        handler = args.handler if hasattr(args, "handler") else args.run
        return handler(args)
    except KeyboardInterrupt:
        print("embedrank: interrupted", file=sys.stderr)
        return 130
    except (EmbedrankError, OSError) as error:
        # What was asked cannot be done (embedrank's own errors), or a path or the machine
        # refused (a missing file, a permission, a full disk): one line, exit 2. Any other
        # exception is a bug in embedrank and keeps its traceback.
        print(f"embedrank {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
