"""Analytic Jetson profiles (roofline per layer), fitted on published whole-model measurements.

No Jetson is reachable where autoprune is developed, so the shipped Jetson profiles are analytic: per layer
``max(FLOPs / (peak * efficiency), bytes / bandwidth) + fixed cost``. Where published whole-model TensorRT figures
exist (/work/shared/data/jetson-calibration.md: torch2trt benchmarks, ResNet-18, SqueezeNet, DenseNet, VGG,
AlexNet), five terms are fitted per device on all of them (provenance ``calibrated``):

- ``efficiency`` — the share of the FP16 peak that convolutions reach;
- ``fixed_ms_per_layer`` — the per-kernel launch and scheduling cost at batch 1;
- ``op_bandwidth.linear`` — the share of the memory bandwidth fully-connected layers stream their weights at
  (VGG's 120 M classifier weights dominate it on a Nano);
- a fixed cost per kernel for the memory-only kernels a search space's layer sum leaves out: the BatchNorm+ReLU
  DenseNet applies to each concatenated input (it cannot fold into a convolution), and residual additions (their
  own term); their bytes, and those of concatenations, move at the bandwidth. For the models searches commonly
  run, this part enters the profile as a per-model calibration offset.

The fit minimises the squared log error over a device's figures; its leave-one-out error (each figure predicted
by the fit on the others) goes into the profile's validation block. Depthwise convolutions have no published
figure here, so they keep the convolution efficiency (a caveat says so). Devices without figures borrow the
fitted terms of the closest calibrated device (provenance ``estimated``). Regenerate with
``python -m autoprune.hardware.jetson OUT_DIR``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from autoprune.hardware.latency_models import RooflineLatency
from autoprune.hardware.profile import Calibration, HardwareProfile, NMSupport, Roofline, Validation, save_profile
from autoprune.hardware.signature import LayerSignature

INPUT = (1, 3, 224, 224)
TORCH2TRT = "NVIDIA-AI-IOT/torch2trt docs/benchmarks (TensorRT FP16, batch 1, 1x3x224x224, torchvision models)"
# Published TensorRT FP16 latencies (ms) at batch 1, 1x3x224x224 (jetson-calibration.md).
PUBLISHED: dict[str, dict[str, float]] = {
    "jetson-nano-trt-fp16": {
        "resnet18": 11.4, "squeezenet1_0": 7.6, "densenet169": 31.2, "densenet201": 40.8, "densenet161": 65.8,
        "vgg13": 68.7, "vgg11_bn": 54.8, "vgg13_bn": 68.5, "vgg16_bn": 84.3,
    },
    "jetson-agx-xavier-trt-fp16": {
        "resnet18": 1.64, "alexnet": 2.02, "squeezenet1_0": 1.49, "squeezenet1_1": 1.02, "densenet169": 23.7,
        "densenet201": 33.0, "densenet161": 23.0, "vgg11": 5.24, "vgg13": 6.34, "vgg19": 8.61, "vgg16_bn": 7.48,
    },
}
SPARSE_24 = NMSupport(
    pattern="2:4", min_channels=256, speedup=1.3, grouped=False,
    source="Ampere 2:4 sparse tensor cores pay off on layers with >=256 channels, never grouped; 1.3x per layer "
           "is assumed so that ResNet-18 gains <=15% end to end (jetson-calibration.md)",
)


# INT8 on Jetson is a TensorRT INT8 engine built from the QDQ ONNX file autoprune exports (explicit quantization,
# `trtexec --int8`). Its latency here is the same roofline at the INT8 peak, 1 byte per element and channels padded
# to 32 (INT8 tensor-core tiles), with the FP16-fitted efficiency: an estimate until an INT8 engine is measured.
VOLTA_INT8 = "Volta INT8 tensor-core rate = 2x its FP16 rate (no GPU-only INT8 figure in the datasheet)"
DATASHEET_INT8 = "dense GPU INT8 TOPS from the datasheet (jetson-calibration.md)"


@dataclass(frozen=True)
class JetsonSpec:
    name: str
    device: str
    peak_gflops: float  # FP16 dense, GPU only
    bandwidth_gbs: float
    published_ms: float | None = None  # whole-model resnet18 @224 TensorRT FP16 (the rest: PUBLISHED)
    borrow_efficiency_from: str | None = None
    tensor_cores: bool = True
    sparse_24: bool = False
    int8_peak_gflops: float | None = None  # dense INT8 GOP/s of the GPU (no DLA); None: no INT8 tensor path
    int8_source: str = ""


SPECS = (
    JetsonSpec("jetson-nano-trt-fp16", "NVIDIA Jetson Nano (128-core Maxwell GPU)", 472.0, 25.6, published_ms=11.4,
               tensor_cores=False),
    JetsonSpec("jetson-agx-xavier-trt-fp16", "NVIDIA Jetson AGX Xavier (512-core Volta GPU, 64 tensor cores)",
               11300.0, 137.0, published_ms=1.64, int8_peak_gflops=22600.0, int8_source=VOLTA_INT8),
    JetsonSpec("jetson-xavier-nx-trt-fp16", "NVIDIA Jetson Xavier NX (384-core Volta GPU, 48 tensor cores)",
               6800.0, 51.2, borrow_efficiency_from="jetson-agx-xavier-trt-fp16", int8_peak_gflops=13600.0,
               int8_source=VOLTA_INT8),
    JetsonSpec("jetson-orin-nano-trt-fp16", "NVIDIA Jetson Orin Nano 8GB (1024-core Ampere GPU)", 10000.0, 68.0,
               borrow_efficiency_from="jetson-agx-xavier-trt-fp16", sparse_24=True, int8_peak_gflops=20000.0,
               int8_source=DATASHEET_INT8),
    JetsonSpec("jetson-agx-orin-trt-fp16", "NVIDIA Jetson AGX Orin 64GB (2048-core Ampere GPU)", 42500.0, 204.8,
               borrow_efficiency_from="jetson-agx-xavier-trt-fp16", sparse_24=True, int8_peak_gflops=85000.0,
               int8_source=DATASHEET_INT8),
)


@dataclass(frozen=True)
class Fit:
    """The fitted terms of one device (see the module docstring); ``memory_kernel_ms`` is the fixed cost (ms) of
    each standalone BatchNorm+ReLU kernel and ``add_kernel_ms`` that of each residual addition, on top of moving
    their bytes at the bandwidth (only ResNet-18 has additions among the figures: its own term keeps the
    model most searches use from being traded off against DenseNet's)."""

    efficiency: float
    fixed_ms: float
    fc_bandwidth: float
    memory_kernel_ms: float
    add_kernel_ms: float


@dataclass(frozen=True)
class ModelWork:
    """What a whole model asks of the GPU: its priced layers (conv, linear, pool: as the cost model sees them),
    and the bytes and count of the memory-only kernels."""

    name: str
    layers: tuple[LayerSignature, ...]
    memory_bytes: float  # moved by concatenations, residual additions and standalone BatchNorm+ReLU
    memory_kernels: int  # standalone BatchNorm+ReLU kernels (concatenations TensorRT can elide: bytes only)
    add_kernels: int = 0  # residual additions


def trace_work(name: str, input_shape=INPUT, bytes_per_element: float = 2.0) -> ModelWork:
    """The :class:`ModelWork` of torchvision model ``name`` at ``input_shape``, by one forward pass with hooks."""
    import torch
    from torch import nn

    from autoprune.models import create_model

    model = create_model(name, 1000).eval()
    layers: list[LayerSignature] = []
    produced_by_conv: dict[int, object] = {}  # id -> the tensor itself: held so that no id is reused
    memory = {"bytes": 0.0, "kernels": 0, "adds": 0}

    def on_conv(module, inputs, output):
        x = inputs[0]
        layers.append(LayerSignature("conv", module.in_channels, module.out_channels, module.kernel_size[0],
                                     module.stride[0], module.padding[0], module.groups, x.shape[2], x.shape[3],
                                     "fp16"))
        produced_by_conv[id(output)] = output

    def on_linear(module, inputs, output):
        layers.append(LayerSignature("linear", module.in_features, module.out_features, 1, 1, 0, 1, 1, 1, "fp16"))

    def on_pool(module, inputs, output):
        x = inputs[0]
        if isinstance(module, nn.AdaptiveAvgPool2d):
            if tuple(output.shape[2:]) != (1, 1) or x.shape[2] != x.shape[3]:
                return  # an adaptive pool to the size it already has (VGG, AlexNet at 224) is a no-op
            op, kernel, stride, padding = "avgpool", x.shape[2], 1, 0
        else:
            op = "maxpool" if isinstance(module, nn.MaxPool2d) else "avgpool"
            first = lambda v: int(v[0] if isinstance(v, (tuple, list)) else v)  # noqa: E731
            kernel, stride, padding = first(module.kernel_size), first(module.stride), first(module.padding)
        c = x.shape[1]
        layers.append(LayerSignature(op, c, c, kernel, stride, padding, c, x.shape[2], x.shape[3], "fp16"))

    def on_norm(module, inputs, output):
        if id(inputs[0]) not in produced_by_conv:  # folds into the conv before it otherwise (TensorRT does)
            memory["bytes"] += 2 * inputs[0].numel() * bytes_per_element
            memory["kernels"] += 1

    hooks = []
    for module in model.modules():
        kind = {nn.Conv2d: on_conv, nn.Linear: on_linear, nn.BatchNorm2d: on_norm}.get(type(module))
        if kind is None and isinstance(module, (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            kind = on_pool
        if kind is not None:
            hooks.append(module.register_forward_hook(kind))
    real_cat = torch.cat

    def counting_cat(tensors, *args, **kwargs):
        out = real_cat(tensors, *args, **kwargs)
        if out.dim() == 4:
            memory["bytes"] += 2 * out.numel() * bytes_per_element
        return out

    real_add, real_iadd = torch.Tensor.__add__, torch.Tensor.__iadd__

    def counting(add):
        def wrapped(a, b):
            if isinstance(b, torch.Tensor) and a.dim() == 4 and a.shape == b.shape:  # a residual addition
                memory["bytes"] += 3 * a.numel() * bytes_per_element
                memory["adds"] += 1
            return add(a, b)
        return wrapped

    torch.cat, torch.Tensor.__add__, torch.Tensor.__iadd__ = counting_cat, counting(real_add), counting(real_iadd)
    try:
        with torch.inference_mode():
            model(torch.zeros(input_shape))
    finally:
        torch.cat, torch.Tensor.__add__, torch.Tensor.__iadd__ = real_cat, real_add, real_iadd
        for hook in hooks:
            hook.remove()
        produced_by_conv.clear()
    return ModelWork(name, tuple(layers), memory["bytes"], memory["kernels"], memory["adds"])


def memory_only_ms(fit: Fit, work: ModelWork, bandwidth_gbs: float) -> float:
    """What the memory-only kernels of ``work`` cost (ms) under ``fit``."""
    return (work.memory_bytes / (bandwidth_gbs * 1e9) * 1e3 + work.memory_kernels * fit.memory_kernel_ms
            + work.add_kernels * fit.add_kernel_ms)


def predict_ms(profile: HardwareProfile, work: ModelWork, fit: Fit) -> float:
    """Whole-model latency (ms): the cost model's layer sum plus the memory-only kernels."""
    latency = RooflineLatency(profile)
    extra = memory_only_ms(fit, work, profile.roofline.bandwidth_gbs)
    return math.fsum(latency.layer_ms(sig) for sig in work.layers) + extra


def _with_fit(profile: HardwareProfile, fit: Fit) -> HardwareProfile:
    r = replace(profile.roofline, efficiency=fit.efficiency, fixed_ms_per_layer=fit.fixed_ms,
                op_bandwidth=(("linear", fit.fc_bandwidth),))
    return replace(profile, roofline=r)


_BOUNDS = (np.log([1e-3, 1e-4, 0.05, 1e-4, 1e-4]), np.log([1.0, 0.5, 1.0, 1.0, 1.0]))


def fit_terms(profile: HardwareProfile, works: Sequence[ModelWork], published: Sequence[float]) -> Fit:
    """The :class:`Fit` minimising the squared log error of the predictions of ``works`` against ``published``."""
    from scipy.optimize import least_squares

    target = np.log(np.asarray(published, float))

    def residuals(theta):
        fit = Fit(*np.exp(theta))
        probe = _with_fit(profile, fit)
        return np.log([predict_ms(probe, w, fit) for w in works]) - target

    best = None
    for start in ([0.2, 0.02, 0.5, 0.02, 0.02], [0.5, 0.005, 0.8, 0.1, 0.005], [0.05, 0.05, 0.3, 0.005, 0.1]):  # a few starts: max() kinks
        res = least_squares(residuals, np.log(start), bounds=_BOUNDS, method="trf")
        if best is None or res.cost < best.cost:
            best = res
    return Fit(*(float(round(v, 6)) for v in np.exp(best.x)))


def leave_one_out(profile: HardwareProfile, works: Sequence[ModelWork], published: Sequence[float]) -> list[float]:
    """Each figure predicted (ms) by the fit on all the others."""
    out = []
    for i in range(len(works)):
        rest = [j for j in range(len(works)) if j != i]
        fit = fit_terms(profile, [works[j] for j in rest], [published[j] for j in rest])
        out.append(predict_ms(_with_fit(profile, fit), works[i], fit))
    return out


def loo_validation(names: Sequence[str], published: Sequence[float], predicted: Sequence[float],
                   date: str) -> Validation:
    """The validation block of a fitted profile: leave-one-out errors over its published figures."""
    from autoprune.hardware.profiling import kendall_tau

    meas, pred = np.asarray(published, float), np.asarray(predicted, float)
    err = np.abs(pred - meas) / meas
    per_model = ", ".join(f"{n} {100 * (p - m) / m:+.0f}%" for n, p, m in zip(names, pred, meas))
    return Validation(
        samples=len(names), mape_pct=round(float(err.mean() * 100), 2),
        within_5_pct=round(float((err <= 0.05).mean() * 100), 1),
        within_10_pct=round(float((err <= 0.10).mean() * 100), 1),
        kendall_tau=round(kendall_tau(pred, meas), 4), date=date, machine="published figures (no device here)",
        command="python -m autoprune.hardware.jetson hardware_profiles",
        note=f"leave-one-out over {TORCH2TRT}: each model predicted by the fit on the others: {per_model}",
        calibrated=False, loo_median_pct=round(float(np.median(err) * 100), 2),
    )


def _profile(spec: JetsonSpec, fit: Fit, provenance: str, source: str, fit_text: str, date: str,
             memory_caveat: str = "") -> HardwareProfile:
    caveats = [
        "analytic model, not measured on the device: run `autoprune profile export/run/import` on a Jetson to "
        "replace it with a measured table",
        "depthwise convolutions have no published figure: they run at the convolution efficiency, an assumption",
        "activations are fused by TensorRT; residual additions, concatenations and standalone BatchNorm+ReLU are "
        "priced by the fit as a per-model offset (resnet18 and mobilenet_v2 at 32x32 and 224x224), constant "
        "across plans; other models' predictions leave them out",
    ]
    if memory_caveat:
        caveats.append(memory_caveat)
    if spec.int8_peak_gflops:
        caveats.append(f"INT8 (TensorRT INT8 engine from the QDQ ONNX export) is estimated: INT8 peak "
                       f"{spec.int8_peak_gflops:g} GOP/s ({spec.int8_source}), channels padded to 32, FP16 efficiency")
    else:
        caveats.append("no INT8 tensor path on this GPU: INT8 plans are refused")
    if not spec.tensor_cores:
        caveats.append("no tensor cores: the alignment of 8 models TensorRT's FP16 kernel tiles, an assumption")
    return HardwareProfile(
        name=spec.name, device=spec.device, runtime="tensorrt", precision="fp16", batch=1, threads=0, date=date,
        provenance=provenance, provenance_source=source, alignment=8, latency_model="roofline",
        roofline=Roofline(spec.peak_gflops, spec.bandwidth_gbs, round(fit.efficiency, 5), round(fit.fixed_ms, 6),
                          2.0, fit_text, int8_peak_gflops=spec.int8_peak_gflops,
                          op_bandwidth=(("linear", round(fit.fc_bandwidth, 5)),)),
        unstructured_sparsity=False, nm=(SPARSE_24,) if spec.sparse_24 else (),
        software={"tensorrt": "as in torch2trt benchmarks (JetPack 4.x)"} if spec.name in PUBLISHED else {},
        caveats=tuple(caveats),
        description="Analytic roofline per layer: max(FLOPs/(peak*efficiency), bytes/bandwidth) + fixed cost.",
    )


# Models a search commonly runs, at the CLI's default and the ImageNet input size: their per-model calibration adds
# what the fit prices beyond the searched layers (residual additions, concatenations, standalone BatchNorm+ReLU).
SEARCHED = (("resnet18", (1, 3, 32, 32)), ("resnet18", INPUT), ("mobilenet_v2", (1, 3, 32, 32)),
            ("mobilenet_v2", INPUT))


def memory_calibrations(fit: Fit, works: dict, bandwidth_gbs: float, date: str) -> dict[str, Calibration]:
    """Per-model records ``a = 1, b = `` the fitted cost (ms) of the memory-only kernels of each searched model."""
    from autoprune.hardware.signature import model_key

    records = {}
    for (name, shape), work in works.items():
        records[model_key(name, shape)] = Calibration(
            1.0, round(memory_only_ms(fit, work, bandwidth_gbs), 6), 1,
            f"from the fit on published figures: {work.add_kernels} residual additions at {fit.add_kernel_ms:.4g} ms "
            f"and {work.memory_kernels} standalone BatchNorm+ReLU at {fit.memory_kernel_ms:.4g} ms each, plus "
            f"{work.memory_bytes / 1e6:.2f} MB moved at the bandwidth (dense model; not re-fitted per plan)", date)
    return records


def build_profiles(date: str) -> list[HardwareProfile]:
    works = {name: trace_work(name) for name in sorted({m for figures in PUBLISHED.values() for m in figures})}
    searched = {(name, shape): trace_work(name, shape) for name, shape in SEARCHED}
    fitted: dict[str, Fit] = {}
    profiles = []
    for spec in SPECS:
        figures = PUBLISHED.get(spec.name)
        if figures:
            names = list(figures)
            probe = _profile(spec, Fit(0.2, 0.02, 0.5, 0.02, 0.02), "calibrated", "", "", date)
            ws, ms = [works[n] for n in names], [figures[n] for n in names]
            fit = fit_terms(probe, ws, ms)
            fitted[spec.name] = fit
            loo = loo_validation(names, ms, leave_one_out(probe, ws, ms), date)
            fit_text = (f"fitted on {len(names)} published whole-model figures ({', '.join(names)}): conv efficiency "
                        f"{fit.efficiency:.4g}, fixed {fit.fixed_ms:.4g} ms per kernel, fully-connected layers at "
                        f"{fit.fc_bandwidth:.3g} x bandwidth, {fit.memory_kernel_ms:.4g} ms per standalone BatchNorm "
                        f"kernel, {fit.add_kernel_ms:.4g} ms per residual addition; leave-one-out median error {loo.loo_median_pct:.1f}%")
            source = f"roofline calibrated on {len(names)} published measurements: {TORCH2TRT}"
            profile = _profile(spec, fit, "calibrated", source, fit_text, date,
                               f"in the fit, standalone BatchNorm+ReLU cost {fit.memory_kernel_ms:.4g} ms each "
                               f"(DenseNet), residual additions {fit.add_kernel_ms:.4g} ms each (ResNet-18 alone: "
                               "its leave-one-out error cannot test that term)")
            profiles.append(replace(profile, validation={"torch2trt-published@1x3x224x224": loo},
                                    calibration=memory_calibrations(fit, searched, spec.bandwidth_gbs, date)))
        else:
            fit = fitted[spec.borrow_efficiency_from]
            fit_text = f"terms borrowed from {spec.borrow_efficiency_from} (fitted there); no published measurement"
            source = f"roofline estimated from datasheet peaks ({spec.peak_gflops:g} GFLOP/s FP16, " \
                     f"{spec.bandwidth_gbs:g} GB/s) with the fitted terms of {spec.borrow_efficiency_from}"
            profile = _profile(spec, fit, "estimated", source, fit_text, date)
            profiles.append(replace(profile, calibration=memory_calibrations(fit, searched, spec.bandwidth_gbs, date)))
    return profiles


def main(argv=None) -> int:
    from autoprune.hardware.profile import today

    out = Path((argv or sys.argv[1:] or ["hardware_profiles"])[0])
    for profile in build_profiles(today().split(" ")[0]):
        path = save_profile(profile, out / f"{profile.name}.yaml")
        loo = next(iter(profile.validation.values()), None)
        print(f"{path}: efficiency {profile.roofline.efficiency:.4f}, fixed {profile.roofline.fixed_ms_per_layer:.4g} "
              f"ms ({profile.provenance})" + (f"; {loo.summary()}" if loo else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
