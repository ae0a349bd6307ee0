"""Every importance criterion ranks a planted dead channel (and a dead attention head) last."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.vision_transformer import VisionTransformer

from autoprune.errors import UserError
from autoprune.models import create_model
from autoprune.plan import PruningPlan
from autoprune.pruning import IMPORTANCE_CRITERIA, apply_plan

SHAPE = (1, 3, 32, 32)
DEAD = 5


def _calibration(seed: int = 0, batches: int = 2, size: int = 4):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, *SHAPE[1:], generator=g), torch.randint(0, 10, (size,), generator=g))
            for _ in range(batches)]


def _resnet_with_dead_channel():
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=10).eval()
    block = model.layer1[0]
    with torch.no_grad():  # channel DEAD of layer1.0.conv1 produces and passes on nothing
        block.conv1.weight[DEAD] = 0
        block.bn1.weight[DEAD] = 0
        block.bn1.bias[DEAD] = 0
        block.conv2.weight[:, DEAD] = 0
    return model


@pytest.mark.parametrize("criterion", [c for c in IMPORTANCE_CRITERIA if c != "random"])
def test_dead_channel_is_pruned_first(criterion):
    model = _resnet_with_dead_channel()
    live = model.layer1[0].conv1.weight.detach().clone()
    live = torch.cat([live[:DEAD], live[DEAD + 1 :]])
    plan = PruningPlan(keep_ratios={"layer1.0.conv1": 63 / 64}, importance=criterion)
    apply_plan(model, plan, torch.zeros(SHAPE), _calibration())
    conv1 = model.layer1[0].conv1
    assert conv1.out_channels == 63
    assert torch.equal(conv1.weight, live)  # exactly the dead filter went, the others stay in order


def test_random_is_a_seeded_control():
    kept = []
    for seed in (0, 0, 1):
        model = _resnet_with_dead_channel()
        apply_plan(model, PruningPlan(keep_ratios={"layer1.0.conv1": 0.5}, importance="random"),
                   torch.zeros(SHAPE), seed=seed)
        kept.append(model.layer1[0].conv1.weight.detach().clone())
    assert torch.equal(kept[0], kept[1])
    assert not torch.equal(kept[0], kept[2])


def _tiny_vit():
    torch.manual_seed(0)
    model = VisionTransformer(image_size=32, patch_size=16, num_layers=2, num_heads=4, hidden_dim=32,
                              mlp_dim=64, num_classes=10).eval()
    # torchvision zero-initialises the ViT classifier, which zeroes every gradient below it; a trained head
    # is not zero, so give it random weights for the gradient criteria to see anything
    torch.nn.init.normal_(model.heads.head.weight, std=0.1)
    return model


@pytest.mark.parametrize("criterion", ["l1", "l2", "fpgm", "taylor", "obd", "snip", "grasp"])
def test_dead_attention_head_is_pruned_first(criterion):
    from autoprune.pruning.attention import convert_attention

    model = convert_attention(_tiny_vit())
    attn = model.encoder.layers[0].self_attention
    dead, head_dim, inner = 2, attn.head_dim, 32
    rows = [part * inner + dead * head_dim + d for part in range(3) for d in range(head_dim)]
    with torch.no_grad():
        attn.qkv.weight[rows] = 0
        attn.qkv.bias[rows] = 0
        attn.proj.weight[:, dead * head_dim : (dead + 1) * head_dim] = 0
    keep_cols = [c for c in range(inner) if c // head_dim != dead]
    expected_proj = attn.proj.weight.detach()[:, keep_cols].clone()
    plan = PruningPlan(keep_ratios={"encoder.layers.encoder_layer_0.self_attention.qkv": 0.75}, importance=criterion)
    apply_plan(model, plan, torch.zeros(SHAPE), _calibration())
    assert attn.num_heads == 3
    assert attn.qkv.out_features == 3 * 3 * head_dim
    assert torch.equal(attn.proj.weight, expected_proj)
    assert model(torch.randn(2, *SHAPE[1:])).shape == (2, 10)


def test_gradient_criteria_need_calibration():
    with pytest.raises(UserError, match="calibration"):
        apply_plan(_resnet_with_dead_channel(), PruningPlan(keep_ratios={"conv1": 0.5}, importance="snip"),
                   torch.zeros(SHAPE))
    with pytest.raises(UserError, match="did you mean 'taylor'"):
        apply_plan(_resnet_with_dead_channel(), PruningPlan(importance="tayler"), torch.zeros(SHAPE))
