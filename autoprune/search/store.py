"""The study store: the one owner of what autoprune writes into an Optuna study, and how it is read back.

Modelled on Optuna's storage contract (``BaseStorage`` + ``FrozenTrial``): typed, frozen records, each with one
codec to and from the study's user attributes, and no private Optuna API.

- :class:`StudyIdentity` — what makes two runs' trials comparable; written once, when the study is claimed, and
  checked on every later run (a mismatch is refused naming the field).
- :class:`DenseBaseline` — the unpruned model every candidate is compared with; written once with the identity.
- :class:`Measurement` — what an evaluator measured about one candidate (``CandidateResult.attrs()``).
- :class:`TrialOutcome` — one trial as the driver recorded it: state, measurement, feasibility, failure reason,
  attempts, the trial it retries, and the strategy's own declared attributes.

Trial attributes stay flat (``accuracy``, ``latency_ms``, ...) so optuna-dashboard and ``trial.user_attrs``
show them; only this module names the keys. Strategies declare theirs with :func:`declare_strategy_attrs`.

The write path (driver side) is :class:`StudyStore`: it holds the storage object it created, keeps leases
(heartbeats) on the trials in flight and retries storage calls that lost their connection.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.trial import FrozenTrial, TrialState

from autoprune.errors import UserError
from autoprune.search.storage import Lease, mask_url, open_storage, redact, with_retry

STUDY_ATTR = "autoprune"  # the study record: identity, dense baseline, space, profile, baseline spec
CONFIG_ATTR = "autoprune.config"  # the latest run's configuration (storage password masked)
STUDY_SCHEMA = 2
STALE_REASON = "interrupted: its driver stopped renewing the trial's lease (heartbeat)"
INTERRUPTED = "interrupted"  # prefix of every reason that is not the candidate's own fault

# Trial attribute keys (one place). Strategy keys are declared by the strategies themselves.
STRATEGY, FAIL_REASON, ATTEMPTS, RETRY_OF, FEASIBLE, CONSTRAINTS, REUSED_FROM = (
    "strategy", "fail_reason", "attempts", "retry_of", "feasible", "constraints", "reused_from")
_STRATEGY_ATTRS: dict[str, str] = {}  # key -> the strategy (or strategy family) that declared it


def declare_strategy_attrs(owner: str, *keys: str) -> tuple[str, ...]:
    """Register per-trial attributes a strategy writes (e.g. ``rl_actions``); re-queued trials keep them."""
    for key in keys:
        _STRATEGY_ATTRS[key] = owner
    return keys


def strategy_attr_keys() -> tuple[str, ...]:
    return tuple(_STRATEGY_ATTRS)


def sha256_file(path: str | Path | None) -> str | None:
    if not path:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class StudyIdentity:
    """Settings that must match for trials to be comparable. Hashes are hex sha256 digests."""

    model: str
    target: str  # the profile's name
    data: str
    input_shape: tuple[int, ...]
    checkpoint: str | None
    checkpoint_sha256: str | None
    weights: str | None
    seed: int  # changes the validation split and the baseline
    baseline_recipe: Mapping[str, Any]
    space_sha256: str | None  # of the --space file (None: the generated space)
    profile_sha256: str  # of the target profile's contents

    @classmethod
    def build(cls, model: str, profile, data: str, input_shape, checkpoint: str | None, weights: str | None,
              seed: int, recipe: Mapping[str, Any], space_file: str | None) -> "StudyIdentity":
        contents = {k: v for k, v in profile.to_dict().items() if k != "path"}
        return cls(model, profile.name, data, tuple(int(d) for d in input_shape), checkpoint,
                   sha256_file(checkpoint), weights, int(seed), dict(recipe), sha256_file(space_file),
                   sha256_json(contents))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "input_shape": list(self.input_shape), "baseline_recipe": dict(self.baseline_recipe)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "StudyIdentity":
        return cls(**{**{f.name: data[f.name] for f in fields(cls)}, "input_shape": tuple(data["input_shape"])})

    def mismatch(self, other: "StudyIdentity") -> tuple[str, Any, Any] | None:
        """The first field where ``other`` differs: (name, this value, other value)."""
        mine, theirs = self.to_dict(), other.to_dict()
        for f in fields(self):
            if mine[f.name] != theirs[f.name]:
                return f.name, mine[f.name], theirs[f.name]
        return None


@dataclass(frozen=True)
class ModelFigures:
    """Size of a model: parameters (all, nonzero), MACs per image, MFLOPs, size in MB at its precision."""

    params: int
    nonzero_params: int
    macs: int
    mflops: float
    size_mb: float

    @classmethod
    def of(cls, stats) -> "ModelFigures":
        """From :class:`autoprune.pruning.metrics.ModelStats` (rounded as stored)."""
        d = stats.to_dict()
        return cls(int(d["params"]), int(d["nonzero_params"]), int(d["macs"]), float(d["mflops"]), float(d["size_mb"]))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelFigures":
        return cls(int(data["params"]), int(data["nonzero_params"]), int(data["macs"]), float(data["mflops"]),
                   float(data["size_mb"]))


@dataclass(frozen=True)
class DenseBaseline:
    """The unpruned model. Accuracy in [0, 1]; latency in ms predicted on the target by the cost model."""

    accuracy: float
    per_class_accuracy: tuple[float, ...]
    class_names: tuple[str, ...]
    latency_ms: float
    latency_provenance: str
    latency_source: str
    source: str  # where the weights came from (checkpoint, cache, trained)
    stats: ModelFigures
    test_accuracy: float | None = None  # on the data's official test split, where it has one (never searched on)
    val_size: int | None = None  # images in the validation split every accuracy here is measured on

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "per_class_accuracy": list(self.per_class_accuracy),
                "class_names": list(self.class_names), "latency_ms": self.latency_ms,
                "latency_provenance": self.latency_provenance, "latency_source": self.latency_source,
                "source": self.source, **self.stats.to_dict(), "test_accuracy": self.test_accuracy,
                "val_size": self.val_size}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DenseBaseline":
        test = d.get("test_accuracy")  # absent from studies written before the test split was recorded
        size = d.get("val_size")  # likewise before the validation split's size was
        return cls(float(d["accuracy"]), tuple(float(v) for v in d["per_class_accuracy"]),
                   tuple(str(c) for c in d["class_names"]), float(d["latency_ms"]), str(d["latency_provenance"]),
                   str(d["latency_source"]), str(d["source"]), ModelFigures.from_dict(d),
                   None if test is None else float(test), None if size is None else int(size))

    def accuracy_noise_points(self) -> float | None:
        """Half-width in points of the 95 % binomial interval of an accuracy like the dense model's on the
        validation split: how far apart two candidates' figures must be before the split tells them apart."""
        if not self.val_size:
            return None
        p = min(max(self.accuracy, 0.0), 1.0)
        return 196.0 * math.sqrt(max(p * (1.0 - p), 0.25 / self.val_size) / self.val_size)


@dataclass(frozen=True)
class StudyRecord:
    """What a study is about: identity and dense baseline, the searched groups, the profile's provenance and
    the baseline spec (everything ``export`` needs to rebuild the dense model)."""

    identity: StudyIdentity
    dense: DenseBaseline
    groups: tuple[tuple[str, int], ...]  # (group name, dense channels)
    alignment: int
    profile_provenance: str
    profile_source: str
    baseline_spec: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"schema": STUDY_SCHEMA, "identity": self.identity.to_dict(), "baseline": self.dense.to_dict(),
                "groups": [{"name": n, "channels": c} for n, c in self.groups], "alignment": self.alignment,
                "profile_provenance": self.profile_provenance, "profile_source": self.profile_source,
                "baseline_spec": dict(self.baseline_spec)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "StudyRecord":
        return cls(StudyIdentity.from_dict(d["identity"]), DenseBaseline.from_dict(d["baseline"]),
                   tuple((str(g["name"]), int(g["channels"])) for g in d["groups"]), int(d["alignment"]),
                   str(d["profile_provenance"]), str(d["profile_source"]), dict(d["baseline_spec"]))


def read_study_record(study: optuna.Study) -> StudyRecord | None:
    """The study's record; None for a study autoprune did not create. A record of an older autoprune (no
    schema 2) is refused with a UserError saying what to do."""
    data = study.user_attrs.get(STUDY_ATTR)
    if data is None:
        return None
    if not isinstance(data, Mapping) or data.get("schema") != STUDY_SCHEMA:
        raise UserError(f"study {study.study_name!r} was written by an older autoprune (its record has no schema "
                        f"{STUDY_SCHEMA}); re-run the search under a new --study name with this version")
    return StudyRecord.from_dict(data)


def read_study_config(study: optuna.Study) -> dict[str, Any]:
    """The configuration of the latest run on the study (the storage password masked)."""
    return dict(study.user_attrs[CONFIG_ATTR])


@dataclass(frozen=True)
class Measurement:
    """What the evaluator measured about one candidate. Accuracies in [0, 1]; latency in ms (predicted on the
    target); ``stats.size_mb`` at the candidate's precision; ``eval_seconds`` wall time of the evaluation."""

    plan: Mapping[str, Any]
    accuracy: float
    proxy_accuracy: float  # after BN recalibration, before fine-tuning
    per_class_accuracy: tuple[float, ...]
    latency_ms: float
    latency_provenance: str
    latency_source: str
    stats: ModelFigures
    eval_seconds: float
    finetune_steps: int  # spent
    finetune_budget: int  # it would have had
    fidelity: str  # "proxy" | "cut_short" | "finetuned"
    fidelity_reason: str
    curve: tuple[tuple[int, float], ...]  # (steps so far, accuracy) at each check
    precision: str  # fp32 | int8
    float_accuracy: float | None = None  # INT8: the FP32 accuracy before quantization
    eval_pid: int | None = None  # the process that evaluated it

    @property
    def params(self) -> int:
        return self.stats.params

    @property
    def size_mb(self) -> float:
        return self.stats.size_mb

    def to_attrs(self) -> dict[str, Any]:
        attrs = {"plan": dict(self.plan), "accuracy": self.accuracy, "proxy_accuracy": self.proxy_accuracy,
                 "per_class_accuracy": list(self.per_class_accuracy), "latency_ms": self.latency_ms,
                 "latency_provenance": self.latency_provenance, "latency_source": self.latency_source,
                 **self.stats.to_dict(), "eval_seconds": self.eval_seconds, "finetune_steps": self.finetune_steps,
                 "finetune_budget": self.finetune_budget, "fidelity": self.fidelity,
                 "fidelity_reason": self.fidelity_reason, "accuracy_curve": [list(p) for p in self.curve],
                 "precision": self.precision}
        if self.float_accuracy is not None:
            attrs["float_accuracy"] = self.float_accuracy
        if self.eval_pid is not None:
            attrs["eval_pid"] = self.eval_pid
        return attrs

    @classmethod
    def from_attrs(cls, a: Mapping[str, Any]) -> "Measurement":
        return cls(dict(a["plan"]), float(a["accuracy"]), float(a["proxy_accuracy"]),
                   tuple(float(v) for v in a["per_class_accuracy"]), float(a["latency_ms"]),
                   str(a["latency_provenance"]), str(a["latency_source"]), ModelFigures.from_dict(a),
                   float(a["eval_seconds"]), int(a["finetune_steps"]), int(a["finetune_budget"]), str(a["fidelity"]),
                   str(a["fidelity_reason"]), tuple((int(s), float(v)) for s, v in a["accuracy_curve"]),
                   str(a["precision"]), float(a["float_accuracy"]) if "float_accuracy" in a else None,
                   int(a["eval_pid"]) if "eval_pid" in a else None)


@dataclass(frozen=True)
class TrialOutcome:
    """One trial of an autoprune study as the driver recorded it. ``measurement`` is set exactly for COMPLETE
    trials; ``feasible`` and ``violations`` (Optuna's convention: <= 0 met) with it. ``fail_reason`` is
    ``"Class: first line"``, or starts with ``interrupted`` when the trial's process stopped, not the
    candidate."""

    number: int
    state: TrialState
    params: Mapping[str, Any]
    strategy: str | None
    measurement: Measurement | None = None
    feasible: bool | None = None
    violations: Mapping[str, float] = field(default_factory=dict)
    fail_reason: str | None = None
    attempts: int = 1
    retry_of: int | None = None
    strategy_attrs: Mapping[str, Any] = field(default_factory=dict)
    reused_from: int | None = None  # the measurement is that of an earlier trial of the same plan (not re-run)

    @property
    def interrupted(self) -> bool:
        return self.state == TrialState.FAIL and str(self.fail_reason).startswith(INTERRUPTED)


def decode_trial(trial: FrozenTrial) -> TrialOutcome:
    """The codec's read side for one trial (see :class:`TrialOutcome`)."""
    a = trial.user_attrs
    try:
        complete = trial.state == TrialState.COMPLETE
        reason = a.get(FAIL_REASON)  # optional: only failed trials have one
        if trial.state == TrialState.FAIL and reason is None:
            reason = STALE_REASON  # failed by Optuna's stale-heartbeat check, which cannot write a reason
        return TrialOutcome(
            number=trial.number, state=trial.state, params=dict(trial.params), strategy=a.get(STRATEGY),
            measurement=Measurement.from_attrs(a) if complete else None,
            feasible=bool(a[FEASIBLE]) if complete else None,
            violations={str(k): float(v) for k, v in a[CONSTRAINTS].items()} if complete else {},
            fail_reason=reason, attempts=int(a.get(ATTEMPTS, 1)),
            retry_of=int(a[RETRY_OF]) if RETRY_OF in a else None,
            strategy_attrs={k: a[k] for k in _STRATEGY_ATTRS if k in a},
            reused_from=int(a[REUSED_FROM]) if REUSED_FROM in a else None,
        )
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"trial {trial.number} was not recorded by this autoprune version ({type(err).__name__}: "
                        f"{err}); re-run the search under a new --study name") from err


def _decode_planned(trial: FrozenTrial) -> TrialOutcome:
    """``trial`` decoded with its whole plan: an enqueued plan interrupted before all its parameters were suggested
    still has them all (Optuna keeps an enqueued trial's parameters as its fixed_params)."""
    outcome = decode_trial(trial)
    fixed = trial.system_attrs.get("fixed_params") or {}
    return replace(outcome, params={**fixed, **outcome.params})


def decode_trials(study: optuna.Study, states: Iterable[TrialState] | None = None) -> list[TrialOutcome]:
    trials = with_retry(study.get_trials, deepcopy=False, states=tuple(states) if states else None)
    return [decode_trial(t) for t in trials]


def completed_outcomes(study: optuna.Study) -> list[TrialOutcome]:
    return decode_trials(study, (TrialState.COMPLETE,))


def trial_attrs(strategy: str | None = None, retry_of: int | None = None, attempts: int | None = None,
                fail_reason: str | None = None, strategy_attrs: Mapping[str, Any] | None = None,
                reused_from: int | None = None) -> dict[str, Any]:
    """The codec's write side for the driver's bookkeeping attributes (only what is set)."""
    attrs: dict[str, Any] = {}
    for key in strategy_attrs or {}:
        if key not in _STRATEGY_ATTRS:
            raise ValueError(f"strategy attribute {key!r} was not declared (declare_strategy_attrs)")
    attrs.update(strategy_attrs or {})
    for key, value in ((STRATEGY, strategy), (RETRY_OF, retry_of), (ATTEMPTS, attempts), (FAIL_REASON, fail_reason),
                       (REUSED_FROM, reused_from)):
        if value is not None:
            attrs[key] = value
    return attrs


def outcome_attrs(measurement: Measurement, feasible: bool, violations: Mapping[str, float]) -> dict[str, Any]:
    """Everything written on a trial before it is told COMPLETE."""
    return {**measurement.to_attrs(), FEASIBLE: bool(feasible), CONSTRAINTS: dict(violations)}


class StudyStore:
    """The driver's handle on one study: every write of a search goes through here.

    Holds the storage object it opened (never Optuna's private one), so it can renew the lease of the trials in
    flight (:class:`~autoprune.search.storage.Lease`) and fail trials whose lease expired. A trial whose lease
    expired is failed by Optuna's stale-trial check and re-queued at most ``worker_retries`` times (counted along
    its ``retry_of`` chain), then stays failed. Every write is retried while the connection is lost; a trial
    another driver already finished is dropped with a warning. A store built on a study alone (``storage``
    None, e.g. an in-memory study) keeps no leases.
    """

    def __init__(self, study: optuna.Study, storage: optuna.storages.BaseStorage | None = None,
                 heartbeat_interval: float | None = None, worker_retries: int = 1, warn=None) -> None:
        self.study = study
        self.storage = storage
        self.worker_retries = worker_retries
        self.warn = warn or (lambda text: None)
        self.heartbeat_interval = heartbeat_interval if storage is not None else None
        self._study_id = storage.get_study_id_from_name(study.study_name) if storage is not None else None
        self._lease = Lease(storage, heartbeat_interval) if self.heartbeat_interval else None
        self._ids: dict[int, int] = {}  # trial number -> storage trial id, of the trials this driver leased
        self._nudged: set[int] = set()  # unlabelled RUNNING trials given their one heartbeat (see fail_stale)

    @classmethod
    def open(cls, url: str, name: str, directions: list[str], metric_names: list[str],
             heartbeat_interval: int | None = 10, worker_retries: int = 1, warn=None) -> "StudyStore":
        """Create or load study ``name`` in ``url``; a UserError (password masked) if the URL cannot be used."""
        holder: list[StudyStore] = []
        for attempt in range(3):
            try:
                storage = open_storage(url, heartbeat_interval, lambda _study, trial: holder[0]._on_stale(trial))
                study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True,
                                            directions=directions)
                break
            except UserError:
                raise
            except Exception as err:  # noqa: BLE001 - any storage failure is the user's URL or permissions
                if isinstance(err, sqlalchemy.exc.IntegrityError) and attempt < 2:
                    # Another driver created the same new database at this moment; opening it again succeeds.
                    time.sleep(0.5)
                    continue
                first = str(err).splitlines()[0] if str(err) else type(err).__name__
                raise UserError(f"cannot open study storage {mask_url(url)!r}: {redact(first, url)} (pass an Optuna "
                                "storage URL such as sqlite:///path/study.db)") from None
        if len(study.directions) == len(directions):  # a mismatch is the caller's to explain
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(metric_names)
        store = cls(study, storage, heartbeat_interval, worker_retries, warn)
        holder.append(store)
        return store

    def close(self) -> None:
        if self._lease is not None:
            self._lease.close()

    # -- the study record ----------------------------------------------------------------------------------
    def check_identity(self, identity: StudyIdentity) -> None:
        """Refuse a run whose identity differs from the study's (one line naming the field)."""
        record = read_study_record(self.study)
        if record is None:
            return
        diff = record.identity.mismatch(identity)
        if diff is not None:
            key, held, given = diff
            raise UserError(f"study {self.study.study_name!r} holds trials for {key}={held!r}, not {given!r}; pass a "
                            "new --study name (or --out) to start a separate search")

    def claim(self, record: StudyRecord) -> None:
        """Write the study record once; a later run (or a second driver) only checks it."""
        self.check_identity(record.identity)
        if read_study_record(self.study) is None:
            with_retry(self.study.set_user_attr, STUDY_ATTR, record.to_dict())

    def set_config(self, config: Mapping[str, Any]) -> None:
        with_retry(self.study.set_user_attr, CONFIG_ATTR, dict(config))

    # -- trials --------------------------------------------------------------------------------------------
    def ask(self, strategy: str) -> optuna.Trial:
        """A new (or waiting) trial, leased to this driver and labelled with ``strategy``."""
        with warnings.catch_warnings():
            # Optuna warns that heartbeats are meant for Study.optimize: here the Lease keeps them (ask/tell).
            warnings.filterwarnings("ignore", message="Heartbeat of storage", category=UserWarning)
            trial = with_retry(self.study.ask)
        if self._lease is not None:
            self._ids[trial.number] = self._trial_id(trial.number)
            self._lease.hold(self._ids[trial.number])
        self.set_attrs(trial, trial_attrs(strategy=strategy))
        return trial

    def set_attrs(self, trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
        for key, value in attrs.items():
            with_retry(trial.set_user_attr, key, value)

    def tell_complete(self, trial: optuna.Trial, measurement: Measurement, feasible: bool,
                      violations: Mapping[str, float], values: list[float]) -> bool:
        """Record ``measurement`` and finish the trial COMPLETE; False if it was dropped (finished elsewhere)."""
        def write() -> None:
            self.set_attrs(trial, outcome_attrs(measurement, feasible, violations))
            for name, value in violations.items():
                with_retry(trial.set_constraint, name, value)
            with_retry(self.study.tell, trial, values, TrialState.COMPLETE)

        return self._finish(trial, write, TrialState.COMPLETE)

    def tell_failed(self, trial: optuna.Trial, reason: str) -> bool:
        """Finish the trial FAIL with ``reason``; False if another driver had already finished it."""
        def write() -> None:
            self.set_attrs(trial, trial_attrs(fail_reason=reason))
            with_retry(self.study.tell, trial, None, TrialState.FAIL)

        return self._finish(trial, write, TrialState.FAIL, reason)

    def requeue(self, trial: optuna.Trial, reason: str) -> None:
        """Fail ``trial`` as interrupted (``reason`` starts with "interrupted") and enqueue its plan again."""
        if self.tell_failed(trial, reason):
            self._enqueue_retry(_decode_planned(self._frozen(trial.number)))

    def enqueue(self, params: Mapping[str, Any], attrs: Mapping[str, Any]) -> None:
        with_retry(self.study.enqueue_trial, dict(params), user_attrs=dict(attrs), skip_if_exists=False)

    def fail_stale(self) -> None:
        """Fail the trials whose lease expired (another driver's process died) and re-queue them.

        A trial that is RUNNING without a strategy label has not been leased by anyone yet, or never will be: an
        ask whose reply was lost (the database committed the pop of a waiting trial, or a new trial, and the
        connection dropped before ``ask`` returned, so the retried ask took another) leaves it with no heartbeat,
        which Optuna's stale check never sees. Each such trial gets one heartbeat here, once: a driver that holds
        it renews it, and an orphan's lease expires and it is re-queued like any other.
        """
        if self._lease is None:
            return
        for trial in with_retry(self.study.get_trials, deepcopy=False, states=(TrialState.RUNNING,)):
            if STRATEGY not in trial.user_attrs and trial.number not in self._nudged:
                with_retry(self.storage.record_heartbeat, self._trial_id(trial.number))
                self._nudged.add(trial.number)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            with_retry(optuna.storages.fail_stale_trials, self.study)

    def _on_stale(self, trial: FrozenTrial) -> None:
        outcome = _decode_planned(trial)
        by_number = {t.number: t for t in decode_trials(self.study)}
        deaths, seen = 1, outcome
        while seen.retry_of is not None and seen.retry_of in by_number:
            seen = by_number[seen.retry_of]
            deaths += seen.fail_reason == STALE_REASON
        lost = ("was lost while being asked (a dropped connection, or its driver stopped)" if outcome.strategy is None
                else "lost its driver mid-trial (lease expired)")  # unlabelled: see fail_stale
        if outcome.strategy is None and not outcome.params:
            self.warn(f"trial {trial.number} {lost} before it had a plan; nothing is lost")
        elif outcome.params and deaths <= self.worker_retries:
            self._enqueue_retry(outcome)
            self.warn(f"trial {trial.number} {lost}; it will be re-run")
        else:
            self.warn(f"trial {trial.number} lost its driver mid-trial {deaths} time(s); failed for good "
                      "(raise --worker-retries to retry more)")

    def _enqueue_retry(self, outcome: TrialOutcome) -> None:
        if outcome.params:
            self.enqueue(outcome.params, trial_attrs(retry_of=outcome.number, strategy_attrs=outcome.strategy_attrs))

    def _finish(self, trial: optuna.Trial, write, state: TrialState, reason: str | None = None) -> bool:
        try:
            write()
            return True
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
            frozen = self._frozen(trial.number)
            if frozen.state == TrialState.RUNNING:
                raise
            # Only this driver completes its trials, or fails them with its reason: then a retried write had
            # committed before its connection dropped. Anything else is another driver's stale-trial check.
            if frozen.state == state and (state == TrialState.COMPLETE or frozen.user_attrs.get(FAIL_REASON) == reason):
                return True
            self.warn(f"trial {trial.number} was already {frozen.state.name} (failed by another driver when its lease "
                      "expired); this driver's result for it is dropped")
            return False
        finally:
            if self._lease is not None and trial.number in self._ids:
                self._lease.release(self._ids.pop(trial.number))

    def _frozen(self, number: int) -> FrozenTrial:
        return next(t for t in with_retry(self.study.get_trials, deepcopy=False) if t.number == number)

    def _trial_id(self, number: int) -> int:
        return with_retry(self.storage.get_trial_id_from_study_id_trial_number, self._study_id, number)
