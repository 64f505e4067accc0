"""Rows kept in files: ScratchRows (a growable array in a file of its own, for rows too many for
RAM) and RowFile (scattered rows of such a file, or of a saved .npy, read with pread).

A FlatIndex keeps the array kinds named in ``on_disk`` here (typically the float32 originals
of a binary cascade: 15 GiB at 10M x 384, read only for the few candidates being rescored).
The file is memory-mapped; growing extends the file and maps it again, so views handed out
earlier stay valid (the old mapping still covers its rows) and no row is copied. The file is
deleted when its ScratchRows is collected; mappings still open keep their pages (POSIX).

A rescoring pass reads its candidates through a RowFile rather than the mapping: touching a
mapped row makes its whole page (a 2 MiB folio on file systems with large folios) part of the
process's resident memory, so a few thousand scattered reads would pull gigabytes of the file
into RSS; pread copies just the rows.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import socket
import stat
import tempfile
import time
import uuid
import weakref
from pathlib import Path

import numpy as np

from embedrank import _kernels
from embedrank.errors import IndexFormatError, InvalidValueError, MissingFileError

__all__ = ["RowFile", "ScratchRows", "advise_random", "copy_rows", "sweep_stale_scratch"]

COPY_BLOCK_BYTES = 64 << 20  # rows moved per step by copy_rows: bounded RAM for any array size


def _unlink(path: str, owner: int, lock_fd: int = -1) -> None:
    if os.getpid() != owner:  # a forked child exiting must not delete its parent's file
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    finally:
        if lock_fd >= 0:
            _LOCK_FDS.discard(lock_fd)
            os.close(lock_fd)


# The lock descriptors of this process's ScratchRows. A forked child closes its copies (the
# parent's locks stay: they belong to the parent's descriptors too), so a long-lived child
# does not keep a killed parent's file locked, i.e. unsweepable, for its whole life.
_LOCK_FDS: set[int] = set()


def _close_inherited_locks() -> None:
    for fd in list(_LOCK_FDS):
        try:
            os.close(fd)
        except OSError:
            pass
    _LOCK_FDS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_inherited_locks)


def _host_tag() -> str:
    """This machine's name as it goes into scratch file names (letters and digits only): a
    shared folder (NFS) is swept only of this host's files, whose locks this host can see."""
    return "".join(c for c in socket.gethostname() if c.isalnum())[:32] or "host"


# Locked scratch files: embedrank-<kind>-<host>-<hex>.lk.rows. Only these are ever swept; a
# file made without its lock (a file system without flock) is named without ".lk".
LOCKED_SUFFIX = ".lk.rows"
STALE_NEW_SECONDS = 60.0  # a hidden file still being made is this young at most


def sweep_stale_scratch(folder: Path, keep: Path | None = None) -> list[Path]:
    """Deletes the scratch files in `folder` whose owner is gone (a process killed outright
    cannot delete its own); returns them. Every live ScratchRows holds an exclusive flock on
    its file, which the kernel releases when its process dies, so a file whose lock can be
    taken has no owner. Only this host's locked files (see LOCKED_SUFFIX) of this user are
    considered, and hidden ones being made only when older than STALE_NEW_SECONDS."""
    removed = []
    host = _host_tag()
    candidates = [(p, False) for p in folder.glob(f"embedrank-*-{host}-*{LOCKED_SUFFIX}")]
    candidates += [(p, True) for p in folder.glob(f".embedrank-*-{host}-*{LOCKED_SUFFIX}.new")]
    for path, hidden in candidates:
        if path == keep:
            continue
        try:
            info = os.lstat(path)  # before opening: a FIFO or device planted here must not block us
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
                continue
            if hidden and time.time() - info.st_mtime < STALE_NEW_SECONDS:
                continue
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue  # gone meanwhile, a link, or not ours to read
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                continue  # swapped for something else between lstat and open
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # its owner is alive (or locks do not work here)
            try:
                os.unlink(path)
                removed.append(path)
            except OSError:
                pass  # gone meanwhile, or a folder we may not delete from
        finally:
            os.close(fd)
    return removed


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

    directory: an existing folder (None: the system's temporary folder, which may be a tmpfs,
    i.e. RAM: pass a folder on a disk for arrays bigger than memory); the file is
    ``embedrank-<kind>-<host>-<random>.lk.rows``, readable by its owner only, and is removed when this
    object is collected; one left behind by a process killed outright is removed by the next
    ScratchRows made in the same folder (see :func:`sweep_stale_scratch`).
    random_reads: searches read scattered rows (see :func:`advise_random`).
    """

    def __init__(self, directory: str | os.PathLike | None, kind: str, dtype, width: int, capacity: int,
                 random_reads: bool = False) -> None:
        folder = Path(tempfile.gettempdir() if directory is None else directory)
        if not folder.is_dir():
            raise MissingFileError(f"scratch_dir {str(folder)!r} is not an existing folder")
        name = f"embedrank-{kind}-{_host_tag()}-{uuid.uuid4().hex}"
        self.dtype = np.dtype(dtype)
        self.width = int(width)
        self.random_reads = random_reads
        self._allocated = 0  # rows backed by real disk blocks (see allocate)
        # Made under a hidden name, locked, then renamed: a sweeping process never sees this file
        # under its final name unlocked. The lock lives as long as this object (or its process).
        partial = folder / f".{name}{LOCKED_SUFFIX}.new"
        lock_fd = os.open(partial, os.O_CREAT | os.O_EXCL | os.O_RDWR | getattr(os, "O_CLOEXEC", 0)
                          | getattr(os, "O_NOFOLLOW", 0), 0o600)  # embeddings: not for other users to read
        try:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
            except OSError:
                locked = False  # a file system without flock: a name the sweep never matches
            self.path = folder / (name + (LOCKED_SUFFIX if locked else ".rows"))
            os.rename(partial, self.path)
        except BaseException:
            os.close(lock_fd)
            _unlink(str(partial), os.getpid())
            raise
        _LOCK_FDS.add(lock_fd)
        self._finalizer = weakref.finalize(self, _unlink, str(self.path), os.getpid(), lock_fd)
        sweep_stale_scratch(folder, keep=self.path)
        self.array: np.memmap | None = None
        self.grow(capacity)
        # opened now: the rows stay readable through this descriptor whatever happens to the name
        self.reader = RowFile(self.path, 0, self.dtype, self.width, self.capacity)

    @property
    def capacity(self) -> int:
        return 0 if self.array is None else self.array.shape[0]

    def grow(self, capacity: int) -> np.ndarray:
        """Extends the file to `capacity` rows (never shrinks) and returns the new mapping."""
        capacity = max(int(capacity), self.capacity, 1)
        if self.array is not None and capacity == self.capacity:
            return self.array
        nbytes = capacity * self.width * self.dtype.itemsize
        try:
            os.truncate(self.path, nbytes)  # sparse: no disk used until written (allocate reserves it)
        except OSError as exc:
            raise _no_room(exc, nbytes, capacity, self.path) from None
        self.array = np.memmap(self.path, dtype=self.dtype, mode="r+", shape=(capacity, self.width))
        if getattr(self, "reader", None) is not None:
            self.reader.n_rows = capacity
        if self.random_reads:
            advise_random(self.array)
        return self.array

    def allocate(self, rows: int) -> None:
        """Reserves disk blocks for the first `rows` rows before they are written: a full disk
        (or a file size limit) then raises OSError here, instead of killing the process with
        SIGBUS when a store through the mapping finds no block to land in."""
        rows = min(int(rows), self.capacity)
        if rows <= self._allocated:
            return
        nbytes = rows * self.width * self.dtype.itemsize
        fd = os.open(self.path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
        try:
            os.posix_fallocate(fd, 0, nbytes)
        except OSError as exc:
            raise _no_room(exc, nbytes, rows, self.path) from None
        finally:
            os.close(fd)
        self._allocated = rows

    def close(self) -> None:
        """Drops the mapping and deletes the file now."""
        self.array = None
        self._finalizer()


def _no_room(exc: OSError, nbytes: int, rows: int, path: Path) -> OSError:
    return OSError(exc.errno, f"cannot reserve {nbytes:,} bytes for {rows:,} rows of scratch in {path.parent} "
                              f"({os.strerror(exc.errno)}); free space there or pass another scratch_dir")


class RowFile:
    """Rows [n_rows, width] of `dtype` stored contiguously from byte `offset` of the file at
    `path`, read with pread (an open descriptor: the file may be renamed or replaced meanwhile
    and this still reads the one it opened)."""

    def __init__(self, path: str | os.PathLike, offset: int, dtype, width: int, n_rows: int) -> None:
        self.path = str(path)
        self.offset, self.dtype, self.width, self.n_rows = int(offset), np.dtype(dtype), int(width), int(n_rows)
        self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        self._finalizer = weakref.finalize(self, os.close, self._fd)

    @classmethod
    def of(cls, array: np.memmap) -> RowFile:
        """Call it when the mapping is made (under the index's lock): it opens the file by name."""
        """The file behind a memory-mapped 2-D array (np.memmap or np.load(mmap_mode=...))."""
        return cls(array.filename, array.offset, array.dtype, array.shape[1], array.shape[0])

    def take(self, rows: np.ndarray, num_threads: int | None = None) -> np.ndarray:
        """array[rows] -> [len(rows), width] (rows: int64 in [0, n_rows))."""
        if self._fd < 0:
            raise InvalidValueError(f"{self.path}: this RowFile is closed")
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        out = np.empty((rows.size, self.width), dtype=self.dtype)
        status = _kernels.read_rows(self._fd, self.offset, self.n_rows, rows, out.view(np.uint8),
                                    0 if num_threads is None else num_threads)
        if status == -1:
            raise IndexFormatError(f"{self.path}: the file ends before row {int(rows.max())} (truncated?)")
        if status:
            raise OSError(status, f"reading rows of {self.path}: {os.strerror(status)}")
        return out

    def close(self) -> None:
        self._finalizer()
        self._fd = -1  # its number may be reused by the next open: never read through it again


def copy_rows(dst: np.ndarray, src: np.ndarray, rows: np.ndarray | int) -> None:
    """dst[:m] = src[rows] (rows: int64 [m]) or dst[:rows] = src[:rows] (an int), in blocks of
    about COPY_BLOCK_BYTES, so a memory-mapped source or destination is never copied whole."""
    count = rows if isinstance(rows, (int, np.integer)) else len(rows)
    step = max(1, COPY_BLOCK_BYTES // max(1, src.strides[0] if src.ndim else 1))
    for start in range(0, int(count), step):
        stop = min(int(count), start + step)
        dst[start:stop] = src[start:stop] if isinstance(rows, (int, np.integer)) else src[rows[start:stop]]
