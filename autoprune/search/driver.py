"""The ask/evaluate/tell loop of one driver, which may share its study with other drivers.

Failure isolation: any ``Exception`` raised while a trial is proposed, evaluated or told fails that trial with
its reason (``"Class: first line"``); the driver goes on. Only :data:`MAX_CONSECUTIVE_FAILURES` failures in a
row stop it, with their most common reason.

Liveness by lease: the study store renews the heartbeat of every trial in flight; every heartbeat interval the
driver fails the trials of other drivers whose lease expired (Optuna's stale-trial check) and the store re-queues
them. ``--trials`` counts the trials of the strategy in the whole study, whoever ran them; when nothing is left
to ask but other drivers' trials are running, the driver waits for them to finish or go stale, and leaves a
live driver's trial to that driver once it has waited a full lease without a change.
"""

from __future__ import annotations

import json
import math
import time

import optuna
from optuna.trial import TrialState

from autoprune.errors import UserError
from autoprune.search.backends import Executor, Finished, describe_error
from autoprune.search.evaluator import Guidance, rungs_of
from autoprune.search.pareto import pareto_front
from autoprune.search.records import TrialRecord, completed_records, pareto_records
from autoprune.search.storage import LEASE_INTERVALS, lost_connection
from autoprune.search.store import (
    Measurement, StudyStore, TrialOutcome, completed_outcomes, decode_trials, trial_attrs,
)
from autoprune.search.strategies import Constraints, Strategy

MAX_CONSECUTIVE_FAILURES = 5
WAIT_POLL_S = 0.5


class EvaluationError:
    """An evaluation that raised, as a plain value (so it crosses a Ray worker boundary like a result)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class IsolatedEvaluator:
    """Wraps an evaluator so that any ``Exception`` from ``evaluate`` becomes an :class:`EvaluationError`."""

    def __init__(self, evaluator) -> None:
        self.evaluator = evaluator

    def evaluate(self, plan, guidance=None):
        try:
            return self.evaluator.evaluate(plan, guidance)
        except Exception as err:  # noqa: BLE001 - any failure of one candidate is that trial's outcome
            return EvaluationError(describe_error(err))

    def with_device(self, device: str) -> "IsolatedEvaluator":
        """The same isolation around the evaluator on ``device`` (a Ray worker's GPU)."""
        return IsolatedEvaluator(self.evaluator.with_device(device))


def guidance(study: optuna.Study, constraints: Constraints) -> Guidance:
    """The feasible front, the largest fine-tuning gain so far and the feasible finished candidates' accuracy at
    each check of their fine-tune, for the multi-fidelity decisions."""
    points, gains, curves = [], [], []
    for outcome in completed_outcomes(study):
        m = outcome.measurement
        if outcome.feasible:
            points.append((m.accuracy, m.latency_ms))
        if m.fidelity == "finetuned" and m.finetune_steps:
            gains.append(m.accuracy - m.proxy_accuracy)
            if outcome.feasible:
                curves.append((m.curve, m.latency_ms))
    front = tuple(points[i] for i in pareto_front(points))
    rungs, seen = rungs_of(curves)
    return Guidance(front=front, max_gain=max(gains, default=0.0), gains_seen=len(gains), constraints=constraints,
                    rungs=rungs, curves_seen=seen)


def non_finite(m: Measurement) -> str | None:
    values = (m.accuracy, m.latency_ms, m.size_mb)
    if all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        return None
    return f"non-finite objective (accuracy={m.accuracy}, latency_ms={m.latency_ms}, size_mb={m.size_mb})"


def optimize(
    study: optuna.Study | StudyStore,
    strategy: Strategy,
    executor: Executor,
    trials: int,
    constraints: Constraints | None = None,
    reporter=None,
    multi_fidelity: bool = True,
) -> bool:
    """Ask/evaluate/tell until ``trials`` trials of ``strategy`` count in the study, keeping ``executor.slots``
    candidates in flight; return True if Ctrl-C stopped it (the trials in flight are then recorded as
    interrupted and enqueued again, so the next run re-runs them). A plain study gets a store without leases."""
    from autoprune.search.runner import SilentReporter

    store = study if isinstance(study, StudyStore) else StudyStore(study)
    return _Driver(store, strategy, executor, trials, constraints or Constraints(), reporter or SilentReporter(),
                   multi_fidelity).run()


class _Driver:
    def __init__(self, store: StudyStore, strategy: Strategy, executor: Executor, trials: int,
                 constraints: Constraints, reporter, multi_fidelity: bool) -> None:
        self.store, self.study, self.strategy, self.executor = store, store.study, strategy, executor
        self.trials, self.constraints, self.reporter, self.multi_fidelity = trials, constraints, reporter, multi_fidelity
        self.live: dict[int, optuna.Trial] = {}
        self.asked: optuna.Trial | None = None  # asked but not yet in flight: Ctrl-C there must not leave it RUNNING
        self.failures: list[str] = []

    def run(self) -> bool:
        self.reporter.trial_done(self._counts()[0], self.trials, self._front(), None)
        interval = self.store.heartbeat_interval
        last_check, waiting_since, others_seen = -math.inf, None, None
        try:
            while True:
                if interval and time.monotonic() - last_check >= interval:
                    self.store.fail_stale()
                    last_check = time.monotonic()
                counted, others = self._counts()
                while len(self.live) < self.executor.slots and counted + len(self.live) + len(others) < self.trials:
                    counted += self._ask()
                if self.live:
                    waiting_since = None
                    self._collect(self.executor.wait())
                    continue
                if counted >= self.trials or not others or not interval:
                    return False
                # Only other drivers' trials are left: wait until they finish, or their lease expires (then they
                # are re-queued here), or a full lease passed without a change (their drivers are alive).
                if others != others_seen:
                    waiting_since, others_seen = time.monotonic(), others
                elif time.monotonic() - waiting_since > (LEASE_INTERVALS + 3) * interval:  # nudge, lease, check
                    self.reporter.warn(f"trials {sorted(others)} are still running in other live drivers; "
                                       "leaving them to those drivers")
                    return False
                time.sleep(WAIT_POLL_S)
        except KeyboardInterrupt:
            self._requeue_in_flight("interrupted: stopped with Ctrl-C")
            return True
        except UserError as err:
            self._requeue_in_flight(f"interrupted: the search stopped ({str(err)[:80]})")
            raise

    def _requeue_in_flight(self, reason: str) -> None:
        for trial in [*self.live.values(), *([self.asked] if self.asked is not None else [])]:
            self._requeue(trial, reason)
        self.live.clear()

    def _requeue(self, trial: optuna.Trial, reason: str) -> None:
        try:
            self.store.requeue(trial, reason)
        except Exception as err:  # noqa: BLE001 - still down: its lease expires and a run re-queues it then
            self.reporter.warn(f"trial {trial.number} could not be re-queued ({describe_error(err)}); its lease "
                               "will expire and it will be re-run")

    def _counts(self) -> tuple[int, frozenset[int]]:
        """Trials of the strategy that count toward --trials (completed, or failed for a reason of their own),
        and the other drivers' trials of the strategy now running. An interrupted trial counts only when it is
        not re-run: not when a retry of it was enqueued, nor when it was stopped before it had a plan. A RUNNING
        trial with no strategy yet is waited for too: it is being asked elsewhere, or an ask lost it and its lease
        will expire (:meth:`StudyStore.fail_stale`), and it must not be replaced by a new sample meanwhile."""
        outcomes = decode_trials(self.study)
        retried = {o.retry_of for o in outcomes if o.retry_of is not None}
        mine = [o for o in outcomes if o.strategy == self.strategy.name]
        counted = sum(1 for o in mine if o.state == TrialState.COMPLETE
                      or (o.state == TrialState.FAIL and not (o.interrupted and (o.number in retried or not o.params))))
        others = frozenset(o.number for o in outcomes if o.state == TrialState.RUNNING and o.number not in self.live
                           and o.strategy in (self.strategy.name, None))
        return counted, others

    def _evaluated_before(self, plan) -> TrialOutcome | None:
        """A completed trial of the study that measured exactly ``plan`` at full fidelity (fine-tuned for its
        whole budget, or no fine-tune asked), if there is one."""
        wanted = plan.to_json()
        for outcome in completed_outcomes(self.study):
            m = outcome.measurement
            if ((m.fidelity == "finetuned" or m.finetune_budget == 0)
                    and json.dumps(dict(m.plan), sort_keys=True) == wanted):
                return outcome
        return None

    def _front(self) -> list[TrialRecord]:
        return pareto_records(completed_records(self.study))

    def _ask(self) -> int:
        """Ask one trial and put it in flight; returns 1 if it needs nothing more here (it failed, or was recorded
        from an earlier measurement) and so already counts, else 0."""
        before_error = None
        try:
            self.strategy.before_ask(self.study)
        except Exception as err:  # noqa: BLE001 - recorded on the trial asked next
            before_error = describe_error(err)
        trial = self.asked = self.store.ask(self.strategy.name)
        try:
            if before_error:
                raise RuntimeError(before_error)
            plan = self.strategy.propose(self.study, trial)
            earlier = self._evaluated_before(plan)
            if earlier is not None:
                # The evaluator is seeded: the same plan would measure the same. Record the earlier measurement,
                # marked as such, instead of spending a fine-tune on it again.
                self.asked = None
                self.store.set_attrs(trial, trial_attrs(reused_from=earlier.number))
                self._tell(trial, earlier.measurement)
                return 1
            hint = guidance(self.study, self.constraints) if self.multi_fidelity else None
            self.live[trial.number] = trial
            self.executor.submit(trial.number, plan, hint)
        except Exception as err:  # noqa: BLE001 - a proposal that cannot be made fails its trial only
            self.live.pop(trial.number, None)
            self.asked = None
            if before_error is None and lost_connection(err):
                # The plan's fault it is not: the database went away while it was being proposed or checked.
                # Fail it as interrupted and enqueue it again, so it neither counts nor is lost.
                self._requeue(trial, f"interrupted: the database connection dropped ({describe_error(err)[:80]})")
                return 0
            return int(self._failed(trial, before_error or describe_error(err)))
        self.asked = None
        return 0

    def _collect(self, finished: list[Finished]) -> None:
        for item in finished:
            trial = self.live[item.key]  # stays "live" until told, so Ctrl-C meanwhile re-queues it
            error, measurement = item.error, None
            if error is None and isinstance(item.result, EvaluationError):
                error = item.result.reason
            if error is None:
                try:
                    measurement = item.result.attrs()
                    error = non_finite(measurement)
                except Exception as err:  # noqa: BLE001 - a result that cannot be recorded fails its trial
                    error = describe_error(err)
            try:
                if item.attempts > 1:
                    self.store.set_attrs(trial, trial_attrs(attempts=item.attempts))
                if error:
                    self._failed(trial, error)
                else:
                    self._tell(trial, measurement)
            except UserError:
                self.live.pop(item.key)  # told already: too many failures in a row stop the search
                raise
            except Exception as err:  # noqa: BLE001 - the attempts count could not be written
                self._failed(trial, describe_error(err))
            self.live.pop(item.key)

    def _tell(self, trial: optuna.Trial, m: Measurement) -> None:
        c = self.constraints
        violations = c.violations(m.accuracy, m.latency_ms, m.params)
        values = [m.accuracy, m.latency_ms] + ([m.size_mb] if len(self.study.directions) == 3 else [])
        try:
            told = self.store.tell_complete(trial, m, c.feasible(m.accuracy, m.latency_ms, m.params), violations, values)
        except Exception as err:  # noqa: BLE001 - the storage refused the result: fail the trial with why
            self._failed(trial, describe_error(err))
            return
        if told:
            self.failures.clear()
            self.reporter.trial_done(self._counts()[0], self.trials, self._front(), None)

    def _failed(self, trial: optuna.Trial, reason: str) -> bool:
        """Fail ``trial`` with ``reason``; False when the failure could not be recorded (dropped, warned)."""
        try:
            if not self.store.tell_failed(trial, reason):
                return False
        except Exception as err:  # noqa: BLE001 - its lease expires and another run re-queues it
            self.reporter.warn(f"trial {trial.number} failed ({reason}) and the failure could not be recorded "
                               f"({describe_error(err)}); its lease will expire and it will be re-run")
            return False
        self.failures.append(reason)
        self.reporter.trial_done(self._counts()[0], self.trials, self._front(), f"trial {trial.number}: {reason}")
        if len(self.failures) >= MAX_CONSECUTIVE_FAILURES:
            common = max(set(self.failures), key=self.failures.count)
            raise UserError(
                f"{len(self.failures)} trials in a row failed, most often with {common!r}; "
                "fix the cause (see the trials' fail_reason in the study) and run the same command to resume"
            )
        return True
