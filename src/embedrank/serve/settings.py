"""ServeSettings: everything ``embedrank serve`` is told, in one frozen, validated record."""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass

from embedrank.errors import InvalidTypeError, InvalidValueError
from embedrank.utils.checks import check_positive_int

__all__ = ["ServeSettings"]

VARIANTS = ("fp32", "opt", "int8", "bf16", "pooled", "fp16", "pooled_fp16")


@dataclass(frozen=True)
class ServeSettings:
    """model: an embedrank model folder (bi-encoder); variant: its graph; reranker: a
    cross-encoder folder or None; retriever: a saved Retriever folder or None (it uses its own
    encoder and reranker); host/port: where to listen (127.0.0.1 unless told otherwise);
    api_key: when set, every endpoint but /health needs ``Authorization: Bearer <api_key>``;
    max_batch_tokens / max_batch_requests: how much one model call may take from the queue;
    max_concurrent_requests: requests in flight before new ones get 429; max_client_batch_size:
    texts (or documents) one request may carry; payload_limit: bytes of one request body;
    num_threads: onnxruntime threads per model (None: all cores); model_name: the name the
    API reports (default: the model folder's name); graceful_timeout: seconds a SIGTERM waits
    for the requests in flight before cancelling them."""

    model: str | None = None
    variant: str = "fp32"
    reranker: str | None = None
    retriever: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = None
    max_batch_tokens: int = 16384
    max_batch_requests: int = 256
    max_concurrent_requests: int = 512
    max_client_batch_size: int = 256
    payload_limit: int = 2_000_000
    num_threads: int | None = None
    model_name: str | None = None
    graceful_timeout: int = 60

    def __post_init__(self) -> None:
        if self.model is None and self.retriever is None:
            raise InvalidValueError("give a model folder (--model) or a saved retriever (--retriever)")
        if self.variant not in VARIANTS:
            raise InvalidValueError(f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        for name in ("max_batch_tokens", "max_batch_requests", "max_concurrent_requests", "max_client_batch_size",
                     "payload_limit", "graceful_timeout"):
            check_positive_int(getattr(self, name), name)
        if isinstance(self.port, bool) or not isinstance(self.port, numbers.Integral) or not 0 <= self.port <= 65535:
            raise InvalidValueError(f"port must be an integer in [0, 65535], got {self.port!r}")
        if self.api_key is not None and (not isinstance(self.api_key, str) or not self.api_key):
            raise InvalidTypeError("api_key must be a non-empty str or None")

    def replace(self, **changes) -> ServeSettings:
        return dataclasses.replace(self, **changes)
