"""embedrank's cross-encoder against the fastest configurations a user could pick instead, one script.

    python benchmarks/bench_reranker_peers.py [--data ../shared/data/scifact] [--queries 30] [--docs 20] [--rounds 5]

The model: all-MiniLM-L6-v2 with a seeded one-label head (embedrank.bench.reranker's
``fresh_head_cross_encoder``; no pretrained cross-encoder exists offline, and the work per pair
is that of any MiniLM-L6 cross-encoder). Pairs: SciFact test queries with their judged
documents and random others (``scifact_pairs``), truncated at the folder's max_seq_length
(512). Systems, every one on the same CPU threads:

- sentence-transformers CrossEncoder: torch fp32, torch bf16, ONNX backend, ONNX dynamic int8
  (``export_dynamic_quantized_onnx_model`` with "avx512_vnni"), OpenVINO backend (default hint,
  bf16 where the CPU has it) and f32 hint, and OpenVINO + NNCF static int8 (the ONNX graph
  quantized by nncf, calibrated on Cranfield query/document pairs; skipped without nncf);
- embedrank CrossEncoder fp32, int8 and bf16.

The pairs are scored in ``--rounds`` interleaved chunks (embedrank.bench.encoder.interleaved_passes).
Agreement: Spearman's rank correlation and the largest difference to sentence-transformers
torch fp32's scores (sigmoid). GFLOP/s: the useful arithmetic of the truncated pairs
(``flops_per_text``) against this CPU's measured peak for the system's precision.

Writes benchmarks/results/reranker_peers_<cpu>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

import embedrank
from embedrank.bench.encoder import interleaved_passes
from embedrank.bench.peers import cpu_info
from embedrank.bench.reranker import fresh_head_cross_encoder, scifact_pairs, spearman
from embedrank.bench.roofline import flops_per_text, measured_peaks
from embedrank.utils.documents import document_text
from embedrank.utils.threads import available_cores

RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_encoder_peers import _ov_default_is_bf16, cpu_tag  # noqa: E402

ST_BATCH = 32
CALIBRATION_PAIRS = 200


def calibration_pairs(data: Path, n: int) -> list[tuple[str, str]] | None:
    """n Cranfield (query, document) pairs: each query with its judged documents first; None
    when Cranfield is not beside SciFact."""
    cranfield = data.parent / "cranfield"
    if not (cranfield / "corpus.jsonl").is_file():
        return None
    corpus, queries, qrels = embedrank.load_beir(cranfield, split="test")
    pairs = []
    for qid in sorted(qrels):
        pairs.extend((queries[qid], document_text(corpus[d])) for d in sorted(qrels[qid]) if d in corpus)
        if len(pairs) >= n:
            break
    return pairs[:n]


def st_systems(hf: Path, work: Path, threads: int, calibration) -> dict:
    import torch
    from sentence_transformers import CrossEncoder
    from sentence_transformers.backend import export_dynamic_quantized_onnx_model

    torch.set_num_threads(threads)
    folder = work / "cross-encoder"
    if not folder.exists():
        import shutil
        shutil.copytree(hf, folder)

    def load(**kwargs):
        return CrossEncoder(str(folder), device="cpu", **kwargs)

    exported = (folder / "onnx" / "model.onnx").is_file()
    onnx = load(backend="onnx", model_kwargs={"file_name": "onnx/model.onnx"} if exported else None)
    if not exported:
        onnx.save_pretrained(str(folder))
        export_dynamic_quantized_onnx_model(onnx, "avx512_vnni", str(folder))
    models = {
        "sentence-transformers torch fp32": ("fp32", load()),
        "sentence-transformers torch bf16": ("bf16", load(model_kwargs={"torch_dtype": torch.bfloat16})),
        "sentence-transformers ONNX": ("fp32", onnx),
        "sentence-transformers ONNX int8 (avx512_vnni)": ("int8", load(backend="onnx", model_kwargs={
            "file_name": "onnx/model_qint8_avx512_vnni.onnx"})),
        "sentence-transformers OpenVINO (default hint)": ("bf16" if _ov_default_is_bf16() else "fp32",
                                                          load(backend="openvino")),
        "sentence-transformers OpenVINO f32 hint": ("fp32", load(backend="openvino", model_kwargs={
            "ov_config": {"INFERENCE_PRECISION_HINT": "f32"}})),
    }
    static = _nncf_static_int8(folder, calibration)
    if static is not None:
        models["OpenVINO + NNCF static int8 (via sentence-transformers)"] = ("int8", load(
            backend="openvino", model_kwargs={"file_name": str(static.relative_to(folder))}))

    def scorer(model):
        return lambda pairs: np.asarray(model.predict(pairs, batch_size=ST_BATCH, show_progress_bar=False), np.float32)

    return {name: (precision, scorer(model)) for name, (precision, model) in models.items()}


def _nncf_static_int8(folder: Path, calibration) -> Path | None:
    try:
        import nncf
        import openvino as ov
    except ImportError:
        print("OpenVINO + NNCF static int8: skipped (nncf is not installed)", flush=True)
        return None
    if calibration is None:
        print("OpenVINO + NNCF static int8: skipped (no Cranfield pairs to calibrate on)", flush=True)
        return None
    from transformers import AutoTokenizer

    target = folder / "openvino" / "openvino_model_nncf_static_int8.xml"
    if not target.is_file():
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        items = [{k: np.asarray(v, dtype=np.int64) for k, v in tokenizer(
            query, document, truncation=True, max_length=512, return_tensors="np").items()}
            for query, document in calibration]
        quantized = nncf.quantize(ov.Core().read_model(str(folder / "onnx" / "model.onnx")), nncf.Dataset(items),
                                  model_type=nncf.ModelType.TRANSFORMER, subset_size=len(items))
        target.parent.mkdir(exist_ok=True)
        ov.save_model(quantized, str(target))
    return target


def embedrank_systems(export: Path, threads: int) -> dict:
    out = {}
    for variant in ("fp32", "int8", "bf16"):
        try:
            model = embedrank.CrossEncoder.load(export, variant=variant, num_threads=threads)
        except embedrank.errors.EmbedrankError as error:
            print(f"embedrank {variant}: skipped ({error})", flush=True)
            continue
        out[f"embedrank {variant}"] = (variant, lambda pairs, m=model: m.predict(pairs))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact")
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--docs", type=int, default=20, help="documents per query")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "embedrank-bench-reranker-peers")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not (args.data / "corpus.jsonl").is_file():
        sys.exit(f"SciFact not found at {args.data} (BEIR layout)")
    warnings.simplefilter("ignore", embedrank.TruncationWarning)
    threads = available_cores()
    hf, export = fresh_head_cross_encoder()
    pairs = scifact_pairs(args.data, args.queries, args.docs)
    args.work.mkdir(parents=True, exist_ok=True)
    systems = {**st_systems(hf, args.work, threads, calibration_pairs(args.data, CALIBRATION_PAIRS)),
               **embedrank_systems(export, threads)}
    for _, score in systems.values():  # warm-up
        score(pairs[:8])

    config = json.loads((hf / "config.json").read_text())
    tokenizer = embedrank.CrossEncoder.load(export, num_threads=1).tokenizer.tokenizer
    tokens = [len(e.ids) for e in tokenizer.encode_batch([list(p) for p in pairs])]
    tokens = [min(t, 512) for t in tokens]
    useful = sum(flops_per_text(t, config["num_hidden_layers"], config["hidden_size"], config["intermediate_size"])
                 for t in tokens)
    print(f"{len(pairs)} pairs, {sum(tokens)} tokens, {len(systems)} systems, {args.rounds} interleaved rounds", flush=True)
    scores, seconds = interleaved_passes({n: f for n, (_, f) in systems.items()}, pairs, args.rounds)
    info = cpu_info()
    peaks = {p: m["gops"] for p, m in measured_peaks(threads, info["flags"], info["vendor"]).items()}
    reference = "sentence-transformers torch fp32"
    rows = {}
    for name, (precision, _) in systems.items():
        total = sum(seconds[name])
        flat = scores[name].reshape(len(pairs))
        rows[name] = {"precision": precision, "pairs_per_s": len(pairs) / total, "seconds": seconds[name],
                      "spearman_vs_st_fp32": spearman(flat, scores[reference].reshape(len(pairs))),
                      "max_abs_diff_vs_st_fp32": float(np.abs(flat - scores[reference].reshape(len(pairs))).max()),
                      "gflops": useful / total / 1e9,
                      "of_peak": useful / total / 1e9 / peaks[precision] if peaks.get(precision) else None}
        print(name, json.dumps({k: v for k, v in rows[name].items() if k != "seconds"}), flush=True)
    for row in rows.values():
        row["x_st_fp32"] = row["pairs_per_s"] / rows[reference]["pairs_per_s"]
    peers = {n: r for n, r in rows.items() if not n.startswith("embedrank")}
    fastest = max(peers, key=lambda n: peers[n]["pairs_per_s"])
    results = {"cpu": info, "threads": threads, "python": platform.python_version(), "pairs": len(pairs),
               "queries": args.queries, "docs_per_query": args.docs, "tokens": sum(tokens), "rounds": args.rounds,
               "peaks": peaks, "fastest_peer": fastest, "systems": rows}
    stem = f"reranker_peers_{cpu_tag(info)}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=1))
    (args.out / f"{stem}.md").write_text(report(results, stem))
    print(report(results, stem))


def report(results: dict, stem: str) -> str:
    info, rows, fastest = results["cpu"], results["systems"], results["fastest_peer"]
    lines = ["# Cross-encoder speed against the peers' fastest configurations", "",
             f"CPU: **{info['model_name']}** (vendor {info['vendor']}, family {info['family']} model {info['model']}), "
             f"{results['threads']} threads for every system. Measured peaks (GOP/s): "
             + ", ".join(f"{p} {v:.0f}" for p, v in results["peaks"].items() if v) + ".", "",
             f"all-MiniLM-L6-v2 with a seeded one-label head, {results['pairs']} SciFact pairs ({results['queries']} "
             f"queries x {results['docs_per_query']} documents, {results['tokens']} tokens after truncation at 512), "
             f"{results['rounds']} interleaved rounds. Made by `benchmarks/bench_reranker_peers.py`; details in "
             f"{stem}.json.", "",
             "| system | precision | pairs/s | x ST fp32 | x fastest peer | Spearman vs ST fp32 | max abs diff | GFLOP/s | of peak |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        of_peak = "n/a" if row["of_peak"] is None else f"{100 * row['of_peak']:.0f}%"
        lines.append(f"| {'**' + name + '**' if name.startswith('embedrank') else name} | {row['precision']} | "
                     f"{row['pairs_per_s']:.1f} | {row['x_st_fp32']:.2f} | "
                     f"{row['pairs_per_s'] / rows[fastest]['pairs_per_s']:.2f} | {row['spearman_vs_st_fp32']:.4f} | "
                     f"{row['max_abs_diff_vs_st_fp32']:.2e} | {row['gflops']:.0f} | {of_peak} |")
    lines += ["", f"Fastest peer: {fastest}. Scores are sigmoid outputs; the head is random, so agreement with "
              "sentence-transformers fp32 is the quality measure, not NDCG."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
