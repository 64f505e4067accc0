"""The index directory format: manifest, checksums, corruption and leftovers of interrupted saves."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from embedrank.index import FlatIndex, IndexFormatError, load_index
from embedrank.index import storage
from embedrank.index.storage import CHECKSUM_FIELD, manifest_checksum
from embedrank.utils import files


@pytest.fixture
def saved(tmp_path):
    index = FlatIndex(8, "binary", "float32")
    rng = np.random.default_rng(0)
    index.add(rng.standard_normal((300, 8)).astype(np.float32), ids=[f"d{i}" for i in range(300)],
              metadata=[{"i": i} for i in range(300)])
    return index, index.save(tmp_path / "ix")


def test_manifest_lists_every_file_with_size_and_checksum(saved):
    index, path = saved
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format"] == "embedrank-index" and manifest["format_version"] == 2
    assert manifest["type"] == "FlatIndex" and manifest["dim"] == 8 and manifest["count"] == 300
    assert manifest["id_kind"] == "str" and manifest["config"]["precision"] == "binary"
    assert set(manifest["files"]) == {"ids.json", "metadata.sqlite", "vectors.npy", "bits.npy"}
    assert sorted(os.listdir(path)) == sorted([*manifest["files"], "manifest.json"])
    for name, entry in manifest["files"].items():
        assert entry["bytes"] == (path / name).stat().st_size
        assert entry["sha256"] == storage.sha256_of(path / name)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".") and p.name != ".ix.lock"]  # no leftovers


def test_saving_again_replaces_the_index(saved):
    index, path = saved
    index.remove(["d0", "d1"])
    index.save(path)
    assert len(load_index(path)) == 298
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".") and p.name != ".ix.lock"]


def test_saving_again_without_renameat2_replaces_the_index(saved, monkeypatch):
    index, path = saved
    monkeypatch.setattr(files, "_renameat2", None)
    index.remove(["d5"])
    index.save(path)
    assert len(load_index(path)) == 299
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".") and p.name != ".ix.lock"]


@pytest.mark.parametrize("name", ["vectors.npy", "bits.npy", "ids.json", "metadata.sqlite"])
def test_truncated_file(saved, name):
    _, path = saved
    data = (path / name).read_bytes()
    (path / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexFormatError, match=rf"{name}: \d+ bytes, the manifest says \d+ \(truncated"):
        load_index(path)


@pytest.mark.parametrize("name", ["vectors.npy", "bits.npy", "ids.json", "metadata.sqlite"])
def test_flipped_byte(saved, name):
    _, path = saved
    data = bytearray((path / name).read_bytes())
    data[len(data) - 7] ^= 0x10
    (path / name).write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match=rf"{name}: checksum mismatch"):
        load_index(path)


@pytest.mark.parametrize("name", ["vectors.npy", "ids.json", "metadata.sqlite"])
def test_missing_file(saved, name):
    _, path = saved
    (path / name).unlink()
    with pytest.raises(IndexFormatError, match=rf"{name}: missing"):
        load_index(path)


def test_foreign_file_in_the_directory(saved):
    _, path = saved
    (path / "notes.txt").write_text("hello")
    with pytest.raises(IndexFormatError, match="notes.txt: a file the manifest does not list"):
        load_index(path)


def test_file_replaced_by_another_index_file_of_the_same_name(saved, tmp_path):
    _, path = saved
    other = FlatIndex(8, "binary", "float32")
    other.add(np.ones((300, 8), dtype=np.float32), ids=[f"d{i}" for i in range(300)])
    other_path = other.save(tmp_path / "other")
    shutil.copy(other_path / "vectors.npy", path / "vectors.npy")  # same size, other contents
    with pytest.raises(IndexFormatError, match="vectors.npy: checksum mismatch"):
        load_index(path)


def test_without_verification_a_consistent_but_wrong_payload_is_still_caught(saved):
    _, path = saved
    np.save(path / "vectors.npy", np.ones((5, 8), dtype=np.float32))
    with pytest.raises(IndexFormatError, match=r"vectors.npy: expected a C-ordered float32 array of shape \(300, 8\)"):
        load_index(path, verify=False)


@pytest.mark.parametrize("edit, match", [
    (lambda m: m.update(format_version=3), "unsupported format_version 3"),
    (lambda m: m.update(format="something-else"), "not an embedrank index manifest"),
    (lambda m: m.update(type="IVFIndex"), "unknown index type 'IVFIndex'"),
    (lambda m: m.pop("dim"), "field 'dim' must be an integer"),
    (lambda m: m.update(files=[]), "'files' table is missing or malformed"),
    (lambda m: m["files"].update({"../escape": {"bytes": 1, "sha256": "0" * 64}}), "bad file name"),
    (lambda m: m.update(count=7), "count=7"),
    (lambda m: m["config"].update(precision="fp4"), "bad FlatIndex config"),
])
def test_bad_manifest_fields(saved, edit, match):
    _, path = saved
    manifest = json.loads((path / "manifest.json").read_text())
    edit(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="checksum mismatch|not an embedrank index manifest|unsupported format_version"):
        load_index(path)  # the manifest's own checksum catches any edit
    manifest[CHECKSUM_FIELD] = manifest_checksum(manifest)  # crafted with the checksum fixed up
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match=match):
        load_index(path)


def test_manifest_that_is_not_json(saved):
    _, path = saved
    (path / "manifest.json").write_text("{ not json")
    with pytest.raises(IndexFormatError, match=r"manifest.json: not valid JSON"):
        load_index(path)


def test_loading_as_the_wrong_class(saved):
    _, path = saved

    class OtherIndex(FlatIndex):
        pass

    with pytest.raises(IndexFormatError, match="holds a FlatIndex, not a OtherIndex"):
        OtherIndex.load(path)


def test_interrupted_save_between_renames_is_recovered(saved):
    index, path = saved
    aside = path.parent / f".{path.name}.old-123456789abc"
    os.rename(path, aside)  # what a crash after the first rename of the fallback leaves
    (path.parent / f".{path.name}.tmp-aaaaaaaaaaaa").mkdir()  # and a half-written new one
    loaded = load_index(path)
    assert len(loaded) == 300 and not aside.exists()
    index.save(path)  # the next save removes the leftover temporary directory
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".") and p.name != ".ix.lock"]


def test_a_damaged_aside_copy_is_not_restored(saved):
    _, path = saved
    aside = path.parent / f".{path.name}.old-123456789abc"
    os.rename(path, aside)
    (aside / "ids.json").write_text("[]")
    with pytest.raises(IndexFormatError, match="does not exist"):
        load_index(path)
    assert aside.exists()


def test_an_empty_index_round_trips(tmp_path):
    for index in (FlatIndex(3), FlatIndex(3, "int8")):
        loaded = load_index(index.save(tmp_path / index.precision))
        assert len(loaded) == 0 and loaded.search(np.ones(3), 2).ids.tolist() == [[-1, -1]]
        loaded.add(np.eye(3, dtype=np.float32))
        assert loaded.search(np.eye(3, dtype=np.float32)[1], 1).ids.tolist() == [[1]]


def test_concurrent_saves_of_one_instance_to_one_path(saved):
    import threading

    index, path = saved
    errors = []

    def save():
        try:
            for _ in range(5):
                index.save(path)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=save) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and len(load_index(path)) == 300
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".") and p.name != ".ix.lock"]
