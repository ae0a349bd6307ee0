"""Apply a plan's structured part: physically remove channels, group by coupled group."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch_pruning as tp
from torch import nn

from autoprune.errors import unknown_choice
from autoprune.plan import PruningPlan, aligned_channels
from autoprune.pruning.space import dependency_groups, group_layers

# Criteria that score a group without gradients, and those that need a few calibration batches.
_STATIC: dict[str, Callable[[], tp.importance.Importance]] = {
    "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
    "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
    "bn_scale": lambda: tp.importance.BNScaleImportance(),
    "fpgm": lambda: tp.importance.FPGMImportance(),
    "random": lambda: tp.importance.RandomImportance(),
}
_GRADIENT: dict[str, Callable[[], tp.importance.Importance]] = {
    "taylor": lambda: tp.importance.GroupTaylorImportance(),
}
IMPORTANCE_CRITERIA = tuple(sorted([*_STATIC, *_GRADIENT]))


def apply_plan(
    model: nn.Module,
    plan: PruningPlan,
    example_inputs: torch.Tensor,
    calibration: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
    seed: int = 0,
) -> nn.Module:
    """Prune ``model`` in place by ``plan`` and return it.

    Channels are ranked by ``plan.importance`` within each coupled group, and the lowest-ranked are removed
    so that ``plan.kept_channels(group)`` remain. Gradient criteria accumulate gradients over the
    ``calibration`` batches first. The same model, plan and seed always give the same result.
    """
    importance = _importance(plan.importance)
    if plan.importance in _GRADIENT:
        _accumulate_gradients(model, calibration)
    names = {m: n for n, m in model.named_modules()}
    model.eval()
    graph, lazy_groups = dependency_groups(model, example_inputs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for group in lazy_groups:
            outs, _ = group_layers(graph, group, names)
            if not outs:
                continue
            channels = len(group[0].idxs)
            keep = aligned_channels(channels, plan.keep_ratios.get(outs[0], 1.0), plan.alignment)
            if keep >= channels:
                continue
            scores = importance(group)
            order = torch.argsort(scores.detach().float().cpu(), stable=True)
            prune_idxs = sorted(order[: channels - keep].tolist())
            root = group[0].dep.target.module
            graph.get_pruning_group(root, group[0].dep.handler, prune_idxs).prune()
    model.zero_grad(set_to_none=True)
    return model


def _importance(name: str) -> tp.importance.Importance:
    factory = _STATIC.get(name) or _GRADIENT.get(name)
    if factory is None:
        raise unknown_choice("importance criterion", name, IMPORTANCE_CRITERIA)
    return factory()


def _accumulate_gradients(model: nn.Module, calibration) -> None:
    if calibration is None:
        raise ValueError("gradient-based importance needs calibration batches")
    model.zero_grad(set_to_none=True)
    model.eval()
    for images, labels in calibration:
        nn.functional.cross_entropy(model(images), labels).backward()
