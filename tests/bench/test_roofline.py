"""embedrank.bench.roofline: the measured peaks and the timed-nodes breakdown of an encoder."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

from embedrank import _kernels
from embedrank.bench import roofline
from embedrank.errors import InvalidValueError
from embedrank.runtime import sessions
from embedrank.runtime.openvino_session import bf16_feature

FEATURES = set(_kernels.detected_features())
HIGHEST = _kernels.highest_isa()
# the instruction each precision times at the avx512 level, and the feature it needs
AVX512_LOOPS = {"fp32": ("vfmadd231ps zmm", "avx512f"), "bf16": ("vdpbf16ps zmm", "avx512_bf16"),
                "int8": ("vpdpbusd zmm", "avx512_vnni")}


@pytest.fixture
def isa_level():
    """Sets the active ISA level for one test; the highest again afterwards."""
    yield _kernels.set_isa
    _kernels.set_isa(HIGHEST)


@pytest.mark.parametrize("precision", list(AVX512_LOOPS))
def test_each_precision_times_its_instruction_or_names_what_is_missing(precision):
    instruction, feature = AVX512_LOOPS[precision]
    if HIGHEST == "avx512" and (feature in FEATURES or precision == "fp32"):
        one, two = (_kernels.measure_peak(precision, threads, 50_000) for threads in (1, 2))
        assert one["instruction"] == two["instruction"] == instruction
        assert math.isfinite(one["gops"]) and one["gops"] > 0 and one["seconds"] > 0
        # the count is threads x iterations x 16 chains x the instruction's operations
        lanes = {"fp32": 32, "bf16": 64, "int8": 128}[precision]
        assert one["gops"] == pytest.approx(50_000 * 16 * lanes / one["seconds"] / 1e9)
    elif precision != "fp32":
        with pytest.raises(ValueError, match=r"needs AVX512-(BF16|VNNI)"):
            _kernels.measure_peak(precision, 1, 1000)


@pytest.mark.skipif(HIGHEST == "scalar", reason="this CPU has no AVX2")
def test_lower_isa_levels_time_ymm_and_refuse_the_avx512_instructions(isa_level):
    isa_level("avx2")
    assert _kernels.measure_peak("fp32", 1, 10_000)["instruction"] == "vfmadd231ps ymm"
    for precision in ("bf16", "int8"):
        with pytest.raises(ValueError, match="lacks"):
            _kernels.measure_peak(precision, 1, 1000)
    isa_level("scalar")
    with pytest.raises(ValueError, match="active ISA level is scalar"):
        _kernels.measure_peak("fp32", 1, 1000)


@pytest.mark.parametrize("args, message", [
    (("fp16", 1, 10), "precision must be 'fp32', 'bf16' or 'int8', got 'fp16'"),
    (("fp32", 0, 10), "threads must be >= 1, got 0"),
    (("fp32", 1, 0), "iterations must be >= 1, got 0"),
    (("fp32", -3, 10), "threads must be >= 1, got -3"),
])
def test_bad_arguments_are_refused_by_name(args, message):
    with pytest.raises(ValueError, match=message):
        _kernels.measure_peak(*args)


def test_measured_peaks_time_what_the_cpu_has_and_derive_amx_from_the_fp32_clock():
    flags = {"fma": True, "avx2": True, "avx512f": HIGHEST == "avx512"}
    peaks = roofline.measured_peaks(1, flags, "AuthenticAMD", seconds=0.02)
    assert peaks["fp32"]["how"].startswith("measured: vfmadd231ps") and peaks["fp32"]["gops"] > 0
    assert peaks["bf16"] == {"gops": None, "how": "no instruction for this precision"}
    # no VNNI flag: the AVX2 int8 rate (64 per cycle) at the clock the fp32 timing implies
    ghz = peaks["fp32"]["implied_ghz"]
    assert peaks["int8"]["gops"] == pytest.approx(64 * ghz) and peaks["int8"]["how"].startswith("derived")
    amx = roofline.measured_peaks(1, {**flags, "avx512f": True, "amx_bf16": True, "amx_int8": True,
                                       "avx512_bf16": True, "avx512_vnni": True}, "GenuineIntel", seconds=0.02)
    for precision, per_cycle in (("bf16", 1024), ("int8", 2048)):
        assert amx[precision]["gops"] == pytest.approx(per_cycle * amx["fp32"]["implied_ghz"])
        assert "derived" in amx[precision]["how"]
    with pytest.raises(InvalidValueError, match="threads must be an integer >= 1"):
        roofline.measured_peaks(0, flags, "AuthenticAMD")


def test_flops_count_the_products_of_one_layer_by_hand():
    # one layer, h=2, i=4, T=3: per token 4*4 + 2*2*4 = 32 linear + 2*3*2 = 12 attention MACs
    assert roofline.flops_per_text(3, 1, 2, 4) == 2.0 * 3 * (32 + 12)
    linear, attention = roofline.gemm_flops(3, 1, 2, 4)
    assert linear == 2.0 * 3 * 32 and attention == 2.0 * 2 * 3 * 3 * 2
    assert linear + attention == roofline.flops_per_text(3, 1, 2, 4)


@pytest.mark.parametrize("op, category", [
    ("MatMul", "matrix products"), ("DynamicQuantizeMatMul", "matrix products"),
    ("MatMulIntegerToFloat", "matrix products"), ("Attention", "attention"),
    ("DynamicQuantizeLinear", "quantize activations"), ("SkipLayerNormalization", "layer norm"),
    ("Gelu", "activation (GELU)"), ("Add", "other graph nodes"), ("Gather", "other graph nodes"),
])
def test_onnxruntime_nodes_fall_in_their_category(op, category):
    assert roofline.ort_category(op) == category


@pytest.mark.parametrize("node, kernel, category", [
    ("FullyConnected", "brgemm_avx512_bf16", "matrix products"), ("Subgraph", "jit_avx512_bf16", "attention"),
    ("MVN", "jit_avx512_f32", "layer norm"), ("Eltwise", "jit_avx512_gelu_erf", "activation (GELU)"),
    ("Reorder", "jit_uni_bf16", "other graph nodes"),
])
def test_openvino_nodes_fall_in_their_category(node, kernel, category):
    assert roofline.ov_category(node, kernel) == category


def _check_breakdown(result, texts, encoder):
    seconds = result["seconds"]
    assert list(seconds) == list(roofline.CATEGORIES)
    assert sum(seconds.values()) == pytest.approx(result["wall_seconds"])
    assert all(value >= 0 for value in seconds.values()), seconds
    assert seconds["matrix products"] > 0 and result["gemm_gflops"] > 0
    useful = sum(len(e.ids) for e in encoder.tokenizer.encode(texts)[0])
    assert result["padded_tokens"] >= useful


MINILM_CONFIG = {"num_hidden_layers": 6, "hidden_size": 384, "intermediate_size": 1536}
TEXTS = ["a short query", "protein folding in the cell " * 20, "", "héllo wörld " * 7, "x"] * 3


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_onnxruntime_breakdown_accounts_for_the_wall_time(minilm_export, encoder, variant):
    result = roofline.time_breakdown(minilm_export, variant, TEXTS, 1, MINILM_CONFIG)
    _check_breakdown(result, TEXTS, encoder)
    assert result["seconds"]["attention"] > 0  # embedrank's fused kernel, timed as a node
    if variant == "int8":
        assert result["seconds"]["quantize activations"] >= 0


@pytest.mark.skipif(not (importlib.util.find_spec("openvino") and bf16_feature()),
                    reason="needs openvino and a CPU with AMX-BF16 or AVX512-BF16")
def test_openvino_breakdown_and_its_node_times(minilm_export, encoder):
    from embedrank.runtime.openvino_session import OpenVinoSession

    result = roofline.time_breakdown(minilm_export, "bf16", TEXTS, 1, MINILM_CONFIG)
    _check_breakdown(result, TEXTS, encoder)
    session = OpenVinoSession(encoder.config.variant_path("fp32"), 1, perf_counts=True)
    feeds = {"input_ids": np.array([[101, 7592, 102]]), "attention_mask": np.ones((1, 3), np.int64),
             "token_type_ids": np.zeros((1, 3), np.int64)}
    feeds = {v.name: feeds[v.name] for v in session.get_inputs()}
    session.run(None, feeds)
    once = session.node_times()
    session.run(None, feeds)
    twice = session.node_times()
    assert once and set(once) == set(twice) and sum(twice.values()) > sum(once.values())
    with pytest.raises(InvalidValueError, match="perf_counts=True"):
        OpenVinoSession(encoder.config.variant_path("fp32"), 1).node_times()


def test_a_bad_variant_and_a_profiled_bf16_session_are_refused(minilm_export, tmp_path):
    with pytest.raises(InvalidValueError, match="variant must be 'fp32', 'int8' or 'bf16', got 'fp16'"):
        roofline.time_breakdown(minilm_export, "fp16", TEXTS, 1, MINILM_CONFIG)
    with pytest.raises(InvalidValueError, match="profile_prefix is for onnxruntime sessions"):
        sessions.make_session(tmp_path / "model.onnx", None, 1, bf16=True, profile_prefix=str(tmp_path / "t"))


@pytest.mark.skipif(HIGHEST == "scalar", reason="this CPU has no AVX2")
def test_measured_peaks_follow_the_active_isa_level_not_the_cpu_flags(isa_level):
    from embedrank.bench.peers import cpu_info

    info = cpu_info()
    isa_level("avx2")
    peaks = roofline.measured_peaks(1, info["flags"], info["vendor"], seconds=0.02)
    assert peaks["fp32"]["how"].startswith("measured: vfmadd231ps ymm")
    assert peaks["bf16"]["gops"] is None  # vdpbf16ps is an AVX-512 instruction
    assert peaks["int8"]["how"].startswith("derived")
    isa_level("scalar")
    assert all(m["gops"] is None for m in roofline.measured_peaks(1, info["flags"], info["vendor"]).values())
