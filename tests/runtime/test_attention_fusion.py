"""embedrank.runtime.attention_fusion: the attention rewrite, the onnxruntime custom op, and the
encoder sessions that use them (equal outputs, recognised and refused graphs, bad inputs)."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from embedrank.runtime import attention_fusion, sessions  # noqa: E402
from embedrank.runtime.sessions import CPU  # noqa: E402
from tests.conftest import REPO

FINFO_MIN = float(np.finfo(np.float32).min)


def attention_graph(width: int = 64, head_dim: int = 32, mask_value: float = FINFO_MIN, scale_op: str = "Div",
                    extra_output: bool = False, scale_on_q: bool = False, softmax_axis: int | None = -1,
                    merge_shape: tuple = (0, 0, -1), opset: int = 17):
    """A one-layer encoder attention as exporters write it: x -> Q/K/V projections, Reshape +
    Transpose, QK^T, scale, additive key mask from attention_mask, Softmax, PV, Transpose,
    Reshape. Inputs x [B, T, width] float32 and attention_mask [B, T] int64; output y."""
    rng = np.random.default_rng(width + head_dim)
    inits = [numpy_helper.from_array((rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32), n)
             for n in ("wq", "wk", "wv")]
    inits += [numpy_helper.from_array(np.array([0, 0, -1, head_dim], np.int64), "split_shape"),
              numpy_helper.from_array(np.array(merge_shape, np.int64), "merge_shape"),
              numpy_helper.from_array(np.array([1, 2], np.int64), "mask_axes"),
              numpy_helper.from_array(np.array(1.0, np.float32), "one"),
              numpy_helper.from_array(np.array(mask_value, np.float32), "mask_value"),
              numpy_helper.from_array(np.array(np.sqrt(head_dim) if scale_op == "Div" else 1 / np.sqrt(head_dim),
                                               np.float32), "scale")]
    n = helper.make_node
    nodes = [
        n("MatMul", ["x", "wq"], ["q"]), n("MatMul", ["x", "wk"], ["k"]), n("MatMul", ["x", "wv"], ["v"]),
        n("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        n("Unsqueeze", ["mask_f", "mask_axes"], ["mask_4d"]),
        n("Sub", ["one", "mask_4d"], ["inverted"]),
        n("Mul", ["inverted", "mask_value"], ["additive"]),
        n("Reshape", ["q", "split_shape"], ["q4"]), n("Transpose", ["q4"], ["qt"], perm=[0, 2, 1, 3]),
        n("Reshape", ["k", "split_shape"], ["k4"]), n("Transpose", ["k4"], ["kt"], perm=[0, 2, 3, 1]),
        n("Reshape", ["v", "split_shape"], ["v4"]), n("Transpose", ["v4"], ["vt"], perm=[0, 2, 1, 3]),
    ]
    if scale_on_q:  # the scale applied to Q before the product: not the pattern the rewrite knows
        nodes[8] = n("Transpose", ["q4"], ["qt0"], perm=[0, 2, 1, 3])
        nodes.append(n(scale_op, ["qt0", "scale"], ["qt"]))
        nodes += [n("MatMul", ["qt", "kt"], ["scaled"])]
    else:
        nodes += [n("MatMul", ["qt", "kt"], ["scores"]), n(scale_op, ["scores", "scale"], ["scaled"])]
    nodes += [
        n("Add", ["scaled", "additive"], ["masked"]),
        n("Softmax", ["masked"], ["probs"]) if softmax_axis is None else n("Softmax", ["masked"], ["probs"], axis=softmax_axis),
        n("MatMul", ["probs", "vt"], ["context"]), n("Transpose", ["context"], ["context_t"], perm=[0, 2, 1, 3]),
        n("Reshape", ["context_t", "merge_shape"], ["y"]),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if extra_output:
        outputs.append(helper.make_tensor_value_info("probs", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "attention", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "tokens", width]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "tokens"])], outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def plain_session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=[CPU])


def fused_session(model, threads: int = 2):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.register_custom_ops_library(str(attention_fusion.library_path()))
    return ort.InferenceSession(model.SerializeToString(), options, providers=[CPU])


def feeds(batch, tokens, width, seed=0, all_masked_row=False):
    rng = np.random.default_rng(seed)
    mask = (rng.random((batch, tokens)) < 0.7).astype(np.int64)
    mask[:, 0] = 1
    if all_masked_row:
        mask[-1] = 0
    return {"x": rng.standard_normal((batch, tokens, width)).astype(np.float32), "attention_mask": mask}


def test_the_library_is_installed_next_to_the_extension():
    path = attention_fusion.library_path()
    assert path.name == attention_fusion.LIBRARY_NAME and path.is_file()


@pytest.mark.parametrize("width,head_dim", [(64, 32), (64, 16), (128, 64), (48, 24), (5, 1)])
@pytest.mark.parametrize("scale_op", ["Div", "Mul"])
def test_fused_graph_equals_the_unfused_one_on_every_row(width, head_dim, scale_op):
    model = attention_graph(width, head_dim, scale_op=scale_op)
    plain = plain_session(model)
    fused_model = attention_graph(width, head_dim, scale_op=scale_op)
    assert attention_fusion.fuse_attention(fused_model) == 1
    ops = [node.op_type for node in fused_model.graph.node]
    assert "Softmax" not in ops and "Transpose" not in ops and ops.count("Attention") == 1
    # the mask's subgraph, the reshape targets and the scale went with the nodes that read them
    assert {i.name for i in fused_model.graph.initializer} == {"wq", "wk", "wv"}
    assert {n.op_type for n in fused_model.graph.node} == {"MatMul", "Attention"}
    fused = fused_session(fused_model)
    for batch, tokens in ((1, 1), (3, 7), (2, 33), (4, 130)):
        for threads_seed in range(2):
            x = feeds(batch, tokens, width, seed=threads_seed, all_masked_row=batch > 1)
            np.testing.assert_allclose(fused.run(None, x)[0], plain.run(None, x)[0], rtol=1e-4, atol=1e-5,
                                       err_msg=f"batch {batch}, tokens {tokens}")


def test_single_threaded_session_runs_the_op_too():
    model = attention_graph()
    expected = plain_session(model).run(None, feeds(2, 9, 64))[0]
    attention_fusion.fuse_attention(model)
    np.testing.assert_allclose(fused_session(model, threads=1).run(None, feeds(2, 9, 64))[0], expected, rtol=1e-4,
                               atol=1e-5)


@pytest.mark.parametrize("kwargs,why", [
    ({"mask_value": -10000.0}, "a mild mask (a fully padded row would not attend uniformly)"),
    ({"mask_value": 10000.0}, "padded keys favoured, not masked"),
    ({"scale_on_q": True}, "the scale applied to Q before the product"),
    ({"extra_output": True}, "the probabilities are read elsewhere"),
    ({"softmax_axis": 1}, "softmax over heads"),
    ({"softmax_axis": None, "opset": 12}, "before opset 13 Softmax's default axis is 1"),
    ({"merge_shape": (0, 0, 2, -1)}, "the context is not reshaped back to [B, T, hidden]"),
])
def test_graphs_that_are_not_a_plain_padded_attention_are_left_alone(kwargs, why):
    model = attention_graph(**kwargs)
    before = model.SerializeToString()
    assert attention_fusion.fuse_attention(model) == 0, why
    assert model.SerializeToString() == before


def test_a_mask_that_reads_another_input_is_refused():
    model = attention_graph()
    graph = model.graph
    graph.input.append(helper.make_tensor_value_info("bias", TensorProto.FLOAT, ["batch", 1, 1, "tokens"]))
    mul = next(node for node in graph.node if node.output[0] == "additive")
    mul.output[0] = "additive_0"
    graph.node.insert(list(graph.node).index(mul) + 1, helper.make_node("Add", ["additive_0", "bias"], ["additive"]))
    assert attention_fusion.fuse_attention(model) == 0


def test_a_mask_that_other_ids_change_is_refused():
    # the mask's subgraph reads a second int64 input (segment ids) that changes it: not a plain
    # key padding mask, whatever the probe masks give
    model = attention_graph()
    graph = model.graph
    graph.input.append(helper.make_tensor_value_info("segment", TensorProto.INT64, ["batch", "tokens"]))
    cast = next(node for node in graph.node if node.op_type == "Cast")
    cast.input[0] = "mask_and_segment"
    graph.node.insert(0, helper.make_node("Mul", ["attention_mask", "segment"], ["mask_and_segment"]))
    assert attention_fusion.fuse_attention(model) == 0


def _with_position_mask(kind: str, window: int = 8):
    """attention_graph() whose additive mask also blocks keys by position: "sliding" (|i - j| >
    window, ModernBERT's local attention) or "causal" (j > i, a decoder), built from the shape of
    attention_mask as exporters build it."""
    model = attention_graph()
    graph = model.graph
    n = helper.make_node
    graph.initializer.extend([numpy_helper.from_array(np.array(v, np.int64), name) for name, v in
                              (("i0", 0), ("i1", 1), ("window", window), ("ax0", [0]), ("ax1", [1]))])
    nodes = [n("Shape", ["attention_mask"], ["shape"]), n("Gather", ["shape", "i1"], ["tokens"], axis=0),
             n("Range", ["i0", "tokens", "i1"], ["pos"]),
             n("Unsqueeze", ["pos", "ax1"], ["rows"]), n("Unsqueeze", ["pos", "ax0"], ["cols"]),
             n("Sub", ["cols", "rows"], ["offset"])]
    if kind == "sliding":
        nodes += [n("Abs", ["offset"], ["distance"]), n("Greater", ["distance", "window"], ["blocked"])]
    else:
        nodes += [n("Greater", ["offset", "i0"], ["blocked"])]
    nodes += [n("Cast", ["blocked"], ["blocked_f"], to=TensorProto.FLOAT),
              n("Mul", ["blocked_f", "mask_value"], ["position_additive"]),
              n("Add", ["additive", "position_additive"], ["combined"])]
    add = next(node for node in graph.node if node.op_type == "Add" and node.input[0] == "scaled")
    add.input[1] = "combined"
    at = list(graph.node).index(add)
    for offset, node in enumerate(nodes):
        graph.node.insert(at + offset, node)
    return model


@pytest.mark.parametrize("kind, words", [("sliding", "sliding-window mask"), ("causal", "causal mask")])
def test_a_position_mask_is_refused_and_explained(kind, words, monkeypatch):
    """A sliding window wider than the short probes looks like a padding mask on them: the long
    probe (LONG_PROBE_TOKENS) tells it apart. explain() names the mask."""
    model = _with_position_mask(kind)
    report = attention_fusion.explain(model)
    assert (report["layers"], report["fused"], list(report["fallback"].values())) == (1, 0, [1])
    assert words in next(iter(report["fallback"]))
    assert attention_fusion.fuse_attention(model) == 0
    # without the long probe the 8-token window passes for a padding mask (what used to happen)
    monkeypatch.setattr(attention_fusion, "LONG_PROBE_TOKENS", ())
    assert attention_fusion.fuse_attention(_with_position_mask(kind)) == (1 if kind == "sliding" else 0)


def with_position_bias(model, kind: str = "shared", heads: int = 2):
    """`model` (attention_graph) with a relative position bias added to the scaled scores, as
    MPNet and T5 do: bias[h, i, j] = table[clip(j - i, -4, 4) + 4, h], computed from the token
    count. kind: "shared" ([1, H, T, T]), "expanded" (copied over the batch, [B, H, T, T], as
    MPNet's export does), "mask_first" ((scores + mask) + bias), "broadcast" (a [1, H, 1, 1]
    constant, which the op does not take)."""
    graph = model.graph
    rng = np.random.default_rng(7)
    n = helper.make_node
    add = next(node for node in graph.node if node.op_type == "Add" and node.input[0] == "scaled")
    at = list(graph.node).index(add)
    if kind == "broadcast":
        graph.initializer.append(numpy_helper.from_array(np.full((1, heads, 1, 1), 0.5, np.float32), "bias"))
        nodes = []
    else:
        graph.initializer.extend([
            numpy_helper.from_array((rng.standard_normal((9, heads)) * 2).astype(np.float32), "table"),
            numpy_helper.from_array(np.array(0, np.int64), "zero"), numpy_helper.from_array(np.array(1, np.int64), "one_i"),
            numpy_helper.from_array(np.array(-4, np.int64), "lo"), numpy_helper.from_array(np.array(4, np.int64), "hi"),
            numpy_helper.from_array(np.array([0], np.int64), "axis0"), numpy_helper.from_array(np.array([1], np.int64), "axis1"),
            numpy_helper.from_array(np.array([heads], np.int64), "heads_dim")])
        nodes = [n("Shape", ["attention_mask"], ["mask_shape"]), n("Gather", ["mask_shape", "one_i"], ["count"], axis=0),
                 n("Range", ["zero", "count", "one_i"], ["positions"]),
                 n("Unsqueeze", ["positions", "axis0"], ["row_pos"]), n("Unsqueeze", ["positions", "axis1"], ["col_pos"]),
                 n("Sub", ["row_pos", "col_pos"], ["relative"]), n("Clip", ["relative", "lo", "hi"], ["clipped"]),
                 n("Add", ["clipped", "hi"], ["bucket"]), n("Gather", ["table", "bucket"], ["values"], axis=0),
                 n("Transpose", ["values"], ["per_head"], perm=[2, 0, 1]),
                 n("Unsqueeze", ["per_head", "axis0"], ["bias" if kind != "expanded" else "bias_1"])]
        if kind == "expanded":
            nodes += [n("Gather", ["mask_shape", "zero"], ["batch"], axis=0),
                      n("Unsqueeze", ["batch", "axis0"], ["batch_1d"]), n("Unsqueeze", ["count", "axis0"], ["count_1d"]),
                      n("Concat", ["batch_1d", "heads_dim", "count_1d", "count_1d"], ["bias_shape"], axis=0),
                      n("Expand", ["bias_1", "bias_shape"], ["bias"])]
    if kind == "mask_first":
        nodes.append(n("Add", ["masked_first", "bias"], ["masked"]))
        add.output[0] = "masked_first"
        graph.node.insert(at + 1, nodes.pop())
    else:
        nodes.append(n("Add", ["scaled", "bias"], ["scaled_biased"]))
        add.input[0] = "scaled_biased"
    for offset, node in enumerate(nodes):
        graph.node.insert(at + offset, node)
    return model


@pytest.mark.parametrize("kind", ["shared", "expanded", "mask_first"])
@pytest.mark.parametrize("width,head_dim", [(64, 32), (48, 24)])
def test_a_position_bias_becomes_the_ops_bias_input(kind, width, head_dim):
    heads = width // head_dim
    model = with_position_bias(attention_graph(width, head_dim), kind, heads)
    plain = plain_session(model)
    fused_model = with_position_bias(attention_graph(width, head_dim), kind, heads)
    assert attention_fusion.explain(fused_model) == {"layers": 1, "fused": 1, "fallback": {}}
    assert attention_fusion.fuse_attention(fused_model) == 1
    ops = [node.op_type for node in fused_model.graph.node]
    assert "Softmax" not in ops and "Expand" not in ops, "the op reads the bias before its copy over the batch"
    attention = next(node for node in fused_model.graph.node if node.op_type == "Attention")
    assert len(attention.input) == 5
    fused = fused_session(fused_model)
    for batch, tokens in ((1, 1), (3, 7), (2, 33), (4, 20)):
        x = feeds(batch, tokens, width, seed=tokens, all_masked_row=batch > 1)
        expected = plain.run(None, x)[0]
        np.testing.assert_allclose(fused.run(None, x)[0], expected, rtol=1e-4, atol=1e-5,
                                   err_msg=f"batch {batch}, tokens {tokens}")
    unbiased = plain_session(attention_graph(width, head_dim)).run(None, feeds(2, 9, width))[0]
    assert np.abs(unbiased - plain.run(None, feeds(2, 9, width))[0]).max() > 1e-2, "the bias must matter"


def test_explain_names_a_bias_the_op_cannot_take_and_counts_fused_cores():
    assert attention_fusion.explain(attention_graph()) == {"layers": 1, "fused": 1, "fallback": {}}
    model = with_position_bias(attention_graph(), "broadcast")
    report = attention_fusion.explain(model)
    assert report["fused"] == 0
    assert "not [1 or batch, heads, tokens, tokens]" in next(iter(report["fallback"]))
    assert attention_fusion.fuse_attention(model) == 0


def test_the_op_refuses_a_bias_of_the_wrong_shape():
    model = with_position_bias(attention_graph(), "shared")
    assert attention_fusion.fuse_attention(model) == 1
    attention = next(node for node in model.graph.node if node.op_type == "Attention")
    model.graph.initializer.append(numpy_helper.from_array(np.zeros((1, 3, 7, 7), np.float32), "wrong_bias"))
    attention.input[4] = "wrong_bias"
    with pytest.raises(Exception, match=r"bias has shape \[1, 3, 7, 7\], expected \[1 or 2, 2, 7, 7\]"):
        fused_session(model).run(None, feeds(2, 7, 64))


def test_softmax_with_its_default_axis_is_fused_from_opset_13():
    assert attention_fusion.fuse_attention(attention_graph(softmax_axis=None)) == 1


def test_the_op_gives_the_same_outputs_at_every_isa_level():
    import subprocess
    import sys

    from embedrank import _kernels
    from embedrank.kernels import ISA_LEVELS

    code = (
        "import numpy as np\n"
        "from tests.runtime.test_attention_fusion import attention_graph, plain_session, fused_session, feeds\n"
        "from embedrank.runtime import attention_fusion\n"
        "for width, head_dim in ((64, 32), (128, 64), (48, 16), (48, 24)):\n"
        "    model = attention_graph(width, head_dim)\n"
        "    x = feeds(3, 37, width, all_masked_row=True)\n"
        "    expected = plain_session(model).run(None, x)[0]\n"
        "    attention_fusion.fuse_attention(model)\n"
        "    got = fused_session(model).run(None, x)[0]\n"
        "    assert np.allclose(got, expected, rtol=1e-4, atol=1e-5), (width, head_dim, abs(got - expected).max())\n"
        "print('same outputs')\n")
    levels = ISA_LEVELS[: ISA_LEVELS.index(_kernels.highest_isa()) + 1]
    root = REPO
    for level in levels:
        result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120,
                                env={**__import__("os").environ, "EMBEDRANK_ISA": level})
        assert result.returncode == 0 and "same outputs" in result.stdout, (level, result.stderr[-2000:])


def test_a_missing_library_falls_back_with_a_warning(tmp_path, monkeypatch):
    path = tmp_path / "attention.onnx"
    onnx.save(attention_graph(), str(path))

    def missing():
        raise FileNotFoundError("embedrank's onnxruntime custom-op library is missing: /nowhere")

    monkeypatch.setattr(attention_fusion, "library_path", missing)
    with pytest.warns(RuntimeWarning, match="custom-op library is missing.*running onnxruntime's own attention"):
        session, fused = sessions.make_session(path, [CPU], 1)
    assert fused == 0 and session.run(None, feeds(1, 4, 64))[0].shape == (1, 4, 64)
    with pytest.raises(ValueError, match="custom-op library is missing"):
        sessions.make_session(path, [CPU], 1, native_attention=True)


def test_a_graph_without_attention_mask_is_left_alone():
    model = attention_graph()
    model.graph.input[1].name = "mask"
    assert attention_fusion.fuse_attention(model) == 0


def test_the_op_names_bad_shapes():
    n = helper.make_node
    graph = helper.make_graph(
        [n("Attention", ["q", "k", "v", "attention_mask"], ["y"], domain=attention_fusion.DOMAIN, head_dim=4,
           scale=0.5)], "bad",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in ("q", "k", "v")] +
        [helper.make_tensor_value_info("attention_mask", TensorProto.INT64, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(attention_fusion.DOMAIN, 1)], ir_version=8)
    session = fused_session(model)
    q = np.zeros((2, 3, 8), np.float32)
    mask = np.ones((2, 3), np.int64)
    assert session.run(None, {"q": q, "k": q, "v": q, "attention_mask": mask})[0].shape == (2, 3, 8)
    cases = [({"k": q[:, :2]}, r"key has shape \[2, 2, 8\], query has \[2, 3, 8\]"),
             ({"attention_mask": mask[:, :2]}, r"attention_mask has shape \[2, 2\], expected \[2, 3\]"),
             ({"q": q[0], "k": q[0], "v": q[0], "attention_mask": mask}, r"query must be \[batch, tokens, hidden\]"),
             ({"q": q[..., :6], "k": q[..., :6], "v": q[..., :6]}, "hidden size 6 is not a multiple of head_dim=4")]
    for change, message in cases:
        inputs = {"q": q, "k": q, "v": q, "attention_mask": mask, **change}
        with pytest.raises(Exception, match=message):
            session.run(None, inputs)


def test_make_session_reports_the_fused_cores_and_honours_the_switch(tmp_path):
    path = tmp_path / "attention.onnx"
    onnx.save(attention_graph(), str(path))
    session, fused = sessions.make_session(path, [CPU], 2)
    assert fused == 1
    assert "y" in [o.name for o in session.get_outputs()]
    assert sessions.make_session(path, [CPU], 2, native_attention=False)[1] == 0
    plain = tmp_path / "plain.onnx"
    onnx.save(attention_graph(scale_on_q=True), str(plain))
    assert sessions.make_session(plain, [CPU], 2)[1] == 0
    with pytest.raises(ValueError, match="has no attention core that embedrank's kernel can run"):
        sessions.make_session(plain, [CPU], 2, native_attention=True)
    for bad in ("yes", 1, 0):
        with pytest.raises(ValueError, match="native_attention must be True, False or None"):
            sessions.make_session(path, [CPU], 2, native_attention=bad)


# --------------------------------------------------------------------------- #
# The real all-MiniLM-L6-v2
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_minilm_sessions_fuse_all_six_layers(minilm_export, variant):
    from embedrank import Encoder

    assert Encoder.load(minilm_export, variant=variant).native_attention_layers == 6
    assert Encoder.load(minilm_export, variant=variant, native_attention=False).native_attention_layers == 0


def test_minilm_hidden_states_equal_the_unfused_graph_on_every_row(minilm_export):
    model_path = minilm_export / "model.onnx"
    plain, _ = sessions.make_session(model_path, [CPU], 2, native_attention=False)
    fused, layers = sessions.make_session(model_path, [CPU], 2, native_attention=True)
    assert layers == 6
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 20000, (3, 40)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 25:] = 0
    mask[2, 3:] = 0
    inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    np.testing.assert_allclose(fused.run(None, inputs)[0], plain.run(None, inputs)[0], rtol=1e-4, atol=2e-5)


def test_minilm_vectors_with_and_without_the_kernel(minilm_export):
    from embedrank import Encoder

    texts = ["a short query", "a longer document about protein folding " * 12, "", "x y z", "one more text"]
    fp32 = Encoder.load(minilm_export, native_attention=False).encode(texts)
    np.testing.assert_allclose(Encoder.load(minilm_export).encode(texts), fp32, atol=1e-5)
    # int8 rounds its activations, so a last-bit change in attention can flip a rounding:
    # both int8 sessions stay as close to fp32 as each other
    native = Encoder.load(minilm_export, variant="int8").encode(texts)
    plain = Encoder.load(minilm_export, variant="int8", native_attention=False).encode(texts)
    assert (native * plain).sum(axis=1).min() > 0.99
    assert abs((native * fp32).sum(axis=1).mean() - (plain * fp32).sum(axis=1).mean()) < 0.005


def test_nan_spreads_as_in_the_unfused_graph():
    model = attention_graph()
    x = feeds(2, 20, 64)
    x["x"][0, 3, 5] = np.nan  # token 3 of text 0: its q, k and v rows are NaN
    expected = plain_session(model).run(None, x)[0]
    attention_fusion.fuse_attention(model)
    got = fused_session(model).run(None, x)[0]
    assert np.isnan(expected[0]).all() == np.isnan(got[0]).all()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- #
# bf16 products (the op's bf16_dots attribute)
# --------------------------------------------------------------------------- #

from embedrank.kernels import bf16_dots_supported  # noqa: E402

needs_bf16_dots = pytest.mark.skipif(not bf16_dots_supported(), reason="needs AVX512-BF16 at the avx512 ISA level")


@needs_bf16_dots
@pytest.mark.parametrize("width,head_dim", [(64, 32), (64, 16), (128, 64), (48, 24)])
def test_bf16_dots_attribute_runs_the_bf16_products(width, head_dim):
    model = attention_graph(width, head_dim)
    plain = plain_session(model)
    fused_model = attention_graph(width, head_dim)
    assert attention_fusion.fuse_attention(fused_model, bf16_dots=True) == 1
    node = next(n for n in fused_model.graph.node if n.op_type == "Attention")
    assert {a.name: a.i for a in node.attribute if a.name == "bf16_dots"} == {"bf16_dots": 1}
    fused = fused_session(fused_model)
    x = feeds(3, 37, width, all_masked_row=True)
    got, expected = fused.run(None, x)[0], plain.run(None, x)[0]
    if head_dim == 24:  # no bf16 kernel for this head size: the fp32 one
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    else:
        assert not np.allclose(got, expected, rtol=1e-6, atol=1e-7)  # rounded to bf16 somewhere
        np.testing.assert_allclose(got, expected, rtol=0.05, atol=0.02 * float(np.abs(expected).max()))


def test_a_graph_without_the_attribute_runs_fp32_products():
    fused_model = attention_graph(64, 32)
    attention_fusion.fuse_attention(fused_model)
    node = next(n for n in fused_model.graph.node if n.op_type == "Attention")
    assert "bf16_dots" not in {a.name for a in node.attribute}


def test_minilm_bf16_attention_is_opt_in_and_stays_close(minilm_export):
    from embedrank import Encoder
    from embedrank.errors import InvalidValueError

    texts = ["a short query", "a longer document about protein folding " * 12, "", "x y z", "one more text"]
    assert Encoder.load(minilm_export, variant="int8").bf16_attention_layers == 0  # off by default
    assert Encoder.load(minilm_export).bf16_attention_layers == 0
    with pytest.raises(InvalidValueError, match="bf16_attention must be True or False"):
        Encoder.load(minilm_export, bf16_attention="yes")
    with pytest.raises(InvalidValueError, match="native_attention=False turns it off"):
        Encoder.load(minilm_export, native_attention=False, bf16_attention=True)
    with pytest.raises(InvalidValueError, match="variant 'bf16' runs all of the graph in bf16"):
        Encoder.load(minilm_export, variant="bf16", bf16_attention=True)
    if not bf16_dots_supported():
        with pytest.raises(InvalidValueError, match="needs a CPU with AVX512-BF16"):
            Encoder.load(minilm_export, bf16_attention=True)
        return
    fp32 = Encoder.load(minilm_export).encode(texts)
    bf16 = Encoder.load(minilm_export, bf16_attention=True)
    assert bf16.bf16_attention_layers == 6
    vectors = bf16.encode(texts)
    assert not np.array_equal(vectors, fp32) and (vectors * fp32).sum(axis=1).min() > 0.9999
    int8 = Encoder.load(minilm_export, variant="int8", bf16_attention=True)
    assert int8.bf16_attention_layers == 6
    plain_int8 = Encoder.load(minilm_export, variant="int8").encode(texts)
    assert abs((int8.encode(texts) * fp32).sum(axis=1).mean() - (plain_int8 * fp32).sum(axis=1).mean()) < 0.005


@needs_bf16_dots
def test_the_embedding_cache_keeps_bf16_attention_vectors_apart(minilm_export, tmp_path):
    from embedrank import Encoder

    texts = ["a longer document about protein folding " * 12, "one more text"]
    fp32 = Encoder.load(minilm_export, cache=tmp_path / "cache").encode(texts)
    bf16 = Encoder.load(minilm_export, cache=tmp_path / "cache", bf16_attention=True).encode(texts)
    fresh = Encoder.load(minilm_export, bf16_attention=True).encode(texts)
    np.testing.assert_array_equal(bf16, fresh)
    assert not np.array_equal(bf16, fp32)


def test_bf16_attention_on_another_provider_is_refused_before_a_session_is_built(minilm_export, monkeypatch):
    from embedrank import Encoder
    from embedrank.errors import InvalidValueError

    monkeypatch.setattr(sessions, "choose_providers", lambda providers: ["CUDAExecutionProvider", CPU])
    monkeypatch.setattr(sessions, "_fused_session", lambda *a, **k: pytest.fail("a session was built"))
    monkeypatch.setattr("embedrank.kernels.bf16_dots_supported", lambda: True)
    with pytest.raises(InvalidValueError, match=r"bf16_attention=True needs the CPU provider alone"):
        Encoder.load(minilm_export, bf16_attention=True)
