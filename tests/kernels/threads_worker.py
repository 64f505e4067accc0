"""Searches from several Python threads at once (see test_threads.py). Prints one JSON line.

Usage: python -m tests.kernels.threads_worker   (from the repository root)
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np

N_THREADS = 6
ROUNDS = 25
JOIN_TIMEOUT_S = 60.0


def main() -> None:
    import embedrank.kernels as K

    rng = np.random.default_rng(0)
    base = rng.integers(-3, 4, (5000, 40)).astype(np.float32)  # exact scores: results must be identical
    queries = rng.integers(-3, 4, (23, 40)).astype(np.float32)
    quantizer = K.Int8Quantizer().fit(base)
    codes = quantizer.encode(base)
    bits = K.binarize(base)
    hidden = rng.standard_normal((64, 5, 40)).astype(np.float32)
    mask = np.ones((64, 5), np.int64)
    jobs = {
        "float32_row": lambda: K.topk_float32(queries[:2], base, 7),  # Q <= 4: row path
        "float32_panel": lambda: K.topk_float32(queries, base, 7),
        "float32_small": lambda: K.topk_float32(queries[:1], base[:50], 3),  # one task, calling thread
        "float32_allow": lambda: K.topk_float32(queries, base, 7, allow=np.arange(0, 5000, 7)),
        "int8": lambda: K.topk_int8(queries, codes, quantizer, 7),
        "int8_f32": lambda: K.topk_int8(queries, codes, quantizer, 7, query_precision="float32"),
        "hamming": lambda: K.topk_hamming(bits[:9], bits, 7),
        "rescore": lambda: K.rescore(queries, base, np.tile(np.arange(40), (23, 1)), 5),
        "pool": lambda: (K.mean_pool_normalize(hidden, mask),),
        "encode": lambda: (quantizer.encode(base),),
    }
    expected = {name: job() for name, job in jobs.items()}  # one at a time, before the threads
    names = sorted(jobs)
    errors: list[str] = []
    done = [0] * N_THREADS

    def worker(t: int) -> None:
        try:
            for r in range(ROUNDS):
                for name in names[t % len(names):] + names[: t % len(names)]:  # different orders
                    got = jobs[name]()
                    for g, e in zip(got, expected[name]):
                        if not np.array_equal(g, e):
                            errors.append(f"thread {t} round {r}: {name} differs")
                            return
                done[t] += 1
        except Exception as error:  # noqa: BLE001 - reported to the parent
            errors.append(f"thread {t}: {type(error).__name__}: {error}")

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(N_THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(JOIN_TIMEOUT_S)
    hung = [i for i, th in enumerate(threads) if th.is_alive()]
    elapsed = time.perf_counter() - start

    # The GIL is released during a long search: a pure-Python thread keeps running meanwhile.
    big_q = rng.standard_normal((3000, 64)).astype(np.float32)
    big_b = rng.standard_normal((40000, 64)).astype(np.float32)
    ticks = [0]
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            ticks[0] += 1

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    time.sleep(0.05)
    t0 = time.perf_counter()
    before = ticks[0]
    K.topk_float32(big_q, big_b, 10)
    during = ticks[0] - before
    kernel_s = time.perf_counter() - t0
    stop.set()
    spinner.join(5)

    print(json.dumps({"errors": errors[:10], "hung": hung, "rounds_done": done, "elapsed_s": elapsed,
                      "ticks_during_kernel": during, "kernel_s": kernel_s}), flush=True)


if __name__ == "__main__":
    main()
