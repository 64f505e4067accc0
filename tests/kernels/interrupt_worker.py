"""Ctrl-C during a long search (see test_interrupt.py). Prints one JSON line.

Usage: python -m tests.kernels.interrupt_worker {float32|int8}   (from the repository root)

Sizes the search from a timed calibration run so that the full search would take about
TARGET_S seconds, sends itself SIGINT after DELAY_S, and reports whether KeyboardInterrupt was
raised, how long the call took, the estimated full time, and whether searches made afterwards
(one small enough to run in a single task, one spread over the pool) are still correct.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

import numpy as np

TARGET_S = 12.0
# The signal must land inside the kernel, after the Python-side preparation of the queries
# (folding in the quantizer and quantizing them takes a few tenths of a second for int8).
DELAY_S = {"float32": 0.3, "int8": 1.5}


def main(kind: str) -> None:
    from embedrank.kernels import Int8Quantizer, topk_float32, topk_int8

    rng = np.random.default_rng(0)
    dim = 128
    seeds = rng.standard_normal((256, dim), dtype=np.float32)
    if kind == "float32":
        base = rng.standard_normal((60_000, dim), dtype=np.float32)

        def search(q, n_rows, k):
            return topk_float32(q, base[:n_rows], k)
    else:
        # Many rows, so that the per-query work in Python (folding, quantizing) stays a small
        # part of the call and the signal lands inside the kernel.
        base = None
        codes = rng.integers(-127, 128, (1_000_000, dim), dtype=np.int8)
        quantizer = Int8Quantizer(rng.normal(0, 0.1, dim), rng.uniform(0.005, 0.01, dim))

        def search(q, n_rows, k):
            return topk_int8(q, codes[:n_rows], quantizer, k, query_precision="int8")
    n_all = 60_000 if base is not None else codes.shape[0]

    # Calibration: the cost of 256 queries over the whole base (the cost is linear in queries).
    search(seeds[:8], n_all, 10)  # warm up the pool
    t = time.perf_counter()
    search(seeds, n_all, 10)
    per_query = (time.perf_counter() - t) / seeds.shape[0]
    n_queries = int(min(400_000, max(4096, TARGET_S / per_query)))
    queries = np.tile(seeds, (n_queries // seeds.shape[0] + 1, 1))[:n_queries]
    estimated = per_query * n_queries

    # Python leaves SIGINT ignored when it starts with SIGINT ignored (a background job of a
    # non-interactive shell): install the default handler, as an interactive run has it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(DELAY_S[kind], lambda: os.kill(os.getpid(), signal.SIGINT))
    interrupted, where = False, None
    start = time.perf_counter()
    timer.start()
    try:
        search(queries, n_all, 10)
    except KeyboardInterrupt as error:
        interrupted = True
        tb = error.__traceback__
        while tb.tb_next is not None:
            tb = tb.tb_next
        where = tb.tb_frame.f_code.co_name  # the Python frame that called the kernel
    elapsed = time.perf_counter() - start
    timer.join()

    def correct(n_rows: int, nq: int) -> bool:
        q = seeds[:nq]
        _, ids = search(q, n_rows, 5)
        if kind == "float32":
            exact = q.astype(np.float64) @ base[:n_rows].astype(np.float64).T
        else:
            decoded = quantizer.decode(codes[:n_rows]).astype(np.float64)
            exact = q.astype(np.float64) @ decoded.T
        # every returned id must be a real row among the ~best (int8 scores are approximate)
        if (ids < 0).any():
            return False
        best = np.sort(exact, axis=1)[:, ::-1][:, :5]
        got = np.take_along_axis(exact, ids, axis=1)
        spread = np.abs(exact).max()
        return bool((np.abs(np.sort(got, axis=1)[:, ::-1] - best) <= 0.05 * spread).all())

    after = {
        "small_after_interrupt": correct(100, 1),  # one task: runs on the calling thread
        "large_after_interrupt": correct(60_000, 16),  # many tasks on the pool
        "small_after_large": correct(100, 1),
    }
    print(json.dumps({"kind": kind, "interrupted": interrupted, "raised_in": where, "elapsed_s": elapsed, "estimated_s": estimated,
                      "n_queries": n_queries, "per_query_s": per_query, **after}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
