"""INT8: static post-training quantization of an exported ONNX model, its accuracy in onnxruntime, and the
host profile's INT8 latency entries.

CPU targets use onnxruntime static quantization in QDQ format (QuantizeLinear/DequantizeLinear pairs around
every conv/linear, which onnxruntime's CPU provider fuses into integer kernels): unsigned 8-bit activations,
signed 8-bit per-channel weights, activation ranges calibrated (min/max) on a few training batches. The
accuracy of an INT8 candidate is the quantized ONNX model run in onnxruntime on the validation split — not a
simulation in PyTorch. Jetson targets would build a TensorRT INT8 engine from the same QDQ ONNX file
(``trtexec --int8``, explicit quantization); no Jetson is reachable here, so their INT8 latencies come from the
analytic roofline (INT8 peak, 32-channel tiles; see :mod:`autoprune.hardware.jetson`).

Run ``autoprune profile measure --precision int8 --out FILE --model M --input-shape 1x3xHxW`` to add INT8 entries,
an INT8 calibration and an INT8 validation to a measured onnxruntime profile (its FP32 part is left as it is).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from autoprune.errors import UserError
from autoprune.training import EvalResult

CALIBRATION_SAMPLES = 128


class SampleReader:
    """An onnxruntime ``CalibrationDataReader`` feeding samples one at a time (exported graphs have batch 1)."""

    def __init__(self, input_name: str, samples: np.ndarray) -> None:
        self.input_name = input_name
        self._samples = samples.astype(np.float32)
        self._next = 0

    def get_next(self) -> dict | None:
        if self._next >= len(self._samples):
            return None
        sample = self._samples[self._next : self._next + 1]
        self._next += 1
        return {self.input_name: sample}

    def rewind(self) -> None:
        self._next = 0


def calibration_samples(loader: Iterable, count: int = CALIBRATION_SAMPLES) -> np.ndarray:
    """The first ``count`` images (N, C, H, W, float32) of ``loader``: what the activation ranges are fitted on."""
    images = []
    for batch, _ in loader:
        images.append(batch)
        if sum(len(b) for b in images) >= count:
            break
    if not images:
        raise UserError("no calibration images: the training split is empty; quantization needs a few batches")
    return torch.cat(images)[:count].numpy().astype(np.float32)


def quantize_onnx(model_bytes: bytes, samples: np.ndarray, per_channel: bool = True) -> bytes:
    """Statically quantize an FP32 ONNX model (QDQ, u8 activations, s8 weights) calibrated on ``samples``.

    ``samples`` are single inputs stacked along the batch axis; the graph is run on each (min/max ranges).
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load_from_string(model_bytes)
    input_name = model.graph.input[0].name
    with tempfile.TemporaryDirectory(prefix="autoprune-int8-") as tmp, _quiet_root_logger():
        source, prepared, target = (Path(tmp) / name for name in ("fp32.onnx", "prepared.onnx", "int8.onnx"))
        source.write_bytes(model_bytes)
        # The exporter routes conv biases through Identity nodes; unless the graph is optimised first, the
        # quantizer cannot fold them and leaves float convolutions that run 3x slower than FP32 (measured).
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared), str(target), SampleReader(input_name, samples), quant_format=QuantFormat.QDQ,
            per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        return target.read_bytes()


@contextlib.contextmanager
def _quiet_root_logger():
    # onnxruntime.quantization advises on the root logger for every model; autoprune quantizes hundreds.
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def quantize_model(model: nn.Module, input_shape: tuple[int, ...], samples: np.ndarray) -> bytes:
    """Export ``model`` to ONNX at ``input_shape`` and return the statically quantized INT8 model's bytes."""
    from autoprune.onnx_export import onnx_bytes

    return quantize_onnx(onnx_bytes(model, tuple(input_shape)), samples)


def onnx_accuracy(model_bytes: bytes, loader: Iterable, num_classes: int, threads: int = 1) -> EvalResult:
    """Top-1 accuracy (overall and per class) of an ONNX model run in onnxruntime over ``loader``."""
    from autoprune.onnx_export import ort_predict, ort_session

    session = ort_session(model_bytes, threads)
    correct = np.zeros(num_classes, dtype=np.int64)
    total = np.zeros(num_classes, dtype=np.int64)
    for images, labels in loader:
        predicted = ort_predict(session, images.numpy().astype(np.float32)).argmax(1)
        labels = labels.numpy()
        total += np.bincount(labels, minlength=num_classes)
        correct += np.bincount(labels[predicted == labels], minlength=num_classes)
    overall = int(correct.sum()) / max(1, int(total.sum()))
    return EvalResult(overall, tuple(int(c) for c in correct), tuple(int(t) for t in total))


@dataclass(frozen=True)
class QuantizedCandidate:
    """An INT8 model and its accuracy measured in onnxruntime (``eval``); ``bytes`` is the QDQ ONNX file."""

    onnx: bytes
    eval: EvalResult
    calibration_samples: int


def quantize_and_evaluate(model: nn.Module, input_shape: tuple[int, ...], train_loader: Iterable,
                          val_loader: Iterable, num_classes: int,
                          samples: int = CALIBRATION_SAMPLES) -> QuantizedCandidate:
    """Quantize ``model`` calibrated on the first ``samples`` training images; measure its validation accuracy."""
    calib = calibration_samples(train_loader, samples)
    data = quantize_model(model, input_shape, calib)
    return QuantizedCandidate(data, onnx_accuracy(data, val_loader, num_classes), len(calib))


# --- INT8 latency entries of a host profile ----------------------------------------------------------------------
def _random_samples(shape: tuple[int, ...], count: int = 4) -> np.ndarray:
    # Latency of an integer kernel does not depend on the data; ranges from random inputs are enough to time it.
    return np.random.default_rng(0).standard_normal((count, *shape[1:])).astype(np.float32)


def int8_micro_item(sig) -> tuple[bytes, tuple[int, ...]]:
    """The quantized one-layer model standing for INT8 signature ``sig``, and its input shape."""
    from autoprune.hardware.profiling import micro_model
    from autoprune.onnx_export import onnx_bytes

    model, shape = micro_model(sig)
    return quantize_onnx(onnx_bytes(model, shape), _random_samples(shape)), shape


def int8_plan_item(space, plan) -> tuple[bytes, tuple[int, ...]]:
    """The whole model of ``space`` pruned by ``plan`` (random weights), quantized: what an INT8 plan runs."""
    from autoprune.hardware.profiling import build_pruned

    shape = tuple(space.input_shape)
    return quantize_model(build_pruned(space, plan), shape, _random_samples(shape)), shape


def measure_int8(profile, space, max_points: int = 7, calibration_points: int = 12, validation_samples: int = 20,
                 warmup: int = 20, repeats: int = 200, rounds: int = 5, progress=None):
    """``profile`` with INT8 layer entries, an INT8 calibration and an INT8 validation for ``space``'s model.

    Layer micro-models, calibration plans and validation plans (a distinct seed) are timed in the same
    interleaved onnxruntime passes, as the FP32 table was, so that load drift spreads over all of them. The
    FP32 entries, calibration and validation are kept unchanged. Returns (profile, validation).
    """
    from autoprune.hardware import device_runner as runner
    from autoprune.hardware.cost_model import CostModel, precision_key
    from autoprune.hardware.profile import LatencyEntry, today
    from autoprune.hardware.measure import Timing
    from autoprune.hardware.profiling import (PlanPoint, _time_ort_with_overhead, fit_calibration, merge_entries,
                                              plan_point, random_plans, score, signature_grid)
    from autoprune.hardware.signature import model_key
    from autoprune.plan import PruningPlan

    if profile.runtime != "onnxruntime" or profile.latency_model != "table":
        raise UserError(f"target {profile.name!r} is not an onnxruntime table profile; INT8 entries are measured "
                        "with onnxruntime on this machine (Jetson INT8 latencies come from the roofline's INT8 peak)")
    align = profile.alignment
    sigs = signature_grid(space, align, "int8", max_points)
    calib_plans = [PruningPlan(alignment=align, precision="int8")] + [
        replace(p, precision="int8") for p in random_plans(space, calibration_points - 1, 0, align)]
    valid_plans = [replace(p, precision="int8") for p in random_plans(space, validation_samples, 1000, align)]
    items = [int8_micro_item(s) for s in sigs] + [int8_plan_item(space, p) for p in calib_plans + valid_plans]
    threads = max(1, profile.threads)
    # the call overhead timed among the layers, as the FP32 table's is (one reading before them, at a busy
    # moment, once zeroed most of a table)
    stats, overhead = _time_ort_with_overhead(items, [None] * len(items), len(sigs), threads,
                                              Timing(warmup, repeats, rounds), progress, None)
    layer_stats, model_stats = stats[: len(sigs)], [s["median_ms"] for s in stats[len(sigs):]]
    entries = [LatencyEntry(sig, max(st["mean_ms"] - overhead, 0.0), st["std_ms"], st["n"])
               for sig, st in zip(sigs, layer_stats)]
    date = today()
    key = precision_key(model_key(space.model, space.input_shape), "int8")
    merged = replace(profile, entries=merge_entries(profile.entries, entries))
    table = CostModel(replace(merged, calibration={}))
    points = [plan_point(table, space, p, ms) for p, ms in zip(calib_plans, model_stats)]
    source = (f"fitted on {len(points)} whole-model onnxruntime INT8 (QDQ) measurements (dense + random plans, "
              "seed 0) timed in the same interleaved passes as the INT8 table")
    calibration = fit_calibration(points, source, runner.last_level_cache_mb())
    calibrated = replace(merged, calibration={**merged.calibration, key: calibration})
    predictor = CostModel(calibrated)
    checked = [PlanPoint(p, 0.0, predictor.predict(space, p).latency_ms, ms)
               for p, ms in zip(valid_plans, model_stats[len(calib_plans):])]
    command = (f"autoprune profile measure --precision int8 --out {profile.path.strip(chr(39))} --model {space.model} "
               f"--input-shape {'x'.join(map(str, space.input_shape))}")
    validation = score(checked, command, f"INT8 random plans (seed 1000) timed in the same passes as the INT8 table "
                                         f"and calibration; measured = median of {repeats} runs in {rounds} passes")
    caveat = (f"INT8 entries: onnxruntime static quantization (QDQ, u8 activations, s8 per-channel weights) of each "
              f"layer's micro-model, {warmup} warm-up + {repeats} timed runs, call overhead (timed among the layers, "
              f"capped at the cheapest) subtracted; "
              f"measured {date} on {runner.machine_description()}")
    caveats = tuple(c for c in calibrated.caveats if not c.startswith("INT8 entries:")) + (caveat,)
    final = replace(calibrated, validation={**calibrated.validation, key: validation}, caveats=caveats,
                    software={**calibrated.software, **runner.software_versions("onnxruntime")})
    return final, validation

