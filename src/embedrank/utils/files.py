"""Writing a whole directory so that readers see the old one or the new one, never a mix.

One helper serves every folder embedrank writes (an index, a saved Retriever, an exported
model): the content is written into a hidden temporary sibling ``.NAME.TAG-XXXX``, every file
and the folder are fsynced, and the folder is swapped into place with one atomic
``renameat2(RENAME_EXCHANGE)`` where the OS and file system offer it. Elsewhere the old folder
is renamed aside to ``.NAME.old-XXXX`` and the new one renamed in; a crash between those two
renames leaves the path missing, and :func:`recover_directory` (called by the next save or
load) moves the old folder back when the caller's check says it is whole.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

__all__ = ["exchange", "fsync_path", "fsync_tree", "leftover_siblings", "recover_directory", "write_directory"]

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


# -- the write -------------------------------------------------------------------------------
def write_directory(path, write: Callable[[Path], None], *, tag: str = "tmp",
                    is_whole: Callable[[Path], bool] | None = None,
                    check_replaceable: Callable[[Path], None] | None = None) -> Path:
    """Writes the folder at `path` through `write(work_folder)` and swaps it into place.

    write: fills a fresh empty folder (beside `path`, so the renames stay on one file
    system). is_whole: tells a complete folder of this kind (used to recover one left aside
    by a crash). check_replaceable: raises when an existing `path` must not be replaced.
    Leftover temporary folders of earlier writes are removed. On any exception in `write`
    the temporary folder is removed and `path` is untouched. Returns the absolute path.
    """
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
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
