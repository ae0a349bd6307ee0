"""The pruning plan: the one language the search, the evaluator and the cost model speak."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from autoprune.errors import UserError


@dataclass(frozen=True)
class PruningPlan:
    """What to remove from a model.

    ``keep_ratios`` maps a coupled channel group (named by its first pruned layer, see
    :mod:`autoprune.pruning.space`) to the fraction of its channels kept, in (0, 1]. Groups not named keep
    every channel. ``alignment`` rounds each group's kept channel count to a multiple (taken from the target's
    profile: 8 for FP16 tensor cores). ``importance`` names the criterion that picks which channels go.
    """

    keep_ratios: Mapping[str, float] = field(default_factory=dict)
    importance: str = "l1"
    alignment: int = 1

    def __post_init__(self) -> None:
        for name, ratio in self.keep_ratios.items():
            if not (isinstance(ratio, (int, float)) and math.isfinite(ratio) and 0.0 < ratio <= 1.0):
                raise UserError(
                    f"plan entry {name!r}: keep ratio {ratio!r} is outside (0, 1] "
                    "(a pruning ratio must be in [0, 1))"
                )
        if int(self.alignment) < 1:
            raise UserError(f"plan alignment {self.alignment!r} must be a positive integer")
        object.__setattr__(self, "keep_ratios", MappingProxyType(dict(sorted(self.keep_ratios.items()))))

    @classmethod
    def uniform(cls, groups: Iterable[str], keep_ratio: float, **kwargs: Any) -> "PruningPlan":
        return cls(keep_ratios={g: keep_ratio for g in groups}, **kwargs)

    def kept_channels(self, group: str, channels: int) -> int:
        """Channels a group of ``channels`` keeps: the ratio rounded to the alignment, at least one step."""
        ratio = self.keep_ratios.get(group, 1.0)
        return aligned_channels(channels, ratio, self.alignment)

    def to_dict(self) -> dict[str, Any]:
        return {"keep_ratios": dict(self.keep_ratios), "importance": self.importance, "alignment": self.alignment}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PruningPlan":
        if not isinstance(data, Mapping) or not isinstance(data.get("keep_ratios", {}), Mapping):
            raise UserError("a plan must be a mapping with a 'keep_ratios' mapping of group name -> keep ratio")
        unknown = set(data) - {"keep_ratios", "importance", "alignment"}
        if unknown:
            raise UserError(f"plan has unknown field(s) {sorted(unknown)}; expected keep_ratios, importance, alignment")
        return cls(
            keep_ratios={str(k): v for k, v in data.get("keep_ratios", {}).items()},
            importance=str(data.get("importance", "l1")),
            alignment=int(data.get("alignment", 1)),
        )


def aligned_channels(channels: int, keep_ratio: float, alignment: int) -> int:
    """Round ``channels * keep_ratio`` to a multiple of ``alignment``; never below one step nor above ``channels``."""
    if keep_ratio >= 1.0 or channels <= alignment:
        return channels
    kept = int(round(channels * keep_ratio / alignment)) * alignment
    return min(channels, max(alignment, kept))
