"""Writing a whole directory so that readers see the old one or the new one, never a mix.

One helper serves every folder embedrank writes (an index, a saved Retriever, an exported
model): the content is written into a hidden temporary sibling ``.NAME.TAG-XXXX``, every file
and the folder are fsynced, and the folder is swapped into place with one atomic
``renameat2(RENAME_EXCHANGE)`` where the OS and file system offer it. Elsewhere the old folder
is renamed aside to ``.NAME.old-XXXX`` and the new one renamed in; a crash between those two
renames leaves the path missing, and :func:`recover_directory` (called by the next save or
load) moves the old folder back when the caller's check says it is whole.

Writes of one path are serialized across threads and processes by an OS lock
(``fcntl.flock``) on a hidden lock file beside it, ``.NAME.lock``: a writer holds it
exclusively for its whole write (clean-up of leftovers, the new folder, the swap), so a second
writer waits (or, with a timeout, raises :class:`LockTimeoutError`). Readers that must see one whole
folder hold it shared while they read (:func:`read_lock`). The kernel drops the lock when its
holder dies, even by SIGKILL, so a lock file left behind is only an empty file that the next
writer or reader locks again; it is never removed, because removing a lock file that another
process has open would let two holders in.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import hashlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from embedrank.errors import EmbedrankError, InvalidValueError

__all__ = ["LockTimeoutError", "ensure_directory", "exchange", "fsync_path", "fsync_tree", "leftover_siblings",
           "lock_path", "read_lock", "recover_directory", "write_directory", "write_lock"]


class LockTimeoutError(EmbedrankError, TimeoutError):
    """Another thread or process held a folder's lock for longer than the caller would wait."""

# Leftovers are named ".NAME.TAG-XXXX": "old" for a folder moved aside, the caller's tag for
# one being written.
OLD_TAG = "old"


def fsync_path(path: Path, directory: bool = False) -> None:
    """fsync one file (or, with directory=True, one directory's entries)."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under `root`, `root` last."""
    for folder, subfolders, files in os.walk(root, topdown=False):
        for name in files:
            file = Path(folder) / name
            if not file.is_symlink():
                fsync_path(file)
        for name in subfolders:
            fsync_path(Path(folder) / name, directory=True)
    fsync_path(root, directory=True)


# -- atomic exchange of two directories (Linux renameat2) ------------------------------------
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _load_renameat2():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_renameat2 = _load_renameat2()


def exchange(a: Path, b: Path) -> bool:
    """Atomically swaps two existing paths; False when the OS or file system cannot."""
    if _renameat2 is None:
        return False
    result = _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(code, f"cannot swap {a} and {b}: {os.strerror(code)}")


# -- leftovers -------------------------------------------------------------------------------
def _hidden_prefix(path: Path, tag: str) -> str:
    """``.NAME.TAG-``; a NAME too long to leave room for the suffix within the file system's
    255-byte limit is cut and made unique again with a hash of the whole name."""
    name = path.name
    if len(os.fsencode(name)) > 200:
        digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:12]
        name = os.fsdecode(os.fsencode(name)[:160]).rstrip("\ufffd") + "~" + digest
    return f".{name}.{tag}-"


def leftover_siblings(path: Path, tag: str) -> list[Path]:
    """The hidden siblings ``.NAME.TAG-*`` that earlier writes of `path` left behind."""
    prefix = _hidden_prefix(path, tag)
    return sorted(p for p in path.parent.iterdir() if p.name.startswith(prefix)) if path.parent.is_dir() else []


def recover_directory(path: Path, is_whole: Callable[[Path], bool]) -> None:
    """When `path` is missing but a write stopped between its two renames, moves the newest
    folder set aside back, provided `is_whole(folder)` says it is complete."""
    if os.path.lexists(path):
        return
    for aside in reversed(leftover_siblings(path, OLD_TAG)):
        if not is_whole(aside):
            continue
        try:
            os.rename(aside, path)
        except OSError:
            continue
        return


# -- the lock beside a folder ---------------------------------------------------------------
_LOCK_POLL_S = 0.01  # how often a waiter with a timeout retries


def lock_path(path: Path) -> Path:
    """The lock file of `path`: ``.NAME.lock`` beside it (long names shortened as for temporaries)."""
    path = Path(path).absolute()
    return path.parent / _hidden_prefix(path, "lock")[:-1]


_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


@contextlib.contextmanager
def _flock(path: Path, mode: int, timeout: float | None, create: bool) -> Iterator[bool]:
    """Holds flock `mode` on the lock file of `path`; yields False (and holds nothing) when the
    file cannot be opened and `create` is False or the folder is not writable."""
    if timeout is not None and (isinstance(timeout, bool) or not timeout >= 0):
        raise InvalidValueError(f"a lock timeout must be None or a number >= 0, got {timeout!r}")
    file = lock_path(path)
    try:
        fd = os.open(file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o666)
    except OSError as exc:
        # A read-only folder (or one that does not exist) cannot be written by anyone else
        # through this lock either; a reader goes on without it.
        if create or exc.errno not in (errno.EACCES, errno.EROFS, errno.ENOENT, errno.EPERM, errno.ELOOP):
            raise
        yield False
        return
    try:
        try:
            if timeout is None:
                fcntl.flock(fd, mode)
            else:
                deadline = time.monotonic() + timeout
                while True:
                    try:
                        fcntl.flock(fd, mode | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            raise LockTimeoutError(f"{path}: another thread or process kept it locked "
                                                   f"({file}) for more than {timeout} s") from None
                        time.sleep(_LOCK_POLL_S)
        except OSError as exc:
            # a file system without flock (some network mounts): go on unlocked, as before locks
            if exc.errno not in _NO_LOCKS:
                raise
            locked = False
        else:
            locked = True
        yield locked
    finally:
        os.close(fd)  # closing the only descriptor of this open file releases the lock


def write_lock(path, timeout: float | None = None):
    """Context manager: the exclusive lock of `path` (a writer's); LockTimeoutError after `timeout` s."""
    return _flock(Path(path).absolute(), fcntl.LOCK_EX, timeout, create=True)


def read_lock(path, timeout: float | None = None):
    """Context manager: the shared lock of `path`, held while reading its files so that no write
    swaps or removes them meanwhile (yields False, holding nothing, in a folder nobody can write)."""
    return _flock(Path(path).absolute(), fcntl.LOCK_SH, timeout, create=False)


# -- the write -------------------------------------------------------------------------------
def write_directory(path, write: Callable[[Path], None], *, tag: str = "tmp",
                    is_whole: Callable[[Path], bool] | None = None,
                    check_replaceable: Callable[[Path], None] | None = None,
                    timeout: float | None = None) -> Path:
    """Writes the folder at `path` through `write(work_folder)` and swaps it into place.

    write: fills a fresh empty folder (beside `path`, so the renames stay on one file
    system). is_whole: tells a complete folder of this kind (used to recover one left aside
    by a crash). check_replaceable: raises when an existing `path` must not be replaced.
    Leftover temporary folders of earlier writes are removed. On any exception in `write`
    the temporary folder is removed and `path` is untouched. Writes of one path run one at a
    time across threads and processes (see the module docstring); timeout: seconds to wait
    for another writer or reader of `path` (None: as long as it takes), then
    LockTimeoutError with nothing changed. Returns the absolute path.
    """
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    with write_lock(path, timeout):
        return _write_locked(path, write, tag, is_whole, check_replaceable)


def ensure_directory(path, write: Callable[[Path], None], is_whole: Callable[[Path], bool], *, tag: str = "tmp",
                     timeout: float | None = None) -> Path:
    """The folder at `path`, written once: when `is_whole(path)` already holds it is returned as
    it is; otherwise it is written as write_directory writes (a temporary sibling swapped into
    place). Two threads or processes asking at once: one writes while the other waits on the
    lock, then finds the folder whole and returns it. Returns the absolute path."""
    path = Path(path).absolute()
    if is_whole(path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with write_lock(path, timeout):
        recover_directory(path, is_whole)
        if is_whole(path):
            return path
        return _write_locked(path, write, tag, is_whole, None)


def _write_locked(path: Path, write, tag: str, is_whole, check_replaceable) -> Path:
    if is_whole is not None:
        recover_directory(path, is_whole)
    if check_replaceable is not None:
        check_replaceable(path)
    stale = leftover_siblings(path, tag) + (leftover_siblings(path, OLD_TAG) if os.path.lexists(path) else [])
    for leftover in stale:
        shutil.rmtree(leftover, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix=_hidden_prefix(path, tag), dir=path.parent))
    try:
        write(work)
        fsync_tree(work)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if os.path.lexists(path) and exchange(work, path):
        fsync_path(path.parent, directory=True)
        shutil.rmtree(work, ignore_errors=True)
        return path
    aside = None
    if os.path.lexists(path):
        aside = path.parent / f"{_hidden_prefix(path, OLD_TAG)}{uuid.uuid4().hex[:12]}"
        os.rename(path, aside)
    try:
        os.rename(work, path)
    except BaseException:
        if aside is not None:
            os.rename(aside, path)
        shutil.rmtree(work, ignore_errors=True)
        raise
    fsync_path(path.parent, directory=True)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    return path
