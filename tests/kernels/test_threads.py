"""Kernels called from several Python threads at once: correct results (the pool serializes
jobs), no deadlock (bounded in time), and the GIL released while a search runs.

Runs in a subprocess so that a deadlock fails this test instead of hanging the whole session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kernels.threads_worker import N_THREADS, ROUNDS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def report():
    env = dict(os.environ)
    env.pop("EMBEDRANK_ISA", None)
    try:
        r = subprocess.run([sys.executable, "-m", "tests.kernels.threads_worker"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=150)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"threaded searches did not finish in 150 s (deadlock?)\n{(error.stderr or b'')[-2000:]}")
    assert r.returncode == 0, f"worker exit code {r.returncode}\n{r.stderr[-3000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_concurrent_searches_finish(report):
    assert report["hung"] == [], f"threads still running after the join timeout: {report}"
    assert report["rounds_done"] == [ROUNDS] * N_THREADS, report


def test_concurrent_searches_give_the_single_threaded_results(report):
    assert report["errors"] == [], report["errors"]


def test_gil_is_released_during_a_search(report):
    assert report["kernel_s"] > 0.05, report  # long enough for the spinner to get scheduled
    assert report["ticks_during_kernel"] > 1000, report
