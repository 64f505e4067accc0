"""Bring your own ONNX: an existing ONNX encoder and its tokenizer.json made into an embedrank
model folder, without torch.

    >>> embedrank.import_onnx("model.onnx", "tokenizer.json", "models/mine", max_seq_length=256)

The graph is taken as it is, checked, and copied. The checks, in order (each failure is an
embedrank error that names the problem):

* the file is an ONNX model that onnxruntime loads (:class:`SourceModelError`);
* its inputs map onto embedrank's three, ``input_ids``, ``attention_mask`` and
  ``token_type_ids``: by name, by the common aliases in ``INPUT_ALIASES`` (``mask``,
  ``segment_ids``, a ``:0`` suffix...) or by the caller's ``inputs`` mapping. input_ids and
  attention_mask must be there (embedrank pads its batches, so a graph without a mask cannot
  be fed), token_type_ids may be; any other input is an error, since embedrank could not feed
  it. Each is an integer tensor [batch, tokens]; int32 inputs get a Cast from int64;
* the tokenizer's ids fit the embedding table: the rows of the Gather that reads input_ids
  are found in the graph (through Cast, Reshape... and a dequantized table too), and the
  graph is run once on the tokenizer's largest id, so a table the graph search misses is
  checked as well (onnxruntime refuses an index past the table);
* the graph runs on one text of max_seq_length tokens (not above its position embeddings);
* a probe run on ``PROBE_TEXTS``, padded into one batch, gives a float32 output of the
  declared pooling's shape: [batch, tokens, hidden] for "mean", "cls" and "lasttoken" (embedrank
  pools it), [batch, hidden] for "pooled" (the graph pools). The output is chosen among the
  graph's outputs by that shape; ``output`` names it when several fit;
* each probe text run alone gives the vector it got in the padded batch (cosine at least
  ``PADDING_MIN_COSINE``): a graph that ignores its attention mask, or a mask fed to the
  wrong input, fails here;
* the folder opens with :class:`~embedrank.models.encoder.Encoder` and encodes the probe
  texts to the same vectors (cosine at least ``PADDING_MIN_COSINE``; embedrank batches them
  by length, and a dynamically quantized graph moves slightly with its batch).

The graph is copied byte for byte when its inputs already have embedrank's names and the
chosen output is its only one. Otherwise it is rewritten first: an Identity (or, for an
int32 input, a Cast) from each embedrank-named input to the name the graph uses, the other
outputs and every node only they need removed; the rewritten graph must give the chosen
output of the original on the probe batch (within ``REWRITE_RTOL``). A graph with external
data (weights in files beside it) is always written through onnx, its weights into one
``<file>.data`` beside the model file.

The folder is written like an export's (embedrank.utils.files.write_directory: a temporary
sibling renamed into place once whole), and its embedrank.json records the usual fields
(kind, pooling, normalize, max_seq_length, dimension, prompts, inputs, token_type_ids, output,
variants, sizes, fingerprint) and an ``import`` section (the input mapping, the outputs
dropped, whether the graph was rewritten, the table rows and tokenizer size, the probe's
measurements). The graph is filed under the variant its weights say (``int8`` when it holds
quantized weights, ``fp16`` for float16 ones, else ``fp32``), or the ``variant`` given: open
an int8 import with ``Encoder.load(path, variant="int8")``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embedrank.errors import (ExistingPathError, InvalidTypeError, InvalidValueError, MissingFileError,
                              SourceModelError)
from embedrank.export import verify
from embedrank.export.exporter import _check_replaceable
from embedrank.models.folder import DEFAULT_VARIANT_FILES, TOKENIZER_FILE, write_config
from embedrank.models.onnx_model import MODEL_INPUTS
from embedrank.utils.files import write_directory

# The poolings an imported graph is checked against (the others need sentence-transformers' modules).
IMPORT_POOLINGS = ("mean", "cls", "lasttoken", "pooled")

__all__ = ["INPUT_ALIASES", "PADDING_MIN_COSINE", "PROBE_TEXTS", "REWRITE_RTOL", "import_onnx"]

# Graph input names taken for each of embedrank's inputs (compared in lower case, without a
# ":0" suffix); anything else needs the `inputs` mapping.
INPUT_ALIASES = {
    "input_ids": ("input_ids", "ids", "input", "inputs", "token_ids", "tokens", "input_word_ids"),
    "attention_mask": ("attention_mask", "mask", "input_mask", "attention_masks", "input_attention_mask"),
    "token_type_ids": ("token_type_ids", "segment_ids", "type_ids", "input_type_ids", "token_types"),
}

# The probe: verification's sample (empty, short, some 130 tokens, non-ASCII) less its two texts
# of 400 tokens and more; the full length is probed by one text of max_seq_length tokens.
PROBE_TEXTS = tuple(text for text in verify.SAMPLE_TEXTS if len(text) < 1000)

# A probe text alone and in the padded batch, and the folder's Encoder against the probe, must
# agree to this cosine. Graphs that honour the mask give 1.0 (fp32, weight-only int8) or a little
# less (dynamic int8, one activation scale per batch: 0.96 for embedrank's own all-MiniLM-L6-v2
# int8 export); on all-MiniLM-L6-v2 (int8 weights) a graph
# that ignores its mask gave 0.30, and mask and token types swapped 0.07
# (tests/export/test_importer.py).
PADDING_MIN_COSINE = 0.9

# A rewritten graph's output may differ from the original's by this much, relative to the
# largest absolute value of the original's (onnxruntime may fuse the pruned graph differently).
REWRITE_RTOL = 1e-5

# The token-level outputs preferred when several fit, then the pooled ones.
_TOKEN_OUTPUT_NAMES = ("last_hidden_state", "token_embeddings", "hidden_states")
_POOLED_OUTPUT_NAMES = ("sentence_embedding", "sentence_embeddings", "embeddings", "embedding")
# Ops through which input_ids reaches the embedding Gather, and through which a (dequantized)
# table reaches it from its initializer.
_INDEX_PASSTHROUGH = {"Cast", "Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten"}
_TABLE_PASSTHROUGH = {"Cast", "Identity", "DequantizeLinear", "Mul", "Add", "Sub"}
_QUANTIZED_OPS = {"MatMulInteger", "DynamicQuantizeLinear", "QLinearMatMul", "DequantizeLinear", "QuantizeLinear",
                  "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QGemm", "MatMulNBits", "QAttention"}
_EXTERNAL = 1  # onnx.TensorProto.EXTERNAL
_INT32, _INT64, _INT8, _UINT8, _FLOAT16 = 6, 7, 3, 2, 10  # onnx.TensorProto data types


@dataclass
class _GraphInfo:
    """What the source graph takes and gives (from the file, before any run)."""

    inputs: dict  # graph input name -> embedrank input name
    int32_inputs: list
    output_names: list
    embedding_rows: int | None
    external: bool
    precision: str
    dropped_outputs: list = field(default_factory=list)


def import_onnx(onnx_path: str | os.PathLike, tokenizer: str | os.PathLike, out_dir: str | os.PathLike, *,
                max_seq_length: int, pooling: str = "mean", normalize: bool = True, prompts: dict | None = None,
                inputs: dict | None = None, output: str | None = None, variant: str | None = None,
                overwrite: bool = False) -> Path:
    """Makes an embedrank model folder from an ONNX encoder and its tokenizer; returns its path.

    onnx_path: the .onnx file (external data files beside it are read too). tokenizer: a
    tokenizer.json, or a folder holding one; its own padding and truncation are ignored
    (embedrank pads each batch and cuts at max_seq_length). out_dir: the folder to write.
    max_seq_length: the most tokens per text (special tokens included) the model is run
    with; it must run at this length (the probe does). pooling: "mean", "cls" or "lasttoken"
    (the last non-padding token) for a graph whose output is token states [batch, tokens,
    hidden], pooled by embedrank; "pooled" for a graph whose output is one vector per text
    [batch, hidden]. normalize: L2-normalize the vectors. prompts: {"query": str,
    "document": str} prepended by encode_queries / encode_documents (None: none).
    inputs: {graph input name: embedrank input name} for names the aliases do not cover.
    output: the graph output to use when more than one has the pooling's shape. variant:
    the variant name to file the graph under (None: from its weights, see the module
    docstring). overwrite: replace an existing embedrank model folder at out_dir.

    The embeddings are [n, hidden] float32, as for an exported model. Raises MissingFileError
    (no such file), SourceModelError (not ONNX, inputs or outputs that do not fit, a
    tokenizer whose ids pass the embedding table, a probe that fails), InvalidValueError /
    InvalidTypeError (bad arguments) or ExistingPathError (out_dir not empty).
    """
    pooling, normalize, max_seq_length, prompts = _check_settings(pooling, normalize, max_seq_length, prompts)
    if inputs is not None and not isinstance(inputs, dict):
        raise InvalidTypeError(f"inputs must be a dict {{graph input name: embedrank input name}} or None, "
                               f"got {type(inputs).__name__}")
    if output is not None and not isinstance(output, str):
        raise InvalidTypeError(f"output must be a graph output name (str) or None, got {type(output).__name__}")
    if variant is not None and variant not in DEFAULT_VARIANT_FILES:
        raise InvalidValueError(f"unknown variant {variant!r}; expected one of {', '.join(DEFAULT_VARIANT_FILES)}")
    if not isinstance(overwrite, bool):
        raise InvalidTypeError(f"overwrite must be True or False, got {overwrite!r}")
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise MissingFileError(f"ONNX file not found: {onnx_path}")
    tokenizer_path = _tokenizer_file(tokenizer)
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, overwrite)

    from embedrank.models.tokenization import TextTokenizer

    text_tokenizer = TextTokenizer(tokenizer_path, max_seq_length)
    model = _load_graph(onnx_path)
    info = _read_graph(model, onnx_path, inputs)
    variant = variant or info.precision
    session = _session(onnx_path)
    vocab_top = _check_vocab(session, info, text_tokenizer, onnx_path)
    _check_full_length(session, info, text_tokenizer, onnx_path)
    probe = _probe(session, info, text_tokenizer, pooling, output, onnx_path)
    info.dropped_outputs = [name for name in info.output_names if name != probe.output]

    def write(work: Path) -> None:
        file = work / DEFAULT_VARIANT_FILES[variant]
        rewritten = bool(info.dropped_outputs or info.external or info.int32_inputs
                         or any(name != role for name, role in info.inputs.items()))
        if rewritten:
            _write_rewritten(onnx_path, file, info, probe.output)
        else:
            shutil.copyfile(onnx_path, file)
        written = _session(file)
        rewrite_diff = _check_rewritten(written, probe, file) if rewritten else 0.0
        shutil.copyfile(tokenizer_path, work / TOKENIZER_FILE)
        model_files = sorted(p for p in work.iterdir() if p.name.startswith(file.name))
        uses_types = "token_type_ids" in info.inputs.values() and "token_type_ids" in {
            i.name for i in written.get_inputs()}
        document = {
            "kind": "bi-encoder",
            "pooling": pooling,
            "normalize": normalize,
            "max_seq_length": max_seq_length,
            "dimension": probe.dimension,
            "prompts": prompts,
            "inputs": [i.name for i in written.get_inputs()],
            "token_type_ids": uses_types,
            "output": probe.output,
            "variants": {variant: file.name},
            "sizes": {variant: sum(p.stat().st_size for p in model_files)},
            "fingerprint": _fingerprint(model_files + [work / TOKENIZER_FILE]),
            "source": {"onnx": onnx_path.name, "onnx_sha256": _sha256(onnx_path), "tokenizer": tokenizer_path.name,
                       "tokenizer_sha256": _sha256(tokenizer_path)},
            "import": {
                "input_map": dict(info.inputs),
                "int32_inputs": list(info.int32_inputs),
                "outputs_dropped": list(info.dropped_outputs),
                "rewritten": rewritten,
                "precision": info.precision,
                "embedding_rows": info.embedding_rows,
                "tokenizer_max_id": vocab_top,
                "probe": verify.rounded({"n_texts": len(probe.texts), "max_tokens": int(probe.batch.input_ids.shape[1]),
                                         "padding_min_cosine": probe.padding_min_cosine,
                                         "rewrite_max_abs_diff": rewrite_diff}),
                "versions": _versions(),
            },
        }
        write_config(work, document)
        document["import"]["probe"]["encoder_min_cosine"] = verify.rounded(_check_encoder(work, variant, probe))
        write_config(work, document)

    write_directory(out_dir, write, tag="import",
                    check_replaceable=lambda path: _check_replaceable(path) if os.path.lexists(path) else None)
    return out_dir


# -- arguments -------------------------------------------------------------------------------
def _check_settings(pooling, normalize, max_seq_length, prompts):
    if pooling not in IMPORT_POOLINGS:
        raise InvalidValueError(f"unknown pooling {pooling!r}; expected one of {', '.join(IMPORT_POOLINGS)}")
    if not isinstance(normalize, bool):
        raise InvalidTypeError(f"normalize must be True or False, got {normalize!r}")
    if isinstance(max_seq_length, bool) or not isinstance(max_seq_length, int):
        raise InvalidTypeError(f"max_seq_length must be an integer, got {type(max_seq_length).__name__}")
    if max_seq_length < 2:
        raise InvalidValueError(f"max_seq_length must be at least 2, got {max_seq_length}")
    if prompts is None:
        prompts = {}
    if not isinstance(prompts, dict):
        raise InvalidTypeError(f"prompts must be a dict {{'query': str, 'document': str}} or None, "
                               f"got {type(prompts).__name__}")
    unknown = set(prompts) - {"query", "document"}
    if unknown:
        raise InvalidValueError(f"prompts has unknown roles {sorted(unknown)}; expected 'query' and 'document'")
    for role, prompt in prompts.items():
        if not isinstance(prompt, str):
            raise InvalidTypeError(f"prompts[{role!r}] must be a str, got {type(prompt).__name__}")
    return pooling, normalize, max_seq_length, {"query": prompts.get("query", ""),
                                                "document": prompts.get("document", "")}


def _tokenizer_file(tokenizer) -> Path:
    if not isinstance(tokenizer, (str, os.PathLike)):
        raise InvalidTypeError(f"tokenizer must be the path of a tokenizer.json or of a folder holding one, "
                               f"got {type(tokenizer).__name__}")
    path = Path(tokenizer)
    if path.is_dir():
        path = path / TOKENIZER_FILE
    if not path.is_file():
        raise MissingFileError(f"tokenizer file not found: {path}")
    return path


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """As export_model: an empty or missing folder, or with overwrite an embedrank model folder."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ExistingPathError(f"out_dir exists and is not a folder: {out_dir}")
        if any(out_dir.iterdir()):
            if not overwrite:
                raise ExistingPathError(f"out_dir is not empty: {out_dir} (pass overwrite=True to replace it)")
            _check_replaceable(out_dir)


# -- reading the graph -----------------------------------------------------------------------
def _load_graph(path: Path):
    """The ModelProto without its external data; SourceModelError when it is not ONNX."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf's DecodeError and onnx's own errors
        raise SourceModelError(f"{path} is not an ONNX model: {str(error).strip() or type(error).__name__}") from None
    if model.ir_version < 1 or not model.opset_import or not model.graph.node or not model.graph.output:
        raise SourceModelError(f"{path} is not an ONNX model (no graph: ir_version {model.ir_version}, "
                               f"{len(model.graph.node)} nodes, {len(model.graph.output)} outputs)")
    return model


def _session(path: Path):
    """A CPU session on the whole graph (all outputs), plain onnxruntime."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 4  # failed probe runs are reported as SourceModelError, not logged
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SourceModelError(f"onnxruntime cannot load {path}: {first}") from None


def _read_graph(model, path: Path, mapping: dict | None) -> _GraphInfo:
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    graph_inputs = [value for value in graph.input if value.name not in initializers]
    names = [value.name for value in graph_inputs]
    roles = _map_inputs(names, mapping, path)
    int32 = []
    for value in graph_inputs:
        tensor = value.type.tensor_type
        dims = tensor.shape.dim if tensor.HasField("shape") else None
        if tensor.elem_type not in (_INT64, _INT32) or (dims is not None and len(dims) != 2):
            shape = "?" if dims is None else [d.dim_param or d.dim_value for d in dims]
            raise SourceModelError(f"{path}: input {value.name!r} ({roles[value.name]}) must be an int64 or int32 "
                                   f"tensor [batch, tokens], got elem_type {tensor.elem_type} with shape {shape}")
        if tensor.elem_type == _INT32:
            int32.append(value.name)
    external = any(init.data_location == _EXTERNAL for init in graph.initializer)
    ids_name = next(name for name, role in roles.items() if role == "input_ids")
    return _GraphInfo(inputs=roles, int32_inputs=int32, output_names=[o.name for o in graph.output],
                      embedding_rows=_embedding_rows(graph, ids_name), external=external,
                      precision=_precision(model))


def _map_inputs(names: list, mapping: dict | None, path: Path) -> dict:
    """{graph input name: embedrank input name} for every graph input, or SourceModelError."""
    roles = {}
    if mapping is not None:
        for name, role in mapping.items():
            if name not in names:
                raise InvalidValueError(f"inputs names {name!r}, which is not an input of {path} "
                                        f"(its inputs: {names})")
            if role not in MODEL_INPUTS:
                raise InvalidValueError(f"inputs maps {name!r} to {role!r}; expected one of {', '.join(MODEL_INPUTS)}")
            roles[name] = role
    for name in names:
        if name in roles:
            continue
        key = name.lower().removesuffix(":0")
        role = next((r for r, aliases in INPUT_ALIASES.items() if key in aliases), None)
        if role is None:
            raise SourceModelError(f"{path} has an input {name!r} that embedrank cannot feed (it feeds "
                                   f"{', '.join(MODEL_INPUTS)}); if it is one of these, say which with "
                                   f"inputs={{{name!r}: 'input_ids' | 'attention_mask' | 'token_type_ids'}}")
        roles[name] = role
    taken: dict = {}
    for name, role in roles.items():
        if role in taken:
            raise SourceModelError(f"{path}: inputs {taken[role]!r} and {name!r} both map to {role}; "
                                   "say which is which with inputs={...}")
        taken[role] = name
    missing = [role for role in ("input_ids", "attention_mask") if role not in taken]
    if missing:
        raise SourceModelError(f"{path} lacks the input(s) {', '.join(missing)} (its inputs: {names}); embedrank "
                               "feeds input_ids and attention_mask [batch, tokens] (padded batches need the mask)"
                               + ("; map differently named ones with inputs={...}" if names else ""))
    return roles


def _embedding_rows(graph, ids_name: str) -> int | None:
    """Rows of the table that the Gather reading input_ids indexes; None when not found."""
    consumers: dict = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    producer = {out: node for node in graph.node for out in node.output}
    shapes = {init.name: list(init.dims) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    shapes[node.output[0]] = list(attribute.t.dims)
    index_names, frontier = {ids_name}, [ids_name]
    while frontier:
        for node in consumers.get(frontier.pop(), []):
            if node.op_type in _INDEX_PASSTHROUGH and node.input[0] in index_names and node.output[0] not in index_names:
                index_names.add(node.output[0])
                frontier.append(node.output[0])
    rows = [r for node in graph.node if node.op_type == "Gather" and len(node.input) > 1
            and node.input[1] in index_names for r in [_table_rows(node.input[0], producer, shapes)] if r]
    return max(rows) if rows else None


def _table_rows(name: str, producer: dict, shapes: dict, depth: int = 0) -> int | None:
    if name in shapes:
        return shapes[name][0] if len(shapes[name]) == 2 else None
    node = producer.get(name)
    if node is None or node.op_type not in _TABLE_PASSTHROUGH or depth > 4:
        return None
    return max((r for r in (_table_rows(i, producer, shapes, depth + 1) for i in node.input if i) if r), default=None)


def _precision(model) -> str:
    """"int8" for quantized weights or ops, "fp16" for float16 weights, else "fp32"."""
    graph = model.graph
    ops = {node.op_type for node in graph.node}
    big = [init for init in graph.initializer if len(init.dims) >= 2 and int(np.prod(init.dims)) >= 4096]
    if ops & _QUANTIZED_OPS or any(init.data_type in (_INT8, _UINT8) for init in big):
        return "int8"
    if big and sum(init.data_type == _FLOAT16 for init in big) * 2 > len(big):
        return "fp16"
    return "fp32"


# -- running the graph -----------------------------------------------------------------------
def _feeds(batch, info: _GraphInfo) -> dict:
    feeds = {}
    for name, role in info.inputs.items():
        values = getattr(batch, role)
        feeds[name] = values.astype(np.int32) if name in info.int32_inputs else values
    return feeds


def _run_error(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _check_vocab(session, info: _GraphInfo, tokenizer, path: Path) -> int:
    """Raises SourceModelError when the tokenizer's largest id passes the embedding table;
    returns that id."""
    top = max(tokenizer.tokenizer.get_vocab(with_added_tokens=True).values())
    if info.embedding_rows is not None and top >= info.embedding_rows:
        raise SourceModelError(f"the tokenizer does not fit {path}: its ids go up to {top} but the model's embedding "
                               f"table has {info.embedding_rows} rows (is it the model's own tokenizer?)")
    from embedrank.models.tokenization import TokenizedBatch

    ones = np.ones((1, 3), dtype=np.int64)
    batch = TokenizedBatch(np.full((1, 3), top, dtype=np.int64), ones, np.zeros_like(ones))
    try:
        session.run(None, _feeds(batch, info))
    except Exception as error:  # onnxruntime raises its own exception types
        raise SourceModelError(f"{path} does not run on the tokenizer's largest id {top} (the tokenizer may not be "
                               f"the model's: its vocabulary is larger than the embedding table): "
                               f"{_run_error(error)}") from None
    return int(top)


def _check_full_length(session, info: _GraphInfo, tokenizer, path: Path) -> None:
    """Runs one text of exactly max_seq_length tokens; SourceModelError when the model cannot
    (max_seq_length above its position embeddings)."""
    from embedrank.models.tokenization import TokenizedBatch

    length = tokenizer.max_length
    ids = list(tokenizer.encode(["word " * length])[0][0].ids)
    if len(ids) < length:  # a tokenizer that merges the repeats: repeat the last ordinary token
        ids = ids[:-1] + [ids[-2] if len(ids) > 1 else ids[-1]] * (length - len(ids)) + ids[-1:]
    ones = np.ones((1, length), dtype=np.int64)
    batch = TokenizedBatch(np.asarray([ids[:length]], dtype=np.int64), ones, np.zeros_like(ones))
    try:
        session.run(None, _feeds(batch, info))
    except Exception as error:  # onnxruntime raises its own exception types
        raise SourceModelError(f"{path} does not run on a text of max_seq_length={length} tokens (is it above the "
                               f"model's position embeddings?): {_run_error(error)}") from None


@dataclass
class _Probe:
    texts: list
    batch: object  # TokenizedBatch
    output: str
    index: int
    reference: np.ndarray  # the chosen output on the padded batch
    vectors: np.ndarray  # its pooled, normalized rows (float64)
    dimension: int
    padding_min_cosine: float


def _probe(session, info: _GraphInfo, tokenizer, pooling: str, wanted: str | None, path: Path) -> _Probe:
    texts = list(PROBE_TEXTS)
    encodings, _ = tokenizer.encode(texts)
    batch = tokenizer.pad(encodings)
    try:
        outputs = session.run(None, _feeds(batch, info))
    except Exception as error:  # onnxruntime raises its own exception types
        raise SourceModelError(f"{path} fails on a probe batch of {len(texts)} texts padded to "
                               f"{batch.input_ids.shape[1]} tokens: {_run_error(error)}") from None
    names = [o.name for o in session.get_outputs()]
    n, length = batch.input_ids.shape
    shapes = {name: (out.dtype, out.shape) for name, out in zip(names, outputs)}
    token_level = [name for name, (dtype, shape) in shapes.items()
                   if dtype == np.float32 and len(shape) == 3 and shape[:2] == (n, length) and shape[2] > 0]
    pooled = [name for name, (dtype, shape) in shapes.items()
              if dtype == np.float32 and len(shape) == 2 and shape[0] == n and shape[1] > 0]
    fits, kind, preferred = ((pooled, "[batch, hidden]", _POOLED_OUTPUT_NAMES) if pooling == "pooled" else
                             (token_level, "[batch, tokens, hidden]", _TOKEN_OUTPUT_NAMES))
    described = ", ".join(f"{name!r} {dtype} {list(shape)}" for name, (dtype, shape) in shapes.items())
    if wanted is not None:
        if wanted not in shapes:
            raise InvalidValueError(f"output={wanted!r} is not an output of {path} (its outputs: {names})")
        if wanted not in fits:
            raise SourceModelError(f"pooling={pooling!r} needs a float32 output {kind}, but {wanted!r} of {path} gives "
                                   f"{shapes[wanted][0]} {list(shapes[wanted][1])} on a batch of {n} texts of "
                                   f"{length} tokens{_pooling_hint(pooling, wanted, token_level, pooled)}")
        chosen = wanted
    elif not fits:
        raise SourceModelError(f"pooling={pooling!r} needs a float32 output {kind}, but none of {path}'s outputs "
                               f"has that shape on a batch of {n} texts of {length} tokens (outputs: {described})"
                               f"{_pooling_hint(pooling, None, token_level, pooled)}")
    elif len(fits) == 1:
        chosen = fits[0]
    else:
        chosen = next((name for name in fits if name in preferred), None)
        if chosen is None:
            raise SourceModelError(f"{path} has several outputs {kind} ({fits}); name the one to use with output=...")
    index = names.index(chosen)
    reference = outputs[index]
    if not np.isfinite(reference).all():
        raise SourceModelError(f"{path}: output {chosen!r} holds NaN or Inf on the probe texts")
    vectors = _pool(reference, batch.attention_mask, pooling)
    padding_min = 1.0
    for row in range(n):
        single = _batch_rows(batch, row)
        alone = session.run([chosen], _feeds(single, info))[0]
        if alone.shape[-1] != reference.shape[-1]:
            raise SourceModelError(f"{path}: output {chosen!r} is {list(alone.shape)} for one text alone but "
                                   f"{list(reference.shape)} for the padded batch")
        padding_min = min(padding_min, float(_pool(alone, single.attention_mask, pooling)[0] @ vectors[row]))
    if not padding_min >= PADDING_MIN_COSINE:
        raise SourceModelError(f"{path}: a text's vector changes when it is padded beside longer texts (cosine "
                               f"{padding_min:.3f} to the text run alone, below {PADDING_MIN_COSINE}): the graph "
                               "ignores attention_mask, or the inputs are mapped wrongly "
                               f"({_describe_map(info.inputs)})")
    return _Probe(texts, batch, chosen, index, reference, vectors, int(reference.shape[-1]), padding_min)


def _pooling_hint(pooling: str, name, token_level: list, pooled: list) -> str:
    if pooling == "pooled" and token_level:
        return f"; {(name if name in token_level else token_level[0])!r} is token-level: pass pooling='mean', 'cls' or 'lasttoken'"
    if pooling != "pooled" and pooled:
        return f"; {(name if name in pooled else pooled[0])!r} is pooled [batch, hidden]: pass pooling='pooled'"
    return ""


def _describe_map(mapping: dict) -> str:
    return ", ".join(f"{name!r} -> {role}" for name, role in mapping.items())


def _batch_rows(batch, row: int):
    """Row `row` of a padded batch alone, cut to its own length (no padding)."""
    from embedrank.models.tokenization import TokenizedBatch

    length = max(int(batch.attention_mask[row].sum()), 1)
    return TokenizedBatch(batch.input_ids[row:row + 1, :length], batch.attention_mask[row:row + 1, :length],
                          batch.token_type_ids[row:row + 1, :length])


def _pool(output: np.ndarray, mask: np.ndarray, pooling: str) -> np.ndarray:
    """Pooled, L2-normalized float64 rows (numpy: the reference for embedrank's kernels)."""
    if pooling == "lasttoken":
        last = np.maximum(mask.sum(axis=1) - 1, 0)
        output = np.asarray(output)[np.arange(len(output)), last]
    return verify.pool(output, mask, "cls" if pooling == "cls" else "mean")


# -- writing ---------------------------------------------------------------------------------
def _write_rewritten(source: Path, dest: Path, info: _GraphInfo, output: str) -> None:
    """dest: the source graph with `output` as its only output (and only what it needs), read
    from embedrank's int64 inputs through an Identity or a Cast to the names and types it used."""
    import onnx
    from onnx import helper

    model = onnx.load(str(source))  # with its external data, if any
    graph = model.graph
    kept_output = [o for o in graph.output if o.name == output]
    del graph.output[:]
    graph.output.extend(kept_output)
    needed = _needed(list(graph.node), output)
    del graph.node[:]
    graph.node.extend(needed)
    used = {name for node in graph.node for name in _node_inputs(node)} | {output}
    for field_, keep in ((graph.initializer, lambda v: v.name in used), (graph.input, lambda v: v.name in used)):
        kept = [v for v in field_ if keep(v)]
        del field_[:]
        field_.extend(kept)
    produced = {name for node in graph.node for name in node.output}
    kept_info = [v for v in graph.value_info if v.name in produced]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)

    for value, original in [(value, value.name) for value in graph.input]:
        role = info.inputs.get(original)
        int32 = original in info.int32_inputs
        if role is None or (role == value.name and not int32):
            continue
        if role == output:
            raise SourceModelError(f"{source}: the output is named {output!r}, the name embedrank gives an input")
        names = _all_names(graph)
        inner = value.name
        if role == inner:  # an int32 input: the int64 one takes its name, the graph reads a renamed copy
            inner = _fresh(f"{inner}_int32", names)
            _rename(graph, value.name, inner)
        elif role in names:  # the graph uses embedrank's name for a value of its own: rename that one
            _rename(graph, role, _fresh(f"{role}_graph", names))
        graph.input.remove(value)
        graph.input.append(helper.make_tensor_value_info(role, onnx.TensorProto.INT64, ["batch", "sequence"]))
        adapter = (helper.make_node("Cast", [role], [inner], to=onnx.TensorProto.INT32, name=f"embedrank_cast_{role}")
                   if int32 else helper.make_node("Identity", [role], [inner], name=f"embedrank_input_{role}"))
        graph.node.insert(0, adapter)
    large = info.external or model.ByteSize() > 1_800_000_000
    onnx.save(model, str(dest), save_as_external_data=large, all_tensors_to_one_file=True,
              location=dest.name + ".data")


def _all_names(graph) -> set:
    names = {v.name for v in list(graph.input) + list(graph.output) + list(graph.value_info)}
    names |= {init.name for init in graph.initializer}
    for node in graph.node:
        names |= _node_inputs(node) | set(node.output)
    return names


def _fresh(base: str, names: set) -> str:
    name, n = base, 1
    while name in names:
        name, n = f"{base}_{n}", n + 1
    return name


def _rename(graph, old: str, new: str) -> None:
    """Renames the value `old` to `new` wherever the graph (and its subgraphs) read or write it."""
    for node in graph.node:
        for values in (node.input, node.output):
            for i, name in enumerate(values):
                if name == old:
                    values[i] = new
        for attribute in node.attribute:
            for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                _rename(sub, old, new)
    for value in list(graph.input) + list(graph.output) + list(graph.value_info) + list(graph.initializer):
        if value.name == old:
            value.name = new


def _node_inputs(node) -> set:
    """The names a node reads, its subgraphs' outer references included."""
    names = {name for name in node.input if name}
    for attribute in node.attribute:
        for graph in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
            for inner in graph.node:
                names |= _node_inputs(inner)
    return names


def _needed(nodes: list, output: str) -> list:
    """The nodes `output` depends on, in their order."""
    producer = {name: i for i, node in enumerate(nodes) for name in node.output}
    keep, frontier = set(), [output]
    while frontier:
        i = producer.get(frontier.pop())
        if i is None or i in keep:
            continue
        keep.add(i)
        frontier.extend(_node_inputs(nodes[i]))
    return [node for i, node in enumerate(nodes) if i in keep]


def _check_rewritten(session, probe: _Probe, path: Path) -> float:
    """The rewritten graph's largest difference to the original's output on the probe batch."""
    names = [i.name for i in session.get_inputs()]
    got = session.run([probe.output], {name: getattr(probe.batch, name) for name in names})[0]
    if got.shape != probe.reference.shape:
        raise SourceModelError(f"{path.name}: the rewritten graph gives {list(got.shape)}, the original "
                               f"{list(probe.reference.shape)}")
    diff = float(np.abs(got - probe.reference).max())
    tolerance = REWRITE_RTOL * max(1.0, float(np.abs(probe.reference).max()))
    if not diff <= tolerance:
        raise SourceModelError(f"{path.name}: the rewritten graph differs from the original by {diff:.3g} "
                               f"(more than {tolerance:.3g})")
    return diff


def _check_encoder(folder: Path, variant: str, probe: _Probe) -> float:
    """Opens the folder as embedrank will and encodes the probe texts; their lowest cosine to
    the probe's vectors (normalized either way), or SourceModelError below PADDING_MIN_COSINE."""
    import warnings

    from embedrank.errors import TruncationWarning
    from embedrank.models.encoder import Encoder

    encoder = Encoder.load(folder, variant=variant)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)  # the probe's longest text is cut on purpose
        got = encoder.encode(probe.texts, normalize=True, show_progress=False, batch_size=len(probe.texts))
    del encoder
    cosine = float((got.astype(np.float64) * probe.vectors).sum(axis=1).min())
    if not cosine >= PADDING_MIN_COSINE:
        raise SourceModelError(f"the imported folder's Encoder gives vectors that differ from the graph's (lowest "
                               f"cosine {cosine:.3f} on the probe texts)")
    return cosine


def _sha256(*paths: Path) -> str:
    """SHA-256 over the bytes of the files, in order (hex)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while block := f.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()


def _fingerprint(paths: list) -> str:
    """"sha256:" over the bytes of the model file(s) and tokenizer.json, in that order."""
    return "sha256:" + _sha256(*paths)


def _versions() -> dict:
    import onnx
    import onnxruntime
    import tokenizers

    import embedrank

    return {"embedrank": embedrank.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "tokenizers": tokenizers.__version__}
