"""The kernels' default thread count ("all cores") follows the process's CPU affinity, as
embedrank.utils.threads.available_cores() does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from embedrank import _kernels
from embedrank.utils.threads import available_cores

ROOT = Path(__file__).resolve().parents[2]


def test_default_threads_equal_available_cores():
    assert _kernels.default_num_threads() == available_cores()


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no sched_setaffinity on this OS")
def test_default_threads_follow_a_narrowed_affinity_mask():
    code = ("import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
            "from embedrank import _kernels; print(_kernels.default_num_threads())")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "1"
