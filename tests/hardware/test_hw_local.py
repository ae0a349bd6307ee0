"""The cost model on this machine: lazily measured tables, self-calibration, and the one entry point."""

from __future__ import annotations

import dataclasses
import json

import pytest
from torch import nn

from autoprune.errors import UserError
from autoprune.hardware import CostModel, load_profile, prepare_cost_model
from autoprune.hardware import local
from autoprune.hardware.profiling import measure_table as real_measure_table
from autoprune.plan import PruningPlan
from autoprune.pruning.space import generate_space

from .conftest import table_profile


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(self.pool(self.conv2(self.conv1(x).relu()).relu()).flatten(1))


@pytest.fixture()
def tiny_space():
    return generate_space(Tiny().eval(), "tiny", (1, 3, 12, 12), alignment=16)


@pytest.mark.timeout(120)
def test_missing_layer_families_are_measured_here_once_and_cached(resnet_space, tiny_space, monkeypatch):
    profile = table_profile(resnet_space, name="lazy-test")  # a measured onnxruntime table: this machine's target
    assert local.runs_here(profile) and not CostModel(profile).covers(tiny_space)
    calls, notes, progress = [], [], []

    def counting(signatures, *args, **kwargs):
        calls.append(len(signatures))
        return real_measure_table(signatures, *args, **kwargs)

    monkeypatch.setattr("autoprune.hardware.profiling.measure_table", counting)
    model = prepare_cost_model(profile, tiny_space, lambda d, t: progress.append((d, t)), notes.append,
                               calibrate=False)
    assert calls and calls[0] == len(local.missing_signatures(profile, tiny_space))
    assert progress and progress[-1][0] == progress[-1][1]
    assert "measuring" in notes[0] and "min" in notes[0] and "cached in" in notes[0]
    assert model.covers(tiny_space) and model.predict(tiny_space, PruningPlan()).latency_ms > 0
    cached = json.loads((local.cache_dir(profile) / "entries.json").read_text())
    assert len(cached["entries"]) == calls[0]
    again = prepare_cost_model(profile, tiny_space, calibrate=False)
    assert len(calls) == 1  # the cache answered
    # The table right after measuring is the one later runs read back (so the calibration cached on it is found).
    assert local.table_hash(again.profile) == local.table_hash(model.profile)
    assert again.predict(tiny_space, PruningPlan()).latency_ms == model.predict(tiny_space, PruningPlan()).latency_ms


def test_another_target_is_refused_before_training_with_the_commands_that_fix_it(resnet_space, tiny_space):
    device = table_profile(resnet_space, name="some-device", runtime="tensorrt", precision="fp16")
    assert not local.runs_here(device)
    with pytest.raises(UserError, match=r"cannot price \d+ layer families of tiny at 1x3x12x12.*profile export.*"
                                         r"profile run.*profile import"):
        prepare_cost_model(device, tiny_space)
    jetson = prepare_cost_model(load_profile("jetson"), tiny_space)  # an analytic model prices anything
    assert jetson.predict(tiny_space, PruningPlan()).latency_ms > 0


def test_an_estimated_profile_is_not_this_machine(resnet_space):
    assert not local.runs_here(table_profile(resnet_space, provenance="estimated"))
    assert local.runs_here(load_profile("cpu"))


def test_self_calibration_times_the_most_pruned_plan_the_space_allows(resnet_space):
    """A fit that never saw the fast end extrapolated its intercept into a floor there (MobileNetV2: every plan
    under a third of dense priced alike); the calibration's plans reach the space's smallest uniform ratio."""
    plans = local.calibration_plans(resnet_space, local.CALIBRATION_PLANS, 16)
    assert len(plans) == local.CALIBRATION_PLANS - 1
    floor = max(g.min_keep for g in resnet_space.groups)
    uniform = sorted(next(iter(p.keep_ratios.values())) for p in plans if len(set(p.keep_ratios.values())) == 1)
    assert uniform == [floor, 0.4, 0.55, 0.7, 0.85]
    assert len(local.calibration_plans(resnet_space, 4, 16)) == 3  # tiny calibrations: random plans only


@pytest.mark.timeout(180)
def test_self_calibration_fits_here_caches_and_says_so_once(resnet_space):
    profile = table_profile(resnet_space, name="calib-test", device="some other CPU",
                            software={"onnxruntime": "0.0.1"})
    notes = []
    calibrated = local.self_calibrate(profile, resnet_space, on_note=notes.append, plans=4, budget_s=1.0)
    key = "resnet18@1x3x32x32"
    record = calibrated.calibration[key]
    assert record.points == 4 and record.a > 0 and record.machine == local.this_machine().fingerprint
    assert len(notes) == 1 and "calibrated 'calib-test'" in notes[0] and "CPU 'some other CPU' there" in notes[0]
    assert "onnxruntime 0.0.1 there" in notes[0]
    estimate = CostModel(calibrated).predict(resnet_space, PruningPlan())
    assert estimate.calibrated and estimate.calibrated_here and estimate.calibration_date == record.date
    assert "fitted on this machine" in estimate.source
    # A second call reads the cache (no timing), and says nothing more in this process.
    again = local.self_calibrate(profile, resnet_space, on_note=notes.append, plans=4, budget_s=1.0)
    assert again.calibration[key] == record and len(notes) == 1
    # The shipped figures were not fitted here.
    assert not CostModel(load_profile("cpu")).predict(resnet_space, PruningPlan()).calibrated_here
    assert local.machine_differences(dataclasses.replace(profile, device=local.this_machine().cpu,
                                                         software={})) == []


@pytest.mark.timeout(120)
def test_a_table_from_another_instruction_set_is_measured_again_here(tiny_space, monkeypatch):
    here = local.this_machine().isa
    other = "avx512f" if here != "avx512f" else "avx2"
    foreign = table_profile(tiny_space, name="isa-test", software={"cpu_isa": other})
    same = table_profile(tiny_space, name="isa-test-same", software={"cpu_isa": here})
    assert not local.table_carries_over(foreign) and local.table_carries_over(same)
    assert local.table_carries_over(table_profile(tiny_space))  # a profile that never recorded it: kept as is
    assert any(f"{other} there, {here} here" in d for d in local.machine_differences(foreign))
    calls, notes = [], []

    def counting(signatures, *args, **kwargs):
        calls.append(list(signatures))
        return real_measure_table(signatures, *args, **kwargs)

    monkeypatch.setattr("autoprune.hardware.profiling.measure_table", counting)
    prepare_cost_model(same, tiny_space, calibrate=False)
    assert calls == []  # covered, same kernels: nothing to measure
    model = prepare_cost_model(foreign, tiny_space, on_note=notes.append, calibrate=False)
    assert len(calls) == 1 and f"measured with {other}" in notes[0]
    measured = {s.key() for s in calls[0]}
    used = {e.signature.family for e in foreign.entries}
    assert {s.family for s in calls[0]} == used  # every family of the model, not only missing ones
    # No family mixes the shipped timings with this machine's: every entry it prices from was measured here.
    assert {e.signature.key() for e in model.profile.entries if e.signature.family in used} == measured
    assert model.predict(tiny_space, PruningPlan()).latency_ms > 0
    prepare_cost_model(foreign, tiny_space, calibrate=False)
    assert len(calls) == 1  # cached


def test_the_memory_term_finds_the_cache_share_where_models_slow_down():
    from autoprune.hardware.profiling import PlanPoint, fit_calibration

    # Layer sums as timed with hot caches; whole models slow down by 0.08 ms per MB beyond 8 MB, on a 32 MB cache.
    sizes = [2, 4, 6, 9, 12, 16, 20, 25, 30, 36, 44]
    points = [PlanPoint(PruningPlan(), 0.02 * mb + 0.1, 0.0, 0.02 * mb + 0.1 + 0.08 * max(0.0, mb - 8.0), float(mb))
              for mb in sizes]
    calibration = fit_calibration(points, "synthetic", cache_mb=32.0)
    assert calibration.cache_mb == pytest.approx(8.0) and calibration.spill_ms_per_mb == pytest.approx(0.08, rel=0.05)
    assert "beyond 8 MB" in calibration.source


def test_measuring_another_models_layers_keeps_this_models_calibration_key(resnet_space, tiny_space):
    profile = table_profile(resnet_space, name="key-test")
    with_tiny = table_profile(tiny_space, name="key-test")
    used = {e.signature.family for e in profile.entries}
    # tiny's conv layers (at 12x12) are families ResNet-18 at 32x32 never uses; its classifier's would be one it does
    others = tuple(e for e in with_tiny.entries if e.signature.family not in used)
    assert others
    both = dataclasses.replace(profile, entries=profile.entries + others)
    assert local.table_hash(both) != local.table_hash(profile)
    assert local.model_table_hash(both, resnet_space) == local.model_table_hash(profile, resnet_space)
    assert local.model_table_hash(both, tiny_space) != local.model_table_hash(profile, tiny_space)
