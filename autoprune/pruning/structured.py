"""Apply a plan's structured part: drop whole blocks, then physically remove channels (and attention heads),
group by coupled group."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch_pruning as tp
from torch import nn

from autoprune.errors import UserError
from autoprune.plan import PruningPlan, kept_channels
from autoprune.pruning.attention import HeadAttention, convert_attention
from autoprune.pruning.importance import (
    IMPORTANCE_CRITERIA,  # noqa: F401 - re-exported: callers list the criteria from here
    make_importance,
    prepare_gradients,
)
from autoprune.pruning.depth import drop_blocks
from autoprune.pruning.opaque import convert_shuffles
from autoprune.pruning.space import conv_interleave, dependency_groups, group_layers


def apply_plan(
    model: nn.Module,
    plan: PruningPlan,
    example_inputs: torch.Tensor,
    calibration: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
    seed: int = 0,
) -> nn.Module:
    """Prune ``model`` in place by ``plan``'s dropped blocks and keep ratios and return it.

    The blocks in ``plan.drop_blocks`` are replaced by identity first; the dependency graph is then built on the
    shallower model, so the groups that lived only inside a dropped block are gone and their ratios ignored.
    A group keeps the ratio of whichever of its layers the plan names (a group whose first layer was dropped
    is then named after a later one, but the plan still names it by its dense-model name).
    Channels are ranked by ``plan.importance`` within each coupled group, and the lowest-ranked are removed
    so that ``plan.kept_channels(group)`` remain; attention groups lose whole heads. Gradient criteria run
    the ``calibration`` batches first. ``nn.MultiheadAttention`` blocks are replaced by equivalent
    :class:`HeadAttention` blocks, ShuffleNetV2 units by :class:`~autoprune.pruning.opaque.ShuffleUnit`. The same model, plan and seed always give the same result.
    Only the structured part of the plan is applied here; see :func:`autoprune.pruning.prune` for all of it.
    """
    importance = make_importance(plan.importance)
    drop_blocks(model, plan.drop_blocks)
    convert_attention(model)
    convert_shuffles(model)
    if not plan.is_structured:
        return model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        prepare_gradients(model, plan.importance, calibration)
        names = {m: n for n, m in model.named_modules()}
        attention = {m.qkv: m for m in model.modules() if isinstance(m, HeadAttention)}
        model.eval()
        graph, lazy_groups = dependency_groups(model, example_inputs)
        unwrapped = _unwrapped_names(graph)  # before pruning: it replaces the parameter objects
        for group in lazy_groups:
            outs, _ = group_layers(graph, group, names)
            if not outs:
                continue
            ratio = next((plan.keep_ratios[n] for n in outs if n in plan.keep_ratios), 1.0)
            if ratio >= 1.0:
                continue
            root = group[0].dep.target.module
            try:
                if root in attention and graph.is_out_channel_pruning_fn(group[0].dep.handler):
                    _prune_heads(graph, attention[root], ratio, importance)
                else:
                    _prune_channels(graph, group, ratio, plan.alignment, importance)
            except (AssertionError, RuntimeError, IndexError) as err:
                raise UserError(
                    f"Torch-Pruning cannot prune group {outs[0]!r} of {type(model).__name__} "
                    f"({err.__class__.__name__}: {err}); keep that group whole (keep ratio 1.0)"
                ) from err
        _sync_widths(model)
        _check_runs(model, example_inputs, unwrapped)
    model.zero_grad(set_to_none=True)
    return model


def _check_runs(model: nn.Module, example_inputs: torch.Tensor, unwrapped: list[str]) -> None:
    """Run the pruned model once; if it fails, say which layer and why the graph missed it, not a raw
    shape error. The usual cause: parameters used outside a module (``F.conv2d(x, self.w)``), whose role
    Torch-Pruning can only guess, or control flow the example input did not take while tracing."""
    entered: list[str] = []
    done: list[str] = []
    hooks = []
    for name, module in model.named_modules():
        if name and not list(module.children()):
            hooks.append(module.register_forward_pre_hook(lambda m, a, n=name: entered.append(n)))
            hooks.append(module.register_forward_hook(lambda m, a, o, n=name: done.append(n)))
    try:
        with torch.no_grad():
            model(example_inputs)
    except (RuntimeError, ValueError, IndexError) as err:
        failing = entered[-1] if entered and (not done or entered[-1] != done[-1]) else None
        where = f"in layer {failing!r}" if failing else (
            f"after layer {done[-1]!r}" if done else "before its first layer")
        why = (f"it uses parameters outside a module ({', '.join(unwrapped)}), whose pruned dimension "
               "Torch-Pruning can only guess" if unwrapped else
               "its dependency graph missed an op or a branch the example input did not take")
        raise UserError(
            f"Torch-Pruning cannot prune {type(model).__name__} consistently: the pruned model fails {where} "
            f"({(str(err).splitlines() or [type(err).__name__])[0]}); {why}. Keep the groups feeding it whole (keep ratio 1.0) or wrap "
            "those parameters in nn.Conv2d/nn.Linear modules"
        ) from err
    finally:
        for hook in hooks:
            hook.remove()


def _unwrapped_names(graph) -> list[str]:
    """Names of the parameters the graph found outside any module it knows (whose layout it guesses)."""
    table = getattr(graph, "_param_to_name", {})
    found = [table.get(u.parameters) for u in getattr(graph, "unwrapped_parameters", None) or []]
    return sorted(n for n in found if n)


def _sync_widths(model: nn.Module) -> None:
    """Update width attributes a forward pass reads (torchvision's ViT reshapes by ``hidden_dim``)."""
    for module in model.modules():
        conv_proj = getattr(module, "conv_proj", None)
        if isinstance(conv_proj, nn.Conv2d) and isinstance(getattr(module, "hidden_dim", None), int):
            module.hidden_dim = conv_proj.out_channels


def _scores(importance, group) -> torch.Tensor:
    scores = importance(group)
    if scores is None:  # e.g. bn_scale on a group without BatchNorm
        raise UserError(
            f"importance criterion {type(importance).__name__} cannot score the group of "
            f"{type(group[0].dep.target.module).__name__} (it has no layer that criterion reads); use l1 or l2"
        )
    return scores.detach().float().cpu()


def _prune_channels(graph, group, ratio: float, alignment: int, importance) -> None:
    """Remove the lowest-scored channels. With a grouped convolution in the group, remove the same positions
    from every conv group (scores averaged over conv groups), as Torch-Pruning's own pruner does, so each
    conv group keeps the same width."""
    channels = len(group[0].idxs)
    interleave = conv_interleave(group)
    keep = kept_channels(channels, ratio, alignment, interleave=interleave)
    if keep >= channels:
        return
    scores = _scores(importance, group)
    if interleave > 1:
        per = channels // interleave
        order = torch.argsort(scores.view(interleave, per).mean(dim=0), stable=True)
        drop = order[: per - keep // interleave].tolist()
        prune_idxs = sorted(g * per + p for g in range(interleave) for p in drop)
    else:
        order = torch.argsort(scores, stable=True)
        prune_idxs = sorted(order[: channels - keep].tolist())
    graph.get_pruning_group(group[0].dep.target.module, group[0].dep.handler, prune_idxs).prune()


def _prune_heads(graph, block: HeadAttention, ratio: float, importance) -> None:
    """Remove whole heads: rank them by the mean channel score, rooted at ``proj``'s inputs (as
    Torch-Pruning's own head pruning does, so the index mapping through ``unbind`` is exact)."""
    heads, head_dim = block.num_heads, block.head_dim
    inner = heads * head_dim
    keep = kept_channels(inner, ratio, 1, unit=head_dim) // head_dim
    if keep >= heads:
        return
    group = graph.get_pruning_group(block.proj, tp.prune_linear_in_channels, list(range(inner)))
    scores = _scores(importance, group).view(heads, head_dim).mean(dim=1)
    drop = sorted(torch.argsort(scores, stable=True)[: heads - keep].tolist())
    idxs = [h * head_dim + d for h in drop for d in range(head_dim)]
    graph.get_pruning_group(block.proj, tp.prune_linear_in_channels, idxs).prune()
    block.num_heads = keep
