"""The embedrank model folder: embedrank.json, the ONNX variants and tokenizer.json."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from embedrank.errors import InvalidValueError, ModelFolderError
from embedrank.models.head import POOLINGS as HEAD_POOLINGS

CONFIG_FILE = "embedrank.json"
TOKENIZER_FILE = "tokenizer.json"
FORMAT_VERSION = 1
DEFAULT_VARIANT_FILES = {"fp32": "model.onnx", "opt": "model_opt.onnx", "int8": "model_int8.onnx", "pooled": "model_pooled.onnx",
                         "fp16": "model_fp16.onnx", "pooled_fp16": "model_pooled_fp16.onnx"}
# Variants that run another variant's file on another runtime: "bf16" is the fp32 graph
# compiled by OpenVINO with bf16 weights (embedrank.runtime.openvino_session).
RUNTIME_VARIANTS = {"bf16": "fp32"}
# How token states become one vector: sentence-transformers' pooling modes (embedrank.models.head:
# "mean", "cls", "lasttoken", ...), or "pooled" (the graph itself outputs [batch, hidden]; set by
# embedrank.import_onnx for graphs that pool inside).
POOLINGS = (*HEAD_POOLINGS, "pooled")



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
    # sentence-transformers' default_prompt_name: the prompt encode() uses when given none
    default_prompt_name: str | None = None
    # the Pooling's include_prompt (False: the prompt's tokens are left out of the pool)
    include_prompt: bool = True
    # Dense layers after pooling: {"file", "in_features", "out_features", "bias", "activation", "residual"}
    dense: list = field(default_factory=list)

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
        config = cls(
            path=folder,
            kind=_field(raw, "kind", str, config_path, "bi-encoder"),
            pooling=_field(raw, "pooling", str, config_path, "mean"),
            normalize=_field(raw, "normalize", bool, config_path, True),
            max_seq_length=_field(raw, "max_seq_length", int, config_path),
            dimension=_field(raw, "dimension", int, config_path, 0),
            fingerprint=_field(raw, "fingerprint", str, config_path, ""),
            prompts=_field(raw, "prompts", dict, config_path, {}),
            variants=_field(raw, "variants", dict, config_path, DEFAULT_VARIANT_FILES),
            raw=raw,
            include_prompt=_field(raw, "include_prompt", bool, config_path, True),
        )
        default_prompt = raw.get("default_prompt_name")
        if default_prompt is not None and (not isinstance(default_prompt, str) or default_prompt not in config.prompts):
            raise ModelFolderError(f"{config_path}: default_prompt_name {default_prompt!r} is not one of the prompts "
                                   f"({', '.join(sorted(config.prompts)) or 'none'})")
        config.default_prompt_name = default_prompt
        config.dense = _dense_entries(raw.get("dense"), folder, config_path)
        if config.max_seq_length < 2:
            raise ModelFolderError(f"{config_path}: max_seq_length must be at least 2, got {config.max_seq_length}")
        if config.dimension < 0:
            raise ModelFolderError(f"{config_path}: dimension must not be negative, got {config.dimension}")
        for role, prompt in config.prompts.items():
            if prompt is not None and not isinstance(prompt, str):
                raise ModelFolderError(f"{config_path}: prompts.{role} must be a string or null, "
                                       f"got {type(prompt).__name__}")
        for variant, name in config.variants.items():
            if name is not None:
                _check_member_name(folder, name, f"variants.{variant}", config_path)
        if config.pooling not in POOLINGS:
            raise ModelFolderError(f"{config_path}: unknown pooling {config.pooling!r} (expected one of "
                                   f"{', '.join(POOLINGS)})")
        if config.dense and config.kind == "bi-encoder" and config.dimension \
                and config.dense[-1]["out_features"] != config.dimension:
            raise ModelFolderError(f"{config_path}: dimension is {config.dimension} but the last Dense layer gives "
                                   f"{config.dense[-1]['out_features']}")
        _check_member_name(folder, TOKENIZER_FILE, "the tokenizer", config_path)
        if not (folder / TOKENIZER_FILE).is_file():
            raise ModelFolderError(f"{folder / TOKENIZER_FILE} is missing")
        return config

    def variant_path(self, variant: str) -> Path:
        if isinstance(variant, str) and variant in RUNTIME_VARIANTS:
            return self.variant_path(RUNTIME_VARIANTS[variant])
        if not isinstance(variant, str) or variant not in DEFAULT_VARIANT_FILES:
            raise InvalidValueError(f"unknown variant {variant!r}; expected one of "
                                    f"{', '.join([*DEFAULT_VARIANT_FILES, *RUNTIME_VARIANTS])}")
        name = self.variants.get(variant)
        path = self.path / name if name else None
        if path is None or not path.is_file():
            present = ", ".join(v for v, f in self.variants.items() if f and (self.path / f).is_file()) or "none"
            raise ModelFolderError(f"variant {variant!r} is not in {self.path} (file {name or DEFAULT_VARIANT_FILES[variant]} missing; present: {present})")
        return path

    @property
    def tokenizer_path(self) -> Path:
        return self.path / TOKENIZER_FILE

    @property
    def token_width(self) -> int:
        """The width of the token states a token-level graph gives (the first Dense layer's
        input; the dimension when there is no Dense)."""
        return int(self.dense[0]["in_features"]) if self.dense else self.dimension


_DENSE_RESIDUALS = (None, "identity", "matrix")


def _dense_entries(value, folder: Path, config_path: Path) -> list[dict]:
    """embedrank.json's "dense" list, checked: plain file names, positive sizes that chain up,
    a known activation (the weights themselves are read by models.head.load_dense)."""
    from embedrank.models.head import ACTIVATIONS

    if value is None:
        return []
    if not isinstance(value, list):
        raise ModelFolderError(f"{config_path}: field 'dense' must be a list, got {type(value).__name__}")
    entries, width = [], None
    for i, entry in enumerate(value):
        where = f"dense[{i}]"
        if not isinstance(entry, dict):
            raise ModelFolderError(f"{config_path}: {where} must be an object")
        for key in ("in_features", "out_features"):
            size = entry.get(key)
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise ModelFolderError(f"{config_path}: {where}.{key} must be a positive integer, got {size!r}")
        if width is not None and entry["in_features"] != width:
            raise ModelFolderError(f"{config_path}: {where}.in_features is {entry['in_features']} but the layer "
                                   f"before gives {width}")
        width = entry["out_features"]
        if entry.get("activation") not in ACTIVATIONS:
            raise ModelFolderError(f"{config_path}: {where}.activation must be one of {', '.join(ACTIVATIONS)}, "
                                   f"got {entry.get('activation')!r}")
        if not isinstance(entry.get("bias"), bool) or entry.get("residual") not in _DENSE_RESIDUALS:
            raise ModelFolderError(f"{config_path}: {where} needs bias (true/false) and residual (null, "
                                   "\"identity\" or \"matrix\")")
        _check_member_name(folder, entry.get("file"), f"{where}.file", config_path)
        entries.append(dict(entry))
    return entries


def _field(raw: dict, name: str, kind: type, config_path: Path, default=None):
    """raw[name] when it has JSON type `kind` (int: a whole number, not true/false; bool:
    true/false only), else ModelFolderError naming the field; `default` when absent (None:
    the field is required). No coercion: "false" is not False and 2.7 is not 2."""
    if name not in raw or raw[name] is None:
        if default is None:
            raise ModelFolderError(f"{config_path} lacks the field {name!r}")
        return dict(default) if isinstance(default, dict) else default
    value = raw[name]
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if not ok:
        want = {str: "a string", bool: "true or false", int: "an integer", dict: "an object"}[kind]
        raise ModelFolderError(f"{config_path}: field {name!r} must be {want}, got {type(value).__name__} {value!r:.60}")
    return dict(value) if kind is dict else value


def _check_member_name(folder: Path, name, field: str, config_path: Path) -> None:
    """Refuses a file name that could lead outside the model folder: only a plain name
    (no separator, not "." or "..", not absolute), and not a symlink whose target lies
    outside the folder, since a folder is loaded as a unit and should not read other files."""
    if (not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name
            or "\0" in name or os.path.isabs(name)):
        raise ModelFolderError(f"{config_path}: {field} must be a plain file name inside the folder, got {name!r}")
    path = folder / name
    if path.is_symlink():
        target = path.resolve()
        if folder.resolve() not in target.parents:
            raise ModelFolderError(f"{config_path}: {field} {name!r} is a symlink to {target}, outside the model folder")


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
