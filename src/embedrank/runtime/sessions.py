"""ONNX Runtime sessions: provider choice and threading."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
from embedrank.errors import AttentionFallbackWarning, InvalidValueError
from embedrank.utils.threads import available_cores, resolve_num_threads

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
# The token budget per batch that max_tokens_per_batch="auto" means on the CPU provider: 4
# texts of 256 tokens (2 pairs of 512), small enough that a batch's activations stay near the
# cores' caches and large enough to keep the matrix products efficient; the batching sweep in
# benchmarks/results/encoder.md is where it was chosen.
CPU_MAX_TOKENS_PER_BATCH = 1024


# The most intra-op threads a session may have per core this process can use. onnxruntime
# creates and spins every thread it is given, and with hundreds per core a session takes
# minutes to start and its runs crawl (2000 on a 2-core machine looked like a hang); beyond
# one per core threads only compete, so 4x leaves room for oversubscription on purpose.
MAX_THREADS_PER_CORE = 4


def check_session_threads(num_threads) -> int:
    """num_threads for an onnxruntime session: None is every available core; an int must be in
    [1, MAX_THREADS_PER_CORE x available cores] (InvalidValueError naming both numbers)."""
    threads = resolve_num_threads(num_threads)
    cores = available_cores()
    if threads > MAX_THREADS_PER_CORE * cores:
        raise InvalidValueError(f"num_threads={threads} is more than {MAX_THREADS_PER_CORE} threads per core for "
                                f"onnxruntime ({cores} available cores: at most {MAX_THREADS_PER_CORE * cores})")
    return threads


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
        raise InvalidValueError(f"providers {missing} are not available in this onnxruntime; available: {available}{hint}")
    return wanted


# Graph fusions that onnxruntime's CPU provider runs slower than the ops they replace, so
# sessions on the CPU alone leave them out: SkipLayerNormFusion turns Add + LayerNormalization
# into SkipLayerNormalization, whose CPU kernel is slower than the pair it replaces
# (`python -m embedrank.bench.session_fusions` measures both; benchmarks/results/session_fusions.md).
CPU_DISABLED_FUSIONS = ("SkipLayerNormFusion",)


def disabled_fusions(providers: Sequence[str]) -> list[str]:
    """The graph fusions to leave out for a session on `providers`: CPU_DISABLED_FUSIONS when
    the CPU provider is the only one, else none (the CUDA kernels of the fused ops are fast)."""
    return list(CPU_DISABLED_FUSIONS) if list(providers) == [CPU] else []


def make_session(model_path: Path, providers: Sequence[str] | str | None, num_threads: int | None,
                 native_attention: bool | None = None, bf16: bool = False, profile_prefix: str | None = None,
                 bf16_attention: bool = False):
    """(InferenceSession, number of attention cores run by embedrank's fused kernel).

    bf16=True: an OpenVinoSession instead (embedrank.runtime.openvino_session: the graph in
    bf16 on OpenVINO's CPU plugin), which needs the CPU alone and no native_attention=True.

    The session has the graph optimizations (less disabled_fusions) and `num_threads`
    intra-op threads (None: every core this process may use). native_attention: None (default) rewrites the attention cores of a
    CPU-only session into ai.embedrank::Attention (see embedrank.runtime.attention_fusion) when the
    graph has recognisable ones, and falls back to the graph as it is, with a AttentionFallbackWarning,
    if the rewritten one cannot be loaded or run; False never rewrites; True requires it (a
    ValueError if the provider is not the CPU alone or no core is recognised or it fails).
    bf16_attention=True: the fused attention runs its two products in bf16 (see
    embedrank.kernels.attention); it requires the rewrite as native_attention=True does, and a
    CPU with AVX512-BF16 at the avx512 ISA level (a ValueError naming what is missing).
    profile_prefix: onnxruntime's per-node trace is recorded and written under this prefix by
    ``session.end_profiling()`` (embedrank.bench.roofline's time breakdown); bf16 sessions
    take no prefix (OpenVinoSession has its own ``perf_counts``).
    """
    import onnxruntime as ort

    threads = check_session_threads(num_threads)
    if native_attention is not None and not isinstance(native_attention, bool):
        raise InvalidValueError(f"native_attention must be True, False or None, got {native_attention!r}")
    if not isinstance(bf16_attention, (bool, np.bool_)):
        raise InvalidValueError(f"bf16_attention must be True or False, got {bf16_attention!r}")
    if bf16_attention:
        _check_bf16_attention(bf16, native_attention)
        native_attention = True  # the bf16 products are the fused kernel's
    if bf16:
        if profile_prefix is not None:
            raise InvalidValueError("profile_prefix is for onnxruntime sessions; a bf16 session records OpenVINO's perf_counts")
        return _bf16_session(model_path, providers, threads, native_attention), 0
    chosen = choose_providers(providers)
    if native_attention and chosen != [CPU]:
        what = "bf16_attention=True" if bf16_attention else "native_attention=True"
        raise InvalidValueError(f"{what} needs the CPU provider alone (providers='cpu'), got {chosen}")

    def options():
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        if profile_prefix is not None:
            opts.enable_profiling = True
            opts.profile_file_prefix = str(profile_prefix)
        return opts

    def open_session(source, opts):
        try:
            return ort.InferenceSession(source, sess_options=opts, providers=chosen,
                                        disabled_optimizers=disabled_fusions(chosen))
        except ValueError:
            raise
        except Exception as error:  # onnxruntime raises its own exception types for bad files
            raise InvalidValueError(f"{model_path} could not be loaded by onnxruntime: {error}") from None

    if native_attention is not False and chosen == [CPU]:
        try:
            return _fused_session(Path(model_path), options(), open_session, bf16_attention)
        except _NotFused as why:
            if native_attention:
                raise InvalidValueError(f"{model_path}: {why}") from None
            if why.warn:
                warnings.warn(f"{model_path}: {why}; running onnxruntime's own attention", AttentionFallbackWarning, stacklevel=3)
    return open_session(str(model_path), options()), 0


def _check_bf16_attention(bf16: bool, native_attention: bool | None) -> None:
    from embedrank.kernels import bf16_dots_supported

    if bf16:
        raise InvalidValueError("bf16_attention is for onnxruntime variants; variant 'bf16' runs all of the graph "
                                "in bf16 on OpenVINO already")
    if native_attention is False:
        raise InvalidValueError("bf16_attention=True needs embedrank's fused attention, and native_attention=False "
                                "turns it off")
    if not bf16_dots_supported():
        raise InvalidValueError("bf16_attention=True needs a CPU with AVX512-BF16 (and the avx512 ISA level); "
                                "this one lacks it: use bf16_attention=False")


def _bf16_session(model_path: Path, providers, threads: int, native_attention: bool | None):
    from embedrank.runtime.openvino_session import OpenVinoSession

    names = [providers] if isinstance(providers, str) else list(providers or [CPU])
    if [p if p.endswith("ExecutionProvider") else {"cpu": CPU}.get(p.lower(), p) for p in names] != [CPU]:
        raise InvalidValueError(f"variant 'bf16' runs on the CPU (OpenVINO), not on {providers!r}; on a GPU use 'fp16'")
    if native_attention:
        raise InvalidValueError("native_attention=True is for onnxruntime sessions; variant 'bf16' runs on OpenVINO")
    return OpenVinoSession(Path(model_path), threads)


class _NotFused(Exception):
    """Why a session runs without embedrank's attention; `warn` when something is broken."""

    def __init__(self, message: str, warn: bool = True):
        super().__init__(message)
        self.warn = warn


def _fused_session(model_path: Path, opts, open_session, bf16_dots: bool = False):
    """(session on the rewritten graph, cores fused), checked by one tiny run, or _NotFused."""
    from embedrank.runtime import attention_fusion
    try:
        data, fused = attention_fusion.load_fused(model_path, bf16_dots)
    except Exception as error:  # an unreadable or invalid file: the plain load reports it
        raise _NotFused(f"cannot rewrite its attention: {error}", warn=False) from None
    if data is None:
        raise _NotFused("has no attention core that embedrank's kernel can run", warn=False)
    try:
        opts.register_custom_ops_library(str(attention_fusion.library_path()))
        session = open_session(data, opts)
        _smoke_run(session)
    except Exception as error:
        raise _NotFused(f"the graph with embedrank's attention failed: {error}") from None
    return session, fused


def _smoke_run(session) -> None:
    """Runs `session` once on one 3-token text when its inputs are [batch, tokens] int64 ids
    and masks (an encoder's), so that a rewritten graph that cannot run fails here."""
    feeds = {}
    for value in session.get_inputs():
        if value.type != "tensor(int64)" or len(value.shape) != 2:
            return
        feeds[value.name] = (np.ones if value.name == "attention_mask" else np.zeros)((1, 3), dtype=np.int64)
    session.run(None, feeds)


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
        raise InvalidValueError(f'max_tokens_per_batch must be a positive integer, None or "auto", got {max_tokens_per_batch!r}')
    return max_tokens_per_batch
