"""Offline export of a local Hugging Face model folder to an embedrank model folder.

    >>> embedrank.export_model("path/to/all-MiniLM-L6-v2", "models/minilm")

writes ``models/minilm/`` with

* ``model.onnx``: fp32, inputs ``input_ids``, ``attention_mask`` (and ``token_type_ids``
  only when the model has a token-type embedding of more than one type, as BERT does;
  MPNet and XLM-R don't), output ``last_hidden_state`` [batch, sequence, hidden] for a
  bi-encoder or ``logits`` [batch, num_labels] for a cross-encoder; batch and sequence
  axes dynamic; opset 18.
* ``model_opt.onnx`` (``optimize=True``): ONNX Runtime's transformer optimizer
  (``onnxruntime.transformers.optimizer.optimize_model``, model_type "bert", heads and
  hidden size from config.json). It runs at ``opt_level=1``: ORT's basic, hardware-agnostic
  graph rewrites plus the Python fusions (Attention, EmbedLayerNormalization,
  SkipLayerNormalization, BiasGelu), so the file stays portable across CPUs and GPUs; the
  hardware-specific rewrites are left to the session at load time (embedrank opens models
  with ORT_ENABLE_ALL). MPNet's attention carries a relative-position bias that the "bert"
  fusion does not match: its Attention is left unfused, the layer norms and GELUs are.
* ``model_int8.onnx`` (``quantize=True``): ``onnxruntime.quantization.quantize_dynamic`` of
  the fp32 graph (not the fused one: shape inference works on standard ops only, and the
  fused graph quantized no better): the MatMul weights as int8, per-channel, activations
  uint8 with one dynamic scale per tensor, ``reduce_range=False``. Kept fp32, chosen by
  measurement (cosine to the fp32 model, mean/min over varied texts):

  - the embedding tables (Gather), always: quantized, they are 4x smaller but one repeated
    token ("word " * 400, now in the sample) dropped to cosine 0.48 on all-mpnet-base-v2
    (0.94 with them fp32);
  - the FFN down-projections (MatMuls whose weight is [intermediate_size, hidden_size]), only
    when needed: their post-GELU inputs have outliers that one scale per tensor resolves
    poorly. A bi-encoder is first quantized whole; if its worst cosine on the sample is below
    ``variants.INT8_ALL_MATMULS_MIN_COSINE`` (0.95) it is quantized again with them fp32 (both tries
    are recorded in embedrank.json). all-mpnet-base-v2 needs it (0.79/0.24 whole, 0.98/0.93
    without them, and still an ExportAccuracyWarning); all-MiniLM-L6-v2 does not (0.99/0.97
    whole), and quantizing them too makes it about 1.3x faster at the batch sizes embedrank
    uses. Cross-encoders keep them fp32.

  per_channel=True: per-tensor weights gave all-MiniLM-L6-v2 a worst cosine of about 0.86,
  per-channel about 0.97. reduce_range cost accuracy on this CPU (with VNNI); on AVX2-only
  CPUs without VNNI ORT's u8s8 kernels can saturate, and the error recorded in
  embedrank.json is the export machine's. A bi-encoder still below INT8_WARN_COSINE after
  both tries is quantized once more with ``reduce_range=True``, kept when better: on an AMD
  EPYC (AVX2, no VNNI) all-mpnet-base-v2 measured cosine ~0.1 without it (saturation), 0.99
  with it and the FFN down-projections fp32. Dynamic int8 is not accurate to 1e-4: its error
  is measured on the sample and recorded, never bounded. Its activation scales are taken per
  batch tensor, so an int8 vector also moves slightly with the texts batched beside it.
* ``model_pooled.onnx`` (``pooled=True``, off by default): the pooling, the Dense modules and L2
  normalization inside the graph, output ``sentence_embedding`` [batch, dimension] (not for a
  Pooling that leaves the prompt out: the graph cannot know the prompt's length).
* ``dense_<i>.npz``: the weights of each sentence-transformers Dense module after pooling
  (sentence-t5's projection, a Tanh head), applied by the Encoder in numpy
  (embedrank.models.head), since the token-level graphs end before pooling.
* ``model_fp16.onnx`` (``fp16=True``, off by default; with ``pooled=True`` also
  ``model_pooled_fp16.onnx``): the ORT-optimized graph (the fp32 one with
  ``optimize=False``; the pooled one for the pooled variant) with weights and activations
  in float16 (``onnxruntime.transformers.float16.convert_float_to_float16``, inputs and
  outputs kept as they are), for the CUDA provider. The fused graph is the one to convert:
  its Attention takes the mask as sequence lengths (right padding, which embedrank uses),
  and the CUDA provider runs it through cuDNN's flash attention, well ahead of the unfused
  fp16 graph (benchmarks/results/gpu_graphs.md). It also runs on a CPU, slower than fp32,
  which is where it is verified.
* ``tokenizer.json`` (copied unchanged) and ``embedrank.json`` (see :func:`export_model`).

Why ``torch.onnx.export`` (its TorchScript exporter, ``dynamo=False``) and not optimum:

* optimum 2.x moved ONNX export into ``optimum-onnx``, whose only releases pin
  ``transformers<4.58`` (and ``optimum~=2.1``); the ``export`` extra resolves to
  transformers 5.x, so optimum cannot be installed beside it. In a separate venv with
  transformers 4.57 it did export all-MiniLM-L6-v2 offline, but it would only give
  ``model.onnx``: sentence-transformers' pooling, normalization, prompts and the checks
  below are ours either way.
* The dynamo exporter (``dynamo=True``, the default since torch 2.9) needs onnxscript, took
  about 22 s instead of 1-4 s on all-MiniLM-L6-v2, writes the weights to a separate
  ``.onnx.data`` file, and its graph gave wrong hidden states (max diff 1.3) when ONNX
  Runtime ran it with graph optimizations disabled (right ones with them enabled). The
  TorchScript exporter's graph is right at every level and fuses fully. It warns that it is
  deprecated; when torch drops it, switch to ``dynamo=True`` here: the verification below is
  what makes either one safe to use.
* The model is loaded with ``attn_implementation="eager"``: the explicit softmax(QK^T + mask)
  pattern is what ORT's fusion recognises (SDPA-exported graphs got no Attention fusion),
  and tracing uses a padded dummy batch so no "mask is all ones" shortcut can be baked in.

Families. A folder is loaded as sentence-transformers loads it: AutoModel, or the encoder alone
for T5-family models (T5EncoderModel, as sentence-t5 and GTR use), in float32 with eager
attention. Tested on tiny random-weight models of BERT, XLM-RoBERTa, MPNet, ModernBERT, Qwen3
(a decoder: last-token pooling, instructions as prompts) and T5's encoder, each equal to
sentence-transformers within 1e-5 in fp32 (tests/export/test_architectures.py,
benchmarks/results/architectures.md); other architectures built into transformers are tried and
verified the same way. Refused with an error naming the architecture: a folder whose code lives
in it (config.json auto_map: trust_remote_code), a model_type transformers does not know, an
encoder-decoder outside the T5 family, and CLS pooling on a causal decoder (its first token sees
nothing else). Pooling: sentence-transformers' mean, cls, lasttoken, weightedmean, max and
mean_sqrt_len_tokens (one mode), its include_prompt, Dense (Identity, Tanh, ReLU, Sigmoid) and
Normalize modules. Prompts: config_sentence_transformers.json's prompts (every name) and
default_prompt_name go into embedrank.json as they are. embedrank.json's "attention" says how
many attention layers a CPU session runs on embedrank's fused kernel and why the others do not
(embedrank.runtime.attention_fusion.explain).

Every variant except int8 is verified against the torch model on sample texts of varied
lengths (tokenized from tokenizer.json with its baked-in padding and truncation turned off,
truncated at max_seq_length, padded here): the largest absolute difference of the pooled,
L2-normalized embeddings (cross-encoders: of the logits) must be <= 1e-4, in one padded
batch of all and for three texts run alone (batch 1, unpadded), or the export fails with
:class:`ExportVerificationError` (fp16 variants: within ``verify.FP16_RTOL`` x max(1, the largest
reference value), 5e-3 for unit vectors). The fp32 graph is checked with ONNX Runtime's graph
optimizations both on and off, the others with them on (as embedrank runs them). The int8
error (max abs diff and cosine to the torch model) is measured and recorded, not bounded.

Everything is offline: HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE are set and every load is
``local_files_only=True``. The output is written into a temporary folder beside ``out_dir``
and renamed into place only once complete and verified.

torch, transformers and onnx (the ``export`` extra) are imported inside the functions, so
``import embedrank`` never imports them.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from embedrank.models.folder import DEFAULT_VARIANT_FILES as VARIANT_FILES
from embedrank.models.folder import FORMAT_VERSION, TOKENIZER_FILE, read_config, write_config
from embedrank.utils.files import write_directory
from embedrank.export import trace, variants, verify
from embedrank.export.source import KINDS, SourceModel, SourceModelError, read_source_model
from embedrank.errors import ExistingPathError, ExportAccuracyWarning, ExportError, ExportVerificationError, InvalidTypeError, InvalidValueError, MissingDependencyError, ModelFolderError

__all__ = [
    "ExportAccuracyWarning",
    "ExportError",
    "ExportVerificationError",
    "SourceModelError",
    "export_model",
]

OPSET = 18
EXPORT_EXTRA_HINT = "install the export extra: pip install 'embedrank[export]'"


def export_model(model_dir: str | os.PathLike, out_dir: str | os.PathLike, kind: str = "bi-encoder",
                 optimize: bool = True, quantize: bool = True, *, pooled: bool = False, fp16: bool = False,
                 overwrite: bool = False, atol: float = verify.VERIFY_ATOL, texts: Sequence[str] | None = None,
                 opset: int = OPSET) -> Path:
    """Exports a local Hugging Face model folder to an embedrank model folder; returns its path.

    model_dir: a local folder (see "Families" in the module docstring) with config.json, the
    weights (safetensors or .bin) and tokenizer.json; sentence-transformers' modules.json,
    1_Pooling/config.json, Dense folders, sentence_bert_config.json and
    config_sentence_transformers.json are read when present (pooling, Dense, normalization,
    max_seq_length, prompts). Without them:
    mean pooling, normalize=True, max_seq_length = min(tokenizer model_max_length,
    usable position embeddings).
    kind: "bi-encoder" (AutoModel, output last_hidden_state) or "cross-encoder"
    (AutoModelForSequenceClassification, output logits).
    optimize / quantize: also write model_opt.onnx / model_int8.onnx.
    pooled: also write model_pooled.onnx (bi-encoder only), pooling inside the graph.
    fp16: also write model_fp16.onnx (and model_pooled_fp16.onnx with pooled), float16
    weights and activations for the CUDA provider, verified within verify.FP16_RTOL.
    overwrite: replace an existing non-empty out_dir that is an embedrank model folder (one
    with a valid embedrank.json); any other non-empty folder is an ExistingPathError.
    atol: verification tolerance; texts: verification texts (default verify.SAMPLE_TEXTS;
    cross-encoders use verify.SAMPLE_PAIRS).

    embedrank.json holds: format_version, kind, pooling, normalize, include_prompt, dense (the
    Dense layers' files and sizes), hidden_size, causal (a decoder), max_seq_length, dimension
    (after Dense), prompts {name: text}, default_prompt_name, attention (fused layers and the
    fallback reasons), inputs, token_type_ids, output, variants
    {name: file}, fingerprint ("sha256:" over the weight files' bytes), source, export
    (versions, opset, settings, seconds) and verification (per variant: max_abs_diff,
    min/mean cosine).

    Raises FileNotFoundError / NotADirectoryError (missing folder, config.json,
    tokenizer.json or weights, naming the path), ValueError (unknown kind, bad argument),
    SourceModelError (unsupported sentence-transformers setup), FileExistsError (out_dir
    not empty), ImportError (export extra missing), ExportVerificationError (a variant is
    off by more than atol) or ExportError.
    """
    if kind not in KINDS:
        raise InvalidValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    if pooled and kind != "bi-encoder":
        raise InvalidValueError("pooled=True applies to bi-encoders only")
    for name, flag in (("optimize", optimize), ("quantize", quantize), ("pooled", pooled), ("fp16", fp16)):
        if not isinstance(flag, bool):
            raise InvalidTypeError(f"{name} must be True or False, got {flag!r}")
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 17:
        raise InvalidValueError(f"opset must be an integer >= 17, got {opset!r}")
    if isinstance(atol, bool) or not (isinstance(atol, (int, float)) and atol >= 0):
        raise InvalidValueError(f"atol must be a non-negative number, got {atol!r}")
    source = read_source_model(model_dir, kind)
    if pooled and not source.include_prompt:
        raise InvalidValueError(f"pooled=True cannot be exported for {source.path}: its Pooling leaves the prompt out "
                                "(include_prompt: false), which a pooled graph cannot know; pool outside the graph")
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, source.path, overwrite)
    _check_export_extra()
    if texts is None:
        texts = verify.SAMPLE_PAIRS if kind == "cross-encoder" else verify.SAMPLE_TEXTS
    texts = _check_sample(texts, kind)

    # write_directory checks again as it starts: out_dir may have changed since _check_out_dir
    write_directory(out_dir, lambda work: _export_into(source, work, kind, optimize, quantize, pooled, fp16, atol,
                                                       texts, opset), tag="export",
                    check_replaceable=lambda path: _check_replaceable(path) if os.path.lexists(path) else None)
    return out_dir


# -- argument checks -----------------------------------------------------------------------
def _check_out_dir(out_dir: Path, source_dir: Path, overwrite: bool) -> None:
    resolved_out, resolved_src = out_dir.resolve(), source_dir.resolve()
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ExistingPathError(f"out_dir exists and is not a folder: {out_dir}")
        if any(out_dir.iterdir()) and not overwrite:
            raise ExistingPathError(f"out_dir is not empty: {out_dir} (pass overwrite=True to replace it)")
    if resolved_out == resolved_src or resolved_out in resolved_src.parents:
        raise InvalidValueError(f"out_dir {out_dir} would replace the model folder {source_dir}")
    if out_dir.exists():
        _check_replaceable(out_dir)


def _check_replaceable(out_dir: Path) -> None:
    """overwrite=True replaces an embedrank model folder only (one with a valid embedrank.json):
    a mistyped out_dir pointing at a home or data folder must not be deleted."""
    if out_dir.is_symlink() or not out_dir.is_dir():
        raise ExistingPathError(f"out_dir {out_dir} is not a folder that export_model may replace")
    if not any(out_dir.iterdir()):
        return
    try:
        raw = read_config(out_dir)
    except ModelFolderError as error:
        raise ExistingPathError(f"out_dir {out_dir} is not empty and not an embedrank model folder, so overwrite=True "
                                f"will not replace it ({error})") from None
    if raw.get("format_version") != FORMAT_VERSION or raw.get("kind") not in KINDS:
        raise ExistingPathError(f"out_dir {out_dir} is not empty and its embedrank.json does not describe an embedrank "
                                "model (format_version, kind), so overwrite=True will not replace it")


def _check_export_extra() -> None:
    missing = []
    for module in ("torch", "transformers", "onnx", "onnxruntime", "tokenizers"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise MissingDependencyError(f"export_model needs {', '.join(missing)}: {EXPORT_EXTRA_HINT}")


def _check_sample(texts, kind: str) -> list:
    if isinstance(texts, str) or not hasattr(texts, "__iter__"):
        raise InvalidTypeError("texts must be a sequence (of str, or of (query, document) pairs for a cross-encoder)")
    texts = list(texts)
    if not texts:
        raise InvalidValueError("texts must not be empty")
    for i, t in enumerate(texts):
        ok = (isinstance(t, (tuple, list)) and len(t) == 2 and all(isinstance(x, str) for x in t)
              if kind == "cross-encoder" else isinstance(t, str))
        if not ok:
            want = "a (query, document) pair of str" if kind == "cross-encoder" else "a str"
            raise InvalidTypeError(f"texts[{i}] must be {want}, got {t!r:.60}")
    return [tuple(t) for t in texts] if kind == "cross-encoder" else texts


# -- the export ----------------------------------------------------------------------------


# -- tokenization and references -------------------------------------------------------------




# -- variants ----------------------------------------------------------------------------


def _versions() -> dict:
    import onnx
    import onnxruntime
    import torch
    import transformers

    import embedrank

    return {"embedrank": embedrank.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def _load_dense(source: SourceModel) -> list:
    """The Dense modules' weights as embedrank.models.head.DenseLayer (float32 numpy)."""
    import torch

    from embedrank.models.head import DenseLayer

    layers = []
    for dense in source.dense:
        path = dense["weights"]
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                tensors = load_file(str(path))
            else:
                tensors = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 (safetensors / torch raise their own types)
            raise SourceModelError(f"{path} could not be read as Dense weights: {error}") from None
        expected = (dense["out_features"], dense["in_features"])
        weight = tensors.get("linear.weight")
        if weight is None or tuple(weight.shape) != expected:
            raise SourceModelError(f"{path}: linear.weight has shape {None if weight is None else tuple(weight.shape)}, "
                                   f"expected {expected} (config.json's out_features, in_features)")
        bias = tensors.get("linear.bias") if dense["bias"] else None
        if dense["bias"] and (bias is None or tuple(bias.shape) != expected[:1]):
            raise SourceModelError(f"{path}: linear.bias is missing or not of shape {expected[:1]}")
        residual = None
        if dense["residual"]:
            if dense["in_features"] == dense["out_features"]:
                residual = "identity"
            else:
                residual = tensors.get("residual.weight")
                if residual is None or tuple(residual.shape) != expected:
                    raise SourceModelError(f"{path}: residual.weight is missing or not of shape {expected}")
                residual = residual.float().numpy()
        layers.append(DenseLayer(weight.float().numpy(), None if bias is None else bias.float().numpy(),
                                 dense["activation"], residual))
    return layers


def _write_dense(work: Path, layers: list) -> list[dict]:
    """dense_<i>.npz per layer (weight, bias, residual); their embedrank.json entries."""
    entries = []
    for i, layer in enumerate(layers):
        name = f"dense_{i}.npz"
        arrays = {"weight": layer.weight.astype(np.float32)}
        if layer.bias is not None:
            arrays["bias"] = layer.bias.astype(np.float32)
        if layer.residual is not None and not isinstance(layer.residual, str):
            arrays["residual"] = layer.residual.astype(np.float32)
        np.savez(work / name, **arrays)
        entries.append({"file": name, "in_features": layer.in_features, "out_features": layer.out_features,
                        "bias": layer.bias is not None, "activation": layer.activation,
                        "residual": None if layer.residual is None else
                        ("identity" if isinstance(layer.residual, str) else "matrix")})
    return entries


def _trace(wrapper, args, path: Path, input_names: list[str], output_name: str, output_axes: dict, opset: int,
           source: SourceModel) -> None:
    """trace.torch_export, its failures turned into an ExportError naming the architecture."""
    try:
        trace.torch_export(wrapper, args, path, input_names, output_name, output_axes, opset)
    except ExportError:
        raise
    except Exception as error:  # noqa: BLE001 (torch.onnx raises many types for graphs it cannot trace)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExportError(f"{source.architecture} could not be traced to ONNX: {type(error).__name__}: {first}") from None


def _export_into(source: SourceModel, work: Path, kind: str, optimize: bool, quantize: bool, pooled: bool,
                 fp16: bool, atol: float, samples: list, opset: int) -> None:
    from embedrank.models.head import Head
    from embedrank.runtime import attention_fusion

    started = time.perf_counter()
    with trace.offline_quiet():
        model = trace.load_torch_model(source, kind)
    uses_types = trace.uses_token_type_ids(model)
    input_names = ["input_ids", "attention_mask"] + (["token_type_ids"] if uses_types else [])
    output_name = "logits" if kind == "cross-encoder" else "last_hidden_state"
    dense = _load_dense(source) if kind == "bi-encoder" else []
    pooling = Head(pooling=source.pooling, dense=tuple(dense), include_prompt=source.include_prompt)
    output_axes = {0: "batch"} if kind == "cross-encoder" else {0: "batch", 1: "sequence"}
    pad_id = verify.load_tokenizer(source.tokenizer_path)[1]
    vocab = int(getattr(model.config, "vocab_size", 0) or 1000)
    causal = kind == "bi-encoder" and trace.is_causal(model, input_names, vocab)
    if causal and source.pooling == "cls":
        raise ExportError(f"{source.path}: CLS pooling on {source.architecture}, a causal decoder: its first token "
                          "sees no other token, so every text would get the vector of its first token (decoder "
                          "embedders pool the last token: pooling_mode 'lasttoken')")

    fp32 = work / VARIANT_FILES["fp32"]
    _trace(trace.make_wrapper(model, input_names, kind), trace.dummy_inputs(input_names, pad_id, vocab), fp32,
           input_names, output_name, output_axes, opset, source)
    trace.check_graph(fp32, input_names, output_name, opset)

    batch = verify.tokenize_sample(source.tokenizer_path, samples, source.max_seq_length)
    reference = verify.torch_reference(model, batch, input_names, kind, pooling)
    verification: dict = {"atol": atol, "n_texts": len(samples), "max_tokens": int(batch.input_ids.shape[1])}
    variant_files = {"fp32": fp32.name}
    verification["fp32"] = verify.compare(fp32, reference, batch, input_names, kind, pooling, levels=("all", "none"))
    verify.check_within("fp32", fp32, verification["fp32"], atol)

    settings: dict = {"exporter": "torch.onnx.export (TorchScript, dynamo=False)", "opset": opset,
                      "attn_implementation": "eager"}
    if optimize:
        opt = work / VARIANT_FILES["opt"]
        opt_settings = variants.optimizer_settings(source)
        fused = variants.optimize_graph(fp32, opt, opt_settings)
        settings["optimizer"] = {**opt_settings, "fused": fused}
        verification["opt"] = verify.compare(opt, reference, batch, input_names, kind, pooling)
        verify.check_within("opt", opt, verification["opt"], atol)
        variant_files["opt"] = opt.name
    if quantize:
        int8 = work / VARIANT_FILES["int8"]
        settings["quantization"], verification["int8"] = variants.quantize_int8(
            fp32, int8, source, kind, lambda path: verify.compare(path, reference, batch, input_names, kind, pooling))
        worst = verification["int8"].get("min_cosine")
        if worst is not None and worst < variants.INT8_WARN_COSINE:
            warnings.warn(ExportAccuracyWarning(
                f"{int8.name}: cosine to the torch model as low as {worst:.3f} on the sample (mean "
                f"{verification['int8']['mean_cosine']:.3f}); check it on your data or use the fp32/opt variants"),
                stacklevel=3)
        variant_files["int8"] = int8.name
    if pooled:
        pooled_path = work / VARIANT_FILES["pooled"]
        raw = work / "model_pooled_raw.onnx"
        wrapper = trace.make_wrapper(model, input_names, kind, pooling=source.pooling, normalize=source.normalize,
                                     dense=dense)
        _trace(wrapper, trace.dummy_inputs(input_names, pad_id, vocab), raw, input_names, "sentence_embedding",
               {0: "batch"}, opset, source)
        if optimize:
            variants.optimize_graph(raw, pooled_path, variants.optimizer_settings(source))
            raw.unlink()
        else:
            raw.rename(pooled_path)
        trace.check_graph(pooled_path, input_names, "sentence_embedding", opset)
        verification["pooled"] = verify.compare(pooled_path, reference, batch, input_names, kind, pooling)
        verify.check_within("pooled", pooled_path, verification["pooled"], atol)
        variant_files["pooled"] = pooled_path.name
    if fp16:
        # the fused graph when there is one: its Attention (mask as sequence lengths) is what
        # the CUDA provider runs fastest (cuDNN flash attention; benchmarks/results/gpu_graphs.md)
        base = "opt" if "opt" in variant_files else "fp32"
        tolerance = verify.FP16_RTOL * max(1.0, float(np.abs(reference).max()))
        for name, half_name in [(base, "fp16")] + ([("pooled", "pooled_fp16")] if "pooled" in variant_files else []):
            half = work / VARIANT_FILES[half_name]
            variants.to_float16(work / variant_files[name], half)
            verification[half_name] = {**verify.compare(half, reference, batch, input_names, kind, pooling),
                                       "tolerance": tolerance}
            verify.check_within(half_name, half, verification[half_name], tolerance)
            variant_files[half_name] = half.name
        settings["fp16"] = {"method": "onnxruntime.transformers.float16.convert_float_to_float16",
                            "keep_io_types": True, "rtol": verify.FP16_RTOL, "from": base}
    dense_entries = _write_dense(work, dense)
    attention = attention_fusion.explain_file(fp32)

    shutil.copyfile(source.tokenizer_path, work / TOKENIZER_FILE)
    config = model.config
    dimension = int(config.num_labels if kind == "cross-encoder" else
                    (dense[-1].out_features if dense else source.hidden_size))
    settings["seconds"] = round(time.perf_counter() - started, 2)
    document = {
        "kind": kind,
        **({"pooling": source.pooling, "normalize": source.normalize, "include_prompt": source.include_prompt,
            "dense": dense_entries, "hidden_size": source.hidden_size, "causal": causal} if kind == "bi-encoder" else
           {"num_labels": int(config.num_labels)}),
        "max_seq_length": int(source.max_seq_length),
        "dimension": dimension,
        "prompts": dict(source.prompts),
        "default_prompt_name": source.default_prompt_name,
        "inputs": input_names,
        "token_type_ids": uses_types,
        "output": output_name,
        "variants": variant_files,
        "sizes": {name: (work / file).stat().st_size for name, file in variant_files.items()},
        "fingerprint": source.fingerprint(),
        "source": {
            "name": source.path.name,
            "model_type": source.model_type,
            "architectures": list(config.architectures or []),
            "hidden_size": source.hidden_size,
            "weight_files": [p.name for p in source.weight_files],
            "padding_side": source.padding_side,
            "settings_from": dict(source.sources),
        },
        "attention": attention,
        "export": {**settings, "versions": _versions()},
        "verification": verify.rounded(verification),
    }
    write_config(work, document)
