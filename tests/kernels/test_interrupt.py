"""Ctrl-C during a long search is honoured within one block, and the library stays usable.

Each kernel kind runs in a subprocess (interrupt_worker.py) that sizes a search to take about
12 s, sends itself SIGINT after 0.3 s and reports back. Timing is asserted relative to the
subprocess's own estimate of the full run, never as an absolute number.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", params=["float32", "int8"])
def report(request):
    env = dict(os.environ)
    env.pop("EMBEDRANK_ISA", None)
    r = subprocess.run([sys.executable, "-m", "tests.kernels.interrupt_worker", request.param], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"worker exit code {r.returncode}\n{r.stderr[-3000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_ctrl_c_raises_keyboard_interrupt_from_the_kernel_call(report):
    assert report["interrupted"], f"the search ran to the end: {report}"
    assert report["raised_in"] == "_search", f"the interrupt landed outside the kernel call: {report}"


def test_ctrl_c_stops_the_search_long_before_its_end(report):
    assert report["interrupted"]
    assert report["estimated_s"] > 2.0, report
    assert report["elapsed_s"] < 0.5 * report["estimated_s"], report


def test_searches_after_an_interrupt_are_correct(report):
    """A search over many tasks, and a small one that runs as a single task on the calling
    thread: both must give real results, not padding."""
    bad = [name for name in ("small_after_interrupt", "large_after_interrupt", "small_after_large")
           if not report[name]]
    assert not bad, f"wrong results after Ctrl-C: {bad} ({report})"
