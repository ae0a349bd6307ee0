"""How much and when: one-shot, iterative, automated gradual pruning (AGP), lottery-ticket rewinding and
regularize-then-cut (network slimming, group lasso), all with masked fine-tuning.

Fine-tuning re-applies the sparsity masks after every optimizer step, so pruned weights stay exactly zero
and each schedule ends at its plan's target sparsity.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader

from autoprune.errors import unknown_choice
from autoprune.plan import PruningPlan
from autoprune.pruning.engine import PruneResult, prune
from autoprune.pruning.unstructured import Masks, apply_sparsity

SCHEDULES = ("one-shot", "iterative", "agp", "lottery", "slimming", "group-lasso")


def agp_sparsity(step: int, total_steps: int, final: float, initial: float = 0.0) -> float:
    """Zhu & Gupta's cubic schedule: s_t = s_f + (s_i - s_f) * (1 - t / n)^3, clamped to t in [0, n]."""
    t = min(max(step, 0), total_steps) / max(total_steps, 1)
    return final + (initial - final) * (1.0 - t) ** 3


def scaled_plan(plan: PruningPlan, fraction: float) -> PruningPlan:
    """``plan`` with its pruning (1 - keep, sparsity) scaled by ``fraction`` in [0, 1]; N:M is all-or-nothing."""
    return PruningPlan(
        keep_ratios={g: 1.0 - (1.0 - r) * fraction for g, r in plan.keep_ratios.items()},
        importance=plan.importance,
        alignment=plan.alignment,
        layer_sparsity={n: s * fraction for n, s in plan.layer_sparsity.items()},
        global_sparsity=plan.global_sparsity * fraction,
        nm=dict(plan.nm) if fraction >= 1.0 else {},
    )


def run_schedule(
    model: nn.Module,
    plan: PruningPlan,
    schedule: str,
    example_inputs: torch.Tensor,
    loader: DataLoader | None = None,
    steps: int = 0,
    rounds: int = 3,
    lr: float = 0.01,
    seed: int = 0,
    calibration=None,
    reg_strength: float = 1e-3,
) -> PruneResult:
    """Prune ``model`` in place to ``plan`` by ``schedule`` with ``steps`` fine-tuning steps in total.

    - ``one-shot``: prune, then fine-tune;
    - ``iterative``: ``rounds`` rounds of prune -> fine-tune with linearly increasing ratios (structured keep
      ratios are re-expressed relative to the channels the previous round left);
    - ``agp``: structured part at once, then the sparsity grows along the cubic schedule during fine-tuning,
      masks recomputed ``rounds`` times;
    - ``lottery``: structured part at once, then ``rounds`` rounds of train -> magnitude-prune -> rewind to
      the weights of an early step (see :mod:`autoprune.pruning.lottery`);
    - ``slimming`` / ``group-lasso``: half the steps with an L1 penalty on the BN scales / a group-lasso
      penalty (weight ``reg_strength``) on the groups the plan prunes, then the cut, ranked by the quantity
      the penalty shrank (bn_scale / l2, whatever ``plan.importance`` says), then masked fine-tuning.
    """
    if schedule not in SCHEDULES:
        raise unknown_choice("schedule", schedule, SCHEDULES)
    if schedule == "lottery":
        from autoprune.pruning.lottery import lottery

        return lottery(model, plan, example_inputs, loader, steps, rounds, lr, seed, calibration)
    if schedule in ("slimming", "group-lasso"):
        return _regularized(model, plan, schedule, example_inputs, loader, steps, lr, seed, calibration,
                            reg_strength)
    if schedule == "one-shot" or (steps <= 0 and schedule == "agp"):
        result = prune(model, plan, example_inputs, calibration, seed)
        _finetune(model, loader, steps, lr, seed, result.masks)
        return prune_result(model, result.masks)
    if schedule == "iterative":
        return _iterative(model, plan, example_inputs, loader, steps, rounds, lr, seed, calibration)
    return _agp(model, plan, example_inputs, loader, steps, rounds, lr, seed, calibration)


def prune_result(model: nn.Module, masks: Masks) -> PruneResult:
    from autoprune.pruning.unstructured import sparsity_report

    return PruneResult(model, masks, sparsity_report(model, masks.patterns))


def _iterative(model, plan, example_inputs, loader, steps, rounds, lr, seed, calibration) -> PruneResult:
    from autoprune.pruning.space import generate_space

    groups = {g.name: g for g in generate_space(model, "", tuple(example_inputs.shape)).groups}
    current = {name: groups[name].channels for name in plan.keep_ratios if name in groups}
    result = None
    for r in range(1, rounds + 1):
        target = scaled_plan(plan, r / rounds)
        # structured: ask for the channel count this round targets, relative to what is left, so rounding
        # does not compound across rounds
        wanted = {
            name: plan.kept_channels(name, groups[name].channels, groups[name].unit, groups[name].interleave)
            if r == rounds else target.kept_channels(name, groups[name].channels, groups[name].unit,
                                                     groups[name].interleave)
            for name in current
        }
        step_plan = PruningPlan(
            keep_ratios={name: wanted[name] / current[name] for name in current},
            importance=plan.importance, alignment=plan.alignment,
            layer_sparsity=target.layer_sparsity, global_sparsity=target.global_sparsity, nm=target.nm,
        )
        result = prune(model, step_plan, example_inputs, calibration, seed)
        current = wanted
        _finetune(model, loader, steps // rounds, lr, seed + r, result.masks)
    return prune_result(model, result.masks)


def _regularized(model, plan, kind, example_inputs, loader, steps, lr, seed, calibration, strength) -> PruneResult:
    from autoprune.pruning.regularization import REGULARIZERS, regularize

    reg_steps = steps // 2 if loader is not None else 0
    if reg_steps > 0 and plan.is_structured:
        regularize(model, plan, example_inputs, loader, reg_steps, kind, strength, lr, seed)
    cut = PruningPlan.from_dict({**plan.to_dict(), "importance": REGULARIZERS[kind]})
    result = prune(model, cut, example_inputs, calibration, seed)
    _finetune(model, loader, steps - reg_steps, lr, seed + 1, result.masks)
    return prune_result(model, result.masks)


def _agp(model, plan, example_inputs, loader, steps, rounds, lr, seed, calibration) -> PruneResult:
    structured = PruningPlan(keep_ratios=plan.keep_ratios, importance=plan.importance, alignment=plan.alignment)
    prune(model, structured, example_inputs, calibration, seed)
    interval = max(1, math.ceil(steps / rounds))
    masks = Masks()
    done = 0
    while done < steps:
        fraction = agp_sparsity(done + interval, steps, 1.0)  # reach the target at the last update
        masks, _ = apply_sparsity(model, scaled_plan(plan, fraction))
        chunk = min(interval, steps - done)
        _finetune(model, loader, chunk, lr, seed + done, masks)
        done += chunk
    masks, _ = apply_sparsity(model, plan)
    return prune_result(model, masks)


def _batches(loader: DataLoader) -> Iterator:
    while True:
        yield from loader


def _finetune(model: nn.Module, loader: DataLoader | None, steps: int, lr: float, seed: int, masks: Masks) -> None:
    """SGD fine-tuning that keeps masked weights at zero after every step."""
    if steps <= 0 or loader is None:
        return
    torch.manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    for _, (images, labels) in zip(range(steps), _batches(loader)):
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
        masks.apply(model)
    optimizer.zero_grad(set_to_none=True)
    model.eval()
