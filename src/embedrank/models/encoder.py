"""Bi-encoder inference: ONNX Runtime in token-length-sorted batches, pooling in C++."""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from embedrank import kernels

from embedrank.models.chunking import Chunk, chunk, default_chunking
from embedrank.models.folder import ModelConfig
from embedrank.utils.documents import check_docs, document_text
from embedrank.models.onnx_model import OnnxModel
from embedrank.models.tokenization import check_encodable, check_texts
from embedrank.utils.progress import progress_bar
from embedrank.errors import InvalidTypeError, InvalidValueError, PromptTruncationWarning, TruncationWarning
from embedrank.models.head import Head, load_dense

_log = logging.getLogger(__name__)

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")

# The prompt names encode_document looks for, in this order (sentence-transformers' encode_document).
DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")



@dataclass
class ChunkedEmbeddings:
    """Chunk vectors of a list of documents.

    embeddings: [n_chunks, dim]; chunk_to_doc: [n_chunks] int64 index of each chunk's
    document; chunks: the chunk texts with their character spans.
    """

    embeddings: np.ndarray
    chunk_to_doc: np.ndarray
    chunks: list[Chunk]


def quantize_embeddings(x: np.ndarray, precision: str, quantizer: kernels.Int8Quantizer | None = None) -> np.ndarray:
    """float32 [n, d] -> the requested precision (sentence-transformers' conventions).

    int8 / uint8: per-dimension ranges from `quantizer`, else fitted on `x` itself;
    binary: packed sign bits as int8 (byte - 128); ubinary: packed sign bits as uint8.
    """
    if precision == "float32":
        return x
    if precision in ("int8", "uint8"):
        q = quantizer if quantizer is not None else kernels.Int8Quantizer().fit(x)
        codes = q.encode(x)
        return codes if precision == "int8" else (codes.astype(np.int16) + 128).astype(np.uint8)
    if precision in ("binary", "ubinary"):
        bits = kernels.binarize(x)
        return bits if precision == "ubinary" else (bits.astype(np.int16) - 128).astype(np.int8)
    raise InvalidValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")


class Encoder(OnnxModel):
    """An exported bi-encoder (see :func:`embedrank.export_model`) run with ONNX Runtime.

    Load with :meth:`load`. ``cache`` (a path, True for the user cache directory, or an
    EmbeddingCache) stores vectors by model fingerprint, settings and text, so repeated
    texts are encoded once. The session arguments are OnnxModel's.
    """

    KIND = "bi-encoder"
    OTHER_KIND_HINT = "use CrossEncoder for cross-encoders"

    def __init__(self, config: ModelConfig, variant: str = "fp32", providers=None, num_threads: int | None = None,
                 cache=None, native_attention: bool | None = None, bf16_attention: bool = False):
        super().__init__(config, variant=variant, providers=providers, num_threads=num_threads,
                         native_attention=native_attention, bf16_attention=bf16_attention)
        # pooling, Dense layers and normalization after the graph (see embedrank.models.head)
        # ("pooled": the graph pools; its [batch, hidden] output only meets the normalization)
        self.head = Head(pooling="mean" if config.pooling == "pooled" else config.pooling, dense=load_dense(config),
                         include_prompt=config.include_prompt)
        fallback = self.native_attention_fallback
        if fallback and self.native_attention_layers == 0 and variant != "bf16":  # bf16: OpenVINO's own
            _log.info("%s: attention runs on onnxruntime's kernels, not embedrank's: %s", config.path,
                      "; ".join(f"{reason} ({n} layers)" for reason, n in fallback.items()))
        self._prompt_tokens: dict[str, tuple[int, int]] = {}
        self._owns_cache = cache is not None and cache is not False and not _is_cache_object(cache)
        self.cache = self._open_cache(cache)
        self.fingerprint = config.fingerprint or (
            _files_fingerprint([config.variant_path(variant), config.tokenizer_path]) if self.cache is not None else "")

    def _output_width(self) -> int:
        # a token-level graph gives what the first Dense layer takes; a pooled one the final vectors
        rank = len(self.session.get_outputs()[0].shape or ())
        return self.config.token_width if rank == 3 else self.config.dimension

    @classmethod
    def load(cls, path: str | os.PathLike, variant: str = "fp32", providers=None, num_threads: int | None = None,
             cache=None, native_attention: bool | None = None, bf16_attention: bool = False) -> Encoder:
        """Opens an embedrank model folder. variant: "fp32", "opt" (ORT-fused), "int8" (dynamic int8),
        "pooled" (pooling inside the graph), "fp16" or "pooled_fp16" (float16, for the CUDA
        provider; "pooled_fp16" is the one to use there: only [B, H] leaves the device), "bf16"
        (model.onnx in bf16 on OpenVINO: CPUs with AMX-BF16 or AVX512-BF16, the openvino extra).
        native_attention: None runs the attention of a CPU session through embedrank's fused
        kernel where the graph allows (``encoder.native_attention_layers`` says how many
        layers), False never, True or an error (see embedrank.runtime.attention_fusion).
        bf16_attention: True runs that kernel's two products in bf16 (CPUs with AVX512-BF16;
        off by default, see OnnxModel)."""
        return super().load(path, variant=variant, providers=providers, num_threads=num_threads,
                            native_attention=native_attention, cache=cache, bf16_attention=bf16_attention)

    @staticmethod
    def _open_cache(cache):
        if cache is None or cache is False:
            return None
        from embedrank.models.cache import EmbeddingCache

        if isinstance(cache, EmbeddingCache):
            return cache
        return EmbeddingCache(None if cache is True else cache)

    def close(self) -> None:
        """Closes the embedding cache if this encoder opened it."""
        if self._owns_cache and self.cache is not None:
            self.cache.close()
        self.cache = None

    def __enter__(self) -> Encoder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- properties ----------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.config.dimension

    @property
    def native_attention_fallback(self) -> dict:
        """Why attention layers of this model do not run on embedrank's fused kernel: {reason:
        number of layers}, as the export found it in the fp32 graph (embedrank.json "attention";
        empty when every layer fuses or the folder predates the record)."""
        attention = self.config.raw.get("attention")
        fallback = attention.get("fallback") if isinstance(attention, dict) else None
        return dict(fallback) if isinstance(fallback, dict) else {}

    # -- encoding ------------------------------------------------------------------------
    def encode(self, texts, batch_size: int = 32, normalize: bool | None = None, prompt: str | None = None,
               truncate_dim: int | None = None, precision: str = "float32", show_progress: bool | None = None,
               max_tokens_per_batch: int | str | None = "auto", prompt_name: str | None = None) -> np.ndarray:
        """Embeds texts: a list of str (or one str, taken as a list of one).

        Returns [n, dim] float32 (or [n, truncate_dim]); int8/uint8 [n, d] or binary/ubinary
        [n, ceil(d / 8)] for the other precisions. The empty string is encoded like any text
        (its special tokens only). normalize=None follows the model (embedrank.json).

        Prompts, as sentence-transformers has them: `prompt` is put before every text; or
        `prompt_name` names one of the model's prompts (embedrank.json "prompts", from
        config_sentence_transformers.json); with neither, the model's default_prompt_name
        applies if it has one. prompt="" is no prompt (and no default). Passing both is an
        InvalidValueError. The prompt is part of the tokenized text: it counts toward
        max_seq_length and toward the cache key.

        Texts longer than max_seq_length tokens (prompt included) are truncated, with one
        TruncationWarning per call giving their count; a prompt that fills max_seq_length by
        itself (no token of any text fits) gives a PromptTruncationWarning.

        Batches: texts sorted by token length, at most `batch_size` texts and at most
        `max_tokens_per_batch` tokens once padded (None: no token cap; "auto": 1024 on the
        CPU provider, no cap on CUDA, see embedrank.runtime.sessions.CPU_MAX_TOKENS_PER_BATCH). Each
        batch is padded to its longest text, on CUDA rounded up to a multiple of
        sessions.CUDA_PAD_TO_MULTIPLE_OF (32) tokens. fp32 and opt give a text the same vector
        in any batch (within 1e-5); int8 does not quite: its dynamic quantization takes one
        activation scale per batch, so a vector moves with its batch mates (cosine about 0.99
        on SciFact documents in length-sorted batches; 0.97 for a short text padded beside
        long ones).
        """
        texts = check_texts(texts)
        max_tokens_per_batch = self._token_budget(max_tokens_per_batch)
        if precision not in PRECISIONS:
            raise InvalidValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
        prompt = self.resolve_prompt(prompt, prompt_name)
        normalize = self.config.normalize if normalize is None else bool(normalize)
        out_dim = self._check_truncate_dim(truncate_dim)
        check_encodable(texts)
        prompt_length, prompt_fills = 0, False
        if prompt and texts:
            check_encodable([prompt], "prompt")
            prompt_length, prompt_fills = self._check_prompt(prompt, len(texts))
            texts = [prompt + t for t in texts]
        if not texts:
            return _empty(out_dim, precision)
        vectors = self._encode_float(texts, batch_size, normalize, truncate_dim, show_progress, max_tokens_per_batch,
                                     prompt_length, not prompt_fills)
        return quantize_embeddings(vectors, precision)

    def resolve_prompt(self, prompt: str | None = None, prompt_name: str | None = None) -> str:
        """The prompt text encode() puts before each text (see encode): `prompt`, the prompt named
        `prompt_name`, the model's default prompt, or "" for none."""
        if prompt is not None and not isinstance(prompt, str):
            raise InvalidTypeError(f"prompt must be a str or None, got {type(prompt).__name__}")
        if prompt_name is not None and not isinstance(prompt_name, str):
            raise InvalidTypeError(f"prompt_name must be a str or None, got {type(prompt_name).__name__}")
        if prompt is not None and prompt_name is not None:
            raise InvalidValueError("pass either prompt or prompt_name, not both")
        if prompt is not None:
            return prompt
        prompts = self.config.prompts
        if prompt_name is not None:
            if prompt_name not in prompts:
                raise InvalidValueError(f"prompt_name {prompt_name!r} is not one of the model's prompts "
                                        f"({', '.join(sorted(prompts)) or 'none'})")
            return prompts[prompt_name] or ""
        if self.config.default_prompt_name is not None:
            return prompts.get(self.config.default_prompt_name) or ""
        return ""

    def _check_prompt(self, prompt: str, n_texts: int) -> tuple[int, bool]:
        """Warns (PromptTruncationWarning) when the prompt leaves no room for a text's tokens;
        returns (the prompt's length in tokens as sentence-transformers counts it for pooling:
        its tokens with special tokens, less a trailing special token; whether it warned)."""
        if prompt not in self._prompt_tokens:
            tok = self.tokenizer.tokenizer
            ids = tok.encode(prompt, add_special_tokens=True).ids
            specials = {i for i, t in tok.get_added_tokens_decoder().items() if t.special}
            length = len(ids) - (1 if ids and ids[-1] in specials else 0)
            self._prompt_tokens[prompt] = (len(ids), length)
        with_specials, length = self._prompt_tokens[prompt]
        if with_specials >= self.max_seq_length:
            shown = prompt if len(prompt) <= 60 else prompt[:57] + "..."
            warnings.warn(f"the prompt {shown!r} takes {with_specials} tokens with the special tokens, which fills "
                          f"max_seq_length={self.max_seq_length}: no token of the {n_texts} texts fits after it, so all "
                          f"{n_texts} were cut to the prompt", PromptTruncationWarning, stacklevel=3)
        return length, with_specials >= self.max_seq_length

    def encode_query(self, texts, prompt_name: str | None = None, prompt: str | None = None, **kwargs) -> np.ndarray:
        """encode() with the model's "query" prompt when it has one and neither prompt nor
        prompt_name is given (sentence-transformers' encode_query; an empty "query" prompt
        means no prompt, not the default one).

        The prompts are the folder's own (config_sentence_transformers.json, kept in
        embedrank.json). sentence-transformers 6.3 adds an empty "query" and "document" prompt
        to every model it loads, so there a model without a "query" prompt gets no prompt
        rather than its default one, and a document prompt named "passage" (E5) is never used
        by its encode_document; embedrank uses the prompts the folder names."""
        if prompt is None and prompt_name is None and "query" in self.config.prompts:
            prompt_name = "query"
        return self.encode(texts, prompt=prompt, prompt_name=prompt_name, **kwargs)

    def encode_queries(self, texts, **kwargs) -> np.ndarray:
        """encode_query() under its earlier name."""
        return self.encode_query(texts, **kwargs)

    def encode_document(self, docs, prompt_name: str | None = None, prompt: str | None = None, **kwargs):
        """encode_documents() (str, or BEIR dicts {"title", "text"}) with the first of the model's
        "document", "passage" and "corpus" prompts when neither prompt nor prompt_name is given
        (sentence-transformers' encode_document). Takes encode_documents' chunking arguments."""
        return self.encode_documents(docs, prompt_name=prompt_name, prompt=prompt, **kwargs)

    def _document_prompt_name(self) -> str | None:
        return next((name for name in DOCUMENT_PROMPT_NAMES if name in self.config.prompts), None)

    def encode_documents(self, docs, chunking: bool = False, max_tokens: int | None = None,
                         overlap: int | None = None, **kwargs):
        """Embeds documents (str, or BEIR dicts {"title", "text"}) with the document prompt (the
        first of the model's "document", "passage" and "corpus" prompts, unless prompt or
        prompt_name is given, as in encode_document).

        chunking=False: [n, dim] as encode(). chunking=True: long documents are split into
        overlapping token windows (defaults from the model's max_seq_length: 224/32 for 256,
        400/50 for 512) and a ChunkedEmbeddings is returned.
        """
        if isinstance(docs, (str, dict)):
            docs = [docs]
        docs = check_docs(docs)
        for i, d in enumerate(docs):
            # document_text would turn None or a number into its repr and embed that
            if not isinstance(d, dict):
                continue
            if "text" in d and not isinstance(d["text"], str):
                raise InvalidTypeError(f"docs[{i}]['text'] must be a str, got {type(d['text']).__name__}")
            if d.get("title") is not None and not isinstance(d["title"], str):
                raise InvalidTypeError(f"docs[{i}]['title'] must be a str or None, got {type(d['title']).__name__}")
        texts = [document_text(d) for d in docs]
        if kwargs.get("prompt") is None and kwargs.get("prompt_name") is None:
            kwargs["prompt_name"] = self._document_prompt_name()
        if not chunking:
            return self.encode(texts, **kwargs)
        default_tokens, default_overlap = default_chunking(self.max_seq_length)
        max_tokens = default_tokens if max_tokens is None else max_tokens
        overlap = default_overlap if overlap is None else overlap
        chunks: list[Chunk] = []
        owners: list[int] = []
        for i, text in enumerate(texts):
            pieces = chunk(text, self.tokenizer, max_tokens, overlap)
            chunks.extend(pieces)
            owners.extend([i] * len(pieces))
        vectors = self.encode([c.text for c in chunks], **kwargs)
        return ChunkedEmbeddings(vectors, np.asarray(owners, dtype=np.int64), chunks)

    def encode_to_file(self, texts: Iterable[str], path: str | os.PathLike, block_size: int = 4096,
                       show_progress: bool | None = None, **kwargs) -> np.memmap:
        """Streams any iterable of texts into a .npy file, holding one block of texts at a time.

        The file appears only when complete (written beside it, then renamed). Returns the
        result opened as a read-only memory map [n, dim].
        """
        path = Path(path)
        if path.suffix != ".npy":
            raise InvalidValueError(f"path must end in .npy, got {path}")
        if isinstance(texts, str):
            texts = [texts]
        kwargs["show_progress"] = False
        total = len(texts) if hasattr(texts, "__len__") else None
        progress = progress_bar(total, show_progress, "encoding")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, raw_name = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".raw")
        n_rows, width, dtype = 0, None, None
        try:
            with os.fdopen(fd, "wb") as raw:
                block: list[str] = []
                for i, text in enumerate(texts):
                    if not isinstance(text, str):
                        raise InvalidTypeError(f"texts[{i}] must be a str, got {type(text).__name__}")
                    block.append(text)
                    if len(block) == block_size:
                        width, dtype = self._write_block(raw, block, kwargs)
                        n_rows += len(block)
                        progress.update(len(block))
                        block = []
                if block or n_rows == 0:
                    width, dtype = self._write_block(raw, block, kwargs)
                    n_rows += len(block)
                    progress.update(len(block))
            _raw_to_npy(Path(raw_name), path, (n_rows, width), dtype)
        finally:
            progress.close()
            if os.path.exists(raw_name):
                os.unlink(raw_name)
        return np.load(path, mmap_mode="r")

    def _write_block(self, raw, block: list[str], kwargs: dict) -> tuple[int, np.dtype]:
        vectors = self.encode(block, **kwargs)
        raw.write(np.ascontiguousarray(vectors).tobytes())
        return vectors.shape[1], vectors.dtype

    # -- internals -----------------------------------------------------------------------
    def _check_truncate_dim(self, truncate_dim) -> int:
        if truncate_dim is None:
            return self.dim
        if isinstance(truncate_dim, bool) or not isinstance(truncate_dim, (int, np.integer)):
            raise InvalidTypeError(f"truncate_dim must be an integer or None, got {type(truncate_dim).__name__}")
        if not 1 <= truncate_dim <= self.dim:
            raise InvalidValueError(f"truncate_dim must be in [1, {self.dim}], got {truncate_dim}")
        return int(truncate_dim)

    def _settings(self, normalize: bool, truncate_dim, prompt_length: int = 0) -> dict:
        """Everything besides the text that changes a float32 vector (the cache's namespace). The
        texts are keyed with their prompt; a Pooling that leaves the prompt out also depends on
        how many of the text's tokens are prompt, so that count is in the namespace too."""
        settings = {
            "variant": self.variant,
            "max_seq_length": self.max_seq_length,
            "pooling": self.config.pooling,
            "normalize": normalize,
            "truncate_dim": truncate_dim,
        }
        if not self.head.include_prompt:
            settings["pooled_after_prompt_tokens"] = prompt_length
        if self.bf16_attention_layers:  # (only when on: the caches written before it keep their keys)
            settings["bf16_attention"] = True
        return settings

    def _encode_float(self, texts: list[str], batch_size, normalize, truncate_dim, show_progress,
                      max_tokens_per_batch, prompt_length: int = 0, warn_truncation: bool = True) -> np.ndarray:
        out_dim = truncate_dim or self.dim
        result = np.empty((len(texts), out_dim), dtype=np.float32)
        todo = list(range(len(texts)))
        namespace = None
        if self.cache is not None and texts:
            from embedrank.models.cache import EmbeddingCache

            namespace = EmbeddingCache.namespace(self.fingerprint, self._settings(normalize, truncate_dim, prompt_length))
            found = self.cache.get_many(namespace, texts)
            todo = [i for i, v in enumerate(found) if v is None or v.shape != (out_dim,)]
            for i, v in enumerate(found):
                if v is not None and v.shape == (out_dim,):
                    result[i] = v
        if todo:
            missing = [texts[i] for i in todo]
            vectors = self._run_model(missing, batch_size, normalize, truncate_dim, show_progress, max_tokens_per_batch,
                                      prompt_length, warn_truncation)
            result[todo] = vectors
            if namespace is not None:
                self.cache.put_many(namespace, missing, vectors)
        return result

    def _run_model(self, texts: list[str], batch_size, normalize, truncate_dim, show_progress,
                   max_tokens_per_batch, prompt_length: int = 0, warn_truncation: bool = True) -> np.ndarray:
        encodings, n_truncated = self.tokenizer.encode(texts)
        if n_truncated and warn_truncation:  # (not again when the prompt alone fills max_seq_length)
            warnings.warn(
                f"{n_truncated} of {len(texts)} texts were longer than max_seq_length={self.max_seq_length} "
                "tokens and were truncated", TruncationWarning, stacklevel=4)
        out = np.empty((len(texts), truncate_dim or self.dim), dtype=np.float32)
        return self._run_batches(encodings, out, batch_size, max_tokens_per_batch, show_progress, "encoding",
                                 lambda output, batch: self._pool(output, batch.attention_mask, normalize, truncate_dim,
                                                                  prompt_length))

    def _pool(self, output: np.ndarray, attention_mask: np.ndarray, normalize: bool, truncate_dim,
              prompt_length: int = 0) -> np.ndarray:
        """The head: token states [b, L, H] (or pooled [b, D]) -> vectors [b, truncate_dim or D].
        Mean and CLS pooling without Dense layers run in the C++ kernels; the other poolings,
        Dense layers and a pool that leaves the prompt out in embedrank.models.head."""
        threads = self.num_threads
        head = self.head
        plain = not head.dense and (head.include_prompt or not prompt_length)
        if output.ndim == 2:  # pooled inside the graph (Dense layers included)
            pooled = kernels.normalize(output, num_threads=threads) if normalize else np.asarray(output, np.float32)
        elif plain and head.pooling == "mean":
            pooled = kernels.mean_pool_normalize(output, attention_mask, normalize=normalize, num_threads=threads)
        elif plain and head.pooling == "cls":
            pooled = kernels.cls_pool(output, normalize=normalize, num_threads=threads)
        else:
            pooled = head(output, attention_mask, normalize, prompt_length)
        if truncate_dim is not None and truncate_dim != pooled.shape[1]:
            pooled = (kernels.truncate_normalize(pooled, truncate_dim, num_threads=threads) if normalize
                      else np.ascontiguousarray(pooled[:, :truncate_dim]))
        return pooled


def _empty(dim: int, precision: str) -> np.ndarray:
    """The [0, width] result of encoding no text, in the dtype of `precision`."""
    width = (dim + 7) // 8 if precision in ("binary", "ubinary") else dim
    dtype = {"float32": np.float32, "int8": np.int8, "binary": np.int8}.get(precision, np.uint8)
    return np.empty((0, width), dtype=dtype)


def _is_cache_object(cache) -> bool:
    from embedrank.models.cache import EmbeddingCache

    return isinstance(cache, EmbeddingCache)


def _files_fingerprint(paths) -> str:
    """sha256 over the bytes of the given files (for models exported without a fingerprint)."""
    import hashlib

    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _raw_to_npy(raw_path: Path, path: Path, shape: tuple[int, int], dtype) -> None:
    """Writes a .npy (header + the raw rows, copied in blocks) next to `path`, then renames it in."""
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as out, open(raw_path, "rb") as raw:
        np.lib.format.write_array_header_1_0(out, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                   "fortran_order": False, "shape": shape})
        while True:
            block = raw.read(1 << 24)
            if not block:
                break
            out.write(block)
    os.replace(tmp, path)
