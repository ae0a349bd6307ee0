"""Pareto dominance over (accuracy ↑, latency ↓) candidates."""

from __future__ import annotations

from collections.abc import Sequence


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """True when point ``a`` = (accuracy, latency_ms) is at least as good as ``b`` in both and better in one."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def pareto_front(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the non-dominated (accuracy, latency_ms) points, sorted by latency, duplicates kept once."""
    front: list[int] = []
    seen: set[tuple[float, float]] = set()
    for i, p in enumerate(points):
        key = (float(p[0]), float(p[1]))
        if key in seen or any(dominates(q, p) for j, q in enumerate(points) if j != i):
            continue
        seen.add(key)
        front.append(i)
    return sorted(front, key=lambda i: (points[i][1], -points[i][0]))


def hypervolume(points: Sequence[Sequence[float]], reference: tuple[float, float]) -> float:
    """Area dominated by (accuracy, latency_ms) points and bounded by ``reference`` = (min accuracy, max latency).

    Points worse than the reference in either objective add nothing.
    """
    ref_acc, ref_lat = reference
    useful = [(a, l) for a, l in (tuple(map(float, p)) for p in points) if a > ref_acc and l < ref_lat]
    # Sweep by increasing latency: on [lat_k, lat_k+1) the best accuracy reachable is the best so far.
    staircase = sorted(useful, key=lambda p: p[1])
    area, best_acc = 0.0, ref_acc
    for k, (acc, lat) in enumerate(staircase):
        next_lat = staircase[k + 1][1] if k + 1 < len(staircase) else ref_lat
        best_acc = max(best_acc, acc)
        area += (best_acc - ref_acc) * (next_lat - lat)
    return area
