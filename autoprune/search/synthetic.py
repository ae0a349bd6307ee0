"""A synthetic pruning problem with a known answer, for testing and benchmarking strategies in milliseconds.

A chain of conv layers, one searched group each. Latency and parameters follow from the pruned shapes by
arithmetic (like the real cost model); accuracy drops with each group's pruned fraction by a per-group
sensitivity that the strategy cannot observe and must learn. The evaluator has the same ``evaluate(plan,
guidance)`` interface as the real one, and can be told to fail, return NaN or kill its own process on chosen
calls (to test failure handling with real failures).
"""

from __future__ import annotations

import math
import os
import random
import signal
import time
from dataclasses import dataclass

from autoprune.plan import PruningPlan
from autoprune.pruning.space import GroupSpec, LayerSpec, SearchSpace
from autoprune.search.store import Measurement, ModelFigures
from autoprune.search.strategies import Constraints


def synthetic_space(groups: int = 8, seed: int = 0, step: float = 0.05, min_keep: float = 0.2) -> SearchSpace:
    rng = random.Random(seed)
    specs, layers = [], []
    size, prev, prev_group = 32, 3, None
    for i in range(groups):
        channels = rng.choice([16, 32, 64, 128])
        stride = 2 if i in (groups // 3, 2 * groups // 3) else 1
        name = f"conv{i}"
        specs.append(GroupSpec(name, channels, min_keep, 1.0, step, (name,)))
        layers.append(LayerSpec(name, "conv", prev, channels, 3, stride, 1, 1, size, size, name, prev_group))
        size = max(1, size // stride)
        prev, prev_group = channels, name
    return SearchSpace("synthetic", (1, 3, 32, 32), 1, tuple(specs), tuple(layers))


@dataclass(frozen=True)
class SyntheticResult:
    """What the synthetic evaluator measured; the runner reads the same fields as from a real candidate."""

    plan: PruningPlan
    accuracy: float
    proxy_accuracy: float
    latency_ms: float
    params: int
    size_mb: float
    finetune_steps: int
    fidelity: str
    seconds: float
    pid: int = 0  # the process that evaluated it

    def attrs(self) -> Measurement:
        """What the study store records (latency "synthetic": arithmetic on the pruned shapes)."""
        return Measurement(
            plan=self.plan.to_dict(), accuracy=self.accuracy, proxy_accuracy=self.proxy_accuracy,
            per_class_accuracy=(), latency_ms=self.latency_ms, latency_provenance="synthetic",
            latency_source="autoprune.search.synthetic",
            stats=ModelFigures(self.params, self.params, 0, 0.0, self.size_mb), eval_seconds=round(self.seconds, 4),
            finetune_steps=self.finetune_steps, finetune_budget=self.finetune_steps, fidelity=self.fidelity,
            fidelity_reason="", curve=(), precision=self.plan.precision, eval_pid=self.pid,
        )


class SyntheticProblem:
    """Search space, cost predictor and evaluator of one synthetic problem (see the module docstring)."""

    def __init__(self, groups: int = 8, seed: int = 0, ms_per_gmac: float = 50.0) -> None:
        self.space = synthetic_space(groups, seed)
        rng = random.Random(seed + 1)
        # log-uniform sensitivities: a few groups matter a lot, most barely
        self.sensitivity = {g.name: 0.02 * math.exp(rng.uniform(0, math.log(25))) for g in self.space.groups}
        self.ms_per_gmac = ms_per_gmac

    def _shapes(self, plan: PruningPlan):
        channels = self.space.group_channels()
        for layer in self.space.layers:
            cin, cout, _ = layer.pruned_shape(plan, channels)
            out_hw = (layer.in_h // layer.stride) * (layer.in_w // layer.stride)
            yield cin, cout, layer.kernel, out_hw

    def latency_ms(self, plan: PruningPlan) -> float:
        macs = sum(cin * cout * k * k * hw for cin, cout, k, hw in self._shapes(plan))
        return 0.05 + self.ms_per_gmac * macs / 1e9

    def params(self, plan: PruningPlan) -> int:
        return sum(cin * cout * k * k for cin, cout, k, _ in self._shapes(plan))

    def accuracy(self, plan: PruningPlan) -> float:
        loss = sum(s * (1.0 - plan.keep_ratios.get(g, 1.0)) ** 2 for g, s in self.sensitivity.items())
        return 0.98 * math.exp(-loss)

    def plan(self, ratios: dict[str, float]) -> PruningPlan:
        return PruningPlan(keep_ratios=ratios, alignment=1)


class SyntheticEvaluator:
    """Evaluates plans of a :class:`SyntheticProblem`. ``fail_calls`` / ``nan_calls`` name (1-based) calls
    that raise / return NaN; ``die_once_marker``: the first call that finds no file there creates it and then
    SIGKILLs its own process (a worker dying mid-trial). ``sleep`` seconds per call emulate work."""

    def __init__(
        self,
        problem: SyntheticProblem,
        fail_calls: tuple[int, ...] = (),
        nan_calls: tuple[int, ...] = (),
        die_once_marker: str | None = None,
        sleep: float = 0.0,
        finetune_steps: int = 10,
    ) -> None:
        self.problem = problem
        self.fail_calls = fail_calls
        self.nan_calls = nan_calls
        self.die_once_marker = die_once_marker
        self.sleep = sleep
        self.finetune_steps = finetune_steps
        self.calls = 0

    def evaluate(self, plan: PruningPlan, guidance=None) -> SyntheticResult:
        self.calls += 1
        started = time.perf_counter()
        if self.die_once_marker:
            try:  # O_EXCL: of two workers racing here, exactly one creates the marker and dies
                fd = os.open(self.die_once_marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pass
            else:
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                os.kill(os.getpid(), signal.SIGKILL)
        if self.sleep:
            time.sleep(self.sleep)
        if self.calls in self.fail_calls:
            raise RuntimeError(f"synthetic failure on call {self.calls}")
        p = self.problem
        accuracy = p.accuracy(plan)
        if self.calls in self.nan_calls:
            accuracy = float("nan")
        latency, params = p.latency_ms(plan), p.params(plan)
        constraints = getattr(guidance, "constraints", None) or Constraints()
        skip = not constraints.cost_feasible(latency, params)
        return SyntheticResult(
            plan=plan, accuracy=accuracy * (0.9 if skip else 1.0), proxy_accuracy=accuracy * 0.9,
            latency_ms=latency, params=params, size_mb=params * 4 / 1e6,
            finetune_steps=0 if skip else self.finetune_steps, fidelity="proxy" if skip else "finetuned",
            seconds=time.perf_counter() - started, pid=os.getpid(),
        )


def synthetic_model(space: SearchSpace, classes: int = 10, seed: int = 0):
    """A real network of :func:`synthetic_space`'s shape: its ``conv<i>`` layers in a chain (ReLU between), global
    average pooling and a linear classifier, seeded. For strategies that read weights (``tp-global``, the
    Torch-Pruning warm start) on the synthetic problem."""
    import torch
    from torch import nn

    class SyntheticChain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for layer in space.layers:
                self.add_module(layer.name, nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel,
                                                      layer.stride, layer.padding))
            self.fc = nn.Linear(space.layers[-1].out_channels, classes)

        def forward(self, x):
            for layer in space.layers:
                x = torch.relu(getattr(self, layer.name)(x))
            return self.fc(x.mean(dim=(2, 3)))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SyntheticChain().eval()
