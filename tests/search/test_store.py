"""The study store's codecs, identity check, URL masking and retries, on real Optuna storages (SQLite, in
memory); the lease and failure isolation on a real SQLite study with the synthetic evaluator."""

from __future__ import annotations

import json

import optuna
import pytest
import sqlalchemy.exc
from optuna.trial import TrialState

from autoprune.errors import UserError
from autoprune.search import storage as storage_module
from autoprune.search.backends import LocalExecutor
from autoprune.search.driver import IsolatedEvaluator, optimize
from autoprune.search.storage import connect_url, mask_url, redact, with_retry
from autoprune.search.store import (
    STALE_REASON, DenseBaseline, Measurement, ModelFigures, StudyIdentity, StudyRecord, StudyStore, decode_trial,
    decode_trials, read_study_record, trial_attrs,
)
from autoprune.search.strategies import Constraints, create_strategy, param_name, searched_groups
from autoprune.search.synthetic import SyntheticEvaluator, SyntheticProblem

optuna.logging.set_verbosity(optuna.logging.WARNING)
IDENTITY = StudyIdentity("resnet18", "jetson-nano", "digits", (1, 3, 16, 16), None, None, None, 0,
                         {"epochs": 1}, None, "ab" * 32)
DENSE = DenseBaseline(0.9, (0.8, 1.0), ("a", "b"), 1.5, "calibrated", "cost model", "trained",
                      ModelFigures(100, 90, 1000, 2.0, 0.4))
MEASURED = Measurement({"keep_ratios": {"g": 0.5}, "importance": "l1", "alignment": 8}, 0.8, 0.7, (0.7, 0.9), 0.75,
                       "calibrated", "cost model", ModelFigures(50, 40, 500, 1.0, 0.2), 1.25, 3, 3, "finetuned", "",
                       ((3, 0.8),), "int8", float_accuracy=0.81)


def _store(tmp_path, name="s", retries=1, interval=None):
    warnings: list[str] = []
    store = StudyStore.open(f"sqlite:///{tmp_path / 'study.db'}", name, ["maximize", "minimize"],
                            ["accuracy", "latency_ms"], interval, retries, warnings.append)
    return store, warnings


def test_records_round_trip_through_the_study(tmp_path):
    store, _ = _store(tmp_path)
    record = StudyRecord(IDENTITY, DENSE, (("g", 64),), 8, "calibrated", "fit", {"seed": 0})
    store.claim(record)
    assert read_study_record(store.study) == record
    assert store.study.metric_names == ["accuracy", "latency_ms"]
    trial = store.ask("tpe")
    trial.suggest_float("keep/g", 0.25, 1.0, step=0.25)
    assert store.tell_complete(trial, MEASURED, True, {"max_latency_ms": -0.5}, [0.8, 0.75])
    outcome = decode_trials(store.study)[0]
    assert outcome.measurement == MEASURED and outcome.feasible is True and outcome.strategy == "tpe"
    assert outcome.violations == {"max_latency_ms": -0.5} and outcome.attempts == 1 and outcome.retry_of is None
    assert store.study.trials[0].user_attrs["float_accuracy"] == 0.81  # flat keys, as optuna-dashboard shows them
    store.close()


def test_identity_is_written_once_and_a_mismatch_names_the_field(tmp_path):
    store, _ = _store(tmp_path)
    store.claim(StudyRecord(IDENTITY, DENSE, (("g", 64),), 8, "calibrated", "fit", {"seed": 0}))
    other = StudyRecord(IDENTITY, DENSE, (("g", 64),), 8, "calibrated", "fit", {"seed": 99})
    store.claim(other)  # same identity: the record (and its baseline spec) is not overwritten
    assert read_study_record(store.study).baseline_spec == {"seed": 0}
    for field, value in (("seed", 1), ("profile_sha256", "cd" * 32), ("baseline_recipe", {"epochs": 2})):
        changed = StudyIdentity(**{**IDENTITY.__dict__, field: value})
        with pytest.raises(UserError, match=rf"holds trials for {field}="):
            store.check_identity(changed)
    store.close()


def test_undeclared_strategy_attrs_and_foreign_records_are_refused(tmp_path):
    with pytest.raises(ValueError, match="not declared"):
        trial_attrs(strategy_attrs={"my_secret": 1})
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("autoprune", {"model": "resnet18"})  # an older autoprune's record
    with pytest.raises(UserError, match="older autoprune"):
        read_study_record(study)
    study.add_trial(optuna.trial.create_trial(values=[0.5, 1.0], user_attrs={"accuracy": 0.5}))
    with pytest.raises(UserError, match="trial 0 was not recorded by this autoprune"):
        decode_trial(study.trials[0])


def test_storage_urls_are_masked_and_the_password_comes_from_the_environment(monkeypatch):
    url = "postgresql://alice:p%40ss-w0rd@db.example:5432/optuna"
    assert mask_url(url) == "postgresql://alice:***@db.example:5432/optuna"
    assert "p%40ss-w0rd" not in redact(f"could not connect to {url}", url)
    assert mask_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    with pytest.raises(UserError, match="masked"):
        connect_url(mask_url(url))
    monkeypatch.setenv("AUTOPRUNE_STORAGE_PASSWORD", "from-env")
    assert connect_url("postgresql://alice@db/optuna") == "postgresql://alice:from-env@db/optuna"


def test_lost_connections_are_retried_and_other_errors_are_not(monkeypatch):
    monkeypatch.setattr(storage_module, "RETRY_FIRST_DELAY_S", 0.001)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise sqlalchemy.exc.OperationalError("UPDATE trials", {}, Exception("server closed the connection"))
        return "told"

    assert with_retry(flaky) == "told" and len(calls) == 3
    with pytest.raises(KeyError):
        with_retry(lambda: {}["x"])


class ExplodingEvaluator(SyntheticEvaluator):
    """Raises a different real exception class on chosen calls (1-based)."""

    def __init__(self, problem, errors: dict[int, Exception]) -> None:
        super().__init__(problem)
        self.errors = errors

    def evaluate(self, plan, guidance=None):
        if self.calls + 1 in self.errors:
            self.calls += 1
            raise self.errors[self.calls]
        return super().evaluate(plan, guidance)


def test_any_exception_fails_only_its_trial(tmp_path):
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    problem = SyntheticProblem(groups=3, seed=0)
    evaluator = ExplodingEvaluator(problem, {1: OSError("image file is truncated"), 2: KeyError("conv1.weight"),
                                             4: Fail("[ONNXRuntimeError] : 1 : FAIL : bad model")})
    store, _ = _store(tmp_path)
    strategy = create_strategy("random", problem.space, "l1", 0, 6, Constraints(), problem)
    optimize(store, strategy, LocalExecutor(IsolatedEvaluator(evaluator)), 6, multi_fidelity=False)
    outcomes = decode_trials(store.study)
    reasons = [o.fail_reason for o in outcomes if o.state == TrialState.FAIL]
    assert [r.split(":")[0] for r in reasons] == ["OSError", "KeyError", "Fail"]
    assert sum(o.state == TrialState.COMPLETE for o in outcomes) == 3 and len(outcomes) == 6
    assert not store.study.get_trials(states=(TrialState.RUNNING,))
    store.close()


def test_a_proposal_that_raises_fails_its_trial(tmp_path):
    problem = SyntheticProblem(groups=3, seed=0)
    store, _ = _store(tmp_path)
    strategy = create_strategy("random", problem.space, "l1", 0, 3, Constraints(), problem)
    real, calls = strategy.propose, []

    def propose(study, trial):
        calls.append(1)
        if len(calls) == 2:
            raise IndexError("no such group")
        return real(study, trial)

    strategy.propose = propose
    optimize(store, strategy, LocalExecutor(IsolatedEvaluator(SyntheticEvaluator(problem))), 3, multi_fidelity=False)
    states = [(t.state, t.fail_reason) for t in decode_trials(store.study)]
    assert states[1] == (TrialState.FAIL, "IndexError: no such group") and len(states) == 3
    store.close()


def test_a_connection_lost_while_proposing_reruns_the_whole_enqueued_plan(tmp_path):
    problem = SyntheticProblem(groups=3, seed=0)
    store, _ = _store(tmp_path)
    strategy = create_strategy("random", problem.space, "l1", 0, 3, Constraints(), problem)
    group = searched_groups(problem.space)[0]
    first_param = param_name(group.name)
    plan = {param_name(g.name): 0.5 for g in searched_groups(problem.space)}
    real, calls = strategy.propose, []

    def propose(study, trial):
        calls.append(1)
        if len(calls) == 1:  # the database restarts after the first parameter was written
            trial.suggest_float(first_param, group.min_keep, group.max_keep, step=group.step)
            raise sqlalchemy.exc.OperationalError("INSERT INTO trial_params", {}, Exception("server closed"))
        return real(study, trial)

    store.enqueue(plan, {})
    strategy.propose = propose
    optimize(store, strategy, LocalExecutor(IsolatedEvaluator(SyntheticEvaluator(problem))), 3, multi_fidelity=False)
    outcomes = decode_trials(store.study)
    first = outcomes[0]
    assert first.interrupted and "connection dropped" in first.fail_reason and first.params == {first_param: 0.5}
    retry = next(o for o in outcomes if o.retry_of == first.number)
    assert retry.state == TrialState.COMPLETE and dict(retry.params) == plan  # the whole plan, not the one written
    assert sum(o.state == TrialState.COMPLETE for o in outcomes) == 3 and len(outcomes) == 4  # it did not count
    store.close()


def test_a_trial_popped_by_an_ask_whose_reply_was_lost_is_run_not_orphaned(tmp_path, monkeypatch):
    """The database committed the pop of a waiting trial, then the connection dropped before ``ask`` returned:
    the retried ask took the next one. The first is RUNNING with no lease; it must still be run, not lost."""
    monkeypatch.setattr(storage_module, "RETRY_FIRST_DELAY_S", 0.001)
    problem = SyntheticProblem(groups=3, seed=0)
    store, warnings = _store(tmp_path, interval=1)
    strategy = create_strategy("random", problem.space, "l1", 0, 2, Constraints(), problem)
    plans = [{param_name(g.name): keep for g in searched_groups(problem.space)} for keep in (0.5, 0.75)]
    for plan in plans:
        store.enqueue(plan, {})
    lost = []

    class LostReply(optuna.trial.Trial):  # Study.ask builds its Trial after the pop has committed
        def __init__(self, study, trial_id):
            if not lost:
                lost.append(trial_id)
                raise sqlalchemy.exc.OperationalError("SELECT trials", {}, Exception("server closed the connection"))
            super().__init__(study, trial_id)

    monkeypatch.setattr(optuna, "Trial", LostReply)
    optimize(store, strategy, LocalExecutor(IsolatedEvaluator(SyntheticEvaluator(problem))), 2, multi_fidelity=False)
    outcomes = decode_trials(store.study)
    assert lost, "the lost reply was not simulated"
    complete = sorted(json.dumps(dict(o.params), sort_keys=True) for o in outcomes if o.state == TrialState.COMPLETE)
    assert complete == sorted(json.dumps(p, sort_keys=True) for p in plans), [(o.number, o.state) for o in outcomes]
    orphan = outcomes[0]
    assert orphan.state == TrialState.FAIL and orphan.interrupted
    assert any(o.retry_of == orphan.number for o in outcomes)
    assert any(f"trial {orphan.number} was lost while being asked" in w for w in warnings), warnings
    store.close()


def test_a_result_for_a_trial_another_driver_failed_is_dropped_with_a_warning(tmp_path):
    store, warnings = _store(tmp_path)
    other, _ = _store(tmp_path)
    trial = store.ask("random")
    trial.suggest_float("keep/g", 0.25, 1.0, step=0.25)
    other.study.tell(trial.number, state=TrialState.FAIL)  # as a stale-trial check elsewhere would
    assert store.tell_complete(trial, MEASURED, True, {}, [0.8, 0.75]) is False
    assert "dropped" in warnings[-1] and decode_trials(store.study)[0].fail_reason == STALE_REASON
    store.close()
    other.close()


def test_a_trial_whose_lease_expired_is_requeued_at_most_worker_retries_times(tmp_path):
    import time

    live, warnings = _store(tmp_path, retries=1, interval=1)
    for attempt in range(2):  # a driver dies holding the trial (its lease no longer renewed), twice
        dead, _ = _store(tmp_path, retries=1, interval=1)
        trial = dead.ask("random")
        trial.suggest_float("keep/g", 0.25, 1.0, step=0.25)  # the retry gets the enqueued value back
        dead.close()
        live.fail_stale()  # too early: the lease holds for 3 intervals
        assert decode_trials(live.study)[-1].state == TrialState.RUNNING
        time.sleep(4.5)
        live.fail_stale()
    outcomes = decode_trials(live.study)
    assert [(o.state, o.fail_reason, o.retry_of) for o in outcomes] == [
        (TrialState.FAIL, STALE_REASON, None), (TrialState.FAIL, STALE_REASON, 0)]  # no third attempt
    assert outcomes[1].params == outcomes[0].params
    assert "re-run" in warnings[0] and "failed for good" in warnings[1]
    live.close()


def test_a_plan_measured_before_in_the_study_is_recorded_again_without_a_second_evaluation(tmp_path):
    problem = SyntheticProblem(groups=3, seed=0)
    store, _ = _store(tmp_path)
    strategy = create_strategy("uniform", problem.space, "l1", 0, 24, Constraints(), problem)
    evaluator = SyntheticEvaluator(problem)
    optimize(store, strategy, LocalExecutor(evaluator), 24, multi_fidelity=False)
    outcomes = [o for o in decode_trials(store.study) if o.state == TrialState.COMPLETE]
    plans = [json.dumps(dict(o.measurement.plan), sort_keys=True) for o in outcomes]
    reused = [o for o in outcomes if o.reused_from is not None]
    assert len(outcomes) == 24 and reused  # 24 ratios on a grid of 17 keep values repeat plans
    assert evaluator.calls == len(set(plans)) == 24 - len(reused)  # each distinct plan evaluated once
    by_number = {o.number: o for o in outcomes}
    for o in reused:
        assert o.measurement == by_number[o.reused_from].measurement and by_number[o.reused_from].reused_from is None
    store.close()
