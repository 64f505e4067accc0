"""HNSWIndex under concurrency: threads searching (with and without filters, different ef)
while others add, upsert and remove, for a bounded time, every result checked."""

from __future__ import annotations

import threading
import time

import numpy as np

from embedrank.bench.datasets import clustered
from embedrank.index import HNSWIndex

DIM = 32
RUN_SECONDS = 5.0


def test_searches_during_adds_and_removes_never_see_removed_ids():
    rng = np.random.default_rng(0)
    pool = clustered(6000, DIM, n_clusters=16, seed=9)
    index = HNSWIndex(DIM, ef_construction=48, num_threads=2)
    index.add(pool[:2000], metadata=[{"part": i % 4} for i in range(2000)])
    known = set(range(2000))  # every id ever added (grows; read by searchers)
    removed_done: set[int] = set()  # ids whose remove() has returned
    errors: list[BaseException] = []
    counts = {"search": 0, "add": 0, "remove": 0}
    stop = threading.Event()
    queries = pool[4000:4100]

    def guarded(fn):
        def run():
            try:
                fn()
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)
                stop.set()
        return run

    def remover():
        order = rng.permutation(2000)  # initial ids only: the adder never touches them
        for start in range(0, 1600, 8):
            if stop.is_set():
                return
            batch = order[start:start + 8].tolist()
            index.remove(batch)
            removed_done.update(batch)
            counts["remove"] += 1

    def adder():
        row = 2000
        while not stop.is_set() and row + 20 <= 4000:
            new = index.add(pool[row:row + 20], metadata=[{"part": 9}] * 20)
            known.update(new.tolist())
            index.add(pool[row + 5:row + 6], ids=[int(new[0])], upsert=True)  # an upsert of its own id
            row += 20
            counts["add"] += 1

    def searcher(seed: int):
        local = np.random.default_rng(seed)
        while not stop.is_set():
            gone = frozenset(removed_done)  # removals finished before this search started
            kind = local.integers(3)
            q = queries[local.integers(0, 90):][:10]
            if kind == 0:
                result = index.search(q, 10, ef=int(local.choice([10, 64, 200])))
                allowed = None
            elif kind == 1:
                allowed = set(local.choice(4000, size=400, replace=False).tolist())
                result = index.search(q, 10, filter=sorted(allowed))
            else:
                result = index.search(q, 10, filter={"part": [0, 9]}, return_metadata=True)
                allowed = None
                assert all(m is None or m["part"] in (0, 9) for row in result.metadata for m in row)
            ids = result.ids[result.ids >= 0].tolist()
            assert not gone.intersection(ids), f"removed ids returned: {sorted(gone.intersection(ids))[:5]}"
            assert set(ids) <= known | set(range(2000, 4000)), "an id that was never added"
            if allowed is not None:
                assert set(ids) <= allowed, "a filtered search returned a disallowed id"
            assert (np.diff(result.scores, axis=1) <= 1e-5).all()  # best first, padding last
            counts["search"] += 1

    threads = [threading.Thread(target=guarded(remover)), threading.Thread(target=guarded(adder)),
               threading.Thread(target=guarded(lambda: searcher(1))), threading.Thread(target=guarded(lambda: searcher(2)))]
    for t in threads:
        t.start()
    time.sleep(RUN_SECONDS)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, repr(errors[0])
    assert counts["search"] > 20 and counts["add"] > 3 and counts["remove"] > 3, counts
    # Final state is consistent: every removed id is gone, everything else is findable.
    assert not any(i in index for i in list(removed_done)[:50])
    assert len(index) == len(known) - len(removed_done)
    result = index.search(queries, 10)
    assert not set(result.ids.ravel().tolist()) & removed_done
