"""A save killed with SIGKILL at any moment leaves a loadable index with the right contents:
the previous one or the new one, never a mix, never a load error.

The saving processes are forked by tests/index/crash_worker.py (a separate interpreter) and
killed there; this process checks the index on disk after every kill.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from embedrank.index import FlatIndex, load_index
from tests.conftest import REPO
from tests.index import crash_worker

pytestmark = pytest.mark.slow

RANDOM_KILLS = 50
TIME_BUDGET_S = 25.0


class Worker:
    def __init__(self, path: Path, *args: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "tests.index.crash_worker", str(path), *args],
                                        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        line = self.process.stdout.readline().split()
        if not line or line[0] != "ready":
            self.close()
            pytest.fail(f"crash worker did not start: {line} {self.process.stderr.read()}")
        self.save_s = float(line[1])

    def kill_once(self) -> list[str]:
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().split()

    def close(self) -> None:
        _, err = self.process.communicate(input="stop\n" if self.process.poll() is None else None, timeout=60)
        assert self.process.returncode == 0, err


def version_zero() -> tuple[np.ndarray, list[str], list[dict]]:
    vectors = np.random.default_rng(0).standard_normal((50, crash_worker.DIM)).astype(np.float32)
    return vectors, [f"v0-{i}" for i in range(50)], [{"version": 0, "i": i} for i in range(50)]


def save_version_zero(path: Path) -> None:
    vectors, ids, metadata = version_zero()
    index = FlatIndex(crash_worker.DIM, "int8", "float32")
    index.add(vectors, ids=ids, metadata=metadata)
    index.save(path)


def version_of(path: Path) -> int:
    """Loads the index at `path` and checks it is exactly one of the known versions; returns it."""
    index = load_index(path)
    version = index.get_metadata([index.ids()[0]])[0]["version"]
    vectors, ids, metadata = crash_worker.version_data(version) if version else version_zero()
    assert index.ids().tolist() == ids
    picks = [0, len(ids) // 2, len(ids) - 1]
    assert index.get_metadata([ids[i] for i in picks]) == [metadata[i] for i in picks]
    np.testing.assert_array_equal(np.asarray(index._f32[: len(ids)]), vectors)
    assert index.search(vectors[picks], 1).ids[:, 0].tolist() == [ids[i] for i in picks]
    return version


def hidden_leftovers(path: Path) -> list[str]:
    """Hidden entries beside `path`, except the lock files (empty, kept on purpose: see utils.files)."""
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock"))


@pytest.mark.parametrize("fallback", [False, True], ids=["exchange", "two-renames"])
def test_sigkill_at_random_moments_of_repeated_saves(tmp_path, fallback):
    path = tmp_path / "ix"
    save_version_zero(path)
    worker = Worker(path, "random", "1234", *(["fallback"] if fallback else []))
    seen = []
    deadline = time.monotonic() + TIME_BUDGET_S / 2
    try:
        while len(seen) < RANDOM_KILLS // 2 and time.monotonic() < deadline:
            assert worker.kill_once() == ["killed"]
            seen.append(version_of(path))
    finally:
        worker.close()
    assert len(seen) >= 15, f"only {len(seen)} kills fit in the time budget (a save takes {worker.save_s:.3f} s)"
    assert {1, 2} <= set(seen) <= {0, 1, 2}, seen  # kills landed after finished saves too
    load_index(path).save(path)  # the next save clears what the kills left beside the index
    assert hidden_leftovers(path) == []


@pytest.mark.parametrize("fallback", [False, True], ids=["exchange", "two-renames"])
def test_sigkill_at_every_file_system_step_of_a_save(tmp_path, fallback):
    path = tmp_path / "ix"
    save_version_zero(path)
    worker = Worker(path, "steps", *(["fallback"] if fallback else []))
    versions = []
    try:
        while True:
            outcome, step = worker.kill_once()
            assert outcome in ("killed", "finished"), (outcome, step)
            versions.append(version_of(path))
            if outcome == "finished":
                break
            if versions[-1] != 0:
                save_version_zero(path)
    finally:
        worker.close()
    assert len(versions) >= 20  # a save makes at least this many file system calls
    assert versions[0] == 0 and versions[-1] == 1  # killed before anything happened / a full save
    assert set(versions) == {0, 1}
