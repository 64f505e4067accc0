"""embedrank.runtime.sessions: the token budget that max_tokens_per_batch="auto" resolves to, the padding
granularity and the graph fusions left out, per provider."""

from __future__ import annotations

import pytest

from embedrank.runtime import sessions
from embedrank.runtime.sessions import CPU, CPU_MAX_TOKENS_PER_BATCH, CUDA, CUDA_PAD_TO_MULTIPLE_OF, pad_multiple, token_budget


def test_auto_is_a_cap_on_cpu_and_none_on_cuda():
    assert token_budget("auto", CPU) == CPU_MAX_TOKENS_PER_BATCH == 1024
    assert token_budget("auto", CUDA) is None


@pytest.mark.parametrize("value", [None, 1, 77, 8192])
def test_explicit_values_pass_through(value):
    assert token_budget(value, CPU) == value
    assert token_budget(value, CUDA) == value


@pytest.mark.parametrize("value", [0, -5, 2.5, True, False, "AUTO", "1024", b"auto", [1024]])
def test_bad_values_name_the_setting(value):
    with pytest.raises(ValueError, match=r"max_tokens_per_batch must be a positive integer, None or \"auto\""):
        token_budget(value, CPU)


def test_padding_granularity_is_coarse_on_cuda_only():
    assert pad_multiple(CUDA) == CUDA_PAD_TO_MULTIPLE_OF > 1
    assert pad_multiple(CPU) == 1


def test_tokenizer_pads_to_a_multiple_but_never_past_max_length(minilm_source):
    from embedrank.models.tokenization import TextTokenizer

    tok = TextTokenizer(minilm_source / "tokenizer.json", max_length=40)
    encodings, _ = tok.encode(["a b c", "one two three four five six seven"])
    longest = max(len(e.ids) for e in encodings)
    plain = tok.pad(encodings)
    assert plain.input_ids.shape == (2, longest)
    padded = tok.pad(encodings, 8)
    assert padded.input_ids.shape[1] == -(-longest // 8) * 8
    assert (padded.attention_mask.sum(axis=1) == plain.attention_mask.sum(axis=1)).all()
    assert (padded.input_ids[:, :longest] == plain.input_ids).all()
    assert (padded.input_ids[:, longest:] == tok.pad_id).all()
    assert tok.pad(encodings, 32).input_ids.shape[1] == 32
    long_encodings, _ = tok.encode(["word " * 100])  # truncated at 40 tokens
    assert tok.pad(long_encodings, 32).input_ids.shape[1] == 40  # not 64: past max_length


@pytest.mark.parametrize("value", [0, -1, 2.0, True, "8", None])
def test_bad_padding_multiple_is_refused(minilm_source, value):
    from embedrank.models.tokenization import TextTokenizer

    tok = TextTokenizer(minilm_source / "tokenizer.json", max_length=40)
    encodings, _ = tok.encode(["a b c"])
    with pytest.raises(ValueError, match="multiple_of must be a positive integer"):
        tok.pad(encodings, value)


def test_fusions_are_left_out_on_the_cpu_provider_only():
    assert sessions.disabled_fusions([CPU]) == list(sessions.CPU_DISABLED_FUSIONS) == ["SkipLayerNormFusion"]
    assert sessions.disabled_fusions([CUDA, CPU]) == []
    assert sessions.disabled_fusions([CUDA]) == []


def _optimized_op_types(model_path, monkeypatch, tmp_path) -> set[str]:
    """The op types of the graph that make_session's session runs (saved by onnxruntime)."""
    import onnx
    import onnxruntime as ort

    real = ort.InferenceSession
    saved = tmp_path / f"optimized_{len(list(tmp_path.iterdir()))}.onnx"

    def saving_session(path, sess_options=None, **kwargs):
        sess_options.optimized_model_filepath = str(saved)
        return real(path, sess_options=sess_options, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", saving_session)
    sessions.make_session(model_path, [CPU], 1)
    monkeypatch.setattr(ort, "InferenceSession", real)
    return {node.op_type for node in onnx.load(str(saved), load_external_data=False).graph.node}


def test_cpu_session_runs_add_and_layer_norm_instead_of_skip_layer_norm(minilm_export, monkeypatch, tmp_path):
    # The int8 graph is where onnxruntime would fuse Add + LayerNormalization: with every fusion
    # on, the optimized graph has SkipLayerNormalization; embedrank's CPU session does not.
    int8 = minilm_export / "model_int8.onnx"
    with monkeypatch.context() as patch:
        patch.setattr(sessions, "CPU_DISABLED_FUSIONS", ())
        assert "SkipLayerNormalization" in _optimized_op_types(int8, monkeypatch, tmp_path)
    ops = _optimized_op_types(int8, monkeypatch, tmp_path)
    assert "SkipLayerNormalization" not in ops
    assert {"LayerNormalization", "DynamicQuantizeMatMul"} <= ops


def test_session_threads_are_capped_at_four_per_core(monkeypatch):
    monkeypatch.setattr(sessions, "available_cores", lambda: 2)
    assert sessions.check_session_threads(8) == 8
    assert sessions.check_session_threads(None) >= 1
    for too_many in (9, 1000):
        with pytest.raises(ValueError, match=rf"num_threads={too_many} is more than 4 threads per core .*at most 8"):
            sessions.check_session_threads(too_many)
    with pytest.raises(ValueError, match="at most 1024"):
        sessions.check_session_threads(100000)
