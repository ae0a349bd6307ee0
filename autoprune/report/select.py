"""Pick one candidate of a study: best accuracy under a latency budget, lowest latency above an accuracy floor,
the knee of the front, or a trial by number.

Rules other than ``trial`` choose among the Pareto-optimal trials only. The knee is the front point farthest above
the straight line joining the front's two ends (fastest, most accurate), both objectives normalised to [0, 1] over
the front; ties (and fronts of one or two points, where every distance is 0) go to the point closest to the
ideal corner (best accuracy at the lowest latency), then to the more accurate one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from autoprune.errors import UserError
from autoprune.search.records import TrialRecord, pareto_records

RULES = ("max_latency_ms", "min_accuracy", "knee", "trial")


@dataclass(frozen=True)
class Selection:
    """The chosen trial, the rule that chose it and why, and how many Pareto-optimal trials it was chosen from."""

    rule: str
    value: float | None  # the budget, floor or trial number (None for the knee)
    record: TrialRecord
    pareto_optimal: bool
    front_size: int
    reason: str
    dominated_by: tuple[int, ...] = ()  # for --trial of a dominated trial: Pareto-optimal trials that beat it

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule, "value": self.value, "trial": self.record.number, "pareto_optimal": self.pareto_optimal,
            "front_size": self.front_size, "reason": self.reason, "dominated_by": list(self.dominated_by),
            "candidate": self.record.to_dict(),
        }


def parse_accuracy(text: str | float) -> float:
    """``0.92`` or ``"92%"`` -> 0.92; a UserError for anything else."""
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise UserError(f"--min-accuracy {raw!r} is not an accuracy; write a fraction in [0, 1] such as 0.92, or 92%")
    return value


def knee_index(front: Sequence[TrialRecord]) -> int:
    """Index in ``front`` of its knee (see the module docstring)."""
    if not front:
        raise ValueError("empty front")
    accs = [r.accuracy for r in front]
    lats = [r.latency_ms for r in front]
    a_lo, a_hi, l_lo, l_hi = min(accs), max(accs), min(lats), max(lats)
    norm = [((a - a_lo) / (a_hi - a_lo) if a_hi > a_lo else 1.0, (l - l_lo) / (l_hi - l_lo) if l_hi > l_lo else 0.0)
            for a, l in zip(accs, lats)]
    # On a front, the fastest point is the least accurate and the most accurate the slowest: normalised, the chord
    # runs from (0, 0) to (1, 1) and the signed distance of a point above it is (accuracy - latency) / sqrt(2).

    def score(i: int) -> tuple[float, float, float]:
        y, x = norm[i]  # x = normalised latency, y = normalised accuracy
        return (round(y - x, 12), -round(math.hypot(1.0 - y, x), 12), accs[i])

    return max(range(len(front)), key=score)


def select_trial(
    records: Sequence[TrialRecord],
    *,
    max_latency_ms: float | None = None,
    min_accuracy: float | None = None,
    knee: bool = False,
    trial: int | None = None,
    latency_label: str = "ms",
) -> Selection:
    """Apply exactly one rule to the completed trials ``records``; a UserError when nothing satisfies it."""
    given = [name for name, v in (("--max-latency-ms", max_latency_ms), ("--min-accuracy", min_accuracy),
                                  ("--knee", knee or None), ("--trial", trial)) if v is not None]
    if len(given) != 1:
        raise UserError(
            "choose exactly one rule: --max-latency-ms X, --min-accuracy A, --knee or --trial N"
            + (f" (got {', '.join(given)})" if given else "")
        )
    if not records:
        raise UserError("the study has no completed trials yet; run `autoprune search` (or let it finish) first")
    front = pareto_records(list(records))
    n = len(front)

    if trial is not None:
        by_number = {r.number: r for r in records}
        if trial not in by_number:
            shown = ", ".join(str(k) for k in sorted(by_number)[:20]) + (", ..." if len(by_number) > 20 else "")
            raise UserError(f"trial {trial} is not a completed trial of this study; completed trials: {shown}")
        chosen = by_number[trial]
        on_front = any(r.number == trial for r in front)
        beaters = tuple(r.number for r in front if r.accuracy >= chosen.accuracy and r.latency_ms <= chosen.latency_ms
                        and (r.accuracy, r.latency_ms) != (chosen.accuracy, chosen.latency_ms))
        reason = (f"trial {trial} as asked; it is Pareto-optimal" if on_front else
                  f"trial {trial} as asked; it is not Pareto-optimal: trial(s) {', '.join(map(str, beaters))} are at "
                  "least as accurate and as fast")
        return Selection("trial", float(trial), chosen, on_front, n, reason, () if on_front else beaters)

    if max_latency_ms is not None:
        if not (math.isfinite(max_latency_ms) and max_latency_ms > 0):
            raise UserError(f"--max-latency-ms must be a positive number of milliseconds, got {max_latency_ms}")
        fits = [r for r in front if r.latency_ms <= max_latency_ms]
        if not fits:
            fastest = min(front, key=lambda r: r.latency_ms)
            raise UserError(
                f"no Pareto-optimal trial runs within {max_latency_ms:g} ms ({latency_label}); the fastest is trial "
                f"{fastest.number} at {fastest.latency_ms:.4g} ms: raise --max-latency-ms to at least "
                f"{fastest.latency_ms:.4g} or search with lower keep ratios"
            )
        chosen = max(fits, key=lambda r: (r.accuracy, -r.latency_ms))
        reason = (f"best accuracy ({chosen.accuracy:.2%}) among the {len(fits)} of {n} Pareto-optimal trials within "
                  f"{max_latency_ms:g} ms")
        return Selection("max_latency_ms", float(max_latency_ms), chosen, True, n, reason)

    if min_accuracy is not None:
        floor = parse_accuracy(min_accuracy)
        fits = [r for r in front if r.accuracy >= floor]
        if not fits:
            best = max(front, key=lambda r: r.accuracy)
            raise UserError(
                f"no Pareto-optimal trial reaches {floor:.2%} accuracy; the most accurate is trial {best.number} at "
                f"{best.accuracy:.2%}: lower --min-accuracy to at most {best.accuracy:.4f} or search with more "
                "fine-tuning steps"
            )
        chosen = min(fits, key=lambda r: (r.latency_ms, -r.accuracy))
        reason = (f"lowest latency ({chosen.latency_ms:.4g} ms) among the {len(fits)} of {n} Pareto-optimal trials "
                  f"with accuracy at least {floor:.2%}")
        return Selection("min_accuracy", floor, chosen, True, n, reason)

    chosen = front[knee_index(front)]
    reason = (f"knee of the {n}-point front: the best accuracy/latency trade-off (farthest above the line joining the "
              "fastest and the most accurate trial)" if n > 2 else
              f"the front has only {n} point(s), so it has no knee; chose the one nearest the ideal corner")
    return Selection("knee", None, chosen, True, n, reason)
