"""ONNX Runtime sessions: provider choice and threading."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
# The token budget per batch that max_tokens_per_batch="auto" means on the CPU provider: 4
# texts of 256 tokens (2 pairs of 512), whose activations (MiniLM's FFN [tokens, 1536] float32
# is 6 MiB) stay near the cores' caches. Measured on SciFact against batches of 32: encoder
# fp32 and int8 about 1.3x the documents/s, the int8 cross-encoder about 1.3x the pairs/s.
CPU_MAX_TOKENS_PER_BATCH = 1024


def choose_providers(providers: Sequence[str] | str | None) -> list[str]:
    """The CUDA provider when onnxruntime-gpu offers it (then CPU as fallback), else CPU.

    Naming a provider that this onnxruntime lacks is a ValueError listing the available ones
    (asking for CUDA needs the `gpu` extra: onnxruntime-gpu).
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    if providers is None:
        return [CUDA, CPU] if CUDA in available else [CPU]
    if isinstance(providers, str):
        providers = [providers]
    wanted = [p if p.endswith("ExecutionProvider") else {"cpu": CPU, "cuda": CUDA}.get(p.lower(), p) for p in providers]
    missing = [p for p in wanted if p not in available]
    if missing:
        hint = " (install embedrank[gpu], i.e. onnxruntime-gpu, on a machine with CUDA)" if CUDA in missing else ""
        raise ValueError(f"providers {missing} are not available in this onnxruntime; available: {available}{hint}")
    return wanted


# Graph fusions that onnxruntime's CPU provider runs slower than the ops they replace, so
# sessions on the CPU alone leave them out. SkipLayerNormFusion turns Add + LayerNormalization
# into SkipLayerNormalization, whose CPU kernel (onnxruntime 1.32) took 1.40 ms on [4, 256, 384]
# against 0.33 ms for the pair on 2 cores; the int8 MiniLM graph has six of them and encodes
# SciFact about 9% faster without them (benchmarks/bench_session_fusions.py measures both).
CPU_DISABLED_FUSIONS = ("SkipLayerNormFusion",)


def disabled_fusions(providers: Sequence[str]) -> list[str]:
    """The graph fusions to leave out for a session on `providers`: CPU_DISABLED_FUSIONS when
    the CPU provider is the only one, else none (the CUDA kernels of the fused ops are fast)."""
    return list(CPU_DISABLED_FUSIONS) if list(providers) == [CPU] else []


def make_session(model_path: Path, providers: Sequence[str] | str | None, num_threads: int | None,
                 native_attention: bool | None = None):
    """(InferenceSession, number of attention cores run by embedrank's fused kernel).

    The session has the graph optimizations (less disabled_fusions) and `num_threads`
    intra-op threads. native_attention: None (default) rewrites the attention cores of a
    CPU-only session into ai.embedrank::Attention (see embedrank.native_attention) when the
    graph has recognisable ones; False never does; True requires it (a ValueError if the
    provider is not the CPU alone or no core is recognised).
    """
    import onnxruntime as ort

    if num_threads is not None and (isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1):
        raise ValueError(f"num_threads must be a positive integer or None, got {num_threads!r}")
    if native_attention is not None and not isinstance(native_attention, bool):
        raise ValueError(f"native_attention must be True, False or None, got {native_attention!r}")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = num_threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    chosen = choose_providers(providers)
    source, fused = str(model_path), 0
    if native_attention is not False and chosen == [CPU]:
        source, fused = _fused_source(Path(model_path), options, required=native_attention is True)
    elif native_attention:
        raise ValueError(f"native_attention=True needs the CPU provider alone, got {chosen}")
    try:
        session = ort.InferenceSession(source, sess_options=options, providers=chosen,
                                       disabled_optimizers=disabled_fusions(chosen))
    except ValueError:
        raise
    except Exception as error:  # onnxruntime raises its own exception types for bad files
        raise ValueError(f"{model_path} could not be loaded by onnxruntime: {error}") from None
    return session, fused


def _fused_source(model_path: Path, options, required: bool):
    """(model bytes with fused attention or the path as given, cores fused); registers the
    custom-op library on `options` when it is used."""
    from embedrank import native_attention

    try:
        data, fused = native_attention.load_fused(model_path)
    except Exception as error:  # an unreadable or invalid file: onnxruntime reports it below
        if required:
            raise ValueError(f"{model_path}: cannot rewrite its attention: {error}") from None
        return str(model_path), 0
    if data is None:
        if required:
            raise ValueError(f"{model_path} has no attention core that embedrank's kernel can run")
        return str(model_path), 0
    options.register_custom_ops_library(str(native_attention.library_path()))
    return data, fused


# Batches on the CUDA provider are padded to a multiple of this many tokens: the fused
# attention of the fp16 graphs (cuDNN flash attention) builds a plan for every new shape, and
# a corpus padded to each batch's own longest length has dozens of them.
CUDA_PAD_TO_MULTIPLE_OF = 32


def pad_multiple(provider: str) -> int:
    """The padded length's granularity on `provider`: CUDA_PAD_TO_MULTIPLE_OF on CUDA, else 1."""
    return CUDA_PAD_TO_MULTIPLE_OF if provider == CUDA else 1


def token_budget(max_tokens_per_batch, provider: str) -> int | None:
    """max_tokens_per_batch as a batching cap: "auto" is CPU_MAX_TOKENS_PER_BATCH on the CPU
    provider and no cap (None) on CUDA, where big batches win; an int >= 1 or None as given."""
    if isinstance(max_tokens_per_batch, str) and max_tokens_per_batch == "auto":
        return None if provider == CUDA else CPU_MAX_TOKENS_PER_BATCH
    if max_tokens_per_batch is not None and (isinstance(max_tokens_per_batch, (bool, str))
                                             or not isinstance(max_tokens_per_batch, int) or max_tokens_per_batch < 1):
        raise ValueError(f'max_tokens_per_batch must be a positive integer, None or "auto", got {max_tokens_per_batch!r}')
    return max_tokens_per_batch
