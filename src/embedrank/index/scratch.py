"""ScratchRows: a growable [capacity, width] array in a file of its own, for rows too many for RAM.

A FlatIndex keeps the array kinds named in ``on_disk`` here (typically the float32 originals
of a binary cascade: 15 GiB at 10M x 384, read only for the few candidates being rescored).
The file is memory-mapped; growing extends the file and maps it again, so views handed out
earlier stay valid (the old mapping still covers its rows) and no row is copied. The file is
deleted when its ScratchRows is collected; mappings still open keep their pages (POSIX).
"""

from __future__ import annotations

import mmap
import os
import tempfile
import uuid
import weakref
from pathlib import Path

import numpy as np

from embedrank.errors import InvalidValueError

__all__ = ["ScratchRows", "advise_random", "copy_rows"]

COPY_BLOCK_BYTES = 64 << 20  # rows moved per step by copy_rows: bounded RAM for any array size


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def advise_random(array: np.ndarray) -> np.ndarray:
    """Tells the kernel that a memory-mapped array is read at random rows (madvise MADV_RANDOM):
    no readahead, so rescoring 40 candidates reads about 40 pages, not 40 readahead windows
    (less I/O on a cold file, less resident memory). A no-op for an array in RAM."""
    handle = getattr(array, "_mmap", None)
    if handle is not None and hasattr(mmap, "MADV_RANDOM"):
        handle.madvise(mmap.MADV_RANDOM)
    return array


class ScratchRows:
    """A [capacity, width] array of `dtype` backed by a fresh file in `directory`.

    directory: an existing folder (None: the system's temporary folder); the file is
    ``embedrank-<kind>-<random>.rows`` and is removed when this object is collected.
    random_reads: searches read scattered rows (see :func:`advise_random`).
    """

    def __init__(self, directory: str | os.PathLike | None, kind: str, dtype, width: int, capacity: int,
                 random_reads: bool = False) -> None:
        folder = Path(tempfile.gettempdir() if directory is None else directory)
        if not folder.is_dir():
            raise InvalidValueError(f"scratch_dir {str(folder)!r} is not an existing folder")
        self.path = folder / f"embedrank-{kind}-{uuid.uuid4().hex}.rows"
        self.dtype = np.dtype(dtype)
        self.width = int(width)
        self.random_reads = random_reads
        with open(self.path, "xb"):
            pass
        self._finalizer = weakref.finalize(self, _unlink, str(self.path))
        self.array: np.memmap | None = None
        self.grow(capacity)

    @property
    def capacity(self) -> int:
        return 0 if self.array is None else self.array.shape[0]

    def grow(self, capacity: int) -> np.ndarray:
        """Extends the file to `capacity` rows (never shrinks) and returns the new mapping."""
        capacity = max(int(capacity), self.capacity, 1)
        if self.array is not None and capacity == self.capacity:
            return self.array
        os.truncate(self.path, capacity * self.width * self.dtype.itemsize)  # sparse: no disk used until written
        self.array = np.memmap(self.path, dtype=self.dtype, mode="r+", shape=(capacity, self.width))
        if self.random_reads:
            advise_random(self.array)
        return self.array

    def close(self) -> None:
        """Drops the mapping and deletes the file now."""
        self.array = None
        self._finalizer()


def copy_rows(dst: np.ndarray, src: np.ndarray, rows: np.ndarray | int) -> None:
    """dst[:m] = src[rows] (rows: int64 [m]) or dst[:rows] = src[:rows] (an int), in blocks of
    about COPY_BLOCK_BYTES, so a memory-mapped source or destination is never copied whole."""
    count = rows if isinstance(rows, (int, np.integer)) else len(rows)
    step = max(1, COPY_BLOCK_BYTES // max(1, src.strides[0] if src.ndim else 1))
    for start in range(0, int(count), step):
        stop = min(int(count), start + step)
        dst[start:stop] = src[start:stop] if isinstance(rows, (int, np.integer)) else src[rows[start:stop]]
