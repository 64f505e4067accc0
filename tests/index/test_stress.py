"""Two processes saving one index path, two loading it, writers SIGKILLed at random moments:
every load is one whole version (old or new), and what the kills leave never breaks the next
save. The processes are tests/index/stress_worker.py."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

import embedrank
from embedrank.index import load_index
from tests.conftest import REPO
from tests.index import stress_worker

pytestmark = pytest.mark.slow

READ_S = 20.0
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(embedrank.__file__).parents[1]), str(REPO)]))


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.index.stress_worker", *args], cwd=REPO, env=ENV,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_writers_killed_at_random_and_readers_always_see_a_whole_index(tmp_path):
    path = tmp_path / "ix"
    stress_worker.build(0).save(path)
    writers = [start("write", str(path), str(w)) for w in (1, 2)]
    readers = []
    try:
        for writer in writers:
            line = writer.stdout.readline().strip()
            assert line == "ready", (line, writer.stderr.read())
        readers = [start("read", str(path), str(READ_S)) for _ in range(2)]
        rng = random.Random(16)
        finished = kills = 0
        deadline = time.monotonic() + READ_S
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.05, 0.6))
            writer = rng.choice(writers)
            writer.stdin.write("kill\n")
            writer.stdin.flush()
            line = writer.stdout.readline().split()
            assert line[:1] == ["killed"], " ".join(line)  # "bad ...": a save failed by itself
            finished += int(line[1])
            kills += 1
        reports = [reader.communicate(timeout=120)[0].strip() for reader in readers]
    finally:
        for process in writers + readers:
            if process.poll() is None:
                process.communicate(input="stop\n" if process in writers else None, timeout=60)
    for report in reports:
        assert report.startswith("ok"), report
    loads = sum(int(report.split()[1]) for report in reports)
    seen = {int(v) for report in reports for v in report.split()[2:]}
    assert kills >= 10 and finished >= 5 and loads >= 10, (kills, finished, loads)
    assert seen & {10, 11} and seen & {20, 21}, seen  # both writers' indexes were read
    assert stress_worker.check_whole(path) in {0, 10, 11, 20, 21}
    load_index(path).save(path)  # what the kills left beside the index does not break a save
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".") and p.name != ".ix.lock"] == []
