"""Per-group keep ratios from Torch-Pruning's global pruning: the allocation a Torch-Pruning user gets from

    tp.pruner.MetaPruner(model, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                         global_pruning=True, pruning_ratio=r, round_to=alignment)

which ranks every channel of every coupled group on one scale (group L2 magnitude, normalised by its group's
mean) and removes the lowest ``r`` share of all channels, so per-layer ratios follow the ranking rather than
being equal. autoprune asks Torch-Pruning for that allocation on a copy of the trained model and turns it into
a plan, so the result is evaluated by the same evaluator and priced by the same cost model as every other
candidate (``--strategy tp-global`` sweeps ``r``; learned strategies may start from these points).
"""

from __future__ import annotations

import copy

import torch
import torch_pruning as tp
from torch import nn

from autoprune.errors import UserError
from autoprune.models import classifier
from autoprune.pruning.attention import HeadAttention
from autoprune.pruning.space import SearchSpace


def global_keep_ratios(model: nn.Module, space: SearchSpace, pruning_ratio: float) -> dict[str, float]:
    """Keep ratio per group of ``space`` after Torch-Pruning's global pruning of ``model`` at ``pruning_ratio``
    (a share of all channels, in [0, 1)). Each group keeps at least its ``min_keep`` (Torch-Pruning's
    ``max_pruning_ratio`` is the loosest group's; tighter groups are clipped here). ``model`` is not changed."""
    if not 0.0 <= pruning_ratio < 1.0:
        raise UserError(f"global pruning ratio {pruning_ratio!r} must be in [0, 1)")
    if any(isinstance(m, (nn.MultiheadAttention, HeadAttention)) for m in model.modules()):
        raise UserError(f"tp-global allocates conv/linear channels only; {space.model} has attention heads - "
                        "use --strategy tpe, nsga2 or rl for it")
    if pruning_ratio == 0.0:
        return {g.name: 1.0 for g in space.groups}
    work = copy.deepcopy(model).cpu().eval()
    with torch.random.fork_rng(devices=[]):
        pruner = tp.pruner.MetaPruner(
            work, torch.zeros(space.input_shape), importance=tp.importance.GroupMagnitudeImportance(p=2),
            global_pruning=True, pruning_ratio=pruning_ratio,
            max_pruning_ratio=1.0 - min((g.min_keep for g in space.groups), default=1.0),
            round_to=space.alignment if space.alignment > 1 else None, ignored_layers=[classifier(work)],
        )
        pruner.step()
    modules = dict(work.named_modules())
    ratios = {}
    for group in space.groups:
        kept = _out_width(modules.get(group.name))
        ratios[group.name] = 1.0 if kept is None else max(group.min_keep, min(1.0, kept / group.channels))
    return ratios


def _out_width(module: nn.Module | None) -> int | None:
    if isinstance(module, nn.Conv2d):
        return module.out_channels
    if isinstance(module, nn.Linear):
        return module.out_features
    return None
