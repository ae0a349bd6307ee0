"""The real evaluator on a tiny real model: the whole plan is scored, and sparsity survives fine-tuning."""

import pytest
import torch

from autoprune.data import load_data
from autoprune.hardware import CostModel, load_profile
from autoprune.models import create_model
from autoprune.plan import PruningPlan
from autoprune.pruning import generate_space
from autoprune.pruning.unstructured import nm_holds
from autoprune.search.evaluator import Evaluator, EvaluatorSettings

SHAPE = (1, 3, 32, 32)


@pytest.fixture(scope="module")
def evaluator():
    torch.manual_seed(0)
    model = create_model("resnet18", 10).eval()
    data = load_data("digits", SHAPE[2:], seed=0)
    profile = load_profile("jetson")
    space = generate_space(model, "resnet18", SHAPE, alignment=profile.alignment)
    return Evaluator(model, data, space, CostModel(profile), EvaluatorSettings(finetune_steps=4, finetune_checks=2))


def test_structured_candidate_is_smaller_and_faster(evaluator):
    dense = evaluator.evaluate(PruningPlan(alignment=evaluator.space.alignment))
    half = evaluator.evaluate(PruningPlan.uniform(evaluator.space.group_names, 0.5, alignment=evaluator.space.alignment))
    assert half.stats.params < 0.4 * dense.stats.params
    assert half.latency_ms < dense.latency_ms
    assert half.finetune_steps == 4 and half.fidelity == "finetuned"
    assert 0.0 <= half.accuracy <= 1.0


def test_unstructured_and_nm_sparsity_hold_after_finetuning(evaluator):
    plan = PruningPlan(layer_sparsity={"layer1.0.conv1": 0.5}, nm={"layer4.1.conv2": "2:4"})
    result = evaluator.evaluate(plan)
    modules = dict(result.model.named_modules())
    conv = modules["layer1.0.conv1"].weight
    assert int((conv == 0).sum()) == round(0.5 * conv.numel())  # exact, after 4 SGD steps with weight decay
    assert nm_holds(modules["layer4.1.conv2"].weight, 2, 4)
    assert result.stats.nonzero_params < result.stats.params


def test_with_device_keeps_everything_but_the_device(evaluator):
    from autoprune.errors import UserError

    moved = evaluator.with_device("cpu")
    assert moved.settings.device == "cpu" and moved.baseline is evaluator.baseline
    assert moved.settings.finetune_steps == evaluator.settings.finetune_steps
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU"):
            evaluator.with_device("cuda")


def test_chunked_finetune_records_the_curve_through_the_trainer(evaluator):
    plan = PruningPlan.uniform(evaluator.space.group_names, 0.75, alignment=evaluator.space.alignment)
    first, again = evaluator.evaluate(plan), evaluator.evaluate(plan)
    assert [s for s, _ in first.curve] == [2, 4]  # 4 steps, 2 checks
    assert first.accuracy == again.accuracy == first.curve[-1][1]  # seeded
    assert next(first.model.parameters()).device.type == "cpu"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_candidates_get_the_cpu_latency_figures(evaluator):
    plan = PruningPlan(keep_ratios={evaluator.space.group_names[0]: 0.5}, layer_sparsity={"layer1.0.conv1": 0.5},
                       alignment=evaluator.space.alignment)
    cpu, gpu = evaluator.evaluate(plan), evaluator.with_device("cuda").evaluate(plan)
    assert (gpu.latency_ms, gpu.latency_source, gpu.stats) == (cpu.latency_ms, cpu.latency_source, cpu.stats)
    assert next(gpu.model.parameters()).device.type == "cpu"
    conv = dict(gpu.model.named_modules())["layer1.0.conv1"].weight
    assert int((conv == 0).sum()) >= round(0.5 * conv.numel())  # masks re-applied on the GPU too
    assert abs(gpu.accuracy - cpu.accuracy) < 0.1
    assert next(evaluator.baseline.parameters()).device.type == "cpu"


def test_rungs_hold_each_finished_candidates_accuracy_at_each_check():
    from autoprune.search.evaluator import rungs_of

    finished = [(((2, 0.30), (4, 0.60), (6, 0.70)), 1.0), (((2, 0.50), (4, 0.55), (6, 0.58)), 2.0),
                (((3, 0.1), (6, 0.2)), 0.5)]
    rungs, seen = rungs_of(finished)  # the 3-check curves are the most common shape; the 2-check one is left out
    assert seen == 2 and rungs == (((0.30, 1.0), (0.50, 2.0)), ((0.60, 1.0), (0.55, 2.0)), ((0.70, 1.0), (0.58, 2.0)))
    assert rungs_of([]) == ((), 0)


def test_a_candidate_is_cut_short_only_when_the_largest_recovery_seen_cannot_bring_it_level():
    from types import SimpleNamespace

    from autoprune.search.evaluator import Guidance

    judge = SimpleNamespace(settings=EvaluatorSettings(stop_margin=0.03, min_history=2))
    # Two finished candidates: at 1 ms (30 %, 60 %, 70 % at its three checks) and at 2 ms (50 %, 55 %, 58 %).
    # Recovery from check 0 to the end: 40 points at most (the 1-ms one); from check 1: 10 points.
    g = Guidance(rungs=(((0.30, 1.0), (0.50, 2.0)), ((0.60, 1.0), (0.55, 2.0)), ((0.70, 1.0), (0.58, 2.0))),
                 curves_seen=2)
    cut = lambda k, acc, ms=1.5, guidance=g: Evaluator._cut_reason(judge, k, 3, acc, ms, guidance)  # noqa: E731
    assert cut(0, 0.28) == ""  # 28 + 40 + 3 = 71 % could still pass the 1-ms candidate's final 70 %
    assert "ended at 0.700" in cut(0, 0.26)  # 26 + 40 + 3 = 69 %: cut
    assert cut(0, 0.26, ms=0.9) == ""  # faster than every finished candidate: nothing to compare with
    # behind the slower one's 50 % at check 0 by 10 points, but curves cross: a same-check rule would cut it
    assert cut(0, 0.40, ms=2.5) == ""
    assert "+0.100" in cut(1, 0.56)  # at check 1: 56 + 10 + 3 = 69 % < 70 %
    assert cut(1, 0.58) == ""
    assert cut(2, 0.10) == ""  # the last check ends the fine-tune anyway
    assert cut(0, 0.10, guidance=Guidance(rungs=g.rungs, curves_seen=1)) == ""  # too few finished curves
    assert cut(0, 0.10, guidance=Guidance(rungs=g.rungs[:2], curves_seen=5)) == ""  # curves of another shape
    # curves that only ever fell (no recovery seen) still leave the margin
    falling = Guidance(rungs=(((0.80, 1.0), (0.70, 2.0)), ((0.75, 1.0), (0.60, 2.0))), curves_seen=2)
    assert Evaluator._cut_reason(judge, 0, 2, 0.73, 1.5, falling) == ""  # 73 + 0 + 3 = 76 % >= 75 %
    assert Evaluator._cut_reason(judge, 0, 2, 0.71, 1.5, falling)  # 74 % < 75 %
