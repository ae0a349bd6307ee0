"""``rl``: a resource-constrained pruning agent in the style of AMC (He et al., 2018).

The agent walks the searched groups in network order. At each step it observes an embedding of the group
(position, channels, kernel, stride, share of the FLOPs, latency budget used so far, latency the rest needs
at minimum, its previous action, the budget) and emits a keep ratio. Actions are *bounded*: the ratio is
squashed into ``[min_keep, upper]`` where ``upper`` is the largest grid ratio for which the plan still meets
the latency (and parameter) budget with every later group at its ``min_keep``, so every plan it proposes
meets the budget. With no ``--max-latency-ms`` a budget is drawn per episode between the fastest and the dense
latency and given to the agent, so one budget-conditioned policy covers the whole front.

The policy is a small torch MLP with a Gaussian head, trained with clipped policy-gradient (PPO-style) steps on the evaluator's reward (the
candidate's accuracy, minus a penalty when it misses ``--min-accuracy`` or ``--max-params``) against a
budget-dependent baseline. Its actions are stored on the trial (``rl_actions``, ``rl_budget_ms``), so the
policy is rebuilt on resume by replaying the recorded episodes.
"""

from __future__ import annotations

import math

import optuna
import torch
from optuna.trial import TrialState
from torch import nn

from autoprune.plan import PruningPlan
from autoprune.search.strategies import (
    Strategy, extreme_plan, grid_steps, grid_value, register_strategy, searched_groups, snap_down,
)

STATE_DIM = 9
INFEASIBLE_PENALTY = 0.1


class _Policy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(STATE_DIM, 32), nn.Tanh(), nn.Linear(32, 1))
        self.log_std = nn.Parameter(torch.tensor(math.log(0.8)))

    def dist(self, states: torch.Tensor) -> torch.distributions.Normal:
        mean = self.net(states).squeeze(-1)
        return torch.distributions.Normal(mean, self.log_std.clamp(-3.0, 0.5).exp())


@register_strategy
class RLStrategy(Strategy):
    """AMC-style agent with bounded actions; see the module docstring."""

    name = "rl"
    batch = 2  # new episodes per policy update
    replay = 16  # recent episodes each update learns from
    epochs = 16  # gradient steps per update
    clip = 0.2
    lr = 0.01
    greedy_every = 0  # if > 0, every n-th episode exploits the policy (mean actions, no noise)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        torch.manual_seed(self.seed)
        self.policy = _Policy()
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.lr)
        self.groups = searched_groups(self.space)
        self._consumed: set[int] = set()
        self._pending: list[tuple] = []  # (states, actions, budget_ms, reward, log-prob when sampled)
        self._buffer: list[tuple] = []
        self._history: list[tuple[float, float]] = []  # (budget fraction, reward)
        self._features = self._group_features()
        self.dense_ms = self._latency(extreme_plan(self.space, self.importance, "max"))
        self.fastest_ms = self._latency(extreme_plan(self.space, self.importance, "min"))

    def sampler(self) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=self.seed)  # every trial is enqueued; never consulted

    # --- the environment ------------------------------------------------------------------------------------
    def _latency(self, plan: PruningPlan) -> float:
        return self.costs.latency_ms(plan) if self.costs is not None else 1.0

    def _group_features(self) -> list[list[float]]:
        flops = {g.name: 0.0 for g in self.groups}
        first: dict[str, object] = {}
        for layer in self.space.layers:
            if layer.out_group in flops:
                out_hw = max(1, layer.in_h // max(1, layer.stride)) * max(1, layer.in_w // max(1, layer.stride))
                flops[layer.out_group] += layer.in_channels / layer.groups * layer.out_channels * layer.kernel ** 2 * out_hw
                first.setdefault(layer.out_group, layer)
        total = sum(flops.values()) or 1.0
        widest = max((g.channels for g in self.groups), default=1)
        n = max(1, len(self.groups))
        rows = []
        for t, g in enumerate(self.groups):
            layer = first.get(g.name)
            kernel = getattr(layer, "kernel", 1)
            stride = getattr(layer, "stride", 1)
            rows.append([t / n, math.log(g.channels + 1) / math.log(widest + 1), kernel / 7, stride / 2, flops[g.name] / total])
        return rows

    def _fits(self, ratios: dict[str, float], budget_ms: float) -> bool:
        plan = self._plan(ratios)
        if self.costs is None:
            return True
        if self.costs.latency_ms(plan) > budget_ms * (1 + 1e-9):
            return False
        return self.constraints.max_params is None or self.costs.params(plan) <= self.constraints.max_params

    def _upper(self, ratios: dict[str, float], group, budget_ms: float) -> float:
        """The largest grid ratio of ``group`` that keeps the plan (later groups at min) within budget."""
        lo, hi = 0, grid_steps(group)
        trial = dict(ratios)
        trial[group.name] = grid_value(group, hi)
        if self._fits(trial, budget_ms):
            return grid_value(group, hi)
        while lo < hi:  # latency is monotone in a group's keep ratio
            mid = (lo + hi + 1) // 2
            trial[group.name] = grid_value(group, mid)
            lo, hi = (mid, hi) if self._fits(trial, budget_ms) else (lo, mid - 1)
        return grid_value(group, lo)

    def walk(self, budget_ms: float, actions: list[float] | None = None, generator: torch.Generator | None = None,
             greedy: bool = False):
        """One episode: returns (states, raw actions, ratios). Replays ``actions`` when given; ``greedy`` takes
        the policy's mean action at every step (no exploration noise)."""
        ratios = {g.name: g.min_keep for g in self.groups}
        states, raw = [], []
        prev = 1.0
        for t, group in enumerate(self.groups):
            upper = self._upper(ratios, group, budget_ms)
            used = self._latency(self._plan(ratios)) / budget_ms
            state = self._features[t] + [used, prev, budget_ms / max(self.dense_ms, 1e-12), (upper - group.min_keep)]
            states.append(state)
            if actions is None:
                with torch.no_grad():
                    dist = self.policy.dist(torch.tensor([state], dtype=torch.float32))
                    noise = 0.0 if greedy else float(torch.randn((), generator=generator))
                    u = float(dist.mean[0] + dist.stddev[0] * noise)
            else:
                u = float(actions[t])
            raw.append(u)
            a = 1.0 / (1.0 + math.exp(-u))
            ratios[group.name] = snap_down(group, group.min_keep + a * (upper - group.min_keep))
            prev = a
        return states, raw, ratios

    def _budget(self, generator: torch.Generator) -> float:
        if self.constraints.max_latency_ms is not None:
            return self.constraints.max_latency_ms
        u = float(torch.rand((), generator=generator))
        return self.fastest_ms + u * (self.dense_ms - self.fastest_ms)

    # --- ask ---------------------------------------------------------------------------------------------------
    def before_ask(self, study: optuna.Study) -> None:
        self.learn(study)
        generator = torch.Generator().manual_seed(self.seed * 100_003 + len(study.trials))
        budget = self._budget(generator)
        greedy = self.greedy_every > 0 and len(study.trials) % self.greedy_every == self.greedy_every - 1
        _, raw, ratios = self.walk(budget, generator=generator, greedy=greedy)
        self._enqueue(study, ratios, {"rl_actions": [round(u, 6) for u in raw], "rl_budget_ms": budget})

    # --- tell: learn from every finished episode not seen yet (on resume: all of them, in order) ---------
    def reward(self, trial: optuna.trial.FrozenTrial) -> float:
        accuracy = float(trial.user_attrs.get("accuracy", trial.values[0] if trial.values else 0.0))
        return accuracy - (0.0 if trial.user_attrs.get("feasible", True) else INFEASIBLE_PENALTY)

    def learn(self, study: optuna.Study) -> int:
        """Consume finished episodes recorded in ``study``; returns how many policy updates ran."""
        updates = 0
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
            if trial.number in self._consumed or "rl_actions" not in trial.user_attrs:
                continue
            self._consumed.add(trial.number)
            if trial.state != TrialState.COMPLETE or len(trial.user_attrs["rl_actions"]) != len(self.groups):
                continue
            self.observe(list(trial.user_attrs["rl_actions"]), float(trial.user_attrs["rl_budget_ms"]), self.reward(trial))
            if len(self._pending) >= self.batch:
                self._update()
                updates += 1
        return updates

    def observe(self, actions: list[float], budget_ms: float, reward: float) -> None:
        states, _, _ = self.walk(budget_ms, actions)  # deterministic given the actions: rebuilt, not stored
        with torch.no_grad():
            old = self.policy.dist(torch.tensor(states, dtype=torch.float32)).log_prob(torch.tensor(actions)).sum()
        self._pending.append((states, actions, budget_ms, reward, float(old)))

    def _baseline(self, fractions: torch.Tensor) -> torch.Tensor:
        """Expected reward at a budget: least squares on [1, b, b²] over recent episodes (mean when few)."""
        hist = self._history[-64:]
        if len(hist) < 8:
            mean = sum(r for _, r in hist) / len(hist) if hist else 0.0
            return torch.full_like(fractions, mean)
        x = torch.tensor([[1.0, f, f * f] for f, _ in hist], dtype=torch.float64)
        y = torch.tensor([[r] for _, r in hist], dtype=torch.float64)
        coef = torch.linalg.lstsq(x, y).solution.squeeze(1)
        feats = torch.stack([torch.ones_like(fractions), fractions, fractions * fractions], 1).double()
        return (feats @ coef).float()

    def _update(self) -> None:
        """PPO-style: a few clipped policy-gradient steps on the recent episodes (sample-efficient enough for
        the tens-to-hundreds of episodes a pruning search affords)."""
        self._buffer.extend(self._pending)
        self._history.extend((b / max(self.dense_ms, 1e-12), r) for _, _, b, r, _ in self._pending)
        self._pending = []
        episodes = self._buffer[-self.replay :]
        fractions = torch.tensor([b / max(self.dense_ms, 1e-12) for _, _, b, _, _ in episodes])
        rewards = torch.tensor([r for _, _, _, r, _ in episodes])
        advantages = rewards - self._baseline(fractions)
        advantages = advantages / advantages.std().clamp_min(1e-3) if len(episodes) > 1 else advantages
        steps = len(self.groups)
        states = torch.tensor([row for st, _, _, _, _ in episodes for row in st], dtype=torch.float32)
        actions = torch.tensor([u for _, a, _, _, _ in episodes for u in a], dtype=torch.float32)
        old = torch.tensor([o for _, _, _, _, o in episodes])
        for _ in range(self.epochs):
            logp = self.policy.dist(states).log_prob(actions).view(len(episodes), steps).sum(1)
            ratio = (logp - old).clamp(-20, 20).exp()
            surrogate = torch.min(ratio * advantages, ratio.clamp(1 - self.clip, 1 + self.clip) * advantages)
            loss = -surrogate.mean()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
