"""Blocks whose channels Torch-Pruning cannot follow, kept whole while the layers around them are pruned.

Torch-Pruning maps channel indices through the autograd graph with rules written for NCHW tensors and
modules that own their weights. Some torchvision blocks break those rules:

- ShuffleNetV2's channel shuffle is a view/transpose/view, a fixed permutation of the channels that its
  reshape rule mistakes for a flatten (it fails with ZeroDivisionError);
- Swin's window attention calls ``F.linear`` on its ``qkv``/``proj`` weights and indexes a relative-position
  table by head; its patch merging slices an NHWC tensor, whose dimension 1 (height) the slice rule takes for
  channels. Index lists then grow without bound (Swin-T never finished building its groups);
- MaxViT's attention indexes a relative-position table by head and ties its head width to its input width.

Each such block becomes a leaf of the dependency graph: while Torch-Pruning traces, the block runs as one
autograd node (:func:`traced_as_leaves`), so its internals are never seen, and a customized pruner that cuts
nothing, with separate input and output handlers, stops every group at it. A group that reaches one is not
offered for pruning: those channels stay whole. Everything else in the model (Swin's and MaxViT's MLP widths, MaxViT's
MBConv expansions, ShuffleNet's branch widths) is pruned as usual.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import torch
import torch_pruning as tp
from torch import nn
from torchvision.models import maxvit, shufflenetv2, swin_transformer


class ChannelShuffle(nn.Module):
    """ShuffleNetV2's channel shuffle as a module: output channel ``j`` is input channel ``perm[j]``.

    An index on the channel dimension computes the same tensor as torchvision's view/transpose/view, without
    the reshapes Torch-Pruning misreads. ``channels`` is the width the shuffle was built for.
    """

    def __init__(self, channels: int, groups: int = 2) -> None:
        super().__init__()
        per_group = channels // groups
        perm = torch.arange(channels).view(groups, per_group).t().reshape(-1)
        self.register_buffer("perm", perm, persistent=False)  # derived: the state dict stays torchvision's

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(1, self.perm)


class ShuffleUnit(nn.Module):
    """torchvision's ShuffleNetV2 ``InvertedResidual`` with its shuffle as a :class:`ChannelShuffle` child;
    same submodules and state-dict keys, same outputs."""

    def __init__(self, unit: shufflenetv2.InvertedResidual) -> None:
        super().__init__()
        self.stride = unit.stride
        self.branch1 = unit.branch1
        self.branch2 = unit.branch2
        self.shuffle = ChannelShuffle(2 * _last_conv(unit.branch2).out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return self.shuffle(out)


def _last_conv(branch: nn.Module) -> nn.Conv2d:
    return [m for m in branch.modules() if isinstance(m, nn.Conv2d)][-1]


# The block types kept whole; see the module docstring for why each.
OPAQUE_TYPES: tuple[type[nn.Module], ...] = (
    ChannelShuffle,
    swin_transformer.ShiftedWindowAttention,
    swin_transformer.ShiftedWindowAttentionV2,
    swin_transformer.PatchMerging,
    swin_transformer.PatchMergingV2,
    maxvit.RelativePositionalMultiHeadAttention,
)


def needs_conversion(model: nn.Module) -> bool:
    """Whether :func:`convert_shuffles` would change ``model``."""
    return any(isinstance(m, shufflenetv2.InvertedResidual) for m in model.modules())


def convert_shuffles(model: nn.Module) -> nn.Module:
    """Replace every ShuffleNetV2 ``InvertedResidual`` in ``model`` (in place) by an equivalent
    :class:`ShuffleUnit`; return the model."""
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, shufflenetv2.InvertedResidual):
                setattr(parent, child_name, ShuffleUnit(child).train(child.training))
    return model


class _KeptWhole(tp.pruner.BasePruningFunc):
    """Torch-Pruning handler for an opaque block: a graph leaf that cuts nothing. The input and output
    handlers are different functions, so no group runs through the block from one side to the other."""

    TARGET_MODULES = OPAQUE_TYPES

    def prune_out_channels(self, layer: nn.Module, idxs) -> nn.Module:
        return layer

    def prune_in_channels(self, layer: nn.Module, idxs) -> nn.Module:
        return layer

    def get_out_channels(self, layer: nn.Module):
        return None

    def get_in_channels(self, layer: nn.Module):
        return None


def opaque_pruners(model: nn.Module) -> dict[type[nn.Module], tp.pruner.BasePruningFunc]:
    """``customized_pruners`` for Torch-Pruning: one leaf handler for each opaque block type in ``model``."""
    found = {type(m) for m in model.modules() if isinstance(m, OPAQUE_TYPES)}
    handler = _KeptWhole()
    return {kind: handler for kind in found}


def reaches_opaque(group) -> bool:
    """Whether a Torch-Pruning group touches an opaque block (its channels must then stay whole)."""
    return any(isinstance(item.dep.target.module, OPAQUE_TYPES) for item in group)


class _Leaf(torch.autograd.Function):
    """A whole block as one autograd node whose inputs are the block's input and parameters: what
    Torch-Pruning's trace needs to see a leaf. Only traced, never differentiated."""

    @staticmethod
    def forward(ctx, forward, x, *params):
        return forward(x)

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError("an opaque block runs as a leaf only while Torch-Pruning traces the model")


def _leaf_forward(module: nn.Module, forward, x: torch.Tensor) -> torch.Tensor:
    params = [p for p in module.parameters() if p.requires_grad]
    return _Leaf.apply(partial(forward, module), x, *params)


@contextmanager
def traced_as_leaves(model: nn.Module) -> Iterator[None]:
    """Inside the ``with`` statement, every opaque block of ``model`` runs as a single autograd node (same
    output); afterwards each runs its own forward again."""
    blocks = [m for m in model.modules() if isinstance(m, OPAQUE_TYPES)]
    for block in blocks:
        block.forward = partial(_leaf_forward, block, type(block).forward)  # shadows the class's forward
    try:
        yield
    finally:
        for block in blocks:
            del block.forward
