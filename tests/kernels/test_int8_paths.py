"""The int8 search has two AVX-512 kernels: AMX tiles when the CPU and the OS allow them, VNNI
otherwise. The ISA grid runs whichever the machine picks; this runs the VNNI one too
(EMBEDRANK_AMX=0) and checks both against exact integer arithmetic."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from embedrank import _kernels

ROOT = Path(__file__).resolve().parents[2]

WORKER = r"""
import json, sys
import numpy as np
from embedrank import _kernels, kernels
rng = np.random.default_rng(7)
bad = []
for d in (1, 3, 4, 63, 64, 65, 97, 384, 385, 1024):
    for nq in (1, 5, 31, 33, 70):
        n = int(rng.integers(40, 600))
        codes = rng.integers(-127, 128, (n, d)).astype(np.int8)
        queries = rng.integers(-127, 128, (nq, d)).astype(np.int8)
        k = min(10, n)
        scores = np.empty((nq, k), np.float32)
        ids = np.empty((nq, k), np.int64)
        _kernels.topk_int8_int8(queries, codes, k, None, scores, ids, 0)
        exact = queries.astype(np.int64) @ codes.astype(np.int64).T
        order = np.lexsort((np.broadcast_to(np.arange(n), exact.shape), -exact), axis=1)[:, :k]
        if not ((ids == order).all() and (scores == np.take_along_axis(exact, order, 1)).all()):
            bad.append([d, nq, n])
print(json.dumps({"bad": bad, "detected": kernels.capabilities()["detected"], "active": kernels.capabilities()["active"]}))
"""


def run(amx: str):
    env = dict(os.environ, EMBEDRANK_AMX=amx)
    env.pop("EMBEDRANK_ISA", None)
    r = subprocess.run([sys.executable, "-c", WORKER], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    import json

    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(_kernels.highest_isa() != "avx512", reason="no AVX-512 on this CPU: only the AVX2/scalar int8 kernels exist")
def test_vnni_kernel_with_amx_turned_off_is_exact():
    result = run("0")
    assert "amx_int8" not in result["detected"]
    assert result["active"] == "avx512"
    assert result["bad"] == []


@pytest.mark.skipif("amx_int8" not in _kernels.detected_features(), reason="AMX is not usable here")
def test_amx_kernel_is_exact():
    result = run("1")
    assert "amx_int8" in result["detected"]
    assert result["bad"] == []
