"""Every strategy through the real ask/tell loop on the synthetic problem (real Optuna studies, milliseconds)."""

import math
import statistics

import optuna
import pytest
from optuna.trial import TrialState

from autoprune.errors import UserError
from autoprune.search.backends import LocalExecutor
from autoprune.search.records import completed_records, pareto_records
from autoprune.search.runner import optimize
from autoprune.search.strategies import STRATEGIES, Constraints, check_budget_reachable, create_strategy
from autoprune.search.synthetic import SyntheticEvaluator, SyntheticProblem, synthetic_model

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _run(name, trials, constraints=Constraints(), seed=0, evaluator=None, study=None, problem=None, model=False):
    problem = problem or SyntheticProblem(groups=6, seed=0)
    strategy = create_strategy(name, problem.space, "l1", seed, trials, constraints, problem)
    if model:  # the trained network a real run attaches (tp-global reads its weights)
        strategy.attach_baseline(synthetic_model(problem.space))
    study = study or optuna.create_study(directions=["maximize", "minimize"])
    study.sampler = strategy.sampler()
    optimize(study, strategy, LocalExecutor(evaluator or SyntheticEvaluator(problem)), trials, constraints,
             multi_fidelity=False)
    return study, problem


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_each_strategy_completes_its_trials_with_keep_params(name):
    study, problem = _run(name, 8, model=True)
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 8
    groups = {f"keep/{g.name}" for g in problem.space.groups}
    for t in done:
        assert set(t.params) == groups
        assert t.user_attrs["strategy"] == name and t.user_attrs["feasible"] is True
        assert math.isclose(t.values[0], problem.accuracy(problem.plan({k[5:]: v for k, v in t.params.items()})))


@pytest.mark.parametrize("name", ["rl", "random", "uniform"])
def test_bounded_strategies_only_propose_plans_within_the_latency_budget(name):
    problem = SyntheticProblem(groups=6, seed=0)
    dense = problem.latency_ms(problem.plan({}))
    limit = Constraints(max_latency_ms=0.4 * dense)
    study, _ = _run(name, 10, limit, problem=problem)
    latencies = [t.user_attrs["latency_ms"] for t in study.get_trials(states=(TrialState.COMPLETE,))]
    assert len(latencies) == 10 and max(latencies) <= 0.4 * dense + 1e-9
    assert min(latencies) < 0.4 * dense  # not a single degenerate plan


@pytest.mark.parametrize("name", ["tpe", "nsga2"])
def test_infeasible_candidates_are_flagged_and_never_pareto_optimal(name):
    problem = SyntheticProblem(groups=6, seed=0)
    dense = problem.latency_ms(problem.plan({}))
    limit = Constraints(max_latency_ms=0.5 * dense, min_accuracy=0.8)
    study, _ = _run(name, 16, limit, problem=problem)
    records = completed_records(study)
    infeasible = [r for r in records if not r.feasible]
    assert infeasible, "the start-up trials should include plans over the budget or under the accuracy floor"
    for r in infeasible:
        assert r.latency_ms > 0.5 * dense or r.accuracy < 0.8
    front = pareto_records(records)
    assert front and all(r.feasible and r.latency_ms <= 0.5 * dense for r in front)
    trial = study.trials[infeasible[0].number]
    assert max(trial.user_attrs["constraints"].values()) > 0  # the sampler saw it as infeasible


def test_budget_below_the_smallest_plan_is_a_user_error():
    problem = SyntheticProblem(groups=4, seed=0)
    fastest = problem.latency_ms(problem.plan({g.name: g.min_keep for g in problem.space.groups}))
    with pytest.raises(UserError, match="--max-latency-ms .* below the fastest plan"):
        check_budget_reachable(problem.space, problem, Constraints(max_latency_ms=fastest * 0.9), "l1")
    with pytest.raises(UserError, match="--max-params"):
        check_budget_reachable(problem.space, problem, Constraints(max_params=10), "l1")


def test_nan_objective_and_evaluator_errors_become_failed_trials():
    problem = SyntheticProblem(groups=4, seed=0)
    study, _ = _run("random", 6, evaluator=SyntheticEvaluator(problem, fail_calls=(2,), nan_calls=(4,)), problem=problem)
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert sorted(t.number for t in failed) == [1, 3]
    reasons = sorted(t.user_attrs["fail_reason"] for t in failed)
    assert reasons[0].startswith("RuntimeError: synthetic failure") and reasons[1].startswith("non-finite objective")
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 4  # failures count toward --trials


def test_many_failures_in_a_row_stop_with_a_user_error():
    problem = SyntheticProblem(groups=4, seed=0)
    with pytest.raises(UserError, match="5 trials in a row failed"):
        _run("random", 10, evaluator=SyntheticEvaluator(problem, fail_calls=tuple(range(1, 11))), problem=problem)


def test_rl_policy_is_rebuilt_from_recorded_trials_on_resume():
    problem = SyntheticProblem(groups=4, seed=0)
    study, _ = _run("rl", 10, problem=problem)
    fresh = create_strategy("rl", problem.space, "l1", 0, 10, Constraints(), problem)
    updates = fresh.learn(study)
    assert updates == 10 // fresh.batch and len(fresh._buffer) == 10
    # it then continues the same study; earlier trials count toward --trials
    _run("rl", 14, study=study, problem=problem)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 14


@pytest.mark.slow
def test_rl_agent_learns_and_beats_random_search_at_equal_budget():
    """Synthetic objective with hidden per-group sensitivities under a 35% latency budget; random search draws its
    plans within the same budget. At 80 episodes, for every seed, the agent's best plan must beat random search's
    best plan, and its proposals must improve (last 20 vs first 20) and be better on average than random's."""
    problem = SyntheticProblem(groups=8, seed=0)
    dense = problem.latency_ms(problem.plan({}))
    limit = Constraints(max_latency_ms=0.35 * dense)
    rl_first, rl_last, random_mean = [], [], []
    for seed in range(5):
        rl, _ = _run("rl", 80, limit, seed=seed, problem=problem)
        rnd, _ = _run("random", 80, limit, seed=seed, problem=problem)
        accs = [t.values[0] for t in rl.trials]
        assert max(t.user_attrs["latency_ms"] for t in rl.trials + rnd.trials) <= 0.35 * dense + 1e-9
        assert max(accs) > max(t.values[0] for t in rnd.trials), f"seed {seed}"
        rl_first.append(statistics.mean(accs[:20]))
        rl_last.append(statistics.mean(accs[-20:]))
        random_mean.append(statistics.mean(t.values[0] for t in rnd.trials))
    assert statistics.mean(rl_last) > statistics.mean(rl_first) + 0.05
    assert statistics.mean(rl_last) > statistics.mean(random_mean) + 0.05


@pytest.mark.parametrize("name", ["tpe", "nsga2"])
def test_learned_strategies_start_from_uniform_plans_spread_down_to_the_smallest(name):
    problem = SyntheticProblem(groups=6, seed=0)
    dense = problem.latency_ms(problem.plan({}))
    limit = Constraints(max_latency_ms=0.6 * dense)
    study, _ = _run(name, 16, limit, problem=problem)
    seeds = [t for t in study.trials if "warm_start_keep" in t.user_attrs]
    assert len(seeds) == 2 and [t.number for t in seeds] == [0, 1]
    lowest = min(g.min_keep for g in problem.space.groups)
    for t in seeds:
        assert len(set(t.params.values())) == 1  # one ratio for every group
        assert t.user_attrs["latency_ms"] <= 0.6 * dense  # below the budget, not the dense model
    assert seeds[0].user_attrs["warm_start_keep"] == pytest.approx(lowest)
    assert seeds[0].user_attrs["warm_start_keep"] < seeds[1].user_attrs["warm_start_keep"]
    # A resumed study does not seed again.
    again, _ = _run(name, 20, limit, study=study, problem=problem)
    assert len([t for t in again.trials if "warm_start_keep" in t.user_attrs]) == 2


@pytest.mark.parametrize("name", ["tpe", "nsga2"])
def test_start_up_plans_cover_the_latency_range_unlike_independent_draws(name):
    problem = SyntheticProblem(groups=8, seed=0)
    study, _ = _run(name, 30, problem=problem)
    spread = [t for t in study.trials if "spread_start_level" in t.user_attrs]
    targeted = [t for t in study.trials if "latency_start_fraction" in t.user_attrs]
    # After the 3 uniform seeds: 3 latency-targeted plans, then the rest of TPE's 10 start-up trials / NSGA-II's
    # first generation of 10.
    assert [t.number for t in targeted] == [3, 4, 5]
    assert len(spread) == 4 and [t.number for t in spread] == list(range(6, 10))
    levels = [t.user_attrs["spread_start_level"] for t in spread]
    assert levels == sorted(levels) and levels[-1] - levels[0] > 0.35
    assert all(len(set(t.params.values())) > 1 for t in spread + targeted)  # not another uniform plan
    lat = [t.user_attrs["latency_ms"] for t in spread + targeted]
    rnd, _ = _run("random", 30, problem=problem)
    drawn = [t.user_attrs["latency_ms"] for t in rnd.trials[:7]]
    assert max(lat) - min(lat) > 1.5 * (max(drawn) - min(drawn))
    # Resuming makes no more of them.
    again, _ = _run(name, 34, study=study, problem=problem)
    assert len([t for t in again.trials if "spread_start_level" in t.user_attrs]) == 4
    assert len([t for t in again.trials if "latency_start_fraction" in t.user_attrs]) == 3


def test_rl_warm_up_spreads_budgets_from_the_fastest_plan_up():
    problem = SyntheticProblem(groups=6, seed=0)
    study, _ = _run("rl", 16, problem=problem)
    budgets = [t.user_attrs["rl_budget_ms"] for t in study.trials[:4]]  # warm-up: a quarter of 16 episodes
    assert budgets == sorted(budgets) and len(set(budgets)) == 4
    first = study.trials[0]
    assert all(v == pytest.approx(g.min_keep) for g, v in zip(problem.space.groups, first.params.values()))
    assert first.user_attrs["latency_ms"] == pytest.approx(min(t.user_attrs["latency_ms"] for t in study.trials))


def test_a_study_resumed_past_its_start_up_gets_no_spread_plans():
    problem = SyntheticProblem(groups=8, seed=0)
    study, _ = _run("tpe", 12, problem=problem)  # 12 trials: 4 start-up trials, 2 uniform and 2 latency-targeted
    seeded = ("spread_start_level", "latency_start_fraction")
    assert len([t for t in study.trials if any(k in t.user_attrs for k in seeded)]) == 2
    # Resumed with --trials 40 its start-up would be 10 trials, but 12 have run: no start-up plans mid-search.
    again, _ = _run("tpe", 40, study=study, problem=problem)
    assert len(again.trials) == 40
    assert len([t for t in again.trials if any(k in t.user_attrs for k in seeded)]) == 2
    assert len([t for t in again.trials if "warm_start_keep" in t.user_attrs]) == 2  # nor uniform seeds (4 at 40)


def test_latency_allocation_meets_its_target_and_prunes_where_the_latency_is():
    from autoprune.search.strategies import latency_allocation

    problem = SyntheticProblem(groups=8, seed=0)
    dense = problem.latency_ms(problem.plan({}))
    ratios = latency_allocation(problem.space, problem, 0.5 * dense)
    assert problem.latency_ms(problem.plan(ratios)) <= 0.5 * dense
    assert len(set(ratios.values())) > 1  # not a uniform plan
    # The group whose layer costs the most (and whose input the next layer reads) loses the most.
    share = {g: problem.latency_ms(problem.plan({}))
             - problem.latency_ms(problem.plan({g: 0.5})) for g in ratios}
    assert ratios[max(share, key=share.get)] == min(ratios.values())
    assert ratios[min(share, key=share.get)] > min(ratios.values())
    fastest = latency_allocation(problem.space, problem, 0.0)  # unreachable: every group at its floor
    assert all(fastest[g.name] == g.min_keep for g in problem.space.groups)


def test_under_a_latency_limit_the_targeted_start_plans_reach_up_to_the_limit():
    problem = SyntheticProblem(groups=8, seed=0)
    dense = problem.latency_ms(problem.plan({}))
    limit = Constraints(max_latency_ms=0.5 * dense)
    study, _ = _run("tpe", 30, limit, problem=problem)
    targeted = [t for t in study.trials if "latency_start_fraction" in t.user_attrs]
    fractions = [t.user_attrs["latency_start_fraction"] for t in targeted]
    assert len(targeted) == 3 and fractions == sorted(fractions) and fractions[-1] == pytest.approx(0.5)
    lat = [t.user_attrs["latency_ms"] for t in targeted]
    assert max(lat) <= 0.5 * dense and max(lat) > 0.45 * dense  # the last one spends the budget


def test_without_a_limit_the_targeted_start_plans_sit_just_under_a_ladder_of_speedups():
    from autoprune.search.strategies import RUNG_MARGIN

    problem = SyntheticProblem(groups=8, seed=0)
    dense = problem.latency_ms(problem.plan({}))
    study, _ = _run("tpe", 30, problem=problem)
    targeted = [t for t in study.trials if "latency_start_fraction" in t.user_attrs]
    fractions = [t.user_attrs["latency_start_fraction"] for t in targeted]
    # 2.83x, 2x and 1.41x faster than dense, fastest first, each aimed a margin under its rung
    rungs = [2 ** -1.5, 2 ** -1, 2 ** -0.5]
    assert fractions == pytest.approx([(1 - RUNG_MARGIN) * r for r in rungs], abs=1e-6)
    for t, rung in zip(targeted, rungs):
        ratio = t.user_attrs["latency_ms"] / dense
        assert 0.85 * rung < ratio < rung  # meets its rung when the prediction is a few per cent off, and uses it


def test_rungs_the_most_pruned_plan_cannot_reach_go_to_spread_plans():
    # Latency dominated by a fixed call overhead: the most pruned plan is still slower than 1/2 of the dense model.
    problem = SyntheticProblem(groups=8, seed=0, ms_per_gmac=0.2)
    dense = problem.latency_ms(problem.plan({}))
    fastest = problem.latency_ms(problem.plan({g.name: g.min_keep for g in problem.space.groups}))
    assert 0.5 < fastest / dense < 0.95 * 2 ** -0.5
    study, _ = _run("tpe", 30, problem=problem)
    targeted = [t.number for t in study.trials if "latency_start_fraction" in t.user_attrs]
    spread = [t.number for t in study.trials if "spread_start_level" in t.user_attrs]
    assert targeted == [3] and spread == list(range(4, 10))  # the 1.41x rung only; the start-up stays 10 plans
