"""Shared fixtures for the hardware tests: a ResNet-18 space at the default input shape, synthetic tables."""

from __future__ import annotations

import pytest

from autoprune.hardware.profile import HardwareProfile, LatencyEntry
from autoprune.hardware.profiling import signature_grid
from autoprune.models import create_model
from autoprune.pruning.space import generate_space


@pytest.fixture(scope="session")
def resnet_space():
    return generate_space(create_model("resnet18", 10), "resnet18", (1, 3, 32, 32), alignment=16)


def synthetic_cost(sig) -> float:
    """A made-up but monotone layer cost (ms): a fixed part plus one proportional to MACs."""
    return 0.002 + sig.macs * 1e-9


def table_profile(space, alignment: int = 16, max_points: int = 5, cost=synthetic_cost, **kwargs) -> HardwareProfile:
    """A table profile for ``space`` whose entries follow ``cost`` exactly at the grid points."""
    entries = tuple(LatencyEntry(s, cost(s), 0.0, 10) for s in signature_grid(space, alignment, "fp32", max_points))
    fields = dict(
        name="synthetic", device="test", runtime="onnxruntime", precision="fp32", batch=1, threads=1,
        date="2026-01-01", provenance="measured", provenance_source="synthetic test table", alignment=alignment,
        latency_model="table", entries=entries,
    )
    fields.update(kwargs)
    return HardwareProfile(**fields)
