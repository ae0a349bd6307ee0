"""The latency cost model: predicts a plan's latency on a target in well under a millisecond.

Prediction = sum over the pruned model's conv/linear layers of the profile's latency for each layer's
signature, then the per-model calibration ``a * sum + b`` fitted on whole-model measurements (the offset covers
what the table does not hold: residual additions, graph input/output), plus, where the fit found one, a memory
term for the weights that outgrow the last-level cache. Channel counts first climb the
target's alignment staircase (64 -> 60 channels costs what 64 costs on a target that pads to 8); between measured
channel counts the table is interpolated bilinearly.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from autoprune.errors import UserError
from autoprune.hardware.profile import HardwareProfile, NMSupport, Validation
from autoprune.hardware.signature import FamilyKey, LayerSignature, dense_signature, model_key, pruned_signature
from autoprune.plan import PruningPlan
from autoprune.pruning.space import POOL_OPS, SearchSpace

BYTES = {"fp32": 4, "fp16": 2, "int8": 1}
OFFSET_ROW = "(other ops: calibration offset)"
SPILL_ROW = "(weights beyond the {cache:g} MB cache: calibration)"
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

    def to_dict(self) -> dict:
        return {
            "target": self.target, "latency_ms": round(self.latency_ms, 6), "provenance": self.provenance,
            "source": self.source, "calibrated": self.calibrated, "macs": self.macs, "params": self.params,
            "size_mb": round(self.size_mb, 4),
            "validation": None if self.validation is None else self.validation.summary(),
            "per_layer": [{"layer": n, "ms": round(ms, 6)} for n, ms in self.per_layer],
            "notes": list(self.notes),
        }


def staircase(channels: int, alignment: int) -> int:
    """Channels the target really computes: ``channels`` padded up to a multiple of ``alignment``."""
    return -(-channels // alignment) * alignment


class _Axis:
    """Sorted measured channel counts of one table dimension, with interpolation weights."""

    def __init__(self, values):
        self.values = sorted(set(values))

    def locate(self, c: int, alignment: int) -> list[tuple[int, float]]:
        """[(index, weight)] of the grid points whose weighted sum gives channel count ``c``."""
        vals = self.values
        if c not in vals:  # a count the table measured exactly needs no padding (e.g. 3 input channels)
            c = staircase(c, alignment)
        if len(vals) == 1 or c == vals[0]:
            return [(0, c / vals[0])] if c != vals[0] else [(0, 1.0)]
        if c <= vals[0]:  # below the grid: latency shrinks at most linearly with channels
            return [(0, c / vals[0])]
        if c >= vals[-1]:
            return [(len(vals) - 1, c / vals[-1])]
        hi = bisect.bisect_left(vals, c)
        if vals[hi] == c:
            return [(hi, 1.0)]
        lo = hi - 1
        t = (c - vals[lo]) / (vals[hi] - vals[lo])
        return [(lo, 1.0 - t), (hi, t)]


class _Family:
    """A table family: latency (ms) on a rectangular grid of (cin, cout), or of channels for depthwise."""

    def __init__(self, key: FamilyKey, entries, where: str):
        self.key = key
        self.depthwise = key.groups == "dw"
        self.cin = _Axis(e.signature.cin for e in entries)
        self.cout = _Axis(e.signature.cout for e in entries)
        self.grid = {(e.signature.cin, e.signature.cout): e.mean_ms for e in entries}
        if not self.depthwise:
            missing = [(i, o) for i in self.cin.values for o in self.cout.values if (i, o) not in self.grid]
            if missing:
                raise UserError(
                    f"hardware profile {where}: table family {key.describe()} is not a full grid: "
                    f"(cin, cout) = {missing[0]} is missing; re-measure it with `autoprune profile measure`"
                )

    def lookup(self, cin: int, cout: int, alignment: int) -> float:
        if self.depthwise:
            return sum(w * self.grid[(self.cout.values[j],) * 2] for j, w in self.cout.locate(cout, alignment))
        total = 0.0
        for i, wi in self.cin.locate(cin, alignment):
            for j, wo in self.cout.locate(cout, alignment):
                total += wi * wo * self.grid[(self.cin.values[i], self.cout.values[j])]
        return total


class CostModel:
    """Predicts plan latencies on one target from its profile. Arithmetic only; no model is built."""

    def __init__(self, profile: HardwareProfile, use_calibration: bool = True):
        self.profile = profile
        self.use_calibration = use_calibration
        self._families: dict[FamilyKey, _Family] = {}
        if profile.latency_model == "table":
            by_family: dict[FamilyKey, list] = {}
            for entry in profile.entries:
                by_family.setdefault(entry.signature.family, []).append(entry)
            self._families = {k: _Family(k, v, profile.path or profile.name) for k, v in by_family.items()}

    # --- per-layer cost --------------------------------------------------------------------------------------
    def layer_ms(self, sig: LayerSignature, model: str = "", input_shape=None) -> float:
        """Latency (ms) of one layer of signature ``sig`` on the target, before calibration."""
        if self.profile.latency_model == "roofline":
            return roofline_ms(sig, self.profile)
        family = self._families.get(sig.family)
        if family is None:
            if sig.dtype == "int8" and not self.has_int8:
                raise self.no_int8_error(model, input_shape)
            raise self._missing(sig, model, input_shape)
        return family.lookup(sig.cin, sig.cout, self.profile.alignment)

    @property
    def has_int8(self) -> bool:
        """Whether INT8 plans can be predicted: an INT8 roofline peak, or INT8 entries in the table."""
        if self.profile.latency_model == "roofline":
            return bool(self.profile.roofline and self.profile.roofline.int8_peak_gflops)
        return any(key.dtype == "int8" for key in self._families)

    def no_int8_error(self, model: str, input_shape) -> UserError:
        """The error for an INT8 plan on a profile that cannot price INT8 (names the command that fixes it)."""
        shape = "x".join(map(str, input_shape)) if input_shape else "1x3xHxW"
        if self.profile.latency_model == "roofline":
            return UserError(f"target {self.profile.name!r} has no INT8 path (no INT8 peak in its roofline); search "
                             "it with --precision fp32, or pick a target with INT8 tensor cores (e.g. orin)")
        return UserError(
            f"target {self.profile.name!r} has no INT8 latency entries; measure them on this machine with "
            f"`autoprune profile measure --precision int8 --out {self.profile.path.strip(chr(39)) or 'PROFILE.yaml'} "
            f"--model {model or 'M'} --input-shape {shape}`, or search with --precision fp32"
        )

    def _missing(self, sig: LayerSignature, model: str, input_shape) -> UserError:
        shape = "x".join(map(str, input_shape)) if input_shape else "1x3xHxW"
        return UserError(
            f"target {self.profile.name!r} has no latency table entries for {sig.family.describe()} "
            f"(layer shape {sig.key()}); its table was measured for other layers or another input size. "
            f"Measure them on the device: `autoprune profile measure --model {model or 'M'} --input-shape {shape} "
            f"--out {self.profile.path.strip(chr(39)) or 'hardware_profiles/NAME.yaml'}`"
        )

    def covers(self, space: SearchSpace) -> bool:
        """Whether every layer family of ``space`` is in the profile (always true for analytic profiles)."""
        if self.profile.latency_model == "roofline":
            return True
        dtype = self.profile.precision
        return all(dense_signature(layer, dtype).family in self._families for layer in space.layers)

    def _priced(self, space: SearchSpace, dtype: str):
        """The layers of ``space`` this profile prices: all of them, except pooling layers a table profile has
        no entries for (tables measured before pooling was measured; their calibration absorbs its cost)."""
        if self.profile.latency_model == "roofline":
            return space.cost_layers
        return space.layers + tuple(p for p in space.pools if dense_signature(p, dtype).family in self._families)

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
        for layer in self._priced(space, dtype):
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
        total = math.fsum(ms for _, ms in rows)
        source = profile.provenance_source
        if calibrated:
            spill = ""
            if calibration.spill_ms_per_mb:
                spill = (f", +{calibration.spill_ms_per_mb:.4g} ms per MB of weights beyond the "
                         f"{calibration.cache_mb:g} MB cache")
            source += (f"; per-model calibration a={calibration.a:.4g}, b={calibration.b:.4g} ms{spill} "
                       f"({calibration.source})")
        if dtype == "int8":
            source += "; INT8 (static quantization)"
        if not calibrated and profile.latency_model == "table":
            source += "; no per-model calibration (sum of isolated layers)"
        return LatencyEstimate(
            latency_ms=total, provenance=profile.provenance, source=source, per_layer=tuple(rows),
            target=profile.name, calibrated=calibrated, macs=macs, params=params,
            size_mb=size_mb, stored_mb=stored_mb,
            validation=profile.validation.get(key), notes=tuple(notes),
        )

    def layer_sum_ms(self, space: SearchSpace, plan: PruningPlan) -> float:
        """Uncalibrated sum of the layer latencies (the quantity calibration is fitted on)."""
        channels = space.group_channels()
        dtype = plan_dtype(plan, self.profile)
        return math.fsum(self.layer_ms(pruned_signature(layer, plan, channels, dtype),
                                       space.model, space.input_shape) for layer in self._priced(space, dtype))


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
    """Analytic latency (ms) of one layer: max(compute, memory) + fixed cost, on aligned channel counts.

    An INT8 layer runs at the INT8 peak, moves one byte per element and pads channels to the INT8 tile (32).
    """
    r = profile.roofline
    align = profile.alignment
    peak, bytes_per_element = r.peak_gflops, r.bytes_per_element
    if sig.dtype == "int8":
        if not r.int8_peak_gflops:
            raise UserError(f"target {profile.name!r} has no INT8 path (no INT8 peak in its roofline); search it "
                            "with --precision fp32")
        peak, bytes_per_element, align = r.int8_peak_gflops, 1.0, max(align, int(r.int8_alignment))
    cin = sig.cin if sig.cin <= 4 else staircase(sig.cin, align)  # RGB input is not padded to a tensor-core tile
    cout = staircase(sig.cout, align)
    padded = sig.with_channels(cin, cout) if not sig.depthwise else sig.with_channels(cout, cout)
    oh, ow = padded.out_hw
    flops = 2.0 * padded.macs
    elements = padded.cin * sig.in_h * sig.in_w + padded.cout * oh * ow + padded.params
    compute_ms = flops / (peak * 1e9 * r.efficiency) * 1e3
    memory_ms = elements * bytes_per_element / (r.bandwidth_gbs * 1e9) * 1e3
    return max(compute_ms, memory_ms) + r.fixed_ms_per_layer
