"""The latency cost model: predicts a plan's latency on a target in well under a millisecond.

Prediction = sum over the pruned model's conv/linear layers of the profile's latency for each layer's
signature, then the per-model calibration ``a * sum + b`` fitted on whole-model measurements (the offset covers
what the table does not hold: residual additions, graph input/output), plus, where the fit found one, a memory
term for the weights that outgrow the last-level cache. Channel counts first climb the
target's alignment staircase (64 -> 60 channels costs what 64 costs on a target that pads to 8); between measured
channel counts the table is interpolated bilinearly. A block the plan drops is absent: its layers (and, on a roofline, their fixed
per-layer costs) leave the sum, and the breakdown shows it as one row of 0 ms.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from autoprune.errors import UserError
from autoprune.hardware.latency_models import MissingEntries, RooflineLatency, latency_model_for, staircase
from autoprune.hardware.profile import HardwareProfile, NMSupport, Validation
from autoprune.hardware.signature import LayerSignature, dense_signature, model_key, pruned_signature
from autoprune.plan import PruningPlan
from autoprune.pruning.space import POOL_OPS, SearchSpace

BYTES = {"fp32": 4, "fp16": 2, "int8": 1}
OFFSET_ROW = "(other ops: calibration offset)"
SPILL_ROW = "(weights beyond the {cache:g} MB cache: calibration)"
DROPPED_ROW = "{block} (dropped block)"
CALL_ROW = "(runtime call overhead, measured with the table)"
INT8_SUFFIX = ":int8"  # per-model calibration/validation keys of INT8 records: "resnet18@1x3x32x32:int8"


def precision_key(key: str, precision: str) -> str:
    """Key of a per-model profile record (calibration, validation) for ``precision``; fp32 keeps the plain key."""
    return key + INT8_SUFFIX if precision == "int8" else key


def plan_dtype(plan: PruningPlan, profile: HardwareProfile) -> str:
    """The dtype a plan's layers run at on ``profile``: int8 when the plan asks for it, else the profile's own
    float precision (an "fp32" plan means "not quantized": it runs at fp16 on a TensorRT FP16 target)."""
    return "int8" if getattr(plan, "precision", "fp32") == "int8" else profile.precision


@dataclass(frozen=True)
class LatencyEstimate:
    """A predicted latency (ms) with where it comes from, and the per-layer parts it is the sum of.

    ``per_layer`` rows sum exactly to ``latency_ms`` (a calibration offset, if any, is its own row).
    ``macs`` are for batch 1; ``params`` counts nonzero weights of conv/linear layers (BN folded into bias);
    ``size_mb`` is those nonzero weights at the target's precision (sparse-format index overhead ignored).
    """

    latency_ms: float
    provenance: str  # measured | calibrated | estimated
    source: str
    per_layer: tuple[tuple[str, float], ...]
    target: str = ""
    calibrated: bool = False
    macs: int = 0
    params: int = 0
    size_mb: float = 0.0
    stored_mb: float = 0.0  # weights the runtime reads: zeros included on a dense target (the memory term's input)
    validation: Validation | None = None
    notes: tuple[str, ...] = ()
    calibrated_here: bool = False  # the calibration was fitted on the machine making this prediction
    calibration_date: str = ""

    def to_dict(self) -> dict:
        return {
            "target": self.target, "latency_ms": round(self.latency_ms, 6), "provenance": self.provenance,
            "source": self.source, "calibrated": self.calibrated, "calibrated_here": self.calibrated_here,
            "calibration_date": self.calibration_date, "macs": self.macs, "params": self.params,
            "size_mb": round(self.size_mb, 4),
            "validation": None if self.validation is None else self.validation.summary(),
            "per_layer": [{"layer": n, "ms": round(ms, 6)} for n, ms in self.per_layer],
            "notes": list(self.notes),
        }


class CostModel:
    """Predicts plan latencies on one target from its profile. Arithmetic only; no model is built.

    The per-layer prices come from the profile's :class:`~autoprune.hardware.latency_models.LatencyModel`
    (a measured table or an analytic roofline); this class sums them and applies the per-model calibration.
    """

    def __init__(self, profile: HardwareProfile, use_calibration: bool = True):
        self.profile = profile
        self.use_calibration = use_calibration
        self.latency = latency_model_for(profile)

    # --- per-layer cost --------------------------------------------------------------------------------------
    def layer_ms(self, sig: LayerSignature, model: str = "", input_shape=None) -> float:
        """Latency (ms) of one layer of signature ``sig`` on the target, before calibration."""
        try:
            return self.latency.layer_ms(sig)
        except MissingEntries as err:
            if sig.dtype == "int8" and not self.has_int8:
                raise self.no_int8_error(model, input_shape) from err
            raise self._missing(sig, model, input_shape) from err

    @property
    def has_int8(self) -> bool:
        """Whether INT8 plans can be predicted: an INT8 roofline peak, or INT8 entries in the table."""
        return self.latency.has_int8

    def no_int8_error(self, model: str, input_shape) -> UserError:
        """The error for an INT8 plan on a profile that cannot price INT8 (names the command that fixes it)."""
        shape = "x".join(map(str, input_shape)) if input_shape else "1x3xHxW"
        if isinstance(self.latency, RooflineLatency):
            return UserError(f"target {self.profile.name!r} has no INT8 path (no INT8 peak in its roofline); search "
                             "it with --precision fp32, or pick a target with INT8 tensor cores (e.g. orin)")
        return UserError(
            f"target {self.profile.name!r} has no INT8 latency entries; measure them on this machine with "
            f"`autoprune profile measure --precision int8 --out {self.profile.file or 'PROFILE.yaml'} "
            f"--model {model or 'M'} --input-shape {shape}`, or search with --precision fp32"
        )

    def _missing(self, sig: LayerSignature, model: str, input_shape) -> UserError:
        shape = "x".join(map(str, input_shape)) if input_shape else "1x3xHxW"
        return UserError(
            f"target {self.profile.name!r} has no latency table entries for {sig.family.describe()} "
            f"(layer shape {sig.key()}); its table was measured for other layers or another input size. "
            f"Measure them on the device: `autoprune profile measure --model {model or 'M'} --input-shape {shape} "
            f"--out {self.profile.file or 'hardware_profiles/NAME.yaml'}`"
        )

    def covers(self, space: SearchSpace) -> bool:
        """Whether every layer family of ``space`` can be priced (always true for analytic profiles)."""
        dtype = self.profile.precision
        return not self.latency.missing_families(dense_signature(layer, dtype) for layer in space.layers)

    def _priced(self, space: SearchSpace, dtype: str, plan: PruningPlan):
        """The layers whose costs are summed for ``plan``: the latency model's, less those of dropped blocks."""
        return tuple(layer for layer in self.latency.priced_layers(space, dtype)
                     if not space.is_dropped(layer.name, plan))

    # --- whole plan ------------------------------------------------------------------------------------------
    def predict(self, space: SearchSpace, plan: PruningPlan) -> LatencyEstimate:
        """Predicted latency of ``space``'s model pruned by ``plan`` on this target, with its parts.

        An INT8 plan is priced from the profile's INT8 entries (or INT8 roofline peak) and INT8 calibration.
        """
        profile = self.profile
        dtype = plan_dtype(plan, profile)
        channels = space.group_channels()
        sparsity = dict(_plan_mapping(plan, "layer_sparsity"))
        global_sparsity = float(getattr(plan, "global_sparsity", 0.0) or 0.0)
        nm = _plan_mapping(plan, "nm")
        rows: list[tuple[str, float]] = []
        macs = params = stored = 0  # stored: weights the runtime reads (a dense target stores zeros too)
        notes: list[str] = []
        if (global_sparsity > 0 or any(v > 0 for v in sparsity.values())) and not profile.unstructured_sparsity:
            notes.append("unstructured sparsity gives no latency gain on this dense target (size shrinks only "
                         "if stored sparse)")
        nm_gain = nm_asked = 0
        rows.extend((DROPPED_ROW.format(block=b), 0.0) for b in plan.drop_blocks)
        for layer in self._priced(space, dtype, plan):
            sig = pruned_signature(layer, plan, channels, dtype)
            ms = self.layer_ms(sig, space.model, space.input_shape)
            if layer.op in POOL_OPS:  # no weights to prune or count; its cost follows its input's channels
                rows.append((layer.name, ms))
                continue
            pattern = nm.get(layer.name, nm.get("*"))
            if pattern is not None:
                nm_asked += 1
                support = _nm_support(profile.nm, pattern, sig)
                if support is not None:
                    ms /= support.speedup
                    nm_gain += 1
            rows.append((layer.name, ms))
            macs += sig.macs
            # Nonzero weights; a global sparsity is spread evenly here (its real split depends on the weights).
            density = 1.0 - max(float(sparsity.get(layer.name, 0.0)), global_sparsity)
            if pattern is not None:
                n, m = (int(x) for x in str(pattern).split(":"))
                density = min(density, n / m)
            params += round(sig.params * density)
            stored += sig.params
        if nm_asked and nm_gain < nm_asked:
            notes.append(f"N:M sparsity speeds up {nm_gain} of {nm_asked} layers on this target "
                         f"({'no N:M support' if not profile.nm else 'others are too small or grouped'})")
        key = precision_key(model_key(space.model, space.input_shape), dtype)
        calibration = profile.calibration.get(key)
        calibrated = calibration is not None and self.use_calibration
        size_mb = params * BYTES.get(dtype, 4) / 1e6
        stored_mb = (params if profile.unstructured_sparsity else stored) * BYTES.get(dtype, 4) / 1e6
        if calibrated:
            rows = [(n, calibration.a * ms) for n, ms in rows]
            rows.append((OFFSET_ROW, calibration.b))
            if calibration.spill_ms_per_mb:
                rows.append((SPILL_ROW.format(cache=calibration.cache_mb), calibration.spill_ms(stored_mb)))
        elif profile.call_overhead_ms > 0:
            # The table's entries are what each layer adds inside one call; a whole model is one call more.
            # (A calibration's offset already holds it.)
            rows.append((CALL_ROW, profile.call_overhead_ms))
        total = math.fsum(ms for _, ms in rows)
        source = profile.provenance_source
        if calibrated:
            spill = ""
            if calibration.spill_ms_per_mb:
                spill = (f", +{calibration.spill_ms_per_mb:.4g} ms per MB of weights beyond the "
                         f"{calibration.cache_mb:g} MB cache")
            where = " fitted on this machine" if _fitted_here(calibration) else ""
            source += (f"; per-model calibration{where} a={calibration.a:.4g}, b={calibration.b:.4g} ms{spill} "
                       f"({calibration.source}, {calibration.date})")
        if dtype == "int8":
            source += "; INT8 (static quantization)"
        if not calibrated and self.latency.uncalibrated_note:
            source += "; " + self.latency.uncalibrated_note
        return LatencyEstimate(
            latency_ms=total, provenance=profile.provenance, source=source, per_layer=tuple(rows),
            target=profile.name, calibrated=calibrated, macs=macs, params=params,
            size_mb=size_mb, stored_mb=stored_mb,
            validation=profile.validation.get(key), notes=tuple(notes),
            calibrated_here=calibrated and _fitted_here(calibration),
            calibration_date=calibration.date if calibrated else "",
        )

    def layer_sum_ms(self, space: SearchSpace, plan: PruningPlan) -> float:
        """Uncalibrated sum of the layer latencies (the quantity calibration is fitted on)."""
        channels = space.group_channels()
        dtype = plan_dtype(plan, self.profile)
        return math.fsum(self.layer_ms(pruned_signature(layer, plan, channels, dtype),
                                       space.model, space.input_shape) for layer in self._priced(space, dtype, plan))


def _fitted_here(calibration) -> bool:
    """Whether ``calibration`` was fitted on this machine (it records the machine's fingerprint)."""
    if not calibration.machine:
        return False
    from autoprune.hardware.local import this_machine  # imported late: local builds on this module

    return calibration.machine == this_machine().fingerprint


def _plan_mapping(plan: PruningPlan, name: str) -> Mapping:
    # Plans gain per-layer ``sparsity`` and ``nm`` entries in a later version; older plans have neither.
    value = getattr(plan, name, None)
    return value if isinstance(value, Mapping) else {}


def _nm_support(supported: tuple[NMSupport, ...], requested, sig: LayerSignature) -> NMSupport | None:
    pattern = str(requested).replace(" ", "")
    for support in supported:
        if support.pattern != pattern:
            continue
        if sig.groups > 1 and not support.grouped:
            return None
        if min(sig.cin, sig.cout) >= support.min_channels:
            return support
    return None


def roofline_ms(sig: LayerSignature, profile: HardwareProfile) -> float:
    """Analytic latency (ms) of one layer on a roofline ``profile`` (see :class:`RooflineLatency`)."""
    return RooflineLatency(profile).layer_ms(sig)
