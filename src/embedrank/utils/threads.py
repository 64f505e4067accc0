"""Thread counts: what "all cores" means, and the one validator for ``num_threads`` arguments."""

from __future__ import annotations

import numbers
import os
from embedrank.errors import InvalidValueError

# A ceiling that no real machine reaches but that stops a typo (num_threads=100000) from
# asking onnxruntime or the kernels' pool for that many threads.
MAX_THREADS = 1024


def available_cores() -> int:
    """The number of CPUs this process may run on: its affinity mask (taskset, cgroups
    cpusets) where the OS has one, else os.cpu_count(); at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def check_num_threads(num_threads, name: str = "num_threads") -> int | None:
    """`num_threads` as an int in [1, MAX_THREADS], or None (meaning all available cores).

    A bool, a non-integer or an out-of-range value raises ValueError naming `name`.
    """
    if num_threads is None:
        return None
    if (isinstance(num_threads, bool) or not isinstance(num_threads, numbers.Integral)
            or not 1 <= num_threads <= MAX_THREADS):
        raise InvalidValueError(f"{name} must be a positive integer (at most {MAX_THREADS}) or None, got {num_threads!r}")
    return int(num_threads)


def resolve_num_threads(num_threads, name: str = "num_threads") -> int:
    """check_num_threads, with None resolved to available_cores()."""
    checked = check_num_threads(num_threads, name)
    return available_cores() if checked is None else checked
