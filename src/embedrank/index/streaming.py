"""Building an index from more vectors than fit in RAM: one batch in memory at a time.

``add_npy`` reads a .npy file [n, dim] through a memory map; ``add_batches`` takes any
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
    """Adds the rows of the .npy file `path` ([n, dim] float32 or float64) to `index`,
    `batch_rows` at a time through a read-only memory map; returns the rows added.

    ids: None (fresh int ids) or n ids (a list or array, which may itself be memory-mapped).
    A file that is not a readable 2-D .npy array raises FormatError naming it.
    """
    batch_rows = check_positive_int(batch_rows, "batch_rows")
    path = Path(path)
    try:
        rows = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError, SyntaxError) as exc:
        raise FormatError(f"{path}: not a readable .npy file ({type(exc).__name__}: {exc})") from None
    if rows.ndim != 2:
        raise FormatError(f"{path}: expected a 2-D array [n, dim], got shape {rows.shape}")
    if ids is not None and len(ids) != rows.shape[0]:
        raise InvalidValueError(f"got {len(ids)} ids for the {rows.shape[0]} rows of {path}")

    def batches():
        for start in range(0, rows.shape[0], batch_rows):
            stop = min(rows.shape[0], start + batch_rows)
            chunk = np.asarray(rows[start:stop])  # one batch paged in; index.add copies what it keeps
            yield chunk if ids is None else (ids[start:stop], chunk)

    return add_batches(index, batches())
