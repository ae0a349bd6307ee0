"""Coupled channel groups of a model, and the search space over their keep ratios.

A *group* is a set of channels that must be removed together: in ResNet-18 the output channels of the stem,
of every ``layerN.*.conv2`` and of the downsample convolution of a stage all meet in residual additions, so
they form one group; ``layer1.0.conv1``'s filters form a group of their own (with ``layer1.0.bn1`` and the
input channels of ``layer1.0.conv2``). Torch-Pruning's dependency graph finds the groups; a group is named
after its first pruned layer in ``model.named_modules()`` order, which is stable for an architecture.

Each conv/linear *layer* records which group sets its output channels and which its input channels, so the
cost model can derive every pruned layer's shape from a plan by arithmetic alone, without building it.

The space also lists the model's *droppable blocks* (residual blocks a plan may remove whole, found by
:func:`autoprune.pruning.depth.droppable_blocks`) with the groups that live only inside each: a plan that drops a
block no longer prunes, searches or prices those groups, and the block's layers leave the cost model's sum.
"""

from __future__ import annotations

import copy
import math
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch_pruning as tp
import yaml
from torch import nn

from autoprune.errors import UserError
from autoprune.models import classifier
from autoprune.plan import PruningPlan, inside, kept_channels
from autoprune.pruning.attention import HeadAttention, convert_attention
from autoprune.pruning.depth import droppable_blocks
from autoprune.pruning.opaque import (
    convert_shuffles,
    needs_conversion,
    opaque_pruners,
    reaches_opaque,
    traced_as_leaves,
)

PRUNABLE_TYPES = (nn.Conv2d, nn.Linear)
# Pooling layers are not pruned, but their cost follows the channels of the group that feeds them, so the
# cost model prices them too (LayerSpec with op "maxpool"/"avgpool", channel-wise like a depthwise conv).
POOL_OPS = ("maxpool", "avgpool")
POOL_TYPES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)


@dataclass(frozen=True)
class GroupSpec:
    """One coupled channel group and the keep ratios the search may give it."""

    name: str
    channels: int
    min_keep: float = 0.25
    max_keep: float = 1.0
    step: float = 0.05
    layers: tuple[str, ...] = ()  # layers whose output channels this group prunes
    unit: int = 1  # channels removed together: the head size for an attention-head group, else 1
    interleave: int = 1  # conv groups of a grouped conv in the group: each keeps the same channel count


@dataclass(frozen=True)
class BlockSpec:
    """A residual block a plan may drop (replace by its shortcut), and the groups that exist only inside it."""

    name: str  # module path, e.g. "layer3.1"
    groups: tuple[str, ...] = ()  # groups all of whose layers lie inside the block: gone when it is dropped


@dataclass(frozen=True)
class LayerSpec:
    """A conv or linear layer of the dense model, with the groups that shape it.

    For linear layers ``in_h`` is the number of rows per sample (tokens) and ``in_w`` is 1. ``out_unit`` /
    ``in_unit`` are the block sizes of the groups (attention heads), and ``out_factor`` how many times the
    output group repeats in the output (3 for a fused q/k/v projection), ``in_factor`` how many input features
    each channel of the input group feeds (the spatial positions a flatten unrolls: 36 for AlexNet's first
    classifier layer). ``in_groups`` lists every group concatenated into the input (GoogLeNet, DenseNet);
    ``in_group`` is the first of them.
    """

    name: str
    op: str  # "conv" | "linear"
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    padding: int
    groups: int
    in_h: int
    in_w: int
    out_group: str | None
    in_group: str | None
    out_unit: int = 1
    in_unit: int = 1
    out_factor: int = 1
    in_groups: tuple[str, ...] = ()
    out_interleave: int = 1
    in_interleave: int = 1
    in_factor: int = 1

    @property
    def depthwise(self) -> bool:
        """Channel-wise: a depthwise conv, or a pooling layer (its channels are its input's)."""
        return self.op in POOL_OPS or (self.op == "conv" and self.groups > 1 and self.groups == self.in_channels)

    def pruned_shape(self, plan: PruningPlan, group_channels: dict[str, int]) -> tuple[int, int, int]:
        """(in_channels, out_channels, groups) after ``plan``."""
        cout = self.out_factor * _kept(
            self.out_group, self.out_channels // self.out_factor, plan, group_channels, self.out_unit,
            self.out_interleave,
        )
        if len(self.in_groups) > 1:  # a concat: each part shrinks by its own group
            cin = self.in_channels - sum(
                group_channels[g] - kept_channels(group_channels[g], plan.keep_ratios.get(g, 1.0), plan.alignment)
                for g in self.in_groups
            )
        else:
            cin = self.in_factor * _kept(
                self.in_group, self.in_channels // self.in_factor, plan, group_channels, self.in_unit,
                self.in_interleave,
            )
        if self.depthwise:
            return cout, cout, cout
        groups = self.groups if self.groups == 1 else math.gcd(self.groups, math.gcd(cin, cout))
        return cin, cout, groups


def _kept(
    group: str | None, channels: int, plan: PruningPlan, group_channels: dict[str, int], unit: int = 1,
    interleave: int = 1,
) -> int:
    if group is None:
        return channels
    return kept_channels(group_channels[group], plan.keep_ratios.get(group, 1.0), plan.alignment, unit, interleave)


@dataclass(frozen=True)
class SearchSpace:
    """The groups a search may prune, and the layers they shape, for one model at one input shape."""

    model: str
    input_shape: tuple[int, int, int, int]
    alignment: int
    groups: tuple[GroupSpec, ...]
    layers: tuple[LayerSpec, ...]
    pools: tuple[LayerSpec, ...] = ()  # priced by the cost model, never pruned
    blocks: tuple[BlockSpec, ...] = ()  # droppable residual blocks, in model order (empty: depth not searched)

    @property
    def block_names(self) -> list[str]:
        return [b.name for b in self.blocks]

    def dropped_groups(self, plan: PruningPlan) -> set[str]:
        """Groups that ``plan``'s dropped blocks take with them (their keep ratios are ignored)."""
        dropped = set(plan.drop_blocks)
        return {g for b in self.blocks if b.name in dropped for g in b.groups}

    def is_dropped(self, layer: str, plan: PruningPlan) -> bool:
        """Whether ``plan`` removes ``layer`` (a conv/linear/pool of this space) with a dropped block."""
        return bool(plan.drop_blocks) and inside(layer, plan.drop_blocks)

    @property
    def cost_layers(self) -> tuple[LayerSpec, ...]:
        """Every layer the cost model prices: the conv/linear layers, then the pooling layers."""
        return self.layers + self.pools

    @property
    def group_names(self) -> list[str]:
        return [g.name for g in self.groups]

    def group_channels(self) -> dict[str, int]:
        return {g.name: g.channels for g in self.groups}

    def validate_plan(self, plan: PruningPlan) -> None:
        known = set(self.group_names)
        for name in plan.keep_ratios:
            if name not in known:
                raise UserError(
                    f"plan names group {name!r}, which {self.model} does not have; "
                    f"run `autoprune space --model {self.model}` to list its groups"
                )
        droppable = set(self.block_names)
        for name in plan.drop_blocks:
            if name not in droppable:
                listed = ", ".join(self.block_names[:6]) + (", ..." if len(self.blocks) > 6 else "")
                raise UserError(
                    f"plan drops block {name!r}, which is not a droppable block of {self.model} "
                    f"({'droppable: ' + listed if droppable else 'it has none in this space'}); "
                    f"run `autoprune space --model {self.model}` to list them"
                )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "input_shape": list(self.input_shape),
            "alignment": self.alignment,
            "groups": [{**asdict(g), "layers": list(g.layers)} for g in self.groups],
            "blocks": [{"name": b.name, "groups": list(b.groups)} for b in self.blocks],
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def with_overrides(self, path: Path) -> "SearchSpace":
        """This space with per-group ranges (and alignment) taken from a reviewed space file."""
        data = _load_space_file(path)
        if data.get("model") not in (None, self.model):
            raise UserError(f"space file {str(path)!r} is for model {data['model']!r}, not {self.model!r}")
        by_name = {g.name: g for g in self.groups}
        overrides: dict[str, GroupSpec] = {}
        for i, entry in enumerate(data.get("groups") or []):
            where = f"space file {str(path)!r}, groups[{i}]"
            if not isinstance(entry, dict) or "name" not in entry:
                raise UserError(f"{where}: each group needs a 'name'")
            name = entry["name"]
            if name not in by_name:
                raise UserError(f"{where}: group {name!r} is not a prunable group of {self.model}")
            known_layers = {layer.name for layer in self.layers}
            for layer in entry.get("layers") or []:
                if layer not in known_layers:
                    raise UserError(f"{where}: layer {layer!r} is not a conv/linear layer of {self.model}")
            lo = float(entry.get("min_keep", by_name[name].min_keep))
            hi = float(entry.get("max_keep", by_name[name].max_keep))
            step = float(entry.get("step", by_name[name].step))
            if not (0.0 < lo <= hi <= 1.0) or step <= 0:
                raise UserError(
                    f"{where}: keep range [{lo}, {hi}] step {step} is invalid; keep ratios lie in (0, 1] "
                    "(pruning ratios in [0, 1)) with min_keep <= max_keep and step > 0"
                )
            overrides[name] = GroupSpec(
                name, by_name[name].channels, lo, hi, step, by_name[name].layers, by_name[name].unit,
                by_name[name].interleave,
            )
        groups = tuple(overrides.get(g.name, g) for g in self.groups)
        alignment = int(data.get("alignment", self.alignment))
        return SearchSpace(self.model, self.input_shape, alignment, groups, self.layers, self.pools,
                           self._blocks_override(data, path))

    def _blocks_override(self, data: dict, path: Path) -> tuple[BlockSpec, ...]:
        """The droppable blocks a space file keeps: ``depth: false`` keeps none; a ``blocks`` list (names, or
        mappings with a ``name`` as ``autoprune space`` writes them) keeps those; without either, all."""
        depth = data.get("depth", True)
        if not isinstance(depth, bool):
            raise UserError(f"space file {str(path)!r}: 'depth' must be true or false, got {depth!r}")
        if not depth:
            return ()
        if data.get("blocks") is None:
            return self.blocks
        if not isinstance(data["blocks"], list):
            raise UserError(f"space file {str(path)!r}: 'blocks' must be a list of droppable block names")
        by_name = {b.name: b for b in self.blocks}
        kept = set()
        for i, entry in enumerate(data["blocks"]):
            name = entry.get("name") if isinstance(entry, dict) else entry
            if name not in by_name:
                raise UserError(f"space file {str(path)!r}, blocks[{i}]: {name!r} is not a droppable block of "
                                f"{self.model}; run `autoprune space --model {self.model}` to list them")
            kept.add(name)
        return tuple(b for b in self.blocks if b.name in kept)


def _load_space_file(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"space file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"space file {str(path)!r} is not valid YAML: {str(err).splitlines()[0]}") from err
    if not isinstance(data, dict):
        raise UserError(f"space file {str(path)!r} must be a mapping with 'model' and 'groups'")
    return data


def dependency_groups(model: nn.Module, example_inputs: torch.Tensor):
    """Torch-Pruning's dependency graph and a generator of its prunable groups (classifier output excluded,
    and every group that reaches a block :mod:`autoprune.pruning.opaque` keeps whole).

    The generator is lazy: pruning one group before asking for the next keeps concat/split offsets valid.
    """
    name = type(model).__name__
    try:
        with traced_as_leaves(model):
            graph = tp.DependencyGraph().build_dependency(
                model, example_inputs=example_inputs, customized_pruners=opaque_pruners(model) or None
            )
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure while tracing is the model's, reported as such
        frame = traceback.extract_tb(err.__traceback__)[-1]
        raise UserError(
            f"Torch-Pruning cannot build the dependency graph of {name}: tracing it on an input of shape "
            f"{tuple(example_inputs.shape)} fails in {frame.name}() ({err.__class__.__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'no message'}); check --input-shape (`autoprune "
            "models` lists each model's smallest input), or make the forward run on that input"
        ) from err
    _check_traced(model, graph, name)
    groups = graph.get_all_groups(ignored_layers=[classifier(model)], root_module_types=PRUNABLE_TYPES)
    return graph, (group for group in groups if not reaches_opaque(group))


def _check_traced(model: nn.Module, graph, name: str) -> None:
    """Torch-Pruning follows autograd back from the output: an output without a gradient path (argmax,
    ``.detach()``, a NumPy hop at the end) gives an empty graph, and every plan would silently do nothing."""
    layers = [n for n, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)]
    traced = [m for m in graph.module2node if isinstance(m, PRUNABLE_TYPES)]
    if layers and not traced:
        raise UserError(
            f"Torch-Pruning cannot build the dependency graph of {name}: none of its {len(layers)} conv/linear "
            f"layers (first {layers[0]!r}) is reachable by autograd from the output; the forward ends in a "
            "non-differentiable op (argmax, .detach(), .item(), a NumPy round trip) - return the logits"
        )


def conv_interleave(group) -> int:
    """The number of conv groups of a grouped (not depthwise) convolution in ``group``, else 1."""
    counts = [
        item.dep.target.module.groups
        for item in group
        if isinstance(item.dep.target.module, nn.Conv2d)
        and 1 < item.dep.target.module.groups < item.dep.target.module.in_channels
    ]
    return max(counts, default=1)


def group_layers(graph, group, names: dict[nn.Module, str]) -> tuple[list[str], list[str]]:
    """(layers pruned on output channels, layers pruned on input channels) in a group, in model order."""
    outs, ins = [], []
    for item in group:
        module = item.dep.target.module
        if not isinstance(module, PRUNABLE_TYPES) or module not in names:
            continue
        if graph.is_out_channel_pruning_fn(item.dep.handler):
            outs.append(names[module])
        elif graph.is_in_channel_pruning_fn(item.dep.handler):
            ins.append(names[module])
    order = {n: i for i, n in enumerate(names.values())}
    return sorted(set(outs), key=order.get), sorted(set(ins), key=order.get)


def generate_space(
    model: nn.Module,
    model_name: str,
    input_shape: tuple[int, int, int, int],
    alignment: int = 1,
    min_keep: float = 0.25,
    step: float = 0.05,
) -> SearchSpace:
    """Discover the coupled groups of ``model`` and the layers they shape, at ``input_shape`` (N, C, H, W).

    Models with ``nn.MultiheadAttention`` are analysed on a copy converted to :class:`HeadAttention` (the form
    :func:`apply_plan` prunes), so attention groups are named after their ``qkv`` layer and count heads;
    ShuffleNetV2 on a copy with its shuffles as modules (:func:`~autoprune.pruning.opaque.convert_shuffles`).
    """
    if any(isinstance(m, nn.MultiheadAttention) for m in model.modules()) or needs_conversion(model):
        model = convert_shuffles(convert_attention(copy.deepcopy(model)))
    model = model.eval()
    example = torch.zeros(input_shape)
    names = {m: n for n, m in model.named_modules()}
    attention = {m.qkv: m for m in model.modules() if isinstance(m, HeadAttention)}
    graph, lazy_groups = dependency_groups(model, example)
    groups: list[GroupSpec] = []
    out_group: dict[str, tuple[str, int, int]] = {}
    in_group: dict[str, list[tuple[str, int, int]]] = {}
    for group in lazy_groups:
        outs, ins = group_layers(graph, group, names)
        if not outs:
            continue
        name = outs[0]
        root = group[0].dep.target.module
        if root in attention and graph.is_out_channel_pruning_fn(group[0].dep.handler):
            block = attention[root]
            channels, unit = block.proj.in_features, block.head_dim
        else:
            channels, unit = len(group[0].idxs), 1
        interleave = conv_interleave(group)
        groups.append(GroupSpec(name, channels, min_keep, 1.0, step, tuple(outs), unit, interleave))
        out_group.update({layer: (name, unit, interleave) for layer in outs})
        for layer in ins:
            in_group.setdefault(layer, []).append((name, unit, interleave))
    order = {n: i for i, n in enumerate(names.values())}
    groups.sort(key=lambda g: order[g.name])
    qkv_names = {names[m] for m in attention}
    channels = {g.name: g.channels for g in groups}
    layers, pools = _trace_layers(model, example, out_group, in_group, qkv_names, channels)
    blocks = _blocks(droppable_blocks(model, example), groups, layers)
    return SearchSpace(model_name, tuple(input_shape), alignment, tuple(groups), tuple(layers), tuple(pools),
                       blocks)


def _blocks(names: list[str], groups: list[GroupSpec], layers: list[LayerSpec]) -> tuple[BlockSpec, ...]:
    """Each droppable block with the groups all of whose layers (output and input side) lie inside it."""
    members: dict[str, set[str]] = {g.name: set(g.layers) for g in groups}
    for layer in layers:
        for g in {layer.out_group, *layer.in_groups} - {None}:
            members.setdefault(g, set()).add(layer.name)
    return tuple(
        BlockSpec(name, tuple(g.name for g in groups if all(inside(layer, [name]) for layer in members[g.name])))
        for name in names
    )


def _trace_layers(model, example, out_group, in_group, qkv_names=frozenset(), channels=None
                  ) -> tuple[list[LayerSpec], list[LayerSpec]]:
    """(conv/linear layers, pooling layers) of ``model`` with their input shapes and groups."""
    shapes: dict[str, tuple[int, ...]] = {}
    calls: list[str] = []  # execution order, for the pooling layers' producers

    def record(name):
        def hook(module, inputs, output):  # must return None, or it would replace the output
            if name not in shapes:
                shapes[name] = tuple(inputs[0].shape)
                calls.append(name)

        return hook

    hooks = [
        module.register_forward_hook(record(name))
        for name, module in model.named_modules()
        if isinstance(module, PRUNABLE_TYPES + POOL_TYPES)
    ]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    layers = []
    modules = dict(model.named_modules())
    for name, module in modules.items():
        if name not in shapes or isinstance(module, POOL_TYPES):
            continue
        shape = shapes[name]
        out_name, out_unit, out_inter = out_group.get(name, (None, 1, 1))
        ins = in_group.get(name, [])
        in_name, in_unit, in_inter = ins[0] if ins else (None, 1, 1)
        links = dict(
            out_group=out_name, in_group=in_name, out_unit=out_unit, in_unit=in_unit, out_interleave=out_inter,
            in_interleave=in_inter, in_groups=tuple(g for g, _, _ in ins),
        )
        if isinstance(module, nn.Conv2d):
            layers.append(
                LayerSpec(
                    name, "conv", module.in_channels, module.out_channels, module.kernel_size[0], module.stride[0],
                    _padding(module), module.groups, shape[2], shape[3], **links,
                )
            )
        else:
            rows = math.prod(shape[1:-1]) if len(shape) > 2 else 1
            factor = 3 if name in qkv_names else 1  # fused q, k, v: the head group appears three times
            layers.append(
                LayerSpec(
                    name, "linear", module.in_features, module.out_features, 1, 1, 0, 1, rows, 1, **links,
                    out_factor=factor, in_factor=_flatten_factor(module.in_features, links["in_groups"], channels),
                )
            )
    return layers, _pool_layers(modules, shapes, calls, {layer.name: layer for layer in layers})


def _flatten_factor(features: int, in_groups: tuple[str, ...], channels: dict[str, int] | None) -> int:
    """How many input features of a linear layer each channel of its one input group feeds: the spatial
    positions a flatten unrolls (VGG: 7 x 7), else 1."""
    if len(in_groups) != 1 or not channels:
        return 1
    group = channels[in_groups[0]]
    return features // group if features > group and features % group == 0 else 1


def _pool_layers(modules, shapes, calls, by_name: dict[str, LayerSpec]) -> list[LayerSpec]:
    """Pooling layers on 4-D inputs, each tied to the group of the conv that last produced its channel count
    before it ran (in ResNet the stem for the max-pool, the last stage for the global average pool). Where no
    such conv exists (a pool after a concat) the pool is priced at its dense channel count."""
    pools = []
    for k, name in enumerate(calls):
        module, shape = modules[name], shapes[name]
        if not isinstance(module, POOL_TYPES) or len(shape) != 4:
            continue
        channels, h, w = shape[1], shape[2], shape[3]
        if isinstance(module, nn.AdaptiveAvgPool2d):
            size = module.output_size if isinstance(module.output_size, tuple) else (module.output_size,) * 2
            if tuple(size) != (1, 1) or h != w:
                continue  # only global pooling maps onto a fixed kernel; the calibration covers the rest
            op, kernel, stride, padding = "avgpool", h, 1, 0
        else:
            op = "maxpool" if isinstance(module, nn.MaxPool2d) else "avgpool"
            kernel, stride, padding = (_first(module.kernel_size), _first(module.stride or module.kernel_size),
                                       _first(module.padding))
        producer = next((by_name[c] for c in reversed(calls[:k]) if c in by_name
                         and by_name[c].op == "conv" and by_name[c].out_channels == channels), None)
        group = producer.out_group if producer is not None else None
        unit = producer.out_unit if producer is not None else 1
        pools.append(LayerSpec(name, op, channels, channels, kernel, stride, padding, channels, h, w,
                               out_group=group, in_group=group, out_unit=unit, in_unit=unit))
    return pools


def _first(value) -> int:
    return int(value[0] if isinstance(value, (tuple, list)) else value)


def _padding(conv: nn.Conv2d) -> int:
    if isinstance(conv.padding, str):
        return conv.kernel_size[0] // 2 if conv.padding == "same" else 0
    return int(conv.padding[0])
