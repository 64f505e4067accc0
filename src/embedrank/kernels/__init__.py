"""embedrank's native kernels: pooling, quantization, exact top-k search and attention.

All heavy work runs in C++ (`embedrank._kernels`) without the GIL, on the library's thread
pool (``num_threads=None`` means all cores), at the ISA level chosen at import: the highest
the CPU supports, or the level named by the environment variable ``EMBEDRANK_ISA``
(``scalar``, ``avx2`` or ``avx512``; a level above the CPU's is an ImportError).
"""

from embedrank.kernels._isa import ISA_ENV_VAR, ISA_LEVELS, capabilities
from embedrank.kernels.attention import attention, bf16_dots_supported
from embedrank.kernels.pooling import cls_pool, mean_pool_normalize, normalize, truncate_normalize
from embedrank.kernels.quantization import Int8Quantizer, binarize
from embedrank.kernels.search import quantize_queries, rescore, topk_float32, topk_hamming, topk_int8

__all__ = [
    "ISA_ENV_VAR",
    "ISA_LEVELS",
    "Int8Quantizer",
    "attention",
    "bf16_dots_supported",
    "binarize",
    "capabilities",
    "cls_pool",
    "mean_pool_normalize",
    "normalize",
    "quantize_queries",
    "rescore",
    "topk_float32",
    "topk_hamming",
    "topk_int8",
    "truncate_normalize",
]
