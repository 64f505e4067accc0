"""Encoding a Ray Dataset on a pool of actors (one machine or many), resumably, into Parquet.

:class:`RayEmbedder` is the callable class for ``Dataset.map_batches``: each actor loads the
model once, in ``__init__``, with as many onnxruntime threads as CPUs Ray gave it, and turns
each batch of rows into fixed-shape vectors (float32 [n, d], int8/uint8 [n, d], or packed
sign bits binary/ubinary [n, ceil(d / 8)], see :func:`embedrank.models.encoder.quantize_embeddings`).
:func:`embed_dataset` builds that stage (and, with ``output=``, runs it resumably).

Chunking (``chunking=True``): a long document becomes overlapping token windows (the
encoder's defaults, 224 tokens with 32 of overlap for a 256-token model) and the output has
one row per window: the document's id, ``window`` (0, 1, ... within the document), ``start``
and ``end`` (the window's character span in the document text) and the window's vector. That
is what :class:`~embedrank.retrieval.Retriever` indexes too (a document scores as its best
window); max-pooling the windows into one vector would lose that.

Resuming (``output=`` a folder): every batch the actors encode is written by the actor
itself as one Parquet file, ``part-<hash of the batch's ids>.parquet``, first under a hidden
temporary name in the same folder, fsynced, then renamed into place, so a job killed at any
moment leaves only whole files (and hidden temporaries, which readers skip and the next run
deletes). A run first reads the id column of the files already there and each actor drops
those ids from its batches before encoding, so a rerun over the same input encodes only what
is missing. A batch that Ray retries (its actor died) is the same rows, so it gets the same
file name and replaces its own earlier file, if any, atomically: no id is written twice.
The folder also holds ``_embedrank_embeddings.json`` (model fingerprint, variant, precision,
chunking...); a rerun with other settings is refused rather than mixing vectors. One job
writes to a folder at a time: rerun once the killed job's actors are gone (Ray ends a dead
driver's actors within seconds), since a writer still running when the rerun reads the ids
could add a file with ids the rerun encodes again (read_embeddings would then refuse the
repeated ids rather than return them twice).

Fault tolerance: an actor process that dies (killed, out of memory, its node lost) is
restarted and the batches it held are run again. That is Ray Data's default for actor pools
(Ray 2.60: ``max_restarts=-1``, ``max_task_retries=-1``, both unlimited);
``embed_dataset(max_restarts=n)`` bounds both to n, so that an input that crashes the
process every time ends the job instead of looping. An exception raised by embedrank (a
bad id, a text that is not a str) is not retried and fails the job.

Many machines: the same code with ``ray.init(address=...)``; the model folder and the
output folder must be reachable at the same path from every node (a shared POSIX file
system such as NFS: the atomic rename is what makes the files whole; object-store URIs are
not accepted).

The input ids must be unique (ints or strings, no nulls); each batch is checked, and
:func:`~embedrank.integrations.parquet.read_embeddings` checks the whole folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from embedrank.errors import ExistingPathError, InvalidTypeError, InvalidValueError, MissingDependencyError

try:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    import ray
    import ray.data
    from ray.data import ActorPoolStrategy
except ImportError as _error:  # the `ray` extra is optional
    raise MissingDependencyError(f"embedrank.integrations.ray needs ray[data] and pyarrow ({_error}): "
                                 "pip install 'embedrank[ray]'") from None

from embedrank.integrations.parquet import (ID_COLUMN, VECTOR_COLUMN, WINDOW_COLUMN, add_parquet,
                                            iter_embeddings, parquet_files, read_embeddings)
from embedrank.kernels import Int8Quantizer
from embedrank.models.chunking import default_chunking
from embedrank.models.encoder import PRECISIONS, Encoder, quantize_embeddings
from embedrank.models.folder import ModelConfig
from embedrank.utils.checks import check_positive_int
from embedrank.utils.files import fsync_path

__all__ = ["RayEmbedder", "add_parquet", "embed_dataset", "iter_embeddings", "read_embeddings"]

logger = logging.getLogger(__name__)

SETTINGS_FILE = "_embedrank_embeddings.json"
_SETTINGS_FORMAT = "embedrank-embeddings"
_SETTINGS_VERSION = 1
TMP_MARKER = ".tmp-"


def _quantizer(precision: str, quantizer) -> Int8Quantizer | None:
    """The Int8Quantizer int8/uint8 need (from an instance or its to_dict()); None otherwise."""
    if precision not in PRECISIONS:
        raise InvalidValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    if precision not in ("int8", "uint8"):
        if quantizer is not None:
            raise InvalidValueError(f"quantizer is only used with precision 'int8' or 'uint8', not {precision!r}")
        return None
    if quantizer is None:
        # fitting on each batch would give every batch its own scale: codes that do not compare
        raise InvalidValueError(f"precision={precision!r} needs a fitted quantizer shared by every batch, e.g. "
                                "Int8Quantizer().fit(encoder.encode(sample_texts))")
    if isinstance(quantizer, dict):
        quantizer = Int8Quantizer.from_dict(quantizer)
    if not isinstance(quantizer, Int8Quantizer):
        raise InvalidTypeError(f"quantizer must be an Int8Quantizer or its to_dict(), got {type(quantizer).__name__}")
    if not quantizer.is_fitted:
        raise InvalidValueError("quantizer is not fitted: call quantizer.fit(sample) first")
    return quantizer


def _actor_threads(num_threads: int | None) -> int:
    """num_threads, or the CPUs Ray assigned to this worker (at least 1)."""
    if num_threads is not None:
        return check_positive_int(num_threads, "num_threads")
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    return max(1, int(cpus))


def _file_name(ids: pa.Array) -> str:
    """part-<sha256 of the batch's ids, in order>.parquet: the same batch, the same name."""
    digest = hashlib.sha256(str(ids.type).encode())
    for value in ids.to_pylist():
        digest.update(b"\x00" + (value.encode("utf-8") if isinstance(value, str) else str(int(value)).encode()))
    return f"part-{digest.hexdigest()[:32]}.parquet"


def _write_atomically(table: pa.Table, folder: Path, name: str) -> None:
    """Writes `table` to folder/name so that the name only ever holds a whole file."""
    tmp = folder / f".{name}{TMP_MARKER}{uuid.uuid4().hex}"
    try:
        pq.write_table(table, tmp)
        fsync_path(tmp)
        os.replace(tmp, folder / name)
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_path(folder, directory=True)


def _vector_array(vectors: np.ndarray) -> pa.FixedSizeListArray:
    vectors = np.ascontiguousarray(vectors)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])


class RayEmbedder:
    """The callable class for ``Dataset.map_batches(RayEmbedder, fn_constructor_kwargs=...,
    batch_format="pyarrow")``: one instance per actor.

    model: an embedrank model folder (the same path on every node). Each call takes a
    pyarrow Table with `id_column` (ints or strings) and `text_column` (strings; with
    `title_column`, BEIR documents {"title", "text"}), encodes it with the model's document
    prompt and returns a dict of numpy arrays: ``id`` [n] (whatever `id_column` was
    called), ``embedding`` [n, width]
    (see the module docstring for the dtypes) and, with chunking, ``window`` int32 [n],
    ``start`` / ``end`` int64 [n], one row per window. With `output` (a folder), the rows are
    written there as one Parquet file and the call returns ``{"file": [name or ""], "rows":
    [rows written], "skipped": [ids dropped]}`` instead. skip_ids: a pyarrow Array (or a Ray
    ObjectRef of one) of ids to drop before encoding. num_threads: onnxruntime and kernel
    threads (None: the CPUs Ray assigned to the actor). quantizer: the fitted Int8Quantizer
    (or its to_dict()) int8/uint8 need, shared by every batch. encode_batch_size: texts per
    model call within a batch.
    """

    def __init__(self, model: str | os.PathLike, *, text_column: str = "text", id_column: str = ID_COLUMN,
                 title_column: str | None = None, precision: str = "float32", quantizer=None,
                 chunking: bool = False, max_tokens: int | None = None, overlap: int | None = None,
                 variant: str = "fp32", num_threads: int | None = None, encode_batch_size: int = 32,
                 output: str | os.PathLike | None = None, skip_ids=None):
        self.quantizer = _quantizer(precision, quantizer)
        self.precision = precision
        self.text_column, self.id_column, self.title_column = text_column, id_column, title_column
        self.chunking = bool(chunking)
        self.max_tokens, self.overlap = max_tokens, overlap
        self.encode_batch_size = check_positive_int(encode_batch_size, "encode_batch_size")
        self.num_threads = _actor_threads(num_threads)
        self.encoder = Encoder.load(model, variant=variant, num_threads=self.num_threads)
        self.output = None if output is None else Path(output)
        if isinstance(skip_ids, ray.ObjectRef):
            skip_ids = ray.get(skip_ids)
        self.skip_ids = _comparable(skip_ids) if skip_ids is not None and len(skip_ids) else None

    def __call__(self, batch: pa.Table) -> dict[str, Any]:
        if isinstance(batch, dict):  # batch_format="numpy"
            batch = pa.table(batch)
        elif not isinstance(batch, pa.Table):  # batch_format="pandas"
            batch = pa.Table.from_pandas(batch, preserve_index=False)
        for column in (self.id_column, self.text_column) + ((self.title_column,) if self.title_column else ()):
            if column not in batch.column_names:
                raise InvalidValueError(f"the dataset has no column {column!r} (it has {batch.column_names})")
        ids = batch.column(self.id_column).combine_chunks()
        if not (pa.types.is_integer(ids.type) or pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type)):
            raise InvalidTypeError(f"column {self.id_column!r} must hold integers or strings, got {ids.type}")
        if ids.null_count:
            raise InvalidValueError(f"column {self.id_column!r} has {ids.null_count} null ids")
        skipped = 0
        if self.skip_ids is not None:
            keep = self._skip_mask(ids)
            skipped = len(ids) - pc.sum(keep.cast(pa.int64())).as_py()
            if skipped:
                batch = batch.filter(keep)
                ids = ids.filter(keep)
        if pc.count_distinct(ids).as_py() != len(ids):
            raise InvalidValueError(f"column {self.id_column!r} repeats ids within one batch: ids must be unique")
        columns = self._encode(batch, ids)
        if self.output is None:
            return {ID_COLUMN: _numpy(columns[ID_COLUMN]), **{k: v for k, v in columns.items() if k != ID_COLUMN}}
        name = ""
        if len(ids):
            name = _file_name(ids)
            table = pa.table({k: (_vector_array(v) if k == VECTOR_COLUMN else v) for k, v in columns.items()})
            _write_atomically(table, self.output, name)
        return {"file": np.array([name], dtype=object), "rows": np.array([len(columns[VECTOR_COLUMN])]),
                "skipped": np.array([skipped])}

    def _skip_mask(self, ids: pa.Array) -> pa.Array:
        """True for the ids to keep (int ids never match str ids, not even "12" and 12)."""
        if pa.types.is_integer(self.skip_ids.type) != pa.types.is_integer(ids.type):
            raise InvalidTypeError(f"column {self.id_column!r} holds {ids.type} ids but the output folder holds "
                                   f"{self.skip_ids.type} ids")
        return pc.invert(pc.is_in(_comparable(ids), value_set=self.skip_ids))

    def _documents(self, batch: pa.Table) -> list:
        texts = batch.column(self.text_column).to_pylist()
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidTypeError(f"column {self.text_column!r} must hold strings, got "
                                       f"{type(text).__name__} in row {i} of a batch")
        if self.title_column is None:
            return texts
        titles = batch.column(self.title_column).to_pylist()
        return [{"title": title, "text": text} for title, text in zip(titles, texts)]

    def _encode(self, batch: pa.Table, ids: pa.Array) -> dict[str, Any]:
        """The output columns of the rows of `batch` (ids as a pyarrow Array)."""
        docs = self._documents(batch)
        if not self.chunking:
            vectors = self.encoder.encode_documents(docs, batch_size=self.encode_batch_size, show_progress=False)
            return {ID_COLUMN: ids, VECTOR_COLUMN: quantize_embeddings(vectors, self.precision, self.quantizer)}
        chunked = self.encoder.encode_documents(docs, chunking=True, max_tokens=self.max_tokens, overlap=self.overlap,
                                                batch_size=self.encode_batch_size, show_progress=False)
        owners = chunked.chunk_to_doc
        first = np.searchsorted(owners, owners)  # owners are sorted: a window's rank = its row - its doc's first row
        return {ID_COLUMN: ids.take(pa.array(owners)),
                WINDOW_COLUMN: (np.arange(len(owners)) - first).astype(np.int32),
                "start": np.array([c.start for c in chunked.chunks], dtype=np.int64),
                "end": np.array([c.end for c in chunked.chunks], dtype=np.int64),
                VECTOR_COLUMN: quantize_embeddings(chunked.embeddings, self.precision, self.quantizer)}


def _comparable(ids: pa.Array) -> pa.Array:
    """Ids as int64 or large_string, so that ids of one kind compare whatever their width."""
    return ids.cast(pa.int64() if pa.types.is_integer(ids.type) else pa.large_string())


def _numpy(ids: pa.Array) -> np.ndarray:
    if pa.types.is_integer(ids.type):
        return ids.to_numpy(zero_copy_only=False)
    return np.asarray(ids.to_pylist(), dtype=object)


def _settings(model: str | os.PathLike, variant: str, precision: str, quantizer: Int8Quantizer | None,
              chunking: bool, max_tokens, overlap, text_column: str, title_column, id_column: str) -> dict:
    """What decides the vectors of an output folder (compared when a run resumes)."""
    config = ModelConfig.load(model)
    if chunking:
        default_tokens, default_overlap = default_chunking(config.max_seq_length)
        max_tokens = default_tokens if max_tokens is None else max_tokens
        overlap = default_overlap if overlap is None else overlap
    width = (config.dimension + 7) // 8 if precision in ("binary", "ubinary") else config.dimension
    return {"format": _SETTINGS_FORMAT, "version": _SETTINGS_VERSION,
            "model_fingerprint": config.fingerprint or str(Path(model).resolve()),
            "variant": variant, "normalize": config.normalize, "dimension": config.dimension,
            "precision": precision, "width": width,
            "quantizer": None if quantizer is None else quantizer.to_dict(),
            "chunking": {"max_tokens": max_tokens, "overlap": overlap} if chunking else None,
            "text_column": text_column, "title_column": title_column, "id_column": id_column}


def _prepare_output(output: Path, settings: dict) -> pa.Array | None:
    """Creates or checks the output folder; deletes the temporaries of killed runs; returns
    the ids already written there (None when there are none)."""
    settings_path = output / SETTINGS_FILE
    files = parquet_files(output) if output.is_dir() else []
    if settings_path.exists():
        try:
            found = json.loads(settings_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ExistingPathError(f"{settings_path} cannot be read ({error}); use a new output folder") from None
        if not isinstance(found, dict) or found.get("format") != _SETTINGS_FORMAT:
            raise ExistingPathError(f"{settings_path} was not written by embed_dataset; use a new output folder")
        differ = sorted(k for k in settings if found.get(k) != settings[k])
        if differ:
            shown = "; ".join(f"{k}: {found.get(k)!r} there, {settings[k]!r} now" for k in differ if k != "quantizer")
            raise InvalidValueError(f"{output} holds embeddings made with other settings ({shown or 'quantizer'}); "
                                    "resume with the same settings or use a new output folder")
    elif files:
        raise ExistingPathError(f"{output} holds Parquet files that embed_dataset did not write (no {SETTINGS_FILE}); "
                                "use a new output folder")
    else:
        output.mkdir(parents=True, exist_ok=True)
        tmp = output / f".{SETTINGS_FILE}{TMP_MARKER}{uuid.uuid4().hex}"
        tmp.write_text(json.dumps(settings, indent=1), encoding="utf-8")
        fsync_path(tmp)
        os.replace(tmp, settings_path)
        fsync_path(output, directory=True)
    _remove_temporaries(output)
    if not files:
        return None
    done = [pq.read_table(file, columns=[ID_COLUMN]).column(0) for file in files]
    return pa.chunked_array([c for chunked in done for c in chunked.chunks]).combine_chunks()


def _remove_temporaries(output: Path) -> None:
    """Deletes what writes killed mid-file left (hidden names with the temporary marker)."""
    for path in output.iterdir():
        if path.name.startswith(".") and TMP_MARKER in path.name:
            path.unlink(missing_ok=True)


def embed_dataset(ds: ray.data.Dataset, model: str | os.PathLike, *, text_column: str = "text",
                  id_column: str = ID_COLUMN, title_column: str | None = None, precision: str = "float32",
                  quantizer=None, chunking: bool = False, max_tokens: int | None = None, overlap: int | None = None,
                  variant: str = "fp32", batch_size: int = 1024, encode_batch_size: int = 32,
                  compute: ActorPoolStrategy | None = None, concurrency: int | tuple[int, int] | None = None,
                  num_cpus: float = 1, num_gpus: float = 0, num_threads: int | None = None,
                  max_restarts: int | None = None,
                  output: str | os.PathLike | None = None) -> ray.data.Dataset:
    """Embeds the rows of `ds` (columns `id_column` and `text_column`, optionally
    `title_column`) on a pool of :class:`RayEmbedder` actors.

    The output names its columns ``id`` (the values of `id_column`) and ``embedding``.
    output=None: returns the lazy Dataset of ``id`` and ``embedding`` (a fixed-shape
    tensor column [width]; with chunking also ``window``, ``start``, ``end``, one row per
    window), ready for ``write_parquet`` or ``iter_batches``; nothing runs until it is
    consumed. output=a folder: runs the job now, resumably (see the module docstring: ids
    already written there are skipped, each batch of `batch_size` rows becomes one file
    written atomically), and returns ``ray.data.read_parquet(output)``.

    precision: "float32", "int8"/"uint8" (needs `quantizer`, a fitted Int8Quantizer), or
    "binary"/"ubinary" (packed sign bits). compute: an ActorPoolStrategy; else
    ``concurrency`` actors (an int, or (min, max) for an autoscaling pool; None: 1 up to what
    the cluster holds). A fixed pool whose actors take every CPU of the cluster stalls a
    dataset that still has read tasks to run (they wait for a CPU): leave one free, or use
    the autoscaling default. num_cpus / num_gpus: the resources of each actor; num_threads:
    onnxruntime threads per actor (None: its num_cpus). max_restarts: restarts of each
    actor and retries of each batch after an actor died (-1: unlimited; None: Ray Data's
    default, unlimited for both in Ray 2.60).
    """
    if max_restarts is not None and (isinstance(max_restarts, bool) or not isinstance(max_restarts, int)
                                     or max_restarts < -1):
        raise InvalidValueError(f"max_restarts must be None or an integer >= -1, got {max_restarts!r}")
    batch_size = check_positive_int(batch_size, "batch_size")
    checked_quantizer = _quantizer(precision, quantizer)
    if compute is None:
        if concurrency is None:
            compute = ActorPoolStrategy(min_size=1)
        elif isinstance(concurrency, tuple):
            low, high = (check_positive_int(c, "concurrency") for c in concurrency)
            compute = ActorPoolStrategy(min_size=low, max_size=high)
        else:
            compute = ActorPoolStrategy(size=check_positive_int(concurrency, "concurrency"))
    elif concurrency is not None:
        raise InvalidValueError("give compute or concurrency, not both")
    kwargs = {"text_column": text_column, "id_column": id_column, "title_column": title_column,
              "precision": precision, "quantizer": None if checked_quantizer is None else checked_quantizer.to_dict(),
              "chunking": chunking, "max_tokens": max_tokens, "overlap": overlap, "variant": variant,
              "num_threads": num_threads, "encode_batch_size": encode_batch_size}
    settings = _settings(model, variant, precision, checked_quantizer, chunking, max_tokens, overlap, text_column,
                         title_column, id_column)
    if output is not None:
        if "://" in os.fspath(output):  # before Path, which would make "s3://b" a local "s3:/b"
            raise InvalidValueError(f"output must be a folder path (a shared file system on many machines), got "
                                    f"{os.fspath(output)!r}; object stores lack the atomic rename that resuming "
                                    "relies on")
        output = Path(output).absolute()
        done = _prepare_output(output, settings)
        kwargs["output"] = str(output)
        kwargs["skip_ids"] = None if done is None else ray.put(done)
        if done is not None:
            logger.info("%s: %d ids already written are skipped", output, len(done))
    remote_args = {}
    if max_restarts is not None:
        remote_args = {"max_restarts": max_restarts, "max_task_retries": max_restarts}
    with warnings.catch_warnings():
        # Ray 2.60 deprecates passing these to map_batches (ray_remote_args_fn too) without a named
        # replacement yet: only given when the caller overrides Ray Data's default
        warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
        stage = ds.map_batches(RayEmbedder, fn_constructor_kwargs={"model": str(model), **kwargs},
                               batch_size=batch_size, batch_format="pyarrow", zero_copy_batch=True, compute=compute,
                               num_cpus=num_cpus, num_gpus=num_gpus or None, **remote_args)
    if output is None:
        return stage
    written = rows = skipped = 0
    for batch in stage.iter_batches(batch_size=None, batch_format="numpy"):
        written += int(np.count_nonzero(batch["file"] != ""))
        rows += int(batch["rows"].sum())
        skipped += int(batch["skipped"].sum())
    _remove_temporaries(output)  # a batch whose actor died mid-write was written again since
    logger.info("%s: %d rows written in %d files, %d ids skipped", output, rows, written, skipped)
    return ray.data.read_parquet(str(output), file_extensions=["parquet"])
