"""Child process of test_stress: a writer that saves index versions to one path from a forked
child (SIGKILLed and replaced on request), or a reader that loads the path in a loop and checks
every load is one whole version.

    python -m tests.index.stress_worker write PATH WRITER   # saves versions 10*WRITER + 0, 1, 0, ...
                                                            # from a forked child; each "kill" line on
                                                            # stdin SIGKILLs it and forks another
                                                            # (prints "killed N": saves it finished);
                                                            # "stop" ends it
    python -m tests.index.stress_worker read PATH SECONDS  # loads for SECONDS; prints "ok LOADS
                                                            # VERSIONS..." or "bad MESSAGE"

Writer 1 saves FlatIndex versions, writer 2 HNSWIndex ones, over each other.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from embedrank.index import FlatIndex, HNSWIndex, load_index

DIM = 16


def version_data(version: int) -> tuple[np.ndarray, list[str], list[dict]]:
    """Deterministic contents of a version: vectors [300 + version, DIM], str ids, metadata."""
    n = 300 + version
    vectors = np.random.default_rng(version).standard_normal((n, DIM)).astype(np.float32)
    return vectors, [f"v{version}-{i}" for i in range(n)], [{"version": version, "i": i} for i in range(n)]


def build(version: int):
    vectors, ids, metadata = version_data(version)
    index = FlatIndex(DIM) if version < 20 else HNSWIndex(DIM, M=8, metric="l2")
    index.add(vectors, ids=ids, metadata=metadata)
    return index


def check_whole(path: Path) -> int:
    """Loads `path` and checks it is exactly one version; returns the version."""
    index = load_index(path)
    ids = index.ids().tolist()
    version = index.get_metadata([ids[0]])[0]["version"]
    vectors, want_ids, metadata = version_data(version)
    if ids != want_ids:
        raise AssertionError(f"version {version}: ids differ")
    picks = [0, len(ids) // 2, len(ids) - 1]
    if index.get_metadata([ids[i] for i in picks]) != [metadata[i] for i in picks]:
        raise AssertionError(f"version {version}: metadata differs")
    if isinstance(index, FlatIndex):
        stored = np.asarray(index._f32[: len(ids)])
    else:
        stored = index._graph.vectors(index._idmap.slots_of(np.array(ids, dtype=object)))
    if not np.array_equal(stored, vectors):
        raise AssertionError(f"version {version}: vectors differ")
    return version


def write(path: Path, writer: int) -> None:
    indexes = [build(10 * writer), build(10 * writer + 1)]

    def save_forever(done_w: int) -> None:
        turn = 0
        while True:
            indexes[turn % 2].save(path)
            os.write(done_w, b"s")
            turn += 1

    def start() -> tuple[int, int]:
        done_r, done_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(done_r)
            try:
                save_forever(done_w)
            finally:
                os._exit(1)
        os.close(done_w)
        return pid, done_r

    pid, done_r = start()
    print("ready", flush=True)
    for line in sys.stdin:
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        finished = 0
        while chunk := os.read(done_r, 4096):
            finished += len(chunk)
        os.close(done_r)
        if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
            print(f"bad the saving child ended by itself (status {status})", flush=True)
            return
        if line.strip() != "kill":
            print(f"stopped {finished}", flush=True)
            return
        print(f"killed {finished}", flush=True)
        pid, done_r = start()


def read(path: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    versions: set[int] = set()
    loads = 0
    while time.monotonic() < deadline:
        try:
            versions.add(check_whole(path))
        except Exception:  # noqa: BLE001 - every failure is reported to the test
            print("bad " + traceback.format_exc().replace("\n", " | "), flush=True)
            return
        loads += 1
    print(f"ok {loads} {' '.join(map(str, sorted(versions)))}", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        read(Path(sys.argv[2]), float(sys.argv[3]))
