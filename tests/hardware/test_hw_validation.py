"""Calibration and a validation run on a tiny grid, end to end with real onnxruntime measurements."""

from __future__ import annotations

import dataclasses

import pytest

from autoprune.hardware import CostModel, load_profile, save_profile
from autoprune.hardware.measure import Timing
from autoprune.hardware.profiling import (
    PlanPoint,
    calibrate,
    fit_calibration,
    host_profile,
    measure_table,
    random_plans,
    score,
    signature_grid,
    validate,
)
from autoprune.plan import PruningPlan

from .conftest import table_profile


def test_fit_and_score_arithmetic():
    points = [PlanPoint(PruningPlan(), x, 2 * x + 0.1, 2 * x + 0.1) for x in (0.1, 0.2, 0.4, 0.8)]
    cal = fit_calibration(points, "test")
    assert (cal.a, cal.b, cal.points) == (pytest.approx(2.0), pytest.approx(0.1), 4)
    assert "form affine" in cal.source
    off = [dataclasses.replace(p, predicted_ms=p.measured_ms * f) for p, f in zip(points, (1.0, 1.07, 0.8))]
    result = score(off)
    assert result.mape_pct == pytest.approx((0 + 7 + 20) / 3, rel=1e-3)
    assert result.within_5_pct == pytest.approx(100 / 3, rel=1e-3)
    assert result.within_10_pct == pytest.approx(200 / 3, rel=1e-3) and result.kendall_tau == pytest.approx(1.0)


def test_calibration_that_would_fit_noise_falls_back_to_the_layer_sum():
    # The table is right (measured = layer sum) but two whole-model timings caught a burst of load.
    noise = (1.0, 1.0, 1.25, 1.0, 1.0, 0.97, 1.3, 1.0)
    xs = (0.05, 0.08, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4)
    points = [PlanPoint(PruningPlan(), x, x, x * f) for x, f in zip(xs, noise)]
    cal = fit_calibration(points, "test")
    assert (cal.a, cal.b) == (1.0, 0.0)
    assert "form identity" in cal.source
    # A self-calibration (a table from elsewhere) always fits at least a scale.
    scaled = fit_calibration(points, "test", scaled=True)
    assert "identity" not in scaled.source and scaled.a != 1.0


def test_models_outgrowing_the_cache_fit_a_memory_term():
    # Layers timed alone keep their weights in a 32 MB cache; whole models bigger than that pay 0.01 ms per MB
    # streamed from memory. A scale or a line cannot bend at the cache size; the memory term can, and wins.
    sizes = (4, 8, 12, 16, 20, 24, 28, 30, 34, 38, 42, 46)
    points = [PlanPoint(PruningPlan(), mb / 100, 0.0, 1.05 * mb / 100 + 0.01 * max(0, mb - 32), weight_mb=mb)
              for mb in sizes]
    cal = fit_calibration(points, "test", cache_mb=32.0)
    assert "form scale+spill" in cal.source and (cal.a, cal.cache_mb) == (pytest.approx(1.05), 32.0)
    assert cal.spill_ms_per_mb == pytest.approx(0.01) and cal.spill_ms(40.0) == pytest.approx(0.08)
    # Without a known cache size (or with no model beyond it) the term is not offered.
    assert "spill" not in fit_calibration(points, "test").source
    # Models that all fit the cache: a memory term at a smaller effective cache is tried, but only ties (zero
    # cost), and a tie is not evidence of it: the simpler scale is kept.
    small = [p for p in points if p.weight_mb < 32]
    kept = fit_calibration(small, "test", cache_mb=32.0)
    assert "form scale (" in kept.source and kept.spill_ms_per_mb == 0.0 and kept.cache_mb is None
    # A "memory term" that would make bigger models faster is noise, and is refused.
    faster = [dataclasses.replace(p, measured_ms=1.05 * p.layer_sum_ms - 0.01 * max(0, p.weight_mb - 32))
              for p in points]
    refused = fit_calibration(faster, "test", cache_mb=32.0)
    assert refused.spill_ms_per_mb == 0.0 and refused.cache_mb is None and refused.spill_ms(46.0) == 0.0


def test_random_plans_are_reproducible_and_span_the_range(resnet_space):
    plans = random_plans(resnet_space, 20, seed=3, alignment=16)
    assert plans == random_plans(resnet_space, 20, seed=3, alignment=16)
    levels = [sum(p.keep_ratios.values()) / len(p.keep_ratios) for p in plans]
    assert min(levels) < 0.5 < 0.75 < max(levels)


def test_validation_run_on_a_tiny_grid(tmp_path, resnet_space):
    sigs = signature_grid(resnet_space, 16, "fp32", max_points=2)
    timing = Timing(3, 30)
    entries, overhead = measure_table(sigs, "onnxruntime", 1, timing)
    profile = host_profile("tiny", entries, overhead, "onnxruntime", 1, 16, timing)
    assert CostModel(profile).covers(resnet_space)
    profile = calibrate(profile, resnet_space, points=3)
    cal = profile.calibration["resnet18@1x3x32x32"]
    assert cal.points == 3 and cal.a > 0
    seen = []
    profile, result, points = validate(profile, resnet_space, samples=4, seed=7, rounds=3,
                                       progress=lambda done, total: seen.append((done, total)))
    assert result.samples == 4 and len(points) == 4 and result.calibrated and result.rounds == 3
    # Three rounds, one after the other, on one progress bar; the measurement's own repeatability is recorded.
    assert seen[-1] == (12, 12) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert 0 <= result.repeatable_10_pct <= 100 and "over 3 rounds" in result.summary()
    assert 0 <= result.within_5_pct <= result.within_10_pct <= 100 and -1 <= result.kendall_tau <= 1
    errors = [abs(p.predicted_ms - p.measured_ms) / p.measured_ms for p in points]
    assert result.mape_pct == pytest.approx(100 * sum(errors) / 4, abs=1e-3)
    # Each plan was also timed next to the dense model and scored as a ratio to it.
    ratio_errors = [abs(p.predicted_ratio - p.measured_ratio) / p.measured_ratio for p in points]
    assert all(0 < p.measured_ratio < 1.5 for p in points)
    assert result.ratio_mape_pct == pytest.approx(100 * sum(ratio_errors) / 4, abs=1e-3)
    assert "as ratios to the dense model" in result.summary()
    # The score is stored in the profile and shown with every prediction that uses it.
    path = save_profile(profile, tmp_path / "tiny.yaml")
    estimate = CostModel(load_profile(path)).predict(resnet_space, PruningPlan(alignment=16))
    assert estimate.validation is not None and estimate.validation.samples == 4
    assert estimate.validation.repeatable_10_pct == result.repeatable_10_pct
    assert "MAPE" in estimate.validation.summary()


def test_validation_rounds_score_the_median_and_the_measurement_spread(resnet_space, monkeypatch):
    from autoprune.hardware import profiling

    profile = table_profile(resnet_space, max_points=2)
    # Plan 0 is steady; plan 1 swings by 25% in one round (a noisy neighbour), plan 2 by 5%.
    rounds = iter([(1.0, 2.0, 3.0), (1.0, 2.5, 3.15), (1.0, 2.0, 3.0)])

    def fake_measure(profile, space, plans, items, dense_item, progress=None, pin_cpu=None):
        assert len(items) == len(plans)  # built once, timed every round
        measured = next(rounds)
        # The dense model ran at 4 ms beside each plan; the model predicts every plan at half the dense model.
        return [profiling.PlanPoint(p, 0.0, 2.0, ms, predicted_ratio=0.5, measured_ratio=ms / 4.0)
                for p, ms in zip(plans, measured)]

    monkeypatch.setattr(profiling, "measure_plans_paired", fake_measure)
    _, result, points = profiling.validate(profile, resnet_space, samples=3, seed=7, rounds=3)
    assert [p.measured_ms for p in points] == [1.0, 2.0, 3.0]  # the median of each plan's rounds
    assert [p.measured_ratio for p in points] == [0.25, 0.5, 0.75]
    assert result.ratio_within_10_pct == pytest.approx(100 / 3, rel=1e-3)
    assert result.ratio_mape_pct == pytest.approx(100 * (1.0 + 0 + 1 / 3) / 3, rel=1e-3)
    assert result.repeatable_10_pct == pytest.approx(200 / 3, rel=1e-3)  # plan 1's 25% swing is not repeatable
    assert result.within_10_pct == pytest.approx(100 / 3, rel=1e-3)  # only plan 1 (2.0 ms) is predicted right
