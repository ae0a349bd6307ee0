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
    if _has_attention(model):
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


def _has_attention(model: nn.Module) -> bool:
    """Whether ``model`` has attention heads (whose groups neither the global ranking nor the scores cover)."""
    return any(isinstance(m, (nn.MultiheadAttention, HeadAttention)) for m in model.modules())


def _out_width(module: nn.Module | None) -> int | None:
    if isinstance(module, nn.Conv2d):
        return module.out_channels
    if isinstance(module, nn.Linear):
        return module.out_features
    return None


def taylor_scores(model: nn.Module, space: SearchSpace, batches, limit: int = 8) -> dict[str, list[float]]:
    """Each group's channel scores, ascending, on one scale for every group: the first-order estimate of the loss
    change when the channel is removed (Molchanov et al. 2019), ``|sum (w * dL/dw)|`` over the channel's weights,
    summed over every layer the group shapes (a channel of a residual stream is removed from all of them), as
    root mean square over up to ``limit`` labelled batches ``(x, y)`` of ``batches``. Unlike the magnitude
    ranking, normalised per group, these compare across groups: removing a group's channels costs their summed
    score (:func:`removed_score`), which is what a latency-aware allocation trades against the latency saved.
    Groups the graph does not yield are absent. ``model`` is not changed (a copy on the CPU, in eval mode)."""
    from autoprune.pruning.space import dependency_groups, group_layers

    if _has_attention(model):
        raise UserError(f"channel scores cover conv/linear channels only; {space.model} has attention heads")
    work = copy.deepcopy(model).cpu().eval()
    names = {m: n for n, m in work.named_modules()}
    wanted = {g.name: g.channels for g in space.groups}
    graph, lazy = dependency_groups(work, torch.zeros(space.input_shape))
    named = {}
    for group in lazy:
        outs, _ = group_layers(graph, group, names)
        if outs and outs[0] in wanted and outs[0] not in named and len(group[0].idxs) == wanted[outs[0]]:
            named[outs[0]] = group
    importance = tp.importance.GroupTaylorImportance(group_reduction="sum", normalizer=None, multivariable=True)
    total: dict[str, torch.Tensor] = {}
    seen = 0
    for x, y in batches:
        if seen >= limit:
            break
        work.zero_grad()
        nn.functional.cross_entropy(work(x.cpu()), y.cpu()).backward()
        for name, group in named.items():
            total[name] = total.get(name, 0) + importance(group).double() ** 2
        seen += 1
    if not seen:
        raise UserError("channel scores need at least one labelled batch")
    return {name: sorted((value / seen).sqrt().tolist()) for name, value in total.items()}


def removed_score(scores: list[float], keep_from: float, keep_to: float) -> float:
    """The summed score of the channels a group loses going from ``keep_from`` to ``keep_to`` of them (its
    weakest first; ``scores`` ascending, as :func:`taylor_scores` gives them)."""
    n = len(scores)
    kept_from, kept_to = round(keep_from * n), round(keep_to * n)
    return float(sum(scores[n - kept_from:n - kept_to])) if kept_to < kept_from else 0.0
