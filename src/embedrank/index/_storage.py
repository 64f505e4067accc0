"""The index directory format: manifest.json, checksummed files, atomic save, verified load.

An index is a directory holding ``manifest.json`` and the files it lists::

    {"format": "embedrank-index", "format_version": 1, "type": "FlatIndex" | "HNSWIndex",
     "dim": 384, "count": 1000, "config": {...}, "id_kind": "int" | "str" | null,
     "next_auto_id": 1000, "slot_count": 1000,
     "files": {"ids.npy": {"bytes": 8128, "sha256": "..."}, ...},
     "created": "2026-01-01T00:00:00Z", "embedrank_version": "0.1.0"}

Saving writes everything into a hidden sibling directory ``.NAME.tmp-XXXX`` (each file and
the directory fsynced, the manifest last), then swaps it into place: with one atomic
``renameat2(RENAME_EXCHANGE)`` where the OS and file system offer it, otherwise by moving the
old directory aside to ``.NAME.old-XXXX`` and the new one into place. A crash (even SIGKILL)
at any moment leaves either the old or the new index at the path; in the one window where
the path is missing (between the two renames of the fallback), :func:`read_manifest` moves
the verified old directory back. Leftover temporary directories are removed by the next save
to the same path and are otherwise ignored.

Loading checks the format name and version, the index type, and each listed file's size and
sha256; a missing, truncated, corrupted or unlisted file raises :class:`IndexFormatError`
naming the file and what is wrong.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime
import errno
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "IndexFormatError",
    "MANIFEST",
    "read_manifest",
    "verify_files",
    "write_index",
]

FORMAT = "embedrank-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_HASH_BLOCK = 1 << 22


class IndexFormatError(ValueError):
    """A path that is not an embedrank index, or an index with a missing or damaged file."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _fsync_path(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tmp_siblings(path: Path, tag: str) -> list[Path]:
    return sorted(path.parent.glob(f".{path.name}.{tag}-*"))


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


def _exchange(a: Path, b: Path) -> bool:
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


# -- saving ----------------------------------------------------------------------------------
def _check_replaceable(path: Path) -> None:
    """Refuses to replace anything but an embedrank index or an empty directory."""
    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_dir():
        raise IndexFormatError(f"refusing to save over {path}: it exists and is not an index directory")
    if any(path.iterdir()) and not (path / MANIFEST).is_file():
        raise IndexFormatError(f"refusing to save over {path}: it is a non-empty directory without {MANIFEST}")
    if (path / MANIFEST).is_file():
        try:
            manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            manifest = None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise IndexFormatError(f"refusing to save over {path}: its {MANIFEST} is not an embedrank index manifest")


def write_index(path, write_files: Callable[[Path], list[str]], manifest: dict) -> Path:
    """Writes an index directory at `path`, replacing an existing index atomically.

    write_files(directory) writes the files into `directory` (a fresh temporary directory)
    and returns their names; `manifest` gets the format fields, the files' sizes and
    checksums, and the creation time added. Returns the final path.
    """
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    _recover(path)
    _check_replaceable(path)
    for leftover in _tmp_siblings(path, "tmp") + (_tmp_siblings(path, "old") if path.exists() else []):
        shutil.rmtree(leftover, ignore_errors=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        names = list(write_files(tmp))
        if MANIFEST in names or len(set(names)) != len(names):
            raise ValueError(f"bad payload file list {names}")
        files = {}
        for name in names:
            file = tmp / name
            _fsync_path(file)
            files[name] = {"bytes": file.stat().st_size, "sha256": sha256_of(file)}
        now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        full = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest, "files": files,
                "created": now.isoformat().replace("+00:00", "Z")}
        with open(tmp / MANIFEST, "w", encoding="utf-8") as handle:
            json.dump(full, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        _fsync_path(tmp, directory=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if os.path.lexists(path) and _exchange(tmp, path):
        _fsync_path(path.parent, directory=True)
        shutil.rmtree(tmp, ignore_errors=True)
        return path
    aside = None
    if os.path.lexists(path):
        aside = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:12]}"
        os.rename(path, aside)
    os.rename(tmp, path)
    _fsync_path(path.parent, directory=True)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    return path


# -- loading ---------------------------------------------------------------------------------
def _recover(path: Path) -> None:
    """When `path` is missing but a save was cut between its two renames, moves the old back."""
    if os.path.lexists(path):
        return
    for aside in reversed(_tmp_siblings(path, "old")):
        try:
            manifest = _parse_manifest(aside)
            verify_files(aside, manifest)
        except IndexFormatError:
            continue
        try:
            os.rename(aside, path)
        except OSError:
            continue
        return


def _parse_manifest(path: Path) -> dict:
    file = path / MANIFEST
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise IndexFormatError(f"{path} is not an embedrank index: it has no {MANIFEST}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise IndexFormatError(f"{file}: cannot read the manifest ({exc})") from None
    try:
        manifest = json.loads(text)
    except ValueError as exc:
        raise IndexFormatError(f"{file}: not valid JSON ({exc}); the manifest is damaged") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexFormatError(f"{file}: not an embedrank index manifest (format is not {FORMAT!r})")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise IndexFormatError(f"{file}: unsupported format_version {version!r} (this embedrank reads {FORMAT_VERSION})")
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(
            isinstance(name, str) and isinstance(entry, dict) and isinstance(entry.get("bytes"), int)
            and isinstance(entry.get("sha256"), str) for name, entry in files.items()):
        raise IndexFormatError(f"{file}: the 'files' table is missing or malformed")
    for name in files:
        if name != os.path.basename(name) or name in ("", ".", "..", MANIFEST):
            raise IndexFormatError(f"{file}: bad file name {name!r} in the 'files' table")
    for field, kind in (("type", str), ("dim", int), ("count", int), ("config", dict)):
        if not isinstance(manifest.get(field), kind) or isinstance(manifest.get(field), bool):
            raise IndexFormatError(f"{file}: field {field!r} is missing or not a {kind.__name__}")
    return manifest


def verify_files(path: Path, manifest: dict) -> None:
    """Every listed file exists with its size and sha256, and nothing else is there."""
    files = manifest["files"]
    present = {entry.name for entry in path.iterdir()}
    for name, entry in sorted(files.items()):
        file = path / name
        if name not in present or not file.is_file():
            raise IndexFormatError(f"{file}: missing (listed in the manifest)")
        size = file.stat().st_size
        if size != entry["bytes"]:
            raise IndexFormatError(f"{file}: {size} bytes, the manifest says {entry['bytes']} (truncated or replaced)")
        if sha256_of(file) != entry["sha256"]:
            raise IndexFormatError(f"{file}: checksum mismatch (the file is corrupted or replaced)")
    foreign = sorted(present - set(files) - {MANIFEST})
    if foreign:
        raise IndexFormatError(f"{path / foreign[0]}: a file the manifest does not list (foreign files: {foreign})")


def read_manifest(path, *, verify: bool = True) -> tuple[Path, dict]:
    """The index directory's absolute path and its checked manifest (files verified if asked)."""
    path = Path(path).absolute()
    _recover(path)
    if not path.exists():
        raise IndexFormatError(f"{path} is not an embedrank index: the path does not exist")
    if not path.is_dir():
        raise IndexFormatError(f"{path} is not an embedrank index: it is a file, not a directory")
    manifest = _parse_manifest(path)
    if verify:
        verify_files(path, manifest)
    return path, manifest
