"""How much each group can lose: prune one coupled group at a time over a keep-ratio grid, measure the drop.

For every (group, keep ratio) pair a copy of the dense model loses only that group's lowest-ranked channels;
its validation accuracy is measured as is and again after BatchNorm recalibration (the search's evaluator
recalibrates, so the recalibrated drop is the one that predicts what a search candidate will see). Drops are
absolute accuracy differences in [−1, 1] (0.02 = two points lost): the plain drop against the dense model as
given, the recalibrated drop against the dense model recalibrated on the same batches, so that a baseline
whose running statistics are stale does not make every pruned copy look better than dense.

The table bounds a search: :func:`sensitivity_space` gives each group the smallest keep ratio whose drop (and
the drop of every larger ratio on the grid) stays within a tolerance, as a reviewed space for
``autoprune search --space FILE``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from autoprune.errors import UserError, unknown_choice
from autoprune.plan import PruningPlan
from autoprune.pruning.space import SearchSpace, generate_space
from autoprune.pruning.structured import apply_plan
from autoprune.training import evaluate, recalibrate_bn

DEFAULT_RATIOS = (0.9, 0.75, 0.5, 0.25)


@dataclass(frozen=True)
class SensitivityPoint:
    """One group pruned alone to ``keep_ratio`` (``kept`` of ``channels`` channels left).

    Accuracies are top-1 in [0, 1]; drops are the matching dense accuracy minus these (positive = worse).
    """

    group: str
    keep_ratio: float
    channels: int
    kept: int
    accuracy: float
    accuracy_recalibrated: float
    drop: float
    drop_recalibrated: float


@dataclass(frozen=True)
class SensitivityTable:
    """Every analysed group × every keep ratio of one model on one data split."""

    model: str
    data: str
    input_shape: tuple[int, int, int, int]
    importance: str
    dense_accuracy: float
    dense_accuracy_recalibrated: float
    ratios: tuple[float, ...]
    groups: tuple[str, ...]
    points: tuple[SensitivityPoint, ...]

    def point(self, group: str, keep_ratio: float) -> SensitivityPoint:
        for p in self.points:
            if p.group == group and math.isclose(p.keep_ratio, keep_ratio):
                return p
        raise KeyError((group, keep_ratio))

    def min_keep(self, group: str, max_drop: float, recalibrated: bool = True) -> float:
        """Smallest grid ratio r such that r and every larger grid ratio lose at most ``max_drop`` accuracy.

        Requiring the larger ratios too keeps one lucky (noisy) point below a bad one from opening the range.
        1.0 when even the largest ratio loses too much: the group is kept whole.
        """
        best = 1.0
        for ratio in sorted(self.ratios, reverse=True):
            p = self.point(group, ratio)
            if (p.drop_recalibrated if recalibrated else p.drop) > max_drop:
                break
            best = ratio
        return best

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "data": self.data, "input_shape": list(self.input_shape),
            "importance": self.importance, "dense_accuracy": self.dense_accuracy,
            "dense_accuracy_recalibrated": self.dense_accuracy_recalibrated, "ratios": list(self.ratios),
            "groups": list(self.groups), "points": [p.__dict__.copy() for p in self.points],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SensitivityTable":
        try:
            return cls(
                str(data["model"]), str(data["data"]), tuple(int(v) for v in data["input_shape"]),
                str(data["importance"]), float(data["dense_accuracy"]),
                float(data["dense_accuracy_recalibrated"]), tuple(float(r) for r in data["ratios"]),
                tuple(str(g) for g in data["groups"]), tuple(SensitivityPoint(**p) for p in data["points"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise UserError(f"sensitivity table is malformed ({err}); re-run `autoprune sensitivity`") from err


def parse_ratios(text: str) -> tuple[float, ...]:
    """``"0.9,0.75,0.5"`` -> (0.9, 0.75, 0.5): keep ratios in (0, 1), deduplicated, largest first."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(not (0.0 < v < 1.0) for v in values):
        raise UserError(
            f"--ratios {text!r} must be comma-separated keep ratios in (0, 1), e.g. 0.9,0.75,0.5,0.25"
        )
    return tuple(sorted(set(values), reverse=True))


def analyze_sensitivity(
    model: nn.Module,
    model_name: str,
    input_shape: tuple[int, int, int, int],
    val_loader: DataLoader,
    train_loader: DataLoader,
    num_classes: int,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    importance: str = "l1",
    groups: Sequence[str] | None = None,
    bn_batches: int = 8,
    data_name: str = "",
    calibration=None,
    on_point: Callable[[SensitivityPoint], None] | None = None,
    device: torch.device | str = "cpu",
) -> SensitivityTable:
    """Prune each of ``groups`` (default: every group) alone to each keep ratio and measure the accuracy drop.

    ``model`` is not modified. ``bn_batches`` training batches re-estimate BatchNorm statistics for the
    recalibrated figure; ``calibration`` batches feed gradient importance criteria. Copies are pruned on the CPU
    and recalibrated and scored on ``device``.
    """
    space = generate_space(model, model_name, input_shape)
    names = select_groups(space, groups)
    channels = space.group_channels()
    ratios = tuple(sorted({float(r) for r in ratios}, reverse=True))
    # the same batches for every copy: the recalibrated figures then differ by the pruning alone
    bn_data = [batch for _, batch in zip(range(bn_batches), train_loader)]
    dense_copy = copy.deepcopy(model)  # scored on the device: ``model`` itself stays where it is
    dense = evaluate(dense_copy, val_loader, num_classes, device).accuracy
    recalibrate_bn(dense_copy, bn_data, bn_batches, device)
    dense_recalibrated = evaluate(dense_copy, val_loader, num_classes, device).accuracy
    del dense_copy
    example = torch.zeros(input_shape)
    points = []
    for group in names:
        for ratio in ratios:
            plan = PruningPlan(keep_ratios={group: ratio}, importance=importance)
            candidate = copy.deepcopy(model)
            apply_plan(candidate, plan, example, calibration)
            accuracy = evaluate(candidate, val_loader, num_classes, device).accuracy
            recalibrate_bn(candidate, bn_data, bn_batches, device)
            recalibrated = evaluate(candidate, val_loader, num_classes, device).accuracy
            del candidate
            point = SensitivityPoint(
                group, ratio, channels[group], plan.kept_channels(group, channels[group]), accuracy, recalibrated,
                dense - accuracy, dense_recalibrated - recalibrated,
            )
            points.append(point)
            if on_point is not None:
                on_point(point)
    return SensitivityTable(model_name, data_name, tuple(input_shape), importance, dense, dense_recalibrated, ratios,
                            names, tuple(points))


def select_groups(space: SearchSpace, groups: Sequence[str] | None) -> tuple[str, ...]:
    """``groups`` in model order (all of ``space``'s when empty); an unknown name is a UserError."""
    if not groups:
        return tuple(space.group_names)
    for name in groups:
        if name not in space.group_names:
            raise unknown_choice("group", name, space.group_names, f"run `autoprune space --model {space.model}`")
    return tuple(g for g in space.group_names if g in set(groups))  # model order, whatever order was given


def sensitivity_space(
    table: SensitivityTable, space: SearchSpace, max_drop: float, recalibrated: bool = True
) -> SearchSpace:
    """``space`` with each analysed group's ``min_keep`` raised to :meth:`SensitivityTable.min_keep`.

    Groups the table does not cover keep their range. ``max_drop`` is an absolute accuracy loss in [0, 1).
    """
    if not (0.0 <= max_drop < 1.0):
        raise UserError(f"--max-drop {max_drop} must lie in [0, 1) (absolute accuracy, 0.02 = two points)")
    if table.model != space.model:
        raise UserError(f"sensitivity table is for model {table.model!r}, not {space.model!r}")
    analysed = set(table.groups)
    groups = tuple(
        replace(g, min_keep=max(g.min_keep, table.min_keep(g.name, max_drop, recalibrated)))
        if g.name in analysed else g
        for g in space.groups
    )
    groups = tuple(replace(g, max_keep=max(g.max_keep, g.min_keep)) for g in groups)
    return replace(space, groups=groups)


def space_yaml(space: SearchSpace, table: SensitivityTable, max_drop: float, recalibrated: bool = True) -> str:
    """``space`` (from :func:`sensitivity_space`) as a reviewed-space YAML for ``search --space``.

    The alignment is left out on purpose: a space file's alignment overrides the target profile's, and the
    sensitivity run knows nothing about the target.
    """
    import yaml

    data = space.to_dict()
    data.pop("alignment", None)
    header = (
        f"# per-group min_keep from `autoprune sensitivity`: the smallest keep ratio whose accuracy drop "
        f"({'with' if recalibrated else 'without'} BN recalibration)\n# stays within {max_drop:.4f} on "
        f"{table.data or 'the validation split'} (dense {table.dense_accuracy:.4f}); groups not analysed keep "
        "the generated range\n"
    )
    return header + yaml.safe_dump(data, sort_keys=False)


def sensitivity_html(table: SensitivityTable) -> str:
    """One self-contained HTML page (plotly.js inlined, works offline): accuracy drop vs keep ratio per group,
    without and with BatchNorm recalibration."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, shared_yaxes=True,
                        subplot_titles=("pruned alone", "pruned alone + BN recalibration"))
    for i, group in enumerate(table.groups):
        rows = sorted((p for p in table.points if p.group == group), key=lambda p: p.keep_ratio)
        x = [p.keep_ratio for p in rows]
        color = f"hsl({int(360 * i / max(1, len(table.groups)))},65%,45%)"
        for col, ys in ((1, [100 * p.drop for p in rows]), (2, [100 * p.drop_recalibrated for p in rows])):
            fig.add_trace(go.Scatter(x=x, y=ys, mode="lines+markers", name=group, legendgroup=group,
                                     showlegend=col == 1, line={"color": color}), row=1, col=col)
    fig.update_xaxes(title_text="keep ratio", autorange="reversed")
    fig.update_yaxes(title_text="accuracy drop (points)", row=1, col=1)
    fig.update_layout(
        title=f"Per-group sensitivity — {table.model} on {table.data or 'validation data'} "
              f"(dense {100 * table.dense_accuracy:.2f}%, recalibrated {100 * table.dense_accuracy_recalibrated:.2f}%, importance {table.importance})",
        template="plotly_white", height=560,
    )
    return fig.to_html(full_html=True, include_plotlyjs=True)
