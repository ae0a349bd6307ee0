"""Apply a plan's unstructured and N:M part: zero weights by magnitude, permanently, and report exactly.

No ``torch.nn.utils.prune`` re-parametrisation is used: weights are multiplied by their mask in place, so
the model has no ``weight_orig``/``weight_mask`` tensors and no hooks, and exports to ONNX as is. The masks
are returned so fine-tuning (see :mod:`autoprune.pruning.schedules`) can re-apply them after each step.

N:M groups run along the input channels (the reduction dimension of the GEMM a conv or linear layer
becomes), at each kernel position for convolutions, as sparse tensor cores expect.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from autoprune.errors import UserError, unknown_choice
from autoprune.models import classifier
from autoprune.plan import ALL_LAYERS, PruningPlan, parse_nm

SPARSE_TYPES = (nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class LayerSparsity:
    """Zeros in one layer's weight tensor, counted after pruning. ``nm`` is the pattern it was pruned to."""

    name: str
    numel: int
    zeros: int
    nm: str | None = None

    @property
    def sparsity(self) -> float:
        """Fraction of the weight tensor that is exactly zero."""
        return self.zeros / self.numel if self.numel else 0.0


@dataclass(frozen=True)
class SparsityReport:
    """Per-layer achieved sparsity of every conv/linear weight (classifier included, never pruned)."""

    layers: tuple[LayerSparsity, ...]

    @property
    def zeros(self) -> int:
        return sum(layer.zeros for layer in self.layers)

    @property
    def numel(self) -> int:
        return sum(layer.numel for layer in self.layers)

    @property
    def sparsity(self) -> float:
        """Fraction of all conv/linear weights that are exactly zero."""
        return self.zeros / self.numel if self.numel else 0.0

    def layer(self, name: str) -> LayerSparsity:
        return next(layer for layer in self.layers if layer.name == name)

    def to_dict(self) -> dict:
        return {
            "sparsity": self.sparsity,
            "zeros": self.zeros,
            "weights": self.numel,
            "layers": {
                layer.name: {"sparsity": layer.sparsity, "zeros": layer.zeros, "weights": layer.numel,
                             **({"nm": layer.nm} if layer.nm else {})}
                for layer in self.layers
            },
        }


@dataclass(frozen=True, eq=False)
class Masks:
    """Boolean keep-masks by layer name; ``apply`` re-zeroes the pruned weights in place."""

    masks: Mapping[str, torch.Tensor] = field(default_factory=dict)
    patterns: Mapping[str, str] = field(default_factory=dict)  # layer -> "N:M" it must satisfy

    def apply(self, model: nn.Module) -> None:
        modules = dict(model.named_modules())
        with torch.no_grad():
            for name, mask in self.masks.items():
                modules[name].weight.mul_(mask)

    def __bool__(self) -> bool:
        return bool(self.masks)


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Conv/linear layers whose weights may be zeroed: all but the classifier, in model order."""
    head = classifier(model)
    return {n: m for n, m in model.named_modules() if isinstance(m, SPARSE_TYPES) and m is not head}


def sparsity_masks(model: nn.Module, plan: PruningPlan) -> Masks:
    """Keep-masks for ``plan``'s global sparsity, then per-layer sparsity, then N:M patterns.

    Each step ranks weights by magnitude, counting weights already masked as zero, and zeroes exactly
    ``round(sparsity * count)`` of them (ties broken by position), so the result is deterministic.
    """
    layers = prunable_layers(model)
    for name in [*plan.layer_sparsity, *plan.nm]:
        if name != ALL_LAYERS and name not in layers:
            raise unknown_choice("layer in plan", name, layers, "name a conv/linear layer other than the classifier")
    if not plan.is_sparse:
        return Masks()
    masks = {name: torch.ones_like(m.weight, dtype=torch.bool) for name, m in layers.items()}
    if plan.global_sparsity > 0:
        _global_magnitude(layers, masks, plan.global_sparsity)
    for name, sparsity in plan.layer_sparsity.items():
        masks[name] &= _local_magnitude(layers[name].weight * masks[name], sparsity)
    patterns = _nm_targets(layers, plan.nm)
    for name, pattern in patterns.items():
        n, m = parse_nm(pattern)
        masks[name] &= nm_mask(layers[name].weight * masks[name], n, m)
    return Masks(masks, patterns)


def apply_sparsity(model: nn.Module, plan: PruningPlan) -> tuple[Masks, SparsityReport]:
    """Zero ``model``'s weights in place by ``plan`` (permanently) and report the achieved sparsity."""
    make_permanent(model)
    masks = sparsity_masks(model, plan)
    masks.apply(model)
    report = sparsity_report(model, masks.patterns)
    for layer in report.layers:
        if layer.nm and not nm_holds(dict(model.named_modules())[layer.name].weight, *parse_nm(layer.nm)):
            raise RuntimeError(f"N:M pattern {layer.nm} does not hold in {layer.name} after pruning")
    return masks, report


def sparsity_report(model: nn.Module, patterns: Mapping[str, str] | None = None) -> SparsityReport:
    """Count exact zeros in every conv/linear weight of ``model``."""
    patterns = patterns or {}
    rows = []
    for name, module in model.named_modules():
        if isinstance(module, SPARSE_TYPES):
            w = module.weight
            rows.append(LayerSparsity(name, w.numel(), int((w == 0).sum()), patterns.get(name)))
    return SparsityReport(tuple(rows))


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold any ``torch.nn.utils.prune`` re-parametrisation into plain weights (no masks or hooks remain)."""
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, torch_prune.BasePruningMethod):
                torch_prune.remove(module, hook._tensor_name)
    return model


def _global_magnitude(layers: dict[str, nn.Module], masks: dict[str, torch.Tensor], sparsity: float) -> None:
    flat = torch.cat([m.weight.detach().abs().flatten() for m in layers.values()])
    count = int(round(sparsity * flat.numel()))
    drop = torch.zeros(flat.numel(), dtype=torch.bool)
    drop[torch.argsort(flat, stable=True)[:count]] = True
    offset = 0
    for name, module in layers.items():
        n = module.weight.numel()
        masks[name] &= ~drop[offset : offset + n].view_as(module.weight)
        offset += n


def _local_magnitude(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    flat = weight.detach().abs().flatten()
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    keep[torch.argsort(flat, stable=True)[: int(round(sparsity * flat.numel()))]] = False
    return keep.view_as(weight)


def _nm_targets(layers: dict[str, nn.Module], nm: Mapping[str, str]) -> dict[str, str]:
    """Layer -> pattern; ``"*"`` covers every layer whose input channels divide into groups of M."""
    targets: dict[str, str] = {}
    if ALL_LAYERS in nm:
        m = parse_nm(nm[ALL_LAYERS])[1]
        targets = {name: nm[ALL_LAYERS] for name, module in layers.items() if _nm_eligible(module, m)}
    for name, pattern in nm.items():
        if name == ALL_LAYERS:
            continue
        if not _nm_eligible(layers[name], parse_nm(pattern)[1]):
            raise UserError(
                f"plan nm entry {name!r}: {pattern} needs the layer's input channels per group divisible by "
                f"{parse_nm(pattern)[1]} (it has {layers[name].weight.shape[1]}); use another pattern or layer"
            )
        targets[name] = pattern
    return targets


def _nm_eligible(module: nn.Module, m: int) -> bool:
    return module.weight.shape[1] % m == 0


def _to_rows(weight: torch.Tensor, m: int) -> torch.Tensor:
    """View ``weight`` as rows of M consecutive input-channel weights (conv: per kernel position)."""
    if weight.dim() == 4:
        weight = weight.permute(0, 2, 3, 1)
    return weight.reshape(-1, m)


def _from_rows(rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if like.dim() == 4:
        out, cin, kh, kw = like.shape
        return rows.reshape(out, kh, kw, cin).permute(0, 3, 1, 2)
    return rows.reshape(like.shape)


def nm_mask(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep-mask with the N largest-magnitude weights of every M consecutive input-channel weights."""
    rows = _to_rows(weight.detach().abs(), m)
    order = torch.argsort(rows, dim=1, descending=True, stable=True)
    keep = torch.zeros_like(rows, dtype=torch.bool)
    keep.scatter_(1, order[:, :n], True)
    return _from_rows(keep, weight)


def nm_holds(weight: torch.Tensor, n: int, m: int) -> bool:
    """Whether every M consecutive input-channel weights hold at most N nonzeros."""
    if weight.shape[1] % m:
        return False
    return bool(((_to_rows(weight.detach(), m) != 0).sum(dim=1) <= n).all())
