"""The pruning plan: the one language the search, the evaluator and the cost model speak.

A plan has four independent parts, applied in this order:

- depth: ``drop_blocks`` names residual blocks removed whole (each becomes its shortcut, an identity; see
  :mod:`autoprune.pruning.depth`); the dependency graph of the shallower model is then rebuilt for the rest;
- structured: ``keep_ratios`` per coupled channel group (conv filters, linear neurons, attention heads, MLP
  hidden units), rounded to ``alignment``; tensors become physically smaller;
- unstructured: ``layer_sparsity`` (a fraction of weights zeroed per layer, each layer ranked on its own:
  *local*) and/or ``global_sparsity`` (one magnitude threshold over every prunable layer: *global*);
- semi-structured: ``nm`` maps a layer (or ``"*"`` for every eligible layer) to an ``"N:M"`` pattern (at most
  N nonzero weights in every M consecutive input-channel weights, e.g. ``"2:4"``).

The output layer (the classifier) and the input shape are never changed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from autoprune.errors import UserError

PLAN_FIELDS = ("keep_ratios", "importance", "alignment", "layer_sparsity", "global_sparsity", "nm", "precision",
               "drop_blocks")
ALL_LAYERS = "*"
# Numeric precision the pruned model runs at: fp32 as trained, or int8 after static quantization.
PRECISIONS = ("fp32", "int8")


@dataclass(frozen=True)
class PruningPlan:
    """What to remove from a model.

    ``keep_ratios`` maps a coupled channel group (named by its first pruned layer, see
    :mod:`autoprune.pruning.space`) to the fraction of its channels kept, in (0, 1]. Groups not named keep
    every channel. ``alignment`` rounds each group's kept channel count to a multiple (taken from the target's
    profile: 8 for FP16 tensor cores). ``importance`` names the criterion that picks which channels go.

    ``layer_sparsity`` maps a conv/linear layer name to the fraction of its weights zeroed, in [0, 1);
    ``global_sparsity`` in [0, 1) zeroes that fraction of all prunable weights under one magnitude threshold;
    ``nm`` maps a layer name (or ``"*"``) to an ``"N:M"`` pattern. Unstructured and N:M pruning rank weights by
    magnitude. ``precision`` is what the pruned model runs at: ``"fp32"`` or ``"int8"`` (whole model, static
    quantization; not a pruning step, it is applied after fine-tuning).

    ``drop_blocks`` names residual blocks (module paths such as ``"layer3.1"``) replaced by identity before any
    channel is cut; kept sorted and without duplicates. Keep ratios of groups that live only inside a dropped
    block are ignored (the group is gone); the search leaves them out of its plans.
    """

    keep_ratios: Mapping[str, float] = field(default_factory=dict)
    importance: str = "l1"
    alignment: int = 1
    layer_sparsity: Mapping[str, float] = field(default_factory=dict)
    global_sparsity: float = 0.0
    nm: Mapping[str, str] = field(default_factory=dict)
    precision: str = "fp32"
    drop_blocks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name, ratio in self.keep_ratios.items():
            if not (_is_number(ratio) and 0.0 < ratio <= 1.0):
                raise UserError(
                    f"plan entry {name!r}: keep ratio {ratio!r} is outside (0, 1] "
                    "(a pruning ratio must be in [0, 1))"
                )
        if int(self.alignment) < 1:
            raise UserError(f"plan alignment {self.alignment!r} must be a positive integer")
        for name, sparsity in self.layer_sparsity.items():
            _check_sparsity(f"plan layer_sparsity entry {name!r}", sparsity)
        _check_sparsity("plan global_sparsity", self.global_sparsity)
        for name, pattern in self.nm.items():
            parse_nm(pattern, where=f"plan nm entry {name!r}")
        if self.precision not in PRECISIONS:
            raise UserError(f"plan precision {self.precision!r} is not one of {', '.join(PRECISIONS)}; "
                            "use fp32 (as trained) or int8 (static quantization)")
        object.__setattr__(self, "keep_ratios", MappingProxyType(dict(sorted(self.keep_ratios.items()))))
        object.__setattr__(self, "layer_sparsity", MappingProxyType(dict(sorted(self.layer_sparsity.items()))))
        object.__setattr__(self, "nm", MappingProxyType({k: str(v) for k, v in sorted(self.nm.items())}))
        object.__setattr__(self, "global_sparsity", float(self.global_sparsity))
        object.__setattr__(self, "drop_blocks", _block_names(self.drop_blocks))

    @classmethod
    def uniform(cls, groups: Iterable[str], keep_ratio: float, **kwargs: Any) -> "PruningPlan":
        return cls(keep_ratios={g: keep_ratio for g in groups}, **kwargs)

    @property
    def is_structured(self) -> bool:
        return any(r < 1.0 for r in self.keep_ratios.values())

    @property
    def is_sparse(self) -> bool:
        """Whether the plan zeroes weights without removing them (unstructured or N:M)."""
        return bool(self.global_sparsity > 0 or any(s > 0 for s in self.layer_sparsity.values()) or self.nm)

    def kept_channels(self, group: str, channels: int, unit: int = 1, interleave: int = 1) -> int:
        """Channels a group of ``channels`` keeps: the ratio rounded to the alignment, at least one step.

        ``unit`` > 1 means channels go in indivisible blocks (attention heads of ``unit`` channels each).
        """
        ratio = self.keep_ratios.get(group, 1.0)
        return kept_channels(channels, ratio, self.alignment, unit, interleave)

    def to_dict(self) -> dict[str, Any]:
        """The plan as plain data; fields at their defaults beyond the original three are left out so older
        readers (and cache keys) see the same dict for a purely structured plan."""
        data: dict[str, Any] = {
            "keep_ratios": dict(self.keep_ratios), "importance": self.importance, "alignment": self.alignment,
        }
        if self.layer_sparsity:
            data["layer_sparsity"] = dict(self.layer_sparsity)
        if self.global_sparsity:
            data["global_sparsity"] = self.global_sparsity
        if self.nm:
            data["nm"] = dict(self.nm)
        if self.precision != "fp32":  # fp32 plans keep the dict (and cache keys) they had before precision existed
            data["precision"] = self.precision
        if self.drop_blocks:  # likewise width-only plans
            data["drop_blocks"] = list(self.drop_blocks)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PruningPlan":
        if not isinstance(data, Mapping):
            raise UserError("a plan must be a mapping with a 'keep_ratios' mapping of group name -> keep ratio")
        for key in ("keep_ratios", "layer_sparsity", "nm"):
            if not isinstance(data.get(key, {}), Mapping):
                raise UserError(f"plan field {key!r} must be a mapping of name -> value")
        unknown = set(data) - set(PLAN_FIELDS)
        if unknown:
            raise UserError(f"plan has unknown field(s) {sorted(unknown)}; expected {', '.join(PLAN_FIELDS)}")
        try:
            alignment = int(data.get("alignment", 1))
            global_sparsity = float(data.get("global_sparsity", 0.0))
        except (TypeError, ValueError) as err:
            raise UserError(f"plan alignment/global_sparsity must be numbers: {err}") from err
        return cls(
            keep_ratios={str(k): v for k, v in data.get("keep_ratios", {}).items()},
            importance=str(data.get("importance", "l1")),
            alignment=alignment,
            layer_sparsity={str(k): v for k, v in data.get("layer_sparsity", {}).items()},
            global_sparsity=global_sparsity,
            nm={str(k): v for k, v in data.get("nm", {}).items()},
            precision=str(data.get("precision", "fp32")),
            drop_blocks=data.get("drop_blocks", ()),
        )


def inside(layer: str, blocks: Iterable[str]) -> bool:
    """Whether module path ``layer`` is one of ``blocks`` or lies inside one (``layer3.1.conv1`` in ``layer3.1``)."""
    return any(layer == b or layer.startswith(b + ".") for b in blocks)


def _block_names(blocks: Any) -> tuple[str, ...]:
    """``blocks`` as a sorted tuple of distinct module paths; anything else is a user error."""
    if isinstance(blocks, str) or not isinstance(blocks, Iterable):
        raise UserError(f"plan drop_blocks must be a list of block names (e.g. [layer1.1, layer3.1]), got {blocks!r}")
    names = list(blocks)
    for name in names:
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise UserError(f"plan drop_blocks entry {name!r} is not a block name such as 'layer3.1' "
                            "(`autoprune space --model M` lists the droppable blocks)")
    return tuple(sorted(set(names)))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_sparsity(where: str, value: Any) -> None:
    if not (_is_number(value) and 0.0 <= value < 1.0):
        raise UserError(f"{where}: sparsity {value!r} is outside [0, 1) (the fraction of weights set to zero)")


def parse_nm(pattern: Any, where: str = "N:M pattern") -> tuple[int, int]:
    """``"2:4"`` -> (2, 4): at most N nonzero weights in every M consecutive ones; 0 < N < M."""
    text = str(pattern)
    n_text, sep, m_text = text.partition(":")
    if sep and n_text.strip().isdigit() and m_text.strip().isdigit():
        n, m = int(n_text), int(m_text)
        if 0 < n < m:
            return n, m
    raise UserError(f"{where}: {text!r} is not a valid N:M pattern; write it as 'N:M' with 0 < N < M, e.g. '2:4'")


def aligned_channels(channels: int, keep_ratio: float, alignment: int) -> int:
    """Round ``channels * keep_ratio`` to a multiple of ``alignment``; never below one step nor above ``channels``."""
    if keep_ratio >= 1.0 or channels <= alignment:
        return channels
    kept = int(round(channels * keep_ratio / alignment)) * alignment
    return min(channels, max(alignment, kept))


def kept_channels(channels: int, keep_ratio: float, alignment: int, unit: int = 1, interleave: int = 1) -> int:
    """Channels kept of a group whose channels go in blocks of ``unit`` (1: single channels).

    Blocks (attention heads) are counted, not aligned: the head size already fixes the granularity.
    ``interleave`` > 1 is the number of convolution groups of a grouped conv in the group: every conv group
    keeps the same number of channels, so the count is rounded per conv group (alignment is not applied).
    """
    if interleave > 1:
        return aligned_channels(channels // interleave, keep_ratio, 1) * interleave
    if unit <= 1:
        return aligned_channels(channels, keep_ratio, alignment)
    blocks = channels // unit
    return aligned_channels(blocks, keep_ratio, 1) * unit
