"""What running attention through embedrank's kernel (embedrank.runtime.attention_fusion) buys on a CPU.

Two measurements, each run both ways in the same process:
1. The attention core alone on [4, 256, 12 x 32] float32 (MiniLM's shape for a CPU batch):
   onnxruntime's unfused ops (Reshape, Transpose, MatMul, scale, mask Add, Softmax, MatMul,
   Transpose, Reshape) against the one ai.embedrank::Attention node the rewrite puts in
   their place, with 1 in 8 keys padded; best and median of many runs, one session at a time.
2. The Encoder on a seeded sample of SciFact documents (default 400), int8 and fp32, with
   native_attention on (the default) and off, in alternating rounds: median documents/s and
   the lowest cosine between the two sessions' vectors.

Run: python -m embedrank.bench.native_attention [--documents N --rounds R --threads T]
     [--model all-mpnet-base-v2]   (the encoder part only, on MPNet: its relative position
                                    bias goes to the kernel as a bias input)
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np

import embedrank
from embedrank.runtime import attention_fusion, sessions
from embedrank.bench.encoder import exported_model, exported_mpnet, model_cache_dir, seeded_sample
from embedrank.bench.outputs import add_output_arguments, default_data_dir, markdown_table, write_outputs
from embedrank.bench.session_fusions import encoder_rounds, encoder_rows, session_timing
from embedrank.utils.documents import document_text
from embedrank.utils.threads import available_cores

CORE_SHAPE = (4, 256, 384)  # batch, tokens, heads * head_dim
MODELS = ("all-MiniLM-L6-v2", "all-mpnet-base-v2")
HEAD_DIM = 32


def core_model(head_dim: int = HEAD_DIM):
    """The unfused attention core as exporters write it: q, k, v [B, T, W] float32 and
    attention_mask [B, T] int64 in, context [B, T, W] out."""
    from onnx import TensorProto, helper, numpy_helper

    constants = {"split_shape": np.array([0, 0, -1, head_dim], np.int64), "merge_shape": np.array([0, 0, -1], np.int64),
                 "mask_axes": np.array([1, 2], np.int64), "one": np.array(1.0, np.float32),
                 "mask_value": np.array(np.finfo(np.float32).min, np.float32),
                 "scale": np.array(np.sqrt(head_dim), np.float32)}
    n = helper.make_node
    nodes = [
        n("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        n("Unsqueeze", ["mask_f", "mask_axes"], ["mask_4d"]), n("Sub", ["one", "mask_4d"], ["inverted"]),
        n("Mul", ["inverted", "mask_value"], ["additive"]),
        n("Reshape", ["q", "split_shape"], ["q4"]), n("Transpose", ["q4"], ["qt"], perm=[0, 2, 1, 3]),
        n("Reshape", ["k", "split_shape"], ["k4"]), n("Transpose", ["k4"], ["kt"], perm=[0, 2, 3, 1]),
        n("Reshape", ["v", "split_shape"], ["v4"]), n("Transpose", ["v4"], ["vt"], perm=[0, 2, 1, 3]),
        n("MatMul", ["qt", "kt"], ["scores"]), n("Div", ["scores", "scale"], ["scaled"]),
        n("Add", ["scaled", "additive"], ["masked"]), n("Softmax", ["masked"], ["probs"], axis=-1),
        n("MatMul", ["probs", "vt"], ["context"]), n("Transpose", ["context"], ["context_t"], perm=[0, 2, 1, 3]),
        n("Reshape", ["context_t", "merge_shape"], ["y"]),
    ]
    value = lambda name, dtype: helper.make_tensor_value_info(name, dtype, ["batch", "tokens", "width"])  # noqa: E731
    graph = helper.make_graph(
        nodes, "attention_core", [value(name, TensorProto.FLOAT) for name in ("q", "k", "v")] +
        [helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "tokens"])],
        [value("y", TensorProto.FLOAT)], [numpy_helper.from_array(v, k) for k, v in constants.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def op_timings(shape: tuple[int, int, int] = CORE_SHAPE, runs: int = 100, num_threads: int = 2) -> dict:
    """Milliseconds (best, median) of the unfused core and of the fused op on `shape`, and the
    largest difference between their outputs."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    feeds = {name: rng.standard_normal(shape).astype(np.float32) for name in ("q", "k", "v")}
    mask = np.ones(shape[:2], np.int64)
    mask[:, -shape[1] // 8:] = 0
    feeds["attention_mask"] = mask
    fused = core_model()
    if attention_fusion.fuse_attention(fused) != 1:
        raise RuntimeError("the benchmark's attention core was not recognised by the rewrite")
    out: dict = {"shape": list(shape), "head_dim": HEAD_DIM, "runs": runs}
    outputs = {}
    for name, model in (("onnxruntime ops", core_model()), ("embedrank Attention", fused)):
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.log_severity_level = 3
        options.register_custom_ops_library(str(attention_fusion.library_path()))
        session = ort.InferenceSession(model.SerializeToString(), options, providers=[sessions.CPU])
        outputs[name], out[name] = session_timing(session, feeds, runs)
        del session
    out["max_abs_diff"] = float(np.abs(outputs["onnxruntime ops"] - outputs["embedrank Attention"]).max())
    return out


def encoder_pair(model_dir, variant: str, num_threads: int | None = None) -> dict:
    """Two Encoders of `variant`: with embedrank's attention kernel and with onnxruntime's ops."""
    return {"native attention": embedrank.Encoder.load(model_dir, variant=variant, num_threads=num_threads),
            "onnxruntime attention": embedrank.Encoder.load(model_dir, variant=variant, num_threads=num_threads,
                                                            native_attention=False)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=default_data_dir("scifact"))
    parser.add_argument("--documents", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--model", choices=MODELS, default=MODELS[0],
                        help="the encoder measured (the attention core alone is timed for the default only)")
    add_output_arguments(parser, "native_attention")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", embedrank.TruncationWarning)

    results: dict = {"model": args.model}
    rows = []
    if args.model == MODELS[0]:
        results["op"] = op = op_timings(num_threads=args.threads or available_cores())
        base_ms = op["onnxruntime ops"]["median_ms"]
        rows = [(f"attention core {tuple(CORE_SHAPE)}, {name}", f"{r['best_ms']:.2f} ms best, {r['median_ms']:.2f} ms median",
                 f"{base_ms / r['median_ms']:.2f}x")
                for name, r in ((k, op[k]) for k in ("onnxruntime ops", "embedrank Attention"))]
        print(rows, f"max abs diff {op['max_abs_diff']:.2e}", flush=True)

    corpus, _, _ = embedrank.load_beir(args.data, split="test")
    sample = seeded_sample([document_text(d) for d in corpus.values()], args.documents)
    model_dir = (exported_model(model_cache_dir()) if args.model == MODELS[0]
                 else exported_mpnet(model_cache_dir() / "all-mpnet-base-v2-embedrank"))
    results["documents"] = len(sample)
    for variant in ("int8", "fp32"):
        encoders = encoder_pair(model_dir, variant, args.threads)
        results[f"layers-{variant}"] = encoders["native attention"].native_attention_layers
        figures = encoder_rounds(encoders, sample, args.rounds)
        results[f"encoder-{variant}"] = figures
        rows += encoder_rows(variant, figures, "onnxruntime attention")
        print(rows[-2:], flush=True)
    table = markdown_table(("what", "time or rate", "x onnxruntime attention"), rows)
    print()
    print(table)
    write_outputs(args, results, table)


if __name__ == "__main__":
    main()
