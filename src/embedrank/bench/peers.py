"""Peer implementations of exact top-k search, and the machine facts to read timings by.

Every peer has the same two-step protocol, so that only ``search`` is timed:

    peer = FaissFlatIP().build(base)          # base: float32 [N, d]
    scores, ids = peer.search(queries, k)     # queries: float32 [Q, d]
    # scores: [Q, k] best-first; ids: int64 [Q, k] row numbers into base

Float peers return inner products (float32, descending). Binary peers take packed codes
(uint8 [N, d/8], see ``pack_sign_bits``) and return Hamming distances (int32, ascending).
Ties may come in any order, so compare peers by scores, not by ids.

Import this module BEFORE anything imports faiss: it sets OPENBLAS_CORETYPE (see
``configure_openblas_coretype``), which faiss-cpu's bundled OpenBLAS 0.3.15 reads only
when it is loaded. Without it, that OpenBLAS does not recognise Sapphire/Emerald Rapids
and falls back to its slowest x86-64 kernels ("Prescott").
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

from embedrank.errors import InvalidTypeError, InvalidValueError
from embedrank.utils.threads import available_cores

# --------------------------------------------------------------------------- #
# CPU facts and the OpenBLAS core type (must run before faiss is imported)
# --------------------------------------------------------------------------- #

SIMD_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "popcnt",
    "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd",
    "avx512_vnni", "avx_vnni", "avx512_vpopcntdq", "avx512_bitalg",
    "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16",
)  # fmt: skip


def cpu_info(cpuinfo_path: str = "/proc/cpuinfo") -> dict:
    """-> {"model_name": str, "vendor": str, "family": int|None, "model": int|None,
    "logical_cpus": int, "usable_cpus": int, "flags": {flag: bool for SIMD_FLAGS}}.

    Reads /proc/cpuinfo (Linux); elsewhere the flag values are all False.
    """
    fields: dict[str, str] = {}
    n_processors = 0
    try:
        with open(cpuinfo_path) as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "processor":
                    n_processors += 1
                elif key and key not in fields:
                    fields[key] = value.strip()
    except OSError:
        pass
    flags = set(fields.get("flags", "").split())
    usable = available_cores()

    def as_int(key: str) -> int | None:
        return int(fields[key]) if fields.get(key, "").isdigit() else None

    return {
        "model_name": fields.get("model name", "unknown"),
        "vendor": fields.get("vendor_id", "unknown"),
        "family": as_int("cpu family"),
        "model": as_int("model"),
        "logical_cpus": n_processors or os.cpu_count() or 1,
        "usable_cpus": usable or 1,
        "flags": {flag: flag in flags for flag in SIMD_FLAGS},
    }


def recommended_openblas_coretype(flags: dict[str, bool] | None = None) -> str | None:
    """The OPENBLAS_CORETYPE for faiss-cpu's bundled OpenBLAS 0.3.15 on this CPU, or None.

    SKYLAKEX (its AVX-512 sgemm) on any CPU with avx512f/bw/vl/dq. That build rejects
    SAPPHIRERAPIDS and COOPERLAKE ("Core not found", falls back to Prescott). None means
    leave OpenBLAS to detect the CPU (forcing an AVX-512 core on a CPU without AVX-512
    would crash with SIGILL).
    """
    flags = cpu_info()["flags"] if flags is None else flags
    if all(flags.get(f) for f in ("avx512f", "avx512bw", "avx512vl", "avx512dq")):
        return "SKYLAKEX"
    return None


def configure_openblas_coretype() -> str | None:
    """Set OPENBLAS_CORETYPE for this process unless the user already set it; -> value in force.

    Effective only if faiss (and its OpenBLAS) is not loaded yet; warns otherwise. Also
    applies to numpy's own OpenBLAS when numpy is imported later (same core it picks itself
    on AVX-512 Intel CPUs).
    """
    if "OPENBLAS_CORETYPE" in os.environ:
        return os.environ["OPENBLAS_CORETYPE"]
    core = recommended_openblas_coretype()
    if core is None:
        return None
    if "faiss" in sys.modules:
        warnings.warn(
            f"faiss was imported before benchmarks.peers: its OpenBLAS ignores "
            f"OPENBLAS_CORETYPE={core} now; set it in the environment instead",
            RuntimeWarning,
            stacklevel=2,
        )
    os.environ["OPENBLAS_CORETYPE"] = core
    return core


configure_openblas_coretype()

import numpy as np  # noqa: E402  (after the core type is set)
from threadpoolctl import ThreadpoolController, threadpool_info  # noqa: E402


def blas_info() -> dict:
    """What threadpoolctl reports for the BLAS libraries numpy and faiss use.

    -> {"OPENBLAS_CORETYPE": env value or None,
        "numpy": {...} | None, "faiss": {...} | None,   # each: architecture, version,
        "openmp": [{...}],                              #   num_threads, threading_layer, filepath
        "all": threadpool_info()}
    Imports faiss (if installed) so that its OpenBLAS shows up.
    """
    try:
        import faiss  # noqa: F401
    except ImportError:
        pass
    libraries = threadpool_info()

    def pick(predicate) -> dict | None:
        hits = [lib for lib in libraries if lib.get("user_api") == "blas" and predicate(lib)]
        return _blas_summary(hits[0]) if hits else None

    return {
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "numpy": pick(lambda lib: "numpy" in lib["filepath"] or "scipy_openblas" in lib["prefix"]),
        "faiss": pick(lambda lib: "faiss" in lib["filepath"]),
        "openmp": [_blas_summary(lib) for lib in libraries if lib.get("user_api") == "openmp"],
        "all": libraries,
    }


def _blas_summary(lib: dict) -> dict:
    keys = ("internal_api", "architecture", "version", "num_threads", "threading_layer", "filepath")
    return {key: lib.get(key) for key in keys}


# --------------------------------------------------------------------------- #
# Memory bandwidth yardstick
# --------------------------------------------------------------------------- #


def memory_bandwidth_gbps(threads: int = 1, size_bytes: int = 1 << 30, repeats: int = 7) -> float:
    """Achievable streaming read bandwidth in GB/s (1e9 bytes/s), best of ``repeats``.

    Reads a float32 array of ``size_bytes`` (default 1 GiB, far beyond any cache) with
    ``np.max`` split over ``threads`` Python threads (numpy releases the GIL). np.max is a
    plain AVX-512/AVX2 read loop with nothing written back: on this machine it matched a
    hand-written 4-accumulator AVX-512 C read loop within noise. Pages are touched before
    timing. Takes about (repeats + 1) * size_bytes / bandwidth seconds plus the allocation.
    """
    if threads < 1:
        raise InvalidValueError("threads must be >= 1")
    data = np.ones(size_bytes // 4, dtype=np.float32)  # writes every page: no faults later
    parts = np.array_split(data, threads)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(np.max, parts))  # warm-up: start threads, fault in TLB entries
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            list(pool.map(np.max, parts))
            best = min(best, time.perf_counter() - start)
    return data.nbytes / best / 1e9


# --------------------------------------------------------------------------- #
# Helpers shared by the peers
# --------------------------------------------------------------------------- #


def as_float_matrix(x: np.ndarray, name: str) -> np.ndarray:
    """-> C-contiguous float32 [n, d]; a 1-D vector becomes [1, d]."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise InvalidValueError(f"{name} must be [n, d], got shape {x.shape}")
    return x


def as_code_matrix(x: np.ndarray, name: str) -> np.ndarray:
    """-> C-contiguous uint8 [n, bytes]; a 1-D code becomes [1, bytes]."""
    if np.asarray(x).dtype != np.uint8:
        raise InvalidTypeError(f"{name} must be packed uint8 codes (see pack_sign_bits)")
    x = np.ascontiguousarray(x)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise InvalidValueError(f"{name} must be [n, bytes], got shape {x.shape}")
    return x


def pack_sign_bits(x: np.ndarray, bitorder: str = "little") -> np.ndarray:
    """float [n, d] -> uint8 [n, ceil(d/8)]: bit j is (x[:, j] > 0).

    ``little``: dimension j is bit (j % 8) of byte j // 8 (LSB first). Hamming distances
    do not depend on the bit order as long as base and queries use the same one.
    """
    return np.packbits(np.asarray(x) > 0, axis=-1, bitorder=bitorder)


def _check_k(k: int, n_base: int) -> None:
    if not 1 <= k <= n_base:
        raise InvalidValueError(f"need 1 <= k <= len(base) = {n_base}, got k={k}")


class _Peer:
    name = "peer"
    metric = "ip"  # "ip": scores are inner products, higher first; "hamming": lower first

    def __init__(self, threads: int | None = None) -> None:
        """threads: worker threads for search (None: the library's default, all cores)."""
        self.threads = threads
        self.n_base = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(threads={self.threads})"

    def build(self, base: np.ndarray) -> _Peer:
        raise NotImplementedError

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


# --------------------------------------------------------------------------- #
# numpy
# --------------------------------------------------------------------------- #


class NumpyIP(_Peer):
    """numpy: BLAS matmul, argpartition for the k best, then sort those k.

    Queries go through in chunks of ``query_chunk`` to bound the [chunk, N] score matrix
    (256 x 100k float32 = 100 MB). Threads are numpy's OpenBLAS threads.
    """

    name = "numpy"

    def __init__(self, threads: int | None = None, query_chunk: int = 256) -> None:
        super().__init__(threads)
        self.query_chunk = query_chunk
        self._blas = ThreadpoolController().select(user_api="blas")

    def build(self, base: np.ndarray) -> NumpyIP:
        self.base = as_float_matrix(base, "base")
        self.n_base = self.base.shape[0]
        return self

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = as_float_matrix(queries, "queries")
        _check_k(k, self.n_base)
        n_queries = queries.shape[0]
        scores = np.empty((n_queries, k), dtype=np.float32)
        ids = np.empty((n_queries, k), dtype=np.int64)
        if self.threads is None:
            self._search_chunks(queries, k, scores, ids)
        else:
            with self._blas.limit(limits=self.threads):
                self._search_chunks(queries, k, scores, ids)
        return scores, ids

    def _search_chunks(self, queries, k, scores_out, ids_out) -> None:
        kth = self.n_base - k  # partition so that the k largest land at the end: no negation
        for start in range(0, queries.shape[0], self.query_chunk):
            stop = start + self.query_chunk
            all_scores = queries[start:stop] @ self.base.T  # [chunk, N]
            top = np.argpartition(all_scores, kth, axis=1)[:, kth:]  # [chunk, k], unordered
            top_scores = np.take_along_axis(all_scores, top, axis=1)
            order = np.argsort(-top_scores, axis=1)
            scores_out[start:stop] = np.take_along_axis(top_scores, order, axis=1)
            ids_out[start:stop] = np.take_along_axis(top, order, axis=1)


class NumpyHamming(_Peer):
    """numpy reference for Hamming top-k: XOR + np.bitwise_count. Slow; for checking only."""

    name = "numpy-hamming"
    metric = "hamming"

    def __init__(self, threads: int | None = None, query_chunk: int = 16) -> None:
        super().__init__(threads)
        self.query_chunk = query_chunk

    def build(self, codes: np.ndarray) -> NumpyHamming:
        self.codes = as_code_matrix(codes, "codes")
        self.n_base = self.codes.shape[0]
        return self

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = as_code_matrix(queries, "queries")
        _check_k(k, self.n_base)
        dist_parts, id_parts = [], []
        for start in range(0, queries.shape[0], self.query_chunk):
            chunk = queries[start : start + self.query_chunk]
            dist = np.bitwise_count(chunk[:, None, :] ^ self.codes[None, :, :]).sum(-1, dtype=np.int32)
            top = np.argpartition(dist, k - 1, axis=1)[:, :k]
            top_dist = np.take_along_axis(dist, top, axis=1)
            order = np.argsort(top_dist, axis=1, kind="stable")
            dist_parts.append(np.take_along_axis(top_dist, order, axis=1))
            id_parts.append(np.take_along_axis(top, order, axis=1).astype(np.int64))
        return np.concatenate(dist_parts), np.concatenate(id_parts)


# --------------------------------------------------------------------------- #
# faiss
# --------------------------------------------------------------------------- #


_faiss_default_threads: int | None = None


def _faiss():
    """Import faiss; remember its OpenMP thread count before any peer changes it."""
    global _faiss_default_threads
    import faiss

    if _faiss_default_threads is None:
        _faiss_default_threads = faiss.omp_get_max_threads()
    return faiss


def _set_faiss_threads(threads: int | None) -> None:
    """OpenMP threads are process-wide: set them on every search (None: faiss's default)."""
    faiss = _faiss()
    faiss.omp_set_num_threads(threads or _faiss_default_threads)


class FaissFlatIP(_Peer):
    """faiss IndexFlatIP: exhaustive inner product.

    faiss >= 1.12 picks its path by ``n_queries * dim`` against
    ``faiss.cvar.distance_compute_blas_threshold`` (128000 by default): at or above it, sgemm
    on 1024-row blocks of the base through its bundled OpenBLAS (so the BLAS core type
    matters), then a heap per query; below it, one query at a time with its own SIMD dot
    products (queries split over threads; no BLAS). With d=384 BLAS starts at 334 queries,
    with d=50 (GloVe) at 2560. ``blas_threshold`` overrides it for this peer's searches.
    Threads are OpenMP threads (process-wide; set again on every search).
    """

    name = "faiss"

    def __init__(self, threads: int | None = None, blas_threshold: int | None = None) -> None:
        super().__init__(threads)
        self.blas_threshold = blas_threshold

    def __repr__(self) -> str:
        return f"FaissFlatIP(threads={self.threads}, blas_threshold={self.blas_threshold})"

    def build(self, base: np.ndarray) -> FaissFlatIP:
        faiss = _faiss()
        base = as_float_matrix(base, "base")
        self.index = faiss.IndexFlatIP(base.shape[1])
        self.index.add(base)
        self.n_base = base.shape[0]
        return self

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = as_float_matrix(queries, "queries")
        _check_k(k, self.n_base)
        faiss = _faiss()
        _set_faiss_threads(self.threads)
        if self.blas_threshold is None:
            scores, ids = self.index.search(queries, k)
        else:
            default = faiss.cvar.distance_compute_blas_threshold
            faiss.cvar.distance_compute_blas_threshold = self.blas_threshold
            try:
                scores, ids = self.index.search(queries, k)
            finally:
                faiss.cvar.distance_compute_blas_threshold = default
        return scores, ids.astype(np.int64, copy=False)


class FaissFlatIPBlas(FaissFlatIP):
    """FaissFlatIP with the pre-1.12 rule: BLAS from 20 queries on, whatever the dim.

    faiss's default keeps e.g. 1000 GloVe (d=50) queries on its one-query-at-a-time path,
    several times slower than sgemm; this peer shows faiss at its best for such batches.
    """

    name = "faiss-blas"
    min_blas_queries = 20

    def __init__(self, threads: int | None = None) -> None:
        super().__init__(threads)

    def build(self, base: np.ndarray) -> FaissFlatIPBlas:
        super().build(base)
        self.blas_threshold = self.min_blas_queries * self.index.d
        return self


class FaissBinaryFlat(_Peer):
    """faiss IndexBinaryFlat: exhaustive Hamming over packed uint8 codes [N, d/8].

    -> (int32 Hamming distances ascending, int64 ids). Uses faiss's popcount kernels.
    """

    name = "faiss-binary"
    metric = "hamming"

    def build(self, codes: np.ndarray) -> FaissBinaryFlat:
        faiss = _faiss()
        codes = as_code_matrix(codes, "codes")
        self.index = faiss.IndexBinaryFlat(codes.shape[1] * 8)
        self.index.add(codes)
        self.n_base = codes.shape[0]
        return self

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = as_code_matrix(queries, "queries")
        _check_k(k, self.n_base)
        _set_faiss_threads(self.threads)
        dist, ids = self.index.search(queries, k)
        return dist.astype(np.int32, copy=False), ids.astype(np.int64, copy=False)


# --------------------------------------------------------------------------- #
# usearch
# --------------------------------------------------------------------------- #


def _usearch_exact(base, queries, k, metric, threads):
    """usearch.index.search(..., exact=True): brute force, no index built. -> Matches arrays.

    A single query comes back as ``Matches`` (1-D keys/distances), a batch as
    ``BatchMatches`` (2-D); both are reshaped to [Q, k] here.
    """
    from usearch.index import search

    matches = search(base, queries, k, metric, exact=True, threads=threads or 0)
    keys = np.asarray(matches.keys).reshape(queries.shape[0], -1)
    distances = np.asarray(matches.distances).reshape(queries.shape[0], -1)
    return keys.astype(np.int64), distances


class UsearchIP(_Peer):
    """usearch exact (brute-force) inner product, SIMD kernels from NumKong/SimSIMD.

    usearch reports the IP *distance* 1 - <q, x>; this returns the score <q, x>.
    threads=None lets usearch use all cores (its own thread pool, not OpenMP).
    """

    name = "usearch"

    def build(self, base: np.ndarray) -> UsearchIP:
        self.base = as_float_matrix(base, "base")
        self.n_base = self.base.shape[0]
        return self

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        from usearch.index import MetricKind

        queries = as_float_matrix(queries, "queries")
        _check_k(k, self.n_base)
        ids, distances = _usearch_exact(self.base, queries, k, MetricKind.IP, self.threads)
        return (1.0 - distances).astype(np.float32), ids


class UsearchHamming(_Peer):
    """usearch exact Hamming over packed uint8 codes [N, d/8] (treated as bits, b1x8).

    usearch returns float distances; here they are int32, ascending.
    """

    name = "usearch-binary"
    metric = "hamming"

    def build(self, codes: np.ndarray) -> UsearchHamming:
        self.codes = as_code_matrix(codes, "codes")
        self.n_base = self.codes.shape[0]
        return self

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        from usearch.index import MetricKind

        queries = as_code_matrix(queries, "queries")
        _check_k(k, self.n_base)
        ids, distances = _usearch_exact(self.codes, queries, k, MetricKind.Hamming, self.threads)
        return np.rint(distances).astype(np.int32), ids


FLOAT_PEERS: dict[str, type[_Peer]] = {
    "numpy": NumpyIP,
    "faiss": FaissFlatIP,
    "faiss-blas": FaissFlatIPBlas,
    "usearch": UsearchIP,
}
BINARY_PEERS: dict[str, type[_Peer]] = {
    "numpy-hamming": NumpyHamming,
    "faiss-binary": FaissBinaryFlat,
    "usearch-binary": UsearchHamming,
}
_PEER_MODULES = {
    "faiss": "faiss",
    "faiss-blas": "faiss",
    "faiss-binary": "faiss",
    "usearch": "usearch",
    "usearch-binary": "usearch",
}


def available_peers(binary: bool = False) -> dict[str, type[_Peer]]:
    """The float (or binary) peers whose library imports in this environment."""
    import importlib.util

    peers = BINARY_PEERS if binary else FLOAT_PEERS
    return {
        name: cls
        for name, cls in peers.items()
        if name not in _PEER_MODULES or importlib.util.find_spec(_PEER_MODULES[name]) is not None
    }
