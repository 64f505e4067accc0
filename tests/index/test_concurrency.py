"""Threads searching while others add, upsert, remove and save: bounded in time, every result
checked (no removed id, exact scores, filters respected), no exception anywhere."""

from __future__ import annotations

import random
import threading
import time

import numpy as np
import pytest

from embedrank.index import FlatIndex, load_index
from embedrank.index.rwlock import ReadWriteLock
from tests.index.reference import clustered, queries_near

DURATION_S = 3.0
DIM = 32
POOL = 8000
START = 2000


@pytest.mark.parametrize("precision, rescore", [("float32", None), ("int8", "float32")])
def test_search_while_adding_removing_upserting_and_saving(tmp_path, precision, rescore):
    pool = clustered(POOL, DIM, seed=30)
    index = FlatIndex(DIM, precision, rescore, oversample=8, compact_threshold=0.1)
    index.add(pool[:START], metadata=[{"parity": i % 2} for i in range(START)])
    added_at = {i: 0.0 for i in range(START)}  # when the add that brought the id in began
    removed_at: dict[int, float] = {}  # when the remove that took the id out returned
    live = set(range(START))
    live_lock = threading.Lock()
    clock_lock = threading.Lock()  # guards iteration over added_at / removed_at while other threads write them
    errors: list[BaseException] = []
    counts = {"searches": 0, "adds": 0, "removes": 0, "upserts": 0, "saves": 0}
    stop = time.monotonic() + DURATION_S

    def guarded(work):
        def run():
            try:
                work()
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)
        return run

    def adder():
        rng = random.Random(1)
        next_id = START
        while time.monotonic() < stop and next_id < POOL:
            n = rng.randint(1, 40)
            ids = list(range(next_id, min(next_id + n, POOL)))
            start = time.monotonic()
            with clock_lock:
                for i in ids:
                    added_at[i] = start
            index.add(pool[ids], ids=ids, metadata=[{"parity": i % 2} for i in ids])
            with live_lock:
                live.update(ids)
            next_id = ids[-1] + 1
            counts["adds"] += 1
            if rng.random() < 0.3:  # upsert the same vectors with new metadata (same parity)
                with live_lock:  # held, so the remover cannot take these ids meanwhile (upsert would re-add them)
                    some = rng.sample(sorted(live), 5)
                    index.add(pool[some], ids=some, metadata=[{"parity": i % 2, "u": 1} for i in some], upsert=True)
                counts["upserts"] += 1
            time.sleep(0.001)

    def remover():
        rng = random.Random(2)
        while time.monotonic() < stop:
            with live_lock:
                if len(live) < 500:
                    victims = []
                else:
                    victims = rng.sample(sorted(live), rng.randint(1, 30))
                    live.difference_update(victims)
            if victims:
                with pytest.raises(KeyError):
                    index.remove([*victims, POOL + 1])  # atomic: nothing removed
                index.remove(victims)
                end = time.monotonic()
                with clock_lock:
                    for i in victims:
                        removed_at[i] = end
                counts["removes"] += 1
            time.sleep(0.002)

    def searcher(seed: int):
        rng = np.random.default_rng(seed)
        while time.monotonic() < stop:
            with clock_lock:
                highest_added = max(added_at)
            queries = queries_near(pool[: highest_added + 1], 4, seed=int(rng.integers(1 << 30)))
            use_filter = rng.random() < 0.5
            begin = time.monotonic()
            result = index.search(queries, 10, filter={"parity": 0} if use_filter else None)
            end = time.monotonic()
            for q, ids, scores in zip(queries, result.ids, result.scores):
                found = ids[ids >= 0]
                assert found.size == 10  # there are always far more than 10 live vectors
                assert len(set(found.tolist())) == found.size
                for i in found.tolist():
                    assert added_at[i] <= end, f"id {i} returned before it was added"
                    assert removed_at.get(i, np.inf) >= begin, f"id {i} returned after its removal"
                    if use_filter:
                        assert i % 2 == 0, f"id {i} does not pass the filter"
                np.testing.assert_allclose(scores, pool[found] @ q, rtol=0, atol=1e-4)
                assert (np.diff(scores) <= 0).all()
            counts["searches"] += 1

    def saver():
        while time.monotonic() < stop:
            time.sleep(0.5)
            begin = time.monotonic()
            path = index.save(tmp_path / "ix")
            snapshot = load_index(path)
            ids = snapshot.ids()
            with clock_lock:
                gone_before = [i for i, at in removed_at.items() if at < begin]
            assert len(snapshot) == ids.size and not np.isin(ids, gone_before).any()
            meta = snapshot.get_metadata(ids[:50])
            assert all(m["parity"] == i % 2 for m, i in zip(meta, ids[:50].tolist()))
            counts["saves"] += 1

    threads = [threading.Thread(target=guarded(adder)), threading.Thread(target=guarded(remover)),
               threading.Thread(target=guarded(saver))]
    threads += [threading.Thread(target=guarded(lambda s=s: searcher(s))) for s in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=DURATION_S + 60)
    assert not any(thread.is_alive() for thread in threads), "a thread hangs (deadlock?)"
    if errors:
        raise errors[0]
    assert counts["searches"] >= 20 and counts["adds"] >= 10 and counts["removes"] >= 10, counts
    assert counts["saves"] >= 1, counts
    with live_lock:
        assert set(index.ids().tolist()) == live
    final = index.search(pool[:50], 5)
    assert not np.isin(final.ids, list(removed_at)).any()


def test_rwlock_readers_share_writers_exclude():
    lock = ReadWriteLock()
    inside = {"readers": 0, "max_readers": 0, "writer": False}
    guard = threading.Lock()
    errors = []
    stop = time.monotonic() + 0.5

    def reader():
        while time.monotonic() < stop:
            with lock.read():
                with guard:
                    if inside["writer"]:
                        errors.append("reader inside with a writer")
                    inside["readers"] += 1
                    inside["max_readers"] = max(inside["max_readers"], inside["readers"])
                time.sleep(0.001)
                with guard:
                    inside["readers"] -= 1

    def writer():
        while time.monotonic() < stop:
            with lock.write():
                with guard:
                    if inside["readers"] or inside["writer"]:
                        errors.append("writer not alone")
                    inside["writer"] = True
                time.sleep(0.001)
                with guard:
                    inside["writer"] = False
            time.sleep(0.001)

    threads = [threading.Thread(target=reader) for _ in range(4)] + [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert not errors and inside["max_readers"] >= 2


def test_rwlock_writer_is_not_starved_and_locks_nest():
    lock = ReadWriteLock()
    acquired = threading.Event()
    stop = threading.Event()

    def busy_reader():
        while not stop.is_set():
            with lock.read():
                time.sleep(0.002)

    readers = [threading.Thread(target=busy_reader) for _ in range(4)]
    for t in readers:
        t.start()

    def writer():
        with lock.write():
            with lock.read():  # a writer may read
                with lock.write():  # and write again
                    acquired.set()

    w = threading.Thread(target=writer)
    w.start()
    assert acquired.wait(5), "the writer starved behind overlapping readers"
    stop.set()
    for t in [*readers, w]:
        t.join(timeout=5)
    with lock.read():
        with lock.read():  # a reader may read again
            with pytest.raises(RuntimeError, match="no upgrades"):
                lock.acquire_write()
    with pytest.raises(RuntimeError, match="without a matching"):
        lock.release_read()
    with pytest.raises(RuntimeError, match="does not hold the write lock"):
        lock.release_write()
