"""Plain records of a study's trials, read back from Optuna storage (for tables, reports and JSON)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import optuna

from autoprune.search.pareto import pareto_front
from autoprune.search.store import TrialOutcome, completed_outcomes, read_study_record


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
    finetune_steps: int = -1  # fine-tuning steps actually spent (-1: unknown, in records built by hand)
    precision: str = "fp32"  # fp32 | int8 (accuracy then measured on the quantized model in onnxruntime)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, outcome: TrialOutcome, dense_ms: float) -> "TrialRecord":
        m = outcome.measurement
        return cls(
            number=outcome.number, strategy=str(outcome.strategy), accuracy=m.accuracy, latency_ms=m.latency_ms,
            latency_provenance=m.latency_provenance, params=m.stats.params, macs=m.stats.macs,
            mflops=m.stats.mflops, size_mb=m.stats.size_mb,
            speedup=dense_ms / m.latency_ms if m.latency_ms else float("nan"), plan=dict(m.plan),
            feasible=bool(outcome.feasible), proxy_accuracy=m.proxy_accuracy, fidelity=m.fidelity,
            finetune_steps=m.finetune_steps, precision=m.precision,
        )


def completed_records(study: optuna.Study) -> list[TrialRecord]:
    """The study's completed trials, in trial order (empty for a study not yet claimed by a search)."""
    record = read_study_record(study)
    dense_ms = record.dense.latency_ms if record is not None else float("nan")
    return [TrialRecord.of(o, dense_ms) for o in completed_outcomes(study)]


def pareto_records(records: list[TrialRecord]) -> list[TrialRecord]:
    """The non-dominated feasible records (accuracy ↑, latency ↓), fastest first; infeasible ones never count."""
    feasible = [r for r in records if r.feasible]
    front = pareto_front([(r.accuracy, r.latency_ms) for r in feasible])
    return [feasible[i] for i in front]
