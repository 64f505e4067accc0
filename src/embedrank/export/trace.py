"""Tracing a Hugging Face model to ONNX: load it with torch (offline), wrap it so the graph has
embedrank's inputs and output, export with torch.onnx.export and check the graph's interface."""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

from embedrank.errors import ExportError, MissingFileError
from embedrank.export.source import SourceModel

__all__ = ["ENCODER_ONLY_CLASSES", "check_graph", "dummy_inputs", "is_causal", "load_torch_model", "make_wrapper",
           "offline_quiet", "torch_export", "uses_token_type_ids"]

# Encoder-decoder families whose encoder alone is the embedder (sentence-t5, GTR), loaded as
# sentence-transformers does: model_type -> the transformers class of the encoder.
ENCODER_ONLY_CLASSES = {"t5": "T5EncoderModel", "mt5": "MT5EncoderModel", "umt5": "UMT5EncoderModel",
                        "longt5": "LongT5EncoderModel"}

@contextlib.contextmanager
def offline_quiet():
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


def load_torch_model(source: SourceModel, kind: str):
    """The torch model as sentence-transformers loads it (AutoModel; the encoder alone for the
    T5 family), in float32 with eager attention. ExportError naming the architecture when
    transformers does not know it or it is an encoder-decoder other than the T5 family."""
    import torch
    import transformers
    from transformers import AutoModel, AutoModelForSequenceClassification
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if source.model_type not in CONFIG_MAPPING_NAMES:
        raise ExportError(f"{source.transformer_path}: architecture {source.architecture} is unknown to transformers "
                          f"{transformers.__version__} (a newer transformers, or a model that needs trust_remote_code)")
    if kind == "cross-encoder":
        cls = AutoModelForSequenceClassification
    elif source.model_type in ENCODER_ONLY_CLASSES:
        cls = getattr(transformers, ENCODER_ONLY_CLASSES[source.model_type])
    else:
        cls = AutoModel
    try:
        model = cls.from_pretrained(str(source.transformer_path), local_files_only=True, attn_implementation="eager")
    except OSError as error:
        raise MissingFileError(f"could not load the model from {source.transformer_path}: {error}") from None
    except (ValueError, KeyError, TypeError) as error:
        raise ExportError(f"transformers could not load {source.transformer_path} ({source.architecture}): "
                          f"{error}") from None
    if kind == "bi-encoder" and getattr(model.config, "is_encoder_decoder", False) and cls is AutoModel:
        raise ExportError(f"{source.transformer_path}: {source.architecture} is an encoder-decoder model; embedrank "
                          f"exports the encoder of {', '.join(sorted(ENCODER_ONLY_CLASSES))} models only")
    model = model.to(torch.float32).eval()
    return model


def is_causal(model, input_names: list[str], vocab_size: int) -> bool:
    """True when the model's token states never depend on later tokens (a decoder): checked by
    changing the last token of a 6-token text and comparing the states of the first five."""
    import torch

    ids = (torch.arange(6, dtype=torch.long).reshape(1, 6) * 7) % max(vocab_size - 8, 1) + 5
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 3) % max(vocab_size - 8, 1) + 5
    states = []
    for tokens in (ids, changed):
        feeds = {"input_ids": tokens, "attention_mask": torch.ones_like(tokens), "token_type_ids": torch.zeros_like(tokens)}
        with torch.no_grad():
            states.append(model(**{n: feeds[n] for n in input_names}, return_dict=True).last_hidden_state[0, :5])
    return bool(torch.allclose(states[0], states[1], rtol=0, atol=1e-6))


def uses_token_type_ids(model) -> bool:
    import inspect

    base = getattr(model, "base_model", model)
    accepts = "token_type_ids" in inspect.signature(model.forward).parameters
    embeddings = getattr(getattr(base, "embeddings", None), "token_type_embeddings", None)
    types = getattr(model.config, "type_vocab_size", 0) or 0
    return bool(accepts and embeddings is not None and types > 1)


def make_wrapper(model, input_names: list[str], kind: str, pooling: str | None = None, normalize: bool = False,
                 dense: list | None = None):
    """A module taking the inputs positionally and returning one tensor: the token states, the
    logits, or (pooling given) pooled vectors, after `dense` (embedrank.models.head.DenseLayer
    list) and L2 normalization when asked. Pooling is over right-padded batches."""
    import torch

    activations = {"Identity": lambda x: x, "Tanh": torch.tanh, "ReLU": torch.relu, "Sigmoid": torch.sigmoid}
    layers = []
    for layer in dense or []:
        residual = layer.residual
        layers.append((torch.from_numpy(layer.weight), None if layer.bias is None else torch.from_numpy(layer.bias),
                       activations[layer.activation],
                       residual if residual is None or isinstance(residual, str) else torch.from_numpy(residual)))

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
            vectors = _torch_pool(hidden, feeds["attention_mask"], pooling)
            for weight, bias, activation, residual in layers:
                y = activation(torch.nn.functional.linear(vectors, weight, bias))
                if isinstance(residual, str):
                    y = y + vectors
                elif residual is not None:
                    y = y + torch.nn.functional.linear(vectors, residual)
                vectors = y
            if normalize:
                vectors = vectors / vectors.norm(dim=-1, keepdim=True).clamp(min=1e-12)
            return vectors

    return Wrapper().eval()


def _torch_pool(hidden, attention_mask, pooling: str):
    """embedrank.models.head.pool_tokens in torch, for a graph (right-padded masks)."""
    import torch

    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    if pooling == "cls":
        return hidden[:, 0]
    if pooling in ("mean", "mean_sqrt_len_tokens"):
        count = mask.sum(dim=1).clamp(min=1e-9)
        return (hidden * mask).sum(dim=1) / (count if pooling == "mean" else count.sqrt())
    if pooling == "lasttoken":
        last = (attention_mask.sum(dim=1) - 1).clamp(min=0)
        index = last.view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])
        return torch.gather(hidden * mask, 1, index).squeeze(1)
    if pooling == "weightedmean":
        positions = torch.arange(1, hidden.shape[1] + 1, dtype=hidden.dtype).view(1, -1, 1)
        weights = mask * positions
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    if pooling == "max":
        return hidden.masked_fill(mask == 0, float("-inf")).max(dim=1).values
    raise ExportError(f"pooling {pooling!r} has no graph form")


def dummy_inputs(input_names: list[str], pad_id: int, vocab_size: int):
    """A padded batch of 2 x 8 (the second row half padding) to trace with."""
    import torch

    ids = torch.arange(16, dtype=torch.long).reshape(2, 8) % max(vocab_size - 8, 1) + 5  # clear of special ids
    mask = torch.ones((2, 8), dtype=torch.long)
    mask[1, 4:] = 0
    ids[1, 4:] = pad_id
    values = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros((2, 8), dtype=torch.long)}
    return tuple(values[name] for name in input_names)


def torch_export(wrapper, args, path: Path, input_names: list[str], output_name: str, output_axes: dict,
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


def check_graph(path: Path, input_names: list[str], output_name: str, opset: int) -> None:
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
