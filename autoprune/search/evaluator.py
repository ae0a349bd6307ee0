"""The evaluator: plan → pruned model → brief fine-tune → accuracy, size and predicted latency."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from autoprune.data import DataBundle
from autoprune.plan import PruningPlan
from autoprune.pruning import SearchSpace, apply_plan, model_stats
from autoprune.pruning.metrics import ModelStats
from autoprune.training import EvalResult, evaluate, finetune_steps, recalibrate_bn


@dataclass(frozen=True)
class EvaluatorSettings:
    """How much work one candidate gets. ``finetune_steps`` SGD steps at ``finetune_lr``, batches of ``batch_size``."""

    finetune_steps: int = 30
    finetune_lr: float = 0.01
    batch_size: int = 64
    bn_recalibration_batches: int = 8
    calibration_batches: int = 2  # for gradient-based importance criteria
    seed: int = 0


@dataclass(frozen=True)
class CandidateResult:
    """Everything measured about one pruned candidate. Accuracies in [0, 1]; latency in ms."""

    plan: PruningPlan
    accuracy: float
    proxy_accuracy: float  # after BN recalibration, before fine-tuning
    eval: EvalResult
    latency_ms: float
    latency_provenance: str
    latency_source: str
    stats: ModelStats
    seconds: float
    model: nn.Module = field(repr=False, compare=False)

    def attrs(self) -> dict[str, Any]:
        """JSON-ready figures stored on the Optuna trial."""
        return {
            "plan": self.plan.to_dict(),
            "accuracy": self.accuracy,
            "proxy_accuracy": self.proxy_accuracy,
            "per_class_accuracy": list(self.eval.per_class_accuracy),
            "latency_ms": self.latency_ms,
            "latency_provenance": self.latency_provenance,
            "latency_source": self.latency_source,
            **self.stats.to_dict(),
            "eval_seconds": round(self.seconds, 3),
        }


class Evaluator:
    """Scores plans against one dense baseline. Holds no mutable state between candidates."""

    def __init__(
        self,
        baseline: nn.Module,
        data: DataBundle,
        space: SearchSpace,
        cost_model,
        settings: EvaluatorSettings,
    ) -> None:
        self.baseline = baseline.eval()
        self.data = data
        self.space = space
        self.cost_model = cost_model
        self.settings = settings
        self._example = torch.zeros(space.input_shape)

    def prune(self, plan: PruningPlan) -> nn.Module:
        """A pruned copy of the baseline (the baseline itself is never modified)."""
        model = copy.deepcopy(self.baseline)
        calibration = None
        if plan.importance in ("taylor",):
            loader = self.data.loader("train", self.settings.batch_size, self.settings.seed)
            calibration = [batch for _, batch in zip(range(self.settings.calibration_batches), loader)]
        return apply_plan(model, plan, self._example, calibration=calibration, seed=self.settings.seed)

    def evaluate(self, plan: PruningPlan) -> CandidateResult:
        started = time.perf_counter()
        self.space.validate_plan(plan)
        estimate = self.cost_model.predict(self.space, plan)
        model = self.prune(plan)
        s = self.settings
        train = self.data.loader("train", s.batch_size, s.seed)
        val = self.data.loader("val", 256, s.seed, shuffle=False)
        recalibrate_bn(model, train, s.bn_recalibration_batches)
        proxy = evaluate(model, val, self.data.num_classes).accuracy
        finetune_steps(model, train, s.finetune_steps, s.finetune_lr, s.seed)
        result = evaluate(model, val, self.data.num_classes)
        return CandidateResult(
            plan=plan,
            accuracy=result.accuracy,
            proxy_accuracy=proxy,
            eval=result,
            latency_ms=estimate.latency_ms,
            latency_provenance=estimate.provenance,
            latency_source=estimate.source,
            stats=model_stats(model, self.space.input_shape),
            seconds=time.perf_counter() - started,
            model=model,
        )
