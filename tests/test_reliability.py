"""Failure injection on the real search: a candidate whose fine-tuning diverges is recorded as failed, with its
reason, and the search goes on; too many failures in a row stop it with the common cause."""

from __future__ import annotations

import optuna
import pytest
import torch

from autoprune.errors import UserError
from autoprune.search import SearchConfig, run_search
from autoprune.search import evaluator as evaluator_module

TINY = dict(model="resnet18", target="jetson", data="digits", input_shape=(1, 3, 32, 32), baseline_epochs=1,
            finetune_steps=2, seed=5, multi_fidelity=False)


def diverge_when(predicate):
    """A loss that turns NaN for models matching ``predicate`` (e.g. plans that cut the stem below 24 channels)."""
    real = evaluator_module.cross_entropy_loss

    def loss(model, images, labels):
        value = real(model, images, labels)
        return value * float("nan") if predicate(model) else value

    return loss


def test_diverging_candidate_fails_with_reason_and_search_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr(evaluator_module, "cross_entropy_loss", diverge_when(lambda m: m.conv1.out_channels < 24))
    result = run_search(SearchConfig(**TINY, strategy="uniform", trials=4, out_dir=str(tmp_path)))
    study = optuna.load_study(study_name=result.study_name, storage=result.storage)
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    # The uniform sweep from 0.25 to 1.0 keeps 16, 32, 48, 64 stem channels: the first diverges.
    assert len(failed) == 1 and len(complete) == 3
    assert failed[0].user_attrs["fail_reason"].startswith("NonFiniteLoss")
    assert all(torch.isfinite(torch.tensor(t.values)).all() for t in complete)
    assert result.failed == 1 and result.completed == 3
    assert (tmp_path / "results.json").is_file()


def test_consecutive_failures_stop_the_search_naming_the_cause(tmp_path, monkeypatch):
    monkeypatch.setattr(evaluator_module, "cross_entropy_loss", diverge_when(lambda m: True))
    with pytest.raises(UserError, match=r"5 trials in a row failed, most often with 'NonFiniteLoss"):
        run_search(SearchConfig(**TINY, strategy="random", trials=8, out_dir=str(tmp_path)))
    study = optuna.load_study(study_name="resnet18-jetson-digits", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert sum(t.state == optuna.trial.TrialState.FAIL for t in study.trials) == 5  # all recorded, none lost


def raise_on_calls(errors: dict[int, Exception]):
    """A BatchNorm recalibration (the first step of every evaluation) that raises ``errors[k]`` on call k."""
    real, calls = evaluator_module.recalibrate_bn, []

    def recalibrate(*args, **kwargs):
        calls.append(1)
        if len(calls) in errors:
            raise errors[len(calls)]
        return real(*args, **kwargs)

    return recalibrate


def test_any_exception_in_the_real_evaluator_fails_only_its_trial(tmp_path, monkeypatch):
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    errors = {1: OSError("image file is truncated (3 bytes not processed)"), 2: KeyError("conv1.weight"),
              3: Fail("[ONNXRuntimeError] : 1 : FAIL : Load model failed")}
    monkeypatch.setattr(evaluator_module, "recalibrate_bn", raise_on_calls(errors))
    result = run_search(SearchConfig(**TINY, strategy="uniform", trials=4, out_dir=str(tmp_path)))
    study = optuna.load_study(study_name=result.study_name, storage=result.storage)
    reasons = [t.user_attrs["fail_reason"] for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert [r.split(":")[0] for r in reasons] == ["OSError", "KeyError", "Fail"]
    assert "image file is truncated" in reasons[0] and "Load model failed" in reasons[2]
    assert result.completed == 1 and result.failed == 3
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))  # no trial left behind


def test_trial_timeout_is_validated_and_reaches_the_executor(tmp_path, monkeypatch):
    from autoprune.search import backends

    with pytest.raises(UserError, match="--trial-timeout must be a positive"):
        SearchConfig(**TINY, trial_timeout=0.0)
    seen = {}
    real = backends.create_executor

    def create_executor(backend, evaluator, ray_settings=None, trial_timeout_s=None):
        seen["trial_timeout_s"] = trial_timeout_s
        return real(backend, evaluator, ray_settings)

    monkeypatch.setattr(backends, "create_executor", create_executor)
    run_search(SearchConfig(**TINY, strategy="uniform", trials=1, out_dir=str(tmp_path), trial_timeout=2.5))
    assert seen == {"trial_timeout_s": 2.5}
