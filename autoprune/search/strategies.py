"""Search strategies: each proposes plans through an Optuna trial (ask/tell), so every strategy's trials
land in the same study with the same parameters and can be reported, resumed and compared alike.

Contract: the runner calls :meth:`Strategy.sampler` once to create the study's sampler, then for every
trial ``propose(study, trial)`` after ``study.ask()``; ``before_ask(study)`` runs before each ask and may
enqueue fixed parameters (that is how the uniform sweep and any external optimiser drive Optuna).
"""

from __future__ import annotations

import abc
import math

import optuna

from autoprune.errors import unknown_choice
from autoprune.plan import PruningPlan
from autoprune.pruning.space import GroupSpec, SearchSpace

PARAM_PREFIX = "keep/"


def param_name(group: str) -> str:
    """The Optuna parameter holding ``group``'s keep ratio."""
    return PARAM_PREFIX + group


def plan_from_params(params: dict[str, float], space: SearchSpace, importance: str) -> PruningPlan:
    ratios = {k[len(PARAM_PREFIX) :]: float(v) for k, v in params.items() if k.startswith(PARAM_PREFIX)}
    return PruningPlan(keep_ratios=ratios, importance=importance, alignment=space.alignment)


def _snap(group: GroupSpec, ratio: float) -> float:
    """``ratio`` clamped to the group's range and rounded onto its step grid."""
    steps = math.floor((group.max_keep - group.min_keep) / group.step + 1e-9)
    k = min(steps, max(0, round((ratio - group.min_keep) / group.step)))
    return round(group.min_keep + k * group.step, 10)


class Strategy(abc.ABC):
    """Proposes pruning plans for a study. Subclasses choose the sampler and may enqueue parameters."""

    name: str = ""

    def __init__(self, space: SearchSpace, importance: str, seed: int, trials: int) -> None:
        self.space = space
        self.importance = importance
        self.seed = seed
        self.trials = trials

    @abc.abstractmethod
    def sampler(self) -> optuna.samplers.BaseSampler:
        """The Optuna sampler of the study this strategy drives."""

    def before_ask(self, study: optuna.Study) -> None:
        """Hook before each ``study.ask()``; a no-op unless the strategy enqueues its own proposals."""

    def propose(self, study: optuna.Study, trial: optuna.Trial) -> PruningPlan:
        """Suggest a keep ratio for every group and return the plan."""
        for group in self.space.groups:
            if group.min_keep < group.max_keep:
                trial.suggest_float(param_name(group.name), group.min_keep, group.max_keep, step=group.step)
        return plan_from_params(trial.params, self.space, self.importance)


class TPEStrategy(Strategy):
    """Optuna's multi-objective TPE (accuracy ↑, latency ↓)."""

    name = "tpe"

    def sampler(self) -> optuna.samplers.BaseSampler:
        startup = max(4, min(10, self.trials // 3))
        return optuna.samplers.TPESampler(seed=self.seed, n_startup_trials=startup, multivariate=True)


class RandomStrategy(Strategy):
    """Independent uniform keep ratios per group: the baseline every learned strategy must beat."""

    name = "random"

    def sampler(self) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=self.seed)


class UniformStrategy(Strategy):
    """One keep ratio for every group, swept evenly from the smallest allowed ratio to 1.0."""

    name = "uniform"

    def sampler(self) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=self.seed)

    def sweep(self) -> list[float]:
        lowest = min((g.min_keep for g in self.space.groups), default=1.0)
        n = max(1, self.trials)
        return [lowest + (1.0 - lowest) * k / max(1, n - 1) for k in range(n)] if n > 1 else [lowest]

    def before_ask(self, study: optuna.Study) -> None:
        done = {round(float(t.user_attrs.get("uniform_keep", -1)), 6) for t in study.trials}
        pending = [r for r in self.sweep() if round(r, 6) not in done]
        ratio = pending[0] if pending else self.sweep()[len(study.trials) % len(self.sweep())]
        study.enqueue_trial(
            {param_name(g.name): _snap(g, ratio) for g in self.space.groups if g.min_keep < g.max_keep},
            user_attrs={"uniform_keep": round(ratio, 6)},
        )


STRATEGIES: dict[str, type[Strategy]] = {s.name: s for s in (TPEStrategy, RandomStrategy, UniformStrategy)}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Add a strategy to the registry (built-ins register the same way); usable as a class decorator."""
    STRATEGIES[cls.name] = cls
    return cls


def create_strategy(name: str, space: SearchSpace, importance: str, seed: int, trials: int) -> Strategy:
    if name not in STRATEGIES:
        raise unknown_choice("strategy", name, STRATEGIES)
    return STRATEGIES[name](space, importance, seed, trials)
