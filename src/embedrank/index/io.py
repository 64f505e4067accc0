"""Saving and loading indexes, outside the class hierarchy (as faiss's index_io does).

Each index class registers its manifest type name here when it is defined
(``BaseIndex.__init_subclass__``); :func:`load_index` reads the manifest and asks the
registry for the class, importing a built-in class's module on first use (so reading a flat
index never imports hnswlib). This module imports no index class, so there is no cycle.
"""

from __future__ import annotations

import importlib
import sqlite3
import tokenize
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from embedrank.errors import IndexFormatError, InvalidTypeError, InvalidValueError
from embedrank.index.ids import IdMap
from embedrank.index.metadata import METADATA_FILE, MetadataStore
from embedrank.index.storage import MANIFEST, VECTOR_KINDS, read_manifest, recover_index, write_index
from embedrank.utils.files import read_lock

if TYPE_CHECKING:
    from embedrank.index.base import BaseIndex

__all__ = ["index_types", "load_index", "register_index_type", "save_index"]

_REGISTRY: dict[str, type] = {}
# Where the built-in classes live, so a saved index finds its class before anything imported it.
_BUILTIN_MODULES = {"FlatIndex": "embedrank.index.flat", "HNSWIndex": "embedrank.index.hnsw",
                    "LexicalIndex": "embedrank.index.lexical",
                    "PgVectorIndex": "embedrank.integrations.pgvector"}


def register_index_type(type_name: str, cls: type) -> None:
    """Makes `cls` the class that load_index builds for manifests of type `type_name`."""
    if not type_name or not isinstance(type_name, str):
        raise InvalidValueError(f"an index type name must be a non-empty str, got {type_name!r}")
    known = _REGISTRY.get(type_name)
    if known is not None and known is not cls and known.__qualname__ != cls.__qualname__:
        raise InvalidValueError(f"index type {type_name!r} is already registered by {known.__module__}.{known.__qualname__}")
    _REGISTRY[type_name] = cls


def index_types() -> list[str]:
    """The type names load_index can read (registered, or built in and importable)."""
    return sorted(set(_REGISTRY) | set(_BUILTIN_MODULES))


def _index_class(type_name: str, directory: Path) -> type:
    if type_name not in _REGISTRY and type_name in _BUILTIN_MODULES:
        importlib.import_module(_BUILTIN_MODULES[type_name])
    cls = _REGISTRY.get(type_name)
    if cls is None:
        raise IndexFormatError(f"{directory / MANIFEST}: unknown index type {type_name!r} "
                               f"(known: {', '.join(index_types())})")
    return cls


def save_index(index: BaseIndex, path, timeout: float | None = None) -> Path:
    """Writes `index` as a directory at `path` (see BaseIndex.save); returns the absolute path.

    timeout: seconds to wait for another save or load of `path` (None: no limit)."""
    with index._lock.write():
        index._prepare_save()
    with index._lock.read():
        manifest = {"type": index._type_name, "dim": index._dim, "count": len(index._idmap),
                    "config": index._config(), **index._idmap.state(), "embedrank_version": _version()}

        def write_files(directory: Path) -> list[str]:
            names = index._idmap.save(directory)
            index._metadata.save(directory / METADATA_FILE)
            names.append(METADATA_FILE)
            names.extend(index._save_payload(directory))
            return names

        return write_index(path, write_files, manifest, timeout=timeout)


def load_index(path, mmap: bool | tuple = True, *, verify: bool = True, timeout: float | None = None) -> BaseIndex:
    """Loads an index directory written by ``save`` (its class from the manifest).

    mmap=True memory-maps the flat vector files (read only when searched); a tuple of kinds
    from ("float32", "int8", "binary") maps only those FlatIndex arrays and reads the others
    into RAM (e.g. ``("float32",)``: codes in RAM, originals on disk); verify=True (the
    default) checks every file's size and sha256 first. A path that is not an index, or a
    missing, truncated, corrupted, foreign or symlinked file: IndexFormatError naming the file
    (also with verify=False, whatever the damage). The files are read under the shared lock
    of `path`, so a save to the same path (from any process) waits until they are read and
    this load sees the old index or the new one, whole. timeout: seconds to wait for a save in
    progress (None: no limit), then LockTimeoutError.
    """
    mmap = _check_mmap(mmap)
    recover_index(path)
    with read_lock(path, timeout):
        return _load_locked(path, mmap, verify)


def _check_mmap(mmap) -> bool | frozenset:
    if isinstance(mmap, bool):
        return mmap
    if isinstance(mmap, str) or not isinstance(mmap, (tuple, list, set, frozenset)):
        raise InvalidTypeError(f"mmap must be True, False or a tuple of array kinds from {VECTOR_KINDS}, got {mmap!r}")
    unknown = [k for k in mmap if k not in VECTOR_KINDS]
    if unknown:
        raise InvalidValueError(f"mmap names unknown array kinds {unknown}; expected some of {VECTOR_KINDS}")
    return frozenset(mmap)


# What a damaged file can raise from numpy, json, sqlite3 or hnswlib's reader on its way in
# (np.load parses a .npy header with tokenize and ast: TokenError, SyntaxError).
_READ_ERRORS = (OSError, ValueError, KeyError, TypeError, IndexError, EOFError, OverflowError, UnicodeError,
                RuntimeError, MemoryError, RecursionError, SyntaxError, tokenize.TokenError, sqlite3.Error,
                zipfile.BadZipFile)


def _load_locked(path, mmap: bool | frozenset, verify: bool) -> BaseIndex:
    directory, manifest = read_manifest(path, verify=verify, recover=False)
    cls = _index_class(manifest["type"], directory)
    open_reference = getattr(cls, "_open_saved_reference", None)
    if open_reference is not None:  # vectors kept elsewhere (PgVectorIndex: a table): the folder only names them
        return open_reference(directory, manifest)
    if METADATA_FILE not in manifest["files"]:
        raise IndexFormatError(f"{directory / METADATA_FILE}: missing from the manifest's file list")
    try:
        index = cls._load_payload(directory, manifest, mmap)
    except IndexFormatError:
        raise
    except _READ_ERRORS as exc:
        raise IndexFormatError(f"{directory}: cannot load the {manifest['type']} payload "
                               f"({type(exc).__name__}: {exc})") from None
    if index._dim != manifest["dim"]:
        raise IndexFormatError(f"{directory / MANIFEST}: dim {manifest['dim']} but the payload has {index._dim}")
    try:
        index._idmap = IdMap.load(directory, manifest, IndexFormatError)
        index._metadata = MetadataStore.load(directory / METADATA_FILE, IndexFormatError,
                                             live_slots=index._idmap.live_slots())
        if len(index._idmap) != manifest["count"]:
            raise IndexFormatError(f"{directory}: the ids hold {len(index._idmap)} live vectors but the manifest says "
                                   f"count={manifest['count']}")
        index._after_load()
    except IndexFormatError:
        raise
    except _READ_ERRORS as exc:
        raise IndexFormatError(f"{directory}: damaged index ({type(exc).__name__}: {exc})") from None
    return index


def _version() -> str:
    from embedrank import __version__

    return __version__
