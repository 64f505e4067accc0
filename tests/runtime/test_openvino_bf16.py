"""variant="bf16": the fp32 graph in bf16 on OpenVINO (embedrank.runtime.openvino_session).

The accuracy tests run where the CPU has AMX-BF16 or AVX512-BF16 and openvino is installed
(`make test` installs it); the refusals run everywhere."""

from __future__ import annotations

import importlib.util
import sys
import threading

import numpy as np
import pytest

import embedrank
from embedrank.errors import InvalidValueError, MissingDependencyError
from embedrank.runtime import openvino_session
from embedrank.runtime.openvino_session import OpenVinoSession, bf16_feature

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
BF16_CPU = bf16_feature()
needs_bf16 = pytest.mark.skipif(not (HAS_OPENVINO and BF16_CPU),
                                reason=f"needs openvino (installed: {HAS_OPENVINO}) and a CPU with AMX-BF16 or "
                                       f"AVX512-BF16 (this one: {BF16_CPU or 'neither'})")

TEXTS = ["hello world", "", "protein kinase inhibitors in breast cancer cell lines " * 12,
         "What is the boiling point of water at high altitude?", "ünïcödé and émojis 🙂 " * 5]


def test_bf16_feature_prefers_amx_and_reads_the_given_features():
    assert bf16_feature(["avx2", "avx512_bf16", "amx_bf16"]) == "amx_bf16"
    assert bf16_feature(["avx512f", "avx512_bf16"]) == "avx512_bf16"
    assert bf16_feature(["avx2", "fma", "avx512_vnni"]) is None


def test_a_cpu_without_bf16_is_refused_with_the_alternatives_named(tmp_path):
    with pytest.raises(InvalidValueError, match=r"AMX-BF16 or AVX512-BF16 .* use variant 'fp32'"):
        OpenVinoSession(tmp_path / "model.onnx", 2, detected=["avx2", "avx512_vnni"])


def test_missing_openvino_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(MissingDependencyError, match=r"embedrank\[openvino\]"):
        OpenVinoSession(tmp_path / "model.onnx", 2, detected=["amx_bf16"])


def test_unknown_variants_list_bf16(encoder):
    with pytest.raises(InvalidValueError, match=r"unknown variant 'bf8'.*int8.*bf16"):
        encoder.config.variant_path("bf8")
    with pytest.raises(InvalidValueError, match="unknown variant"):
        encoder.config.variant_path(["bf16"])
    # bf16 runs the fp32 file
    assert encoder.config.variant_path("bf16") == encoder.config.variant_path("fp32")


@needs_bf16
def test_bf16_refuses_gpu_providers_and_native_attention(minilm_export):
    with pytest.raises(InvalidValueError, match="runs on the CPU"):
        embedrank.Encoder.load(minilm_export, variant="bf16", providers="CUDAExecutionProvider")
    with pytest.raises(InvalidValueError, match="native_attention=True"):
        embedrank.Encoder.load(minilm_export, variant="bf16", native_attention=True)


@needs_bf16
def test_a_file_openvino_cannot_read_is_a_clear_error(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(InvalidValueError, match="could not be compiled by OpenVINO: (?!Exception from)") as caught:
        OpenVinoSession(bad, 1)
    assert "core.cpp" not in str(caught.value)


@needs_bf16
def test_bad_feeds_and_outputs_are_refused_before_inference(minilm_export):
    """OpenVINO would reuse a pooled request's previous input for a missing one, and cast floats."""
    session = OpenVinoSession(minilm_export / "model.onnx", 1)
    ids = np.full((1, 4), 101, dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    first = session.run(None, feeds)[0]
    assert first.shape[:2] == (1, 4)
    with pytest.raises(InvalidValueError, match="exactly the inputs"):
        session.run(None, {"input_ids": ids})
    with pytest.raises(InvalidValueError, match="must be a numpy array of tensor\\(int64\\), got float64"):
        session.run(None, dict(feeds, input_ids=ids.astype(np.float64)))
    with pytest.raises(InvalidValueError, match="got list"):
        session.run(None, dict(feeds, attention_mask=[[1, 1, 1, 1]]))
    with pytest.raises(InvalidValueError, match="unknown outputs"):
        session.run(["nope"], feeds)
    np.testing.assert_array_equal(session.run(None, feeds)[0], first)


@needs_bf16
def test_bf16_encoder_matches_fp32(minilm_export, encoder):
    bf16 = embedrank.Encoder.load(minilm_export, variant="bf16", num_threads=2)
    assert bf16.providers == [openvino_session.PROVIDER] and bf16.native_attention_layers == 0
    got, want = bf16.encode(TEXTS), encoder.encode(TEXTS)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cosines = (got * want).sum(axis=1)
    # bf16 keeps 8 bits of mantissa: measured >= 0.9999 on these texts; 0.999 leaves room for
    # other CPUs' accumulation order while still catching an fp32 fallback gone wrong
    assert cosines.min() > 0.999, cosines
    assert not np.array_equal(got, want)  # really bf16, not fp32 under another name


@needs_bf16
def test_bf16_retrieval_ranks_like_fp32(minilm_export, encoder, adi):
    corpus, queries, qrels = adi
    doc_ids = sorted(corpus)
    texts = [embedrank.utils.documents.document_text(corpus[d]) for d in doc_ids]
    query_texts = [queries[q] for q in sorted(queries)]
    bf16 = embedrank.Encoder.load(minilm_export, variant="bf16")
    results = {}
    for name, model in (("fp32", encoder), ("bf16", bf16)):
        scores = model.encode(query_texts) @ model.encode(texts).T
        top = np.argsort(-scores, axis=1)[:, :10]
        run = {q: {doc_ids[j]: float(scores[i, j]) for j in top[i]} for i, q in enumerate(sorted(queries))}
        results[name] = embedrank.evaluate(run, qrels, metrics=["ndcg@10"])["mean"]["ndcg@10"]
    assert abs(results["bf16"] - results["fp32"]) <= 0.005, results


@needs_bf16
def test_bf16_cross_encoder_matches_fp32(reranker):
    bf16 = embedrank.CrossEncoder(reranker.config, variant="bf16")
    pairs = [("what is water", text) for text in TEXTS] + [("kinase inhibitors", text) for text in TEXTS]
    got = bf16.predict(pairs, activation=None)
    want = reranker.predict(pairs, activation=None)
    # logits of a random-weight head: bf16 moves them by a small fraction of their spread
    np.testing.assert_allclose(got, want, atol=0.02 * float(np.ptp(want)) + 1e-3)
    assert not np.array_equal(got, want)


@needs_bf16
def test_bf16_encoder_is_thread_safe(minilm_export):
    """Concurrent calls each get their own infer request and their own output copies."""
    bf16 = embedrank.Encoder.load(minilm_export, variant="bf16", num_threads=1)
    inputs = [[f"thread {t} text {i} " * (1 + (t * 7 + i) % 20) for i in range(6)] for t in range(6)]
    expected = [bf16.encode(texts) for texts in inputs]
    got: list = [None] * len(inputs)
    errors: list = []

    def work(t):
        try:
            for _ in range(4):
                got[t] = bf16.encode(inputs[t])
                np.testing.assert_allclose(got[t], expected[t], atol=1e-6)
        except Exception as error:  # reported below, in the main thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]
