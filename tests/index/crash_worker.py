"""Child process of test_crash_safety: saves index versions to a path in forked processes and
kills them with SIGKILL, one kill per "go" line read from stdin.

    python -m tests.index.crash_worker PATH random SEED   # each "go": fork a process that saves
                                                          # versions 1, 2, 1, ... in a loop, SIGKILL
                                                          # it after a random delay; prints "killed"
    python -m tests.index.crash_worker PATH steps         # each "go": fork a process that saves
                                                          # version 1 and SIGKILLs itself at its N-th
                                                          # file system call (N = 1, 2, ...); prints
                                                          # "killed N", or "finished N" once a save
                                                          # needs fewer calls
Add "fallback" to save without renameat2 (the two-rename path). The indexes are built once,
before forking, so each kill costs a fork and part of a save rather than a new interpreter.
Prints "ready SECONDS" (the time one save takes) when it is ready for the first "go".
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time
from pathlib import Path

import numpy as np

from embedrank.index import FlatIndex, storage
from embedrank.utils import files

ROWS = 5_000
DIM = 64


def version_data(version: int) -> tuple[np.ndarray, list[str], list[dict]]:
    """Deterministic contents of a version: vectors [ROWS - version, DIM], str ids, metadata."""
    n = ROWS - version  # each version has its own count
    vectors = np.random.default_rng(version).standard_normal((n, DIM)).astype(np.float32)
    ids = [f"v{version}-{i}" for i in range(n)]
    metadata = [{"version": version, "i": i} for i in range(n)]
    return vectors, ids, metadata


def build(version: int) -> FlatIndex:
    vectors, ids, metadata = version_data(version)
    index = FlatIndex(DIM, "int8", "float32")
    index.add(vectors, ids=ids, metadata=metadata)
    return index


def kill_at_step(target: int) -> None:
    """Wraps the file system calls a save makes; the target-th one SIGKILLs the process first."""
    counter = [0]

    def wrap(owner, name):
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            counter[0] += 1
            if counter[0] == target:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(*args, **kwargs)

        setattr(owner, name, wrapper)

    for name in ("rename", "fsync", "mkdir", "open", "replace", "unlink", "rmdir"):
        wrap(os, name)
    wrap(files.shutil, "rmtree")
    wrap(files, "exchange")
    wrap(storage, "sha256_of")
    import builtins

    wrap(builtins, "open")


def in_child(work) -> int:
    """Runs work() in a forked process (which never returns here); returns its pid."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            work()
            code = 0
        finally:
            os._exit(code)
    return pid


def main() -> None:
    path, mode = Path(sys.argv[1]), sys.argv[2]
    if "fallback" in sys.argv[3:]:
        files._renameat2 = None
    indexes = [build(1), build(2)]
    scratch = path.parent / f"{path.name}-timing"
    start = time.perf_counter()
    indexes[0].save(scratch)
    save_s = time.perf_counter() - start
    rng = random.Random(int(sys.argv[3]) if mode == "random" else 0)
    print(f"ready {save_s:.4f}", flush=True)
    step = 0
    # The kill delay is drawn from [0, scale * save_s). Saves in the forked child can be slower
    # than the calibration when the machine is loaded; the child reports each finished save
    # through a pipe and the scale grows while kills keep landing before the second save ends,
    # so that kills also land after finished saves (the test checks both kinds happened).
    scale = 2.5
    while sys.stdin.readline().strip() == "go":
        if mode == "random":
            finished_r, finished_w = os.pipe()

            def save_forever():
                os.close(finished_r)
                turn = 0
                while True:
                    indexes[turn % 2].save(path)
                    os.write(finished_w, b"s")
                    turn += 1

            pid = in_child(save_forever)
            os.close(finished_w)
            time.sleep(rng.uniform(0, scale * save_s))
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            finished = 0
            while chunk := os.read(finished_r, 4096):
                finished += len(chunk)
            os.close(finished_r)
            if finished < 2:
                scale = min(scale * 1.25, 20.0)
            print("killed", flush=True)
        else:
            step += 1

            def save_once():
                kill_at_step(step)
                indexes[0].save(path)

            _, status = os.waitpid(in_child(save_once), 0)
            killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
            if not killed and not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
                print(f"failed {step} status {status}", flush=True)
                return
            print(f"{'killed' if killed else 'finished'} {step}", flush=True)


if __name__ == "__main__":
    main()
