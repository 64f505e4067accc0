"""The index directory format: manifest.json, checksummed files, atomic save, verified load.

An index is a directory holding ``manifest.json`` and the files it lists::

    {"format": "embedrank-index", "format_version": 1, "type": "FlatIndex" | "HNSWIndex",
     "dim": 384, "count": 1000, "config": {...}, "id_kind": "int" | "str" | null,
     "next_auto_id": 1000, "slot_count": 1000,
     "files": {"ids.npy": {"bytes": 8128, "sha256": "..."}, ...},
     "created": "2026-01-01T00:00:00Z", "embedrank_version": "0.1.0"}

Saving goes through :func:`embedrank.utils.files.write_directory`: everything is written into a
hidden sibling directory (the manifest last), fsynced, and swapped into place. A crash (even
SIGKILL) at any moment leaves either the old or the new index at the path; in the one window
where the path is missing (between the two renames of the fallback), :func:`read_manifest`
moves the verified old directory back. Leftover temporary directories are removed by the next
save to the same path and are otherwise ignored.

Loading checks the format name and version, the index type, and each listed file's size and
sha256; a missing, truncated, corrupted or unlisted file raises :class:`IndexFormatError`
naming the file and what is wrong.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from embedrank.errors import IndexFormatError, InvalidValueError
from embedrank.utils.files import recover_directory, write_directory

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


def write_index(path, write_files: Callable[[Path], list[str]], manifest: dict) -> Path:
    """Writes an index directory at `path`, replacing an existing index atomically.

    write_files(directory) writes the files into `directory` (a fresh temporary directory)
    and returns their names; `manifest` gets the format fields, the files' sizes and
    checksums, and the creation time added. Returns the final path.
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
        with open(work / MANIFEST, "w", encoding="utf-8") as handle:
            json.dump(full, handle, indent=1, sort_keys=True)

    return write_directory(path, write, tag="tmp", is_whole=_is_whole_index, check_replaceable=_check_replaceable)


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
    recover_directory(path, _is_whole_index)
    if not path.exists():
        raise IndexFormatError(f"{path} is not an embedrank index: the path does not exist")
    if not path.is_dir():
        raise IndexFormatError(f"{path} is not an embedrank index: it is a file, not a directory")
    manifest = _parse_manifest(path)
    if verify:
        verify_files(path, manifest)
    return path, manifest
