"""FlatIndex: exact search over float32 vectors, int8 codes or sign bits, with a rescoring cascade.

Precisions (what the first pass scans; all on embedrank's native kernels):

- ``"float32"``: exact inner product (``topk_float32``). Scores are ``q . x``.
- ``"int8"``: per-dimension int8 codes (:class:`~embedrank.kernels.Int8Quantizer`,
  ``topk_int8``); with ``rescore="float32"`` (default) the best ``k * oversample`` are
  rescored exactly against the float32 originals.
- ``"binary"``: sign bits (``binarize``, ``topk_hamming``); the best ``k * oversample``
  by Hamming distance are rescored with the float32 originals (``rescore="float32"``,
  default) or the int8 codes (``rescore="int8"``), or both in turn
  (``rescore="int8+float32"``: the int8 codes keep the best ``k * refine`` for the float32
  pass, so a large binary pool costs few reads of the originals).

Scores: after float32 rescoring (or at precision float32) the exact float32 inner product;
after int8 rescoring ``q . decode(code)`` (float query against dequantized codes); with
``rescore=None`` at precision int8 the int8 kernel's approximation of ``q . decode(code)``
(the query itself quantized to int8); with ``rescore=None`` at precision binary
``dim - 2 * hamming``, the inner product of the ±1 sign vectors (bit set where x > 0).
Results are best first; ties go to the vector added earlier.

Memory: only what the cascade reads is kept: float32 rows when precision or rescore is
float32, int8 codes when precision or rescore is int8, bits at precision binary. The kinds
named in ``on_disk`` (e.g. ``("float32",)``) live in scratch files (:class:`ScratchRows`,
in ``scratch_dir``) instead of RAM, so an index can be built by streaming ``add`` calls
(``embedrank.index.streaming.add_npy``) past the machine's memory. After
``load_index(path, mmap=True)`` every array is memory-mapped read-only from the index
directory (``mmap=("float32",)``: only those kinds; the others are read into RAM); the
float32 originals of a cascade are then only paged in for the candidates being rescored.
The first add, remove-compaction or upsert after such a load copies the mapped arrays into
memory, or into scratch files for the ``on_disk`` kinds (block by block, never whole in RAM).

The int8 quantizer is fitted (per-dimension min-max) on the vectors of the first add unless
a fitted ``quantizer=`` is passed; later vectors outside the fitted range are clipped to it
by the encoder (their int8 scores lose accuracy; a float32 rescore still gives exact scores),
so the first batch should be representative. It is saved with the index.

Removal leaves a tombstone (the row is skipped by every search); the rows are compacted
away on save and whenever tombstones exceed ``compact_threshold`` of the rows. Capacity
grows by doubling, so many small adds cost amortized O(1) copies per row.
"""

from __future__ import annotations

import json
import numbers
import threading
import warnings
from pathlib import Path

import numpy as np

from embedrank.index.base import BaseIndex
from embedrank.index.scratch import RowFile, ScratchRows, advise_random, copy_rows
from embedrank.index.storage import VECTOR_KINDS, IndexFormatError
from embedrank.kernels import Int8Quantizer, binarize, rescore, topk_float32, topk_hamming, topk_int8
from embedrank.errors import InvalidTypeError, InvalidValueError
from embedrank.utils.threads import check_num_threads

__all__ = ["FlatIndex", "DEFAULT_OVERSAMPLE"]

PRECISIONS = VECTOR_KINDS  # what the first pass scans = the arrays an index may keep
RESCORES = ("float32", "int8", "int8+float32", None)
DEFAULT_OVERSAMPLE = {"float32": 1, "int8": 4, "binary": 10}
DEFAULT_REFINE = 4  # int8 -> float32 pool of the three-stage cascade, per result
_ATTRS = {"float32": "_f32", "int8": "_codes", "binary": "_bits"}
_SAVED_CONFIG = {"precision", "rescore", "oversample", "compact_threshold", "refine", "on_disk"}
_MIN_CAPACITY = 256
_FILES = {"float32": "vectors.npy", "int8": "codes.npy", "binary": "bits.npy"}
_QUANTIZER_FILE = "quantizer.json"


def _check_oversample(oversample, name: str = "oversample") -> int:
    if isinstance(oversample, bool) or not isinstance(oversample, numbers.Integral) or oversample < 1:
        raise InvalidValueError(f"{name} must be an integer >= 1, got {oversample!r}")
    return int(oversample)


def _check_kinds(kinds, name: str) -> frozenset:
    """A collection of array kinds ("float32", "int8", "binary") as a frozenset."""
    if isinstance(kinds, str) or not isinstance(kinds, (tuple, list, set, frozenset)):
        raise InvalidTypeError(f"{name} must be a tuple of array kinds from {PRECISIONS}, got {kinds!r}")
    unknown = [k for k in kinds if k not in PRECISIONS]
    if unknown:
        raise InvalidValueError(f"{name} names unknown array kinds {unknown}; expected some of {PRECISIONS}")
    return frozenset(kinds)


class FlatIndex(BaseIndex):
    """Exact or quantized brute-force search; see the module docstring for precisions and scores.

    dim: vector dimension. precision: "float32", "int8" or "binary". rescore: "float32",
    "int8" (binary only) or None (use the first pass's scores); ignored at precision float32.
    oversample: candidates per result for the rescoring pass (default 4 for int8, 10 for
    binary). refine: candidates per result the int8 pass of ``rescore="int8+float32"`` hands
    to the float32 pass (default 4). quantizer: a fitted Int8Quantizer for the int8 codes
    (default: fitted on the first add). compact_threshold: fraction of tombstoned rows that
    triggers a compaction. on_disk: array kinds kept in scratch files rather than RAM (e.g.
    ``("float32",)``; saved with the index). scratch_dir: the folder for those files (None:
    the system's temporary folder; not saved). num_threads: kernel threads (None: all
    cores); not saved. Per-search overrides: ``search(..., oversample=..., rescore=...,
    refine=...)``.
    """

    _type_name = "FlatIndex"

    def __init__(self, dim: int, precision: str = "float32", rescore: str | None = "float32",
                 oversample: int | None = None, *, refine: int = DEFAULT_REFINE,
                 quantizer: Int8Quantizer | None = None, compact_threshold: float = 0.25,
                 on_disk: tuple = (), scratch_dir=None, num_threads: int | None = None) -> None:
        super().__init__(dim)
        if precision not in PRECISIONS:
            raise InvalidValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if rescore not in RESCORES:
            raise InvalidValueError(f"rescore must be one of {RESCORES}, got {rescore!r}")
        if precision == "float32":
            rescore = None  # already exact
        if precision == "int8" and rescore in ("int8", "int8+float32"):
            raise InvalidValueError(f"rescore={rescore!r} needs precision='binary' (int8 candidates are already "
                                    "int8-scored; use rescore='float32')")
        self._refine = _check_oversample(refine, "refine")
        self._precision = precision
        self._rescore = rescore
        self._oversample = DEFAULT_OVERSAMPLE[precision] if oversample is None else _check_oversample(oversample)
        if (isinstance(compact_threshold, bool) or not isinstance(compact_threshold, numbers.Real)
                or not 0 < compact_threshold <= 1):
            raise InvalidValueError(f"compact_threshold must be in (0, 1], got {compact_threshold!r}")
        self._compact_threshold = float(compact_threshold)
        self.num_threads = num_threads
        self._keep_float32 = precision == "float32" or rescore in ("float32", "int8+float32")
        self._keep_codes = precision == "int8" or rescore in ("int8", "int8+float32")
        self._on_disk = _check_kinds(on_disk, "on_disk")
        kept = self._layout()
        if not self._on_disk <= kept.keys():
            raise InvalidValueError(f"on_disk names {sorted(self._on_disk - kept.keys())}, which this index does not "
                                    f"keep (precision={precision!r}, rescore={rescore!r} keep {sorted(kept)})")
        if scratch_dir is not None and not Path(scratch_dir).is_dir():
            raise InvalidValueError(f"scratch_dir {str(scratch_dir)!r} is not an existing folder")
        self._scratch_dir = scratch_dir
        self._scratch: dict[str, ScratchRows] = {}  # kind -> its scratch file, for the on_disk kinds
        self._row_file: tuple[np.ndarray, RowFile] | None = None  # (mapped float32 array, its pread reader)
        self._row_file_lock = threading.Lock()
        if quantizer is not None:
            if not isinstance(quantizer, Int8Quantizer):
                raise InvalidTypeError(f"quantizer must be an Int8Quantizer, got {type(quantizer).__name__}")
            if not self._keep_codes:
                raise InvalidValueError(f"quantizer is only used with int8 codes (precision='int8' or rescore='int8'); "
                                 f"this index has precision={precision!r}, rescore={rescore!r}")
            if not quantizer.is_fitted:
                raise InvalidValueError("quantizer is not fitted: call quantizer.fit(sample) first")
            if quantizer.dim != self._dim:
                raise InvalidValueError(f"quantizer was fitted for dimension {quantizer.dim}, the index has {self._dim}")
        self._quantizer = quantizer
        self._f32: np.ndarray | None = None  # rows [capacity, dim] float32
        self._codes: np.ndarray | None = None  # rows [capacity, dim] int8
        self._bits: np.ndarray | None = None  # rows [capacity, ceil(dim / 8)] uint8
        self._rows = 0  # rows in use (== slots handed out)
        self._tombstones = 0

    # -- settings ------------------------------------------------------------------------
    @property
    def precision(self) -> str:
        return self._precision

    @property
    def rescore(self) -> str | None:
        return self._rescore

    @property
    def oversample(self) -> int:
        return self._oversample

    @property
    def refine(self) -> int:
        return self._refine

    @property
    def on_disk(self) -> tuple:
        return tuple(k for k in PRECISIONS if k in self._on_disk)

    @property
    def quantizer(self) -> Int8Quantizer | None:
        return self._quantizer

    @property
    def num_threads(self) -> int | None:
        return self._num_threads

    @num_threads.setter
    def num_threads(self, value: int | None) -> None:
        self._num_threads = check_num_threads(value)

    def _config(self) -> dict:
        config = {"precision": self._precision, "rescore": self._rescore, "oversample": self._oversample,
                  "compact_threshold": self._compact_threshold}
        if self._refine != DEFAULT_REFINE:  # written only when set, so older readers load the rest
            config["refine"] = self._refine
        if self._on_disk:
            config["on_disk"] = list(self.on_disk)
        return config

    def _search_params(self) -> set[str]:
        return {"oversample", "rescore", "refine"}

    # -- storage -------------------------------------------------------------------------
    def _arrays(self) -> dict[str, np.ndarray]:
        out = {}
        if self._f32 is not None:
            out["float32"] = self._f32
        if self._codes is not None:
            out["int8"] = self._codes
        if self._bits is not None:
            out["binary"] = self._bits
        return out

    def _layout(self) -> dict[str, tuple[type, int]]:
        """The arrays this configuration keeps: kind -> (dtype, row width)."""
        layout = {}
        if self._keep_float32:
            layout["float32"] = (np.float32, self._dim)
        if self._keep_codes:
            layout["int8"] = (np.int8, self._dim)
        if self._precision == "binary":
            layout["binary"] = (np.uint8, (self._dim + 7) // 8)
        return layout

    def _random_reads(self, kind: str) -> bool:
        """True for the arrays searches only read at candidate rows (the rescoring passes)."""
        return kind != self._precision

    def _owns(self, kind: str, array: np.ndarray) -> bool:
        """True when `array` is this index's own writable storage for `kind`."""
        if kind in self._on_disk:
            scratch = self._scratch.get(kind)
            return scratch is not None and array is scratch.array
        return array.flags.writeable and not isinstance(array, np.memmap)

    def _new_rows(self, capacity: int) -> None:
        """Gives every array `capacity` rows of writable storage (keeping the used rows): RAM, or
        a scratch file for the on_disk kinds (grown in place when the index already owns it)."""
        self._row_file = None  # the float32 storage changes: a reader of the old one must not pin it
        for kind, (dtype, width) in self._layout().items():
            old = self._arrays().get(kind)
            if kind in self._on_disk:
                scratch = self._scratch.get(kind)
                if old is not None and scratch is not None and old is scratch.array:
                    setattr(self, _ATTRS[kind], scratch.grow(capacity))
                    continue
                scratch = ScratchRows(self._scratch_dir, kind, dtype, width, capacity, self._random_reads(kind))
                scratch.allocate(self._rows)  # before the copy writes them
                rows = scratch.array
            else:
                scratch, rows = None, np.empty((capacity, width), dtype=dtype)
            if old is not None and self._rows:
                copy_rows(rows, old, self._rows)
            if kind in self._on_disk:
                self._scratch[kind] = scratch  # the previous scratch file (if any) goes with its last view
            setattr(self, _ATTRS[kind], rows)

    def _reserve(self, total_rows: int) -> None:
        arrays = self._arrays()
        capacity = min((a.shape[0] for a in arrays.values()), default=0)
        writable = all(self._owns(kind, a) for kind, a in arrays.items())
        if not (arrays and total_rows <= capacity and writable):
            self._new_rows(max(total_rows, 2 * capacity if total_rows > capacity else capacity, _MIN_CAPACITY))
        for kind in self._on_disk:  # disk blocks for every row about to be written (ENOSPC here, not SIGBUS)
            self._scratch[kind].allocate(total_rows)

    def _write_rows(self, rows: np.ndarray | slice, vectors: np.ndarray) -> None:
        if self._f32 is not None:
            self._f32[rows] = vectors
        if self._codes is not None:
            self._codes[rows] = self._quantizer.encode(vectors, num_threads=self._num_threads)
        if self._bits is not None:
            self._bits[rows] = binarize(vectors, num_threads=self._num_threads)

    def _add_vectors(self, slots: np.ndarray, vectors: np.ndarray) -> None:
        n = vectors.shape[0]
        if slots.shape != (n,) or (n and (slots[0] != self._rows or slots[-1] != self._rows + n - 1)):
            raise RuntimeError(f"FlatIndex expects consecutive new slots from {self._rows}, got {slots[:3]}...")
        self._reserve(self._rows + n)  # first: a full disk raises before anything changes
        if self._keep_codes and self._quantizer is None:
            self._quantizer = Int8Quantizer().fit(vectors)
        self._write_rows(slice(self._rows, self._rows + n), vectors)
        self._rows += n

    def _prepare_add(self, n_fresh: int) -> None:
        self._reserve(self._rows + n_fresh)  # room (RAM, disk blocks) for the whole add before any row changes

    def _replace_slots(self, slots: np.ndarray, vectors: np.ndarray) -> None:
        self._reserve(self._rows)
        self._write_rows(slots, vectors)

    def _remove_slots(self, slots: np.ndarray) -> None:
        self._tombstones += int(slots.size)

    def _after_remove(self) -> None:
        if self._tombstones and self._tombstones > self._compact_threshold * self._rows:
            try:
                self._compact()
            except (OSError, MemoryError) as exc:  # only an optimisation: the tombstones stay, the remove stands
                warnings.warn(f"FlatIndex: compaction postponed ({exc})", ResourceWarning, stacklevel=4)

    def _prepare_save(self) -> None:
        if self._tombstones:
            self._compact()

    def _compact(self) -> None:
        """Drops tombstoned rows (renumbering slots; call under the write lock). The new storage
        (RAM, or scratch files with their disk blocks) is taken before the slots are renumbered,
        so running out of memory or disk leaves the index as it was."""
        live = len(self._idmap)
        capacity = max(live, _MIN_CAPACITY)
        fresh = {}
        for kind, old in self._arrays().items():
            if kind in self._on_disk:
                scratch = ScratchRows(self._scratch_dir, kind, old.dtype, old.shape[1], capacity,
                                      self._random_reads(kind))
                scratch.allocate(live)
                fresh[kind] = (scratch, scratch.array)
            else:
                fresh[kind] = (None, np.empty((capacity, old.shape[1]), dtype=old.dtype))
        kept = self._renumber_slots()
        self._row_file = None
        for kind, old in self._arrays().items():
            scratch, rows = fresh[kind]
            copy_rows(rows, old, kept)
            if scratch is not None:
                self._scratch[kind] = scratch
            setattr(self, _ATTRS[kind], rows)
        self._rows = int(kept.size)
        self._tombstones = 0

    def _memory_bytes(self) -> int:
        return sum(a[: self._rows].nbytes for a in self._arrays().values())

    # -- search --------------------------------------------------------------------------
    def _search_slots(self, queries: np.ndarray, k: int, allowed: np.ndarray | None,
                      params: dict) -> tuple[np.ndarray, np.ndarray]:
        oversample = _check_oversample(params.get("oversample", self._oversample))
        refine = _check_oversample(params.get("refine", self._refine), "refine")
        how = params.get("rescore", self._rescore)
        if how not in RESCORES:
            raise InvalidValueError(f"rescore must be one of {RESCORES}, got {how!r}")
        if self._precision == "float32":
            how = None
        elif how in ("float32", "int8+float32") and self._f32 is None:
            raise InvalidValueError(f"rescore={how!r} needs the float32 originals, which this index does not keep "
                             f"(it was built with rescore={self._rescore!r})")
        if how in ("int8", "int8+float32") and (self._precision != "binary" or self._codes is None):
            raise InvalidValueError(f"rescore={how!r} needs precision='binary' and the int8 codes "
                             f"(this index: precision={self._precision!r}, rescore={self._rescore!r})")
        n = self._rows
        mask = allowed
        if mask is None and self._tombstones:
            mask = self._idmap.live_view()
        if mask is not None and mask.shape[0] != n:
            raise RuntimeError(f"allowed mask has {mask.shape[0]} entries for {n} rows")
        candidates = n if mask is None else int(np.count_nonzero(mask))
        nq = queries.shape[0]
        k_run = min(k, candidates)
        if k_run == 0:
            return np.full((nq, k), -np.inf, dtype=np.float32), np.full((nq, k), -1, dtype=np.int64)
        threads = self._num_threads
        pool = min(candidates, k_run * oversample) if how is not None else k_run
        if self._precision == "float32":
            scores, slots = topk_float32(queries, self._f32[:n], k_run, allow=mask, num_threads=threads)
        elif self._precision == "int8":
            scores, slots = topk_int8(queries, self._codes[:n], self._quantizer, pool, allow=mask, num_threads=threads)
        else:
            distances, slots = topk_hamming(binarize(queries, num_threads=threads), self._bits[:n], pool, allow=mask,
                                            num_threads=threads)
            if how is None:  # dim - 2 * hamming: the inner product of the +-1 sign vectors
                scores = np.where(slots >= 0, self._dim - 2 * distances.astype(np.float32), -np.inf).astype(np.float32)
        if how == "int8+float32":  # the int8 codes narrow the binary pool before the originals are read
            _, slots = rescore(queries, (self._codes[:n], self._quantizer), slots, min(pool, k_run * refine),
                               num_threads=threads)
            how = "float32"
        if how == "float32":
            scores, slots = self._rescore_float32(queries, slots, k_run, n, threads)
        elif how == "int8":
            scores, slots = rescore(queries, (self._codes[:n], self._quantizer), slots, k_run, num_threads=threads)
        if k_run == k and scores.shape[1] == k:
            return scores, slots
        out_scores = np.full((nq, k), -np.inf, dtype=np.float32)
        out_slots = np.full((nq, k), -1, dtype=np.int64)
        out_scores[:, :k_run] = scores[:, :k_run]
        out_slots[:, :k_run] = slots[:, :k_run]
        return out_scores, out_slots

    def _rescore_float32(self, queries: np.ndarray, candidates: np.ndarray, k: int, n: int,
                         threads: int | None) -> tuple[np.ndarray, np.ndarray]:
        """rescore() against the float32 originals; memory-mapped ones (on disk) are read with
        pread, only the candidate rows (see embedrank.index.scratch), never through the mapping."""
        if not isinstance(self._f32, np.memmap):
            return rescore(queries, self._f32[:n], candidates, k, num_threads=threads)
        flat = candidates.reshape(-1)
        valid = flat >= 0
        unique, inverse = np.unique(flat[valid], return_inverse=True)  # sorted: local order = slot order (ties)
        if unique.size == 0:
            return (np.full((queries.shape[0], k), -np.inf, dtype=np.float32),
                    np.full((queries.shape[0], k), -1, dtype=np.int64))
        local = np.full(flat.shape, -1, dtype=np.int64)
        local[valid] = inverse
        rows = self._row_reader().take(unique, threads)
        scores, picked = rescore(queries, rows, local.reshape(candidates.shape), min(k, unique.size),
                                 num_threads=threads)
        slots = np.where(picked >= 0, unique[np.maximum(picked, 0)], -1)
        if scores.shape[1] < k:  # fewer distinct candidates than k: pad
            pad = k - scores.shape[1]
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            slots = np.pad(slots, ((0, 0), (0, pad)), constant_values=-1)
        return scores, slots

    def _row_reader(self) -> RowFile:
        """The pread reader of the current float32 mapping: opened at load for a saved file, on
        first use for this index's own scratch file (which nothing else replaces)."""
        with self._row_file_lock:
            if self._row_file is None or self._row_file[0] is not self._f32:
                if not self._owns("float32", self._f32):
                    raise RuntimeError("float32 originals mapped without their reader (opened at load)")
                self._row_file = (self._f32, self._scratch["float32"].reader)
            return self._row_file[1]

    # -- persistence ---------------------------------------------------------------------
    def _save_payload(self, directory: Path) -> list[str]:
        names = []
        arrays = self._arrays()
        for kind, (dtype, width) in self._layout().items():
            name = _FILES[kind]
            rows = arrays[kind][: self._rows] if kind in arrays else np.empty((0, width), dtype=dtype)
            with open(directory / name, "wb") as handle:
                np.save(handle, np.ascontiguousarray(rows), allow_pickle=False)
            names.append(name)
        if self._quantizer is not None:
            (directory / _QUANTIZER_FILE).write_text(json.dumps(self._quantizer.to_dict()), encoding="utf-8")
            names.append(_QUANTIZER_FILE)
        return names

    @classmethod
    def _load_payload(cls, directory: Path, manifest: dict, mmap) -> FlatIndex:
        config = dict(manifest["config"])
        files = manifest["files"]
        quantizer = None
        if _QUANTIZER_FILE in files:
            path = directory / _QUANTIZER_FILE
            try:
                quantizer = Int8Quantizer.from_dict(json.loads(path.read_text(encoding="utf-8")))
            except (ValueError, TypeError) as exc:
                raise IndexFormatError(f"{path}: not a valid Int8Quantizer ({exc})") from None
        unknown = sorted(set(config) - _SAVED_CONFIG)
        if unknown:  # e.g. scratch_dir or num_threads: this machine's choices, never a file's
            raise IndexFormatError(f"{directory / 'manifest.json'}: unknown FlatIndex config keys {unknown}")
        try:
            index = cls(manifest["dim"], **config)
        except (TypeError, ValueError) as exc:
            raise IndexFormatError(f"{directory / 'manifest.json'}: bad FlatIndex config {config} ({exc})") from None
        if index._keep_codes and quantizer is None and manifest["slot_count"]:
            raise IndexFormatError(f"{directory / _QUANTIZER_FILE}: missing (the index keeps int8 codes)")
        if quantizer is not None and quantizer.dim != index._dim:
            raise IndexFormatError(f"{directory / _QUANTIZER_FILE}: fitted for dimension {quantizer.dim}, "
                                   f"the index has {index._dim}")
        index._quantizer = quantizer
        rows = manifest["slot_count"]
        layout = index._layout()
        mapped = frozenset(PRECISIONS) if mmap is True else frozenset() if mmap is False else mmap  # checked by load_index
        for kind in PRECISIONS:
            name = _FILES[kind]
            if kind not in layout:
                if name in files:
                    raise IndexFormatError(f"{directory / name}: not expected for this FlatIndex config {config}")
                continue
            dtype, width = layout[kind]
            if name not in files:
                raise IndexFormatError(f"{directory / name}: missing from the manifest (needed by config {config})")
            path = directory / name
            try:
                array = np.load(path, mmap_mode="r" if kind in mapped else None, allow_pickle=False)
            except (OSError, ValueError, EOFError) as exc:
                raise IndexFormatError(f"{path}: not a readable .npy file ({exc})") from None
            if array.dtype != dtype or array.ndim != 2 or array.shape != (rows, width) or not array.flags.c_contiguous:
                raise IndexFormatError(f"{path}: expected a C-ordered {np.dtype(dtype)} array of shape {(rows, width)}, "
                                       f"got {array.dtype} of shape {array.shape}")
            if index._random_reads(kind) and kind == "float32" and isinstance(array, np.memmap):
                # opened now, under load_index's lock: a later save to this path cannot swap the file read
                index._row_file = (array, RowFile.of(array))
            setattr(index, _ATTRS[kind], advise_random(array) if index._random_reads(kind) else array)
        index._rows = rows
        return index

    def _after_load(self) -> None:
        self._tombstones = self._rows - len(self._idmap)
