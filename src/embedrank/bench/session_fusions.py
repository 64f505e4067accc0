"""Why CPU sessions leave out some of onnxruntime's graph fusions (sessions.CPU_DISABLED_FUSIONS).

Two measurements, each run both ways in the same process:
1. The fused op alone against the ops it replaces: SkipLayerNormalization against Add +
   LayerNormalization on [4, 256, 384] float32 (MiniLM's hidden states for a CPU batch), no
   graph optimization, best and median of many runs.
2. The Encoder on a seeded sample of SciFact documents (default 400), int8 and fp32, with the
   fusions left out (embedrank's default) and with every fusion on, in alternating rounds:
   median documents/s and the lowest cosine between the two sessions' vectors. The fusion
   applies to the int8 graph only; fp32 runs the same optimized graph both ways, so its ratio
   is the run's noise.

If a newer onnxruntime makes the fused kernel fast, (1) shows it and CPU_DISABLED_FUSIONS
should be emptied. Run: python -m embedrank.bench.session_fusions [--documents N --rounds R]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path
from unittest import mock

import numpy as np

import embedrank
from embedrank.runtime import sessions
from embedrank.bench.encoder import exported_model, model_cache_dir, seeded_sample
from embedrank.bench.outputs import add_output_arguments, default_data_dir, markdown_table, write_outputs
from embedrank.utils.documents import document_text
from embedrank.utils.threads import available_cores

SKIP_LAYER_NORM_SHAPE = (4, 256, 384)


def _op_session(fused: bool, shape: tuple[int, int, int], num_threads: int):
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    width = shape[-1]
    weights = [numpy_helper.from_array(rng.standard_normal(width).astype(np.float32), name) for name in ("gamma", "beta")]
    if fused:
        nodes = [helper.make_node("SkipLayerNormalization", ["x", "skip", "gamma", "beta"], ["y"],
                                  domain="com.microsoft", epsilon=1e-12)]
    else:
        nodes = [helper.make_node("Add", ["x", "skip"], ["sum"]),
                 helper.make_node("LayerNormalization", ["sum", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-12)]
    value = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))  # noqa: E731
    graph = helper.make_graph(nodes, "skip_layer_norm", [value("x"), value("skip")], [value("y")], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=[sessions.CPU])


def op_timings(shape: tuple[int, int, int] = SKIP_LAYER_NORM_SHAPE, runs: int = 200, num_threads: int = 2) -> dict:
    """Milliseconds (best, median) of SkipLayerNormalization and of Add + LayerNormalization on
    `shape`, and the largest difference between their outputs. One session at a time, so that
    one's spinning threads do not slow the other."""
    rng = np.random.default_rng(1)
    feeds = {name: rng.standard_normal(shape).astype(np.float32) for name in ("x", "skip")}
    out: dict = {"shape": list(shape), "runs": runs}
    outputs = {}
    for name, fused in (("SkipLayerNormalization", True), ("Add + LayerNormalization", False)):
        outputs[name], out[name] = session_timing(_op_session(fused, shape, num_threads), feeds, runs)
    out["max_abs_diff"] = float(np.abs(outputs["SkipLayerNormalization"] - outputs["Add + LayerNormalization"]).max())
    return out


def session_timing(session, feeds: dict, runs: int) -> tuple[np.ndarray, dict]:
    """(first output, {"best_ms", "median_ms"}) of `runs` timed calls after 5 warm-up calls.
    Time one session at a time: a live session's spinning threads slow another's."""
    for _ in range(5):
        output = session.run(None, feeds)[0]
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    return output, {"best_ms": min(times) * 1e3, "median_ms": float(np.median(times)) * 1e3}


def encoder_pair(model_dir, variant: str, num_threads: int | None = None) -> dict:
    """Two Encoders of `variant`: embedrank's default CPU session and one with every fusion on."""
    pair = {"fusions left out": embedrank.Encoder.load(model_dir, variant=variant, num_threads=num_threads)}
    with mock.patch.object(sessions, "CPU_DISABLED_FUSIONS", ()):
        pair["every fusion"] = embedrank.Encoder.load(model_dir, variant=variant, num_threads=num_threads)
    return pair


def encoder_rounds(encoders: dict, texts: list[str], rounds: int) -> dict:
    """Median and best texts/s of each encoder over `rounds` alternating passes over `texts`, and
    the lowest cosine between the first encoder's vectors and each other's."""
    vectors = {name: encoder.encode(texts) for name, encoder in encoders.items()}  # also the warm-up
    first = next(iter(vectors.values()))
    rates: dict = {name: [] for name in encoders}
    for _ in range(rounds):
        for name, encoder in encoders.items():
            start = time.perf_counter()
            encoder.encode(texts)
            rates[name].append(len(texts) / (time.perf_counter() - start))
    return {name: {"median_per_s": float(np.median(r)), "best_per_s": max(r), "rounds": r,
                   "min_cosine_to_first": float((vectors[name] * first).sum(axis=1).min())}
            for name, r in rates.items()}


def encoder_rows(variant: str, figures: dict, baseline: str) -> list[tuple[str, str, str]]:
    """Table rows of encoder_rounds' figures: rate, and ratio to the `baseline` encoder."""
    base = figures[baseline]["median_per_s"]
    return [(f"Encoder {variant}, {setting}", f"{f['median_per_s']:.1f} docs/s median (best {f['best_per_s']:.1f})",
             f"{f['median_per_s'] / base:.2f}x, min cosine {f['min_cosine_to_first']:.4f}")
            for setting, f in figures.items()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=default_data_dir("scifact"))
    parser.add_argument("--documents", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    add_output_arguments(parser, "session_fusions")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", embedrank.TruncationWarning)

    results: dict = {"disabled_on_cpu": list(sessions.CPU_DISABLED_FUSIONS)}
    results["op"] = op_timings(num_threads=args.threads or available_cores())
    rows = []
    for name in ("SkipLayerNormalization", "Add + LayerNormalization"):
        r = results["op"][name]
        rows.append((f"{name} {tuple(SKIP_LAYER_NORM_SHAPE)}", f"{r['best_ms']:.3f} ms best, {r['median_ms']:.3f} ms median", ""))
    print(rows[0], rows[1], flush=True)

    corpus, _, _ = embedrank.load_beir(args.data, split="test")
    docs = [document_text(d) for d in corpus.values()]
    sample = seeded_sample(docs, args.documents)
    model_dir = exported_model(model_cache_dir())
    results["documents"] = len(sample)
    for variant in ("int8", "fp32"):
        figures = encoder_rounds(encoder_pair(model_dir, variant, args.threads), sample, args.rounds)
        results[f"encoder-{variant}"] = figures
        rows += encoder_rows(variant, figures, "every fusion")
        print(rows[-2:], flush=True)
    table = markdown_table(("what", "time or rate", "x every fusion"), rows)
    print()
    print(table)
    write_outputs(args, results, table)


if __name__ == "__main__":
    main()
