"""Torch models trained here and their Hugging Face folders.

BiEncoderModel: a transformers AutoModel with the source's pooling (mean or CLS), trained on
cosine similarity and saved as a sentence-transformers folder (modules.json,
1_Pooling/config.json, 2_Normalize when the source normalizes, sentence_bert_config.json with
max_seq_length), so export_model and Encoder.load see the same settings as for the source.
CrossEncoderModel: AutoModelForSequenceClassification with one logit, saved with
sentence_bert_config.json holding its max_seq_length.

Tokenization is embedrank's own (tokenizer.json, tokenizers' truncation: longest_first for
texts, only_second for (query, document) pairs), the same as inference.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch

from embedrank.export.source import SourceModel, read_source_model
from embedrank.models.tokenization import TextTokenizer
from embedrank.errors import InvalidValueError, MissingDependencyError, SourceModelError

__all__ = ["BiEncoderModel", "CrossEncoderModel", "TOKENIZER_FILES"]

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


@contextlib.contextmanager
def _quiet_transformers():
    """transformers offline, its warnings at error level and its progress bars off, for the block."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise MissingDependencyError("training needs transformers: pip install 'embedrank[train]' transformers") from None
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialized: classifier" is expected for a new head
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _load_transformers(kind: str, folder: Path, **kwargs):
    with _quiet_transformers():
        import transformers

        cls = transformers.AutoModel if kind == "bi-encoder" else transformers.AutoModelForSequenceClassification
        return cls.from_pretrained(str(folder), local_files_only=True, **kwargs)


def _tensors(batch, device: torch.device, use_types: bool) -> dict[str, torch.Tensor]:
    features = {"input_ids": torch.from_numpy(batch.input_ids).to(device),
                "attention_mask": torch.from_numpy(batch.attention_mask).to(device)}
    if use_types:
        features["token_type_ids"] = torch.from_numpy(batch.token_type_ids).to(device)
    return features


def _copy_tokenizer(source: SourceModel, out: Path) -> None:
    for name in TOKENIZER_FILES:
        path = source.transformer_path / name
        if path.is_file():
            shutil.copyfile(path, out / name)


class BiEncoderModel(torch.nn.Module):
    """A transformer + pooling; forward returns [B, H] pooled, un-normalized vectors."""

    def __init__(self, source: SourceModel, transformer):
        super().__init__()
        self.source = source
        self.transformer = transformer
        self.pooling = source.pooling
        self.max_seq_length = int(source.max_seq_length)
        self.tokenizer = TextTokenizer(source.tokenizer_path, self.max_seq_length)
        self.use_types = int(getattr(transformer.config, "type_vocab_size", 0) or 0) > 1

    @classmethod
    def load(cls, model_dir: str | os.PathLike) -> BiEncoderModel:
        """From a Hugging Face / sentence-transformers folder (pooling etc. as export reads them)."""
        source = read_source_model(model_dir, "bi-encoder")
        if source.pooling not in ("mean", "cls") or source.dense or not source.include_prompt:
            # export runs these heads; training pools with mean or CLS only and would drop the rest
            raise SourceModelError(
                f"{model_dir}: training supports mean or CLS pooling over every token and no Dense module; this model "
                f"has pooling {source.pooling!r}{', Dense modules' if source.dense else ''}"
                f"{', include_prompt false' if not source.include_prompt else ''}")
        return cls(source, _load_transformers("bi-encoder", source.transformer_path))

    @property
    def dimension(self) -> int:
        return int(self.source.hidden_size)

    def features(self, texts: Sequence[str], max_length: int | None = None,
                 device: torch.device | None = None) -> dict[str, torch.Tensor]:
        """Token tensors for texts, truncated at min(max_length, max_seq_length)."""
        length = self.max_seq_length if max_length is None else min(int(max_length), self.max_seq_length)
        self.tokenizer.max_length = length
        encodings, _ = self.tokenizer.encode(list(texts))
        return _tensors(self.tokenizer.pad(encodings), device or torch.device("cpu"), self.use_types)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.transformer(**features).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = features["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Writes a sentence-transformers folder (weights, tokenizer, pooling settings)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        with _quiet_transformers():
            self.transformer.save_pretrained(str(out), safe_serialization=True)
        _copy_tokenizer(self.source, out)
        modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                   {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
        if self.source.normalize:
            modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                            "type": "sentence_transformers.models.Normalize"})
            (out / "2_Normalize").mkdir(exist_ok=True)
        (out / "modules.json").write_text(json.dumps(modules, indent=2) + "\n", encoding="utf-8")
        (out / "1_Pooling").mkdir(exist_ok=True)
        pooling = {"word_embedding_dimension": self.dimension,
                   "pooling_mode_cls_token": self.pooling == "cls",
                   "pooling_mode_mean_tokens": self.pooling == "mean",
                   "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}
        (out / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2) + "\n", encoding="utf-8")
        (out / "sentence_bert_config.json").write_text(
            json.dumps({"max_seq_length": self.max_seq_length, "do_lower_case": False}, indent=2) + "\n",
            encoding="utf-8")
        prompts = self.source.path / "config_sentence_transformers.json"
        if prompts.is_file():
            shutil.copyfile(prompts, out / prompts.name)
        return out


class CrossEncoderModel(torch.nn.Module):
    """A transformer with one-logit classification head; forward returns [B] logits."""

    def __init__(self, source: SourceModel, transformer, max_seq_length: int):
        super().__init__()
        if int(getattr(transformer.config, "num_labels", 1)) != 1:
            raise InvalidValueError(f"a cross-encoder here has one output, got num_labels={transformer.config.num_labels}")
        self.source = source
        self.transformer = transformer
        self.max_seq_length = int(max_seq_length)
        self.tokenizer = TextTokenizer(source.tokenizer_path, self.max_seq_length)
        self.use_types = int(getattr(transformer.config, "type_vocab_size", 0) or 0) > 1

    @classmethod
    def load(cls, model_dir: str | os.PathLike, max_seq_length: int | None = None) -> CrossEncoderModel:
        """From a Hugging Face folder: a cross-encoder, or any encoder (a new head is added)."""
        source = read_source_model(model_dir, "cross-encoder")
        length = source.max_seq_length if max_seq_length is None else max_seq_length
        positions = int(source.config.get("max_position_embeddings") or length)
        if isinstance(length, bool) or not isinstance(length, int) or not 8 <= length <= positions:
            raise InvalidValueError(f"max_seq_length must be an integer in [8, {positions}], got {length!r}")
        transformer = _load_transformers("cross-encoder", source.transformer_path, num_labels=1)
        return cls(source, transformer, length)

    def features(self, queries: Sequence[str], documents: Sequence[str],
                 device: torch.device | None = None) -> dict[str, torch.Tensor]:
        encodings, _ = self.tokenizer.encode(list(queries), list(documents))
        return _tensors(self.tokenizer.pad(encodings), device or torch.device("cpu"), self.use_types)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.transformer(**features).logits[:, 0]

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Writes a transformers folder + tokenizer + sentence_bert_config.json (max_seq_length)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        with _quiet_transformers():
            self.transformer.save_pretrained(str(out), safe_serialization=True)
        _copy_tokenizer(self.source, out)
        (out / "sentence_bert_config.json").write_text(
            json.dumps({"max_seq_length": self.max_seq_length}, indent=2) + "\n", encoding="utf-8")
        return out
