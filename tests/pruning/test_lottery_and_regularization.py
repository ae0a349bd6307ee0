"""Lottery-ticket rewinding and regularize-then-cut schedules on ResNet-18 with real digits batches."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from autoprune.data import load_data
from autoprune.errors import UserError
from autoprune.models import create_model
from autoprune.plan import PruningPlan
from autoprune.pruning.lottery import lottery, round_sparsity
from autoprune.pruning.regularization import group_norms, regularize
from autoprune.pruning.schedules import run_schedule
from autoprune.pruning.structured import apply_plan
from autoprune.pruning.unstructured import prunable_layers

SHAPE = (1, 3, 16, 16)
GROUP = "layer1.0.conv1"


@pytest.fixture
def loader():
    """A fresh seeded loader per test: a shared one would hand each test other batches depending on order."""
    return load_data("digits", SHAPE[2:], 0).loader("train", 4, 0)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("resnet18", 10).eval()


def _zeros(model) -> tuple[int, int]:
    layers = prunable_layers(model)
    return sum(int((m.weight == 0).sum()) for m in layers.values()), sum(m.weight.numel() for m in layers.values())


def test_round_sparsity_is_geometric():
    assert round_sparsity(0.875, 1, 3) == pytest.approx(0.5)  # half of what remains, each round
    assert round_sparsity(0.875, 2, 3) == pytest.approx(0.75)
    assert round_sparsity(0.875, 3, 3) == pytest.approx(0.875)


def test_lottery_rewinds_survivors_and_reaches_the_target_exactly(loader):
    model = _model()
    initial = copy.deepcopy(model.state_dict())
    plan = PruningPlan(keep_ratios={GROUP: 0.5}, global_sparsity=0.8)
    seen = []

    def check(round_, net, masks, rewind_state):
        state = net.state_dict()
        for name, mask in masks.masks.items():
            weight, saved = state[f"{name}.weight"], rewind_state[f"{name}.weight"]
            assert torch.equal(weight[mask], saved[mask])  # survivors hold their rewind-step values
            assert int((weight[~mask] != 0).sum()) == 0
        assert torch.equal(state["layer2.0.bn1.running_var"], rewind_state["layer2.0.bn1.running_var"])
        zeros, total = _zeros(net)
        seen.append((round_, zeros, round(round_sparsity(0.8, round_, 3) * total)))
        # the rewind point is an early trained state, not the initialization
        assert not torch.equal(rewind_state["conv1.weight"], initial["conv1.weight"])

    result = lottery(model, plan, torch.zeros(SHAPE), loader, steps=10, rounds=3, lr=0.01, rewind_step=2,
                     on_rewind=check)
    assert [r for r, _, _ in seen] == [1, 2, 3]
    assert all(zeros == expected for _, zeros, expected in seen)  # each round's geometric target, exactly
    zeros, total = _zeros(model)
    assert zeros == round(0.8 * total)  # exact after the last training phase
    assert model.layer1[0].conv1.out_channels == 32


def test_lottery_local_sparsity_and_plan_without_sparsity(loader):
    model = _model()
    plan = PruningPlan(layer_sparsity={"layer2.0.conv2": 0.9})
    result = lottery(model, plan, torch.zeros(SHAPE), loader, steps=4, rounds=2)
    assert result.sparsity.layer("layer2.0.conv2").zeros == round(0.9 * 128 * 128 * 9)
    assert result.sparsity.layer("layer2.0.conv1").zeros == 0  # local: no other layer touched
    with pytest.raises(UserError, match="global_sparsity or layer_sparsity"):
        run_schedule(_model(), PruningPlan(keep_ratios={GROUP: 0.5}), "lottery", torch.zeros(SHAPE), loader, 2)


@pytest.mark.parametrize("kind", ["slimming", "group-lasso"])
def test_regularization_shrinks_the_pruned_groups_and_the_cut_removes_them(loader, kind):
    plan = PruningPlan(keep_ratios={GROUP: 0.5})
    example = torch.zeros(SHAPE)
    plain, shrunk = _model(), _model()
    fresh = load_data("digits", SHAPE[2:], 0).loader("train", 4, 0)
    regularize(plain, plan, example, loader, 10, kind, strength=0.0)
    slices = regularize(shrunk, plan, example, fresh, 10, kind, strength=3.0)  # the same batches as `plain`
    before = group_norms(kind, slices)[GROUP]
    reference = group_norms(kind, regularize(_model(), plan, example, loader, 0, kind, 0.0))[GROUP]
    unregularized = group_norms(kind, regularize(plain, plan, example, loader, 0, kind, 0.0))[GROUP]
    assert set(slices) == {GROUP}  # only the group the plan prunes
    assert before.sum() < 0.8 * unregularized.sum()  # shrunk versus the same steps without the penalty
    assert unregularized.sum() > 0.9 * reference.sum()  # the plain run alone does not shrink it
    top = torch.sort(torch.argsort(before, descending=True, stable=True)[:32]).values
    gamma = shrunk.layer1[0].bn1.weight.detach().clone()
    apply_plan(shrunk, PruningPlan(keep_ratios={GROUP: 0.5}, importance={"slimming": "bn_scale"}.get(kind, "l2")),
               example)
    assert shrunk.layer1[0].conv1.out_channels == 32
    if kind == "slimming":
        assert torch.equal(shrunk.layer1[0].bn1.weight.detach(), gamma[top])  # exactly the shrunk half went
    else:
        # l2 also reads conv1's rows, which the penalty leaves alone (BN makes them scale-invariant), so the
        # cut mostly, not exactly, follows the penalized norm
        kept = [int((gamma == v).nonzero()[0]) for v in shrunk.layer1[0].bn1.weight.detach()]
        removed = [i for i in range(64) if i not in kept]
        assert len(set(kept) & set(top.tolist())) >= 24
        assert before[kept].mean() > 1.1 * before[removed].mean()


@pytest.mark.parametrize("schedule", ["slimming", "group-lasso"])
def test_regularized_schedules_reach_the_plan(loader, schedule):
    model = _model()
    plan = PruningPlan(keep_ratios={GROUP: 0.5}, layer_sparsity={"layer2.0.conv1": 0.5})
    result = run_schedule(model, plan, schedule, torch.zeros(SHAPE), loader, steps=6, reg_strength=0.1)
    assert model.layer1[0].conv1.out_channels == 32
    assert result.sparsity.layer("layer2.0.conv1").zeros == 128 * 64 * 9 // 2


def test_prune_command_runs_lottery_and_slimming(tmp_path, capsys):
    from autoprune.cli import main

    common = ["--model", "resnet18", "--data", "digits", "--input-shape", "1x3x16x16", "--finetune-steps", "4",
              "--json"]
    assert main(["prune", *common, "--sparsity", "0.7", "--schedule", "lottery", "--rounds", "2",
                 "--out", str(tmp_path / "lt")]) == 0
    metrics = json.loads(capsys.readouterr().out)
    layers = metrics["achieved_sparsity"]["layers"]
    total = sum(v["weights"] for k, v in layers.items() if k != "fc")
    assert sum(v["zeros"] for k, v in layers.items() if k != "fc") == round(0.7 * total)
    assert metrics["plan"]["global_sparsity"] == 0.7 and metrics["schedule"] == "lottery"
    assert main(["prune", *common, "--ratio", "0.5", "--schedule", "slimming", "--reg-strength", "0.1",
                 "--out", str(tmp_path / "sl")]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["plan"]["importance"] == "bn_scale"  # the criterion the cut actually used
    assert 0.2 < metrics["params"] / sum(p.numel() for p in create_model("resnet18", 10).parameters()) < 0.3
    assert main(["prune", *common, "--ratio", "0.5", "--schedule", "group-lasso", "--importance", "l1",
                 "--out", str(tmp_path / "gl")]) == 2
    assert "cuts by l2" in capsys.readouterr().err
