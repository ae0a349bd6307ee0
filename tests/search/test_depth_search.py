"""Every strategy searches depth with --depth: the real ResNet-18 space priced by the Jetson roofline, through the
real ask/tell loop, with a synthetic accuracy (each dropped block and each pruned group costs a known amount)."""

from __future__ import annotations

import math

import optuna
import pytest
import torch
from optuna.trial import TrialState

from autoprune.hardware import CostModel, load_profile
from autoprune.models import create_model
from autoprune.plan import PruningPlan
from autoprune.pruning import generate_space
from autoprune.search.backends import LocalExecutor
from autoprune.search.runner import optimize
from autoprune.errors import UserError
from autoprune.search.strategies import Constraints, SpaceCosts, check_budget_reachable, create_strategy
from autoprune.search.synthetic import SyntheticResult

optuna.logging.set_verbosity(optuna.logging.WARNING)


class _DepthEvaluator:
    """Accuracy falls with each group's pruned fraction and by 0.03 per dropped block; latency and parameters
    are the cost model's."""

    def __init__(self, costs: SpaceCosts) -> None:
        self.costs = costs

    def evaluate(self, plan: PruningPlan, guidance=None) -> SyntheticResult:
        loss = sum(0.2 * (1.0 - r) ** 2 for r in plan.keep_ratios.values()) + 0.03 * len(plan.drop_blocks)
        latency, params = self.costs.latency_ms(plan), self.costs.params(plan)
        return SyntheticResult(plan=plan, accuracy=0.98 * math.exp(-loss), proxy_accuracy=0.9, latency_ms=latency,
                               params=params, size_mb=params * 4 / 1e6, finetune_steps=0, fidelity="finetuned",
                               seconds=0.0)


@pytest.fixture(scope="module")
def costs():
    torch.manual_seed(0)
    space = generate_space(create_model("resnet18", 10).eval(), "resnet18", (1, 3, 32, 32), alignment=8)
    return SpaceCosts(space, CostModel(load_profile("jetson-nano"), use_calibration=False))


def _search(name, costs, trials, constraints=Constraints(), depth=True):
    strategy = create_strategy(name, costs.space, "l1", 0, trials, constraints, costs)
    strategy.depth = depth
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.sampler = strategy.sampler()
    optimize(study, strategy, LocalExecutor(_DepthEvaluator(costs)), trials, constraints, multi_fidelity=False)
    return [t for t in study.get_trials() if t.state == TrialState.COMPLETE]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["tpe", "nsga2", "random", "rl"])
def test_strategies_propose_drops_and_leave_out_the_dropped_groups(name, costs):
    space = costs.space
    done = _search(name, costs, 10)
    assert len(done) == 10
    plans = [PruningPlan.from_dict(t.user_attrs["plan"]) for t in done]
    drop_params = {f"drop/{b}" for b in space.block_names}
    for trial, plan in zip(done, plans):
        assert drop_params <= set(trial.params)
        assert plan.drop_blocks == tuple(b for b in space.block_names if trial.params[f"drop/{b}"])
        assert not space.dropped_groups(plan) & set(plan.keep_ratios)
        assert trial.user_attrs["latency_ms"] == pytest.approx(costs.latency_ms(plan))
    assert any(p.drop_blocks for p in plans) and any(len(p.drop_blocks) < len(space.blocks) for p in plans)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("name", "fraction"), [("rl", 0.5), ("random", 0.75)])
def test_bounded_strategies_with_depth_stay_within_the_latency_budget(name, fraction, costs):
    dense = costs.latency_ms(PruningPlan(alignment=8))
    narrowest = costs.latency_ms(PruningPlan(keep_ratios={g.name: g.min_keep for g in costs.space.groups},
                                             alignment=8))
    assert narrowest > 0.6 * dense  # on the Nano's roofline fixed per-layer costs: width alone cannot halve it
    limit = Constraints(max_latency_ms=fraction * dense)
    done = _search(name, costs, 8, limit)
    latencies = [t.user_attrs["latency_ms"] for t in done]
    assert len(done) == 8 and max(latencies) <= fraction * dense * (1 + 1e-9)
    drops = [t.user_attrs["plan"].get("drop_blocks") for t in done]
    assert all(drops) if fraction < 0.6 else any(drops)  # below the width-only floor every plan must drop


@pytest.mark.timeout(120)
def test_uniform_sweep_and_a_width_only_search_never_drop(costs):
    for name, depth in (("uniform", True), ("tpe", False)):
        done = _search(name, costs, 4, depth=depth)
        assert all(k.startswith("keep/") for t in done for k in t.params)
        assert not any(t.user_attrs["plan"].get("drop_blocks") for t in done)


def test_a_budget_only_depth_reaches_is_refused_without_depth_and_accepted_with_it(costs):
    dense = costs.latency_ms(PruningPlan(alignment=8))
    limit = Constraints(max_latency_ms=0.5 * dense)
    with pytest.raises(UserError, match="below the fastest plan"):
        check_budget_reachable(costs.space, costs, limit, "l1")
    check_budget_reachable(costs.space, costs, limit, "l1", depth=True)
