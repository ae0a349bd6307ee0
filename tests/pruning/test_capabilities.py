"""The `autoprune models` capability table agrees with the blocks the models are made of."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import shufflenetv2

from autoprune.models import available_models, classifier, create_model
from autoprune.pruning.capabilities import model_capabilities, model_family
from autoprune.pruning.depth import droppable_blocks
from autoprune.pruning.opaque import OPAQUE_TYPES

# One cheap member per family; built on the meta device (no memory, no init), RegNet for real (its builder
# computes widths with tensors).
MEMBERS = {
    "alexnet": "alexnet", "convnext": "convnext_tiny", "densenet": "densenet121", "efficientnet": "efficientnet_b0",
    "googlenet": "googlenet", "inception": "inception_v3", "maxvit": "maxvit_t", "mnasnet": "mnasnet0_5",
    "mobilenetv2": "mobilenet_v2", "mobilenetv3": "mobilenet_v3_small", "regnet": "regnet_x_400mf",
    "resnet": "resnet18", "shufflenetv2": "shufflenet_v2_x0_5", "squeezenet": "squeezenet1_1",
    "swin_transformer": "swin_t", "vgg": "vgg11", "vision_transformer": "vit_b_32",
}


def test_every_listed_family_has_a_checked_member():
    assert {model_family(name) for name in available_models()} == set(MEMBERS)


@pytest.mark.parametrize("family", sorted(MEMBERS))
def test_capabilities_match_the_model(family):
    name = MEMBERS[family]
    if family == "regnet":
        model = create_model(name, 10)
    else:
        with torch.device("meta"):
            model = create_model(name, 10)
    found = model_capabilities(name)
    head = classifier(model)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and m is not head]
    assert found.width and len(layers) > 0
    assert found.heads == any(isinstance(m, nn.MultiheadAttention) for m in model.modules())
    assert found.nm == any(m.weight.shape[1] % 4 == 0 for m in layers)
    kept_whole = any(isinstance(m, (*OPAQUE_TYPES, shufflenetv2.InvertedResidual)) for m in model.modules())
    assert ("kept whole" in found.note) == kept_whole
    assert found.min_input >= 32
    with torch.device("meta" if family != "regnet" else "cpu"):
        example = torch.zeros(1, 3, found.min_input, found.min_input)
    assert found.depth == bool(droppable_blocks(model.eval(), example))


def test_unknown_model_is_a_user_error():
    from autoprune.errors import UserError

    with pytest.raises(UserError, match="did you mean 'resnet18'"):
        model_capabilities("resnet81")
