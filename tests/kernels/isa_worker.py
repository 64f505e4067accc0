"""Runs the ISA grid (isa_grid.py) at the level forced by EMBEDRANK_ISA and saves every output.

Usage: python -m tests.kernels.isa_worker OUT.npz   (from the repository root)
"""

from __future__ import annotations

import sys
import time

import numpy as np


def main(path: str) -> None:
    start = time.perf_counter()
    import embedrank.kernels as K

    from tests.kernels import isa_grid

    out = isa_grid.run_all(K)
    caps = K.capabilities()
    out["capabilities_active"] = np.array(caps["active"])
    out["capabilities_detected"] = np.array(caps["detected"], dtype=str)
    out["elapsed_s"] = np.array(time.perf_counter() - start)
    np.savez(path, **out)


if __name__ == "__main__":
    main(sys.argv[1])
