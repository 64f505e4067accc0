"""Reading a local Hugging Face model folder (the *source* of an export), without torch.

:func:`read_source_model` looks at the files only (config.json, tokenizer.json, the weight
files and sentence-transformers' modules.json, 1_Pooling/config.json,
sentence_bert_config.json, config_sentence_transformers.json) and says what an embedrank
model folder made from it should record: pooling, normalization, max_seq_length, prompts
and a fingerprint of the weights. Nothing here imports torch or transformers, so it is
cheap to call and to test.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from embedrank.errors import InvalidValueError, MissingFileError, SourceModelError

KINDS = ("bi-encoder", "cross-encoder")

# Model families whose position ids start at padding_idx + 1 (= 2): two positions of
# max_position_embeddings can never be used by a token.
_OFFSET_POSITION_MODELS = frozenset({
    "roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "mpnet", "longformer", "data2vec-text",
    "bart", "ernie_m",
})
# tokenizer_config.json's "no limit" sentinel is int(1e30); anything this large means unset.
_NO_LIMIT = 10**9
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack")
_WEIGHT_PREFIXES = ("model", "pytorch_model", "tf_model", "flax_model")



@dataclass
class SourceModel:
    """What a Hugging Face model folder says about itself."""

    path: Path  # the folder given (a sentence-transformers root, or the transformers folder itself)
    transformer_path: Path  # where config.json, tokenizer.json and the weights are
    config: dict
    model_type: str
    hidden_size: int
    num_attention_heads: int
    tokenizer_path: Path
    weight_files: list[Path]
    pooling: str = "mean"
    normalize: bool = True
    max_seq_length: int = 512
    prompts: dict = field(default_factory=lambda: {"query": "", "document": ""})
    sentence_transformers: bool = False
    # Where each setting came from, for the export report ("modules.json", "default", ...).
    sources: dict = field(default_factory=dict)

    def fingerprint(self) -> str:
        """sha256 over the weight files' bytes, in file-name order: "sha256:<hex>"."""
        digest = hashlib.sha256()
        for path in self.weight_files:
            with open(path, "rb") as f:
                while block := f.read(1 << 22):
                    digest.update(block)
        return "sha256:" + digest.hexdigest()


def _load_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SourceModelError(f"{path} could not be read as JSON: {error}") from None


def _json_object(path: Path) -> dict:
    value = _load_json(path)
    if not isinstance(value, dict):
        raise SourceModelError(f"{path} must hold a JSON object")
    return value


def find_weight_files(folder: Path) -> list[Path]:
    """The weight files of a transformers checkpoint in `folder` (sharded ones included).

    safetensors are preferred to .bin (as transformers does); one format only is hashed, so
    a folder holding both fingerprints as the one that is loaded.
    """
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES) and p.name.startswith(_WEIGHT_PREFIXES)
                   and not p.name.startswith("training_args"))
    for suffix in (".safetensors", ".bin"):
        chosen = [p for p in files if p.name.endswith(suffix)]
        if chosen:
            return chosen
    return files


def _model_max_length(folder: Path) -> int | None:
    path = folder / "tokenizer_config.json"
    if not path.is_file():
        return None
    value = _json_object(path).get("model_max_length")
    if isinstance(value, (int, float)) and 0 < value < _NO_LIMIT:
        return int(value)
    return None


def default_max_seq_length(config: dict, folder: Path) -> int:
    """min(tokenizer model_max_length, usable position embeddings); 512 when neither is known."""
    limits = []
    positions = config.get("max_position_embeddings")
    if isinstance(positions, int) and positions > 0:
        if config.get("model_type") in _OFFSET_POSITION_MODELS:
            positions -= 2
        limits.append(positions)
    tokenizer_limit = _model_max_length(folder)
    if tokenizer_limit:
        limits.append(tokenizer_limit)
    return min(limits) if limits else 512


def _pooling_from_config(path: Path) -> str:
    pooling = _json_object(path)
    mode = pooling.get("pooling_mode")  # newer sentence-transformers spell it as one string
    if isinstance(mode, str):
        modes = {mode.replace("_tokens", "").replace("_token", "")}
    else:
        modes = {name[len("pooling_mode_"):].replace("_tokens", "").replace("_token", "")
                 for name, on in pooling.items() if name.startswith("pooling_mode_") and on is True}
    if modes == {"mean"}:
        return "mean"
    if modes == {"cls"}:
        return "cls"
    raise SourceModelError(
        f"{path}: pooling {sorted(modes) or 'none'} is not supported (embedrank pools with 'mean' or 'cls' only)")


def _transformer_subfolder(root: Path) -> str:
    """The Transformer module's folder named in modules.json ("" when at the root or absent)."""
    modules_path = root / "modules.json"
    if not modules_path.is_file():
        return ""
    modules = _load_json(modules_path)
    if not isinstance(modules, list):
        raise SourceModelError(f"{modules_path} must hold a JSON list")
    for module in modules:
        if isinstance(module, dict) and str(module.get("type", "")).endswith("Transformer"):
            return str(module.get("path") or "")
    return ""


def _read_sentence_transformers(root: Path, folder: Path, model: SourceModel) -> None:
    """Pooling and normalization from root/modules.json; max_seq_length and prompts."""
    modules_path = root / "modules.json"
    if modules_path.is_file():
        modules = _load_json(modules_path)
        if not isinstance(modules, list):
            raise SourceModelError(f"{modules_path} must hold a JSON list")
        model.sentence_transformers = True
        normalize = False
        pooling = None
        for module in modules:
            if not isinstance(module, dict):
                raise SourceModelError(f"{modules_path} must list JSON objects")
            kind = str(module.get("type", "")).rsplit(".", 1)[-1]
            if kind == "Transformer":
                continue
            if kind == "Pooling":
                config_path = root / str(module.get("path", "")) / "config.json"
                if not config_path.is_file():
                    raise MissingFileError(f"{modules_path} names a Pooling module but {config_path} is missing")
                pooling = _pooling_from_config(config_path)
            elif kind == "Normalize":
                normalize = True
            else:
                raise SourceModelError(
                    f"{modules_path}: module {module.get('type')!r} is not supported by embedrank's export "
                    "(only Transformer, Pooling (mean/cls) and Normalize)")
        model.normalize = normalize
        model.sources["normalize"] = "modules.json"
        if pooling is not None:
            model.pooling = pooling
            model.sources["pooling"] = "1_Pooling/config.json"
    if _read_max_seq_length(folder, model):
        model.sentence_transformers = True
    prompts_path = root / "config_sentence_transformers.json"
    if prompts_path.is_file():
        prompts = _json_object(prompts_path).get("prompts") or {}
        if isinstance(prompts, dict) and prompts:
            query = prompts.get("query", "")
            document = next((prompts[k] for k in ("document", "passage", "corpus", "doc") if prompts.get(k)), "")
            model.prompts = {"query": str(query or ""), "document": str(document or "")}
            model.sources["prompts"] = "config_sentence_transformers.json"


def _read_max_seq_length(folder: Path, model: SourceModel) -> bool:
    """Takes max_seq_length from sentence_bert_config.json when it holds one; True if it did."""
    st_config = folder / "sentence_bert_config.json"
    if not st_config.is_file():
        return False
    length = _json_object(st_config).get("max_seq_length")
    if not (isinstance(length, int) and length > 0):
        return False
    model.max_seq_length = length
    model.sources["max_seq_length"] = "sentence_bert_config.json"
    return True


def read_source_model(model_dir: str | os.PathLike, kind: str = "bi-encoder") -> SourceModel:
    """Inspects a local Hugging Face model folder; raises naming the missing path or file.

    FileNotFoundError: the folder, config.json, tokenizer.json or the weights are missing.
    SourceModelError (a ValueError): a file is unreadable or asks for what embedrank can't do.

    An old sentence-transformers layout (the transformer in a subfolder such as
    0_Transformer/, named by modules.json) is followed to that subfolder.
    """
    if kind not in KINDS:
        raise InvalidValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    root = Path(model_dir)
    if not root.exists():
        raise MissingFileError(f"model folder not found: {root}")
    if not root.is_dir():
        raise MissingFileError(f"model path is not a folder: {root}")
    folder = root / _transformer_subfolder(root)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise MissingFileError(f"{config_path} is missing: not a Hugging Face model folder")
    config = _json_object(config_path)
    tokenizer_path = folder / "tokenizer.json"
    if not tokenizer_path.is_file():
        raise MissingFileError(
            f"{tokenizer_path} is missing: embedrank needs a fast tokenizer file (save one with "
            "AutoTokenizer.from_pretrained(...).save_pretrained(folder))")
    weights = find_weight_files(folder)
    if not weights:
        raise MissingFileError(
            f"no weight files in {folder} (expected model.safetensors, pytorch_model.bin or their shards)")
    hidden = config.get("hidden_size") or config.get("dim") or 0
    heads = config.get("num_attention_heads") or config.get("n_heads") or 0
    model = SourceModel(
        path=root, transformer_path=folder, config=config, model_type=str(config.get("model_type", "")),
        hidden_size=int(hidden), num_attention_heads=int(heads),
        tokenizer_path=tokenizer_path, weight_files=weights,
    )
    model.max_seq_length = default_max_seq_length(config, folder)
    model.sources = {"pooling": "default", "normalize": "default", "max_seq_length": "default", "prompts": "default"}
    if kind == "bi-encoder":
        _read_sentence_transformers(root, folder, model)
    else:
        _read_max_seq_length(folder, model)
    return model
