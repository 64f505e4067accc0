"""The native-attention benchmark's pieces (the real run is `python -m embedrank.bench.native_attention`)."""

from __future__ import annotations

import pytest

pytest.importorskip("onnx", reason="the op timing builds its graphs with onnx (the export extra)")

from embedrank.bench import native_attention as bench  # noqa: E402


def test_op_timings_time_both_forms_and_they_agree():
    result = bench.op_timings(shape=(2, 9, 64), runs=3, num_threads=1)
    assert result["shape"] == [2, 9, 64] and result["runs"] == 3
    for name in ("onnxruntime ops", "embedrank Attention"):
        assert 0 < result[name]["best_ms"] <= result[name]["median_ms"]
    assert result["max_abs_diff"] < 1e-4


def test_encoder_pair_differs_only_in_the_attention(minilm_export):
    pair = bench.encoder_pair(minilm_export, "fp32", num_threads=1)
    assert [e.native_attention_layers for e in pair.values()] == [6, 0]
    texts = ["a short query", "a somewhat longer document about proteins and cells " * 5]
    native, plain = (encoder.encode(texts) for encoder in pair.values())
    assert abs(native - plain).max() < 1e-5
