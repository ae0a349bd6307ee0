"""Hardware profiles: what a target is, how it behaves, and what its layers cost.

A profile is a YAML (or JSON) file validated by :mod:`autoprune.hardware.schema`. Shipped profiles live in
``hardware_profiles/``; ``load_profile`` accepts an alias (``jetson``, ``cpu``), a shipped name, or a path.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from autoprune.errors import UserError, unknown_choice
from autoprune.hardware.schema import SCHEMA_VERSION, validate_profile_data
from autoprune.hardware.signature import LayerSignature
from autoprune.paths import atomic_write_text, shipped_dir

# Short names for the targets most runs use. "jetson" is the Nano: compute-bound, so pruning shows real gains.
ALIASES: Mapping[str, str] = MappingProxyType({
    "jetson": "jetson-nano-trt-fp16",
    "jetson-nano": "jetson-nano-trt-fp16",
    "xavier": "jetson-agx-xavier-trt-fp16",
    "orin": "jetson-agx-orin-trt-fp16",
    "orin-nano": "jetson-orin-nano-trt-fp16",
    "cpu": "host-cpu-amd-epyc-ort-1t",
    "host": "host-cpu-amd-epyc-ort-1t",
})


@dataclass(frozen=True)
class LatencyEntry:
    """One measured layer signature: mean and std in ms over ``n`` kept samples."""

    signature: LayerSignature
    mean_ms: float
    std_ms: float
    n: int

    def to_dict(self) -> dict:
        return {**self.signature.to_dict(), "mean_ms": round(self.mean_ms, 6), "std_ms": round(self.std_ms, 6),
                "n": self.n}


@dataclass(frozen=True)
class Roofline:
    """Analytic per-layer model: max(FLOPs / (peak * efficiency), bytes / bandwidth) + fixed cost per layer.

    ``peak_gflops`` in GFLOP/s, ``bandwidth_gbs`` in GB/s, ``fixed_ms_per_layer`` in ms (kernel launch and
    scheduling), ``efficiency`` the fraction of peak compute reached, ``bytes_per_element`` by precision.
    """

    peak_gflops: float
    bandwidth_gbs: float
    efficiency: float
    fixed_ms_per_layer: float
    bytes_per_element: float
    fit: str = ""
    int8_peak_gflops: float | None = None  # INT8 tensor-core peak in GOP/s; None: no INT8 path on this device
    int8_alignment: int = 32  # INT8 kernels tile channels by 32 (TensorRT on tensor cores)
    # Fitted per op type ("depthwise", "linear", ...): multipliers of ``efficiency`` and of ``bandwidth_gbs``.
    op_efficiency: tuple[tuple[str, float], ...] = ()
    op_bandwidth: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class NMSupport:
    """An N:M sparsity pattern the target accelerates, on layers with at least ``min_channels`` in and out."""

    pattern: str
    min_channels: int
    speedup: float  # latency divisor of an eligible layer
    grouped: bool = False  # whether grouped/depthwise convolutions benefit (they never do on Ampere)
    source: str = ""


@dataclass(frozen=True)
class Calibration:
    """Per-model correction fitted on whole-model measurements (ms):

        latency = a * sum(layers) + b + spill_ms_per_mb * max(0, weight_mb - cache_mb)

    The last term is the cost of weights that no longer fit the last-level cache: a layer timed alone keeps its
    weights in cache between runs, a whole model bigger than the cache streams them from memory on every run.
    """

    a: float
    b: float
    points: int
    source: str
    date: str = ""
    residual_ms: float | None = None
    spill_ms_per_mb: float = 0.0
    cache_mb: float | None = None
    machine: str = ""  # fingerprint of the machine it was fitted on (see local.this_machine), "" if unrecorded

    def spill_ms(self, weight_mb: float) -> float:
        """The memory term for a model holding ``weight_mb`` MB of weights (0 without a fitted spill)."""
        if not self.spill_ms_per_mb or self.cache_mb is None:
            return 0.0
        return self.spill_ms_per_mb * max(0.0, weight_mb - self.cache_mb)


@dataclass(frozen=True)
class Validation:
    """How well predictions matched end-to-end measurements of random plans."""

    samples: int
    mape_pct: float
    within_5_pct: float
    within_10_pct: float
    kendall_tau: float
    date: str
    machine: str = ""
    command: str = ""
    note: str = ""
    measured_range_ms: tuple[float, float] | None = None
    calibrated: bool = True
    rounds: int = 1
    # Share (%) of plans whose `rounds` measurements all lie within ±10% of their median: the ceiling the noise
    # of this machine puts on `within_10_pct`. None after a single round.
    repeatable_10_pct: float | None = None
    # The same scores on latency ratios plan / dense, each plan timed next to the dense model (drift cancels).
    ratio_mape_pct: float | None = None
    ratio_within_5_pct: float | None = None
    ratio_within_10_pct: float | None = None
    # Analytic profiles fitted on published figures: median leave-one-out error (%) over them.
    loo_median_pct: float | None = None

    def summary(self) -> str:
        repeat = ("" if self.repeatable_10_pct is None else
                  f"; the measurement itself repeated within ±10% for {self.repeatable_10_pct:.0f}% of plans over "
                  f"{self.rounds} rounds")
        ratio = ("" if self.ratio_mape_pct is None else
                 f"; as ratios to the dense model: MAPE {self.ratio_mape_pct:.1f}%, {self.ratio_within_10_pct:.0f}% "
                 f"within ±10%")
        if self.loo_median_pct is not None:
            return (f"fitted on {self.samples} published figures: leave-one-out error median "
                    f"{self.loo_median_pct:.1f}%, MAPE {self.mape_pct:.1f}%, {self.within_10_pct:.0f}% within ±10%, "
                    f"Kendall tau {self.kendall_tau:.3f} ({self.date})")
        return (f"validated on {self.samples} random plans: MAPE {self.mape_pct:.1f}%, "
                f"{self.within_10_pct:.0f}% within ±10%, {self.within_5_pct:.0f}% within ±5%, "
                f"Kendall tau {self.kendall_tau:.3f} ({self.date}){ratio}{repeat}")


@dataclass(frozen=True)
class HardwareProfile:
    name: str
    device: str
    runtime: str  # onnxruntime | tensorrt | pytorch
    precision: str  # fp32 | fp16 | int8
    batch: int
    threads: int
    date: str
    provenance: str  # measured | calibrated | estimated
    provenance_source: str
    alignment: int  # channel counts are padded to a multiple of this
    latency_model: str  # table | roofline
    entries: tuple[LatencyEntry, ...] = ()
    roofline: Roofline | None = None
    call_overhead_ms: float = 0.0
    measure_method: str = ""
    unstructured_sparsity: bool = False
    nm: tuple[NMSupport, ...] = ()
    execution_provider: str = ""
    software: Mapping[str, str] = field(default_factory=dict)
    calibration: Mapping[str, Calibration] = field(default_factory=dict)
    validation: Mapping[str, Validation] = field(default_factory=dict)
    caveats: tuple[str, ...] = ()
    description: str = ""
    path: str = ""

    @property
    def measured(self) -> bool:
        return self.provenance == "measured"

    @property
    def file(self) -> Path | None:
        """The file this profile was read from (None for a profile built in memory)."""
        return Path(self.path.strip("'")) if self.path else None

    def to_dict(self) -> dict[str, Any]:
        latency: dict[str, Any] = {"model": self.latency_model}
        if self.latency_model == "table":
            if self.measure_method:
                latency["method"] = self.measure_method
            latency["call_overhead_ms"] = round(self.call_overhead_ms, 6)
            latency["entries"] = [e.to_dict() for e in self.entries]
        else:
            r = self.roofline
            latency["roofline"] = {"peak_gflops": r.peak_gflops, "bandwidth_gbs": r.bandwidth_gbs,
                                   "efficiency": r.efficiency, "fixed_ms_per_layer": r.fixed_ms_per_layer,
                                   "bytes_per_element": r.bytes_per_element, **({"fit": r.fit} if r.fit else {}),
                                   **({"int8_peak_gflops": r.int8_peak_gflops, "int8_alignment": r.int8_alignment}
                                      if r.int8_peak_gflops else {}),
                                   **({"op_efficiency": dict(r.op_efficiency)} if r.op_efficiency else {}),
                                   **({"op_bandwidth": dict(r.op_bandwidth)} if r.op_bandwidth else {})}
        data: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            **({"description": self.description} if self.description else {}),
            "device": self.device,
            "runtime": self.runtime,
            **({"execution_provider": self.execution_provider} if self.execution_provider else {}),
            "precision": self.precision,
            "batch": self.batch,
            "threads": self.threads,
            "software": {str(k): str(v) for k, v in self.software.items()},
            "date": self.date,
            "provenance": {"kind": self.provenance, "source": self.provenance_source},
            "alignment": self.alignment,
            "sparsity": {"unstructured": self.unstructured_sparsity,
                         "nm": [_nm_dict(s) for s in self.nm]},
            "caveats": list(self.caveats),
            "calibration": {k: _calibration_dict(v) for k, v in self.calibration.items()},
            "validation": {k: _validation_dict(v) for k, v in self.validation.items()},
            "latency": latency,
        }
        return data


def _nm_dict(s: NMSupport) -> dict:
    d = {"pattern": s.pattern, "min_channels": s.min_channels, "speedup": s.speedup, "grouped": s.grouped}
    if s.source:
        d["source"] = s.source
    return d


def _calibration_dict(c: Calibration) -> dict:
    d = _drop_none(vars(c))
    if not c.spill_ms_per_mb:  # no memory term: write the record as versions without one read it
        d.pop("spill_ms_per_mb", None)
        d.pop("cache_mb", None)
    return d


def _validation_dict(v: Validation) -> dict:
    d = _drop_none(vars(v))
    if v.measured_range_ms is not None:
        d["measured_range_ms"] = list(v.measured_range_ms)
    if v.rounds == 1:
        d.pop("rounds")
    return d


def _drop_none(d: Mapping) -> dict:
    return {k: v for k, v in d.items() if v is not None and v != ""}


def _roofline(data: Mapping) -> Roofline:
    def value(key, v):
        if key == "fit":
            return v
        if key == "int8_alignment":
            return int(v)
        if key in ("op_efficiency", "op_bandwidth"):
            return tuple((str(op), float(x)) for op, x in v.items())
        return float(v)

    return Roofline(**{k: value(k, v) for k, v in data.items()})


def profile_from_dict(data: Any, where: str) -> HardwareProfile:
    """Validate parsed profile data and build the record."""
    validate_profile_data(data, where)
    latency = data["latency"]
    entries = tuple(
        LatencyEntry(
            LayerSignature(e["op"], e["cin"], e["cout"], e["kernel"], e["stride"], e["padding"], e["groups"],
                           e["in_h"], e["in_w"], e["dtype"]),
            float(e["mean_ms"]), float(e["std_ms"]), int(e["n"]),
        )
        for e in latency.get("entries") or []
    )
    roofline = _roofline(latency["roofline"]) if latency["model"] == "roofline" else None
    validation = {}
    for key, v in (data.get("validation") or {}).items():
        v = dict(v)
        if "measured_range_ms" in v:
            v["measured_range_ms"] = tuple(float(x) for x in v["measured_range_ms"])
        v["date"] = str(v["date"])
        validation[str(key)] = Validation(**v)
    return HardwareProfile(
        name=data["name"], device=data["device"], runtime=data["runtime"], precision=data["precision"],
        batch=data["batch"], threads=data["threads"], date=str(data["date"]),
        provenance=data["provenance"]["kind"], provenance_source=data["provenance"]["source"],
        alignment=data["alignment"], latency_model=latency["model"], entries=entries, roofline=roofline,
        call_overhead_ms=float(latency.get("call_overhead_ms", 0.0)), measure_method=latency.get("method", ""),
        unstructured_sparsity=data["sparsity"]["unstructured"],
        nm=tuple(NMSupport(**s) for s in data["sparsity"]["nm"]),
        execution_provider=data.get("execution_provider", ""),
        software=MappingProxyType({str(k): str(v) for k, v in (data.get("software") or {}).items()}),
        calibration=MappingProxyType({str(k): Calibration(**{**v, "date": str(v.get("date", ""))})
                                      for k, v in (data.get("calibration") or {}).items()}),
        validation=MappingProxyType(validation),
        caveats=tuple(data.get("caveats") or ()), description=data.get("description", ""), path=where,
    )


def _parse(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(f"hardware profile {str(path)!r} is not valid JSON: {err}") from err
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader is as safe and ~10x faster
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader: data only
    except yaml.YAMLError as err:
        raise UserError(f"hardware profile {str(path)!r} is not valid YAML: {str(err).splitlines()[0]}") from err


_CACHE: dict[tuple[str, float], HardwareProfile] = {}


def read_profile(path: Path) -> HardwareProfile:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"hardware profile {str(path)!r} does not exist")
    stamp = (str(path.resolve()), path.stat().st_mtime)
    if stamp not in _CACHE:
        _CACHE[stamp] = profile_from_dict(_parse(path), repr(str(path)))
    return _CACHE[stamp]


def save_profile(profile: HardwareProfile, path: Path) -> Path:
    """Write ``profile`` atomically as YAML (table entries one per line) or JSON (by suffix)."""
    path = Path(path)
    data = profile.to_dict()
    if path.suffix == ".json":
        text = json.dumps(data, indent=1) + "\n"
    else:
        entries = data["latency"].pop("entries", None)
        text = yaml.safe_dump(data, sort_keys=False, width=120)
        if entries is not None:
            # One flow-style mapping per entry keeps a thousand-entry table readable and diffable.
            lines = ["  entries:"] if entries else ["  entries: []"]
            lines += ["  - " + yaml.safe_dump(e, default_flow_style=True, width=1000).strip() for e in entries]
            text += "\n".join(lines) + "\n"
    validate_profile_data(yaml.safe_load(text) if path.suffix != ".json" else json.loads(text), repr(str(path)))
    atomic_write_text(path, text)
    _CACHE.clear()
    return path


def profile_dirs() -> list[Path]:
    """Where named profiles are looked up: user profiles (``$AUTOPRUNE_HOME/hardware_profiles``) then shipped."""
    from autoprune.paths import autoprune_home

    dirs = [autoprune_home() / "hardware_profiles"]
    try:
        dirs.append(shipped_dir("hardware_profiles"))
    except FileNotFoundError:
        pass
    return [d for d in dirs if d.is_dir()]


def is_shipped(path: Path) -> bool:
    """Whether ``path`` lies in the shipped ``hardware_profiles`` folder (part of the installation)."""
    try:
        shipped = shipped_dir("hardware_profiles").resolve()
    except FileNotFoundError:
        return False
    return Path(path).resolve().is_relative_to(shipped)


def writable_path(profile: HardwareProfile) -> Path:
    """Where an updated ``profile`` is written: its own file, unless that is shipped with autoprune; then a copy of
    the same name in ``$AUTOPRUNE_HOME/hardware_profiles`` (which overrides the shipped one when loaded by name)."""
    from autoprune.paths import autoprune_home

    own = profile.file
    if own is not None and not is_shipped(own):
        return own
    return autoprune_home() / "hardware_profiles" / f"{profile.name}.yaml"


def _named_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in reversed(profile_dirs()):  # user profiles override shipped ones of the same name
        for path in sorted(folder.glob("*.y*ml")) + sorted(folder.glob("*.json")):
            found[path.stem] = path
    return found


def load_profile(target: str | Path) -> HardwareProfile:
    """A profile by alias (``jetson``, ``cpu``), name (``jetson-nano-trt-fp16``) or path to a .yaml/.json file."""
    text = str(target)
    path = Path(text).expanduser()
    if path.suffix in (".yaml", ".yml", ".json") or path.is_file():
        return read_profile(path)
    files = _named_files()
    name = ALIASES.get(text, text)
    if name not in files:
        raise unknown_choice("hardware target", text, [*files, *ALIASES],
                             "see `autoprune targets`, or pass a profile file path")
    return read_profile(files[name])


@dataclass(frozen=True)
class TargetInfo:
    """One line of ``autoprune targets``."""

    name: str
    aliases: tuple[str, ...]
    device: str
    runtime: str
    precision: str
    provenance: str
    source: str
    path: str
    validation: str = ""


def available_targets() -> list[TargetInfo]:
    """Every loadable profile (user ones override shipped ones), with aliases and provenance."""
    targets = []
    for name, path in sorted(_named_files().items()):
        profile = read_profile(path)
        aliases = tuple(a for a, n in ALIASES.items() if n == name)
        validation = "; ".join(f"{k}: {v.summary()}" for k, v in profile.validation.items())
        targets.append(TargetInfo(name, aliases, profile.device, profile.runtime, profile.precision,
                                  profile.provenance, profile.provenance_source, str(path), validation))
    return targets


def unmeasured_warning(profile: HardwareProfile) -> str | None:
    """The warning a search prints once when its target profile was not measured on the device (else None)."""
    if profile.measured:
        return None
    return (
        f"target {profile.name!r} is {profile.provenance}, not measured ({profile.provenance_source}); its latencies "
        f"are model figures. Measure the real device: on a host with torch run `autoprune profile export --model M "
        f"--out DIR`, on the device `autoprune profile run DIR` (needs only onnxruntime+numpy, or trtexec), then "
        f"`autoprune profile import DIR/results.json --out hardware_profiles/NAME.yaml`; or on the device itself "
        f"`autoprune profile measure --model M --out hardware_profiles/NAME.yaml`"
    )


_WARNED: set[str] = set()


def warn_once_text(profile: HardwareProfile) -> str | None:
    """:func:`unmeasured_warning` the first time a profile is seen in this process, None afterwards."""
    if profile.name in _WARNED:
        return None
    _WARNED.add(profile.name)
    return unmeasured_warning(profile)


def today() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
