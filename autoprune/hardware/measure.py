"""Measure latency on this machine: whole models and single layers, through a backend registry.

Backends time an ``nn.Module`` at a fixed input shape: ``onnxruntime`` (CPU EP; the reference for the host
profile), ``torch`` (eager, for comparison), ``tensorrt`` (``trtexec`` on an exported ONNX file; needs a GPU
with TensorRT, e.g. a Jetson). Every measurement carries its provenance: where, when, how.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from autoprune.errors import UserError, unknown_choice
from autoprune.hardware import device_runner as runner


@dataclass(frozen=True)
class LatencyMeasurement:
    """A measured latency: mean/std (ms) over ``n`` samples kept after outlier rejection, and their median."""

    mean_ms: float
    std_ms: float
    n: int
    median_ms: float
    rejected: int
    backend: str
    threads: int
    machine: str
    date: str

    @property
    def provenance(self) -> str:
        return (f"measured: {self.backend}, {self.threads} thread(s), on {self.machine}, {self.date}; "
                f"median {self.median_ms:.4f} ms, mean of {self.n} runs after rejecting {self.rejected} outliers")

    def to_dict(self) -> dict:
        return {"mean_ms": self.mean_ms, "std_ms": self.std_ms, "n": self.n, "median_ms": self.median_ms,
                "rejected": self.rejected, "provenance": self.provenance}


@dataclass(frozen=True)
class Timing:
    """How long to warm up, how many timed runs (each one inference at batch 1), split into how many passes
    when many models are timed together (see ``device_runner.time_ort_many``)."""

    warmup: int = 20
    repeats: int = 100
    rounds: int = 5


def _onnxruntime(model: nn.Module, input_shape, threads: int, timing: Timing) -> dict:
    from autoprune.onnx_export import onnx_bytes

    return runner.time_ort(onnx_bytes(model, tuple(input_shape)), input_shape, threads, timing.warmup,
                           timing.repeats)


def _torch(model: nn.Module, input_shape, threads: int, timing: Timing) -> dict:
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        model = model.eval()
        x = torch.randn(tuple(input_shape))
        samples = []
        with torch.inference_mode():
            for _ in range(timing.warmup):
                model(x)
            for _ in range(timing.repeats):
                start = time.perf_counter()
                model(x)
                samples.append((time.perf_counter() - start) * 1e3)
    finally:
        torch.set_num_threads(previous)
    return runner.robust_stats(samples)


def _tensorrt(model: nn.Module, input_shape, threads: int, timing: Timing, precision: str = "fp16") -> dict:
    from autoprune.onnx_export import export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, tuple(input_shape), Path(tmp) / "model.onnx")
        try:
            return runner.time_trtexec(path, precision, iterations=max(timing.repeats, 10))
        except RuntimeError as err:
            raise UserError(f"TensorRT measurement failed: {err}") from err


BACKENDS: dict[str, Callable[..., dict]] = {"onnxruntime": _onnxruntime, "torch": _torch, "tensorrt": _tensorrt}
RUNTIME_OF_BACKEND = {"onnxruntime": "onnxruntime", "torch": "pytorch", "tensorrt": "tensorrt"}


def backend(name: str) -> Callable[..., dict]:
    if name not in BACKENDS:
        raise unknown_choice("latency backend", name, BACKENDS)
    return BACKENDS[name]


@contextlib.contextmanager
def pinned(cpu: int | None):
    """Pin this process to one CPU while measuring (None: leave affinity alone)."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    if cpu not in before:
        raise UserError(f"cannot pin to CPU {cpu}: this process may use CPUs {sorted(before)}")
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def measure_model_latency(model: nn.Module, input_shape, threads: int = 1, warmup: int = 20, repeats: int = 200,
                          backend_name: str = "onnxruntime", pin_cpu: int | None = None) -> LatencyMeasurement:
    """Latency (ms, batch of ``input_shape``) of ``model`` on this machine via ``backend_name``.

    Runs ``warmup`` untimed inferences, then ``repeats`` timed ones; outliers (median ± 3 MADs) are dropped.
    """
    with pinned(pin_cpu):
        stats = backend(backend_name)(model, tuple(input_shape), threads, Timing(warmup, repeats))
    return LatencyMeasurement(stats["mean_ms"], stats["std_ms"], stats["n"], stats["median_ms"], stats["rejected"],
                              _backend_label(backend_name), threads, runner.machine_description(), runner.now())


def _backend_label(name: str) -> str:
    if name == "onnxruntime":
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__} CPUExecutionProvider"
    if name == "torch":
        return f"PyTorch {torch.__version__} eager CPU"
    return "TensorRT (trtexec)"
