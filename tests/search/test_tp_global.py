"""Torch-Pruning's global allocation as a strategy and as the learned strategies' warm start (real Torch-Pruning
on a small real network of the synthetic problem's shape, real Optuna studies)."""

import optuna
import pytest
import torch

from autoprune.errors import UserError
from autoprune.pruning.global_allocation import global_keep_ratios
from autoprune.search.backends import LocalExecutor
from autoprune.search.runner import optimize
from autoprune.search.strategies import Constraints, create_strategy
from autoprune.search.synthetic import SyntheticEvaluator, SyntheticProblem, synthetic_model

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def problem():
    return SyntheticProblem(groups=6, seed=0)


def _run(name, problem, model, trials, constraints=Constraints()):
    strategy = create_strategy(name, problem.space, "l1", 0, trials, constraints, problem)
    strategy.attach_baseline(model)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=strategy.sampler())
    optimize(study, strategy, LocalExecutor(SyntheticEvaluator(problem)), trials, constraints, multi_fidelity=False)
    return study


def test_global_allocation_follows_the_weights_and_prunes_the_asked_share(problem):
    model = synthetic_model(problem.space)
    assert global_keep_ratios(model, problem.space, 0.0) == {g.name: 1.0 for g in problem.space.groups}
    skewed = synthetic_model(problem.space)
    with torch.no_grad():  # conv2: half its filters near zero, so a global ranking takes them first
        conv = skewed.conv2
        conv.weight[: conv.out_channels // 2] *= 1e-3
    even = global_keep_ratios(model, problem.space, 0.3)
    ratios = global_keep_ratios(skewed, problem.space, 0.3)
    assert ratios["conv2"] < even["conv2"] - 0.2
    assert ratios["conv2"] < min(r for g, r in ratios.items() if g != "conv2")
    channels = {g.name: g.channels for g in problem.space.groups}
    kept = sum(ratios[g] * c for g, c in channels.items())
    assert kept == pytest.approx(0.7 * sum(channels.values()), abs=len(channels))  # 30% of all channels gone
    assert all(r >= g.min_keep for g, r in zip(problem.space.groups, ratios.values()))
    assert skewed.conv2.out_channels == channels["conv2"]
    with pytest.raises(UserError, match="must be in"):
        global_keep_ratios(model, problem.space, 1.0)


def test_tp_global_sweeps_its_ratio_through_the_same_study(problem):
    model = synthetic_model(problem.space)
    study = _run("tp-global", problem, model, 5)
    done = [t for t in study.trials if t.values is not None]
    ratios = [t.user_attrs["tp_global_ratio"] for t in done]
    assert len(done) == 5 and ratios == sorted(ratios) and len(set(ratios)) == 5
    assert ratios[-1] == pytest.approx(1 - min(g.min_keep for g in problem.space.groups))
    latencies = [t.values[1] for t in done]
    assert latencies == sorted(latencies, reverse=True)  # more pruned, faster
    assert all(t.user_attrs["strategy"] == "tp-global" for t in done)


def test_tp_global_meets_a_latency_limit(problem):
    model = synthetic_model(problem.space)
    dense = problem.latency_ms(problem.plan({}))
    study = _run("tp-global", problem, model, 4, Constraints(max_latency_ms=0.5 * dense))
    latencies = [t.values[1] for t in study.trials if t.values is not None]
    assert len(latencies) == 4 and max(latencies) <= 0.5 * dense + 1e-9


def test_tp_global_without_the_trained_model_fails_its_trial_not_the_run(problem):
    strategy = create_strategy("tp-global", problem.space, "l1", 0, 2, Constraints(), problem)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=strategy.sampler())
    with pytest.raises(RuntimeError, match="attach_baseline"):
        strategy.before_ask(study)


@pytest.mark.parametrize("name", ["tpe", "nsga2"])
def test_learned_strategies_also_start_from_the_global_allocation(name, problem):
    model = synthetic_model(problem.space)
    study = _run(name, problem, model, 16)
    uniform = [t.number for t in study.trials if "warm_start_keep" in t.user_attrs]
    glob = [t for t in study.trials if "global_start_ratio" in t.user_attrs]
    targeted = [t.number for t in study.trials if "latency_start_fraction" in t.user_attrs]
    # 16 trials: 2 uniform seeds, then the 3 other start-up plans: 1 global allocation, 2 latency-targeted.
    assert uniform == [0, 1] and [t.number for t in glob] == [2] and targeted == [3, 4]
    assert 0 < glob[0].user_attrs["global_start_ratio"] < 1
    assert all(len(set(t.params.values())) > 1 for t in glob)  # per-group ratios, not another uniform plan
    # Without the trained model (the synthetic tests elsewhere) the start-up is uniform + spread only.
    plain = create_strategy(name, problem.space, "l1", 0, 16, Constraints(), problem)
    s2 = optuna.create_study(directions=["maximize", "minimize"], sampler=plain.sampler())
    optimize(s2, plain, LocalExecutor(SyntheticEvaluator(problem)), 16, Constraints(), multi_fidelity=False)
    assert not any("global_start_ratio" in t.user_attrs for t in s2.trials)
