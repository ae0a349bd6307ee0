import math
import random

from autoprune.search.pareto import dominates, hypervolume, pareto_front


def test_front_is_exactly_the_non_dominated_points():
    rng = random.Random(0)
    points = [(rng.random(), rng.random() * 10) for _ in range(200)]
    front = set(pareto_front(points))
    for i, p in enumerate(points):
        dominated = any(dominates(q, p) for q in points)
        assert (i in front) == (not dominated)


def test_front_sorted_by_latency_and_ties_kept_once():
    points = [(0.9, 2.0), (0.8, 1.0), (0.9, 2.0), (0.7, 3.0)]
    assert pareto_front(points) == [1, 0]


def test_hypervolume_of_known_staircase():
    # Reference (0.5, 4.0): points (0.9, 1.0) and (0.95, 3.0).
    # Area = (0.9-0.5)*(3-1) + (0.95-0.5)*(4-3) = 0.8 + 0.45
    assert math.isclose(hypervolume([(0.9, 1.0), (0.95, 3.0)], (0.5, 4.0)), 1.25)
    # A dominated point adds nothing; a point beyond the reference adds nothing.
    assert math.isclose(hypervolume([(0.9, 1.0), (0.95, 3.0), (0.8, 2.0), (0.99, 5.0)], (0.5, 4.0)), 1.25)
