"""Reading a local Hugging Face model folder (the *source* of an export), without torch.

:func:`read_source_model` looks at the files only (config.json, tokenizer.json,
tokenizer_config.json, the weight files and sentence-transformers' modules.json,
1_Pooling/config.json, Dense folders, sentence_bert_config.json,
config_sentence_transformers.json) and says what an embedrank model folder made from it should
record: pooling (mode, include_prompt), Dense modules, normalization, max_seq_length, prompts
(every name, and default_prompt_name) and a fingerprint of the weights. A folder that needs
trust_remote_code, or whose Pooling or Dense modules do not fit the model, is refused here with
a SourceModelError naming the architecture or the file. Nothing here imports torch or transformers, so it is
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
    default_prompt_name: str | None = None
    # sentence-transformers' Pooling include_prompt: False leaves the prompt's tokens out of the pool
    include_prompt: bool = True
    # the Pooling's embedding_dimension (None: not stated), checked against the hidden size
    pooling_dimension: int | None = None
    # Dense modules after pooling, in order: {"path", "in_features", "out_features", "bias",
    # "activation", "residual"} (weights read at export, with torch)
    dense: list = field(default_factory=list)
    # the tokenizer's padding side (tokenizer_config.json); embedrank pads right whatever it says
    padding_side: str = "right"
    architectures: list = field(default_factory=list)
    sentence_transformers: bool = False
    # Where each setting came from, for the export report ("modules.json", "default", ...).
    sources: dict = field(default_factory=dict)

    @property
    def architecture(self) -> str:
        """The architecture as config.json names it (for messages): "XLMRobertaModel (xlm-roberta)"."""
        names = ", ".join(str(a) for a in self.architectures)
        return f"{names} ({self.model_type})" if names else f"model_type {self.model_type!r}"

    def fingerprint(self) -> str:
        """sha256 over the weight files' bytes (the transformer's, in file-name order, then the
        Dense modules'): "sha256:<hex>"."""
        digest = hashlib.sha256()
        for path in list(self.weight_files) + [d["weights"] for d in self.dense]:
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


# sentence-transformers' pooling modes that embedrank runs (embedrank.models.head.POOLINGS)
POOLING_MODES = ("mean", "cls", "lasttoken", "weightedmean", "max", "mean_sqrt_len_tokens")
# Dense activations embedrank applies (torch.nn class names; embedrank.models.head.ACTIVATIONS)
DENSE_ACTIVATIONS = ("Identity", "Tanh", "ReLU", "Sigmoid")


def _pooling_from_config(path: Path) -> tuple[str, bool, int | None]:
    """(pooling mode, include_prompt, embedding_dimension or None) from a Pooling config.json
    (sentence-transformers 6 writes "pooling_mode": "mean"; older ones one boolean per mode)."""
    pooling = _json_object(path)
    mode = pooling.get("pooling_mode")
    if isinstance(mode, str):
        modes = [mode]
    elif isinstance(mode, list) and all(isinstance(m, str) for m in mode):
        modes = list(mode)
    else:
        modes = [name[len("pooling_mode_"):] for name, on in pooling.items() if name.startswith("pooling_mode_")
                 and on is True]
    modes = [m.replace("_tokens", "").replace("_token", "") if m != "mean_sqrt_len_tokens" else m for m in modes]
    if not modes:  # sentence-transformers' default when no mode is on
        modes = ["mean"]
    if len(modes) > 1:
        raise SourceModelError(f"{path}: pooling {modes} concatenates several modes; embedrank pools with one "
                               f"({', '.join(POOLING_MODES)})")
    if modes[0] not in POOLING_MODES:
        raise SourceModelError(f"{path}: pooling {modes[0]!r} is not supported (embedrank pools with "
                               f"{', '.join(POOLING_MODES)})")
    include_prompt = pooling.get("include_prompt", True)
    if not isinstance(include_prompt, bool):
        raise SourceModelError(f"{path}: include_prompt must be true or false, got {include_prompt!r}")
    dimension = pooling.get("embedding_dimension", pooling.get("word_embedding_dimension"))
    if dimension is not None and (isinstance(dimension, bool) or not isinstance(dimension, int) or dimension < 1):
        raise SourceModelError(f"{path}: embedding_dimension must be a positive integer, got {dimension!r}")
    return modes[0], include_prompt, dimension


def _dense_from_folder(folder: Path, modules_path: Path) -> dict:
    """A Dense module's settings and weight file; its weights are read at export (with torch)."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise MissingFileError(f"{modules_path} names a Dense module but {config_path} is missing")
    config = _json_object(config_path)
    sizes = {key: config.get(key) for key in ("in_features", "out_features")}
    for key, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SourceModelError(f"{config_path}: {key} must be a positive integer, got {value!r}")
    activation_path = config.get("activation_function", "torch.nn.modules.activation.Tanh")  # Dense's default
    activation = str(activation_path).rsplit(".", 1)[-1]
    if not str(activation_path).startswith("torch.") or activation not in DENSE_ACTIVATIONS:
        raise SourceModelError(f"{config_path}: activation {activation_path!r} is not supported (embedrank applies "
                               f"{', '.join('torch.nn.' + a for a in DENSE_ACTIVATIONS)})")
    for key, expected in (("module_input_name", "sentence_embedding"), ("module_output_name", "sentence_embedding")):
        if config.get(key, expected) not in (expected, None):
            raise SourceModelError(f"{config_path}: {key} {config[key]!r} is not supported (a Dense over "
                                   "the pooled sentence_embedding only)")
    weights = next((folder / name for name in ("model.safetensors", "pytorch_model.bin") if (folder / name).is_file()),
                   None)
    if weights is None:
        raise MissingFileError(f"{folder} (a Dense module) has no model.safetensors or pytorch_model.bin")
    bias = config.get("bias", True)
    residual = config.get("use_residual", False)
    if not isinstance(bias, bool) or not isinstance(residual, bool):
        raise SourceModelError(f"{config_path}: bias and use_residual must be true or false")
    return {"path": folder, "weights": weights, "in_features": sizes["in_features"],
            "out_features": sizes["out_features"], "bias": bias, "activation": activation, "residual": residual}


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
            if normalize and kind != "Dropout":
                raise SourceModelError(f"{modules_path}: a {kind} module after Normalize is not supported "
                                       "(embedrank normalizes last)")
            if kind == "Pooling":
                if pooling is not None:
                    raise SourceModelError(f"{modules_path} lists two Pooling modules")
                config_path = root / str(module.get("path", "")) / "config.json"
                if not config_path.is_file():
                    raise MissingFileError(f"{modules_path} names a Pooling module but {config_path} is missing")
                pooling, model.include_prompt, model.pooling_dimension = _pooling_from_config(config_path)
            elif kind == "Dense":
                if pooling is None:
                    raise SourceModelError(f"{modules_path}: a Dense module before Pooling is not supported")
                model.dense.append(_dense_from_folder(root / str(module.get("path", "")), modules_path))
            elif kind == "Normalize":
                normalize = True
            elif kind == "Dropout":
                continue  # nothing at inference
            else:
                raise SourceModelError(
                    f"{modules_path}: module {module.get('type')!r} is not supported by embedrank's export "
                    "(only Transformer, Pooling, Dense, Dropout and Normalize)")
        model.normalize = normalize
        model.sources["normalize"] = "modules.json"
        if pooling is not None:
            model.pooling = pooling
            model.sources["pooling"] = "1_Pooling/config.json"
        if model.dense:
            model.sources["dense"] = "modules.json"
    if _read_max_seq_length(folder, model):
        model.sentence_transformers = True
    prompts_path = root / "config_sentence_transformers.json"
    if prompts_path.is_file():
        st_config = _json_object(prompts_path)
        prompts = st_config.get("prompts") or {}
        if not isinstance(prompts, dict) or not all(isinstance(k, str) and (v is None or isinstance(v, str))
                                                    for k, v in prompts.items()):
            raise SourceModelError(f"{prompts_path}: prompts must map names to strings, got {prompts!r:.120}")
        default = st_config.get("default_prompt_name")
        if default is not None and (not isinstance(default, str) or default not in prompts):
            raise SourceModelError(f"{prompts_path}: default_prompt_name {default!r} is not one of the prompts "
                                   f"({', '.join(sorted(prompts)) or 'none'})")
        if prompts:
            model.prompts = {name: value or "" for name, value in prompts.items()}
            model.default_prompt_name = default
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
    _check_architecture(config, config_path)
    tokenizer_path = folder / "tokenizer.json"
    if not tokenizer_path.is_file():
        raise MissingFileError(
            f"{tokenizer_path} is missing: embedrank needs a fast tokenizer file (save one with "
            "AutoTokenizer.from_pretrained(...).save_pretrained(folder))")
    weights = find_weight_files(folder)
    if not weights:
        raise MissingFileError(
            f"no weight files in {folder} (expected model.safetensors, pytorch_model.bin or their shards)")
    hidden = next((config[k] for k in _HIDDEN_SIZE_KEYS if isinstance(config.get(k), int)), 0)
    heads = next((config[k] for k in _HEADS_KEYS if isinstance(config.get(k), int)), 0)
    architectures = config.get("architectures") or []
    model = SourceModel(
        path=root, transformer_path=folder, config=config, model_type=str(config.get("model_type", "")),
        hidden_size=int(hidden), num_attention_heads=int(heads),
        tokenizer_path=tokenizer_path, weight_files=weights,
        architectures=[str(a) for a in architectures] if isinstance(architectures, list) else [],
    )
    model.max_seq_length = default_max_seq_length(config, folder)
    model.padding_side = _padding_side(folder)
    model.sources = {"pooling": "default", "normalize": "default", "max_seq_length": "default", "prompts": "default"}
    if kind == "bi-encoder":
        _read_sentence_transformers(root, folder, model)
        _check_head(model)
    else:
        _read_max_seq_length(folder, model)
    return model


# config.json keys of the hidden size and the head count across families (T5: d_model, num_heads;
# DistilBERT: dim, n_heads; GPT-2: n_embd, n_head)
_HIDDEN_SIZE_KEYS = ("hidden_size", "d_model", "dim", "n_embd")
_HEADS_KEYS = ("num_attention_heads", "num_heads", "n_heads", "n_head")


def _check_architecture(config: dict, config_path: Path) -> None:
    """A model whose code lives in its folder (config.json's auto_map, loaded with
    trust_remote_code=True) is refused: embedrank runs only the architectures built into
    transformers, and loading such weights into a built-in class of the same model_type (Jina,
    Nomic and GTE folders do this) would give wrong vectors without an error."""
    auto_map = config.get("auto_map")
    if isinstance(auto_map, dict) and any(str(k).startswith("AutoModel") for k in auto_map):
        names = ", ".join(str(a) for a in config.get("architectures") or []) or "?"
        code = sorted({str(v).split(".", 1)[0] if isinstance(v, str) else str(v) for v in auto_map.values()})
        raise SourceModelError(
            f"{config_path}: architecture {names} (model_type {config.get('model_type')!r}) needs "
            f"trust_remote_code (its code is in the folder: {', '.join(code)}); embedrank exports only "
            "architectures built into transformers")
    if not isinstance(config.get("model_type"), str) or not config["model_type"]:
        raise SourceModelError(f"{config_path} has no model_type: not a transformers model folder")


def _padding_side(folder: Path) -> str:
    path = folder / "tokenizer_config.json"
    side = _json_object(path).get("padding_side", "right") if path.is_file() else "right"
    return side if side in ("left", "right") else "right"


def _check_head(model: SourceModel) -> None:
    """The pooling and Dense modules must fit the transformer (their sizes chain up)."""
    if model.pooling_dimension is not None and model.hidden_size and model.pooling_dimension != model.hidden_size:
        raise SourceModelError(
            f"{model.path}: the Pooling module's embedding_dimension is {model.pooling_dimension} but "
            f"{model.architecture} has hidden size {model.hidden_size}: the pooling config does not fit the model")
    width = model.hidden_size
    for dense in model.dense:
        if width and dense["in_features"] != width:
            raise SourceModelError(f"{dense['path']}: the Dense module takes {dense['in_features']} values but "
                                   f"gets {width} (hidden size {model.hidden_size} after pooling)")
        width = dense["out_features"]
