"""One entry point for a whole plan: structured cut, then unstructured / N:M zeroing."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from autoprune.plan import PruningPlan
from autoprune.pruning.structured import apply_plan
from autoprune.pruning.unstructured import Masks, SparsityReport, apply_sparsity


@dataclass(frozen=True, eq=False)
class PruneResult:
    """The pruned model (same object, modified in place), the masks to keep it sparse while fine-tuning, and
    the exact per-layer sparsity achieved."""

    model: nn.Module
    masks: Masks
    sparsity: SparsityReport


def prune(
    model: nn.Module,
    plan: PruningPlan,
    example_inputs: torch.Tensor,
    calibration: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
    seed: int = 0,
) -> PruneResult:
    """Apply all of ``plan`` to ``model`` in place: channels first (so sparsity is measured on what remains)."""
    apply_plan(model, plan, example_inputs, calibration, seed)
    masks, report = apply_sparsity(model, plan)
    return PruneResult(model, masks, report)
