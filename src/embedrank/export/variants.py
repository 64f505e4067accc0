"""The variants written beside model.onnx: ONNX Runtime's fused graph (opt), dynamic int8, and
float16 for the CUDA provider. See embedrank.export.exporter's docstring for why each is built
the way it is."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

from embedrank.export import verify
from embedrank.export.source import SourceModel

__all__ = ["INT8_ALL_MATMULS_MIN_COSINE", "INT8_SETTINGS", "INT8_WARN_COSINE", "ffn_down_projections", "optimize_graph",
           "optimizer_settings", "quantize_dynamic_int8", "quantize_int8", "quiet_onnxruntime_tools", "to_float16"]

# model_int8.onnx is written anyway, with an ExportAccuracyWarning, when its worst cosine to
# the torch model on the sample is below this.
INT8_WARN_COSINE = 0.95


# A bi-encoder's int8 variant quantizes every MatMul weight when its worst cosine to the torch
# model on the sample stays at or above this; below it, the FFN down-projections stay fp32.
INT8_ALL_MATMULS_MIN_COSINE = 0.95


def to_float16(src: Path, dst: Path) -> None:
    """dst: src with float16 weights and activations; its inputs and outputs keep their types."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with quiet_onnxruntime_tools():
        model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))


def optimizer_settings(source: SourceModel) -> dict:
    return {"model_type": "bert", "num_heads": source.num_attention_heads, "hidden_size": source.hidden_size,
            "opt_level": 1, "use_gpu": False}


@contextlib.contextmanager
def quiet_onnxruntime_tools():
    """Silences the chatter of ORT's Python tools (log warnings and prints about shape inference
    and pre-processing): what they produce is verified, not trusted on their word."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"onnxruntime\..*")
            yield
    finally:
        logging.disable(previous)


def optimize_graph(src: Path, dst: Path, settings: dict) -> dict:
    from onnxruntime.transformers.optimizer import optimize_model

    with quiet_onnxruntime_tools():
        optimized = optimize_model(str(src), **settings)
    fused = {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}
    optimized.save_model_to_file(str(dst))
    return fused


INT8_SETTINGS = {"weight_type": "QInt8", "per_channel": True, "reduce_range": False, "source": "model.onnx",
                  "op_types": ["MatMul"]}


def ffn_down_projections(path: Path, intermediate_size: int, hidden_size: int) -> list[str]:
    """MatMul nodes whose weight is [intermediate_size, hidden_size]: the FFN's second linear layer.

    Its input (after GELU) has outlier activations that one dynamic uint8 scale per tensor
    resolves poorly; found by weight shape, not by node name, so any encoder family matches.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    return [node.name for node in model.graph.node
            if node.op_type == "MatMul" and any(shapes.get(name) == (intermediate_size, hidden_size)
                                                for name in node.input)]


def quantize_dynamic_int8(src: Path, dst: Path, keep: list[str], reduce_range: bool = INT8_SETTINGS["reduce_range"]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet_onnxruntime_tools():
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, nodes_to_exclude=keep,
                         op_types_to_quantize=INT8_SETTINGS["op_types"],
                         per_channel=INT8_SETTINGS["per_channel"], reduce_range=reduce_range)


def quantize_int8(src: Path, dst: Path, source: SourceModel, kind: str, measure) -> tuple[dict, dict]:
    """Writes model_int8.onnx; returns (settings, its measured error).

    Bi-encoders: every MatMul weight in int8 first; when the worst cosine to the torch model on
    the sample is below INT8_ALL_MATMULS_MIN_COSINE, quantized again with the FFN
    down-projections kept fp32 (all-mpnet-base-v2 needs it, all-MiniLM-L6-v2 does not).
    Cross-encoders keep them fp32 always (a logit has no cosine to judge by). A bi-encoder whose
    last try is still below INT8_WARN_COSINE is quantized once more with reduce_range (7-bit
    weights, which the saturating u8 x s8 kernels of CPUs without VNNI cannot overflow), kept
    when it measures better (recorded as an attempt with "reduce_range": true).
    `measure(path) -> dict` is the comparison with the torch model.
    """
    intermediate = int(next((source.config[k] for k in ("intermediate_size", "d_ff", "n_inner", "ffn_dim")
                             if isinstance(source.config.get(k), int)), 4 * source.hidden_size))
    down = ffn_down_projections(src, intermediate, source.hidden_size)
    tries = ([[]] if kind == "bi-encoder" and down else []) + [down]
    attempts = []
    for keep in tries:
        quantize_dynamic_int8(src, dst, keep)
        measured = measure(dst)
        attempts.append(verify.rounded({"n_kept_fp32": len(keep), **{k: measured[k] for k in ("min_cosine", "mean_cosine")
                                                                 if k in measured}}))
        if keep is tries[-1] or measured.get("min_cosine", 0.0) >= INT8_ALL_MATMULS_MIN_COSINE:
            break  # the last try, or the whole-int8 model is accurate enough
    reduce_range = False
    if kind == "bi-encoder" and measured.get("min_cosine", 1.0) < INT8_WARN_COSINE:
        # CPUs without VNNI (AVX2, AVX-512 without VNNI) multiply uint8 x int8 with vpmaddubsw,
        # whose int16 pair sums saturate when activations sit far from their zero point and
        # weights near +-127: all-mpnet-base-v2 fell to cosine ~0.1 on an AMD EPYC (AVX2).
        # 7-bit weights (reduce_range) cannot saturate; kept only when they measure better.
        retry_path = dst.with_name(dst.stem + "_reduce_range" + dst.suffix)
        quantize_dynamic_int8(src, retry_path, keep, reduce_range=True)
        retry = measure(retry_path)
        attempts.append(verify.rounded({"n_kept_fp32": len(keep), "reduce_range": True,
                                        **{k: retry[k] for k in ("min_cosine", "mean_cosine") if k in retry}}))
        if retry.get("min_cosine", 0.0) > measured.get("min_cosine", 0.0):
            retry_path.replace(dst)
            measured, reduce_range = retry, True
        else:
            retry_path.unlink()
    kept = "embedding tables (Gather)" + (", FFN down-projections" if keep else "")
    settings = dict(INT8_SETTINGS, method="onnxruntime.quantization.quantize_dynamic", kept_fp32=kept,
                    n_kept_fp32=len(keep), attempts=attempts, reduce_range=reduce_range)
    if kind == "bi-encoder":
        settings["all_matmuls_min_cosine"] = INT8_ALL_MATMULS_MIN_COSINE
    return settings, measured
