"""Plain records of a study's trials, read back from Optuna storage (for tables, reports and JSON)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from autoprune.search.pareto import pareto_front

STUDY_ATTR = "autoprune"


@dataclass(frozen=True)
class TrialRecord:
    """One evaluated candidate. Accuracy in [0, 1], latency in ms (predicted by the target's cost model)."""

    number: int
    strategy: str
    accuracy: float
    latency_ms: float
    latency_provenance: str
    params: int
    macs: int
    mflops: float
    size_mb: float
    speedup: float  # dense latency / this latency
    plan: dict
    feasible: bool = True  # met --max-latency-ms / --min-accuracy / --max-params when it was evaluated
    proxy_accuracy: float = float("nan")  # after BN recalibration only
    fidelity: str = "finetuned"  # "proxy" | "cut_short" | "finetuned"
    finetune_steps: int = -1  # fine-tuning steps actually spent (-1: not recorded)
    precision: str = "fp32"  # fp32 | int8 (accuracy then measured on the quantized model in onnxruntime)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def study_info(study: optuna.Study) -> dict[str, Any]:
    """What autoprune recorded on the study when it created it (model, target, data, baseline, ...)."""
    return dict(study.user_attrs.get(STUDY_ATTR, {}))


def completed_records(study: optuna.Study) -> list[TrialRecord]:
    dense_ms = float(study_info(study).get("baseline", {}).get("latency_ms", float("nan")))
    records = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        a = trial.user_attrs
        if "latency_ms" not in a:
            continue
        records.append(
            TrialRecord(
                number=trial.number,
                strategy=str(a.get("strategy", "")),
                accuracy=float(a["accuracy"]),
                latency_ms=float(a["latency_ms"]),
                latency_provenance=str(a.get("latency_provenance", "")),
                params=int(a["params"]),
                macs=int(a["macs"]),
                mflops=float(a["mflops"]),
                size_mb=float(a["size_mb"]),
                speedup=dense_ms / float(a["latency_ms"]) if a["latency_ms"] else float("nan"),
                plan=dict(a.get("plan", {})),
                feasible=bool(a.get("feasible", True)),
                proxy_accuracy=float(a.get("proxy_accuracy", float("nan"))),
                fidelity=str(a.get("fidelity", "finetuned")),
                finetune_steps=int(a.get("finetune_steps", -1)),
                precision=str(a.get("precision", dict(a.get("plan", {})).get("precision", "fp32"))),
            )
        )
    return records


def pareto_records(records: list[TrialRecord]) -> list[TrialRecord]:
    """The non-dominated feasible records (accuracy ↑, latency ↓), fastest first; infeasible ones never count."""
    feasible = [r for r in records if r.feasible]
    front = pareto_front([(r.accuracy, r.latency_ms) for r in feasible])
    return [feasible[i] for i in front]
