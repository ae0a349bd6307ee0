"""How a profile prices one layer: one class per kind of latency model, behind one contract.

A profile's ``latency.model`` names its kind; :func:`latency_model_for` builds the matching
:class:`LatencyModel` from the registry. The cost model (:mod:`autoprune.hardware.cost_model`) sums what the
latency model says about each layer and applies the per-model calibration; it never asks which kind it holds.

Two kinds ship:

- :class:`TableLatency` — a measured lookup table: each layer *family* (a signature without its channel counts)
  measured on a grid of channel counts, interpolated between grid points. It prices only the families it holds.
- :class:`RooflineLatency` — an analytic model: ``max(FLOPs / compute rate, bytes / bandwidth) + fixed cost``
  per layer, with per-op-type efficiencies where the profile fitted them. It prices any layer.
"""

from __future__ import annotations

import bisect
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import ClassVar

from autoprune.errors import UserError
from autoprune.hardware.profile import HardwareProfile
from autoprune.hardware.signature import FamilyKey, LayerSignature, dense_signature
from autoprune.pruning.space import LayerSpec, SearchSpace


class MissingEntries(UserError):
    """A table profile holds no entries for a layer family (the cost model words the fix)."""

    def __init__(self, sig: LayerSignature):
        super().__init__(f"no latency table entries for {sig.family.describe()} (layer shape {sig.key()})")
        self.signature = sig


def staircase(channels: int, alignment: int) -> int:
    """Channels the target really computes: ``channels`` padded up to a multiple of ``alignment``."""
    return -(-channels // alignment) * alignment


class LatencyModel(ABC):
    """Prices single layers on one target.

    Contract: built once per profile by :func:`latency_model_for` (the constructor may index the profile's
    data, and may raise :class:`UserError` when it is inconsistent); afterwards :meth:`layer_ms` is pure
    arithmetic, called once per layer per prediction, and raises :class:`MissingEntries` for a layer it cannot
    price. :meth:`priced_layers` says which layers of a space enter the sum. Example::

        latency = latency_model_for(load_profile("cpu"))
        latency.layer_ms(LayerSignature("conv", 64, 64, 3, 1, 1, 1, 8, 8))  # -> ms on the target
    """

    kind: ClassVar[str]

    def __init__(self, profile: HardwareProfile):
        self.profile = profile

    @abstractmethod
    def layer_ms(self, sig: LayerSignature) -> float:
        """Latency (ms) of one layer of signature ``sig`` on the target, before per-model calibration."""

    @property
    @abstractmethod
    def has_int8(self) -> bool:
        """Whether INT8 layers can be priced."""

    def priced_layers(self, space: SearchSpace, dtype: str) -> tuple[LayerSpec, ...]:
        """The layers of ``space`` whose costs are summed (default: conv, linear and pooling layers)."""
        return space.cost_layers

    def missing_families(self, signatures: Iterable[LayerSignature]) -> list[FamilyKey]:
        """The families among ``signatures`` this model cannot price (none for an analytic model)."""
        return []

    @property
    def uncalibrated_note(self) -> str:
        """What a prediction without per-model calibration is (appended to its source), or ""."""
        return ""


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


class TableLatency(LatencyModel):
    """A measured table, interpolated bilinearly between measured channel counts (after the staircase)."""

    kind = "table"

    def __init__(self, profile: HardwareProfile):
        super().__init__(profile)
        by_family: dict[FamilyKey, list] = {}
        for entry in profile.entries:
            by_family.setdefault(entry.signature.family, []).append(entry)
        self.families = {k: _Family(k, v, profile.path or profile.name) for k, v in by_family.items()}

    def layer_ms(self, sig: LayerSignature) -> float:
        family = self.families.get(sig.family)
        if family is None:
            raise MissingEntries(sig)
        return family.lookup(sig.cin, sig.cout, self.profile.alignment)

    @property
    def has_int8(self) -> bool:
        return any(key.dtype == "int8" for key in self.families)

    def priced_layers(self, space: SearchSpace, dtype: str) -> tuple[LayerSpec, ...]:
        # Pooling layers enter only where the table measured them: tables measured before pooling was measured
        # leave its cost to their calibration.
        return space.layers + tuple(p for p in space.pools if dense_signature(p, dtype).family in self.families)

    def missing_families(self, signatures: Iterable[LayerSignature]) -> list[FamilyKey]:
        return list(dict.fromkeys(s.family for s in signatures if s.family not in self.families))

    @property
    def uncalibrated_note(self) -> str:
        return "no per-model calibration (sum of isolated layers)"


class RooflineLatency(LatencyModel):
    """Analytic per layer: ``max(compute, memory) + fixed cost`` on channel counts padded to the alignment.

    Compute runs at ``peak * efficiency``, where a fitted profile may give depthwise and fully-connected layers
    their own efficiency (``op_efficiency``); memory moves activations and weights at the bandwidth (scaled by
    ``op_bandwidth`` for fully-connected layers, whose weights stream once per inference). An INT8 layer runs at
    the INT8 peak, moves one byte per element and pads channels to the INT8 tile (32).
    """

    kind = "roofline"

    def layer_ms(self, sig: LayerSignature) -> float:
        r = self.profile.roofline
        flops, moved_bytes, op, peak = self.work(sig)
        efficiency = r.efficiency * dict(r.op_efficiency).get(op, 1.0)
        bandwidth = r.bandwidth_gbs * dict(r.op_bandwidth).get(op, 1.0)
        compute_ms = flops / (peak * 1e9 * efficiency) * 1e3
        memory_ms = moved_bytes / (bandwidth * 1e9) * 1e3
        return max(compute_ms, memory_ms) + r.fixed_ms_per_layer

    def work(self, sig: LayerSignature) -> tuple[float, float, str, float]:
        """(FLOPs, bytes moved, op type, peak GFLOP/s) of one layer on channel counts padded to the alignment."""
        profile = self.profile
        r = profile.roofline
        align = profile.alignment
        peak, bytes_per_element = r.peak_gflops, r.bytes_per_element
        if sig.dtype == "int8":
            if not r.int8_peak_gflops:
                raise UserError(f"target {profile.name!r} has no INT8 path (no INT8 peak in its roofline); search "
                                "it with --precision fp32")
            peak, bytes_per_element, align = r.int8_peak_gflops, 1.0, max(align, int(r.int8_alignment))
        cin = sig.cin if sig.cin <= 4 else staircase(sig.cin, align)  # RGB input is not padded to a tensor-core tile
        cout = staircase(sig.cout, align)
        padded = sig.with_channels(cin, cout) if not sig.depthwise else sig.with_channels(cout, cout)
        oh, ow = padded.out_hw
        elements = padded.cin * sig.in_h * sig.in_w + padded.cout * oh * ow + padded.params
        return 2.0 * padded.macs, elements * bytes_per_element, op_type(sig), peak

    @property
    def has_int8(self) -> bool:
        return bool(self.profile.roofline and self.profile.roofline.int8_peak_gflops)


def op_type(sig: LayerSignature) -> str:
    """The op type a roofline may treat on its own: ``conv``, ``depthwise``, ``linear`` or ``pool``."""
    if sig.op == "linear":
        return "linear"
    if sig.op in ("maxpool", "avgpool"):
        return "pool"
    return "depthwise" if sig.depthwise else "conv"


LATENCY_MODELS: dict[str, type[LatencyModel]] = {cls.kind: cls for cls in (TableLatency, RooflineLatency)}


def latency_model_for(profile: HardwareProfile) -> LatencyModel:
    """The latency model of ``profile``'s kind (``latency.model`` in the file)."""
    return LATENCY_MODELS[profile.latency_model](profile)
