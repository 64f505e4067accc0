"""Tracing a Hugging Face model to ONNX: load it with torch (offline), wrap it so the graph has
embedrank's inputs and output, export with torch.onnx.export and check the graph's interface."""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

from embedrank.errors import ExportError, MissingFileError
from embedrank.export.source import SourceModel

__all__ = ["check_graph", "dummy_inputs", "load_torch_model", "make_wrapper", "offline_quiet", "torch_export",
           "uses_token_type_ids"]

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


def uses_token_type_ids(model) -> bool:
    import inspect

    base = getattr(model, "base_model", model)
    accepts = "token_type_ids" in inspect.signature(model.forward).parameters
    embeddings = getattr(getattr(base, "embeddings", None), "token_type_embeddings", None)
    types = getattr(model.config, "type_vocab_size", 0) or 0
    return bool(accepts and embeddings is not None and types > 1)


def make_wrapper(model, input_names: list[str], kind: str, pooling: str | None = None, normalize: bool = False):
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
