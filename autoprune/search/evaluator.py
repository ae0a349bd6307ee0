"""The evaluator: plan → pruned model → cheap proxy → (maybe) brief fine-tune → accuracy, size, latency.

Multi-fidelity (Optuna's trial pruners do not handle multi-objective studies, so autoprune brings its own):

1. every candidate gets the cheap proxy: accuracy after re-estimating BatchNorm statistics on a few batches;
2. it is fine-tuned only if it could still reach the Pareto front: a candidate that misses the latency or
   parameter limit, or whose proxy accuracy plus the largest fine-tuning gain seen so far (with a margin) is
   still dominated by the current front, is recorded at proxy fidelity;
3. fine-tuning runs in chunks; after each chunk k the candidate is evaluated, and fine-tuning is cut short only
   when it cannot catch up: its accuracy plus the largest recovery from check k to the end that a finished
   curve showed (plus ``stop_margin``) stays below the final accuracy of a fully fine-tuned candidate at least
   as fast. The same optimism as step 2, at each check. Comparing the checks themselves (behind a faster
   candidate at its own check k: cut) assumed parallel curves; early in a brief fine-tune they cross, and that
   rule cut plans that would have ended on the front, whose partial accuracies the sampler was then told.

The trial records both accuracies, the fidelity reached and the fine-tuning steps actually spent.

With ``distill`` the brief fine-tune distils from the dense model (:mod:`autoprune.distill`). An INT8 plan is
fine-tuned in FP32 like any other, then exported to ONNX, statically quantized (calibrated on training images)
and its accuracy measured by running the quantized model in onnxruntime (:mod:`autoprune.quantize`); the FP32
accuracy before quantization is kept as ``float_accuracy``.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from autoprune.data import DataBundle
from autoprune.devices import resolve_device
from autoprune.plan import PruningPlan
from autoprune.pruning import SearchSpace, model_stats
from autoprune.pruning.engine import PruneResult, prune
from autoprune.pruning.importance import needs_calibration
from autoprune.pruning.metrics import ModelStats
from autoprune.search.pareto import dominates
from autoprune.search.strategies import Constraints
from autoprune.trainer import Trainer, mask_hook
from autoprune.training import EvalResult, cross_entropy_loss, cycle, evaluate, finetune_recipe, recalibrate_bn


@dataclass(frozen=True)
class EvaluatorSettings:
    """How much work one candidate gets. ``finetune_steps`` SGD steps at ``finetune_lr``, batches of ``batch_size``.

    ``device`` only moves the work: pruning and the latency figures (the cost model's, from the plan) do not
    depend on it; accuracies stay seeded but on CUDA are not bit-identical to the CPU's.
    """

    finetune_steps: int = 30
    finetune_lr: float = 0.01
    batch_size: int = 64
    bn_recalibration_batches: int = 8
    calibration_batches: int = 2  # for gradient-based importance criteria
    seed: int = 0
    finetune_checks: int = 4  # evaluations during fine-tuning, where it may be cut short
    stop_margin: float = 0.03  # slack beyond the largest recovery seen before a candidate is cut short
    gain_margin: float = 0.05  # slack on the largest fine-tuning gain seen, when deciding to skip
    min_history: int = 3  # fine-tuned candidates needed before any is skipped or cut short
    distill: bool = False  # fine-tune with knowledge distillation from the dense model
    distill_alpha: float = 0.9  # share of the distillation term in the loss
    distill_temperature: float = 4.0
    quantization_samples: int = 128  # training images the INT8 activation ranges are calibrated on
    device: str = "cpu"  # where candidates are recalibrated, fine-tuned and scored: auto|cpu|cuda|cuda:N


@dataclass(frozen=True)
class Guidance:
    """What the driver knows when it dispatches a candidate: the feasible front (accuracy, latency_ms) of the
    finished trials, the largest fine-tuning gain (accuracy - proxy) seen and on how many, and the limits.

    ``rungs[k]``: (accuracy at check ``k``, latency_ms) of the feasible fully fine-tuned candidates whose curves
    have ``len(rungs)`` checks, ``curves_seen`` of them."""

    front: tuple[tuple[float, float], ...] = ()
    max_gain: float = 0.0
    gains_seen: int = 0
    constraints: Constraints = field(default_factory=Constraints)
    rungs: tuple[tuple[tuple[float, float], ...], ...] = ()
    curves_seen: int = 0


def rungs_of(finished: list[tuple[tuple[tuple[int, float], ...], float]]
             ) -> tuple[tuple[tuple[tuple[float, float], ...], ...], int]:
    """Per check, the (accuracy at that check, latency_ms) of the ``finished`` (curve, latency_ms) pairs whose
    curves have the most common length, and how many pairs that is."""
    lengths = [len(c) for c, _ in finished if c]
    if not lengths:
        return (), 0
    n = max(set(lengths), key=lambda k: (lengths.count(k), k))
    same = [(c, ms) for c, ms in finished if len(c) == n]
    return tuple(tuple((c[k][1], ms) for c, ms in same) for k in range(n)), len(same)


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
    finetune_steps: int = 0  # steps actually spent
    finetune_budget: int = 0  # steps it would have had
    fidelity: str = "finetuned"  # "proxy" (not fine-tuned) | "cut_short" | "finetuned"
    fidelity_reason: str = ""
    curve: tuple[tuple[int, float], ...] = ()  # (steps so far, accuracy) at each check
    float_accuracy: float | None = None  # INT8 candidates: FP32 accuracy before quantization
    int8_onnx: bytes | None = field(default=None, repr=False, compare=False)  # the quantized model (INT8 only)
    size_mb_at_precision: float | None = None  # INT8: parameters at one byte each (MB)

    @property
    def precision(self) -> str:
        return self.plan.precision

    @property
    def params(self) -> int:
        return self.stats.params

    @property
    def size_mb(self) -> float:
        return self.stats.size_mb

    def attrs(self) -> "Measurement":  # noqa: F821 - imported below, kept local to this method
        """The figures the study store records on the trial (INT8: size at one byte per parameter)."""
        from dataclasses import replace

        from autoprune.search.store import Measurement, ModelFigures

        stats = ModelFigures.of(self.stats)
        if self.size_mb_at_precision is not None:
            stats = replace(stats, size_mb=round(self.size_mb_at_precision, 3))
        return Measurement(
            plan=self.plan.to_dict(), accuracy=self.accuracy, proxy_accuracy=self.proxy_accuracy,
            per_class_accuracy=tuple(self.eval.per_class_accuracy), latency_ms=self.latency_ms,
            latency_provenance=self.latency_provenance, latency_source=self.latency_source, stats=stats,
            eval_seconds=round(self.seconds, 3), finetune_steps=self.finetune_steps,
            finetune_budget=self.finetune_budget, fidelity=self.fidelity, fidelity_reason=self.fidelity_reason,
            curve=tuple(self.curve), precision=self.plan.precision, float_accuracy=self.float_accuracy,
        )


class Evaluator:
    """Scores plans against one dense baseline. Holds no mutable state between candidates.

    The baseline stays on the CPU, where candidates are pruned and traced; a candidate moves to
    ``settings.device`` for recalibration, fine-tuning and scoring, and comes back to the CPU in its result.
    """

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

    def with_device(self, device: str) -> "Evaluator":
        """This evaluator training on ``device`` (e.g. the GPU Ray gave a worker); the same baseline and data."""
        resolve_device(device)  # an unavailable device fails here, in one line
        return Evaluator(self.baseline, self.data, self.space, self.cost_model, replace(self.settings, device=device))

    def prune(self, plan: PruningPlan) -> PruneResult:
        """A copy of the baseline pruned by the whole plan (channels, then sparsity); the baseline is untouched."""
        model = copy.deepcopy(self.baseline)
        calibration = None
        if needs_calibration(plan.importance):
            loader = self.data.loader("train", self.settings.batch_size, self.settings.seed)
            calibration = [batch for _, batch in zip(range(self.settings.calibration_batches), loader)]
        return prune(model, plan, self._example, calibration=calibration, seed=self.settings.seed)

    def evaluate(self, plan: PruningPlan, guidance: Guidance | None = None) -> CandidateResult:
        """Score ``plan``. Without ``guidance`` every candidate gets the full fine-tuning budget."""
        started = time.perf_counter()
        self.space.validate_plan(plan)
        estimate = self.cost_model.predict(self.space, plan)
        pruned = self.prune(plan)
        model = pruned.model
        s = self.settings
        device = resolve_device(s.device)
        stats = model_stats(model, self.space.input_shape)  # on the CPU, before the model moves
        train = self.data.loader("train", s.batch_size, s.seed, device=device)
        val = self.data.loader("val", 256, s.seed, shuffle=False, device=device)
        recalibrate_bn(model, train, s.bn_recalibration_batches, device)
        proxy_eval = evaluate(model, val, self.data.num_classes, device)
        proxy = proxy_eval.accuracy
        skip = self._skip_reason(proxy, estimate.latency_ms, stats.params, guidance) if s.finetune_steps else "no fine-tuning asked"
        result, spent, curve, fidelity, reason = proxy_eval, 0, [(0, proxy)], "proxy", skip
        if not skip:
            result, spent, curve, cut = self._finetune(pruned, train, val, estimate.latency_ms, guidance, device)
            fidelity, reason = ("cut_short", cut) if cut else ("finetuned", "")
        model = model.to("cpu", memory_format=torch.contiguous_format).eval()
        float_accuracy = int8 = None
        if plan.precision == "int8":
            from autoprune.quantize import quantize_and_evaluate

            float_accuracy = result.accuracy
            quantized = quantize_and_evaluate(model, tuple(self.space.input_shape), train, val,
                                              self.data.num_classes, s.quantization_samples)
            result, int8 = quantized.eval, quantized.onnx
        return CandidateResult(
            plan=plan,
            accuracy=result.accuracy,
            proxy_accuracy=proxy,
            eval=result,
            latency_ms=estimate.latency_ms,
            latency_provenance=estimate.provenance,
            latency_source=estimate.source,
            stats=stats,
            seconds=time.perf_counter() - started,
            model=model,
            finetune_steps=spent,
            finetune_budget=s.finetune_steps,
            fidelity=fidelity,
            fidelity_reason=reason,
            curve=tuple(curve),
            float_accuracy=float_accuracy,
            int8_onnx=int8,
            size_mb_at_precision=stats.params / 1e6 if int8 is not None else None,
        )

    def _skip_reason(self, proxy: float, latency_ms: float, params: int, guidance: Guidance | None) -> str:
        if guidance is None:
            return ""
        if not guidance.constraints.cost_feasible(latency_ms, params):
            return "infeasible: misses the latency or parameter limit"
        if guidance.gains_seen < self.settings.min_history:
            return ""
        optimistic = min(1.0, proxy + guidance.max_gain + self.settings.gain_margin)
        if guidance.constraints.min_accuracy is not None and optimistic < guidance.constraints.min_accuracy:
            return f"cannot reach --min-accuracy (optimistic {optimistic:.3f})"
        if any(dominates(p, (optimistic, latency_ms)) for p in guidance.front):
            return f"dominated by the front even with the best gain seen (optimistic {optimistic:.3f})"
        return ""

    def _finetune(self, pruned: PruneResult, train, val, latency_ms: float, guidance: Guidance | None, device):
        """The trainer in chunks, evaluating after each; returns (eval, steps spent, curve, reason if cut short).

        The schedule (cosine to zero) spans the whole budget even when the candidate is cut short: a brief
        fine-tune that ends at full learning rate ends at a random point of SGD's noise, which can score below
        the proxy it started from. The sparsity masks are re-applied after every step, so pruned weights stay zero.
        """
        s = self.settings
        model = pruned.model
        loss_fn = cross_entropy_loss
        if s.distill:
            from autoprune.distill import DistillSettings, kd_loss_fn

            loss_fn = kd_loss_fn(self.baseline, DistillSettings(s.distill_alpha, s.distill_temperature))
        trainer = Trainer(model, finetune_recipe(s.finetune_lr, s.batch_size), s.finetune_steps, device=device,
                          loss_fn=loss_fn, after_step=mask_hook(pruned.masks, device), seed=s.seed)
        checks = max(1, min(s.finetune_checks, s.finetune_steps))
        bounds = [round(s.finetune_steps * (k + 1) / checks) for k in range(checks)]
        batches = cycle(train)
        curve, result = [], None
        for k, bound in enumerate(bounds):
            trainer.run(batches, bound - trainer.steps_done)
            spent = trainer.steps_done
            result = evaluate(model, val, self.data.num_classes, device)
            curve.append((spent, result.accuracy))
            cut = self._cut_reason(k, len(bounds), result.accuracy, latency_ms, guidance)
            if cut:
                return result, spent, curve, f"{cut} after {spent} steps"
        return result, trainer.steps_done, curve, ""

    def _cut_reason(self, k: int, checks: int, accuracy: float, latency_ms: float, guidance: Guidance | None) -> str:
        """Why fine-tuning stops after check ``k`` of ``checks`` (empty: it goes on): even with the largest
        recovery from check ``k`` to the end that a finished curve showed, plus ``stop_margin``, it would end
        behind the final accuracy of a fully fine-tuned candidate at least as fast. Without enough finished
        curves of this shape it never stops.

        Comparing the checks themselves (behind a faster candidate at the same check: cut) assumed parallel
        curves; early in a brief fine-tune they are not. MobileNetV2 on Fashion-MNIST, uniformly pruned to keep
        0.25-0.6, scores 8-32 % after BN recalibration and 15-60 % after 12 of 50 steps, in an order its final
        69-79 % does not keep: the same-check rule cut four of the uniform sweep's 20 plans there (keep 0.35 at
        22 %, 0.55 at 50 %; they end at 69 % and 77 %), and TPE learned those figures as the plans' accuracy."""
        if (guidance is None or k >= checks - 1 or guidance.curves_seen < self.settings.min_history
                or len(guidance.rungs) != checks):
            return ""
        here, final = guidance.rungs[k], guidance.rungs[-1]
        recovery = max(end - at for (at, _), (end, _) in zip(here, final))
        reach = accuracy + max(recovery, 0.0) + self.settings.stop_margin
        ahead = [a for a, ms in final if ms <= latency_ms and a > reach]
        if ahead:
            return (f"a faster finished candidate ended at {max(ahead):.3f}, beyond the {reach:.3f} this one could "
                    f"reach with the largest recovery seen from this check ({recovery:+.3f}, margin "
                    f"{self.settings.stop_margin:g})")
        return ""
