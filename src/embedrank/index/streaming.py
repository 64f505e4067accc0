"""Building an index from more vectors than fit in RAM: one batch in memory at a time.

``add_npy`` reads a .npy file [n, dim] a batch at a time; ``add_batches`` takes any
iterable of arrays (or (ids, array) pairs), e.g. a generator. Parquet files written by
``embedrank.integrations.ray`` stream through ``embedrank.integrations.parquet.add_parquet``.
With ``FlatIndex(..., on_disk=("float32",))`` the index itself keeps only its codes in RAM.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from embedrank.errors import FormatError, InvalidTypeError, InvalidValueError
from embedrank.utils.checks import check_positive_int

__all__ = ["add_batches", "add_npy", "DEFAULT_BATCH_ROWS"]

DEFAULT_BATCH_ROWS = 65536  # 96 MiB of float32 at 384 dimensions


def add_batches(index, batches: Iterable) -> int:
    """Calls ``index.add`` once per item of `batches` (a float array [n, dim], or a pair
    (ids, array)); returns the rows added. An error leaves the earlier batches added."""
    added = 0
    for number, batch in enumerate(batches):
        ids = None
        if isinstance(batch, tuple):
            if len(batch) != 2:
                raise InvalidTypeError(f"batch {number}: expected an array or (ids, array), got a tuple of {len(batch)}")
            ids, batch = batch
        added += len(index.add(batch, ids=ids))
    return added


def add_npy(index, path: str | os.PathLike, batch_rows: int = DEFAULT_BATCH_ROWS, *, ids=None) -> int:
    """Adds the rows of the .npy file `path` ([n, dim], a float dtype, C order) to `index`,
    `batch_rows` at a time; returns the rows added.

    The rows are read with plain reads, not a memory map: a file that another process
    truncates during the build then raises FormatError (rows added so far stay added), where
    a mapping would kill this process with SIGBUS.
    ids: None (fresh int ids) or n ids (a list or array, which may itself be memory-mapped).
    A file that is not a readable 2-D float .npy array raises FormatError naming it.
    """
    batch_rows = check_positive_int(batch_rows, "batch_rows")
    path = Path(path)
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise FormatError(f"{path}: not a readable .npy file ({type(exc).__name__}: {exc})") from None
    with handle:
        shape, dtype = _npy_header(handle, path)
        n = shape[0]
        if ids is not None and len(ids) != n:
            raise InvalidValueError(f"got {len(ids)} ids for the {n} rows of {path}")
        row_bytes = shape[1] * dtype.itemsize
        needed = handle.tell() + n * row_bytes
        size = os.fstat(handle.fileno()).st_size
        if size < needed:
            raise FormatError(f"{path}: {size} bytes, but its header promises {n} rows of {shape[1]} {dtype} "
                              f"({needed} bytes): truncated?")

        def batches():
            for start in range(0, n, batch_rows):
                stop = min(n, start + batch_rows)
                data = handle.read((stop - start) * row_bytes)
                if len(data) != (stop - start) * row_bytes:
                    raise FormatError(f"{path}: ended at row {start + len(data) // row_bytes} of {n} while "
                                      f"reading (truncated by another process?); rows before {start} were added")
                chunk = np.frombuffer(data, dtype=dtype).reshape(stop - start, shape[1])
                yield chunk if ids is None else (ids[start:stop], chunk)

        return add_batches(index, batches())


def _npy_header(handle, path: Path) -> tuple[tuple[int, int], np.dtype]:
    """(shape, dtype) of the .npy file open at `handle`, left positioned at its data."""
    from numpy.lib import format as npy

    try:
        version = npy.read_magic(handle)
        if version == (1, 0):
            shape, fortran_order, dtype = npy.read_array_header_1_0(handle)
        elif version in ((2, 0), (3, 0)):
            shape, fortran_order, dtype = npy.read_array_header_2_0(handle)
        else:
            version = None
    except (OSError, ValueError, EOFError, SyntaxError) as exc:
        raise FormatError(f"{path}: not a readable .npy file ({type(exc).__name__}: {exc})") from None
    if version is None:
        raise FormatError(f"{path}: not a readable .npy file (unknown .npy format version)")
    if len(shape) != 2:
        raise FormatError(f"{path}: expected a 2-D array [n, dim], got shape {shape}")
    if dtype.kind != "f" or dtype.hasobject:
        raise FormatError(f"{path}: expected float vectors, got dtype {dtype}")
    if fortran_order and shape[0] > 1 and shape[1] > 1:
        raise FormatError(f"{path}: the array is stored in Fortran (column) order; save it with "
                          "np.ascontiguousarray first, so that rows can be read one batch at a time")
    return shape, dtype
