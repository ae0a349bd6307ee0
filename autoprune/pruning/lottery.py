"""Lottery-ticket iterative magnitude pruning with weight rewinding (Frankle & Carbin 2019; Frankle et al. 2020).

After the plan's structured cut (once, up front), the network trains ``rewind_step`` steps and that state is
saved. Then ``rounds`` times: train, zero the lowest-magnitude weights (globally for ``global_sparsity``, per
layer for ``layer_sparsity``) up to this round's sparsity, and rewind every surviving parameter (and BN
statistics) to the saved state. A last training phase follows the last rewind. The sparsity grows
geometrically, the same fraction of the remaining weights each round, and the last round uses the plan
itself, so the result has exactly the plan's sparsity.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from autoprune.errors import UserError
from autoprune.plan import PruningPlan
from autoprune.pruning.engine import PruneResult
from autoprune.pruning.structured import apply_plan
from autoprune.pruning.unstructured import Masks, make_permanent, sparsity_masks


def round_sparsity(final: float, round_: int, rounds: int) -> float:
    """Sparsity after ``round_`` of ``rounds`` when each round prunes the same fraction of what remains:
    1 - (1 - final)^(round_ / rounds)."""
    return 1.0 - (1.0 - final) ** (min(round_, rounds) / rounds)


def round_plan(plan: PruningPlan, round_: int, rounds: int) -> PruningPlan:
    """The unstructured (and, in the last round, N:M) part of ``plan`` at ``round_`` of ``rounds``."""
    if round_ >= rounds:
        return PruningPlan(layer_sparsity=plan.layer_sparsity, global_sparsity=plan.global_sparsity, nm=plan.nm)
    return PruningPlan(
        layer_sparsity={n: round_sparsity(s, round_, rounds) for n, s in plan.layer_sparsity.items()},
        global_sparsity=round_sparsity(plan.global_sparsity, round_, rounds),
    )


def lottery(
    model: nn.Module,
    plan: PruningPlan,
    example_inputs: torch.Tensor,
    loader: DataLoader | None,
    steps: int,
    rounds: int = 3,
    lr: float = 0.01,
    seed: int = 0,
    calibration=None,
    rewind_step: int | None = None,
    on_rewind: Callable[[int, nn.Module, Masks, dict[str, torch.Tensor]], None] | None = None,
    device: torch.device | str = "cpu",
) -> PruneResult:
    """Prune ``model`` in place to ``plan`` by iterative magnitude pruning with rewinding.

    ``steps`` SGD steps in all: ``rewind_step`` (default a tenth) before the rewind point, the rest split
    evenly over ``rounds`` + 1 training phases. ``on_rewind(round, model, masks, rewind_state)`` is called
    right after each rewind (for inspection; ``rewind_state`` is the saved state dict). Training runs on
    ``device`` (the trainer's fine-tuning recipe, one cosine schedule per phase); masks, rewinds and the
    result are on the CPU.
    """
    from autoprune.pruning.schedules import finetune_masked, prune_result

    if not plan.is_sparse:
        raise UserError(
            "schedule 'lottery' zeroes weights by magnitude: the plan needs global_sparsity or layer_sparsity "
            "(e.g. `autoprune prune --sparsity 0.8 --schedule lottery`)"
        )
    if rounds < 1:
        raise UserError(f"lottery rounds must be at least 1, got {rounds}")
    apply_plan(model, plan, example_inputs, calibration, seed)
    make_permanent(model)
    rewind_step = max(0, steps // 10 if rewind_step is None else min(rewind_step, steps))
    phase = (steps - rewind_step) // (rounds + 1)
    masks = Masks()
    finetune_masked(model, loader, rewind_step, lr, seed, masks, device)
    rewind_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for r in range(1, rounds + 1):
        finetune_masked(model, loader, phase, lr, seed + r, masks, device)
        masks.apply(model)
        masks = sparsity_masks(model, round_plan(plan, r, rounds))
        model.load_state_dict(rewind_state)
        masks.apply(model)
        if on_rewind is not None:
            on_rewind(r, model, masks, rewind_state)
    finetune_masked(model, loader, steps - rewind_step - rounds * phase, lr, seed + rounds + 1, masks, device)
    masks.apply(model)
    return prune_result(model, masks)

