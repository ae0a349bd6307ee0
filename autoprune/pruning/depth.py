"""Depth pruning: which blocks of a model can be removed whole, and removing them.

A block is *droppable* when the network stays valid without it: a residual block ``y = x + f(x)`` (possibly
``y = act(x + f(x))``, or several residual branches in a row as in a transformer encoder layer) whose output has
its input's shape. Dropping it replaces the whole module by :class:`torch.nn.Identity`, i.e. by its shortcut;
for a block that adds the skip inside its forward that is exactly what is left of it.

Blocks are found from the model, not from a list of architectures: one forward pass with hooks records each
module's input and output shapes; each module whose (single) tensor input has the shape of its tensor output is
then traced on its own with :mod:`torch.fx` (every child module a leaf), and it is a residual block when its graph
adds its own input to something computed from that input by a child module. That finds torchvision's ResNet
``BasicBlock`` / ``Bottleneck`` without downsampling, MobileNetV2/V3 and EfficientNet inverted residuals with a
skip, ConvNeXt ``CNBlock``, RegNet ``ResBottleneckBlock`` without projection, ViT ``EncoderBlock`` and Swin
blocks; a module fx cannot trace is simply not droppable (conservative).
"""

from __future__ import annotations

import operator
from collections.abc import Iterable

import torch
import torch.fx
from torch import nn

from autoprune.errors import UserError
from autoprune.plan import inside

_ADDS = {operator.add, operator.iadd, torch.add}


class _LeafTracer(torch.fx.Tracer):
    """Traces one module with every child module opaque: the graph is the module's own forward only."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return True


def _io_shapes(model: nn.Module, example_inputs: torch.Tensor) -> dict[str, tuple]:
    """{module name: (input shape, output shape)} of the modules called exactly once with one tensor in and out."""
    seen: dict[str, list] = {}

    def record(name):
        def hook(module, inputs, output):
            tensors = [a for a in inputs if isinstance(a, torch.Tensor)]
            seen.setdefault(name, []).append(
                (tuple(tensors[0].shape) if len(tensors) == 1 and len(inputs) == 1 else None,
                 tuple(output.shape) if isinstance(output, torch.Tensor) else None))

        return hook

    hooks = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            model(example_inputs)
    finally:
        for h in hooks:
            h.remove()
    return {n: calls[0] for n, calls in seen.items() if len(calls) == 1 and None not in calls[0]}


def _depends_on(node: torch.fx.Node, source: torch.fx.Node) -> tuple[bool, bool]:
    """(whether ``node`` is computed from ``source``, whether a child module lies on such a path)."""
    stack, visited = [(node, False)], set()
    found = through_module = False
    while stack:
        current, via = stack.pop()
        via = via or current.op == "call_module"
        if current is source:
            found, through_module = True, through_module or via
            continue
        if (current, via) in visited:
            continue
        visited.add((current, via))
        stack.extend((arg, via) for arg in current.all_input_nodes)
    return found, through_module


def is_residual(module: nn.Module) -> bool:
    """Whether ``module``'s forward adds its input to a function of it computed by a child module."""
    if not list(module.children()):
        return False
    try:
        graph = _LeafTracer().trace(module)
    except Exception:  # noqa: BLE001 - untraceable forward (data-dependent control flow): not droppable
        return False
    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        return False
    source = inputs[0]
    for node in graph.nodes:
        is_add = (node.op == "call_function" and node.target in _ADDS) or (
            node.op == "call_method" and node.target in ("add", "add_"))
        if not is_add or len(node.args) < 2:
            continue
        left, right = node.args[0], node.args[1]
        if not (isinstance(left, torch.fx.Node) and isinstance(right, torch.fx.Node)):
            continue
        for skip, branch in ((left, right), (right, left)):
            if skip is source and _depends_on(branch, source) == (True, True):
                return True
    return False


def droppable_blocks(model: nn.Module, example_inputs: torch.Tensor) -> list[str]:
    """Names of the residual blocks of ``model`` that can be replaced by identity, in ``named_modules`` order.

    A block nested in another droppable block is listed too (dropping the outer one removes both).
    """
    shapes = _io_shapes(model.eval(), example_inputs)
    modules = dict(model.named_modules())
    return [name for name in modules if name in shapes and shapes[name][0] == shapes[name][1]
            and is_residual(modules[name])]


def outermost(blocks: Iterable[str]) -> list[str]:
    """``blocks`` without those inside another of them, sorted."""
    chosen = sorted(set(blocks))
    return [b for b in chosen if not inside(b, [o for o in chosen if o != b])]


def drop_blocks(model: nn.Module, blocks: Iterable[str]) -> nn.Module:
    """Replace each named block of ``model`` (in place) by ``nn.Identity`` and return the model.

    The caller checks that the blocks are droppable (see :meth:`SearchSpace.validate_plan`); a name that is not a
    submodule is a user error naming the fix.
    """
    for name in outermost(blocks):
        parent_name, _, child = name.rpartition(".")
        try:
            parent = model.get_submodule(parent_name)
            getattr(parent, child)
        except AttributeError as err:
            raise UserError(f"plan drops block {name!r}, which {type(model).__name__} does not have; "
                            "run `autoprune space --model M` to list its droppable blocks") from err
        setattr(parent, child, nn.Identity())  # also for Sequential/ModuleList children ("0", "1", ...)
    return model
