"""How close an encoder runs to the CPU's arithmetic limit, and where the rest of its time goes.

- ``flops_per_text``: the useful multiply-adds of one BERT-style text;
- ``measured_peaks``: each precision's peak on this machine, timed (embedrank._kernels.measure_peak)
  rather than read off a nominal clock; AMX peaks, which are not timed, are the clock those
  timings imply times the tiles' operations per cycle;
- ``time_breakdown``: one embedrank variant's wall time split into the graph's node kinds
  (onnxruntime's profiler, or OpenVINO's perf counters for bf16) and what runs outside the
  graph (tokenization, padding, pooling), with the matrix products' achieved GFLOP/s.

Used by benchmarks/bench_encoder_peers.py.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from embedrank.errors import InvalidValueError

__all__ = ["flops_per_text", "gemm_flops", "measured_peaks", "ort_category", "ov_category", "peak_ops_per_cycle",
           "time_breakdown"]

PRECISIONS = ("fp32", "bf16", "int8")


def flops_per_text(tokens: int, layers: int, hidden: int, intermediate: int) -> float:
    """Multiply-adds x 2 of one BERT-style text of `tokens` tokens: per layer, the Q/K/V/output
    projections (4 h^2 per token), the FFN (2 h i per token) and attention's QK^T and PV
    (2 T h per token). Embeddings, softmax, LayerNorm and GELU are left out (not GEMM work)."""
    return sum(gemm_flops(tokens, layers, hidden, intermediate))


def gemm_flops(tokens: int, layers: int, hidden: int, intermediate: int) -> tuple[float, float]:
    """(linear layers, attention) FLOPs of one sequence of `tokens` tokens (padded ones count
    when the graph computes them)."""
    linear = 2.0 * layers * tokens * (4 * hidden * hidden + 2 * hidden * intermediate)
    return linear, 2.0 * layers * 2 * tokens * tokens * hidden


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


def _timed_peak(precision: str, threads: int, seconds: float) -> dict:
    from embedrank import _kernels

    probe = _kernels.measure_peak(precision, threads, 200_000)
    iterations = max(1, int(200_000 * seconds / max(probe["seconds"], 1e-6)))
    best = max((_kernels.measure_peak(precision, threads, iterations) for _ in range(3)), key=lambda m: m["gops"])
    return {"gops": best["gops"], "how": f"measured: {best['instruction']}, {threads} threads"}


def measured_peaks(threads: int, flags: dict, vendor: str, seconds: float = 0.2) -> dict:
    """precision -> {"gops": G operations/s on `threads` cores (a multiply-add counts 2) or None,
    "how": what gave the figure}. fp32 is timed always (the FMA), and bf16 / int8 where
    AVX512-BF16 / AVX512-VNNI run them; with AMX the tiles set the peak, taken as the clock
    implied by the fp32 timing times the tile's operations per cycle; elsewhere the same
    implied clock times peak_ops_per_cycle. flags: the CPU's (cpu_info); features above the
    active ISA level (EMBEDRANK_ISA) are left out, since the kernels cannot use them."""
    from embedrank import _kernels

    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise InvalidValueError(f"threads must be an integer >= 1, got {threads!r}")
    level = _kernels.active_isa()
    if level == "scalar":
        return {p: {"gops": None, "how": "the scalar ISA level has no vector multiply-add to time"} for p in PRECISIONS}
    if level != "avx512":
        flags = {name: on for name, on in flags.items() if not name.startswith(("avx512", "amx"))}
    per_cycle = peak_ops_per_cycle(flags, vendor)
    out = {"fp32": _timed_peak("fp32", threads, seconds)}
    ghz = out["fp32"]["gops"] / threads / per_cycle["fp32"]
    out["fp32"]["implied_ghz"] = ghz
    for precision, flag, amx in (("bf16", "avx512_bf16", "amx_bf16"), ("int8", "avx512_vnni", "amx_int8")):
        if flags.get(amx) or (not flags.get(flag) and per_cycle[precision]):
            out[precision] = {"gops": ghz * per_cycle[precision] * threads,
                              "how": f"derived: {per_cycle[precision]} operations per cycle per core at the "
                                     f"{ghz:.2f} GHz the fp32 timing implies"}
        elif flags.get(flag):
            out[precision] = _timed_peak(precision, threads, seconds)
        else:
            out[precision] = {"gops": None, "how": "no instruction for this precision"}
    return out


# --------------------------------------------------------------------------- #
# Where the time goes
# --------------------------------------------------------------------------- #

CATEGORIES = ("matrix products", "attention", "quantize activations", "layer norm", "activation (GELU)",
              "other graph nodes", "the runtime between nodes", "outside the graph (tokenize, pad, pool)")

_ORT = {
    "matrix products": {"MatMul", "FusedMatMul", "Gemm", "MatMulInteger", "MatMulIntegerToFloat",
                        "DynamicQuantizeMatMul", "QGemm", "QLinearMatMul"},
    "attention": {"Attention", "MultiHeadAttention", "Softmax"},
    "quantize activations": {"DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear"},
    "layer norm": {"LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization",
                   "SkipSimplifiedLayerNormalization"},
    "activation (GELU)": {"Gelu", "BiasGelu", "FastGelu", "Erf", "QuickGelu"},
}


def ort_category(op_type: str) -> str:
    """The CATEGORIES entry of an onnxruntime node type."""
    return next((name for name, ops in _ORT.items() if op_type in ops), "other graph nodes")


def ov_category(node_type: str, exec_type: str) -> str:
    """The CATEGORIES entry of an OpenVINO CPU node (its type and the kernel it ran). A
    "Subgraph" (OpenVINO's snippets: the fused attention, and elementwise runs fused with it)
    counts as attention."""
    if node_type in ("FullyConnected", "MatMul", "Convolution"):
        return "matrix products"
    if node_type in ("ScaledDotProductAttention", "MHA", "Softmax", "SoftMax", "Subgraph"):
        return "attention"
    if node_type in ("MVN", "RMS", "NormalizeL2"):
        return "layer norm"
    if node_type in ("Gelu",) or "gelu" in exec_type.lower():
        return "activation (GELU)"
    if node_type in ("FakeQuantize", "DynamicQuantize"):
        return "quantize activations"
    return "other graph nodes"


class _TimedSession:
    """Answers like the wrapped session; records each run's wall time and padded input shape."""

    def __init__(self, session):
        self._session = session
        self.seconds = 0.0
        self.shapes: list[tuple[int, int]] = []

    def __getattr__(self, name):
        return getattr(self._session, name)

    def run(self, output_names, feeds, *args, **kwargs):
        start = time.perf_counter()
        out = self._session.run(output_names, feeds, *args, **kwargs)
        self.seconds += time.perf_counter() - start
        self.shapes.append(tuple(next(iter(feeds.values())).shape))
        return out


def _ort_node_seconds(trace_path: str, timed_runs: int) -> dict:
    """Node seconds per category over the last `timed_runs` runs of the trace (the runs before
    them, such as the fused session's smoke run, were not timed)."""
    events = json.loads(Path(trace_path).read_text())
    runs = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    start = runs[len(runs) - timed_runs] if 0 < timed_runs <= len(runs) else 0
    per_category = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time") and event["ts"] >= start:
            per_category[ort_category(event["args"]["op_name"])] += event["dur"] / 1e6
    return per_category


def time_breakdown(model_folder, variant: str, texts: list[str], threads: int, config: dict) -> dict:
    """One pass of Encoder(variant).encode(texts) with the graph's nodes timed.

    config: the model's config.json (num_hidden_layers, hidden_size, intermediate_size).
    Returns {"wall_seconds", "graph_seconds", "seconds": category -> seconds (CATEGORIES: the
    nodes' own times, the graph's wall time less their sum, and the time outside the session's
    run), "gemm_gflops": the linear layers' FLOPs on the padded tokens over the matrix
    products' time, "attention_gflops", "padded_tokens"}.
    The profilers cost time of their own, so these runs are not the speed figures.
    """
    import embedrank
    from embedrank.runtime import sessions
    from embedrank.runtime.openvino_session import OpenVinoSession

    if variant not in ("fp32", "int8", "bf16"):
        raise InvalidValueError(f"variant must be 'fp32', 'int8' or 'bf16', got {variant!r}")
    encoder = embedrank.Encoder.load(model_folder, variant=variant, num_threads=threads)
    path = encoder.config.variant_path(variant)
    with tempfile.TemporaryDirectory() as work:
        if variant == "bf16":
            profiled = OpenVinoSession(path, threads, perf_counts=True)
        else:
            # native_attention=True: an unfused graph would put attention's products among the
            # matrix products (or fail here, which says why)
            profiled, _ = sessions.make_session(path, "cpu", threads, native_attention=True,
                                                profile_prefix=str(Path(work) / "trace"))
        encoder.session = timed = _TimedSession(profiled)
        start = time.perf_counter()
        encoder.encode(texts)
        wall = time.perf_counter() - start
        if variant == "bf16":
            nodes = defaultdict(float)
            for (node_type, exec_type), seconds in profiled.node_times().items():
                nodes[ov_category(node_type, exec_type)] += seconds
        else:
            nodes = _ort_node_seconds(profiled.end_profiling(), len(timed.shapes))
    # the nodes run one after another (one inter-op thread), so their sum fits in the graph's time;
    # a profiler's rounding could still overshoot it, and then the nodes are scaled to fit
    scale = min(1.0, timed.seconds / (sum(nodes.values()) or 1.0))
    seconds = {name: nodes.get(name, 0.0) * scale for name in CATEGORIES[:-2]}
    seconds["the runtime between nodes"] = max(0.0, timed.seconds - sum(seconds.values()))  # (rounding)
    seconds["outside the graph (tokenize, pad, pool)"] = wall - timed.seconds
    layers, hidden, intermediate = (int(config[k]) for k in ("num_hidden_layers", "hidden_size", "intermediate_size"))
    linear = attention = 0.0
    for batch, length in timed.shapes:
        lin, att = gemm_flops(length, layers, hidden, intermediate)
        linear, attention = linear + batch * lin, attention + batch * att
    def rate(flops, category):
        return flops / seconds[category] / 1e9 if seconds[category] > 0 else None
    return {"variant": variant, "wall_seconds": wall, "graph_seconds": timed.seconds, "seconds": seconds,
            "padded_tokens": sum(b * t for b, t in timed.shapes), "gemm_gflops": rate(linear, "matrix products"),
            "attention_gflops": rate(attention, "attention")}
