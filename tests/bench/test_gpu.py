"""benchmarks/gpu/bench_gpu.py on a CPU: its batches, IO binding, pooling reference and report.

The whole script runs only where a GPU is lent (`--device cpu --quick` is its dry run, about
two minutes); these are the pieces that can be checked quickly everywhere.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from embedrank import kernels
from tests.conftest import REPO



@pytest.fixture(scope="module")
def bench_gpu():
    spec = importlib.util.spec_from_file_location("bench_gpu", REPO / "benchmarks" / "gpu" / "bench_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_synthetic_batch_is_cls_words_sep_without_padding(bench_gpu):
    feeds = bench_gpu.synthetic_batch(5, 7)
    assert {k: v.shape for k, v in feeds.items()} == {"input_ids": (5, 7), "attention_mask": (5, 7),
                                                       "token_type_ids": (5, 7)}
    ids = feeds["input_ids"]
    assert (ids[:, 0] == 101).all() and (ids[:, -1] == 102).all() and (ids[:, 1:-1] >= 1000).all()
    assert feeds["attention_mask"].all() and not feeds["token_type_ids"].any()
    assert (bench_gpu.synthetic_batch(5, 7)["input_ids"] == ids).all()  # seeded


def test_numpy_pool_matches_the_kernel_on_padded_rows():
    # the script's agreement line compares the C++ kernel with embedrank.export.verify.pool (numpy, float64)
    from embedrank.export.verify import pool

    rng = np.random.default_rng(0)
    hidden = rng.standard_normal((3, 9, 17)).astype(np.float32)
    mask = np.array([[1] * 9, [1] * 4 + [0] * 5, [1] + [0] * 8], dtype=np.int64)
    assert np.abs(pool(hidden, mask, "mean") - kernels.mean_pool_normalize(hidden, mask)).max() <= 1e-6


def test_io_binding_gives_what_a_plain_run_gives(bench_gpu, minilm_export):
    bound = bench_gpu.OrtBound(minilm_export / "model_fp16.onnx", "cpu")
    feeds = bench_gpu.synthetic_batch(2, 12)
    got = bound.to_host(bound.bind(feeds))
    plain = bound.session.run(None, {name: feeds[name] for name in bound.inputs})[0]
    assert got.shape == (2, 12, 384) and np.array_equal(got, plain)


def test_rate_counts_items_per_second(bench_gpu):
    calls = []
    value = bench_gpu.rate(lambda: calls.append(1), n_items=10, seconds=0.01)
    assert value > 0 and len(calls) >= 3 + 3  # warm-ups, then at least three timed runs


def test_report_reproduces_the_committed_tables(bench_gpu):
    results = json.loads((REPO / "benchmarks" / "results" / "gpu.json").read_text())
    report = bench_gpu.tables(results)
    committed = (REPO / "benchmarks" / "results" / "gpu.md").read_text()
    tables = report.split("\n## ", 1)[1]
    assert tables in committed
    assert "| embedrank pooled_fp16, pad to x32, batch 128 | 4,456 | 6,276 |" in report


def test_precisions_name_real_variants(bench_gpu):
    from embedrank.models.folder import DEFAULT_VARIANT_FILES

    for raws, pooled in bench_gpu.PRECISIONS.values():
        assert set(raws) | {pooled} <= set(DEFAULT_VARIANT_FILES)
