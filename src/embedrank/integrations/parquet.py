"""Embeddings stored as Parquet: read back, checked, and added to an index in chunks.

A path is one ``.parquet`` file or a folder of them (read in name order; names starting with
"." or "_" are skipped: that is where unfinished writes and a folder's settings live). Each
row holds one vector:

* ``id`` (the ``id_column``): integers or strings, no nulls;
* ``embedding`` (the ``vector_column``): ``fixed_size_list<T>[d]`` (what
  :func:`embedrank.integrations.ray.embed_dataset` writes), or ``list<T>`` / ``large_list<T>``
  with every row of d values (what Ray's ``Dataset.write_parquet`` makes of a tensor column);
  T is float32 (precision "float32"), int8 ("int8", "binary") or uint8 ("uint8", "ubinary");
* ``window`` (optional, integers): chunked documents are stored one row per window, the
  document's id repeated and ``window`` = 0, 1, ... within it (``start`` and ``end``, the
  window's character span, may follow; they are not read here).

Every file must agree on the id kind, the vector type and d. A file that breaks any of
this raises :class:`~embedrank.errors.FormatError` naming the file and the column; a d
other than the one the caller expects (``dim``, an index's dimension) raises
:class:`~embedrank.errors.InvalidValueError`, again naming both. Needs pyarrow (the ``ray``
extra has it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedrank.errors import FormatError, InvalidValueError, MissingDependencyError, MissingFileError
from embedrank.utils.checks import check_positive_int

__all__ = ["EmbeddingBatch", "add_parquet", "iter_embeddings", "parquet_files", "read_embeddings"]

ID_COLUMN = "id"
VECTOR_COLUMN = "embedding"
WINDOW_COLUMN = "window"
DEFAULT_BATCH_ROWS = 65536


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.compute
        import pyarrow.parquet
    except ImportError:
        raise MissingDependencyError("reading embeddings from Parquet needs pyarrow: pip install 'embedrank[ray]' "
                                     "(or pip install pyarrow)") from None
    return pyarrow


@dataclass
class EmbeddingBatch:
    """Up to ``batch_rows`` rows of one file.

    ids: [n] int64, or object (str); vectors: [n, d] float32, int8 or uint8; windows: [n]
    int64 for a chunked file, else None; file: the file they come from.
    """

    ids: np.ndarray
    vectors: np.ndarray
    windows: np.ndarray | None
    file: Path


@dataclass(frozen=True)
class _Layout:
    """What one file's schema says: id kind, vector value type, d (None: a variable-length
    list type, checked on the rows), chunked or not."""

    id_kind: str
    dtype: np.dtype
    width: int | None
    windowed: bool


def parquet_files(path: str | os.PathLike) -> list[Path]:
    """The Parquet files of `path` (itself, when a file), in name order; a folder without
    any gives []."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise MissingFileError(f"{path} does not exist")
    return sorted(f for f in path.iterdir()
                  if f.suffix == ".parquet" and not f.name.startswith((".", "_")) and f.is_file())


def _open(file: Path):
    pa = _pyarrow()
    try:
        return pa.parquet.ParquetFile(file)
    except (pa.ArrowInvalid, OSError) as error:
        raise FormatError(f"{file}: not a readable Parquet file ({error})") from None


def _layout(file: Path, schema, id_column: str, vector_column: str) -> _Layout:
    pa = _pyarrow()
    names = schema.names
    for column in (id_column, vector_column):
        if column not in names:
            raise FormatError(f"{file}: no column {column!r} (it has {', '.join(map(repr, names))})")
    id_type = schema.field(id_column).type
    if pa.types.is_integer(id_type):
        id_kind = "int"
    elif pa.types.is_string(id_type) or pa.types.is_large_string(id_type):
        id_kind = "str"
    else:
        raise FormatError(f"{file}: column {id_column!r} has type {id_type}; expected integers or strings")
    vector_type = schema.field(vector_column).type
    if isinstance(vector_type, pa.ExtensionType):  # Ray's tensor column when ray is imported
        vector_type = vector_type.storage_type
    if pa.types.is_fixed_size_list(vector_type):
        width = vector_type.list_size
    elif pa.types.is_list(vector_type) or pa.types.is_large_list(vector_type):
        width = None
    else:
        raise FormatError(f"{file}: column {vector_column!r} has type {vector_type}; expected a list of float32, "
                          "int8 or uint8 values per row (one vector per row)")
    value_type = vector_type.value_type
    dtypes = {pa.float32(): np.float32, pa.int8(): np.int8, pa.uint8(): np.uint8}
    if value_type not in dtypes:
        raise FormatError(f"{file}: column {vector_column!r} holds {value_type} values; expected float32, int8 "
                          "or uint8")
    if width == 0:
        raise FormatError(f"{file}: column {vector_column!r} holds vectors of 0 values")
    windowed = WINDOW_COLUMN in names
    if windowed and not pa.types.is_integer(schema.field(WINDOW_COLUMN).type):
        raise FormatError(f"{file}: column {WINDOW_COLUMN!r} has type {schema.field(WINDOW_COLUMN).type}; "
                          "expected integers")
    return _Layout(id_kind, np.dtype(dtypes[value_type]), width, windowed)


def _agree(first: tuple[Path, _Layout], file: Path, layout: _Layout, id_column: str, vector_column: str) -> None:
    """Raises when `file`'s schema differs from the first file's."""
    first_file, expected = first
    if layout.id_kind != expected.id_kind:
        raise FormatError(f"{file}: column {id_column!r} holds {layout.id_kind} ids but {first_file} holds "
                          f"{expected.id_kind} ids")
    if layout.dtype != expected.dtype:
        raise FormatError(f"{file}: column {vector_column!r} holds {layout.dtype} vectors but {first_file} holds "
                          f"{expected.dtype} vectors")
    if layout.windowed != expected.windowed:
        has, lacks = (file, first_file) if layout.windowed else (first_file, file)
        raise FormatError(f"{has} has a {WINDOW_COLUMN!r} column (chunked documents) but {lacks} has none")


def _vectors(file: Path, array, column: str, layout: _Layout) -> np.ndarray:
    """One record batch's vector column -> [n, d] numpy (rows of a list column checked)."""
    pa = _pyarrow()
    if isinstance(array, pa.ExtensionArray):
        array = array.storage
    if array.null_count:
        raise FormatError(f"{file}: column {column!r} has {array.null_count} null rows")
    n = len(array)
    if layout.width is not None:
        width = layout.width
    else:
        lengths = pa.compute.list_value_length(array).to_numpy(zero_copy_only=False)
        width = int(lengths[0]) if n else 0
        if n and (lengths != width).any():
            raise FormatError(f"{file}: column {column!r} has rows of {int(lengths.min())} to {int(lengths.max())} "
                              "values; every vector must have the same length")
        if n and width == 0:
            raise FormatError(f"{file}: column {column!r} holds vectors of 0 values")
    values = array.flatten()
    if values.null_count:
        raise FormatError(f"{file}: column {column!r} has {values.null_count} null values inside its vectors")
    return values.to_numpy(zero_copy_only=False).astype(layout.dtype, copy=False).reshape(n, width)


def _ids(file: Path, array, column: str, layout: _Layout) -> np.ndarray:
    if array.null_count:
        raise FormatError(f"{file}: column {column!r} has {array.null_count} null ids")
    if layout.id_kind == "int":
        return array.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    return np.asarray(array.to_pylist(), dtype=object)


def _check_width(file: Path, column: str, width: int, dim: int | None, first: tuple[Path, int] | None) -> None:
    if dim is not None and width != dim:
        raise InvalidValueError(f"{file}: column {column!r} holds vectors of {width} values, expected {dim}")
    if first is not None and width != first[1]:
        raise FormatError(f"{file}: column {column!r} holds vectors of {width} values but {first[0]} holds "
                          f"vectors of {first[1]}")


def _checked_files(path, id_column: str, vector_column: str) -> list[tuple[Path, int, _Layout]]:
    """(file, row count, layout) of every file, schemas checked against each other before any
    row is read (each file is opened for its footer and closed again)."""
    files = parquet_files(path)
    if not files:
        raise FormatError(f"{path} holds no .parquet files")
    checked = []
    first = None
    for file in files:
        parquet = _open(file)
        try:
            layout = _layout(file, parquet.schema_arrow, id_column, vector_column)
            rows = parquet.metadata.num_rows
        finally:
            parquet.close()
        if first is None:
            first = (file, layout)
        else:
            _agree(first, file, layout, id_column, vector_column)
        checked.append((file, rows, layout))
    return checked


def iter_embeddings(path: str | os.PathLike, batch_rows: int = DEFAULT_BATCH_ROWS, *, dim: int | None = None,
                    id_column: str = ID_COLUMN, vector_column: str = VECTOR_COLUMN) -> Iterator[EmbeddingBatch]:
    """Streams the rows of `path` (a file or a folder, see the module docstring) as
    :class:`EmbeddingBatch` es of at most `batch_rows` rows, never more than one batch (and
    one Parquet row group's columns) in memory. Every file's schema is checked before the
    first batch comes; the rows of a list-typed vector column as they are read. dim: the
    vector length to expect (None: the first file's)."""
    batch_rows = check_positive_int(batch_rows, "batch_rows")
    dim = check_positive_int(dim, "dim", allow_none=True)
    files = _checked_files(path, id_column, vector_column)
    for _, batch in _batches(files, batch_rows, dim, id_column, vector_column):
        yield batch


def _batches(files: list, batch_rows: int, dim: int | None, id_column: str,
             vector_column: str) -> Iterator[tuple[int, EmbeddingBatch]]:
    """(index of the file in `files`, batch) for every batch of rows of the checked files;
    one file open at a time."""
    first_width: tuple[Path, int] | None = None  # the first file that showed its d, and d
    for position, (file, _, layout) in enumerate(files):
        if layout.width is not None:
            _check_width(file, vector_column, layout.width, dim, first_width)
            first_width = first_width or (file, layout.width)
        names = [id_column, vector_column] + ([WINDOW_COLUMN] if layout.windowed else [])
        parquet = _open(file)
        try:
            for batch in _read_batches(file, parquet.iter_batches(batch_size=batch_rows, columns=names)):
                ids = _ids(file, batch.column(id_column), id_column, layout)
                vectors = _vectors(file, batch.column(vector_column), vector_column, layout)
                if len(ids) and layout.width is None:
                    _check_width(file, vector_column, vectors.shape[1], dim, first_width)
                    first_width = first_width or (file, vectors.shape[1])
                windows = None
                if layout.windowed:
                    window_column = batch.column(WINDOW_COLUMN)
                    if window_column.null_count:
                        raise FormatError(f"{file}: column {WINDOW_COLUMN!r} has {window_column.null_count} "
                                          "null rows")
                    windows = window_column.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
                yield position, EmbeddingBatch(ids, vectors, windows, file)
        finally:
            parquet.close()


def _read_batches(file: Path, batches: Iterator) -> Iterator:
    """`batches` with a damaged file's read errors turned into FormatError naming it."""
    pa = _pyarrow()
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowInvalid, OSError) as error:
            raise FormatError(f"{file}: cannot be read ({error})") from None
        yield batch


def read_embeddings(path: str | os.PathLike, *, dim: int | None = None, id_column: str = ID_COLUMN,
                    vector_column: str = VECTOR_COLUMN) -> tuple[np.ndarray, np.ndarray]:
    """All the rows of `path` as (ids, vectors): ids [n] int64 or object (str), vectors [n, d]
    float32, int8 or uint8, in file order. Streams the files into one preallocated array.

    A repeated id (a repeated (id, window) pair in a chunked file) raises FormatError naming
    it and the files holding it; for chunked files the ids repeat once per window (read the
    ``window`` column with :func:`iter_embeddings`)."""
    dim = check_positive_int(dim, "dim", allow_none=True)
    files = _checked_files(path, id_column, vector_column)
    total = sum(rows for _, rows, _ in files)
    layout = files[0][2]
    ids = np.empty(total, dtype=np.int64 if layout.id_kind == "int" else object)
    windows = np.zeros(total, dtype=np.int64)
    owner = np.empty(total, dtype=np.int64)  # file of each row, for error messages
    vectors = None
    row = 0
    for position, batch in _batches(files, DEFAULT_BATCH_ROWS, dim, id_column, vector_column):
        n = len(batch.ids)
        if vectors is None:
            vectors = np.empty((total, batch.vectors.shape[1]), dtype=batch.vectors.dtype)
        ids[row:row + n] = batch.ids
        vectors[row:row + n] = batch.vectors
        if batch.windows is not None:
            windows[row:row + n] = batch.windows
        owner[row:row + n] = position
        row += n
    if vectors is None:  # files without rows
        width = layout.width
        if width is None:
            raise FormatError(f"{path}: no rows, so the vector length of column {vector_column!r} is unknown")
        _check_width(files[0][0], vector_column, width, dim, None)
        vectors = np.empty((0, width), dtype=layout.dtype)
    _check_unique(ids, windows if layout.windowed else None, owner, [file for file, _, _ in files], id_column)
    return ids, vectors


def _check_unique(ids: np.ndarray, windows: np.ndarray | None, owner: np.ndarray, files: list[Path],
                  id_column: str) -> None:
    if len(ids) < 2:
        return
    keys = ids if windows is None else np.asarray([f"{i!r}#{w}" for i, w in zip(ids.tolist(), windows.tolist())],
                                                  dtype=object)
    order = np.argsort(keys, kind="stable")
    ranked = keys[order]
    same = np.flatnonzero(ranked[1:] == ranked[:-1])
    if not len(same):
        return
    first = same[0]
    key = ranked[first]
    holders = sorted({str(files[owner[order[j]]]) for j in range(first, len(ranked)) if ranked[j] == key})
    what = f"id {ids[order[first]]!r}" if windows is None else \
        f"id {ids[order[first]]!r} window {int(windows[order[first]])}"
    raise FormatError(f"column {id_column!r}: {what} appears more than once ({len(same)} repeats in all), "
                      f"in {', '.join(holders)}")


def add_parquet(index, path: str | os.PathLike, batch_rows: int = DEFAULT_BATCH_ROWS, *,
                id_column: str = ID_COLUMN, vector_column: str = VECTOR_COLUMN) -> int:
    """Adds the float32 vectors of `path` to `index` (a FlatIndex, HnswIndex...) under their
    ids, `batch_rows` rows per ``index.add``, holding one batch at a time; returns the rows
    added.

    Rows of a chunked file are added under the str id ``f"{id}#{window}"``. int8 or binary
    files raise InvalidValueError before anything is added (an index takes float32 vectors
    and quantizes them itself: ``FlatIndex(dim, precision="int8")``); so do a schema or
    dimension mismatch in any file. An id the index already holds raises from index.add, with
    the batches before it already added.
    """
    batch_rows = check_positive_int(batch_rows, "batch_rows")
    dim = getattr(index, "dim", None)
    files = _checked_files(path, id_column, vector_column)
    for file, _, layout in files:
        if layout.dtype != np.float32:
            raise InvalidValueError(f"{file}: column {vector_column!r} holds {layout.dtype} vectors; an index takes "
                                    "float32 vectors and quantizes them itself (embed with precision='float32' "
                                    "and create the index with precision='int8' or 'binary')")
        if layout.width is not None and dim is not None and layout.width != dim:
            _check_width(file, vector_column, layout.width, dim, None)
    added = 0
    for _, batch in _batches(files, batch_rows, dim, id_column, vector_column):
        ids = batch.ids
        if batch.windows is not None:
            ids = [f"{i}#{w}" for i, w in zip(ids.tolist(), batch.windows.tolist())]
        index.add(batch.vectors, ids=ids)
        added += len(batch.vectors)
    return added
