"""Models Torch-Pruning cannot trace or cannot prune consistently give a one-line UserError naming the model,
the layer or op, and why - not a raw traceback or a silently broken model.

Not covered, because no check can see it: a branch the example input does not take while tracing (Python
``if`` on data) leaves the layers in it out of the graph; pruning their producers then breaks the model only
on inputs that take the branch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autoprune.errors import UserError
from autoprune.plan import PruningPlan
from autoprune.pruning import apply_plan, generate_space

SHAPE = (1, 3, 16, 16)


class FunctionalConv(nn.Module):
    """The second convolution is ``F.conv2d`` on a bare parameter: Torch-Pruning has to guess its layout."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.w = nn.Parameter(torch.randn(8, 8, 3, 3))
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(nn.functional.conv2d(self.conv(x), self.w).mean((2, 3)))


class ArgmaxOutput(nn.Module):
    """Returns class ids: nothing is reachable by autograd from the output."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3))).argmax(dim=1)


class NeedsWideInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        if x.shape[-1] < 64:
            raise ValueError(f"expects at least 64 pixels wide, got {x.shape[-1]}")
        return self.fc(self.conv(x).mean((2, 3)))


def test_functional_parameter_is_reported_with_layer_and_parameter():
    model = FunctionalConv().eval()
    space = generate_space(model, "functional", SHAPE)
    assert space.group_names == ["conv"]  # Torch-Pruning does build a graph; it just gets w's layout wrong
    with pytest.raises(UserError) as info:
        apply_plan(model, PruningPlan.uniform(space.group_names, 0.5), torch.zeros(SHAPE))
    message = str(info.value)
    assert "FunctionalConv" in message and "after layer 'conv'" in message and "(w)" in message
    assert "\n" not in message


def test_non_differentiable_output_is_reported():
    with pytest.raises(UserError, match=r"ArgmaxOutput: none of its 2 conv/linear layers \(first 'conv'\)"):
        generate_space(ArgmaxOutput().eval(), "argmax", SHAPE)


def test_forward_failing_while_tracing_is_reported():
    with pytest.raises(UserError, match=r"NeedsWideInput: .* fails in forward\(\) \(ValueError: expects at least 64"):
        generate_space(NeedsWideInput().eval(), "wide", SHAPE)
