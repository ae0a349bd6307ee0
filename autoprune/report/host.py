"""Latency re-measured on this host, kept on the study so reports show it next to the target prediction.

Each measurement is its own study user attribute (``autoprune.host_latency.<trial>`` or ``...dense``), so a
report and an export writing at the same time never overwrite each other's figures. A structured plan's
latency depends on the tensor shapes only, so :func:`measure_trials` rebuilds each candidate's architecture from
the plan on a freshly initialised model (no data, no training) and times it with onnxruntime.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import optuna
import torch

from autoprune.plan import PruningPlan
from autoprune.search.store import StudyRecord

HOST_ATTR_PREFIX = "autoprune.host_latency."
DENSE_KEY = "dense"


@dataclass(frozen=True)
class HostLatency:
    """A latency measured on a host: mean and std (ms) over ``n`` runs, and where/when/how (``provenance``)."""

    mean_ms: float
    std_ms: float
    n: int
    provenance: str
    how: str = ""  # what was timed: "pruned architecture rebuilt from the plan" or "exported model"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "HostLatency | None":
        try:
            mean = float(data["mean_ms"])
            value = cls(mean, float(data["std_ms"]), int(data["n"]), str(data["provenance"]), str(data["how"]))
        except (KeyError, TypeError, ValueError):  # not written by record_host_latency: ignored
            return None
        return value if math.isfinite(mean) and mean > 0 else None

    @classmethod
    def from_measurement(cls, measurement, how: str) -> "HostLatency":
        """From :class:`autoprune.hardware.LatencyMeasurement`."""
        return cls(float(measurement.mean_ms), float(measurement.std_ms), int(measurement.n),
                   measurement.provenance, how)


def host_key(trial: int | None) -> str:
    return HOST_ATTR_PREFIX + (DENSE_KEY if trial is None else str(int(trial)))


def read_host_latencies(study: optuna.Study) -> dict[int | None, HostLatency]:
    """Host measurements recorded on ``study``: trial number (None for the dense model) -> latency."""
    found: dict[int | None, HostLatency] = {}
    for key, value in study.user_attrs.items():
        if not key.startswith(HOST_ATTR_PREFIX) or not isinstance(value, Mapping):
            continue
        suffix = key[len(HOST_ATTR_PREFIX):]
        if suffix != DENSE_KEY and not suffix.isdigit():
            continue
        latency = HostLatency.from_dict(value)
        if latency is not None:
            found[None if suffix == DENSE_KEY else int(suffix)] = latency
    return found


def record_host_latency(study: optuna.Study, trial: int | None, latency: HostLatency) -> None:
    study.set_user_attr(host_key(trial), latency.to_dict())


def _architecture(info: StudyRecord, plan: PruningPlan | None) -> torch.nn.Module:
    """The dense model (``plan`` None) or the plan's pruned architecture, with fresh weights."""
    from autoprune.models import create_model
    from autoprune.pruning import apply_plan

    torch.manual_seed(0)
    model = create_model(info.identity.model, int(info.baseline_spec["num_classes"])).eval()
    if plan is None:
        return model
    # Channel counts depend on the ratios and the alignment only; magnitude ranking needs no data.
    shape_only = PruningPlan.from_dict({**plan.to_dict(), "importance": "l1"})
    return apply_plan(model, shape_only, torch.zeros(tuple(info.identity.input_shape))).eval()


def measure_trials(
    study: optuna.Study,
    trials: Iterable[int],
    threads: int = 1,
    warmup: int = 10,
    repeats: int = 100,
    include_dense: bool = True,
) -> dict[int | None, HostLatency]:
    """Time the dense model and each trial's pruned architecture on this host; record and return them."""
    from autoprune.hardware import measure_model_latency
    from autoprune.search.store import completed_outcomes, read_study_record

    info = read_study_record(study)
    plans = {o.number: o.measurement.plan for o in completed_outcomes(study)}
    how = "pruned architecture rebuilt from the plan (fresh weights), onnxruntime"
    targets: list[int | None] = ([None] if include_dense else []) + [int(n) for n in trials]
    measured: dict[int | None, HostLatency] = {}
    for number in targets:
        plan = None if number is None else PruningPlan.from_dict(plans[number])
        model = _architecture(info, plan)
        result = measure_model_latency(model, tuple(info.identity.input_shape), threads=threads, warmup=warmup,
                                       repeats=repeats)
        latency = HostLatency.from_measurement(result, "dense model" if number is None else how)
        record_host_latency(study, number, latency)
        measured[number] = latency
    return measured
