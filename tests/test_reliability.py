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
