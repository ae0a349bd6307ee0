"""What autoprune can do with each model `autoprune models` lists: width, attention heads, N:M, depth.

Building 80 models to list them takes about a minute, so the answer is kept per torchvision family (the module
that defines the builder: every ResNet, every RegNet ... is made of the same blocks). The table is checked
against the blocks of one built model per family in ``tests/pruning/test_capabilities.py``, and the whole
list is pruned, run and exported by ``bench/coverage.py`` (results in ``bench/results/coverage.md``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torchvision import models as tvm

from autoprune.errors import unknown_choice
from autoprune.models import available_models


@dataclass(frozen=True)
class ModelCapabilities:
    """What a plan may change in one model.

    ``width``: channel/neuron groups are pruned; ``heads``: attention heads are removed whole; ``nm``: N:M
    (2:4) sparsity applies to its conv/linear layers; ``depth``: whole residual blocks may be dropped
    (``--depth``); ``note``: what width pruning leaves at full width, or what is not built; ``min_input``:
    the smallest square input (pixels) the model runs on (``--input-shape 1x3xNxN``).
    """

    name: str
    family: str
    width: bool = True
    heads: bool = False
    nm: bool = True
    depth: bool = False
    note: str = ""
    min_input: int = 32

    def to_dict(self) -> dict:
        return asdict(self)


# Families whose answer differs from the default (width and N:M, no heads). Why each block is kept whole:
# autoprune/pruning/opaque.py.
_FAMILIES: dict[str, dict] = {
    "vision_transformer": {"heads": True, "min_input": 224},  # built for 224 x 224 (its position embedding)
    "swin_transformer": {"note": "attention, patch merging kept whole"},
    "maxvit": {"note": "attention kept whole", "min_input": 224},
    "shufflenetv2": {"note": "shuffled channels kept whole"},
    "inception": {"note": "no auxiliary head", "min_input": 75},
    "alexnet": {"min_input": 63},
    "googlenet": {"note": "no auxiliary heads"},
}


def model_family(name: str) -> str:
    """The torchvision module that builds ``name`` ("resnet", "swin_transformer", ...)."""
    if name not in available_models():
        raise unknown_choice("model", name, available_models(), "see `autoprune models`")
    return tvm.get_model_builder(name).__module__.rsplit(".", 1)[-1]


def model_capabilities(name: str) -> ModelCapabilities:
    """What autoprune can prune in model ``name``."""
    family = model_family(name)
    return ModelCapabilities(name, family, depth=_depth_support(family), **_FAMILIES.get(family, {}))


# Families with residual blocks that can be dropped (autoprune.pruning.depth finds them in the model; this list
# only answers `autoprune models` without building 80 models, and the test checks it per family).
DEPTH_FAMILIES = frozenset({"convnext", "efficientnet", "mnasnet", "mobilenetv2", "mobilenetv3", "regnet", "resnet",
                            "swin_transformer", "vision_transformer"})


def _depth_support(family: str) -> bool:
    """Whether models of ``family`` have droppable blocks (see :data:`DEPTH_FAMILIES`)."""
    return family in DEPTH_FAMILIES
