"""Regularization-based pruning: push whole channels towards zero for a few steps, then cut them.

- ``slimming`` (network slimming, Liu et al. 2017): L1 on the BatchNorm scales of the groups the plan prunes;
  the cut then ranks channels by BN scale (``bn_scale``).
- ``group-lasso``: the sum over channels of the L2 norm of what a channel owns in its coupled group (BN
  scales, the input columns of the layers that read it, and output filters when no BN normalizes them); the
  cut ranks by the group's L2 magnitude (``l2``).

Only groups the plan actually prunes (keep ratio < 1) are regularized: the rest of the network keeps its
capacity. The penalty is added to the cross-entropy loss; ``strength`` is its weight (dimensionless, per
unit of scale or norm).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader

from autoprune.errors import unknown_choice
from autoprune.plan import PruningPlan
from autoprune.pruning.space import PRUNABLE_TYPES, dependency_groups, group_layers
from autoprune.training import cross_entropy_loss, finetune_steps

REGULARIZERS = {"slimming": "bn_scale", "group-lasso": "l2"}  # name -> the criterion its cut ranks by
BatchNorms = (nn.BatchNorm1d, nn.BatchNorm2d)


@dataclass(frozen=True, eq=False)
class ChannelSlice:
    """The part of ``module.weight`` that channel ``i`` of a group owns: index ``idxs[i]`` along ``dim``."""

    module: nn.Module
    dim: int
    idxs: torch.Tensor

    def weights(self) -> torch.Tensor:
        """The channels' weights (differentiable), wherever the module lives."""
        weight = self.module.weight
        return weight.index_select(self.dim, self.idxs.to(weight.device))

    def per_channel_sq(self) -> torch.Tensor:
        """Sum of squared weights per group channel (differentiable)."""
        w = self.weights()
        return w.pow(2).transpose(0, self.dim).reshape(len(self.idxs), -1).sum(dim=1)


def channel_slices(model: nn.Module, plan: PruningPlan, example_inputs: torch.Tensor) -> dict[str, list[ChannelSlice]]:
    """For each group ``plan`` prunes: the weight slices its channels own (conv/linear rows and columns, BN)."""
    names = {m: n for n, m in model.named_modules()}
    graph, groups = dependency_groups(model.eval(), example_inputs)
    pruned = {g for g, r in plan.keep_ratios.items() if r < 1.0}
    result: dict[str, list[ChannelSlice]] = {}
    for group in groups:
        outs, _ = group_layers(graph, group, names)
        if not outs or outs[0] not in pruned:
            continue
        channels = len(group[0].idxs)
        # a BN right after a layer makes that layer's rows scale-invariant: shrinking them changes nothing
        # downstream, and the loss gradient grows as they shrink, so penalizing them only inflates them
        normalized = any(isinstance(i.dep.target.module, BatchNorms) for i in group)
        slices = []
        for item in group:
            module, idxs = item.dep.target.module, item.idxs
            if len(idxs) != channels:  # a part of a concat: indices do not line up with the group's channels
                continue
            out = graph.is_out_channel_pruning_fn(item.dep.handler)
            if isinstance(module, BatchNorms) and module.affine and out:
                dim = 0
            elif isinstance(module, PRUNABLE_TYPES) and out and not normalized:
                dim = 0  # grouped/depthwise convs included: their filters are rows too
            elif isinstance(module, PRUNABLE_TYPES) and not out and getattr(module, "groups", 1) == 1:
                dim = 1
            else:
                continue
            slices.append(ChannelSlice(module, dim, torch.as_tensor(list(idxs), dtype=torch.long)))
        result[outs[0]] = slices
    return result


def penalty_fn(kind: str, slices: dict[str, list[ChannelSlice]]) -> Callable[[], torch.Tensor]:
    """The regularization term of ``kind`` over ``slices`` (a function: it reads the current weights)."""
    if kind not in REGULARIZERS:
        raise unknown_choice("regularizer", kind, REGULARIZERS)
    if kind == "slimming":
        norms = [s for group in slices.values() for s in group if isinstance(s.module, BatchNorms)]
        return lambda: sum((s.weights().abs().sum() for s in norms), torch.zeros(()))

    def group_lasso() -> torch.Tensor:
        total = torch.zeros(())
        for group in slices.values():
            if group:
                sq = torch.stack([s.per_channel_sq() for s in group]).sum(dim=0)
                total = total + (sq + 1e-12).sqrt().sum()  # eps: the norm's gradient at an all-zero channel
        return total

    return group_lasso


def group_norms(kind: str, slices: dict[str, list[ChannelSlice]]) -> dict[str, torch.Tensor]:
    """Per-channel magnitude each regularizer shrinks: |BN scale| summed over the group's BN layers
    (slimming) or the channel's L2 norm over the whole group (group-lasso)."""
    with torch.no_grad():
        if kind == "slimming":
            return {
                g: torch.stack([s.weights().abs()
                                for s in group if isinstance(s.module, BatchNorms)]).sum(dim=0)
                for g, group in slices.items()
            }
        return {g: torch.stack([s.per_channel_sq() for s in group]).sum(dim=0).sqrt() for g, group in slices.items()}


def regularize(
    model: nn.Module,
    plan: PruningPlan,
    example_inputs: torch.Tensor,
    loader: DataLoader,
    steps: int,
    kind: str,
    strength: float,
    lr: float = 0.01,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict[str, list[ChannelSlice]]:
    """Train ``steps`` steps (the trainer, on ``device``) on cross-entropy + ``strength`` * penalty: the penalty
    is a loss term. The learning rate stays constant: this phase only has to shrink channels before the cut
    (fine-tuning after the cut decays it). Returns the regularized slices; the model ends on the CPU."""
    slices = channel_slices(model, plan, example_inputs)
    penalty = penalty_fn(kind, slices)

    def loss(net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return cross_entropy_loss(net, images, labels) + strength * penalty()

    finetune_steps(model, loader, steps, lr, seed, loss, device=device, lr_schedule="constant")
    model.to("cpu", memory_format=torch.contiguous_format)
    return slices
