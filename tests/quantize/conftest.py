"""A dense ResNet-18 trained for two epochs on scikit-learn's digits at 16x16, shared by the quantization tests.

The baseline goes through autoprune's own cache (the session's AUTOPRUNE_HOME) with the same spec as
tests/report/conftest.py's study, so a full run trains it once; at 16x16 it trains in a quarter of the 32x32 time
and is far better than chance (a quantization error would show).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from autoprune.baseline import BaselineSpec, get_baseline
from autoprune.data import DataBundle, load_data
from autoprune.training import TrainRecipe

SHAPE = (1, 3, 16, 16)
SEED = 1
EPOCHS = 2


@dataclass(frozen=True)
class Dense:
    model: torch.nn.Module
    data: DataBundle
    shape: tuple[int, int, int, int] = SHAPE
    seed: int = SEED
    epochs: int = EPOCHS


@pytest.fixture(scope="session")
def dense(_isolated_home) -> Dense:
    data = load_data("digits", SHAPE[2:], SEED)
    spec = BaselineSpec("resnet18", "digits", SHAPE, data.num_classes, SEED, TrainRecipe(epochs=EPOCHS), None)
    return Dense(get_baseline(spec, data, None, False).model.eval(), data)
