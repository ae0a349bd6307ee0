"""``tp-global``: Torch-Pruning's global pruning swept over its pruning ratio, as a strategy.

This is the baseline a Torch-Pruning user writes in one line (``MetaPruner(..., global_pruning=True)``): one
global importance ranking decides how many channels each group keeps. Each trial takes the allocation at one
ratio of an even sweep (:func:`autoprune.pruning.global_allocation.global_keep_ratios`, on the trained dense
model), snapped onto the space's keep-ratio grid, so it runs through the same evaluator, is priced by the same
cost model and lands in the same study as the learned strategies it is compared with.

The learned strategies start from the same allocations (:meth:`Strategy.global_start`).
"""

from __future__ import annotations

import functools

import optuna

from autoprune.pruning.global_allocation import global_keep_ratios
from autoprune.search.store import declare_strategy_attrs, decode_trials
from autoprune.search.strategies import Strategy, _snap, register_strategy, searched_groups

(GLOBAL_RATIO,) = declare_strategy_attrs("tp-global", "tp_global_ratio")


def snapped_global_ratios(model, space, pruning_ratio: float) -> dict[str, float]:
    """The global allocation at ``pruning_ratio`` on the searched groups' keep-ratio grid."""
    ratios = global_keep_ratios(model, space, pruning_ratio)
    return {g.name: _snap(g, ratios[g.name]) for g in searched_groups(space)}


@register_strategy
class TPGlobalStrategy(Strategy):
    """Torch-Pruning global pruning (group L2 magnitude, mean-normalised) at evenly spaced pruning ratios, from
    the smallest one whose plan meets the latency / parameter limits (0 without one) to the space's largest."""

    name = "tp-global"
    width_only = True  # Torch-Pruning's global pruning allocates channels; it never drops a block

    def sampler(self) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=self.seed)

    def attach_baseline(self, model, data=None) -> None:
        super().attach_baseline(model, data)
        self._allocation.cache_clear()

    @functools.lru_cache(maxsize=256)  # noqa: B019 - one instance per run; the model is fixed once attached
    def _allocation(self, pruning_ratio: float) -> tuple[tuple[str, float], ...]:
        if self.baseline_model is None:
            raise RuntimeError("tp-global needs the trained model: call attach_baseline() before the first trial")
        return tuple(snapped_global_ratios(self.baseline_model, self.space, pruning_ratio).items())

    def ratios_at(self, pruning_ratio: float) -> dict[str, float]:
        return dict(self._allocation(round(pruning_ratio, 6)))

    def largest_ratio(self) -> float:
        """Torch-Pruning's ``max_pruning_ratio`` for this space: every group at its ``min_keep``."""
        return round(1.0 - min((g.min_keep for g in self.space.groups), default=1.0), 6)

    def smallest_feasible_ratio(self) -> float:
        """The smallest pruning ratio whose allocation meets the cost limits (bisection on a monotone cost)."""
        if self._cost_feasible(self.ratios_at(0.0)):
            return 0.0
        lo, hi = 0.0, self.largest_ratio()
        for _ in range(12):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if self._cost_feasible(self.ratios_at(mid)) else (mid, hi)
        return hi

    def sweep(self) -> list[float]:
        """``trials`` pruning ratios, evenly spaced; never 0 itself unless a limit requires it (the dense model)."""
        low, top = self.smallest_feasible_ratio(), self.largest_ratio()
        n = max(1, self.trials)
        if low == 0.0:
            return [round(top * (k + 1) / n, 6) for k in range(n)]
        return [round(low + (top - low) * k / max(1, n - 1), 6) for k in range(n)]

    def before_ask(self, study: optuna.Study) -> None:
        done = {round(float(t.strategy_attrs[GLOBAL_RATIO]), 6) for t in decode_trials(study)
                if GLOBAL_RATIO in t.strategy_attrs}
        sweep = self.sweep()
        pending = [r for r in sweep if r not in done]
        ratio = pending[0] if pending else sweep[len(study.trials) % len(sweep)]
        self._enqueue(study, self.ratios_at(ratio), {GLOBAL_RATIO: ratio})
