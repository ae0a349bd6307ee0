"""Unstructured (local/global) and N:M sparsity: exact counts, valid patterns, permanent masks, ORT equality."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from autoprune.errors import UserError
from autoprune.models import create_model
from autoprune.onnx_export import onnx_bytes, ort_predict, ort_session
from autoprune.plan import PruningPlan
from autoprune.pruning import nm_holds, prune, pruned_metrics
from autoprune.pruning.unstructured import make_permanent, prunable_layers

SHAPE = (1, 3, 32, 32)


def _resnet18():
    torch.manual_seed(0)
    return create_model("resnet18", num_classes=10).eval()


def test_local_sparsity_is_exact_per_layer():
    model = _resnet18()
    targets = {"layer1.0.conv1": 0.5, "layer3.1.conv2": 0.3, "fc": None}
    plan = PruningPlan(layer_sparsity={"layer1.0.conv1": 0.5, "layer3.1.conv2": 0.3})
    result = prune(model, plan, torch.zeros(SHAPE))
    for name, target in targets.items():
        layer = result.sparsity.layer(name)
        expected = 0 if target is None else round(target * layer.numel)
        assert layer.zeros == expected
    # layers not named keep every weight
    assert result.sparsity.layer("layer2.0.conv1").zeros == 0


def test_global_sparsity_uses_one_threshold():
    model = _resnet18()
    layers = prunable_layers(model)
    total = sum(m.weight.numel() for m in layers.values())
    result = prune(model, PruningPlan(global_sparsity=0.7), torch.zeros(SHAPE))
    zeroed = sum(int((m.weight == 0).sum()) for m in layers.values())
    assert zeroed == round(0.7 * total)
    # one threshold: every surviving weight is at least as large as every pruned one was
    survivors = torch.cat([m.weight[m.weight != 0].abs() for m in layers.values()])
    per_layer = [result.sparsity.layer(n).sparsity for n in layers]
    assert survivors.min() > 0
    assert max(per_layer) - min(per_layer) > 0.1  # global ranking spreads sparsity unevenly across layers
    assert result.sparsity.layer("fc").zeros == 0  # the classifier is never pruned


@pytest.mark.parametrize("pattern", ["2:4", "1:4", "4:8"])
def test_nm_pattern_holds_exactly_and_exports(pattern):
    n, m = map(int, pattern.split(":"))
    model = _resnet18()
    result = prune(model, PruningPlan(nm={"*": pattern}), torch.zeros(SHAPE))
    covered = [layer for layer in result.sparsity.layers if layer.nm]
    assert {layer.name for layer in covered} == {
        name for name, mod in prunable_layers(model).items() if mod.weight.shape[1] % m == 0
    }
    modules = dict(model.named_modules())
    for layer in covered:
        assert nm_holds(modules[layer.name].weight, n, m)
        assert layer.zeros == layer.numel * (m - n) // m  # random init has no zeros of its own
    x = torch.randn(2, *SHAPE[1:])
    session = ort_session(onnx_bytes(model, SHAPE))
    np.testing.assert_allclose(ort_predict(session, x.numpy()), model(x).detach().numpy(), rtol=1e-3, atol=1e-4)


def test_nm_check_detects_a_violation():
    weight = torch.ones(4, 8)
    assert not nm_holds(weight, 2, 4)
    weight[:, [0, 1, 4, 5]] = 0
    assert nm_holds(weight, 2, 4)


def test_structured_and_sparse_together_and_metrics():
    model = _resnet18()
    dense = pruned_metrics(_resnet18(), SHAPE)
    plan = PruningPlan(keep_ratios={"layer1.0.conv1": 0.5}, global_sparsity=0.5, nm={"layer4.0.conv1": "2:4"})
    result = prune(model, plan, torch.zeros(SHAPE))
    assert model.layer1[0].conv1.out_channels == 32
    metrics = pruned_metrics(model, SHAPE)
    assert metrics["params"] < dense["params"]
    assert metrics["nonzero_params"] == metrics["params"] - result.sparsity.zeros - _zero_non_weights(model)
    assert metrics["compressed_bytes"] < 0.75 * metrics["dense_bytes"]
    assert metrics["layer_sparsity"]["layer4.0.conv1"] >= 0.5
    assert nm_holds(model.layer4[0].conv1.weight, 2, 4)


def _zero_non_weights(model: nn.Module) -> int:
    weights = {id(m.weight) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    return sum(int((p == 0).sum()) for p in model.parameters() if id(p) not in weights)


def test_masks_leave_no_parameters_or_hooks():
    model = _resnet18()
    torch_prune.l1_unstructured(model.layer1[0].conv2, "weight", amount=0.25)  # a user's own reparametrisation
    result = prune(model, PruningPlan(layer_sparsity={"layer1.0.conv1": 0.4}), torch.zeros(SHAPE))
    names = [n for n, _ in model.named_parameters()] + [n for n, _ in model.named_buffers()]
    assert not [n for n in names if n.endswith(("_orig", "_mask"))]
    assert all(not m._forward_pre_hooks for m in model.modules())
    assert result.sparsity.layer("layer1.0.conv2").sparsity == pytest.approx(0.25, abs=1 / 36864)
    make_permanent(model)  # idempotent
    # masks re-apply after an update that revived pruned weights
    with torch.no_grad():
        model.layer1[0].conv1.weight.add_(1.0)
    result.masks.apply(model)
    assert result.sparsity.layer("layer1.0.conv1").zeros == int((model.layer1[0].conv1.weight == 0).sum())


def test_same_plan_and_seed_give_the_same_model():
    plan = PruningPlan(keep_ratios={"conv1": 0.5, "layer2.0.conv1": 0.25}, importance="random", global_sparsity=0.3)
    a, b = _resnet18(), _resnet18()
    prune(a, plan, torch.zeros(SHAPE), seed=3)
    prune(b, plan, torch.zeros(SHAPE), seed=3)
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), name


@pytest.mark.parametrize(
    "plan_kwargs, needle",
    [
        ({"layer_sparsity": {"layer1.0.conv9": 0.5}}, "layer1.0.conv1"),
        ({"layer_sparsity": {"layer1.0.conv1": 1.0}}, "outside [0, 1)"),
        ({"nm": {"conv1": "2:4"}}, "divisible by 4"),
        ({"nm": {"layer1.0.conv1": "4:2"}}, "0 < N < M"),
        ({"global_sparsity": -0.1}, "outside [0, 1)"),
    ],
)
def test_bad_sparsity_entries_are_user_errors(plan_kwargs, needle):
    with pytest.raises(UserError, match=None) as info:
        prune(_resnet18(), PruningPlan(**plan_kwargs), torch.zeros(SHAPE))
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_plan_round_trips_and_stays_backwards_compatible():
    old = {"keep_ratios": {"conv1": 0.5}, "importance": "l1", "alignment": 8}
    assert PruningPlan.from_dict(old).to_dict() == old
    new = PruningPlan(keep_ratios={"conv1": 0.5}, layer_sparsity={"fc": 0.2}, global_sparsity=0.1, nm={"*": "2:4"})
    assert PruningPlan.from_dict(new.to_dict()) == new
    with pytest.raises(UserError, match="unknown field"):
        PruningPlan.from_dict({"keep_ratio": {}})
