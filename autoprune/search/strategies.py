"""Search strategies: each proposes plans through an Optuna trial (ask/tell), so every strategy's trials
land in the same study with the same parameters and can be reported, resumed and compared alike.

Contract (what the runner guarantees and what a strategy must do):

- the runner builds a strategy once per run with the space, the constraints and a ``PlanCosts`` predictor,
  then calls :meth:`Strategy.sampler` once to create the study's sampler;
- once the dense baseline is trained it calls ``attach_baseline(model)`` (a no-op by default);
- for every trial it calls ``before_ask(study)`` then ``study.ask()`` then ``propose(study, trial)``, which
  must return a plan whose keep ratios are the trial's ``keep/<group>`` parameters (less the groups of the
  blocks its ``drop/<block>`` parameters drop, with ``--depth``). ``before_ask`` may
  enqueue fixed parameters (that is how the uniform sweep, the constrained random search and the RL agent
  drive Optuna); several trials may be asked before any is told (parallel workers);
- a strategy keeps no state that cannot be rebuilt from the study: on resume a fresh instance sees the
  recorded trials (strategy-specific figures live in trial user attrs the strategy declares with
  :func:`autoprune.search.store.declare_strategy_attrs`, read back as ``TrialOutcome.strategy_attrs``);
- constraints are honoured either through Optuna's trial constraints (the runner records each limit's value
  with ``trial.set_constraint`` and in the ``constraints`` user attr, so TPE and NSGA-II rank infeasible
  trials behind feasible ones) or by proposing only plans whose predicted latency / parameter count meet
  the budget (bounded actions: ``rl``, ``random``, ``uniform``). Every trial gets a ``feasible`` attr.
"""

from __future__ import annotations

import abc
import functools
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Protocol

import optuna

from autoprune.errors import UserError, unknown_choice
from autoprune.plan import PruningPlan
from autoprune.pruning.space import GroupSpec, SearchSpace
from autoprune.search.store import declare_strategy_attrs, decode_trials, trial_attrs

PARAM_PREFIX = "keep/"
DROP_PREFIX = "drop/"  # categorical False/True per droppable block when the search spans depth (--depth)
PRECISION_PARAM = "precision"  # categorical fp32/int8 when the search spans more than one precision
# Per-trial attributes the built-in strategies write (declared in the study store, kept by re-queued trials).
WARM_START, SPREAD_START, GLOBAL_START, LATENCY_START = declare_strategy_attrs(
    "seeded", "warm_start_keep", "spread_start_level", "global_start_ratio", "latency_start_fraction")
(UNIFORM_KEEP,) = declare_strategy_attrs("uniform", "uniform_keep")
# How far under its rung of speedups a latency-targeted start plan aims, so that it still meets the rung when timed:
# about twice the calibrated cost model's mean error on the machine it was fitted on (MAPE 2-3 % in
# bench/cost_model.py and bench/latency_vs_macs.py; single plans miss by up to 6-8 %).
RUNG_MARGIN = 0.05


def param_name(group: str) -> str:
    """The Optuna parameter holding ``group``'s keep ratio."""
    return PARAM_PREFIX + group


def drop_param_name(block: str) -> str:
    """The Optuna parameter saying whether ``block`` is dropped (True) or kept (False)."""
    return DROP_PREFIX + block


def plan_from_params(params: dict, space: SearchSpace, importance: str) -> PruningPlan:
    """The plan a trial's parameters describe: ``keep/<group>`` ratios, ``drop/<block>`` choices, precision.

    This is the one place depth enters a strategy's plan: the blocks whose ``drop/`` parameter is true are dropped,
    and the keep ratios of the groups that lived only inside them leave the plan (they would be ignored anyway;
    leaving them out keeps equal plans equal).
    """
    ratios = {k[len(PARAM_PREFIX) :]: float(v) for k, v in params.items() if k.startswith(PARAM_PREFIX)}
    drops = tuple(k[len(DROP_PREFIX) :] for k, v in params.items() if k.startswith(DROP_PREFIX) and v is True)
    precision = str(params.get(PRECISION_PARAM, "fp32"))
    plan = PruningPlan(keep_ratios=ratios, importance=importance, alignment=space.alignment, precision=precision,
                       drop_blocks=drops)
    gone = space.dropped_groups(plan)
    return replace(plan, keep_ratios={g: r for g, r in ratios.items() if g not in gone}) if gone else plan


def grid_steps(group: GroupSpec) -> int:
    return math.floor((group.max_keep - group.min_keep) / group.step + 1e-9)


def grid_value(group: GroupSpec, k: int) -> float:
    return round(group.min_keep + k * group.step, 10)


def _snap(group: GroupSpec, ratio: float) -> float:
    """``ratio`` clamped to the group's range and rounded onto its step grid."""
    k = min(grid_steps(group), max(0, round((ratio - group.min_keep) / group.step)))
    return grid_value(group, k)


def snap_down(group: GroupSpec, ratio: float) -> float:
    """The largest grid ratio of ``group`` not above ``ratio`` (at least ``min_keep``)."""
    k = min(grid_steps(group), max(0, math.floor((ratio - group.min_keep) / group.step + 1e-9)))
    return grid_value(group, k)


def searched_groups(space: SearchSpace) -> list[GroupSpec]:
    return [g for g in space.groups if g.min_keep < g.max_keep]


@dataclass(frozen=True)
class Constraints:
    """Hard limits a candidate must meet to count as feasible (None: no limit)."""

    max_latency_ms: float | None = None
    min_accuracy: float | None = None
    max_params: int | None = None

    def __post_init__(self) -> None:
        if self.max_latency_ms is not None and not (math.isfinite(self.max_latency_ms) and self.max_latency_ms > 0):
            raise UserError(f"--max-latency-ms must be a positive number, got {self.max_latency_ms}")
        if self.min_accuracy is not None and not (0.0 <= self.min_accuracy <= 1.0):
            raise UserError(f"--min-accuracy is a fraction in [0, 1] (e.g. 0.9 for 90%), got {self.min_accuracy}")
        if self.max_params is not None and self.max_params < 1:
            raise UserError(f"--max-params must be a positive count, got {self.max_params}")

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.max_latency_ms, self.min_accuracy, self.max_params))

    def violations(self, accuracy: float, latency_ms: float, params: int) -> dict[str, float]:
        """One value per limit, relative to the limit; <= 0 means met (Optuna's constraints convention)."""
        values = {}
        if self.max_latency_ms is not None:
            values["max_latency_ms"] = (latency_ms - self.max_latency_ms) / self.max_latency_ms
        if self.min_accuracy is not None:
            values["min_accuracy"] = self.min_accuracy - accuracy
        if self.max_params is not None:
            values["max_params"] = (params - self.max_params) / self.max_params
        return values

    def feasible(self, accuracy: float, latency_ms: float, params: int) -> bool:
        return all(v <= 0 for v in self.violations(accuracy, latency_ms, params).values())

    def cost_feasible(self, latency_ms: float, params: int) -> bool:
        """Whether the limits known before training (latency, parameters) are met."""
        return (self.max_latency_ms is None or latency_ms <= self.max_latency_ms) and (
            self.max_params is None or params <= self.max_params
        )

    def to_dict(self) -> dict:
        return {"max_latency_ms": self.max_latency_ms, "min_accuracy": self.min_accuracy, "max_params": self.max_params}


class PlanCosts(Protocol):
    """Predicts a plan's cost without building the model (the cost model: well under a millisecond)."""

    def latency_ms(self, plan: PruningPlan) -> float: ...
    def params(self, plan: PruningPlan) -> int: ...


class SpaceCosts:
    """:class:`PlanCosts` of a real search space on a target's cost model."""

    def __init__(self, space: SearchSpace, cost_model) -> None:
        self.space = space
        self.cost_model = cost_model

    def latency_ms(self, plan: PruningPlan) -> float:
        return float(self.cost_model.predict(self.space, plan).latency_ms)

    def params(self, plan: PruningPlan) -> int:
        return int(self.cost_model.predict(self.space, plan).params)


def extreme_plan(space: SearchSpace, importance: str, which: str) -> PruningPlan:
    """Every group at its ``min_keep`` (``which="min"``) or ``max_keep``."""
    ratios = {g.name: (g.min_keep if which == "min" else g.max_keep) for g in space.groups}
    return PruningPlan(keep_ratios=ratios, importance=importance, alignment=space.alignment)


def smallest_plan(space: SearchSpace, importance: str, drops: Iterable[str] = ()) -> PruningPlan:
    """Every searched group at its ``min_keep``, dropping ``drops`` too: the fastest plan a search can make."""
    return replace(extreme_plan(space, importance, "min"), drop_blocks=tuple(drops))


def check_budget_reachable(space: SearchSpace, costs: PlanCosts, constraints: Constraints, importance: str,
                           depth: bool = False) -> None:
    """Refuse a latency / parameter limit that even the smallest plan of the space cannot meet (with ``depth``,
    the smallest plan also drops every droppable block)."""
    smallest = smallest_plan(space, importance, space.block_names if depth else ())
    if constraints.max_latency_ms is not None:
        fastest = costs.latency_ms(smallest)
        if fastest > constraints.max_latency_ms:
            raise UserError(
                f"--max-latency-ms {constraints.max_latency_ms:g} is below the fastest plan this space allows "
                f"({fastest:.4g} ms); raise it, or lower the groups' min_keep with --space"
            )
    if constraints.max_params is not None:
        fewest = costs.params(smallest)
        if fewest > constraints.max_params:
            raise UserError(
                f"--max-params {constraints.max_params} is below the smallest plan this space allows "
                f"({fewest:,} parameters); raise it, or lower the groups' min_keep with --space"
            )


def latency_allocation(space: SearchSpace, costs: PlanCosts, target_ms: float, importance: str = "l1",
                       scores: dict[str, list[float]] | None = None) -> dict[str, float]:
    """Keep ratios (on each group's grid) meeting ``target_ms`` by greedy steps down: each step lowers the group
    whose next grid step saves the most predicted latency per unit of accuracy it is expected to cost.

    With ``scores`` (each group's channel scores on one global scale, ascending:
    :func:`autoprune.pruning.global_allocation.taylor_scores`) that cost is the summed score of the channels the
    step removes, weakest first: the knapsack of latency-aware pruning (keep the most importance under a latency
    budget, as HALP, Shen et al. 2022) solved greedily on the keep grid, where Torch-Pruning's global pruning
    removes the weakest channels whatever they cost on the target. Without scores (no trained model) it is the
    stand-in penalty ``layers * (1 - keep)^2``. Stops at the target or when every group is at its ``min_keep``."""
    from autoprune.pruning.global_allocation import removed_score

    groups = searched_groups(space)
    steps = {g.name: grid_steps(g) for g in groups}  # grid index per group: start at max_keep
    weight = {g.name: max(1, len(g.layers)) for g in groups}

    every = [v for values in (scores or {}).values() for v in values]
    average = sum(every) / len(every) if every else 1.0

    def penalty(g: GroupSpec, keep_now: float, keep_next: float) -> float:
        if scores is not None:  # a group without scores counts its channels as average ones
            return removed_score(scores.get(g.name) or [average] * g.channels, keep_now, keep_next)
        return weight[g.name] * ((1 - keep_next) ** 2 - (1 - keep_now) ** 2)

    def plan(index: dict[str, int]) -> PruningPlan:
        return PruningPlan(keep_ratios={g.name: grid_value(g, index[g.name]) for g in groups},
                           importance=importance, alignment=space.alignment)

    current = costs.latency_ms(plan(steps))
    while current > target_ms:
        best, best_gain, best_ms = None, 0.0, current
        for g in groups:
            if steps[g.name] == 0:
                continue
            trial = {**steps, g.name: steps[g.name] - 1}
            ms = costs.latency_ms(plan(trial))
            keep_now, keep_next = grid_value(g, steps[g.name]), grid_value(g, steps[g.name] - 1)
            gain = (current - ms) / max(penalty(g, keep_now, keep_next), 1e-12)
            if best is None or gain > best_gain:
                best, best_gain, best_ms = g.name, gain, ms
        if best is None:
            break
        steps[best] -= 1
        current = best_ms
    return {g.name: grid_value(g, steps[g.name]) for g in groups}


def warm_start_count(trials: int) -> int:
    """Uniform seed plans a learned strategy starts from: one per eight trials, between 2 and 4."""
    return max(2, min(4, trials // 8)) if trials >= 8 else 0


class Strategy(abc.ABC):
    """Proposes pruning plans for a study. Subclasses choose the sampler and may enqueue parameters."""

    name: str = ""
    # Precisions a plan may run at; the runner sets them from --precision. With more than one, every strategy's
    # trials carry a categorical "precision" parameter the sampler chooses like any other.
    precisions: tuple[str, ...] = ("fp32",)
    # Whether plans may drop blocks; the runner sets it from --depth. A width-only strategy (the uniform sweep)
    # ignores it. With it, every trial carries a categorical "drop/<block>" per droppable block of the space.
    depth: bool = False
    width_only: bool = False

    def __init__(
        self,
        space: SearchSpace,
        importance: str,
        seed: int,
        trials: int,
        constraints: Constraints | None = None,
        costs: PlanCosts | None = None,
        workers: int = 1,
    ) -> None:
        self.space = space
        self.importance = importance
        self.seed = seed
        self.trials = trials
        self.constraints = constraints or Constraints()
        self.costs = costs
        self.workers = max(1, workers)
        self.baseline_model = None  # set by attach_baseline
        self.baseline_data = None  # set by attach_baseline, when the caller has the data

    @abc.abstractmethod
    def sampler(self) -> optuna.samplers.BaseSampler:
        """The Optuna sampler of the study this strategy drives."""

    def attach_baseline(self, model, data=None) -> None:
        """Hook called once with the trained dense model (and the run's data, when the caller has it) before the
        first trial. The base class keeps the model for the Torch-Pruning warm start (:meth:`global_start`) and the
        data for :attr:`channel_scores`; the model must not be changed."""
        self.baseline_model = model
        self.baseline_data = data
        self.__dict__.pop("channel_scores", None)  # scores of an earlier baseline are stale

    @functools.cached_property
    def channel_scores(self) -> dict[str, list[float]] | None:
        """The attached baseline's channel scores on a few training batches (:func:`taylor_scores`), for the
        latency-targeted start plans (:meth:`latency_start`); None without a baseline, data or cost predictor, or
        where the model cannot be scored (the start plans then use the stand-in penalty). Computed on first use,
        so strategies and resumed studies that make no such plan never pay for it."""
        if self.baseline_model is None or self.baseline_data is None or self.costs is None:
            return None
        from autoprune.pruning.global_allocation import taylor_scores

        try:
            return taylor_scores(self.baseline_model, self.space, self.baseline_data.loader("train", 64, self.seed))
        except Exception:  # noqa: BLE001 - without scores the start plans use the stand-in penalty
            return None

    def before_ask(self, study: optuna.Study) -> None:
        """Hook before each ``study.ask()``; a no-op unless the strategy enqueues its own proposals."""

    def propose(self, study: optuna.Study, trial: optuna.Trial) -> PruningPlan:
        """Suggest a keep ratio for every group and return the plan."""
        for group in self.space.groups:
            if group.min_keep < group.max_keep:
                trial.suggest_float(param_name(group.name), group.min_keep, group.max_keep, step=group.step)
        for block in self.depth_blocks():
            trial.suggest_categorical(drop_param_name(block), [False, True])
        return self.with_precision(trial, plan_from_params(trial.params, self.space, self.importance))

    def depth_blocks(self) -> list[str]:
        """The blocks this strategy's plans may drop: the space's droppable ones when depth is searched."""
        return [] if self.width_only or not self.depth else self.space.block_names

    def with_precision(self, trial: optuna.Trial, plan: PruningPlan) -> PruningPlan:
        """``plan`` at the trial's precision: suggested when several are searched, else the only one."""
        if len(self.precisions) > 1:
            precision = trial.suggest_categorical(PRECISION_PARAM, list(self.precisions))
        else:
            precision = self.precisions[0]
        return plan if plan.precision == precision else replace(plan, precision=str(precision))

    # helpers for strategies that enqueue their proposals
    def _plan(self, ratios: dict[str, float]) -> PruningPlan:
        return PruningPlan(keep_ratios=ratios, importance=self.importance, alignment=self.space.alignment)

    def _cost_feasible(self, ratios: dict[str, float]) -> bool:
        if self.costs is None:
            return True
        plan = self._plan(ratios)
        lat = self.costs.latency_ms(plan) if self.constraints.max_latency_ms is not None else 0.0
        params = self.costs.params(plan) if self.constraints.max_params is not None else 0
        return self.constraints.cost_feasible(lat, params)

    def _enqueue(self, study: optuna.Study, ratios: dict[str, float], attrs: dict | None = None,
                 drops: tuple[str, ...] | None = None) -> None:
        """Enqueue a plan's keep ratios, and its dropped blocks when given (else the sampler chooses them:
        dropping a block only lowers latency and size, so a plan meeting the cost limits still meets them)."""
        params: dict = {param_name(g.name): ratios[g.name] for g in searched_groups(self.space)}
        if drops is not None:
            params.update({drop_param_name(b): b in drops for b in self.depth_blocks()})
        study.enqueue_trial(params, user_attrs=trial_attrs(strategy_attrs=attrs), skip_if_exists=False)

    def _uniform_ratios(self, ratio: float) -> dict[str, float]:
        return {g.name: _snap(g, ratio) for g in searched_groups(self.space)}

    def lowest_uniform(self) -> float:
        """The smallest uniform ratio every group allows."""
        return min((g.min_keep for g in self.space.groups), default=1.0)

    def highest_uniform(self) -> float:
        """The largest uniform ratio meeting the cost limits (bisection on a monotone cost)."""
        if self._cost_feasible(self._uniform_ratios(1.0)):
            return 1.0
        lo, hi = self.lowest_uniform(), 1.0
        for _ in range(20):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if self._cost_feasible(self._uniform_ratios(mid)) else (lo, mid)
        return lo

    def _made(self, study: optuna.Study, key: str) -> int:
        """How many of this strategy's trials in ``study`` (waiting ones included) carry the user attr ``key``."""
        # A waiting trial has no strategy yet: it was enqueued by this one.
        return sum(1 for t in decode_trials(study) if key in t.strategy_attrs and t.strategy in (None, self.name))

    def warm_start(self, study: optuna.Study, count: int) -> bool:
        """Enqueue ``count`` uniform plans evenly spread from the smallest keep ratio to below the largest
        feasible one, before the sampler's own proposals. Independent random draws average out to mid-size
        models, so without these a short search rarely sees the fast end of the front; the sampler then
        improves on the uniform points rather than rediscovering them. Resumes count seeds already made.
        Returns whether a plan was enqueued."""
        made = self._made(study, WARM_START) if count > 0 else 0
        if count <= 0 or made >= count:
            return False
        lowest, top = self.lowest_uniform(), self.highest_uniform()
        ratio = lowest + (top - lowest) * made / count  # never ``top`` itself: that is the dense model
        # drops=(): the seeds are the width-only uniform line (with --depth too), the front's known reference
        self._enqueue(study, self._uniform_ratios(ratio), {WARM_START: round(ratio, 6)}, drops=())
        return True

    def spread_start(self, study: optuna.Study, count: int, jitter: float = 0.15) -> bool:
        """After the uniform warm start, enqueue ``count`` exploratory plans in place of the sampler's random
        start-up draws: plan k takes an overall keep level from the k-th of ``count`` equal slices of
        [smallest ratio, largest feasible ratio] and scatters each group's ratio ± ``jitter`` around it.

        Independent per-group draws average out to mid-size models (a sum of independent choices), so the
        start-up population of a short search covers only the middle of the latency range; these cover all of
        it, and still differ from one group to the next. Seeded; plans over the cost limits are redrawn.
        Resumes count plans already made. Returns whether a plan was enqueued."""
        k = self._made(study, SPREAD_START) if count > 0 else 0
        if count <= 0 or k >= count:
            return False
        rng = random.Random(f"{self.name}/{self.seed}/spread/{k}")
        lowest, top = self.lowest_uniform(), self.highest_uniform()
        ratios: dict[str, float] = {}
        for _ in range(100):
            level = lowest + (top - lowest) * (k + rng.random()) / count
            ratios = {g.name: _snap(g, level + rng.uniform(-jitter, jitter)) for g in searched_groups(self.space)}
            if self._cost_feasible(ratios):
                break
        else:
            ratios = self._uniform_ratios(level)
        self._enqueue(study, ratios, {SPREAD_START: round(level, 6)})
        return True

    def global_start(self, study: optuna.Study, count: int) -> bool:
        """Enqueue ``count`` plans of Torch-Pruning's global allocation (:mod:`autoprune.search.tp_global`), so a
        learned strategy has the one-liner baseline's allocations among its first trials. The first is the most
        pruned one (``max_pruning_ratio``), the others evenly less pruned: the fast end is where an allocation
        matters most and where a learned search's own draws rarely go (MobileNetV2 on Fashion-MNIST: the global
        allocation at its largest ratio scored 5 points above the uniform plan of its latency on validation, and
        TPE, started from ratios up to two thirds of it, proposed no plan under 35 % of the dense latency in two
        seeds of three, its uniform start aside; bench/results/search_proof_mnv2_equalstop.json). Needs the
        baseline attached; a model Torch-Pruning cannot allocate gets none. Returns whether a plan was enqueued."""
        made = self._made(study, GLOBAL_START) if count > 0 else 0
        if count <= 0 or made >= count or self.baseline_model is None:
            return False
        from autoprune.search.tp_global import snapped_global_ratios

        top = 1.0 - self.lowest_uniform()
        ratio = round(top * (count - made) / count, 6)  # from the most pruned seed to the least
        try:
            ratios = snapped_global_ratios(self.baseline_model, self.space, ratio)
        except Exception:  # noqa: BLE001 - a warm start Torch-Pruning cannot make is skipped, never the search
            return False
        if not self._cost_feasible(ratios):
            return False
        self._enqueue(study, ratios, {GLOBAL_START: ratio}, drops=())  # a width allocation: every block kept
        return True

    def latency_targets(self, count: int) -> list[float]:
        """The latency targets (ms, ascending) of the ``count`` latency-targeted start plans: a ladder of speedups
        a factor √2 apart hanging from the dense model (1.41×, 2×, 2.83× …), each aimed :data:`RUNG_MARGIN` under
        its rung so that the plan still meets it when timed, the budgets users ask for ("twice as fast") and the
        front's most useful points; under a latency limit the ladder hangs from the limit, its first target the
        limit itself. Rungs the most pruned plan cannot reach are left out (their slots go to spread plans)."""
        dense = self.costs.latency_ms(self._plan({}))
        limit = self.constraints.max_latency_ms
        fastest = self.costs.latency_ms(self._plan(self._uniform_ratios(self.lowest_uniform())))
        if limit is not None and limit < dense:
            rungs = [limit] + [limit * 2 ** (-k / 2) * (1 - RUNG_MARGIN) for k in range(1, count)]
        else:
            rungs = [dense * 2 ** (-k / 2) * (1 - RUNG_MARGIN) for k in range(1, count + 1)]
        return sorted(r for r in rungs if r > fastest)

    def latency_start(self, study: optuna.Study, targets: list[float]) -> bool:
        """Enqueue, one per call, plans that spend the pruning where the target's latency is: for each of the
        latency ``targets`` (ms, from :meth:`latency_targets`), fastest first, the allocation that meets it by greedy steps down the
        keep grid, each on the group that saves the most predicted latency per unit of accuracy it is expected
        to cost (:func:`latency_allocation`): the summed Taylor score of the channels it removes when the
        baseline was attached with data (latency-aware pruning), else the stand-in ``layers * (1 - keep)^2``. A
        uniform plan of the same latency prunes every layer alike; Torch-Pruning's global pruning removes the
        weakest channels whatever they cost. Needs the cost predictor. Returns whether a plan was enqueued."""
        made = self._made(study, LATENCY_START) if targets else 0
        if made >= len(targets) or self.costs is None:
            return False
        dense = self.costs.latency_ms(self._plan({}))
        fraction = round(targets[made] / dense, 6)
        ratios = latency_allocation(self.space, self.costs, fraction * dense, self.importance, self.channel_scores)
        if not self._cost_feasible(ratios):
            return False
        self._enqueue(study, ratios, {LATENCY_START: fraction}, drops=())  # priced with every block kept
        return True

    def seed_trials(self, study: optuna.Study, uniform: int, spread: int) -> None:
        """The uniform warm start first, then as many Torch-Pruning global-allocation plans (when the baseline is
        attached) and latency-targeted allocations (when costs are known; both take the place of spread plans),
        then the spread start-up plans (one enqueued per ask).
        All only fill the study's first ``uniform + spread`` trials: a study resumed past its start-up (or with
        a larger --trials) gets none in the middle of its search."""
        started = len(study.get_trials(deepcopy=False))
        if started < uniform and self.warm_start(study, uniform):
            return
        glob = min(uniform, spread // 2) if self.baseline_model is not None else 0
        if started < uniform + glob and self.global_start(study, glob):
            return
        # as many latency-targeted plans as the ladder has reachable rungs; the rest of the slots are spread plans
        targets = self.latency_targets(min(uniform, spread - glob)) if self.costs is not None else []
        lat = len(targets)
        if started < uniform + glob + lat and self.latency_start(study, targets):
            return
        if started < uniform + spread:
            self.spread_start(study, spread - glob - lat)


class TPEStrategy(Strategy):
    """Optuna's multi-objective TPE (accuracy ↑, latency ↓, optionally size ↓), told the constraints."""

    name = "tpe"

    def startup_trials(self) -> int:
        return max(4, min(10, self.trials // 3))

    def sampler(self) -> optuna.samplers.BaseSampler:
        return optuna.samplers.TPESampler(
            seed=self.seed, n_startup_trials=self.startup_trials(), multivariate=True,
            constant_liar=self.workers > 1,
        )

    def before_ask(self, study: optuna.Study) -> None:
        uniform = warm_start_count(self.trials)
        self.seed_trials(study, uniform, self.startup_trials() - uniform if uniform else 0)


class NSGA2Strategy(Strategy):
    """An evolutionary search (Optuna's NSGA-II with constrained domination). With ``workers`` > 1 the runner
    keeps that many members of a generation in flight at once."""

    name = "nsga2"

    def population_size(self) -> int:
        return max(4, self.workers, min(20, self.trials // 3))

    def sampler(self) -> optuna.samplers.BaseSampler:
        return optuna.samplers.NSGAIISampler(
            population_size=self.population_size(), seed=self.seed,
        )

    def before_ask(self, study: optuna.Study) -> None:
        uniform = min(warm_start_count(self.trials), self.population_size() // 2)
        self.seed_trials(study, uniform, self.population_size() - uniform if uniform else 0)


class EvolutionStrategy(NSGA2Strategy):
    """The same evolutionary engine under its generic name."""

    name = "evolution"


class RandomStrategy(Strategy):
    """Independent uniform keep ratios per group: the baseline every learned strategy must beat. Under a latency
    or parameter limit, plans are drawn until one meets it (rejection sampling), so the budget is honoured."""

    name = "random"
    max_draws = 500

    def sampler(self) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=self.seed)

    def before_ask(self, study: optuna.Study) -> None:
        if self.costs is None or (self.constraints.max_latency_ms is None and self.constraints.max_params is None):
            return
        rng = random.Random(f"{self.seed}/{len(study.trials)}")
        groups = searched_groups(self.space)
        ratios = {}
        for _ in range(self.max_draws):
            ratios = {g.name: grid_value(g, rng.randint(0, grid_steps(g))) for g in groups}
            if self._cost_feasible(ratios):
                break
        self._enqueue(study, ratios)


class UniformStrategy(Strategy):
    """One keep ratio for every group, swept evenly from the smallest allowed ratio to the largest one that
    meets the latency / parameter limit (1.0 without one)."""

    name = "uniform"
    width_only = True  # one keep ratio everywhere: the width-only reference line

    def sampler(self) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=self.seed)

    def sweep(self) -> list[float]:
        lowest, top = self.lowest_uniform(), self.highest_uniform()
        n = max(1, self.trials)
        return [lowest + (top - lowest) * k / max(1, n - 1) for k in range(n)] if n > 1 else [lowest]

    def before_ask(self, study: optuna.Study) -> None:
        done = {round(float(t.strategy_attrs[UNIFORM_KEEP]), 6) for t in decode_trials(study)
                if UNIFORM_KEEP in t.strategy_attrs}
        sweep = self.sweep()
        pending = [r for r in sweep if round(r, 6) not in done]
        ratio = pending[0] if pending else sweep[len(study.trials) % len(sweep)]
        self._enqueue(study, self._uniform_ratios(ratio), {UNIFORM_KEEP: round(ratio, 6)})


STRATEGIES: dict[str, type[Strategy]] = {}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Add a strategy to the registry (built-ins register the same way); usable as a class decorator."""
    STRATEGIES[cls.name] = cls
    return cls


for _cls in (TPEStrategy, NSGA2Strategy, EvolutionStrategy, RandomStrategy, UniformStrategy):
    register_strategy(_cls)


def create_strategy(
    name: str,
    space: SearchSpace,
    importance: str,
    seed: int,
    trials: int,
    constraints: Constraints | None = None,
    costs: PlanCosts | None = None,
    workers: int = 1,
) -> Strategy:
    if name not in STRATEGIES:
        raise unknown_choice("strategy", name, STRATEGIES)
    return STRATEGIES[name](space, importance, seed, trials, constraints, costs, workers)


from autoprune.search import rl as _rl  # noqa: E402,F401  (registers "rl" the way a plugin would)
from autoprune.search import tp_global as _tp_global  # noqa: E402,F401  (registers "tp-global")
