"""How much and when: one-shot, iterative, automated gradual pruning (AGP), lottery-ticket rewinding and
regularize-then-cut (network slimming, group lasso), all with masked fine-tuning.

Fine-tuning is the one trainer's (:mod:`autoprune.trainer`: SGD momentum 0.9, weight decay 5e-4, cosine to zero
over each training phase) with the sparsity masks re-applied after every optimizer step, so pruned weights stay
exactly zero and each schedule ends at its plan's target sparsity. Training runs on ``device``; pruning, and the
model between phases and at the end, stay on the CPU.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.data import DataLoader

from autoprune.errors import unknown_choice
from autoprune.plan import PruningPlan
from autoprune.pruning.engine import PruneResult, prune
from autoprune.pruning.unstructured import Masks, apply_sparsity
from autoprune.trainer import Trainer, cycle, mask_hook
from autoprune.training import finetune_recipe, finetune_steps

SCHEDULES = ("one-shot", "iterative", "agp", "lottery", "slimming", "group-lasso")


def agp_sparsity(step: int, total_steps: int, final: float, initial: float = 0.0) -> float:
    """Zhu & Gupta's cubic schedule: s_t = s_f + (s_i - s_f) * (1 - t / n)^3, clamped to t in [0, n]."""
    t = min(max(step, 0), total_steps) / max(total_steps, 1)
    return final + (initial - final) * (1.0 - t) ** 3


def scaled_plan(plan: PruningPlan, fraction: float) -> PruningPlan:
    """``plan`` with its pruning (1 - keep, sparsity) scaled by ``fraction`` in [0, 1]; N:M is all-or-nothing,
    dropped blocks go at once (a block cannot be partly removed, and the rounds then shape what remains)."""
    return PruningPlan(
        keep_ratios={g: 1.0 - (1.0 - r) * fraction for g, r in plan.keep_ratios.items()},
        importance=plan.importance,
        alignment=plan.alignment,
        layer_sparsity={n: s * fraction for n, s in plan.layer_sparsity.items()},
        global_sparsity=plan.global_sparsity * fraction,
        nm=dict(plan.nm) if fraction >= 1.0 else {},
        drop_blocks=plan.drop_blocks,
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
    device: torch.device | str = "cpu",
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

        return lottery(model, plan, example_inputs, loader, steps, rounds, lr, seed, calibration, device=device)
    if schedule in ("slimming", "group-lasso"):
        return _regularized(model, plan, schedule, example_inputs, loader, steps, lr, seed, calibration,
                            reg_strength, device)
    if schedule == "one-shot" or (steps <= 0 and schedule == "agp"):
        result = prune(model, plan, example_inputs, calibration, seed)
        finetune_masked(model, loader, steps, lr, seed, result.masks, device)
        return prune_result(model, result.masks)
    if schedule == "iterative":
        return _iterative(model, plan, example_inputs, loader, steps, rounds, lr, seed, calibration, device)
    return _agp(model, plan, example_inputs, loader, steps, rounds, lr, seed, calibration, device)


def prune_result(model: nn.Module, masks: Masks) -> PruneResult:
    from autoprune.pruning.unstructured import sparsity_report

    return PruneResult(model, masks, sparsity_report(model, masks.patterns))


def _iterative(model, plan, example_inputs, loader, steps, rounds, lr, seed, calibration, device) -> PruneResult:
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
            drop_blocks=plan.drop_blocks,
        )
        result = prune(model, step_plan, example_inputs, calibration, seed)
        current = wanted
        finetune_masked(model, loader, steps // rounds, lr, seed + r, result.masks, device)
    return prune_result(model, result.masks)


def _regularized(model, plan, kind, example_inputs, loader, steps, lr, seed, calibration, strength,
                 device) -> PruneResult:
    from autoprune.pruning.regularization import REGULARIZERS, regularize

    reg_steps = steps // 2 if loader is not None else 0
    if reg_steps > 0 and plan.is_structured:
        regularize(model, plan, example_inputs, loader, reg_steps, kind, strength, lr, seed, device)
    cut = PruningPlan.from_dict({**plan.to_dict(), "importance": REGULARIZERS[kind]})
    result = prune(model, cut, example_inputs, calibration, seed)
    finetune_masked(model, loader, steps - reg_steps, lr, seed + 1, result.masks, device)
    return prune_result(model, result.masks)


def _agp(model, plan, example_inputs, loader, steps, rounds, lr, seed, calibration, device) -> PruneResult:
    """One trainer over all ``steps`` (one cosine schedule), the masks it re-applies growing every interval."""
    structured = PruningPlan(keep_ratios=plan.keep_ratios, importance=plan.importance, alignment=plan.alignment,
                             drop_blocks=plan.drop_blocks)
    prune(model, structured, example_inputs, calibration, seed)
    interval = max(1, math.ceil(steps / rounds))
    trainer = Trainer(model, finetune_recipe(lr), steps, device=device, seed=seed) if loader is not None else None
    batches = cycle(loader) if loader is not None else None
    done = 0
    while done < steps:
        fraction = agp_sparsity(done + interval, steps, 1.0)  # reach the target at the last update
        masks, _ = apply_sparsity(_on_cpu(model), scaled_plan(plan, fraction))
        chunk = min(interval, steps - done)
        if trainer is not None:
            trainer.after_step = mask_hook(masks, device)
            trainer.run(batches, chunk)
        done += chunk
    masks, _ = apply_sparsity(_on_cpu(model), plan)
    return prune_result(model, masks)


def finetune_masked(model: nn.Module, loader: DataLoader | None, steps: int, lr: float, seed: int, masks: Masks,
                    device: torch.device | str = "cpu") -> None:
    """Fine-tune ``steps`` steps on ``device`` keeping masked weights at zero; the model ends on the CPU."""
    if steps <= 0 or loader is None:
        return
    finetune_steps(model, loader, steps, lr, seed, after_step=mask_hook(masks, device), device=device)
    _on_cpu(model)


def _on_cpu(model: nn.Module) -> nn.Module:
    return model.to("cpu", memory_format=torch.contiguous_format)
