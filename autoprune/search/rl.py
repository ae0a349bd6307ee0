"""``rl``: a resource-constrained pruning agent in the style of AMC (He et al., 2018).

The agent walks the searched groups in network order. At each step it observes an embedding of the group
(position, channels, kernel, stride, its share of the FLOPs, the share of the FLOPs still to come, latency
budget used so far, its previous action, the budget, the room left for this group) and emits a keep ratio.
Actions are *bounded*: the ratio is squashed into ``[min_keep, upper]`` where ``upper`` is the largest grid
ratio for which the plan still meets the latency (and parameter) budget with every later group at its
``min_keep``, so every plan it proposes meets the budget. With no ``--max-latency-ms`` a budget between the
fastest and the dense latency is given to the agent each episode (evenly spread during warm-up, from the
fastest plan up; then drawn at random), so one budget-conditioned policy covers the whole front.

Exploration follows AMC: the first ``warmup`` episodes act uniformly at random within the bounds; after that
the policy's mean action is perturbed by truncated-normal noise whose scale decays exponentially from
``sigma_start`` to ``sigma_end`` over the trial budget, so the last episodes exploit what was learned.

The policy is a small torch MLP (the mean of a Gaussian in logit space), trained with clipped policy-gradient
(PPO-style) steps on the evaluator's reward (the candidate's accuracy, minus a penalty when it misses
``--min-accuracy`` or ``--max-params``) against a budget-dependent baseline (the moving expectation of the
reward). Each update learns from the recent episodes plus the ``elite`` best ones seen so far (elite replay),
so the policy keeps being pulled toward the best plans. Its actions and noise scale are stored on the trial
(``rl_actions``, ``rl_budget_ms``, ``rl_sigma``), so the policy is rebuilt on resume by replaying the
recorded episodes.

Depth (``--depth``): an episode first walks the space's droppable blocks in network order, one step each, and
drops a block when its action is positive (the squashed action above one half), or when keeping it would leave
the budget out of reach even with every later block dropped and every group at its ``min_keep`` (the same bound
as the width steps'); then it walks the groups as above, with the budget bounds computed on the shallower model
(a dropped block's groups are ignored). So every plan meets the budget whenever the fastest plan (every block
dropped, every group at its minimum) does, including budgets no width-only plan meets. Block steps share the policy
with width steps; the last state feature tells them apart, and their other features describe the block (its
position, its share of the FLOPs and of the FLOPs after it).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import replace

import optuna
import torch
from optuna.trial import TrialState
from torch import nn

from autoprune.plan import PruningPlan, inside
from autoprune.search.store import TrialOutcome, declare_strategy_attrs, decode_trials
from autoprune.search.strategies import (
    Strategy, extreme_plan, grid_steps, grid_value, register_strategy, searched_groups, smallest_plan, snap_down,
)

STATE_DIM = 11
INFEASIBLE_PENALTY = 0.1
MEAN_BOUND = 4.0
WARMUP_SIGMA = 0.0  # recorded as ``rl_sigma`` of a warm-up episode (uniform actions, not policy samples)
ACTIONS, BUDGET, SIGMA = declare_strategy_attrs("rl", "rl_actions", "rl_budget_ms", "rl_sigma")


def _layer_flops(layer) -> float:
    """A dense layer's multiply-accumulates as the state features count them (output size as input / stride)."""
    out_hw = max(1, layer.in_h // max(1, layer.stride)) * max(1, layer.in_w // max(1, layer.stride))
    return layer.in_channels / layer.groups * layer.out_channels * layer.kernel ** 2 * out_hw


@contextlib.contextmanager
def _single_thread():
    """Run the agent's tiny tensor ops on one thread: intra-op threads only add synchronisation, which on a busy
    machine made an 80-episode run 5-20x slower (measured: 1.0 s on one thread vs 5-22 s on two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _Policy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(STATE_DIM, 32), nn.Tanh(), nn.Linear(32, 1))

    def mean(self, states: torch.Tensor) -> torch.Tensor:
        # bounded: beyond |u| = 4 the squashed action barely moves, and an unbounded mean can run off there
        return MEAN_BOUND * torch.tanh(self.net(states).squeeze(-1) / MEAN_BOUND)

    def log_prob(self, states: torch.Tensor, actions: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return torch.distributions.Normal(self.mean(states), sigma).log_prob(actions)


@register_strategy
class RLStrategy(Strategy):
    """AMC-style agent with bounded actions; see the module docstring."""

    name = "rl"
    batch = 2  # new episodes per policy update
    replay = 16  # recent episodes each update learns from
    elite = 4  # best episodes so far, replayed in every update
    epochs = 16  # gradient steps per update
    clip = 0.2
    target_kl = 0.05  # an update stops early once the policy moved this far (mean KL per episode)
    lr = 0.01
    imitation = 1.0  # weight of the self-imitation loss on the elite episodes
    warmup = 8  # uniform-random episodes before the policy acts (capped at a quarter of the trial budget)
    sigma_start = 2.0  # exploration noise (logit space) after warm-up ...
    sigma_end = 0.5  # ... decaying exponentially to this at the last episode
    sigma_for_warmup = 1.5  # the scale used to score warm-up actions in the policy-gradient steps

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        torch.manual_seed(self.seed)
        self.policy = _Policy()
        # two optimizers: the two losses differ in scale by orders of magnitude (the policy-gradient one grows as
        # the noise shrinks), and a shared Adam state turns a sudden large gradient into a wild step
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.lr)
        self.imitation_optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.lr)
        self.groups = searched_groups(self.space)
        self._consumed: set[int] = set()
        self._pending: list[tuple] = []  # (states, actions, budget_ms, reward, sigma)
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
                flops[layer.out_group] += _layer_flops(layer)
                first.setdefault(layer.out_group, layer)
        total = sum(flops.values()) or 1.0
        widest = max((g.channels for g in self.groups), default=1)
        n = max(1, len(self.groups))
        shares = [flops[g.name] / total for g in self.groups]
        rows = []
        for t, g in enumerate(self.groups):
            layer = first.get(g.name)
            kernel = getattr(layer, "kernel", 1)
            stride = getattr(layer, "stride", 1)
            rows.append([t / n, math.log(g.channels + 1) / math.log(widest + 1), kernel / 7, stride / 2, shares[t],
                         sum(shares[t + 1 :])])
        return rows

    def _block_features(self, blocks: list[str]) -> list[list[float]]:
        """Per droppable block: position, its share of the FLOPs and the share after it (the width features'
        slots for channels, kernel and stride hold 0)."""
        flops = [_layer_flops(layer) for layer in self.space.layers]
        total = sum(flops) or 1.0
        names = [layer.name for layer in self.space.layers]
        rows = []
        for k, block in enumerate(blocks):
            idx = [i for i, n in enumerate(names) if inside(n, [block])]
            share = sum(flops[i] for i in idx) / total
            after = sum(flops[max(idx) + 1:]) / total if idx else 0.0
            rows.append([k / max(1, len(blocks)), 0.0, 0.0, 0.0, share, after])
        return rows

    def _with_drops(self, ratios: dict[str, float], drops: tuple[str, ...]) -> PruningPlan:
        plan = self._plan(ratios)
        return replace(plan, drop_blocks=drops) if drops else plan

    def _fits(self, ratios: dict[str, float], budget_ms: float, drops: tuple[str, ...] = ()) -> bool:
        plan = self._with_drops(ratios, drops)
        if self.costs is None:
            return True
        if self.costs.latency_ms(plan) > budget_ms * (1 + 1e-9):
            return False
        return self.constraints.max_params is None or self.costs.params(plan) <= self.constraints.max_params

    def _upper(self, ratios: dict[str, float], group, budget_ms: float, drops: tuple[str, ...] = ()) -> float:
        """The largest grid ratio of ``group`` that keeps the plan (later groups at min) within budget."""
        lo, hi = 0, grid_steps(group)
        trial = dict(ratios)
        trial[group.name] = grid_value(group, hi)
        if self._fits(trial, budget_ms, drops):
            return grid_value(group, hi)
        while lo < hi:  # latency is monotone in a group's keep ratio
            mid = (lo + hi + 1) // 2
            trial[group.name] = grid_value(group, mid)
            lo, hi = (mid, hi) if self._fits(trial, budget_ms, drops) else (lo, mid - 1)
        return grid_value(group, lo)

    def steps(self) -> int:
        """Actions per episode: one per droppable block searched, then one per group."""
        return len(self.depth_blocks()) + len(self.groups)

    def _act(self, state: list[float], replayed: float | None, generator, sigma: float) -> float:
        if replayed is not None:
            return float(replayed)
        if sigma == WARMUP_SIGMA:
            p = float(torch.rand((), generator=generator)) * 0.98 + 0.01
            return math.log(p / (1 - p))
        with torch.no_grad():
            mean = float(self.policy.mean(torch.tensor([state], dtype=torch.float32))[0])
        noise = float(torch.randn((), generator=generator)) if generator is not None else 0.0
        return mean + sigma * max(-2.0, min(2.0, noise))  # truncated at two standard deviations

    def walk(self, budget_ms: float, actions: list[float] | None = None, generator: torch.Generator | None = None,
             sigma: float = 0.0):
        """One episode: returns (states, raw actions, ratios, dropped blocks). Replays ``actions`` when given;
        otherwise acts with the policy's mean plus truncated-normal noise of scale ``sigma`` (``WARMUP_SIGMA``:
        uniformly at random within the bounds)."""
        blocks = self.depth_blocks()
        ratios = {g.name: g.min_keep for g in self.groups}
        states, raw = [], []
        drops: list[str] = []
        prev = 1.0
        fraction = budget_ms / max(self.dense_ms, 1e-12)
        for k, (block, features) in enumerate(zip(blocks, self._block_features(blocks))):
            used = self._latency(self._with_drops(ratios, tuple(drops))) / budget_ms
            # bounded like the width steps: keep the block only if the budget can still be met with every later
            # block dropped and every group at its min_keep
            can_keep = self._fits(ratios, budget_ms, (*drops, *blocks[k + 1:]))
            state = features + [used, prev, fraction, 1.0 if can_keep else 0.0, 1.0]
            states.append(state)
            u = self._act(state, None if actions is None else actions[k], generator, sigma)
            raw.append(u)
            if u > 0 or not can_keep:
                drops.append(block)
            prev = 1.0 / (1.0 + math.exp(-u))
        dropped = tuple(drops)
        for t, group in enumerate(self.groups):
            upper = self._upper(ratios, group, budget_ms, dropped)
            used = self._latency(self._with_drops(ratios, dropped)) / budget_ms
            state = self._features[t] + [used, prev, fraction, (upper - group.min_keep), 0.0]
            states.append(state)
            u = self._act(state, None if actions is None else actions[len(blocks) + t], generator, sigma)
            raw.append(u)
            a = 1.0 / (1.0 + math.exp(-u))
            ratios[group.name] = snap_down(group, group.min_keep + a * (upper - group.min_keep))
            prev = a
        return states, raw, ratios, dropped

    def _budget(self, generator: torch.Generator, episode: int = -1) -> float:
        """The episode's latency budget: the limit when there is one; else stratified over [fastest, dense)
        during warm-up (episode 0 gets the fastest plan, so the front's fast end is seen from the start, as the
        uniform warm start gives the other learned strategies), then drawn uniformly."""
        if self.constraints.max_latency_ms is not None:
            return self.constraints.max_latency_ms
        warmup = min(self.warmup, self.trials // 4)
        u = episode / warmup if 0 <= episode < warmup else float(torch.rand((), generator=generator))
        fastest = self.fastest_ms
        if self.depth_blocks():  # the fastest plan drops every droppable block too
            fastest = self._latency(smallest_plan(self.space, self.importance, self.depth_blocks()))
        return fastest + u * (self.dense_ms - fastest)

    def sigma(self, episode: int) -> float:
        """Exploration scale of the ``episode``-th episode (0-based) of this study's RL episodes."""
        warmup = min(self.warmup, self.trials // 4)
        if episode < warmup:
            return WARMUP_SIGMA
        span = max(1, self.trials - warmup - 1)
        progress = min(1.0, (episode - warmup) / span)
        return self.sigma_start * (self.sigma_end / self.sigma_start) ** progress

    # --- ask ---------------------------------------------------------------------------------------------------
    def before_ask(self, study: optuna.Study) -> None:
        with _single_thread():
            self._before_ask(study)

    def _before_ask(self, study: optuna.Study) -> None:
        self.learn(study)
        trials = decode_trials(study)
        generator = torch.Generator().manual_seed(self.seed * 100_003 + len(trials))
        episode = sum(1 for t in trials if ACTIONS in t.strategy_attrs)
        budget = self._budget(generator, episode)
        sigma = self.sigma(episode)
        _, raw, ratios, drops = self.walk(budget, generator=generator, sigma=sigma)
        self._enqueue(study, ratios, {ACTIONS: [round(u, 6) for u in raw], BUDGET: budget, SIGMA: sigma}, drops)

    # --- tell: learn from every finished episode not seen yet (on resume: all of them, in order) ---------
    def reward(self, trial: TrialOutcome) -> float:
        """A completed episode's accuracy, less the penalty when it missed a limit."""
        return trial.measurement.accuracy - (0.0 if trial.feasible else INFEASIBLE_PENALTY)

    def learn(self, study: optuna.Study) -> int:
        """Consume finished episodes recorded in ``study``; returns how many policy updates ran."""
        with _single_thread():
            return self._learn(study)

    def _learn(self, study: optuna.Study) -> int:
        updates = 0
        for trial in decode_trials(study, (TrialState.COMPLETE, TrialState.FAIL)):
            if trial.number in self._consumed or ACTIONS not in trial.strategy_attrs:
                continue
            self._consumed.add(trial.number)
            actions = trial.strategy_attrs[ACTIONS]
            if trial.state != TrialState.COMPLETE or len(actions) != self.steps():
                continue
            self.observe(list(actions), float(trial.strategy_attrs[BUDGET]), self.reward(trial),
                         float(trial.strategy_attrs[SIGMA]))
            if len(self._pending) >= self.batch:
                self._update()
                updates += 1
        return updates

    def observe(self, actions: list[float], budget_ms: float, reward: float, sigma: float = 1.0) -> None:
        states, _, _, _ = self.walk(budget_ms, actions)  # deterministic given the actions: rebuilt, not stored
        self._pending.append((states, actions, budget_ms, reward, sigma))

    def _baseline(self, fractions: torch.Tensor) -> torch.Tensor:
        """Expected reward at a budget: least squares on [1, b, b²] over recent episodes (mean when few, or
        when every episode had the same budget)."""
        hist = self._history[-64:]
        mean = sum(r for _, r in hist) / len(hist) if hist else 0.0
        if len(hist) < 8 or max(f for f, _ in hist) - min(f for f, _ in hist) < 1e-9:
            return torch.full_like(fractions, mean)
        x = torch.tensor([[1.0, f, f * f] for f, _ in hist], dtype=torch.float64)
        y = torch.tensor([[r] for _, r in hist], dtype=torch.float64)
        coef = torch.linalg.lstsq(x, y).solution.squeeze(1)
        feats = torch.stack([torch.ones_like(fractions), fractions, fractions * fractions], 1).double()
        return (feats @ coef).float()

    def _episodes(self) -> list[tuple]:
        """The recent episodes plus the elite ones (highest reward above the budget baseline) seen so far."""
        recent = self._buffer[-self.replay :]
        older = self._buffer[: -self.replay] if len(self._buffer) > self.replay else []
        if not older or self.elite <= 0:
            return recent
        gains = self._baseline(torch.tensor([b / max(self.dense_ms, 1e-12) for _, _, b, _, _ in older]))
        ranked = sorted(range(len(older)), key=lambda i: older[i][3] - float(gains[i]), reverse=True)
        return recent + [older[i] for i in ranked[: self.elite]]

    def _update(self) -> None:
        """PPO-style: a few clipped policy-gradient steps on the recent and elite episodes (sample-efficient
        enough for the tens-to-hundreds of episodes a pruning search affords)."""
        self._buffer.extend(self._pending)
        self._history.extend((b / max(self.dense_ms, 1e-12), r) for _, _, b, r, _ in self._pending)
        self._pending = []
        episodes = self._episodes()
        fractions = torch.tensor([b / max(self.dense_ms, 1e-12) for _, _, b, _, _ in episodes])
        rewards = torch.tensor([r for _, _, _, r, _ in episodes])
        advantages = rewards - self._baseline(fractions)
        advantages = advantages / advantages.std().clamp_min(1e-3) if len(episodes) > 1 else advantages
        steps = self.steps()
        states = torch.tensor([row for st, _, _, _, _ in episodes for row in st], dtype=torch.float32)
        actions = torch.tensor([u for _, a, _, _, _ in episodes for u in a], dtype=torch.float32)
        sigma = torch.tensor([s if s != WARMUP_SIGMA else self.sigma_for_warmup
                              for _, _, _, _, s in episodes for _ in range(steps)], dtype=torch.float32)
        with torch.no_grad():  # the behaviour log-probabilities: the policy before this update
            old = self.policy.log_prob(states, actions, sigma).view(len(episodes), steps).sum(1)
        for _ in range(self.epochs):
            logp = self.policy.log_prob(states, actions, sigma).view(len(episodes), steps).sum(1)
            if float((old - logp).detach().mean()) > self.target_kl:
                break
            ratio = (logp - old).clamp(-20, 20).exp()
            surrogate = torch.min(ratio * advantages, ratio.clamp(1 - self.clip, 1 + self.clip) * advantages)
            loss = -surrogate.mean()
            self.optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(self.policy.parameters(), 1.0)
            self.optimizer.step()
        self._imitate_elite()

    def _imitate_elite(self) -> None:
        """Self-imitation (Oh et al., 2018): pull the policy's mean toward the actions of the best episodes so far
        whose reward beat the baseline, weighted by how much; with decaying noise the agent then explores
        around them."""
        if self.elite <= 0 or len(self._buffer) < 2:
            return
        gains = torch.tensor([r for _, _, _, r, _ in self._buffer]) - self._baseline(
            torch.tensor([b / max(self.dense_ms, 1e-12) for _, _, b, _, _ in self._buffer]))
        ranked = [i for i in sorted(range(len(self._buffer)), key=lambda i: float(gains[i]), reverse=True)
                  if float(gains[i]) > 0][: self.elite]
        if not ranked:
            return
        weights = torch.tensor([float(gains[i]) for i in ranked])
        weights = (weights / weights.sum()).repeat_interleave(self.steps())
        states = torch.tensor([row for i in ranked for row in self._buffer[i][0]], dtype=torch.float32)
        actions = torch.tensor([u for i in ranked for u in self._buffer[i][1]], dtype=torch.float32)
        actions = actions.clamp(-MEAN_BOUND, MEAN_BOUND)
        for _ in range(self.epochs):
            loss = (weights * (self.policy.mean(states) - actions) ** 2).sum() * self.imitation
            self.imitation_optimizer.zero_grad()
            loss.backward()
            self.imitation_optimizer.step()
