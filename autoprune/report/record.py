"""The report of a study as a plain record: computed here, rendered by ``render_html`` / ``render_md``.

Everything a report shows is in :class:`ReportRecord`; renderers do no arithmetic beyond formatting.
Accuracies are fractions in [0, 1]; "points" are percentage points (0.05 = 5 points).
"""

from __future__ import annotations

import datetime as _dt
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from autoprune.errors import UserError
from autoprune.plan import inside, kept_channels
from autoprune.report.host import HostLatency, read_host_latencies
from autoprune.search.pareto import hypervolume
from autoprune.search.records import completed_records, pareto_records
from autoprune.search.store import completed_outcomes, read_study_config, read_study_record

REPORT_SCHEMA = 1
DEFAULT_CLASS_DROP_THRESHOLD = 0.05
ALL_STRATEGIES = "all strategies"


def plain(value: Any) -> Any:
    """JSON-ready copy of a record: dataclasses to dicts, tuples to lists, NaN/inf to None."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True)
class DenseRecord:
    """The unpruned model: the reference every candidate is compared with."""

    accuracy: float
    per_class_accuracy: tuple[float, ...]
    latency_ms: float  # predicted on the target by the cost model
    latency_provenance: str
    latency_source: str
    params: int
    nonzero_params: int
    mflops: float
    size_mb: float
    source: str
    host_latency: HostLatency | None
    val_size: int | None = None  # validation images the accuracies are measured on (None: not recorded)
    accuracy_noise_points: float | None = None  # 95 % binomial half-width of such an accuracy, in points


@dataclass(frozen=True)
class TrialPoint:
    """One completed trial, as plotted (hover text comes from these fields)."""

    trial: int
    strategy: str
    accuracy: float
    proxy_accuracy: float
    latency_ms: float
    latency_provenance: str
    speedup: float
    params: int
    mflops: float
    size_mb: float
    pareto_optimal: bool
    feasible: bool = True  # met the search's latency/accuracy/params limits (infeasible trials never join the front)
    fidelity: str = "finetuned"  # "finetuned" | "cut_short" | "proxy" (accuracy before any fine-tuning)
    precision: str = "fp32"  # "fp32" | "int8" (accuracy of the quantized model, measured in onnxruntime)


@dataclass(frozen=True)
class CurvePoint:
    """A point of the uniform-ratio baseline curve; ``trial`` is None for the dense model (keep ratio 1)."""

    trial: int | None
    keep_ratio: float | None  # the common keep ratio, None when the plan's ratios differ
    accuracy: float
    latency_ms: float


@dataclass(frozen=True)
class HypervolumeCurve:
    """Hypervolume of the front found by ``strategy`` after each of its trials (x: the study's trial numbers)."""

    strategy: str
    trials: tuple[int, ...]
    values: tuple[float, ...]

    @property
    def final(self) -> float:
        return self.values[-1] if self.values else 0.0


@dataclass(frozen=True)
class ClassAccuracy:
    """One class of one candidate: accuracy vs the dense model; ``excess_drop`` = drop minus the average drop."""

    name: str
    dense: float
    candidate: float
    drop: float
    excess_drop: float
    flagged: bool


@dataclass(frozen=True)
class Candidate:
    """A Pareto-optimal trial, with everything the candidate table, heatmap and per-class view show."""

    trial: int
    strategy: str
    accuracy: float
    delta_accuracy: float  # accuracy - dense accuracy
    latency_ms: float  # predicted on the target
    latency_provenance: str
    speedup: float  # predicted dense latency / predicted latency
    host_latency: HostLatency | None
    host_speedup: float | None  # measured dense / measured candidate on the host, when both were measured
    params: int
    nonzero_params: int
    mflops: float
    size_mb: float
    sparsity: float  # 1 - nonzero params / dense params: the fraction of the dense weights removed or zeroed
    keep_ratios: tuple[float, ...]  # per group, in ReportRecord.group_names order (1.0: untouched, 0.0: dropped)
    kept_channels: tuple[int, ...]
    plan: Mapping[str, Any]
    average_drop: float  # dense accuracy - candidate accuracy
    per_class: tuple[ClassAccuracy, ...]
    precision: str = "fp32"  # "fp32" | "int8"
    float_accuracy: float | None = None  # INT8: the FP32 accuracy before quantization
    dropped_blocks: tuple[str, ...] = ()  # residual blocks the plan removes (their groups show keep ratio 0)

    def group_dropped(self, group: str) -> bool:
        """Whether ``group`` went with a dropped block (it is named after a layer inside the block)."""
        return inside(group, self.dropped_blocks)

    @property
    def flagged_classes(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.per_class if c.flagged)


@dataclass(frozen=True)
class CostModelInfo:
    """The target profile behind the predicted latencies, and how well it was validated."""

    target: str
    device: str
    runtime: str
    precision: str
    provenance: str
    source: str
    validation_key: str
    validation: Mapping[str, Any] | None  # the profile's validation of this model at this input shape
    validation_summary: str
    other_validations: Mapping[str, str]  # other models' validation summaries in the same profile
    caveats: tuple[str, ...]
    note: str  # why figures are missing, when they are


@dataclass(frozen=True)
class ReportRecord:
    """Everything ``autoprune report`` shows for one study."""

    schema: int
    study: str
    storage: str
    generated_at: str
    model: str
    target: str
    data: str
    input_shape: tuple[int, ...]
    latency_provenance: str  # of the trials' predicted latencies ("calibrated", or "mixed: ...")
    latency_source: str
    latency_axis_title: str
    dense: DenseRecord
    group_names: tuple[str, ...]
    group_channels: tuple[int, ...]
    alignment: int
    class_names: tuple[str, ...]
    strategies: tuple[str, ...]
    trials: tuple[TrialPoint, ...]
    completed_trials: int
    failed_trials: int
    pareto: tuple[Candidate, ...]  # fastest first
    uniform_curve: tuple[CurvePoint, ...]  # uniform-strategy trials by latency, then the dense model
    hypervolume: tuple[HypervolumeCurve, ...]
    hypervolume_reference: tuple[float, float]  # (accuracy, latency_ms)
    hypervolume_note: str
    class_drop_threshold: float
    cost_model: CostModelInfo
    config: Mapping[str, Any]
    baseline_spec: Mapping[str, Any]
    host_measured_trials: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        data = plain(self)
        for row, candidate in zip(data["pareto"], self.pareto):
            row["flagged_classes"] = list(candidate.flagged_classes)
        return data


def _f(value: Any, default: float = math.nan) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _provenance_summary(values: Sequence[str]) -> str:
    counts = Counter(v or "unknown" for v in values)
    if len(counts) <= 1:
        return next(iter(counts), "unknown")
    return "mixed: " + ", ".join(f"{k} ({n} trials)" for k, n in sorted(counts.items()))


def group_ratios(plan: Mapping[str, Any], groups: Sequence[str]) -> tuple[float, ...]:
    """Each group's keep ratio in a stored plan (a group the plan leaves out keeps every channel: 1.0)."""
    keep = plan["keep_ratios"]
    return tuple(float(keep[g]) if g in keep else 1.0 for g in groups)


def _common_ratio(plan: Mapping[str, Any], groups: Sequence[str]) -> float | None:
    ratios = {round(r, 6) for r in group_ratios(plan, groups)}
    return ratios.pop() if len(ratios) == 1 else None


def per_class_drops(
    dense: Sequence[float], candidate: Sequence[float], names: Sequence[str], average_drop: float, threshold: float
) -> tuple[ClassAccuracy, ...]:
    """Each class's drop vs dense; flagged when the class lost accuracy and its drop exceeds the average drop
    (``dense accuracy - candidate accuracy``) by more than ``threshold``."""
    rows = []
    for i, (d, c) in enumerate(zip(dense, candidate)):
        d, c = _f(d), _f(c)
        drop = d - c
        excess = drop - average_drop
        flagged = math.isfinite(excess) and drop > 0 and excess > threshold + 1e-12
        rows.append(ClassAccuracy(str(names[i]) if i < len(names) else str(i), d, c, drop, excess, flagged))
    return tuple(rows)


def hypervolume_curves(points: Sequence[TrialPoint], reference: tuple[float, float]) -> tuple[HypervolumeCurve, ...]:
    """Per strategy (and over all trials when several strategies ran), normalised hypervolume after each trial.

    Infeasible trials (outside the search's limits) add nothing, as they never join the front."""
    ref_acc, ref_lat = reference
    scale = (1.0 - ref_acc) * ref_lat if ref_lat > 0 else 1.0
    ordered = sorted(points, key=lambda p: p.trial)
    strategies = sorted({p.strategy for p in ordered})
    groups = [(s, [p for p in ordered if p.strategy == s]) for s in strategies]
    if len(strategies) > 1:
        groups.append((ALL_STRATEGIES, ordered))
    curves = []
    for name, members in groups:
        values, seen = [], []
        for p in members:
            if p.feasible:
                seen.append((p.accuracy, p.latency_ms))
            values.append(hypervolume(seen, reference) / scale)
        curves.append(HypervolumeCurve(name, tuple(p.trial for p in members), tuple(values)))
    return tuple(curves)


def cost_model_info(target: str, model: str, input_shape: Sequence[int], provenance: str = "",
                    source: str = "") -> CostModelInfo:
    """What the study's target profile says about itself; a missing profile leaves a note (with the
    ``provenance`` and ``source`` the study recorded), not an error."""
    from autoprune.hardware import load_profile, model_key

    key = model_key(model, tuple(input_shape))
    try:
        profile = load_profile(target)
    except Exception as err:  # noqa: BLE001 - the report still renders without the profile
        return CostModelInfo(target, "", "", "", provenance, source, key, None, "", {}, (),
                             f"profile {target!r} could not be loaded here: {str(err).splitlines()[0]}")
    validation = profile.validation.get(key)
    others = {k: v.summary() for k, v in profile.validation.items() if k != key}
    note = "" if validation else (
        f"the profile holds no validation for {key}: its predictions were not compared with measurements "
        "(`autoprune profile validate` fills it in)"
    )
    return CostModelInfo(
        target=profile.name, device=profile.device, runtime=profile.runtime, precision=profile.precision,
        provenance=profile.provenance, source=profile.provenance_source, validation_key=key,
        validation=plain(vars(validation)) if validation else None,
        validation_summary=validation.summary() if validation else "", other_validations=others,
        caveats=tuple(profile.caveats), note=note,
    )


def build_report(
    study: optuna.Study,
    storage: str = "",
    class_drop_threshold: float = DEFAULT_CLASS_DROP_THRESHOLD,
    now: _dt.datetime | None = None,
) -> ReportRecord:
    """Compute the report record of an autoprune study (see the module docstring)."""
    info = read_study_record(study)
    if info is None:
        raise UserError(f"study {study.study_name!r} was not created by `autoprune search`")
    base, identity = info.dense, info.identity
    host = read_host_latencies(study)
    groups = info.groups
    group_names = tuple(n for n, _ in groups)
    alignment = info.alignment
    class_names = base.class_names
    dense_acc, dense_lat, dense_params = base.accuracy, base.latency_ms, base.stats.params
    dense_per_class = base.per_class_accuracy
    dense = DenseRecord(
        accuracy=dense_acc, per_class_accuracy=dense_per_class, latency_ms=dense_lat,
        latency_provenance=base.latency_provenance, latency_source=base.latency_source,
        params=dense_params, nonzero_params=base.stats.nonzero_params, mflops=base.stats.mflops,
        size_mb=base.stats.size_mb, source=base.source, host_latency=host.get(None),
        val_size=base.val_size, accuracy_noise_points=base.accuracy_noise_points(),
    )

    records = completed_records(study)
    measured = {o.number: o.measurement for o in completed_outcomes(study)}
    failed = sum(t.state == TrialState.FAIL for t in study.get_trials(deepcopy=False))
    front_numbers = [r.number for r in pareto_records(records)]  # the search's own front: feasible, fastest first
    on_front = set(front_numbers)

    points = [
        TrialPoint(
            trial=r.number, strategy=r.strategy, accuracy=r.accuracy, proxy_accuracy=r.proxy_accuracy,
            latency_ms=r.latency_ms, latency_provenance=r.latency_provenance,
            speedup=dense_lat / r.latency_ms if r.latency_ms > 0 else math.nan, params=r.params, mflops=r.mflops,
            size_mb=r.size_mb, pareto_optimal=r.number in on_front, feasible=r.feasible, fidelity=r.fidelity,
            precision=r.precision,
        )
        for r in records
    ]
    by_trial = {p.trial: p for p in points}
    candidates = []
    for number in front_numbers:
        m, p = measured[number], by_trial[number]
        plan = dict(m.plan)
        drops = tuple(plan.get("drop_blocks", ()))
        ratios = tuple(0.0 if inside(g, drops) else r for g, r in zip(group_names, group_ratios(plan, group_names)))
        kept = tuple(0 if r == 0.0 else kept_channels(c, r, int(plan["alignment"])) for (_, c), r in zip(groups, ratios))
        average_drop = dense_acc - p.accuracy
        host_ms = host.get(p.trial)
        nonzero = m.stats.nonzero_params
        candidates.append(Candidate(
            trial=p.trial, strategy=p.strategy, accuracy=p.accuracy, delta_accuracy=p.accuracy - dense_acc,
            latency_ms=p.latency_ms, latency_provenance=p.latency_provenance, speedup=p.speedup,
            host_latency=host_ms,
            host_speedup=(dense.host_latency.mean_ms / host_ms.mean_ms) if host_ms and dense.host_latency else None,
            params=p.params, nonzero_params=nonzero, mflops=p.mflops, size_mb=p.size_mb,
            sparsity=1.0 - nonzero / dense_params if dense_params else math.nan,
            keep_ratios=ratios, kept_channels=kept, plan=plan, average_drop=average_drop,
            per_class=per_class_drops(dense_per_class, m.per_class_accuracy, class_names, average_drop,
                                      class_drop_threshold),
            precision=p.precision, float_accuracy=m.float_accuracy, dropped_blocks=drops,
        ))

    # The uniform-ratio curve is the pruning-only reference: FP32 trials only, as the dense point it ends at.
    uniform = sorted((p for p in points if p.strategy == "uniform" and p.precision == "fp32"), key=lambda p: p.latency_ms)
    curve: list[CurvePoint] = [
        CurvePoint(p.trial, _common_ratio(measured[p.trial].plan, group_names), p.accuracy, p.latency_ms)
        for p in uniform
    ]
    if curve:
        curve.append(CurvePoint(None, 1.0, dense_acc, dense_lat))

    reference = (0.0, dense_lat)
    provenance = _provenance_summary([p.latency_provenance for p in points] or [dense.latency_provenance])
    target = identity.target
    cost = cost_model_info(target, identity.model, identity.input_shape, info.profile_provenance, info.profile_source)
    return ReportRecord(
        schema=REPORT_SCHEMA, study=study.study_name, storage=storage,
        generated_at=(now or _dt.datetime.now(_dt.timezone.utc)).strftime("%Y-%m-%d %H:%M UTC"),
        model=identity.model, target=target, data=identity.data, input_shape=tuple(identity.input_shape),
        latency_provenance=provenance, latency_source=dense.latency_source,
        latency_axis_title=f"latency on {target} (ms, {provenance}: predicted by the cost model)",
        dense=dense, group_names=group_names, group_channels=tuple(c for _, c in groups), alignment=alignment,
        class_names=class_names, strategies=tuple(sorted({p.strategy for p in points})), trials=tuple(points),
        completed_trials=len(points), failed_trials=failed, pareto=tuple(candidates), uniform_curve=tuple(curve),
        hypervolume=hypervolume_curves(points, reference), hypervolume_reference=reference,
        hypervolume_note=(
            "area dominated by the front within accuracy in [0, 1] x latency in [0, dense latency], as a fraction "
            "of that box (1 = a perfect model at zero latency)"
        ),
        class_drop_threshold=class_drop_threshold, cost_model=cost, config=read_study_config(study),
        baseline_spec=dict(info.baseline_spec),
        host_measured_trials=tuple(sorted(n for n in host if n is not None)),
    )
