"""Child process of test_structure_fuzz: mutates saved indexes (manifest fields, ids, metadata
rows and bytes, graph and vector bytes), fixes the checksums up as a forger would, and loads
them. A load must raise IndexFormatError or give an index that then works (search, filter,
metadata, add, remove, save, load) raising nothing outside embedrank's error family.

    python -m tests.index.fuzz_worker WORKDIR SEED SECONDS
        prints "done TRIES REFUSED LOADED", or "bug SEED-STEP TRACEBACK" and exits 1; a crash
        of this process (a signal) is what the test looks for above all.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sqlite3
import struct
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from embedrank.errors import EmbedrankError, IndexFormatError
from embedrank.index import FlatIndex, HNSWIndex, load_index
try:
    from embedrank.index.storage import CHECKSUM_FIELD, manifest_checksum
except ImportError:  # an embedrank from before manifest checksums (to see this fuzzer fail there)
    CHECKSUM_FIELD, manifest_checksum = None, None

DIM = 8
VALUES = [-1, 0, 1, 2, 3, 7, 2**31, 2**32 - 1, 2**63 - 1, 2**63, 2**64, -2**63, 1.5, float("nan"), "x", "", None,
          True, False, [], {}, [1], {"a": 1}, "l2", "ip", "cosine", "int8", "binary", "float32", "str", "int",
          "FlatIndex", "HNSWIndex", "\ud800"]
SQL = [
    "CREATE TRIGGER t AFTER INSERT ON docs BEGIN DELETE FROM fields; END;",
    "CREATE VIEW v AS SELECT 1;",
    "DELETE FROM docs WHERE slot = 1;",
    "UPDATE docs SET slot = slot + 1000 WHERE slot = 0;",
    "UPDATE docs SET slot = -5 WHERE slot = 2;",
    "UPDATE docs SET doc = '{\"i\": [1, {\"x\": null}]}' WHERE slot = 3;",
    "UPDATE docs SET doc = 'null' WHERE slot = 3;",
    "UPDATE docs SET doc = x'ff00' WHERE slot = 3;",
    "UPDATE fields SET slot = 99999 WHERE rowid = 1;",
    "UPDATE fields SET value = 'not json' WHERE rowid = 2;",
    "UPDATE fields SET key = 5 WHERE rowid = 2;",
    "INSERT INTO fields VALUES (1, 'new', '\"v\"');",
    "UPDATE info SET value = '2' WHERE name = 'schema_version';",
    "DELETE FROM info;",
    "DROP INDEX fields_slot;",
]


def build(base: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    out = []
    flat = FlatIndex(DIM)
    flat.add(rng.standard_normal((30, DIM)).astype(np.float32), metadata=[{"i": i, "tag": i % 3} for i in range(30)])
    flat.remove([4, 5])
    out.append(flat.save(base / "flat_int"))
    flat8 = FlatIndex(DIM, "int8", "float32")
    flat8.add(rng.standard_normal((20, DIM)).astype(np.float32), ids=[f"d{i}" for i in range(20)],
              metadata=[{"i": i} if i % 2 else None for i in range(20)])
    out.append(flat8.save(base / "flat_str_int8"))
    for metric in ("l2", "ip", "cosine"):
        hnsw = HNSWIndex(DIM, M=4, metric=metric)
        hnsw.add(rng.standard_normal((60, DIM)).astype(np.float32), metadata=[{"i": i} for i in range(60)])
        hnsw.remove(list(range(0, 60, 7)))
        out.append(hnsw.save(base / f"hnsw_{metric}"))
    return out


def fix_checksums(folder: Path, rng: random.Random) -> None:
    manifest_file = folder / "manifest.json"
    try:
        manifest = json.loads(manifest_file.read_text())
        files = manifest["files"]
    except (ValueError, KeyError, TypeError):
        return
    if isinstance(files, dict):
        for name in files:
            file = folder / name
            if isinstance(name, str) and file.is_file() and isinstance(files[name], dict):
                data = file.read_bytes()
                files[name].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    if manifest_checksum is not None and rng.random() < 0.9:
        try:
            manifest[CHECKSUM_FIELD] = manifest_checksum(manifest)
        except ValueError:
            pass
    manifest_file.write_text(json.dumps(manifest))


def mutate_manifest(folder: Path, rng: random.Random) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    target = manifest["config"] if rng.random() < 0.4 else manifest
    key = rng.choice(sorted(target) + ["extra"])
    if rng.random() < 0.15:
        target.pop(key, None)
    else:
        target[key] = rng.choice(VALUES)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def flip_bytes(file: Path, rng: random.Random) -> None:
    data = bytearray(file.read_bytes())
    if not data:
        return
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(data))
        if rng.random() < 0.5 and at + 4 <= len(data):
            struct.pack_into("<I", data, at, rng.choice([0, 1, 2**16 - 1, 2**32 - 1, rng.randrange(2**32), 100]))
        else:
            data[at] = rng.randrange(256)
    if rng.random() < 0.1:
        data = data[: rng.randrange(len(data))]
    file.write_bytes(bytes(data))


def mutate_ids(folder: Path, rng: random.Random) -> None:
    if (folder / "ids.json").exists():
        ids = json.loads((folder / "ids.json").read_text())
        ids[rng.randrange(len(ids))] = rng.choice(VALUES + [ids[0]])
        (folder / "ids.json").write_text(json.dumps(ids))
    else:
        ids = np.load(folder / "ids.npy")
        ids[rng.randrange(ids.size)] = rng.choice([-1, -7, 0, int(ids.max()), 2**62])
        if rng.random() < 0.2:
            ids = ids.astype(rng.choice([np.int32, np.float64, np.uint64]))
        np.save(folder / "ids.npy", ids)


def mutate_metadata(folder: Path, rng: random.Random) -> None:
    file = folder / "metadata.sqlite"
    if rng.random() < 0.3:
        flip_bytes(file, rng)
        return
    connection = sqlite3.connect(file)
    try:
        connection.executescript(rng.choice(SQL))
        connection.commit()
    except sqlite3.Error:
        pass
    finally:
        connection.close()


def mutate_payload(folder: Path, rng: random.Random) -> None:
    names = [p for p in folder.iterdir() if p.name not in ("manifest.json", "metadata.sqlite")]
    file = rng.choice(names)
    if file.name == "hnsw_graph.bin" and rng.random() < 0.5:
        # aim at the header and the first elements' link lists, where a crash would come from
        data = bytearray(file.read_bytes())
        at = rng.randrange(0, min(len(data) - 4, 96 + 400)) & ~3
        struct.pack_into("<I", data, at, rng.choice([0, 1, 5, 59, 60, 61, 2**16 - 1, 2**32 - 1, rng.randrange(2**32)]))
        file.write_bytes(bytes(data))
    else:
        flip_bytes(file, rng)


MUTATIONS = [mutate_manifest, mutate_ids, mutate_metadata, mutate_payload, mutate_payload]


def exercise(index, scratch: Path) -> None:
    """Everything a caller does with a loaded index; only the error family may come out."""
    queries = np.random.default_rng(1).standard_normal((3, index.dim)).astype(np.float32)
    for call in (
        lambda: len(index),
        lambda: index.search(queries, 5, return_metadata=True),
        lambda: index.search(queries, 50, filter={"i": [1, 2, 3]}),
        lambda: index.search(queries, 3, filter={"tag": 1}),
        lambda: index.search(queries, 3, filter=list(index.ids()[:3])),
        lambda: index.get_metadata(index.ids()[:5]),
        lambda: index.add(queries) if index.ids().dtype != object else index.add(queries, ids=["n1", "n2", "n3"]),
        lambda: index.remove(index.ids()[:2]),
        lambda: index.search(queries, 5),
        lambda: load_index(index.save(scratch)).search(queries, 5),
    ):
        try:
            call()
        except EmbedrankError:
            pass


def main() -> None:
    work, seed, seconds = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    bases = build(work / "bases")
    rng = random.Random(seed)
    deadline = time.monotonic() + seconds
    tries = refused = loaded = 0
    while time.monotonic() < deadline:
        step = f"{seed}-{tries}"
        folder = work / "case"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(rng.choice(bases), folder)
        try:
            for _ in range(rng.randint(1, 2)):
                rng.choice(MUTATIONS)(folder, rng)
            fix_checksums(folder, rng)
        except Exception:  # noqa: BLE001 - a mutation that cannot apply (np.load of a file it damaged)
            continue
        tries += 1
        try:
            index = load_index(folder, verify=rng.random() < 0.7)
        except IndexFormatError:
            refused += 1
            continue
        except Exception:  # noqa: BLE001 - any other error from a load is the bug looked for
            print(f"bug {step} load: " + traceback.format_exc().replace("\n", " | "), flush=True)
            sys.exit(1)
        loaded += 1
        try:
            exercise(index, work / "resaved")
        except Exception:  # noqa: BLE001
            print(f"bug {step} after load: " + traceback.format_exc().replace("\n", " | "), flush=True)
            sys.exit(1)
    print(f"done {tries} {refused} {loaded}", flush=True)


if __name__ == "__main__":
    main()
