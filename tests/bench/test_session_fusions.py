"""The session-fusion benchmark's pieces (the real run is `python -m embedrank.bench.session_fusions`)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx", reason="the op timing builds its graphs with onnx (the export extra)")

from embedrank.bench import session_fusions as bench  # noqa: E402


def test_op_timings_time_both_forms_and_they_agree():
    result = bench.op_timings(shape=(2, 5, 8), runs=3, num_threads=1)
    assert result["shape"] == [2, 5, 8] and result["runs"] == 3
    for name in ("SkipLayerNormalization", "Add + LayerNormalization"):
        assert 0 < result[name]["best_ms"] <= result[name]["median_ms"]
    assert result["max_abs_diff"] < 1e-5


class _Encoder:
    def __init__(self, vectors):
        self.vectors, self.calls = vectors, 0

    def encode(self, texts):
        self.calls += 1
        return self.vectors[: len(texts)]


def test_encoder_rounds_alternate_and_compare_vectors_to_the_first():
    a = np.eye(3, dtype=np.float32)
    b = np.array([[1, 0, 0], [0, 1, 0], [0, 0.6, 0.8]], dtype=np.float32)
    encoders = {"first": _Encoder(a), "second": _Encoder(b)}
    result = bench.encoder_rounds(encoders, ["x", "y", "z"], rounds=4)
    assert encoders["first"].calls == encoders["second"].calls == 5  # a warm-up, then 4 rounds
    assert len(result["first"]["rounds"]) == 4
    assert result["first"]["min_cosine_to_first"] == pytest.approx(1.0)
    assert result["second"]["min_cosine_to_first"] == pytest.approx(0.8)
    for figures in result.values():
        assert figures["best_per_s"] >= figures["median_per_s"] > 0


def test_encoder_pair_differs_only_in_the_fusions(minilm_export):
    pair = bench.encoder_pair(minilm_export, "int8", num_threads=1)
    assert list(pair) == ["fusions left out", "every fusion"]
    texts = ["a short query", "a somewhat longer document about proteins and cells " * 5]
    left_out, every = (encoder.encode(texts) for encoder in pair.values())
    assert (left_out * every).sum(axis=1).min() > 0.99


def test_encoder_rows_give_rates_and_ratios_to_the_baseline():
    figures = {"a": {"median_per_s": 30.0, "best_per_s": 32.0, "min_cosine_to_first": 1.0},
               "b": {"median_per_s": 20.0, "best_per_s": 21.0, "min_cosine_to_first": 0.99}}
    rows = bench.encoder_rows("int8", figures, "b")
    assert rows == [("Encoder int8, a", "30.0 docs/s median (best 32.0)", "1.50x, min cosine 1.0000"),
                    ("Encoder int8, b", "20.0 docs/s median (best 21.0)", "1.00x, min cosine 0.9900")]
