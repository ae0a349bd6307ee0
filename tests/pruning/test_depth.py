"""Depth pruning: droppable blocks found from the model, dropped before the width cut, priced as absent by the
cost model, round-tripped by plans and space files, and exported with ONNX equal to PyTorch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from torch import nn
from torchvision import models as tvm
from torchvision.models.mobilenetv2 import InvertedResidual

from autoprune.cli import main
from autoprune.errors import UserError
from autoprune.hardware import CostModel, load_profile
from autoprune.hardware.cost_model import DROPPED_ROW
from autoprune.hardware.signature import pruned_signature
from autoprune.models import classifier, create_model
from autoprune.onnx_export import onnx_bytes, ort_predict, ort_session
from autoprune.plan import PruningPlan
from autoprune.pruning import apply_plan, generate_space
from autoprune.pruning.depth import droppable_blocks, is_residual

SHAPE = (1, 3, 32, 32)
RESNET18_BLOCKS = ["layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1"]


def _resnet18() -> nn.Module:
    torch.manual_seed(0)
    return create_model("resnet18", 10).eval()


@pytest.fixture(scope="module")
def resnet_space():
    return generate_space(_resnet18(), "resnet18", SHAPE, alignment=4)


def _tiny_vit() -> nn.Module:
    torch.manual_seed(0)
    return tvm.VisionTransformer(image_size=32, patch_size=8, num_layers=3, num_heads=2, hidden_dim=32,
                                 mlp_dim=64, num_classes=10).eval()


def test_resnet18_blocks_without_downsampling_are_droppable():
    blocks = droppable_blocks(_resnet18(), torch.zeros(SHAPE))
    # every BasicBlock without a downsample branch (layer1.0 keeps 64 channels at stride 1), and nothing else
    model = _resnet18()
    expected = [n for n, m in model.named_modules() if type(m).__name__ == "BasicBlock" and m.downsample is None]
    assert blocks == expected == RESNET18_BLOCKS


def test_mobilenet_v2_inverted_residuals_with_a_skip_are_droppable():
    model = create_model("mobilenet_v2", 10).eval()
    expected = [n for n, m in model.named_modules() if isinstance(m, InvertedResidual) and m.use_res_connect]
    assert len(expected) == 10
    assert droppable_blocks(model, torch.zeros(SHAPE)) == expected


def test_vit_encoder_layers_are_droppable_but_not_the_encoder():
    model = _tiny_vit()
    blocks = droppable_blocks(model, torch.zeros(SHAPE))
    assert blocks == [f"encoder.layers.encoder_layer_{k}" for k in range(3)]
    # the encoder adds a position embedding (a parameter, not a function of its input): no residual
    assert not is_residual(model.encoder) and not is_residual(model.encoder.layers)


def test_space_records_blocks_with_their_inner_groups(resnet_space, tmp_path):
    assert resnet_space.block_names == RESNET18_BLOCKS
    inner = {b.name: b.groups for b in resnet_space.blocks}
    assert inner["layer3.1"] == ("layer3.1.conv1",)  # conv2 feeds the stage's residual group, which stays
    plan = PruningPlan(drop_blocks=("layer3.1", "layer1.1"))
    assert resnet_space.dropped_groups(plan) == {"layer3.1.conv1", "layer1.1.conv1"}
    data = resnet_space.to_dict()
    assert data["blocks"][3] == {"name": "layer3.1", "groups": ["layer3.1.conv1"]}

    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({**data, "blocks": ["layer2.1", {"name": "layer4.1"}]}))
    assert resnet_space.with_overrides(path).block_names == ["layer2.1", "layer4.1"]
    path.write_text(yaml.safe_dump({**data, "depth": False}))
    assert resnet_space.with_overrides(path).blocks == ()
    path.write_text(yaml.safe_dump({"model": "resnet18", "groups": []}))
    assert resnet_space.with_overrides(path).blocks == resnet_space.blocks  # an older file keeps depth
    path.write_text(yaml.safe_dump({**data, "blocks": ["layer2.0"]}))
    with pytest.raises(UserError, match="'layer2.0' is not a droppable block"):
        resnet_space.with_overrides(path)


def test_plan_drop_blocks_round_trip_sorted_and_validated(resnet_space):
    plan = PruningPlan(keep_ratios={"conv1": 0.5}, drop_blocks=["layer3.1", "layer1.1", "layer3.1"])
    assert plan.drop_blocks == ("layer1.1", "layer3.1")
    assert plan.to_dict()["drop_blocks"] == ["layer1.1", "layer3.1"]
    assert PruningPlan.from_dict(json.loads(plan.to_json())) == plan
    assert "drop_blocks" not in PruningPlan(keep_ratios={"conv1": 0.5}).to_dict()  # width plans keep their dict
    with pytest.raises(UserError, match="list of block names"):
        PruningPlan.from_dict({"drop_blocks": "layer1.1"})
    with pytest.raises(UserError, match="not a block name"):
        PruningPlan(drop_blocks=("",))
    with pytest.raises(UserError, match="'layer2.0', which is not a droppable block of resnet18"):
        resnet_space.validate_plan(PruningPlan(drop_blocks=("layer2.0",)))


def _layer_shape(module: nn.Module) -> tuple[int, int, int]:
    if isinstance(module, nn.Conv2d):
        return module.in_channels, module.out_channels, module.groups
    return module.in_features, module.out_features, 1


def test_drop_then_width_matches_the_cost_model(resnet_space):
    drops = ("layer1.1", "layer3.1")
    plan = PruningPlan.uniform(resnet_space.group_names, 0.5, alignment=4, drop_blocks=drops)
    model = apply_plan(_resnet18(), plan, torch.zeros(SHAPE))
    assert isinstance(model.layer1[1], nn.Identity) and isinstance(model.layer3[1], nn.Identity)
    assert model(torch.zeros(SHAPE)).shape == (1, 10)

    # every surviving conv/linear has the shape the space's arithmetic predicts; the dropped ones are gone
    channels = resnet_space.group_channels()
    layers = {m_name: _layer_shape(m) for m_name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    kept = [layer for layer in resnet_space.layers if not resnet_space.is_dropped(layer.name, plan)]
    assert len(kept) == len(resnet_space.layers) - 4  # two convs in each dropped BasicBlock
    assert layers == {layer.name: layer.pruned_shape(plan, channels) for layer in kept}

    for target in ("cpu", "jetson-nano"):
        cost = CostModel(load_profile(target), use_calibration=False)
        deep = cost.predict(resnet_space, plan)
        wide = cost.predict(resnet_space, PruningPlan.uniform(resnet_space.group_names, 0.5, alignment=4))
        rows = dict(deep.per_layer)
        assert rows[DROPPED_ROW.format(block="layer1.1")] == 0.0
        assert not any(name.startswith(("layer1.1.", "layer3.1.")) for name in rows)
        # the dropped layers' own prices (fixed costs included) are exactly what left the sum
        gone = sum(cost.layer_ms(pruned_signature(layer, plan, channels, cost.profile.precision))
                   for layer in resnet_space.layers if resnet_space.is_dropped(layer.name, plan))
        assert gone > 0
        assert deep.latency_ms == pytest.approx(wide.latency_ms - gone, rel=1e-9)
        weights = sum(m.weight.numel() + (m.bias.numel() if m.bias is not None else 0)
                      for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
        assert deep.params < wide.params and abs(deep.params - weights) < 0.01 * weights


def test_depth_pruned_models_export_with_onnx_equal_to_pytorch():
    for model, drops in ((_resnet18(), ("layer2.1", "layer4.1")), (_tiny_vit(), ("encoder.layers.encoder_layer_1",))):
        nn.init.normal_(classifier(model).weight, std=0.05)  # ViT zero-initialises its head
        space = generate_space(model, "m", SHAPE)
        plan = PruningPlan.uniform(space.group_names, 0.75, drop_blocks=drops)
        space.validate_plan(plan)
        apply_plan(model, plan, torch.zeros(SHAPE))
        x = torch.randn(2, *SHAPE[1:], generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            expected = model(x).numpy()
        scale = float(np.abs(expected).max())
        assert np.ptp(expected) > 1e-3 * scale > 0
        got = ort_predict(ort_session(onnx_bytes(model, SHAPE)), x.numpy())
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4 * scale)


def test_prune_command_drops_blocks(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["prune", "--model", "resnet18", "--ratio", "0.25", "--drop-blocks", "layer1.1,layer3.1",
                 "--out", str(out), "--json"])
    assert code == 0
    metrics = json.loads(capsys.readouterr().out)
    assert json.loads((out / "plan.json").read_text())["drop_blocks"] == ["layer1.1", "layer3.1"]
    model = torch.load(out / "model.pt", weights_only=False).eval()
    assert isinstance(model.layer3[1], nn.Identity)
    x = torch.randn(2, *SHAPE[1:])
    np.testing.assert_allclose(ort_predict(ort_session(out / "model.onnx"), x.numpy()),
                               model(x).detach().numpy(), rtol=1e-3, atol=1e-5)
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(yaml.safe_dump({"drop_blocks": ["layer3.1"]}))
    assert main(["prune", "--model", "resnet18", "--plan", str(plan_file), "--out", str(tmp_path / "o2"),
                 "--json"]) == 0
    depth_only = json.loads(capsys.readouterr().out)
    assert metrics["params"] < depth_only["params"] < sum(p.numel() for p in _resnet18().parameters())
    assert main(["prune", "--model", "resnet18", "--drop-blocks", "layer2.0", "--out", str(tmp_path / "o3")]) == 2
    assert "error: plan drops block 'layer2.0'" in capsys.readouterr().err
