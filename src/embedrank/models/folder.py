"""The embedrank model folder: embedrank.json, the ONNX variants and tokenizer.json."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from embedrank.errors import InvalidValueError, ModelFolderError

CONFIG_FILE = "embedrank.json"
TOKENIZER_FILE = "tokenizer.json"
FORMAT_VERSION = 1
DEFAULT_VARIANT_FILES = {"fp32": "model.onnx", "opt": "model_opt.onnx", "int8": "model_int8.onnx", "pooled": "model_pooled.onnx",
                         "fp16": "model_fp16.onnx", "pooled_fp16": "model_pooled_fp16.onnx"}



@dataclass
class ModelConfig:
    """What embedrank.json says about an exported model."""

    path: Path
    kind: str
    pooling: str
    normalize: bool
    max_seq_length: int
    dimension: int
    fingerprint: str
    prompts: dict = field(default_factory=dict)
    variants: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict)

    @classmethod
    def load(cls, folder: str | os.PathLike) -> ModelConfig:
        folder = Path(folder)
        if not folder.is_dir():
            raise ModelFolderError(f"model folder not found: {folder}")
        config_path = folder / CONFIG_FILE
        raw = read_config(folder)
        version = raw.get("format_version")
        if version != FORMAT_VERSION:
            raise ModelFolderError(f"{config_path} has format_version {version!r}; this embedrank reads {FORMAT_VERSION}")
        try:
            config = cls(
                path=folder,
                kind=str(raw.get("kind", "bi-encoder")),
                pooling=str(raw.get("pooling", "mean")),
                normalize=bool(raw.get("normalize", True)),
                max_seq_length=int(raw["max_seq_length"]),
                dimension=int(raw.get("dimension", 0)),
                fingerprint=str(raw.get("fingerprint", "")),
                prompts=dict(raw.get("prompts") or {}),
                variants=dict(raw.get("variants") or DEFAULT_VARIANT_FILES),
                raw=raw,
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ModelFolderError(f"{config_path} lacks or mistypes a field: {error}") from None
        if config.pooling not in ("mean", "cls"):
            raise ModelFolderError(f"{config_path}: unknown pooling {config.pooling!r} (expected 'mean' or 'cls')")
        if not (folder / TOKENIZER_FILE).is_file():
            raise ModelFolderError(f"{folder / TOKENIZER_FILE} is missing")
        return config

    def variant_path(self, variant: str) -> Path:
        if variant not in DEFAULT_VARIANT_FILES:
            raise InvalidValueError(f"unknown variant {variant!r}; expected one of {', '.join(DEFAULT_VARIANT_FILES)}")
        name = self.variants.get(variant)
        path = self.path / name if name else None
        if path is None or not path.is_file():
            present = ", ".join(v for v, f in self.variants.items() if f and (self.path / f).is_file()) or "none"
            raise ModelFolderError(f"variant {variant!r} is not in {self.path} (file {name or DEFAULT_VARIANT_FILES[variant]} missing; present: {present})")
        return path

    @property
    def tokenizer_path(self) -> Path:
        return self.path / TOKENIZER_FILE


def read_config(folder: str | os.PathLike) -> dict:
    """The JSON object in a model folder's embedrank.json, unvalidated (ModelConfig.load
    validates it); ModelFolderError when the file is missing or not a JSON object."""
    config_path = Path(folder) / CONFIG_FILE
    if not config_path.is_file():
        raise ModelFolderError(f"{config_path} is missing: not an embedrank model folder "
                               "(create one with embedrank.export_model)")
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelFolderError(f"{config_path} is not valid JSON: {error}") from None
    if not isinstance(raw, dict):
        raise ModelFolderError(f"{config_path} must hold a JSON object")
    return raw


def write_config(folder: str | os.PathLike, document: dict) -> Path:
    """Writes `document` (with format_version) as the folder's embedrank.json; returns its path."""
    path = Path(folder) / CONFIG_FILE
    path.write_text(json.dumps({"format_version": FORMAT_VERSION, **document}, indent=2) + "\n", encoding="utf-8")
    return path
