"""A test cross-encoder: all-MiniLM-L6-v2's weights plus a fresh one-label classification head.

No pretrained cross-encoder exists offline. The head is initialised from a fixed torch seed
and scaled up (std 1.0 instead of transformers' 0.02), so logits spread over a few units and
a comparison at 1e-3 tells models apart. The scores mean nothing; the plumbing is what is
tested. Built and exported once per test session (cached here, shared by every test module).
"""

from __future__ import annotations

import shutil
from pathlib import Path

HEAD_SEED = 20261126
HEAD_STD = 1.0
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
_built: dict[tuple, Path] = {}


def make_cross_encoder_source(minilm_source: Path, out: Path, num_labels: int = 1) -> Path:
    """Writes a Hugging Face sequence-classification folder (MiniLM body, seeded head) to `out`."""
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.manual_seed(HEAD_SEED)
    model = AutoModelForSequenceClassification.from_pretrained(str(minilm_source), num_labels=num_labels,
                                                               local_files_only=True)
    with torch.no_grad():
        model.classifier.weight.normal_(0.0, HEAD_STD)
        model.classifier.bias.fill_(0.1)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    for name in _TOKENIZER_FILES:
        if (minilm_source / name).is_file():
            shutil.copyfile(minilm_source / name, out / name)
    return out


def cross_encoder_folders(tmp_path_factory, minilm_source: Path, num_labels: int = 1,
                          full: bool = True) -> tuple[Path, Path]:
    """(Hugging Face folder, embedrank export) of the test cross-encoder, built once per session.

    full=True exports fp32, opt and int8; full=False fp32 only (faster).
    """
    key = (str(tmp_path_factory.getbasetemp()), num_labels, full)
    if key not in _built:
        from embedrank.export import export_model

        root = tmp_path_factory.mktemp(f"cross_encoder_{num_labels}")
        source = make_cross_encoder_source(minilm_source, root / "hf", num_labels)
        export_model(source, root / "export", kind="cross-encoder", optimize=full, quantize=full)
        _built[key] = root
    root = _built[key]
    return root / "hf", root / "export"
