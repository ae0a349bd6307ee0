"""INT8 latency: the measured host table, the analytic Jetson INT8 peak and 32-channel tiles, and the errors."""

from __future__ import annotations

from dataclasses import replace

import pytest

from autoprune.errors import UserError
from autoprune.hardware import CostModel, load_profile
from autoprune.models import create_model
from autoprune.plan import PruningPlan
from autoprune.pruning import generate_space

SHAPE = (1, 3, 32, 32)


@pytest.fixture(scope="module")
def space():
    return generate_space(create_model("resnet18", 10), "resnet18", SHAPE, alignment=16)


def test_host_int8_entries_are_measured_calibrated_and_validated(space):
    profile = load_profile("cpu")
    int8 = [e for e in profile.entries if e.signature.dtype == "int8"]
    fp32 = [e for e in profile.entries if e.signature.dtype == "fp32"]
    assert len(int8) >= 100 and len(fp32) >= 100  # both tables, neither replaced the other
    validation = profile.validation["resnet18@1x3x32x32:int8"]
    assert validation.within_10_pct >= 80 and validation.kendall_tau >= 0.8
    assert "resnet18@1x3x32x32:int8" in profile.calibration and "resnet18@1x3x32x32" in profile.calibration
    model = CostModel(profile)
    for keep in (1.0, 0.5):
        plan = PruningPlan.uniform(space.group_names, keep, alignment=16)
        f, q = model.predict(space, plan), model.predict(space, replace(plan, precision="int8"))
        assert q.provenance == "measured" and "INT8" in q.source
        assert q.validation is validation and f.validation is not validation
        assert q.size_mb == pytest.approx(f.size_mb / 4, rel=1e-6)  # one byte per weight instead of four
    dense = PruningPlan(alignment=16)
    # Measured on this host: INT8 (VNNI) runs the dense ResNet-18 faster than FP32.
    assert model.predict(space, replace(dense, precision="int8")).latency_ms < model.predict(space, dense).latency_ms


def test_profile_without_int8_entries_names_the_measure_command(space):
    profile = load_profile("cpu")
    fp32_only = replace(profile, entries=tuple(e for e in profile.entries if e.signature.dtype != "int8"))
    model = CostModel(fp32_only)
    assert not model.has_int8
    assert model.predict(space, PruningPlan(alignment=16)).latency_ms > 0
    with pytest.raises(UserError, match=r"no INT8 latency entries.*autoprune profile measure --precision int8"):
        model.predict(space, PruningPlan(alignment=16, precision="int8"))


def test_jetson_int8_uses_its_peak_and_32_channel_tiles():
    space = generate_space(create_model("resnet18", 10), "resnet18", (1, 3, 224, 224), alignment=8)
    orin = CostModel(load_profile("orin"))
    assert orin.has_int8
    dense = PruningPlan(alignment=8)
    assert orin.predict(space, replace(dense, precision="int8")).latency_ms < orin.predict(space, dense).latency_ms
    # 64 -> 48 channels: FP16 kernels (tiles of 8) get faster; INT8 pads 48 back to 64 (tiles of 32): no gain.
    first = space.group_names[0]
    cut = PruningPlan(keep_ratios={first: 0.75}, alignment=8)
    assert orin.predict(space, cut).latency_ms < orin.predict(space, dense).latency_ms
    assert orin.predict(space, replace(cut, precision="int8")).latency_ms == pytest.approx(
        orin.predict(space, replace(dense, precision="int8")).latency_ms)
    nano = CostModel(load_profile("jetson"))
    assert not nano.has_int8
    with pytest.raises(UserError, match="no INT8 path"):
        nano.predict(space, replace(dense, precision="int8"))
