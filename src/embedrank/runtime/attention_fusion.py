"""Runs an encoder's attention through embedrank's fused kernel inside onnxruntime.

An exported BERT-style graph computes each layer's attention as a dozen separate ops:
Reshape and Transpose of Q, K and V, QK^T, a scale, the additive padding mask, Softmax, PV,
Transpose and Reshape back. On a CPU these cost about half of an int8 encoder's time, most of
it in memory passes over [batch, heads, tokens, tokens] tensors. :func:`fuse_attention`
rewrites each such core into one ``ai.embedrank::Attention`` node, whose kernel
(``cpp/core/attention.cpp``) is in ``libembedrank_ort_ops.so``, a custom-op library that
onnxruntime loads itself and runs on the session's own thread pool.

The rewrite happens in memory when a CPU session opens (``runtime.make_session``); model
files on disk stay standard ONNX. A core is rewritten only when its mask provably is a key
padding mask built from the ``attention_mask`` input: the mask subgraph is run on probe
masks and must give 0 for attended keys and at most MASKED_BELOW for padded ones, the same
for every query row, whatever the token ids. A second tensor added to the scaled scores (MPNet's
relative position bias) becomes the op's bias input when its subgraph, run on probe inputs, gives
[1 or batch, heads, tokens, tokens]; when it only expands a [1, heads, tokens, tokens] tensor over
the batch, the op reads that tensor instead. Anything else (scale applied before the product, other
layouts) is left to onnxruntime as it was.

:func:`explain` says, per attention layer, why a core was not rewritten: a bias added to scores
that are not scaled by a constant, rotary position embeddings applied to Q and K between the projection and the product (ModernBERT,
Qwen3: the pattern wants plain per-head reshapes), K/V heads shared by several query heads
(grouped-query attention), or a mask that is not a key padding mask (a decoder's causal mask,
ModernBERT's sliding window). The exporter records it in embedrank.json ("attention").
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
from embedrank.errors import InvalidValueError, MissingFileError

DOMAIN = "ai.embedrank"
OP_TYPE = "Attention"
LIBRARY_NAME = "libembedrank_ort_ops.so"
MASK_INPUT = "attention_mask"
_FLOAT16 = 10  # onnx.TensorProto.FLOAT16
# Padded keys must get an additive mask at or below this (transformers uses finfo(float32).min).
# Then a sequence with no attended key has all scores equal (the products are absorbed) and
# attends uniformly, which is what the kernel does; with a mild mask such as -10000 it would
# attend to every key by its score instead, so such graphs are left unfused.
MASKED_BELOW = -1e30
# A mask is also probed on one long sequence, the longest of these that its subgraph runs at (the
# mask is often built from the embeddings' shape, so a model's position limit applies): a
# sliding-window mask (ModernBERT's local attention, a window of 128) looks like a padding mask
# on short probes. A window wider than the probe, or than the model's positions, is not told apart
# (nor does it act).
LONG_PROBE_TOKENS = (1024, 512, 256, 128, 64)


def library_path() -> Path:
    """The custom-op library, installed next to embedrank's Python extension."""
    spec = importlib.util.find_spec("embedrank._kernels")
    if spec is None or spec.origin is None:
        raise MissingFileError("embedrank._kernels is not installed, so neither is " + LIBRARY_NAME)
    path = Path(spec.origin).with_name(LIBRARY_NAME)
    if not path.is_file():
        raise MissingFileError(f"embedrank's onnxruntime custom-op library is missing: {path}")
    return path


def fuse_attention(model, bf16_dots: bool = False) -> int:
    """Rewrites every recognised attention core of ``model`` (an onnx.ModelProto, changed in
    place) into one ai.embedrank::Attention node; returns how many were rewritten.
    bf16_dots: the nodes run Q K^T and P V in bf16 (their bf16_dots attribute; see
    embedrank.kernels.attention)."""
    graph = model.graph
    if MASK_INPUT not in {i.name for i in graph.input}:
        return 0
    if any(i.data_type == _FLOAT16 for i in graph.initializer):
        return 0  # a float16 graph: the kernel is float32
    if any(a.g.node or a.graphs for n in graph.node for a in n.attribute):
        return 0  # If/Loop/Scan bodies read outer names that the pruning below does not see
    default_opset, producer, consumers, constants = _graph_maps(model)
    probes = _Probes(model, producer)
    replacements, dead = [], set()
    for softmax in [n for n in graph.node if n.op_type == "Softmax"]:
        core = _match_core(softmax, producer, consumers, constants, default_opset)
        if core is None or _resolve_addends(core, probes) is not None:
            continue
        replacements.append(_attention_node(core, softmax.name, bf16_dots))
        dead.update(id(n) for n in core["nodes"])
    if not replacements:
        return 0
    nodes = [n for n in graph.node if id(n) not in dead] + replacements
    nodes = _prune_unused(nodes, {o.name for o in graph.output})
    del graph.node[:]
    graph.node.extend(_topological_order(nodes, graph))
    _drop_unused_initializers(graph)
    if not any(o.domain == DOMAIN for o in model.opset_import):
        from onnx import helper

        model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    return len(replacements)


def explain(model) -> dict:
    """What fuse_attention would do with `model` (an onnx.ModelProto, left unchanged):
    {"layers": attention cores (Softmax nodes), "fused": cores it would rewrite, "fallback":
    {reason: number of cores}} with the reasons in words (see the module docstring)."""
    graph = model.graph
    softmaxes = [n for n in graph.node if n.op_type == "Softmax"]
    report: dict = {"layers": len(softmaxes), "fused": 0, "fallback": {}}
    if not softmaxes:
        return report
    blanket = None
    if MASK_INPUT not in {i.name for i in graph.input}:
        blanket = f"the graph has no {MASK_INPUT} input"
    elif any(i.data_type == _FLOAT16 for i in graph.initializer):
        blanket = "a float16 graph (the kernel is float32)"
    elif any(a.g.node or a.graphs for n in graph.node for a in n.attribute):
        blanket = "the graph has subgraphs (If/Loop/Scan)"
    if blanket:
        report["fallback"] = {blanket: len(softmaxes)}
        return report
    default_opset, producer, consumers, constants = _graph_maps(model)
    probes = _Probes(model, producer)
    for softmax in softmaxes:
        core = _match_core(softmax, producer, consumers, constants, default_opset)
        if core is not None:
            reason = _resolve_addends(core, probes)
            if reason is None:
                report["fused"] += 1
                continue
            reasons = [reason]
        else:
            reasons = _diagnose(model, softmax, producer, probes.mask_kinds)
        reason = "; ".join(reasons)
        report["fallback"][reason] = report["fallback"].get(reason, 0) + 1
    return report


def explain_file(path) -> dict:
    """explain() of the ONNX file at `path`."""
    import onnx

    return explain(onnx.load(str(path)))


def _graph_maps(model) -> tuple[int, dict, dict[str, list], _Constants]:
    """What matching needs from model.graph: (default opset version, the node producing each
    name, the nodes reading each name, the graph's constants)."""
    graph = model.graph
    default_opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for output in graph.output:  # a graph output is read from outside: its producer must stay
        consumers.setdefault(output.name, []).append(_GRAPH_OUTPUT)
    return default_opset, producer, consumers, _Constants(graph, producer)


_MASK_REASONS = {
    "causal": "causal mask (a decoder: each token sees the tokens before it only)",
    "sliding": "sliding-window mask (local attention)",
    "other": "the additive mask is not a key padding mask",
}


class _Probes:
    """The probe results of one graph, each tensor probed once: mask kinds and bias shapes."""

    def __init__(self, model, producer):
        self.model, self.producer = model, producer
        self.mask_kinds: dict[str, str] = {}
        self.bias_heads: dict[tuple[str, bool], int | None] = {}

    def mask_kind(self, name: str) -> str:
        if name not in self.mask_kinds:
            self.mask_kinds[name] = _mask_kind(self.model, self.producer, name)
        return self.mask_kinds[name]

    def heads(self, name: str, batch_one: bool = False) -> int | None:
        key = (name, batch_one)
        if key not in self.bias_heads:
            self.bias_heads[key] = _bias_heads(self.model, self.producer, name, batch_one)
        return self.bias_heads[key]


def _resolve_addends(core: dict, probes: _Probes) -> str | None:
    """Sorts the tensors added to the scaled scores of a matched core into its key padding mask
    and its bias (core["mask"], core["bias"]: a name or None); returns None when the core can be
    fused, else the reason in words."""
    addends = core["addends"]
    kinds = [probes.mask_kind(name) for name in addends]
    if len(addends) == 1:
        core["mask"], core["bias"] = addends[0], None
        return None if kinds[0] == "padding" else _MASK_REASONS[kinds[0]]
    if "padding" not in kinds:
        return "; ".join(dict.fromkeys(_MASK_REASONS[k] for k in kinds if k != "other")) or _MASK_REASONS["other"]
    mask = addends[kinds.index("padding")]
    bias = addends[1 - kinds.index("padding")]
    heads = probes.heads(bias)
    if heads is None or (core["heads"] is not None and heads != core["heads"]):
        return ("an additive bias on the scores that is not [1 or batch, heads, tokens, tokens] on probe inputs "
                "(or not computed from the token inputs alone)")
    expand = probes.producer.get(bias)
    if expand is not None and expand.op_type == "Expand" and probes.heads(expand.input[0], batch_one=True) == heads:
        bias = expand.input[0]  # the [1, heads, T, T] tensor the graph copies for every sequence
    core["mask"], core["bias"] = mask, bias
    return None


def _bias_heads(model, producer, name: str, batch_one: bool) -> int | None:
    """The heads of the score bias `name` when its subgraph, run on int64 probe inputs of
    several [batch, tokens] shapes, gives finite [1 or batch (1 only if batch_one), heads, tokens,
    tokens] float tensors with one heads count; else None."""
    made = _subgraph_session(model, producer, name, needs_mask=False)
    if made is None:
        return None
    session, read = made
    heads = set()
    try:
        for batch, tokens in ((2, 5), (1, 7), (3, 1)):
            feeds = {input_name: np.ones((batch, tokens), np.int64) for input_name in read}
            value = np.asarray(session.run(None, feeds)[0])
            batches = (1,) if batch_one else (1, batch)
            if (value.dtype != np.float32 or value.ndim != 4 or value.shape[0] not in batches
                    or value.shape[2:] != (tokens, tokens) or not np.isfinite(value).all()):
                return None
            heads.add(value.shape[1])
    except Exception:  # noqa: BLE001 (a subgraph that does not run on probe inputs: onnxruntime's error types)
        return None
    return heads.pop() if len(heads) == 1 else None


def _mask_kind(model, producer, mask_name: str) -> str:
    """"padding" (a key padding mask fuse_attention accepts), "causal", "sliding" or "other",
    from the mask subgraph run on probe masks."""
    if _is_key_padding_mask(model, producer, mask_name):
        return "padding"
    made = _subgraph_session(model, producer, mask_name)
    if made is None:
        return "other"
    session, read = made
    probe = _long_probe(session, read)
    if probe is None:
        return "other"
    probe[:] = 1
    tokens = probe.shape[1]
    try:
        value = np.asarray(session.run(None, {name: probe if name == MASK_INPUT else np.zeros_like(probe)
                                              for name in read})[0], dtype=np.float32)
    except Exception:  # noqa: BLE001 (onnxruntime's own exception types)
        return "other"
    if value.ndim != 4 or value.shape[-1] != tokens or value.shape[-2] != tokens:
        return "other"
    blocked = value[0, 0] <= MASKED_BELOW
    rows, cols = np.indices(blocked.shape)
    if np.array_equal(blocked, cols > rows):
        return "causal"
    distance = np.abs(rows - cols)
    if blocked.any() and not blocked[distance == 0].any():
        window = distance[~blocked].max()
        if np.array_equal(blocked, distance > window):
            return "sliding"
    return "other"


def _diagnose(model, softmax, producer, mask_kinds: dict) -> list[str]:
    """Why the core ending in `softmax` does not match: the features of it that the kernel
    does not handle, in words (a generic reason when none is recognised)."""
    reasons: list[str] = []
    # the addends of the scores: through Add (and Cast) nodes down from the Softmax input
    addends, stack = [], [softmax.input[0]]
    while stack:
        name = stack.pop()
        node = producer.get(name)
        if node is not None and node.op_type == "Add":
            stack.extend(node.input)
        elif node is not None and node.op_type == "Cast":
            stack.append(node.input[0])
        else:
            addends.append(name)
    product, qk = None, None
    for name in addends:
        node = producer.get(name)
        while node is not None and node.op_type in ("Mul", "Div", "Cast") and qk is None:
            node = producer.get(node.input[0])
        if node is not None and node.op_type == "MatMul":
            product, qk = name, node
            break
    others = [a for a in addends if a != product]
    masks = [a for a in others if MASK_INPUT in _ancestors(producer, a)[1]]
    if len(others) > len(masks):
        reasons.append("an additive bias on scores with no constant scale between the product and the bias "
                       "(the rewrite wants scale * QK^T + bias + mask)")
    if qk is not None:
        q_node, k_node = producer.get(qk.input[0]), producer.get(qk.input[1])
        plain = (q_node is not None and q_node.op_type == "Transpose" and _feeds_from(producer, q_node, "Reshape")
                 and k_node is not None and k_node.op_type == "Transpose" and _feeds_from(producer, k_node, "Reshape"))
        if not plain:
            reasons.append("rotary position embedding or a norm applied to Q/K (not plain per-head reshapes)")
        if _has_near(producer, qk.input[1], "Expand", 6):
            reasons.append("grouped-query attention (K/V heads repeated for several query heads)")
    for mask in masks:
        if mask not in mask_kinds:
            mask_kinds[mask] = _mask_kind(model, producer, mask)
        if mask_kinds[mask] != "padding":
            reasons.append(_MASK_REASONS[mask_kinds[mask]])
    return reasons or ["the attention pattern is not one the rewrite recognises"]


def _feeds_from(producer, node, op_type: str) -> bool:
    """True when `node`'s first input is computed by an `op_type` node, through Casts."""
    source = producer.get(node.input[0])
    while source is not None and source.op_type == "Cast":
        source = producer.get(source.input[0])
    return source is not None and source.op_type == op_type


def _has_near(producer, name: str, op_type: str, depth: int) -> bool:
    """True when an `op_type` node is among the ancestors of `name` within `depth` steps."""
    frontier = [name]
    for _ in range(depth):
        nodes = [producer[n] for n in frontier if n in producer]
        if any(n.op_type == op_type for n in nodes):
            return True
        frontier = [i for n in nodes for i in n.input if i]
    return False


@functools.lru_cache(maxsize=2)
def fused_model_bytes(path: str, mtime_ns: int, size: int, bf16_dots: bool = False) -> tuple[bytes | None, int]:
    """(serialized model with fused attention, number of cores fused), or (None, 0) when no
    core was recognised. The last two file versions (path, mtime, size) are kept, so that
    opening several sessions of one model rewrites it once; each holds the model's bytes."""
    import onnx

    model = onnx.load(path)
    count = fuse_attention(model, bf16_dots)
    return (model.SerializeToString(), count) if count else (None, 0)


def load_fused(path: Path, bf16_dots: bool = False) -> tuple[bytes | None, int]:
    """fused_model_bytes for the file at ``path``, as it is now."""
    stat = path.stat()
    return fused_model_bytes(str(path), stat.st_mtime_ns, stat.st_size, bool(bf16_dots))


# --------------------------------------------------------------------------- #
# Pattern matching
# --------------------------------------------------------------------------- #


class _GraphOutput:
    op_type = "<graph output>"


_GRAPH_OUTPUT = _GraphOutput()


class _Constants:
    """Values of initializers and Constant nodes."""

    def __init__(self, graph, producer):
        self._initializers = {i.name: i for i in graph.initializer}
        self._producer = producer

    def value(self, name: str) -> np.ndarray | None:
        from onnx import numpy_helper

        if name in self._initializers:
            return numpy_helper.to_array(self._initializers[name])
        node = self._producer.get(name)
        if node is not None and node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    def scalar(self, name: str) -> float | None:
        value = self.value(name)
        return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None


def _perm(node) -> list[int]:
    for attribute in node.attribute:
        if attribute.name == "perm":
            return list(attribute.ints)
    return []


def _reshape_target(reshape, producer, constants) -> list[int | None] | None:
    """The target shape of a Reshape, one entry per output axis (None where it is computed at
    run time, e.g. a dimension read by Shape/Gather and Unsqueezed), from a constant or a Concat
    of constants and such scalars; None when it cannot be read."""
    shape = constants.value(reshape.input[1])
    if shape is not None:
        return [int(x) for x in shape.reshape(-1)]
    concat = producer.get(reshape.input[1])
    if concat is None or concat.op_type != "Concat":
        return None
    target: list[int | None] = []
    for part in concat.input:
        value, node = constants.value(part), producer.get(part)
        if value is not None:
            target += [int(x) for x in value.reshape(-1)]
        elif node is not None and node.op_type == "Unsqueeze":
            target.append(None)
        else:
            return None
    return target


def _head_dim(reshape, producer, constants) -> int | None:
    """head_dim from the [batch, tokens, heads, head_dim] target of a Q/K/V Reshape."""
    target = _reshape_target(reshape, producer, constants)
    return target[3] if target is not None and len(target) == 4 and target[3] and target[3] > 0 else None


def _match_core(softmax, producer, consumers, constants, default_opset: int) -> dict | None:
    """The nodes of one unfused attention core ending in `softmax`, or None."""

    def only_consumer(name, op_type):
        users = consumers.get(name, [])
        return users[0] if len(users) == 1 and users[0].op_type == op_type else None

    axis = next((a.i for a in softmax.attribute if a.name == "axis"), None)
    if axis is None:  # the default: the last axis from opset 13, axis 1 (of a flattened input) before
        axis = -1 if default_opset >= 13 else 1
    if axis not in (-1, 3):
        return None
    add = producer.get(softmax.input[0])
    if add is None or add.op_type != "Add" or len(consumers.get(add.output[0], [])) != 1:
        return None
    # the scores: scaled product + mask, or (scaled product + bias) + mask, or (... + mask) + bias
    adds, addends = [add], [add.input[1]]
    scaled = producer.get(add.input[0])
    if scaled is not None and scaled.op_type == "Add" and len(consumers.get(scaled.output[0], [])) == 1:
        adds.append(scaled)
        addends.insert(0, scaled.input[1])
        scaled = producer.get(scaled.input[0])
    if scaled is None or scaled.op_type not in ("Mul", "Div"):
        return None
    factor = constants.scalar(scaled.input[1])
    if factor is None or factor == 0:
        return None
    scale = factor if scaled.op_type == "Mul" else 1.0 / factor
    qk = producer.get(scaled.input[0])
    if qk is None or qk.op_type != "MatMul":
        return None
    pv = only_consumer(softmax.output[0], "MatMul")
    if pv is None or pv.input[0] != softmax.output[0]:
        return None
    tq, tk, tv = producer.get(qk.input[0]), producer.get(qk.input[1]), producer.get(pv.input[1])
    t_out = only_consumer(pv.output[0], "Transpose")
    r_out = t_out and _merge_reshape(t_out, consumers)
    if r_out is None or any(n is None or n.op_type != "Transpose" for n in (tq, tk, tv)):
        return None
    if [_perm(n) for n in (tq, tk, tv, t_out)] != [[0, 2, 1, 3], [0, 2, 3, 1], [0, 2, 1, 3], [0, 2, 1, 3]]:
        return None
    merged = _reshape_target(r_out, producer, constants)
    if merged is None or len(merged) != 3:  # the context must come back as [B, T, hidden]
        return None
    rq, rk, rv = (producer.get(n.input[0]) for n in (tq, tk, tv))
    if any(r is None or r.op_type != "Reshape" for r in (rq, rk, rv)):
        return None
    head_dims = {_head_dim(r, producer, constants) for r in (rq, rk, rv)}
    if len(head_dims) != 1 or None in head_dims:
        return None
    # the intermediate tensors must have no other readers, or removing the nodes breaks them; the
    # per-head Reshapes may have some (T5's first layer reads the key length off one): they are
    # not removed here, and pruning drops them when nothing reads them any more
    singles = [(tq, "MatMul"), (tk, "MatMul"), (qk, scaled.op_type), (scaled, "Add"), (tv, "MatMul")]
    if any(only_consumer(node.output[0], op) is None for node, op in singles):
        return None
    target = _reshape_target(rq, producer, constants)
    return {"q": rq.input[0], "k": rk.input[0], "v": rv.input[0], "out": r_out.output[0], "addends": addends,
            "head_dim": head_dims.pop(), "scale": scale, "heads": target[2] if target[2] and target[2] > 0 else None,
            "nodes": (tq, tk, tv, qk, scaled, *adds, softmax, pv, t_out, r_out)}


# Ops that may read the merged context's shape on the way to the merge Reshape's target (MPNet
# computes it as context.size()[:-2] + (hidden,)): Shape, then picking and joining dimensions.
_SHAPE_OPS = frozenset({"Shape", "Gather", "Slice", "Unsqueeze", "Squeeze", "Concat", "Cast"})


def _merge_reshape(t_out, consumers):
    """The Reshape that merges the heads of the transposed context `t_out` back to [B, T, hidden]:
    its only reader apart from Shape subgraphs that serve the Reshape's target alone (removed
    with it); None otherwise."""
    readers = consumers.get(t_out.output[0], [])
    reshapes = [n for n in readers if n.op_type == "Reshape" and n.input[0] == t_out.output[0]]
    if len(reshapes) != 1:
        return None
    r_out, stack, seen = reshapes[0], [n for n in readers if n is not reshapes[0]], set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node.op_type not in _SHAPE_OPS:
            return None
        for name in node.output:
            for reader in consumers.get(name, []):
                if reader is r_out and list(r_out.input).index(name) == 1:
                    continue
                stack.append(reader)  # a graph output is no shape op: refused above
    return r_out


def _attention_node(core: dict, name: str, bf16_dots: bool = False):
    from onnx import helper

    inputs = [core["q"], core["k"], core["v"], MASK_INPUT] + ([core["bias"]] if core["bias"] else [])
    extra = {"bf16_dots": 1} if bf16_dots else {}
    return helper.make_node(OP_TYPE, inputs, [core["out"]], domain=DOMAIN,
                            name=f"{name}/embedrank_attention", head_dim=core["head_dim"], scale=core["scale"], **extra)


def _ancestors(producer, name: str) -> tuple[list, set[str]]:
    """(nodes computing `name`, in graph order of discovery; graph inputs they read)."""
    nodes, inputs, seen, stack = [], set(), set(), [name]
    while stack:
        tensor = stack.pop()
        node = producer.get(tensor)
        if node is None:
            inputs.add(tensor)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        nodes.append(node)
        stack.extend(i for i in node.input if i)
    return nodes, inputs


def _subgraph_session(model, producer, name: str, needs_mask: bool = True):
    """(onnxruntime session computing the tensor `name` from the graph inputs it reads, those
    inputs' names), or None when it reads anything but int64 graph inputs (attention_mask among
    them, when `needs_mask`), or needs ops that cannot run on their own."""
    import onnx
    from onnx import helper

    graph = model.graph
    nodes, inputs = _ancestors(producer, name)
    graph_inputs = {i.name: i for i in graph.input}
    initializers = {i.name: i for i in graph.initializer}
    read = sorted(i for i in inputs if i not in initializers)
    if (needs_mask and MASK_INPUT not in read) or any(i not in graph_inputs for i in read):
        return None
    if any(graph_inputs[i].type.tensor_type.elem_type != onnx.TensorProto.INT64 for i in read):
        return None
    if any(n.op_type in ("If", "Loop", "Scan") or n.domain not in ("", "ai.onnx") for n in nodes):
        return None
    order = {id(n): i for i, n in enumerate(graph.node)}
    nodes.sort(key=lambda n: order[id(n)])
    sub = helper.make_graph(nodes, "embedrank_mask_probe", [graph_inputs[i] for i in read],
                            [helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)],
                            [initializers[i] for i in inputs if i in initializers])
    probe_model = helper.make_model(sub, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    try:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 4  # probes past the model's positions fail on purpose: no error log
        return ort.InferenceSession(probe_model.SerializeToString(), options, providers=["CPUExecutionProvider"]), read
    except Exception:  # a subgraph onnxruntime cannot run on its own
        return None


def _long_probe(session, read: list[str]) -> np.ndarray | None:
    """A [1, n] mask (its last 3 keys padded) for the longest n of LONG_PROBE_TOKENS at which
    the mask subgraph runs with the other inputs (token ids) all 0 and all 1 (ids equal to the
    padding id can hide a position limit: RoBERTa-style positions skip them), or None."""
    for tokens in LONG_PROBE_TOKENS:
        probe = np.ones((1, tokens), dtype=np.int64)
        probe[0, -3:] = 0
        try:
            for fill in (0, 1):
                session.run(None, {name: probe if name == MASK_INPUT else np.full(probe.shape, fill, np.int64)
                                   for name in read})
        except Exception:  # noqa: BLE001 (longer than the model's positions: onnxruntime's own error types)
            continue
        return probe
    return None


def _is_key_padding_mask(model, producer, mask_name: str) -> bool:
    """True when the tensor `mask_name` gives 0 for attended keys and <= MASKED_BELOW for
    padded keys, equally for every query row, on probe masks; and the other inputs it reads
    (exporters build the mask from the shape of input_ids or of the embeddings) change
    nothing in it."""
    made = _subgraph_session(model, producer, mask_name)
    if made is None:
        return False
    session, read = made
    probes = [np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 1, 1, 0]], dtype=np.int64),
              np.array([[1, 1, 0]], dtype=np.int64)]
    long_probe = _long_probe(session, read)
    if long_probe is not None:
        probes.append(long_probe)
    try:
        for probe in probes:
            values = []
            for fill in (0, 1):  # the other inputs (token ids) must not matter
                feeds = {name: probe if name == MASK_INPUT else np.full(probe.shape, fill, np.int64) for name in read}
                values.append(np.asarray(session.run(None, feeds)[0], dtype=np.float32))
            value = values[0]
            if not np.array_equal(values[0], values[1]):
                return False
            batch, tokens = probe.shape
            if value.ndim != 4 or value.shape[0] != batch or value.shape[1] != 1 or value.shape[3] != tokens:
                return False
            attended = np.broadcast_to(probe[:, None, None, :].astype(bool), value.shape)
            if not np.isfinite(value).all():  # -inf: a fully padded row would give NaN, not a mean
                return False
            if np.any(value[attended] != 0) or np.any(value[~attended] > MASKED_BELOW):
                return False
    except Exception:  # a subgraph onnxruntime cannot run on its own is not a mask we can vouch for
        return False
    return True


def _prune_unused(nodes: list, outputs: set[str]) -> list:
    while True:
        used = {i for n in nodes for i in n.input} | outputs
        kept = [n for n in nodes if any(o in used for o in n.output)]
        if len(kept) == len(nodes):
            return kept
        nodes = kept


def _drop_unused_initializers(graph) -> None:
    """Removes the constants only the rewritten nodes read (reshape targets, the scale)."""
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output} | {i.name for i in graph.input}
    kept = [i for i in graph.initializer if i.name in used]
    if len(kept) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(kept)


def _topological_order(nodes: list, graph) -> list:
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    ordered, pending = [], list(nodes)
    while pending:
        rest = []
        for node in pending:
            if all(i in available for i in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise InvalidValueError("attention rewrite left a graph with unresolved inputs: " +
                             ", ".join(sorted({i for n in rest for i in n.input if i not in available})[:5]))
        pending = rest
    return ordered
