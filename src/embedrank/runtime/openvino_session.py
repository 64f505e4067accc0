"""The bf16 variant: the fp32 graph (model.onnx, standard ONNX) compiled by OpenVINO's CPU
plugin with bf16 weights and activations and fp32 accumulation.

Why OpenVINO: onnxruntime's CPU provider has no bf16 matrix products on x86, and OpenVINO's
oneDNN kernels use AMX-BF16 tiles on Intel (Sapphire Rapids and later) and AVX512-BF16
(vdpbf16ps) on AMD Zen 4 and Intel Cooper Lake. benchmarks/bench_encoder_peers.py measures it
against the peers. OpenVINO falls back to fp32 without a word on CPUs with neither, so this
module checks the CPU itself and refuses there.

:class:`OpenVinoSession` answers the part of onnxruntime's ``InferenceSession`` that
:class:`~embedrank.models.onnx_model.OnnxModel` uses (``get_inputs``, ``get_outputs``,
``get_providers``, ``run``), so the batch loop, pooling and checks are the same code.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from embedrank.errors import InvalidValueError, MissingDependencyError

__all__ = ["BF16_FEATURES", "PROVIDER", "OpenVinoSession", "bf16_feature"]

# The CPU features that give bf16 matrix products, best first (as embedrank's CPU detection
# names them: CPUID and, for AMX, the kernel's permission to use the tiles).
BF16_FEATURES = ("amx_bf16", "avx512_bf16")
# What get_providers() reports for this session.
PROVIDER = "OpenVINO-CPU-bf16"
OPENVINO_HINT = "pip install 'embedrank[openvino]' (the openvino package)"


def bf16_feature(detected: Sequence[str] | None = None) -> str | None:
    """The best feature of BF16_FEATURES this CPU has ("amx_bf16" or "avx512_bf16"), or None.
    detected: the CPU's features (default: embedrank.kernels.capabilities()["detected"])."""
    if detected is None:
        from embedrank.kernels import capabilities
        detected = capabilities()["detected"]
    return next((feature for feature in BF16_FEATURES if feature in detected), None)


class _Value(NamedTuple):
    """An input or output as onnxruntime's NodeArg describes it: name, type, shape."""
    name: str
    type: str
    shape: list


_ELEMENT_TYPES = {"i64": "tensor(int64)", "i32": "tensor(int32)", "f32": "tensor(float)", "f16": "tensor(float16)",
                  "bf16": "tensor(bfloat16)"}


_NUMPY_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32,
                "tensor(float16)": np.float16}


def _describe(port) -> _Value:
    shape = [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
    element = port.get_element_type().get_type_name()
    return _Value(port.get_any_name(), _ELEMENT_TYPES.get(element, element), shape)


def _reason(error: Exception) -> str:
    """OpenVINO's message without its leading source locations ("Exception from src/...",
    "Check '...' failed at ...")."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    told = [line for line in lines if not line.startswith(("Exception from ", "Check '"))]
    return (told or lines or [type(error).__name__])[0]


class OpenVinoSession:
    """model_path (an ONNX file) compiled for the CPU in bf16, on `num_threads` threads.

    Thread-safe like an onnxruntime session: each concurrent ``run`` takes its own OpenVINO
    infer request from a pool (made on first need, reused after), and its outputs are copies,
    never views of a request's buffers that the next run overwrites.
    Raises InvalidValueError on a CPU without AMX-BF16 or AVX512-BF16 (naming what it has),
    MissingDependencyError without openvino.
    perf_counts=True: OpenVINO's per-node timers run, and ``node_times()`` sums them over every
    run so far (embedrank.bench.roofline's time breakdown).
    """

    def __init__(self, model_path: Path, num_threads: int, detected: Sequence[str] | None = None,
                 perf_counts: bool = False):
        feature = bf16_feature(detected)
        if feature is None:
            raise InvalidValueError("variant 'bf16' needs a CPU with AMX-BF16 or AVX512-BF16 (Intel Sapphire Rapids "
                                    "or later, AMD Zen 4 or later) and this one has neither; use variant 'fp32' "
                                    "(same results) or 'int8' (faster)")
        try:
            import openvino as ov
        except ImportError:
            raise MissingDependencyError(f"variant 'bf16' runs on OpenVINO: {OPENVINO_HINT}") from None
        self.bf16_feature = feature
        core = ov.Core()
        try:
            model = core.read_model(str(model_path))
            self._compiled = core.compile_model(model, "CPU", {
                "INFERENCE_PRECISION_HINT": "bf16",
                "INFERENCE_NUM_THREADS": int(num_threads),
                # one stream: a call's batch uses every thread (embedrank batches; OpenVINO
                # should not split the cores between requests)
                "PERFORMANCE_HINT": "LATENCY",
                "PERF_COUNT": bool(perf_counts),
            })
        except Exception as error:  # OpenVINO raises RuntimeError subclasses for bad files
            raise InvalidValueError(f"{model_path} could not be compiled by OpenVINO: {_reason(error)}") from None
        precision = self._compiled.get_property("INFERENCE_PRECISION_HINT")
        if precision != ov.Type.bf16:
            raise InvalidValueError(f"OpenVINO compiled {model_path} in {precision}, not bf16, although the CPU "
                                    f"reports {feature}; use variant 'fp32'")
        self._inputs = [_describe(port) for port in self._compiled.inputs]
        self._outputs = [_describe(port) for port in self._compiled.outputs]
        self._ports = {value.name: port for value, port in zip(self._outputs, self._compiled.outputs)}
        self._idle: queue.SimpleQueue = queue.SimpleQueue()
        self._perf_counts = bool(perf_counts)
        self._node_times: dict[tuple[str, str], float] = {}
        self._node_times_lock = threading.Lock()

    def node_times(self) -> dict[tuple[str, str], float]:
        """(node type, kernel OpenVINO chose) -> seconds, summed over every run since this
        session was made with perf_counts=True; InvalidValueError otherwise."""
        if not self._perf_counts:
            raise InvalidValueError("node_times() needs an OpenVinoSession made with perf_counts=True")
        with self._node_times_lock:
            return dict(self._node_times)

    def _add_node_times(self, request) -> None:
        with self._node_times_lock:
            for node in request.get_profiling_info():
                key = (node.node_type, node.exec_type)
                self._node_times[key] = self._node_times.get(key, 0.0) + node.real_time.total_seconds()

    def get_inputs(self) -> list[_Value]:
        return list(self._inputs)

    def get_outputs(self) -> list[_Value]:
        return list(self._outputs)

    def get_providers(self) -> list[str]:
        return [PROVIDER]

    def _check_feeds(self, feeds: dict) -> None:
        """Every input fed, nothing else, each a numpy array of its declared type: OpenVINO
        itself casts floats to ints and lets a reused request keep a missing input's last value."""
        expected = {value.name: value.type for value in self._inputs}
        if not isinstance(feeds, dict) or set(feeds) != set(expected):
            given = sorted(feeds) if isinstance(feeds, dict) else type(feeds).__name__
            raise InvalidValueError(f"feeds must name exactly the inputs {sorted(expected)}, got {given}")
        for name, array in feeds.items():
            dtype = _NUMPY_TYPES.get(expected[name])
            if not isinstance(array, np.ndarray) or (dtype is not None and array.dtype != dtype):
                got = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
                raise InvalidValueError(f"input {name!r} must be a numpy array of {expected[name]}, got {got}")

    def run(self, output_names: Sequence[str] | None, feeds: dict) -> list[np.ndarray]:
        """The outputs named (None: all), as float32 arrays, for feeds: name -> array."""
        names = [value.name for value in self._outputs] if output_names is None else list(output_names)
        unknown = [name for name in names if name not in self._ports]
        if unknown:
            raise InvalidValueError(f"unknown outputs {unknown}; the graph's outputs: {list(self._ports)}")
        self._check_feeds(feeds)
        try:
            request = self._idle.get_nowait()
        except queue.Empty:
            request = self._compiled.create_infer_request()
        try:
            result = request.infer(feeds)
            if self._perf_counts:
                self._add_node_times(request)
            return [np.array(result[self._ports[name]], dtype=np.float32, copy=True) for name in names]
        finally:
            self._idle.put(request)
