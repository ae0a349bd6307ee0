"""Structured pruning across architectures: the pruned model is physically smaller, every layer has the
shape the search space's arithmetic predicts (the cost model's contract), and onnxruntime agrees with PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torchvision import models as tvm

from torchvision.models.maxvit import MaxVit

from autoprune.models import available_models, classifier, create_model
from autoprune.onnx_export import onnx_bytes, ort_predict, ort_session
from autoprune.plan import PruningPlan
from autoprune.pruning import apply_plan, generate_space, model_stats
from autoprune.pruning.attention import HeadAttention
from autoprune.pruning.capabilities import model_capabilities
from autoprune.pruning.opaque import ShuffleUnit, convert_shuffles, traced_as_leaves

SHAPE = (1, 3, 32, 32)
FAST = ["resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "regnet_x_400mf", "convnext_tiny"]
SLOW = ["resnet50", "densenet121", "googlenet", "vit_b_16"]


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = tvm.vit_b_16(image_size=32, num_classes=10) if name == "vit_b_16" else create_model(name, 10)
    # ViT zero-initialises its classifier; random weights make the output comparison meaningful everywhere
    nn.init.normal_(classifier(model).weight, std=0.05)
    return model.eval()


def _layer_shape(module: nn.Module) -> tuple[int, int, int]:
    if isinstance(module, nn.Conv2d):
        return module.in_channels, module.out_channels, module.groups
    return module.in_features, module.out_features, 1


def _check(name: str) -> None:
    model = _model(name)
    dense = model_stats(model, SHAPE)
    space = generate_space(model, name, SHAPE, alignment=4)
    plan = PruningPlan.uniform(space.group_names, 0.5, alignment=4)
    apply_plan(model, plan, torch.zeros(SHAPE))

    modules = dict(model.named_modules())
    channels = space.group_channels()
    predicted = {layer.name: layer.pruned_shape(plan, channels) for layer in space.layers}
    actual = {layer.name: _layer_shape(modules[layer.name]) for layer in space.layers}
    assert actual == predicted
    assert classifier(model).out_features == 10  # the output layer keeps its classes
    pruned = model_stats(model, SHAPE)
    assert pruned.params < 0.6 * dense.params and pruned.macs < 0.6 * dense.macs

    x = torch.randn(2, *SHAPE[1:], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(x).numpy()
    scale = float(np.abs(expected).max())
    assert expected.shape == (2, 10) and np.ptp(expected) > 1e-3 * scale > 0  # a live output, not a constant
    got = ort_predict(ort_session(onnx_bytes(model, SHAPE)), x.numpy())
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4 * scale)
    if name == "vit_b_16":
        blocks = [m for m in model.modules() if isinstance(m, HeadAttention)]
        assert len(blocks) == 12 and all(b.num_heads == 6 and b.head_dim == 64 for b in blocks)
        assert model.encoder.layers[0].mlp[0].out_features == 1536


@pytest.mark.parametrize("name", FAST)
def test_prune_run_export(name):
    _check(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_prune_run_export_large(name):
    _check(name)


def test_vit_space_counts_heads_and_mlp_units():
    space = generate_space(_model("vit_b_16"), "vit_b_16", SHAPE)
    groups = {g.name: g for g in space.groups}
    head = groups["encoder.layers.encoder_layer_3.self_attention.qkv"]
    assert (head.channels, head.unit) == (768, 64)
    assert groups["encoder.layers.encoder_layer_3.mlp.0"].channels == 3072
    qkv = next(layer for layer in space.layers if layer.name.endswith("encoder_layer_3.self_attention.qkv"))
    assert (qkv.in_h, qkv.out_factor) == (5, 3)  # 2x2 patches + the class token; fused q, k, v
    plan = PruningPlan(keep_ratios={head.name: 0.3})  # 3.6 heads -> 4 heads
    assert qkv.pruned_shape(plan, space.group_channels()) == (768, 3 * 4 * 64, 1)


def test_flattened_conv_channels_scale_the_linear_input():
    """AlexNet/VGG shape: a conv's channels unrolled by a flatten (3 x 3 positions each) into a linear layer."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(3), nn.Flatten(), nn.Linear(144, 32),
                          nn.ReLU(), nn.Linear(32, 10)).eval()
    space = generate_space(model, "tiny", SHAPE)
    fc = next(layer for layer in space.layers if layer.name == "4")
    assert (fc.in_group, fc.in_factor, fc.in_channels) == ("0", 9, 144)
    plan = PruningPlan.uniform(space.group_names, 0.5)
    apply_plan(model, plan, torch.zeros(SHAPE))
    assert fc.pruned_shape(plan, space.group_channels()) == (72, 16, 1) == _layer_shape(model[4])


# Coverage of `autoprune models`: a representative third runs here (every family, at its smallest input), on top
# of FAST and SLOW above; the whole list runs in bench/coverage.py (bench/results/coverage.md).
# HEAVY ones (15-50 s each on 2 cores) are skipped here and covered by the bench.
COVERAGE = ["squeezenet1_0", "squeezenet1_1", "shufflenet_v2_x0_5", "mnasnet0_5", "regnet_y_400mf", "resnet34", "swin_t"]
HEAVY = ["shufflenet_v2_x1_0", "mobilenet_v3_large", "efficientnet_b1", "regnet_x_800mf", "resnext50_32x4d", "swin_v2_t",
         "inception_v3", "efficientnet_v2_s", "densenet169", "wide_resnet50_2"]
IN_CI = set(FAST) | set(SLOW) | set(COVERAGE)


def _check_coverage(model: nn.Module, name: str, size: int) -> None:
    """Prune every width group to 60%, then: predicted shapes hold, the model is smaller, runs, and ONNX agrees."""
    shape = (1, 3, size, size)
    nn.init.normal_(classifier(model).weight, std=0.05)
    dense = sum(p.numel() for p in model.parameters())
    space = generate_space(model, name, shape)
    plan = PruningPlan.uniform(space.group_names, 0.6)
    apply_plan(model, plan, torch.zeros(shape))
    modules = dict(model.named_modules())
    channels = space.group_channels()
    assert {layer.name: layer.pruned_shape(plan, channels) for layer in space.layers} == {
        layer.name: _layer_shape(modules[layer.name]) for layer in space.layers}
    assert sum(p.numel() for p in model.parameters()) < 0.95 * dense
    x = torch.randn(2, *shape[1:], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(x).numpy()
    scale = float(np.abs(expected).max())
    assert expected.shape == (2, 10) and np.ptp(expected) > 1e-3 * scale > 0
    got = ort_predict(ort_session(onnx_bytes(model, shape)), x.numpy())
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4 * scale)


@pytest.mark.parametrize("name", COVERAGE + [
    pytest.param(name, marks=pytest.mark.skip(reason="heavy: covered by bench/coverage.py")) for name in HEAVY])
def test_listed_model_prunes_runs_and_exports(name):
    torch.manual_seed(0)
    _check_coverage(create_model(name, 10).eval(), name, model_capabilities(name).min_input)


def test_coverage_names_only_listed_models():
    assert IN_CI | set(HEAVY) <= set(available_models())
    assert len(IN_CI | set(HEAVY)) >= len(available_models()) // 3


def test_tiny_maxvit_prunes_its_convolutions_and_mlps():
    """MaxViT's attention is kept whole (its head reshape ties the head width to the input width)."""
    torch.manual_seed(0)
    model = MaxVit(input_size=(32, 32), stem_channels=8, partition_size=2, block_channels=[8, 16], block_layers=[1, 1],
                   head_dim=4, stochastic_depth_prob=0.0, num_classes=10).eval()
    names = generate_space(model, "maxvit", SHAPE).group_names
    assert "blocks.1.layers.0.layers.grid_attention.mlp_layer.1" in names
    assert not any("attn_layer" in n for n in names)
    _check_coverage(model, "maxvit", 32)


def test_channel_shuffle_module_computes_torchvision_shuffle():
    torch.manual_seed(0)
    model = create_model("shufflenet_v2_x0_5", 10).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        keys = list(model.state_dict())
        convert_shuffles(model)
        assert torch.equal(model(x), expected) and list(model.state_dict()) == keys
    assert sum(isinstance(m, ShuffleUnit) for m in model.modules()) == 16


def test_opaque_blocks_trace_as_leaves_and_run_normally_after():
    model = create_model("swin_t", 10).eval()
    attention = model.features[1][0].attn
    x = torch.randn(1, 8, 8, 96)
    with torch.no_grad():
        expected = attention(x)
    with traced_as_leaves(model):
        out = attention(x)
        assert type(out.grad_fn).__name__ == "_LeafBackward" and torch.equal(out, expected)  # one node, same values
    assert "forward" not in vars(attention)  # the class's forward again: trainable, differentiable
    model(torch.zeros(1, 3, 32, 32)).sum().backward()
    assert attention.qkv.weight.grad is not None
