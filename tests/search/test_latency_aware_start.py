"""Latency-aware start plans: channel scores on one scale for every group (first-order Taylor, real Torch-Pruning
groups of a small real network, real digits batches) traded against the latency each step down saves."""

import optuna
import pytest
import torch

from autoprune.data import load_data
from autoprune.pruning.global_allocation import removed_score, taylor_scores
from autoprune.search.backends import LocalExecutor
from autoprune.search.runner import optimize
from autoprune.search.strategies import Constraints, create_strategy, latency_allocation
from autoprune.search.synthetic import SyntheticEvaluator, SyntheticProblem, synthetic_model

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def problem():
    return SyntheticProblem(groups=6, seed=0)


@pytest.fixture(scope="module")
def data():
    return load_data("digits", (32, 32), seed=0)


def test_taylor_scores_cover_every_group_and_a_dead_channel_scores_nothing(problem, data):
    model = synthetic_model(problem.space)
    with torch.no_grad():  # conv2's first filter and its bias zeroed: its output is 0, so removing it costs nothing
        model.conv2.weight[0] = 0.0
        model.conv2.bias[0] = 0.0
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scores = taylor_scores(model, problem.space, data.loader("train", 16, 0), limit=3)
    assert set(scores) == {g.name for g in problem.space.groups}
    for g in problem.space.groups:
        assert len(scores[g.name]) == g.channels and scores[g.name] == sorted(scores[g.name])
        assert scores[g.name][0] >= 0.0
    assert scores["conv2"][0] == 0.0 and scores["conv2"][1] > 0.0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model is untouched
    assert removed_score([0.0, 1.0, 2.0, 3.0], 1.0, 0.5) == 1.0  # the two weakest go first
    assert removed_score([0.0, 1.0, 2.0, 3.0], 0.5, 0.5) == 0.0


def test_the_allocation_spares_the_group_whose_channels_cost_the_most_accuracy(problem):
    dense = problem.latency_ms(problem.plan({}))
    flat = {g.name: [1.0] * g.channels for g in problem.space.groups}
    even = latency_allocation(problem.space, problem, 0.5 * dense, scores=flat)
    costly = max(even, key=lambda name: 1.0 - even[name])  # the group the flat scores prune the most
    weighted = latency_allocation(problem.space, problem, 0.5 * dense,
                                  scores={**flat, costly: [50.0] * len(flat[costly])})
    assert problem.latency_ms(problem.plan(weighted)) <= 0.5 * dense
    assert weighted[costly] > even[costly] + 0.2
    assert any(weighted[g] < even[g] for g in even if g != costly)  # the latency is saved elsewhere instead


def test_attached_data_makes_the_latency_targeted_start_plans_score_aware(problem, data):
    model = synthetic_model(problem.space)
    study_plans = {}
    for with_data in (False, True):
        strategy = create_strategy("tpe", problem.space, "l1", 0, 24, Constraints(), problem)
        strategy.attach_baseline(model, data if with_data else None)
        assert (strategy.channel_scores is not None) == with_data
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=strategy.sampler())
        optimize(study, strategy, LocalExecutor(SyntheticEvaluator(problem)), 8, Constraints(),
                 multi_fidelity=False)
        targeted = [t for t in study.trials if "latency_start_fraction" in t.user_attrs]
        assert len(targeted) >= 1
        fractions = [t.user_attrs["latency_start_fraction"] for t in targeted]
        assert fractions == sorted(fractions)
        study_plans[with_data] = [dict(t.params) for t in targeted]
    assert study_plans[True] != study_plans[False]  # the scores, not the stand-in penalty, chose the allocation
