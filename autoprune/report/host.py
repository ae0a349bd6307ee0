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
            value = cls(mean, float(data.get("std_ms", math.nan)), int(data.get("n", 0)),
                        str(data.get("provenance", "")), str(data.get("how", "")))
        except (KeyError, TypeError, ValueError):
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


def _architecture(info: Mapping[str, Any], plan: PruningPlan | None) -> torch.nn.Module:
    """The dense model (``plan`` None) or the plan's pruned architecture, with fresh weights."""
    from autoprune.models import create_model
    from autoprune.pruning import apply_plan

    spec = info.get("baseline_spec") or {}
    num_classes = int(spec.get("num_classes") or len(info.get("baseline", {}).get("class_names", [])) or 10)
    torch.manual_seed(0)
    model = create_model(str(info["model"]), num_classes).eval()
    if plan is None:
        return model
    # Channel counts depend on the ratios and the alignment only; magnitude ranking needs no data.
    shape_only = PruningPlan.from_dict({**plan.to_dict(), "importance": "l1"})
    return apply_plan(model, shape_only, torch.zeros(tuple(info["input_shape"]))).eval()


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
    from autoprune.search.records import study_info

    info = study_info(study)
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    how = "pruned architecture rebuilt from the plan (fresh weights), onnxruntime"
    targets: list[int | None] = ([None] if include_dense else []) + [int(n) for n in trials]
    measured: dict[int | None, HostLatency] = {}
    for number in targets:
        plan = None if number is None else PruningPlan.from_dict(by_number[number].user_attrs["plan"])
        model = _architecture(info, plan)
        result = measure_model_latency(model, tuple(info["input_shape"]), threads=threads, warmup=warmup,
                                       repeats=repeats)
        latency = HostLatency.from_measurement(result, "dense model" if number is None else how)
        record_host_latency(study, number, latency)
        measured[number] = latency
    return measured
