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
    ``INT8_ALL_MATMULS_MIN_COSINE`` (0.95) it is quantized again with them fp32 (both tries
    are recorded in embedrank.json). all-mpnet-base-v2 needs it (0.79/0.24 whole, 0.98/0.93
    without them, and still an ExportAccuracyWarning); all-MiniLM-L6-v2 does not (0.99/0.97
    whole), and quantizing them too makes it about 1.3x faster at the batch sizes embedrank
    uses. Cross-encoders keep them fp32.

  per_channel=True: per-tensor weights gave all-MiniLM-L6-v2 a worst cosine of about 0.86,
  per-channel about 0.97. reduce_range cost accuracy on this CPU (with VNNI); on AVX2-only
  CPUs without VNNI ORT's u8s8 kernels can saturate, and the error recorded in
  embedrank.json is the export machine's. Dynamic int8 is not accurate to 1e-4: its error
  is measured on the sample and recorded, never bounded. Its activation scales are taken per
  batch tensor, so an int8 vector also moves slightly with the texts batched beside it.
* ``model_pooled.onnx`` (``pooled=True``, off by default): mean (or CLS) pooling and L2
  normalization inside the graph, output ``sentence_embedding`` [batch, hidden].
* ``model_fp16.onnx`` (``fp16=True``, off by default; with ``pooled=True`` also
  ``model_pooled_fp16.onnx``): the ORT-optimized graph (the fp32 one with
  ``optimize=False``; the pooled one for the pooled variant) with weights and activations
  in float16 (``onnxruntime.transformers.float16.convert_float_to_float16``, inputs and
  outputs kept as they are), for the CUDA provider. The fused graph is the one to convert:
  its Attention takes the mask as sequence lengths (right padding, which embedrank uses),
  and on an H200 the CUDA provider ran it (through cuDNN's flash attention) at 2.3x the
  speed of the unfused fp16 graph at 256 tokens. It also runs on a CPU, slower than fp32,
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

Every variant except int8 is verified against the torch model on sample texts of varied
lengths (tokenized from tokenizer.json with its baked-in padding and truncation turned off,
truncated at max_seq_length, padded here): the largest absolute difference of the pooled,
L2-normalized embeddings (cross-encoders: of the logits) must be <= 1e-4, in one padded
batch of all and for three texts run alone (batch 1, unpadded), or the export fails with
:class:`ExportVerificationError` (fp16 variants: within ``FP16_RTOL`` x max(1, the largest
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

import contextlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedrank.models.folder import DEFAULT_VARIANT_FILES as VARIANT_FILES
from embedrank.export.source import KINDS, SourceModel, SourceModelError, read_source_model
from embedrank.errors import ExistingPathError, ExportAccuracyWarning, ExportError, ExportVerificationError, InvalidTypeError, InvalidValueError, MissingDependencyError, MissingFileError

__all__ = [
    "SAMPLE_TEXTS",
    "VERIFY_ATOL",
    "ExportAccuracyWarning",
    "ExportError",
    "ExportVerificationError",
    "SourceModelError",
    "export_model",
]

FORMAT_VERSION = 1
OPSET = 18
VERIFY_ATOL = 1e-4
# model_int8.onnx is written anyway, with an ExportAccuracyWarning, when its worst cosine to
# the torch model on the sample is below this.
INT8_WARN_COSINE = 0.95
# A bi-encoder's int8 variant quantizes every MatMul weight when its worst cosine to the torch
# model on the sample stays at or above this; below it, the FFN down-projections stay fp32.
INT8_ALL_MATMULS_MIN_COSINE = 0.95
CONFIG_FILE = "embedrank.json"
TOKENIZER_FILE = "tokenizer.json"
# fp16 variants: differences to the torch model up to FP16_RTOL x max(1, largest |reference|)
# (pooled unit vectors: 5e-3; all-MiniLM-L6-v2 measures 2.6e-4, cosine 0.999999).
FP16_RTOL = 5e-3
EXPORT_EXTRA_HINT = "install the export extra: pip install 'embedrank[export]'"

# Verification sample: empty, short, medium, long (past 128 tokens, the length that
# all-MiniLM-L6-v2's tokenizer.json bakes in, and past max_seq_length so truncation is
# exercised), non-ASCII and mixed scripts.
SAMPLE_TEXTS = (
    "",
    "hi",
    "A man is eating food.",
    "How do I reset my password if I no longer have access to my email account?",
    ("Photosynthesis converts light energy into chemical energy stored in glucose, releasing oxygen as a "
     "by-product. It takes place in the chloroplasts of plant cells."),
    "Ünïcödé façade: naïve café, Tōkyō 東京, Москва, Αθήνα, القاهرة. Emoji 🙂 and numbers 3.14159.",
    " ".join(["The Treaty of Westphalia (1648) ended the Thirty Years' War and established the principle "
              + "of state sovereignty in Europe."] * 6),
    " ".join(f"word{i} and another clause number {i}, written to be long;" for i in range(120)),
    "word " * 400,  # one token repeated: the hardest case found for int8 (see model_int8.onnx above)
)
SAMPLE_PAIRS = (
    ("", ""),
    ("what is photosynthesis", "Photosynthesis converts light energy into chemical energy stored in glucose."),
    ("capital of france", "Paris is the capital and most populous city of France."),
    ("capital of france", "The Treaty of Westphalia (1648) ended the Thirty Years' War."),
    ("long document", " ".join(f"sentence {i} of a long passage about nothing in particular." for i in range(150))),
)



@dataclass
class _Batch:
    """A padded batch: arrays [b, L] int64."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray

    def feeds(self, names: Sequence[str]) -> dict:
        return {name: getattr(self, name) for name in names}

    def rows(self, index: slice) -> _Batch:
        """Rows `index`, cut to their own longest sequence (no extra padding)."""
        mask = self.attention_mask[index]
        length = max(int(mask.sum(axis=1).max()), 1)
        return _Batch(self.input_ids[index, :length], mask[:, :length], self.token_type_ids[index, :length])


def export_model(model_dir: str | os.PathLike, out_dir: str | os.PathLike, kind: str = "bi-encoder",
                 optimize: bool = True, quantize: bool = True, *, pooled: bool = False, fp16: bool = False,
                 overwrite: bool = False, atol: float = VERIFY_ATOL, texts: Sequence[str] | None = None,
                 opset: int = OPSET) -> Path:
    """Exports a local Hugging Face model folder to an embedrank model folder; returns its path.

    model_dir: a local folder (BERT, MPNet or XLM-R families) with config.json, the weights
    (safetensors or .bin) and tokenizer.json; sentence-transformers' modules.json,
    1_Pooling/config.json, sentence_bert_config.json and config_sentence_transformers.json
    are read when present (pooling, normalization, max_seq_length, prompts). Without them:
    mean pooling, normalize=True, max_seq_length = min(tokenizer model_max_length,
    usable position embeddings).
    kind: "bi-encoder" (AutoModel, output last_hidden_state) or "cross-encoder"
    (AutoModelForSequenceClassification, output logits).
    optimize / quantize: also write model_opt.onnx / model_int8.onnx.
    pooled: also write model_pooled.onnx (bi-encoder only), pooling inside the graph.
    fp16: also write model_fp16.onnx (and model_pooled_fp16.onnx with pooled), float16
    weights and activations for the CUDA provider, verified within FP16_RTOL.
    overwrite: replace an existing non-empty out_dir (else FileExistsError).
    atol: verification tolerance; texts: verification texts (default SAMPLE_TEXTS;
    cross-encoders use SAMPLE_PAIRS).

    embedrank.json holds: format_version, kind, pooling, normalize, max_seq_length,
    dimension, prompts {query, document}, inputs, token_type_ids, output, variants
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
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, source.path, overwrite)
    _check_export_extra()
    if texts is None:
        texts = SAMPLE_PAIRS if kind == "cross-encoder" else SAMPLE_TEXTS
    texts = _check_sample(texts, kind)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.export-", dir=out_dir.parent))
    try:
        _export_into(source, work, kind, optimize, quantize, pooled, fp16, atol, texts, opset)
        _move_into_place(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return out_dir


# -- argument checks -----------------------------------------------------------------------
def _check_out_dir(out_dir: Path, source_dir: Path, overwrite: bool) -> None:
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ExistingPathError(f"out_dir exists and is not a folder: {out_dir}")
        if any(out_dir.iterdir()) and not overwrite:
            raise ExistingPathError(f"out_dir is not empty: {out_dir} (pass overwrite=True to replace it)")
    resolved_out, resolved_src = out_dir.resolve(), source_dir.resolve()
    if resolved_out == resolved_src or resolved_out in resolved_src.parents:
        raise InvalidValueError(f"out_dir {out_dir} would replace the model folder {source_dir}")


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


def _move_into_place(work: Path, out_dir: Path) -> None:
    """Renames the finished folder to out_dir (an existing out_dir is moved aside first)."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(out_dir, old)
    try:
        os.replace(work, out_dir)
    except BaseException:
        if old is not None:
            os.replace(old, out_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# -- the export ----------------------------------------------------------------------------
@contextlib.contextmanager
def _offline_quiet():
    """Offline hub settings, and transformers' progress bars off for the duration."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def _load_torch_model(source: SourceModel, kind: str):
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification

    cls = AutoModelForSequenceClassification if kind == "cross-encoder" else AutoModel
    try:
        model = cls.from_pretrained(str(source.transformer_path), local_files_only=True, attn_implementation="eager")
    except OSError as error:
        raise MissingFileError(f"could not load the model from {source.transformer_path}: {error}") from None
    except ValueError as error:
        raise ExportError(f"transformers could not load {source.transformer_path}: {error}") from None
    model = model.to(torch.float32).eval()
    return model


def _uses_token_type_ids(model) -> bool:
    import inspect

    base = getattr(model, "base_model", model)
    accepts = "token_type_ids" in inspect.signature(model.forward).parameters
    embeddings = getattr(getattr(base, "embeddings", None), "token_type_embeddings", None)
    types = getattr(model.config, "type_vocab_size", 0) or 0
    return bool(accepts and embeddings is not None and types > 1)


def _make_wrapper(model, input_names: list[str], kind: str, pooling: str | None = None, normalize: bool = False):
    """A module taking the inputs positionally and returning one tensor."""
    import torch

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            feeds = dict(zip(input_names, inputs))
            out = self.model(**feeds, return_dict=True)
            if kind == "cross-encoder":
                return out.logits
            hidden = out.last_hidden_state
            if pooling is None:
                return hidden
            if pooling == "cls":
                vectors = hidden[:, 0]
            else:
                mask = feeds["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                vectors = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            if normalize:
                vectors = vectors / vectors.norm(dim=-1, keepdim=True).clamp(min=1e-12)
            return vectors

    return Wrapper().eval()


def _dummy_inputs(input_names: list[str], pad_id: int, vocab_size: int):
    """A padded batch of 2 x 8 (the second row half padding) to trace with."""
    import torch

    ids = torch.arange(16, dtype=torch.long).reshape(2, 8) % max(vocab_size - 8, 1) + 5  # clear of special ids
    mask = torch.ones((2, 8), dtype=torch.long)
    mask[1, 4:] = 0
    ids[1, 4:] = pad_id
    values = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros((2, 8), dtype=torch.long)}
    return tuple(values[name] for name in input_names)


def _torch_export(wrapper, args, path: Path, input_names: list[str], output_name: str, output_axes: dict,
                  opset: int) -> None:
    import torch

    axes = {name: {0: "batch", 1: "sequence"} for name in input_names}
    axes[output_name] = output_axes
    with warnings.catch_warnings():
        # The traced graph is checked against torch below; these say nothing more.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"The feature will be removed", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"Exporting aten::index operator", category=UserWarning)
        with torch.no_grad():
            torch.onnx.export(wrapper, args, str(path), input_names=input_names, output_names=[output_name],
                              dynamic_axes=axes, opset_version=opset, do_constant_folding=True, dynamo=False)
    if not path.is_file():
        raise ExportError(f"torch.onnx.export wrote no {path.name}")
    if any(p.name != path.name for p in path.parent.iterdir() if p.name.startswith(path.stem)):
        raise ExportError(f"{path.name} was written with external data (a model over 2 GB): not supported yet")


def _check_graph(path: Path, input_names: list[str], output_name: str, opset: int) -> None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    onnx.checker.check_model(str(path))
    got = [i.name for i in model.graph.input]
    if got != input_names or [o.name for o in model.graph.output] != [output_name]:
        raise ExportError(f"{path.name} has inputs {got} and outputs {[o.name for o in model.graph.output]}; "
                          f"expected {input_names} and [{output_name!r}]")
    default = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not default or default[0] < opset:
        raise ExportError(f"{path.name} has opset {default}, expected >= {opset}")


# -- tokenization and references -------------------------------------------------------------
def _load_tokenizer(tokenizer_path: Path):
    """tokenizer.json with its own padding and truncation off, and its pad id."""
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_file(str(tokenizer_path))
    except Exception as error:  # noqa: BLE001 (tokenizers raises a bare Exception on a bad file)
        raise SourceModelError(f"{tokenizer_path} is not a valid tokenizer.json: {error}") from None
    baked = tok.padding
    pad_id = baked.get("pad_id") if baked else None
    if pad_id is None:
        pad_id = next((tok.token_to_id(t) for t in ("[PAD]", "<pad>", "<PAD>") if tok.token_to_id(t) is not None), 0)
    tok.no_padding()
    tok.no_truncation()
    return tok, int(pad_id)


def _tokenize(tokenizer_path: Path, samples: list, max_length: int) -> _Batch:
    """Tokenizes with tokenizer.json's own padding and truncation off, truncating at max_length."""
    tok, pad_id = _load_tokenizer(tokenizer_path)
    pairs = bool(samples) and isinstance(samples[0], tuple)
    tok.enable_truncation(max_length, strategy="only_second" if pairs else "longest_first")
    encodings = tok.encode_batch(samples, add_special_tokens=True)
    length = max(len(e.ids) for e in encodings)
    batch = _Batch(np.full((len(samples), length), pad_id, dtype=np.int64),
                   np.zeros((len(samples), length), dtype=np.int64),
                   np.zeros((len(samples), length), dtype=np.int64))
    for row, e in enumerate(encodings):
        n = len(e.ids)
        batch.input_ids[row, :n] = e.ids
        batch.attention_mask[row, :n] = 1
        batch.token_type_ids[row, :n] = e.type_ids
    return batch


def pool(output: np.ndarray, attention_mask: np.ndarray, pooling: str) -> np.ndarray:
    """Pooled, L2-normalized vectors from [B, T, H] (the metric's pooling; numpy, float64)."""
    hidden = np.asarray(output, dtype=np.float64)
    if hidden.ndim == 2:
        vectors = hidden
    elif pooling == "cls":
        vectors = hidden[:, 0]
    else:
        mask = attention_mask[..., None].astype(np.float64)
        vectors = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _torch_reference(model, batch: _Batch, input_names: list[str], kind: str, pooling: str) -> np.ndarray:
    """What the torch model gives on the padded batch: pooled normalized vectors, or logits."""
    import torch

    feeds = {name: torch.from_numpy(getattr(batch, name)) for name in input_names}
    with torch.no_grad():
        out = model(**feeds, return_dict=True)
    if kind == "cross-encoder":
        return out.logits.numpy().astype(np.float64)
    return pool(out.last_hidden_state.numpy(), batch.attention_mask, pooling)


def _onnx_session(path: Path, level: str = "all"):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if level == "all"
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _run_onnx(session, batch: _Batch, input_names: list[str], kind: str, pooling: str) -> np.ndarray:
    out = session.run(None, batch.feeds(input_names))[0]
    if kind == "cross-encoder":
        return out.astype(np.float64)
    return pool(out, batch.attention_mask, pooling)


def _compare(path: Path, reference: np.ndarray, batch: _Batch, input_names: list[str], kind: str,
             pooling: str, levels: Sequence[str] = ("all",)) -> dict:
    """Runs a variant on the padded batch, and on the first, middle and last text one at a time
    (batch 1, no padding); returns the largest error (and cosines to the reference)."""
    worst = 0.0
    cosines = []
    for level in levels:
        session = _onnx_session(path, level)
        got = _run_onnx(session, batch, input_names, kind, pooling)
        n = len(reference)
        singles = [(i, _run_onnx(session, batch.rows(slice(i, i + 1)), input_names, kind, pooling))
                   for i in sorted({0, n // 2, n - 1})]
        for produced, expected in [(got, reference)] + [(s, reference[i:i + 1]) for i, s in singles]:
            if produced.shape != expected.shape:
                raise ExportVerificationError(
                    f"{path.name}: output shape {produced.shape} differs from the torch model's {expected.shape}")
            diff = float(np.abs(produced - expected).max())
            worst = max(worst, diff if np.isfinite(diff) else float("inf"))  # NaN must not pass as 0
        if kind != "cross-encoder":
            cosines.append((got * reference).sum(axis=1))
    result = {"max_abs_diff": worst}
    if cosines:
        all_cos = np.concatenate(cosines)
        result.update(min_cosine=float(all_cos.min()), mean_cosine=float(all_cos.mean()))
    return result


def _verify(name: str, path: Path, measured: dict, atol: float) -> None:
    diff = measured["max_abs_diff"]
    if not diff <= atol:
        raise ExportVerificationError(
            f"{path.name} ({name}) differs from the torch model by {diff:.3g} (max abs difference of the "
            f"{'logits' if 'min_cosine' not in measured else 'pooled normalized embeddings'}), more than the "
            f"tolerance {atol:g}; the export was not written"
            + ("" if name == "fp32" else f" (pass {_VARIANT_FLAGS[name]}=False to skip this variant)"))


_VARIANT_FLAGS = {"opt": "optimize", "int8": "quantize", "pooled": "pooled", "fp16": "fp16", "pooled_fp16": "fp16"}


# -- variants ----------------------------------------------------------------------------
def _to_float16(src: Path, dst: Path) -> None:
    """dst: src with float16 weights and activations; its inputs and outputs keep their types."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with _quiet_onnxruntime_tools():
        model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))


def _optimizer_settings(source: SourceModel) -> dict:
    return {"model_type": "bert", "num_heads": source.num_attention_heads, "hidden_size": source.hidden_size,
            "opt_level": 1, "use_gpu": False}


@contextlib.contextmanager
def _quiet_onnxruntime_tools():
    """Silences the chatter of ORT's Python tools (log warnings and prints about shape inference
    and pre-processing): what they produce is verified, not trusted on their word."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"onnxruntime\..*")
            yield
    finally:
        logging.disable(previous)


def _optimize(src: Path, dst: Path, settings: dict) -> dict:
    from onnxruntime.transformers.optimizer import optimize_model

    with _quiet_onnxruntime_tools():
        optimized = optimize_model(str(src), **settings)
    fused = {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}
    optimized.save_model_to_file(str(dst))
    return fused


_INT8_SETTINGS = {"weight_type": "QInt8", "per_channel": True, "reduce_range": False, "source": "model.onnx",
                  "op_types": ["MatMul"]}


def _ffn_down_projections(path: Path, intermediate_size: int, hidden_size: int) -> list[str]:
    """MatMul nodes whose weight is [intermediate_size, hidden_size]: the FFN's second linear layer.

    Its input (after GELU) has outlier activations that one dynamic uint8 scale per tensor
    resolves poorly; found by weight shape, not by node name, so any encoder family matches.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    return [node.name for node in model.graph.node
            if node.op_type == "MatMul" and any(shapes.get(name) == (intermediate_size, hidden_size)
                                                for name in node.input)]


def _quantize_dynamic(src: Path, dst: Path, keep: list[str]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_onnxruntime_tools():
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, nodes_to_exclude=keep,
                         op_types_to_quantize=_INT8_SETTINGS["op_types"],
                         per_channel=_INT8_SETTINGS["per_channel"], reduce_range=_INT8_SETTINGS["reduce_range"])


def _quantize(src: Path, dst: Path, source: SourceModel, kind: str, measure) -> tuple[dict, dict]:
    """Writes model_int8.onnx; returns (settings, its measured error).

    Bi-encoders: every MatMul weight in int8 first; when the worst cosine to the torch model on
    the sample is below INT8_ALL_MATMULS_MIN_COSINE, quantized again with the FFN
    down-projections kept fp32 (all-mpnet-base-v2 needs it, all-MiniLM-L6-v2 does not).
    Cross-encoders keep them fp32 always (a logit has no cosine to judge by).
    `measure(path) -> dict` is the comparison with the torch model.
    """
    intermediate = int(source.config.get("intermediate_size") or 4 * source.hidden_size)
    down = _ffn_down_projections(src, intermediate, source.hidden_size)
    tries = ([[]] if kind == "bi-encoder" and down else []) + [down]
    attempts = []
    for keep in tries:
        _quantize_dynamic(src, dst, keep)
        measured = measure(dst)
        attempts.append(_rounded({"n_kept_fp32": len(keep), **{k: measured[k] for k in ("min_cosine", "mean_cosine")
                                                                 if k in measured}}))
        if keep is tries[-1] or measured.get("min_cosine", 0.0) >= INT8_ALL_MATMULS_MIN_COSINE:
            break  # the last try, or the whole-int8 model is accurate enough
    kept = "embedding tables (Gather)" + (", FFN down-projections" if keep else "")
    settings = dict(_INT8_SETTINGS, method="onnxruntime.quantization.quantize_dynamic", kept_fp32=kept,
                    n_kept_fp32=len(keep), attempts=attempts)
    if kind == "bi-encoder":
        settings["all_matmuls_min_cosine"] = INT8_ALL_MATMULS_MIN_COSINE
    return settings, measured


def _versions() -> dict:
    import onnx
    import onnxruntime
    import torch
    import transformers

    import embedrank

    return {"embedrank": embedrank.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def _export_into(source: SourceModel, work: Path, kind: str, optimize: bool, quantize: bool, pooled: bool,
                 fp16: bool, atol: float, samples: list, opset: int) -> None:
    started = time.perf_counter()
    with _offline_quiet():
        model = _load_torch_model(source, kind)
    uses_types = _uses_token_type_ids(model)
    input_names = ["input_ids", "attention_mask"] + (["token_type_ids"] if uses_types else [])
    output_name = "logits" if kind == "cross-encoder" else "last_hidden_state"
    pooling = source.pooling
    output_axes = {0: "batch"} if kind == "cross-encoder" else {0: "batch", 1: "sequence"}
    pad_id = _load_tokenizer(source.tokenizer_path)[1]
    vocab = int(getattr(model.config, "vocab_size", 0) or 1000)

    fp32 = work / VARIANT_FILES["fp32"]
    _torch_export(_make_wrapper(model, input_names, kind), _dummy_inputs(input_names, pad_id, vocab), fp32,
                  input_names, output_name, output_axes, opset)
    _check_graph(fp32, input_names, output_name, opset)

    batch = _tokenize(source.tokenizer_path, samples, source.max_seq_length)
    reference = _torch_reference(model, batch, input_names, kind, pooling)
    verification: dict = {"atol": atol, "n_texts": len(samples), "max_tokens": int(batch.input_ids.shape[1])}
    variants = {"fp32": fp32.name}
    verification["fp32"] = _compare(fp32, reference, batch, input_names, kind, pooling, levels=("all", "none"))
    _verify("fp32", fp32, verification["fp32"], atol)

    settings: dict = {"exporter": "torch.onnx.export (TorchScript, dynamo=False)", "opset": opset,
                      "attn_implementation": "eager"}
    if optimize:
        opt = work / VARIANT_FILES["opt"]
        opt_settings = _optimizer_settings(source)
        fused = _optimize(fp32, opt, opt_settings)
        settings["optimizer"] = {**opt_settings, "fused": fused}
        verification["opt"] = _compare(opt, reference, batch, input_names, kind, pooling)
        _verify("opt", opt, verification["opt"], atol)
        variants["opt"] = opt.name
    if quantize:
        int8 = work / VARIANT_FILES["int8"]
        settings["quantization"], verification["int8"] = _quantize(
            fp32, int8, source, kind, lambda path: _compare(path, reference, batch, input_names, kind, pooling))
        worst = verification["int8"].get("min_cosine")
        if worst is not None and worst < INT8_WARN_COSINE:
            warnings.warn(ExportAccuracyWarning(
                f"{int8.name}: cosine to the torch model as low as {worst:.3f} on the sample (mean "
                f"{verification['int8']['mean_cosine']:.3f}); check it on your data or use the fp32/opt variants"),
                stacklevel=3)
        variants["int8"] = int8.name
    if pooled:
        pooled_path = work / VARIANT_FILES["pooled"]
        raw = work / "model_pooled_raw.onnx"
        wrapper = _make_wrapper(model, input_names, kind, pooling=pooling, normalize=source.normalize)
        _torch_export(wrapper, _dummy_inputs(input_names, pad_id, vocab), raw, input_names, "sentence_embedding",
                      {0: "batch"}, opset)
        if optimize:
            _optimize(raw, pooled_path, _optimizer_settings(source))
            raw.unlink()
        else:
            raw.rename(pooled_path)
        _check_graph(pooled_path, input_names, "sentence_embedding", opset)
        verification["pooled"] = _compare(pooled_path, reference, batch, input_names, kind, pooling)
        _verify("pooled", pooled_path, verification["pooled"], atol)
        variants["pooled"] = pooled_path.name
    if fp16:
        # the fused graph when there is one: its Attention (mask as sequence lengths) is what
        # the CUDA provider runs fastest (cuDNN flash attention on an H200: 2.3x the unfused graph)
        base = "opt" if "opt" in variants else "fp32"
        tolerance = FP16_RTOL * max(1.0, float(np.abs(reference).max()))
        for name, half_name in [(base, "fp16")] + ([("pooled", "pooled_fp16")] if "pooled" in variants else []):
            half = work / VARIANT_FILES[half_name]
            _to_float16(work / variants[name], half)
            verification[half_name] = {**_compare(half, reference, batch, input_names, kind, pooling),
                                       "tolerance": tolerance}
            _verify(half_name, half, verification[half_name], tolerance)
            variants[half_name] = half.name
        settings["fp16"] = {"method": "onnxruntime.transformers.float16.convert_float_to_float16",
                            "keep_io_types": True, "rtol": FP16_RTOL, "from": base}

    shutil.copyfile(source.tokenizer_path, work / TOKENIZER_FILE)
    config = model.config
    dimension = int(config.num_labels if kind == "cross-encoder" else source.hidden_size)
    settings["seconds"] = round(time.perf_counter() - started, 2)
    document = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        **({"pooling": pooling, "normalize": source.normalize} if kind == "bi-encoder" else
           {"num_labels": int(config.num_labels)}),
        "max_seq_length": int(source.max_seq_length),
        "dimension": dimension,
        "prompts": dict(source.prompts),
        "inputs": input_names,
        "token_type_ids": uses_types,
        "output": output_name,
        "variants": variants,
        "sizes": {name: (work / file).stat().st_size for name, file in variants.items()},
        "fingerprint": source.fingerprint(),
        "source": {
            "name": source.path.name,
            "model_type": source.model_type,
            "architectures": list(config.architectures or []),
            "hidden_size": source.hidden_size,
            "weight_files": [p.name for p in source.weight_files],
            "settings_from": dict(source.sources),
        },
        "export": {**settings, "versions": _versions()},
        "verification": _rounded(verification),
    }
    (work / CONFIG_FILE).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def _rounded(value):
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, float):
        return float(f"{value:.6g}") if np.isfinite(value) else str(value)
    return value


def read_export_config(folder: str | os.PathLike) -> dict:
    """embedrank.json of an exported folder, as a dict."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise MissingFileError(f"{path} is missing")
    return json.loads(path.read_text(encoding="utf-8"))

