"""The cost model on the machine autoprune runs on: self-calibration and lazily measured tables.

A measured onnxruntime profile (the shipped ``cpu``/``host`` one, or any the user measured) describes *a* machine;
the one a search runs on may be the same kind but slower, or the model may need layer shapes the table never
measured. When the target is this machine, both are fixed here, before any training:

1. :func:`measure_missing` times the layer families the table lacks (progress callback and a time estimate;
   checkpointed, so an interrupted measurement resumes), and caches them;
2. :func:`self_calibrate` re-fits the per-model calibration on a handful of whole-model timings, each plan timed
   right after the dense model so that drift cancels in their ratio, and caches it.

Both caches live under ``$AUTOPRUNE_HOME/latency/``, keyed by this machine's fingerprint and the profile's
table (and the model at its input shape). :func:`prepare_cost_model` is the one entry point: the search calls it
before it trains anything; for a target that is not this machine it only checks that every layer can be priced.
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from autoprune.errors import UserError
from autoprune.hardware import device_runner as runner
from autoprune.hardware.cost_model import CostModel, precision_key
from autoprune.hardware.latency_models import TableLatency
from autoprune.hardware.measure import Timing
from autoprune.hardware.profile import Calibration, HardwareProfile, LatencyEntry, today
from autoprune.hardware.signature import LayerSignature, model_key
from autoprune.plan import PruningPlan
from autoprune.pruning.space import SearchSpace

Progress = Callable[[int, int], None]
Note = Callable[[str], None]

CALIBRATION_PLANS = 14  # dense + 13 random plans: enough for the affine+memory forms and their cache size
CALIBRATION_BUDGET_S = 20.0  # timing budget of one self-calibration (the repeats shrink for slow models)
# Which plans a self-calibration times (:func:`calibration_plans`); part of its cache file's name, so a calibration
# fitted on an older choice of plans is fitted again. 2: the space's most pruned uniform plan is among them.
CALIBRATION_DESIGN = 2
# How the cached entries' call overhead was timed (profiling._time_ort_with_overhead); a cache written another way
# (one timing before the layers, which could zero most of them) is measured again.
OVERHEAD_METHOD = "interleaved, capped at the cheapest layer"
LAZY_MAX_POINTS = 7  # channel counts per axis of a lazily measured family (the cost model interpolates)
LAZY_TIMING = Timing(warmup=3, repeats=24, rounds=3)


@dataclass(frozen=True)
class Machine:
    """What decides how fast a table measured elsewhere runs here. ``host`` tells two machines of one kind apart
    (a hash of ``/etc/machine-id`` or the host name, never the raw identifier)."""

    cpu: str
    logical_cpus: int
    cache_mb: float | None
    onnxruntime: str
    host: str
    isa: str = ""  # widest vector instruction set (avx512f, avx2, ...): what onnxruntime's kernels dispatch on

    @property
    def fingerprint(self) -> str:
        """A short stable key of this machine (cache folder names, ``Calibration.machine``)."""
        text = json.dumps([self.cpu, self.logical_cpus, self.cache_mb, self.onnxruntime, self.host, self.isa])
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def describe(self) -> str:
        cache = f", {self.cache_mb:g} MB last-level cache" if self.cache_mb else ""
        return f"{self.cpu}{cache}, onnxruntime {self.onnxruntime}"


@functools.lru_cache(maxsize=1)
def this_machine() -> Machine:
    """The machine this process runs on."""
    import onnxruntime

    try:
        ident = Path("/etc/machine-id").read_text().strip()
    except OSError:
        ident = ""
    host = hashlib.sha256((ident or platform.node()).encode()).hexdigest()[:12]
    return Machine(runner.machine_description(), _cpu_count(), runner.last_level_cache_mb(), onnxruntime.__version__,
                   host, runner.cpu_isa())


def _cpu_count() -> int:
    import os

    return os.cpu_count() or 1


def runs_here(profile: HardwareProfile) -> bool:
    """Whether ``profile``'s target is this machine: an onnxruntime CPU table, measured (the ``cpu``/``host``
    profiles, or any the user measured with ``profile measure``/``import`` of an onnxruntime run)."""
    return (profile.runtime == "onnxruntime" and isinstance(_latency(profile), TableLatency)
            and profile.measured and profile.execution_provider in ("", "CPUExecutionProvider"))


def _latency(profile: HardwareProfile):
    from autoprune.hardware.latency_models import latency_model_for

    return latency_model_for(profile)


def machine_differences(profile: HardwareProfile, machine: Machine | None = None) -> list[str]:
    """How this machine differs from the one ``profile`` was measured on (CPU, cores, cache, onnxruntime)."""
    machine = machine or this_machine()
    found = []
    if profile.device != machine.cpu:
        found.append(f"CPU {profile.device!r} there, {machine.cpu!r} here")
    recorded_cache = next((c.cache_mb for c in profile.calibration.values() if c.cache_mb), None)
    if recorded_cache and machine.cache_mb and abs(recorded_cache - machine.cache_mb) > 0.01 * recorded_cache:
        found.append(f"last-level cache {recorded_cache:g} MB there, {machine.cache_mb:g} MB here")
    recorded_ort = profile.software.get("onnxruntime")
    if recorded_ort and recorded_ort != machine.onnxruntime:
        found.append(f"onnxruntime {recorded_ort} there, {machine.onnxruntime} here")
    if not table_carries_over(profile, machine):
        found.append(f"vector instructions {profile.software['cpu_isa']} there, {machine.isa} here")
    return found


def table_carries_over(profile: HardwareProfile, machine: Machine | None = None) -> bool:
    """Whether ``profile``'s layer timings describe this machine's kernels up to a per-model calibration.

    Not when the table was measured with another vector instruction set: onnxruntime then runs other kernels
    (an AVX-512 table priced a dense ResNet-18 at 0.40 ms on a machine with AVX2 only that ran it in 3.4-4.3 ms,
    and no whole-model calibration fixed the per-layer shape: 20% of plans within ±10%). A profile that does not
    record its instruction set (made before it was recorded) is assumed to carry over."""
    machine = machine or this_machine()
    recorded = profile.software.get("cpu_isa")
    return not recorded or not machine.isa or recorded == machine.isa


# --- cache -------------------------------------------------------------------------------------------------------
def cache_dir(profile: HardwareProfile, machine: Machine | None = None) -> Path:
    """Where this machine's additions to ``profile`` are cached: one folder per machine and table."""
    from autoprune.paths import autoprune_home

    machine = machine or this_machine()
    return autoprune_home() / "latency" / f"{profile.name}-{machine.fingerprint}-{table_hash(profile)}"


def table_hash(profile: HardwareProfile) -> str:
    """A key of what the profile measured (entries, call overhead, alignment, threads), not of its validation
    records: validating a profile does not throw its cached calibrations away."""
    digest = hashlib.sha256(f"{profile.alignment} {profile.threads} {profile.call_overhead_ms}".encode())
    for entry in profile.entries:
        digest.update(f"{entry.signature.key()}={entry.mean_ms:.6g};".encode())
    return digest.hexdigest()[:12]


def model_table_hash(profile: HardwareProfile, space: SearchSpace) -> str:
    """A key of the part of the table ``space``'s model is priced from (its layer families' entries, alignment,
    threads): what its calibration depends on. Measuring another model's layers later leaves it unchanged, so
    that model's calibration stays valid."""
    families = _fp32_families(profile, space)
    digest = hashlib.sha256(f"{profile.alignment} {profile.threads}".encode())
    for entry in sorted(profile.entries, key=lambda e: e.signature.key()):
        if entry.signature.family in families:
            digest.update(f"{entry.signature.key()}={entry.mean_ms:.6g};".encode())
    return digest.hexdigest()[:12]


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None  # absent or torn: measured again


# --- lazy tables -------------------------------------------------------------------------------------------------
def missing_signatures(profile: HardwareProfile, space: SearchSpace, dtype: str = "fp32",
                       max_points: int = LAZY_MAX_POINTS) -> list[LayerSignature]:
    """The signatures to measure so that every plan over ``space`` is priced: the grid of each missing family."""
    from autoprune.hardware.profiling import signature_grid

    latency = _latency(profile)
    grid = signature_grid(space, profile.alignment, dtype, max_points)
    missing = set(latency.missing_families(grid))
    return [s for s in grid if s.family in missing]


def estimate_seconds(signatures: Sequence[LayerSignature], timing: Timing = LAZY_TIMING) -> float:
    """A rough duration (s) of measuring ``signatures``: runs at ~15 GMAC/s on one core, plus building each
    micro-model (~0.1 s). Shown before a lazy measurement starts, so a user can judge whether to wait."""
    runs = timing.warmup + timing.repeats + 2 * timing.rounds
    return sum(0.1 + runs * (s.macs / 15e9 + 5e-5) for s in signatures)


def measure_missing(profile: HardwareProfile, space: SearchSpace, on_progress: Progress | None = None,
                    on_note: Note | None = None, folder: Path | None = None) -> HardwareProfile:
    """``profile`` with entries for the layer families of ``space`` it lacks, measured on this machine (cached).

    When the table does not carry over to this machine (:func:`table_carries_over`), every fp32 family of
    ``space`` counts as lacking: the profile's own entries for them are set aside and the model's layer shapes
    are measured here, so that no family interpolates between timings from two machines."""
    from autoprune.hardware.profiling import measure_table, merge_entries

    folder = folder or cache_dir(profile)
    foreign = not table_carries_over(profile)
    if foreign:
        profile = _without_families(profile, space)
    cached, cached_overhead = _read_cache(folder / "entries.json")
    with_cached = replace(profile, entries=merge_entries(profile.entries, cached)) if cached else profile
    if foreign and cached and cached_overhead is not None:  # this machine's per-call overhead goes with its entries
        with_cached = replace(with_cached, call_overhead_ms=cached_overhead)
    todo = missing_signatures(with_cached, space)
    if not todo:
        return with_cached
    families = len({s.family for s in todo})
    if on_note:
        why = (f"its table was measured with {profile.software.get('cpu_isa')} and this machine has "
               f"{this_machine().isa}, so onnxruntime runs other kernels here" if foreign else
               f"it has no latency entries for {families} layer families of it")
        on_note(f"target {profile.name!r} cannot price {model_key(space.model, space.input_shape)} here as shipped "
                f"({why}); measuring {len(todo)} layer shapes on this machine "
                f"(about {estimate_seconds(todo) / 60:.1f} min; cached in {folder}, an interruption resumes)")
    checkpoint = runner.Checkpoint(folder / "entries.partial.jsonl")
    start = time.perf_counter()
    entries, overhead = measure_table(todo, "onnxruntime", max(profile.threads, 1), LAZY_TIMING, on_progress,
                                      checkpoint=checkpoint)
    # The profile's entries exclude its own call overhead; these exclude the one measured now, here.
    merged = merge_entries(cached, entries)
    from autoprune.paths import atomic_write_json

    atomic_write_json(folder / "entries.json", {"machine": this_machine().describe(), "date": today(),
                                                "call_overhead_ms": overhead, "overhead": OVERHEAD_METHOD,
                                                "entries": [e.to_dict() for e in merged]})
    checkpoint.remove()
    merged, _ = _read_cache(folder / "entries.json")  # as a later run reads them: the same table, the same key
    if on_note:
        on_note(f"measured {len(todo)} layer shapes in {time.perf_counter() - start:.0f} s")
    return replace(profile, entries=merge_entries(profile.entries, merged),
                   call_overhead_ms=overhead if foreign else profile.call_overhead_ms)


def _fp32_families(profile: HardwareProfile, space: SearchSpace) -> set:
    """The fp32 layer families ``space``'s model is priced from on ``profile``'s grid."""
    from autoprune.hardware.profiling import signature_grid

    return {s.family for s in signature_grid(space, profile.alignment, "fp32", 2)}


def _without_families(profile: HardwareProfile, space: SearchSpace) -> HardwareProfile:
    """``profile`` less its fp32 entries of the layer families ``space`` uses."""
    used = _fp32_families(profile, space)
    return replace(profile, entries=tuple(e for e in profile.entries if e.signature.family not in used))


def _read_cache(path: Path) -> tuple[tuple[LatencyEntry, ...], float | None]:
    """The lazily measured entries cached at ``path`` and the call overhead measured with them (None: none)."""
    data = _read_json(path)
    if not data or data.get("overhead") != OVERHEAD_METHOD:  # entries net of a once-timed overhead: measure again
        return (), None
    fields = ("op", "cin", "cout", "kernel", "stride", "padding", "groups", "in_h", "in_w", "dtype")
    entries = tuple(LatencyEntry(LayerSignature(*(e[f] for f in fields)), float(e["mean_ms"]), float(e["std_ms"]),
                                 int(e["n"])) for e in data["entries"])
    overhead = data.get("call_overhead_ms")
    return entries, None if overhead is None else float(overhead)


# --- self-calibration --------------------------------------------------------------------------------------------
def self_calibrate(profile: HardwareProfile, space: SearchSpace, on_progress: Progress | None = None,
                   on_note: Note | None = None, force: bool = False, plans: int = CALIBRATION_PLANS,
                   budget_s: float = CALIBRATION_BUDGET_S, folder: Path | None = None) -> HardwareProfile:
    """``profile`` with the per-model calibration of ``space``'s model re-fitted on this machine (cached).

    The dense model and ``plans - 1`` random plans (seed 0) are timed, each plan right after the dense model;
    a plan's point is its ratio to the dense runs beside it times the dense model's overall median, so a machine
    that slowed down halfway does not bend the fit. With ``force`` the cache is ignored and rewritten. The cache
    file lives in ``folder`` (default: :func:`cache_dir` of ``profile``) and is named after the model and the
    part of the table it is priced from (:func:`model_table_hash`; lazily measured entries included).
    """
    key = precision_key(model_key(space.model, space.input_shape), "fp32")
    path = (folder or cache_dir(profile)) / (f"calibration-{_safe(key)}-{model_table_hash(profile, space)}"
                                             f"-d{CALIBRATION_DESIGN}.json")
    cached = None if force else _read_json(path)
    if cached:
        calibration = Calibration(**cached["calibration"])
        _say_once(on_note, path, f"latency calibration of {key} on {profile.name!r} fitted on this machine at "
                                 f"{calibration.date} (cached in {path.parent})")
        return replace(profile, calibration={**profile.calibration, key: calibration})
    start = time.perf_counter()
    calibration, dense_ms = fit_here(profile, space, plans, budget_s, on_progress)
    from autoprune.paths import atomic_write_json

    atomic_write_json(path, {"calibration": {k: v for k, v in vars(calibration).items() if v is not None}})
    before = CostModel(profile).predict(space, PruningPlan(alignment=space.alignment)).latency_ms
    differs = machine_differences(profile)
    if not table_carries_over(profile):
        how = "this machine differs: " + "; ".join(differs) + " (the model's layers were measured here)"
    elif differs:
        how = ("this machine differs: " + "; ".join(differs) + " (the table's shape may not carry over: measure one "
               f"here with `autoprune profile measure --model {space.model} --out PROFILE.yaml` for the best "
               "accuracy)")
    else:
        how = "same CPU, cache and onnxruntime as the profile's machine"
    _say_once(on_note, path, f"calibrated {profile.name!r} for {key} on this machine in "
                             f"{time.perf_counter() - start:.0f} s ({how}): dense {dense_ms:.4g} ms measured here, "
                             f"{before:.4g} ms by the profile as shipped; cached in {path.parent}")
    return replace(profile, calibration={**profile.calibration, key: calibration})


def calibration_plans(space: SearchSpace, plans: int, alignment: int) -> list[PruningPlan]:
    """The ``plans - 1`` pruned plans a self-calibration times beside the dense model.

    Random plans cluster at mid sizes (independent per-group ratios average out); a few uniform ones span the
    weight sizes, so the memory term's cache size is pinned down where models start to spill, and the smallest
    is the most pruned plan the space allows, so the fit sees the fast end a search explores (from keep 0.4 up
    only, the fit's intercept is extrapolated there; bench/results/calibration_fast_end.md).
    """
    from autoprune.hardware.profiling import random_plans

    floor = max((g.min_keep for g in space.groups), default=0.4)  # the smallest ratio every group allows
    levels = ((floor,) if floor < 0.4 else ()) + (0.4, 0.55, 0.7, 0.85)
    levels = levels[: max(0, plans - 5)]
    chosen = random_plans(space, plans - 1 - len(levels), 0, alignment)
    return chosen + [PruningPlan.uniform(space.group_names, k, alignment=alignment) for k in levels]


def fit_here(profile: HardwareProfile, space: SearchSpace, plans: int = CALIBRATION_PLANS,
             budget_s: float = CALIBRATION_BUDGET_S, on_progress: Progress | None = None) -> tuple[Calibration, float]:
    """Fit the calibration of ``space``'s model on this machine; return it and the dense model's median (ms)."""
    from autoprune.hardware.profiling import fit_calibration, plan_items, plan_point

    dense = PruningPlan(alignment=profile.alignment)
    chosen = calibration_plans(space, plans, profile.alignment)
    levels = [p for p in chosen if len(set(p.keep_ratios.values())) == 1 and len(p.keep_ratios) > 1]
    items = plan_items(space, [dense, *chosen])
    threads = max(profile.threads, 1)
    probe = runner.time_ort(items[0][0], items[0][1], threads, warmup=2, repeats=5)["median_ms"]
    # Plans are ~half the dense model's cost on average; each is timed next to as many dense runs.
    repeats = int(min(300, max(10, budget_s * 1e3 / (1.5 * probe * len(chosen)))))
    rounds = min(5, max(2, repeats // 4))
    stats, reference = runner.time_ort_paired(items[1:], items[0], threads, warmup=3, repeats=repeats, rounds=rounds,
                                              progress=on_progress)
    dense_ms = reference["median_ms"]
    table = CostModel(replace(profile, calibration={}))
    points = [plan_point(table, space, dense, dense_ms)]
    points += [plan_point(table, space, plan, st["ratio"] * dense_ms) for plan, st in zip(chosen, stats)]
    source = (f"self-calibrated on this machine ({this_machine().describe()}): dense + {len(chosen) - len(levels)} "
              f"random plans (seed 0) + {len(levels)} uniform ones, each timed right after the dense model, {repeats} "
              f"runs each; points = ratio to the dense runs beside it x the dense median {dense_ms:.4g} ms")
    # The table was measured on another machine (or this one at another time): the identity, which a noisy fit
    # may prefer on leave-one-out, would ignore exactly the speed difference this calibration is for.
    calibration = fit_calibration(points, source, runner.last_level_cache_mb(), scaled=True)
    return replace(calibration, machine=this_machine().fingerprint), dense_ms


def _safe(key: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "@-_." else "_" for ch in key)


_SAID: set[str] = set()


def _say_once(on_note: Note | None, path: Path, text: str) -> None:
    """Tell ``on_note`` about the calibration at ``path`` once per process (a search prepares it once per run)."""
    if on_note is not None and str(path) not in _SAID:
        _SAID.add(str(path))
        on_note(text)


# --- the one entry point -----------------------------------------------------------------------------------------
def prepare_cost_model(profile: HardwareProfile, space: SearchSpace, on_progress: Progress | None = None,
                       on_note: Note | None = None, precisions: Sequence[str] = ("fp32",),
                       calibrate: bool = True) -> CostModel:
    """The cost model a search over ``space`` on ``profile``'s target uses, ready before any training.

    When the target is this machine (:func:`runs_here`), the layer families the table lacks are measured here and
    the per-model calibration is re-fitted here (both cached under ``$AUTOPRUNE_HOME/latency``; ``on_progress``
    gets ``(done, total)``, ``on_note`` one line per thing done). For any other target nothing is measured, and
    a :class:`UserError` lists every layer family that cannot be priced, with the commands that measure them on
    the device. Every precision in ``precisions`` is checked to be priceable.
    """
    if runs_here(profile):
        folder = cache_dir(profile)
        profile = measure_missing(profile, space, on_progress, on_note, folder=folder)
        if calibrate:
            profile = self_calibrate(profile, space, on_progress, on_note, folder=folder)
    else:
        _refuse_unpriced(profile, space)
    model = CostModel(profile)
    for precision in precisions:
        if precision == "int8" and not model.has_int8:
            raise model.no_int8_error(space.model, space.input_shape)
        model.predict(space, PruningPlan(alignment=space.alignment, precision=precision))
    return model


def _refuse_unpriced(profile: HardwareProfile, space: SearchSpace) -> None:
    from autoprune.hardware.profiling import signature_grid

    grid = signature_grid(space, profile.alignment, profile.precision, 2)
    missing = _latency(profile).missing_families(grid)
    if not missing:
        return
    shape = "x".join(map(str, space.input_shape))
    listed = "; ".join(f.describe() for f in missing[:6]) + (f"; and {len(missing) - 6} more" if len(missing) > 6
                                                             else "")
    raise UserError(
        f"target {profile.name!r} cannot price {len(missing)} layer families of {space.model} at {shape}: {listed}. "
        f"It is not this machine, so they cannot be measured here: on a host with torch run `autoprune profile "
        f"export --model {space.model} --input-shape {shape} --out DIR`, on the device `autoprune profile run DIR`, "
        f"then `autoprune profile import DIR --out {profile.file or 'hardware_profiles/NAME.yaml'}`"
    )
