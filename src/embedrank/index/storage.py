"""The index directory format: manifest.json, checksummed files, atomic save, verified load.

An index is a directory holding ``manifest.json`` and the files it lists::

    {"format": "embedrank-index", "format_version": 2, "type": "FlatIndex" | "HNSWIndex",
     "dim": 384, "count": 1000, "config": {...}, "id_kind": "int" | "str" | null,
     "next_auto_id": 1000, "slot_count": 1000,
     "files": {"ids.npy": {"bytes": 8128, "sha256": "..."}, ...},
     "created": "2026-01-01T00:00:00Z", "embedrank_version": "0.1.0",
     "manifest_sha256": "..."}

``manifest_sha256`` (format_version 2) is the sha256 of the manifest's other fields as
compact, key-sorted, ASCII JSON, so an edited field (a metric changed from "ip" to "l2") is
refused on load like a changed file. format_version 1 (no checksum: written by embedrank
before it) is still read; its fields are validated like version 2's. Every field's type and
range is checked on every load, also with verify=False.

Saving goes through :func:`embedrank.utils.files.write_directory`: everything is written into a
hidden sibling directory (the manifest last), fsynced, and swapped into place. A crash (even
SIGKILL) at any moment leaves either the old or the new index at the path; in the one window
where the path is missing (between the two renames of the fallback), :func:`read_manifest`
moves the verified old directory back. Leftover temporary directories are removed by the next
save to the same path and are otherwise ignored.

Loading checks the format name and version, the index type, and each listed file's size and
sha256; a missing, truncated, corrupted or unlisted file raises :class:`IndexFormatError`
naming the file and what is wrong. Members that are symbolic links are refused (an index
from someone else must not make a load read outside its folder).

Saves of one path are serialized across processes by the lock file beside it (see
:mod:`embedrank.utils.files`), and :func:`embedrank.index.load_index` reads under the same
lock held shared, so a load during a save sees the old index or the new one, whole.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

from embedrank.errors import IndexFormatError, InvalidValueError
from embedrank.utils.files import recover_directory, write_directory, write_lock

__all__ = [
    "VECTOR_KINDS",
    "FORMAT",
    "FORMAT_VERSION",
    "IndexFormatError",
    "MANIFEST",
    "MAX_DIM",
    "check_members",
    "manifest_checksum",
    "read_manifest",
    "recover_index",
    "verify_files",
    "write_index",
]

FORMAT = "embedrank-index"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
CHECKSUM_FIELD = "manifest_sha256"
# The largest vector dimension an index accepts: hnswlib takes a C int, and one vector of
# this size is already 64 MiB of float32.
MAX_DIM = 1 << 24
# The vector arrays a FlatIndex may keep (one .npy file each); load_index(mmap=...) names them.
VECTOR_KINDS = ("float32", "int8", "binary")
_INT64_MAX = (1 << 63) - 1
_SHA256 = re.compile(r"[0-9a-f]{64}")
_HASH_BLOCK = 1 << 22


def manifest_checksum(manifest: dict) -> str:
    """sha256 of every field but the checksum itself, as compact key-sorted ASCII JSON."""
    body = {key: value for key, value in manifest.items() if key != CHECKSUM_FIELD}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


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


def write_index(path, write_files: Callable[[Path], list[str]], manifest: dict, timeout: float | None = None) -> Path:
    """Writes an index directory at `path`, replacing an existing index atomically.

    write_files(directory) writes the files into `directory` (a fresh temporary directory)
    and returns their names; `manifest` gets the format fields, the files' sizes and
    checksums, the creation time and its own checksum added. timeout: seconds to wait for
    another save or load of `path` (None: no limit). Returns the final path.
    """

    def write(work: Path) -> None:
        names = list(write_files(work))
        if MANIFEST in names or len(set(names)) != len(names):
            raise InvalidValueError(f"bad payload file list {names}")
        files = {}
        for name in names:
            file = work / name
            files[name] = {"bytes": file.stat().st_size, "sha256": sha256_of(file)}
        now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        full = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest, "files": files,
                "created": now.isoformat().replace("+00:00", "Z")}
        full[CHECKSUM_FIELD] = manifest_checksum(full)
        with open(work / MANIFEST, "w", encoding="utf-8") as handle:
            json.dump(full, handle, indent=1, sort_keys=True)

    return write_directory(path, write, tag="tmp", is_whole=_is_whole_index, check_replaceable=_check_replaceable,
                           timeout=timeout)


# -- loading ---------------------------------------------------------------------------------
def _is_whole_index(path: Path) -> bool:
    """True for a directory whose manifest parses and whose files all match it."""
    try:
        verify_files(path, _parse_manifest(path))
    except IndexFormatError:
        return False
    return True


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
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise IndexFormatError(f"{file}: unsupported format_version {version!r} "
                               f"(this embedrank reads {', '.join(map(str, READABLE_VERSIONS))})")
    if version >= 2:
        stored = manifest.get(CHECKSUM_FIELD)
        try:
            actual = manifest_checksum(manifest)
        except ValueError:  # NaN or Infinity somewhere: never written by a save
            actual = None
        if not isinstance(stored, str) or stored != actual:
            raise IndexFormatError(f"{file}: checksum mismatch ({CHECKSUM_FIELD}): the manifest was edited or damaged")
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(
            isinstance(name, str) and isinstance(entry, dict) and _is_int(entry.get("bytes"), 0, _INT64_MAX)
            and isinstance(entry.get("sha256"), str) and _SHA256.fullmatch(entry["sha256"])
            for name, entry in files.items()):
        raise IndexFormatError(f"{file}: the 'files' table is missing or malformed")
    for name in files:
        if name != os.path.basename(name) or name in ("", ".", "..", MANIFEST) or "\0" in name:
            raise IndexFormatError(f"{file}: bad file name {name!r} in the 'files' table")
    for field, kind in (("type", str), ("config", dict)):
        if not isinstance(manifest.get(field), kind):
            raise IndexFormatError(f"{file}: field {field!r} is missing or not a {kind.__name__}")
    for field, low, high in (("dim", 1, MAX_DIM), ("count", 0, _INT64_MAX), ("slot_count", 0, _INT64_MAX),
                             ("next_auto_id", 0, _INT64_MAX + 1)):
        if field == "dim" and field in manifest and manifest[field] is None:
            continue  # an index of texts (LexicalIndex); its class refuses null if it holds vectors
        if not _is_int(manifest.get(field), low, high):
            raise IndexFormatError(f"{file}: field {field!r} must be an integer in [{low}, {high}], "
                                   f"got {manifest.get(field)!r}")
    kind = manifest.get("id_kind")
    if kind not in (None, "int", "str"):
        raise IndexFormatError(f"{file}: field 'id_kind' must be \"int\", \"str\" or null, got {kind!r}")
    if manifest["count"] > manifest["slot_count"]:
        raise IndexFormatError(f"{file}: count={manifest['count']} is more than slot_count={manifest['slot_count']}")
    if kind is None and manifest["slot_count"]:
        raise IndexFormatError(f"{file}: slot_count={manifest['slot_count']} but no id kind")
    return manifest


def _is_int(value, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def check_members(path: Path) -> None:
    """Refuses an index folder holding symbolic links or anything but regular files."""
    with os.scandir(path) as entries:
        entries = list(entries)
    for entry in entries:
        if entry.is_symlink():
            raise IndexFormatError(f"{path / entry.name}: a symbolic link inside an index folder (refused: "
                                   "an index's files must be its own)")
        if not entry.is_file(follow_symlinks=False):
            raise IndexFormatError(f"{path / entry.name}: not a regular file (an index folder holds only files)")


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


def recover_index(path) -> None:
    """When a save was killed between its two renames (path missing), puts the old index back,
    under the writers' lock. Call without holding the lock of `path`."""
    path = Path(path).absolute()
    if not os.path.lexists(path) and path.parent.is_dir():
        try:
            with write_lock(path):
                recover_directory(path, _is_whole_index)
        except OSError:
            pass  # a folder this process cannot write: nothing to recover from here


def read_manifest(path, *, verify: bool = True, recover: bool = True) -> tuple[Path, dict]:
    """The index directory's absolute path and its checked manifest (files verified if asked).

    recover: first :func:`recover_index` (pass False under the lock of `path`: the caller
    recovered before taking it). Read under :func:`embedrank.utils.files.read_lock` to see a
    folder no save swaps meanwhile.
    """
    path = Path(path).absolute()
    if recover:
        recover_index(path)
    if not path.exists():
        raise IndexFormatError(f"{path} is not an embedrank index: the path does not exist")
    if not path.is_dir():
        raise IndexFormatError(f"{path} is not an embedrank index: it is a file, not a directory")
    check_members(path)
    manifest = _parse_manifest(path)
    if verify:
        verify_files(path, manifest)
    return path, manifest
