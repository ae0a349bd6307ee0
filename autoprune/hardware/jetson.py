"""Analytic Jetson profiles (roofline per layer), built from datasheet peaks and published measurements.

No Jetson is reachable where autoprune is developed, so the shipped Jetson profiles are analytic: per layer
``max(FLOPs / (peak * efficiency), bytes / bandwidth) + fixed cost``. Where a published whole-model TensorRT
measurement exists, ``efficiency`` is fitted on it alone (provenance ``calibrated``); otherwise it is borrowed
from the closest calibrated device (provenance ``estimated``). Figures: /work/shared/data/jetson-calibration.md
(torch2trt benchmarks; NVIDIA datasheets). Regenerate with ``python -m autoprune.hardware.jetson OUT_DIR``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

from autoprune.hardware.cost_model import CostModel
from autoprune.hardware.profile import HardwareProfile, NMSupport, Roofline, save_profile
from autoprune.plan import PruningPlan

# The per-layer fixed cost (kernel launch + scheduling at batch 1) is "tens of microseconds" on Jetsons; one
# published point cannot fit it together with the efficiency, so it is fixed here and only efficiency is fitted.
FIXED_MS_PER_LAYER = 0.02
TORCH2TRT = "NVIDIA-AI-IOT/torch2trt docs/benchmarks (TensorRT FP16, batch 1, 1x3x224x224, torchvision resnet18)"
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
    published_ms: float | None = None  # whole-model resnet18 @224 TensorRT FP16
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


def _profile(spec: JetsonSpec, efficiency: float, provenance: str, source: str, fit: str, date: str) -> HardwareProfile:
    caveats = [
        "analytic model, not measured on the device: run `autoprune profile export/run/import` on a Jetson to "
        "replace it with a measured table",
        f"per-layer fixed cost {FIXED_MS_PER_LAYER} ms is assumed ('tens of microseconds'), not fitted",
        "pooling, residual additions and activations are not modelled separately (TensorRT fuses most of them)",
    ]
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
        roofline=Roofline(spec.peak_gflops, spec.bandwidth_gbs, round(efficiency, 5), FIXED_MS_PER_LAYER, 2.0, fit,
                          int8_peak_gflops=spec.int8_peak_gflops),
        unstructured_sparsity=False, nm=(SPARSE_24,) if spec.sparse_24 else (),
        software={"tensorrt": "as in torch2trt benchmarks (JetPack 4.x)"} if spec.published_ms else {},
        caveats=tuple(caveats),
        description="Analytic roofline per layer: max(FLOPs/(peak*efficiency), bytes/bandwidth) + fixed cost.",
    )


def fit_efficiency(spec: JetsonSpec, space, target_ms: float) -> float:
    """Efficiency in (0, 1] at which the analytic dense-model latency equals ``target_ms`` (bisection)."""
    plan = PruningPlan()

    def predicted(eff: float) -> float:
        probe = _profile(spec, eff, "calibrated", "fit", "", "")
        return CostModel(probe).predict(space, plan).latency_ms

    lo, hi = 1e-4, 1.0
    if predicted(hi) > target_ms:
        raise ValueError(f"{spec.name}: even at peak the model predicts more than {target_ms} ms")
    for _ in range(80):  # latency falls monotonically as efficiency rises
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if predicted(mid) > target_ms else (lo, mid)
    return (lo + hi) / 2


def build_profiles(date: str) -> list[HardwareProfile]:
    from autoprune.models import create_model
    from autoprune.pruning.space import generate_space

    space = generate_space(create_model("resnet18", 1000), "resnet18", (1, 3, 224, 224))
    fitted: dict[str, float] = {}
    profiles = []
    for spec in SPECS:
        if spec.published_ms is not None:
            eff = fit_efficiency(spec, space, spec.published_ms)
            fitted[spec.name] = eff
            fit = (f"efficiency fitted so that dense resnet18 at 1x3x224x224 predicts {spec.published_ms} ms "
                   f"(the only calibration point)")
            source = f"roofline calibrated on one published measurement: {spec.published_ms} ms, {TORCH2TRT}"
            profiles.append(_profile(spec, eff, "calibrated", source, fit, date))
        else:
            eff = fitted[spec.borrow_efficiency_from]
            fit = f"efficiency borrowed from {spec.borrow_efficiency_from}; no published measurement"
            source = f"roofline estimated from datasheet peaks ({spec.peak_gflops:g} GFLOP/s FP16, " \
                     f"{spec.bandwidth_gbs:g} GB/s) with efficiency of {spec.borrow_efficiency_from}"
            profiles.append(_profile(spec, eff, "estimated", source, fit, date))
    return profiles


def main(argv=None) -> int:
    from autoprune.hardware.profile import today

    out = Path((argv or sys.argv[1:] or ["hardware_profiles"])[0])
    for profile in build_profiles(today().split(" ")[0]):
        path = save_profile(profile, out / f"{profile.name}.yaml")
        print(f"{path}: efficiency {profile.roofline.efficiency:.4f} ({profile.provenance})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
