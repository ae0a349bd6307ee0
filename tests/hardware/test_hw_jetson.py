"""Jetson analytic profiles: fitted on several published figures, scored leave-one-out, priced as the cost model."""

from __future__ import annotations

import dataclasses

import pytest

from autoprune.hardware import CostModel, load_profile
from autoprune.hardware import jetson
from autoprune.models import create_model
from autoprune.plan import PruningPlan
from autoprune.pruning.space import generate_space


@pytest.mark.parametrize("target", ["jetson-nano-trt-fp16", "jetson-agx-xavier-trt-fp16"])
def test_shipped_fitted_profiles_report_their_leave_one_out_error(target):
    profile = load_profile(target)
    loo = profile.validation["torch2trt-published@1x3x224x224"]
    assert profile.provenance == "calibrated" and loo.samples == len(jetson.PUBLISHED[target]) >= 9
    assert loo.loo_median_pct <= 15.0  # the goal of issue 15, per device
    assert "leave-one-out" in loo.note and "leave-one-out error median" in loo.summary()
    assert dict(profile.roofline.op_bandwidth)["linear"] > 0 and 0 < profile.roofline.efficiency <= 1
    # ResNet-18 at 224 (dense, calibrated with the fit's memory-only kernels) lands near its published figure.
    space = generate_space(create_model("resnet18", 1000), "resnet18", (1, 3, 224, 224), alignment=8)
    dense = CostModel(profile).predict(space, PruningPlan(alignment=8)).latency_ms
    assert dense == pytest.approx(jetson.PUBLISHED[target]["resnet18"], rel=0.15)


@pytest.mark.timeout(120)
def test_the_fit_prices_the_layers_the_cost_model_prices():
    profile = dataclasses.replace(load_profile("xavier"), calibration={})
    space = generate_space(create_model("resnet18", 1000), "resnet18", (1, 3, 64, 64), alignment=8)
    work = jetson.trace_work("resnet18", (1, 3, 64, 64))
    assert work.add_kernels == 8 and work.memory_kernels == 0  # BasicBlock additions; every BatchNorm folds
    no_memory = jetson.Fit(profile.roofline.efficiency, profile.roofline.fixed_ms_per_layer, 1.0, 0.0, 0.0)
    expected = CostModel(profile).predict(space, PruningPlan(alignment=8)).latency_ms
    assert jetson.predict_ms(profile, dataclasses.replace(work, memory_bytes=0.0), no_memory) == \
        pytest.approx(expected, rel=1e-9)


@pytest.mark.timeout(180)
def test_fit_reproduces_figures_made_by_known_terms():
    shape = (1, 3, 32, 32)
    works = [jetson.trace_work(n, shape) for n in ("resnet18", "squeezenet1_1", "vgg11", "densenet121",
                                                   "squeezenet1_0", "vgg13")]
    assert works[3].memory_kernels > 50 and works[1].memory_bytes > 0  # DenseNet's BatchNorms, SqueezeNet's concats
    base = load_profile("jetson")
    truth = jetson.Fit(0.4, 0.03, 0.6, 0.05, 0.02)
    figures = [jetson.predict_ms(jetson._with_fit(base, truth), w, truth) for w in works]
    fit = jetson.fit_terms(base, works, figures)
    again = [jetson.predict_ms(jetson._with_fit(base, fit), w, fit) for w in works]
    assert again == pytest.approx(figures, rel=0.02)
    loo = jetson.leave_one_out(base, works, figures)
    assert len(loo) == len(works) and all(x > 0 for x in loo)
