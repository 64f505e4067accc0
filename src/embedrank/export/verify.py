"""Verifying an exported graph against the torch model it came from, on a sample of texts.

Each variant's outputs (pooled and normalized for a bi-encoder, logits for a cross-encoder) are
compared with torch's: the largest absolute difference, and for vectors the cosines; fp32 and
opt must stay within the tolerance, int8's error is measured and recorded, never bounded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedrank.errors import ExportVerificationError, SourceModelError

__all__ = ["FP16_RTOL", "SAMPLE_PAIRS", "SAMPLE_TEXTS", "SampleBatch", "VERIFY_ATOL", "check_within", "compare",
           "load_tokenizer", "onnx_session", "pool", "rounded", "run_onnx", "tokenize_sample", "torch_reference"]

# The flag of export_model that writes each optional variant (named in verification errors).
VARIANT_FLAGS = {"opt": "optimize", "int8": "quantize", "pooled": "pooled", "fp16": "fp16", "pooled_fp16": "fp16"}

VERIFY_ATOL = 1e-4


# fp16 variants: differences to the torch model up to FP16_RTOL x max(1, largest |reference|)
# (pooled unit vectors: 5e-3; all-MiniLM-L6-v2 measures 2.6e-4, cosine 0.999999).
FP16_RTOL = 5e-3


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
class SampleBatch:
    """A padded batch: arrays [b, L] int64."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray

    def feeds(self, names: Sequence[str]) -> dict:
        return {name: getattr(self, name) for name in names}

    def rows(self, index: slice) -> SampleBatch:
        """Rows `index`, cut to their own longest sequence (no extra padding)."""
        mask = self.attention_mask[index]
        length = max(int(mask.sum(axis=1).max()), 1)
        return SampleBatch(self.input_ids[index, :length], mask[:, :length], self.token_type_ids[index, :length])


def load_tokenizer(tokenizer_path: Path):
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


def tokenize_sample(tokenizer_path: Path, samples: list, max_length: int) -> SampleBatch:
    """Tokenizes with tokenizer.json's own padding and truncation off, truncating at max_length."""
    tok, pad_id = load_tokenizer(tokenizer_path)
    pairs = bool(samples) and isinstance(samples[0], tuple)
    tok.enable_truncation(max_length, strategy="only_second" if pairs else "longest_first")
    encodings = tok.encode_batch(samples, add_special_tokens=True)
    length = max(len(e.ids) for e in encodings)
    batch = SampleBatch(np.full((len(samples), length), pad_id, dtype=np.int64),
                   np.zeros((len(samples), length), dtype=np.int64),
                   np.zeros((len(samples), length), dtype=np.int64))
    for row, e in enumerate(encodings):
        n = len(e.ids)
        batch.input_ids[row, :n] = e.ids
        batch.attention_mask[row, :n] = 1
        batch.token_type_ids[row, :n] = e.type_ids
    return batch


def pool(output: np.ndarray, attention_mask: np.ndarray, pooling) -> np.ndarray:
    """Pooled, L2-normalized vectors (numpy, float64) from token states [B, T, H], or from a
    pooled graph's [B, D]. pooling: a mode name, or an embedrank.models.head.Head (pooling and
    Dense layers; its Dense layers are applied to token states' pools only, a pooled graph
    has them inside)."""
    from embedrank.models.head import Head, pool_tokens

    head = pooling if isinstance(pooling, Head) else Head(pooling=pooling)
    hidden = np.asarray(output, dtype=np.float64)
    if hidden.ndim == 2:
        vectors = hidden
    else:
        vectors = pool_tokens(hidden, attention_mask, head.pooling)
        for layer in head.dense:
            vectors = layer(vectors)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def torch_reference(model, batch: SampleBatch, input_names: list[str], kind: str, pooling) -> np.ndarray:
    """What the torch model gives on the padded batch: pooled normalized vectors, or logits."""
    import torch

    feeds = {name: torch.from_numpy(getattr(batch, name)) for name in input_names}
    with torch.no_grad():
        out = model(**feeds, return_dict=True)
    if kind == "cross-encoder":
        return out.logits.numpy().astype(np.float64)
    return pool(out.last_hidden_state.numpy(), batch.attention_mask, pooling)


def onnx_session(path: Path, level: str = "all"):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if level == "all"
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def run_onnx(session, batch: SampleBatch, input_names: list[str], kind: str, pooling) -> np.ndarray:
    out = session.run(None, batch.feeds(input_names))[0]
    if kind == "cross-encoder":
        return out.astype(np.float64)
    return pool(out, batch.attention_mask, pooling)


def compare(path: Path, reference: np.ndarray, batch: SampleBatch, input_names: list[str], kind: str,
             pooling, levels: Sequence[str] = ("all",)) -> dict:
    """Runs a variant on the padded batch, and on the first, middle and last text one at a time
    (batch 1, no padding); returns the largest error (and cosines to the reference)."""
    worst = 0.0
    cosines = []
    for level in levels:
        session = onnx_session(path, level)
        got = run_onnx(session, batch, input_names, kind, pooling)
        n = len(reference)
        singles = [(i, run_onnx(session, batch.rows(slice(i, i + 1)), input_names, kind, pooling))
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


def check_within(name: str, path: Path, measured: dict, atol: float) -> None:
    diff = measured["max_abs_diff"]
    if not diff <= atol:
        raise ExportVerificationError(
            f"{path.name} ({name}) differs from the torch model by {diff:.3g} (max abs difference of the "
            f"{'logits' if 'min_cosine' not in measured else 'pooled normalized embeddings'}), more than the "
            f"tolerance {atol:g}; the export was not written"
            + ("" if name == "fp32" else f" (pass {VARIANT_FLAGS[name]}=False to skip this variant)"))


def rounded(value):
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, float):
        return float(f"{value:.6g}") if np.isfinite(value) else str(value)
    return value
