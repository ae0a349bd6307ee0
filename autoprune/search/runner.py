"""``run_search``: baseline → space → cost model → Optuna study loop → Pareto front on disk.

The study storage is the single source of truth: the driver (this process) does every ask and tell; the
backend (in-process or Ray workers) only evaluates. Every finished trial is committed before the driver moves
on, so a killed run loses at most the trials in flight, which the next run fails as interrupted and
re-enqueues. A resumed run counts the completed trials toward ``--trials`` and rebuilds strategy state from
the recorded trials.
"""

from __future__ import annotations

import math
import os
import re
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import optuna
import sqlalchemy.exc
from optuna.trial import TrialState

from autoprune.baseline import BaselineSpec, get_baseline
from autoprune.data import load_data
from autoprune.distill import DistillSettings
from autoprune.errors import UserError, unknown_choice
from autoprune.models import available_models
from autoprune.hardware import CostModel, load_profile
from autoprune.paths import atomic_write_json
from autoprune.plan import PruningPlan
from autoprune.pruning import generate_space, model_stats
from autoprune.search.backends import BACKENDS, Executor, Finished, RaySettings, create_executor
from autoprune.search.evaluator import Evaluator, EvaluatorSettings, Guidance
from autoprune.search.pareto import pareto_front
from autoprune.search.records import STUDY_ATTR, TrialRecord, completed_records, pareto_records
from autoprune.search.strategies import (
    CONSTRAINTS_ATTR, STRATEGIES, Constraints, SpaceCosts, Strategy, check_budget_reachable, create_strategy,
)
from autoprune.training import TrainRecipe, evaluate

MAX_CONSECUTIVE_FAILURES = 5
# Settings that must match for trials to be comparable; a study created with others is refused.
IDENTITY_FIELDS = ("model", "target", "data", "input_shape", "checkpoint", "weights")


@dataclass(frozen=True)
class SearchConfig:
    """Everything a search run depends on; saved next to the results so any run can be reproduced."""

    model: str
    target: str
    data: str = "mnist5k"
    checkpoint: str | None = None
    trust_checkpoint: bool = False
    weights: str | None = None
    strategy: str = "tpe"
    trials: int = 24
    finetune_steps: int = 50
    baseline_epochs: int = 5
    importance: str = "l1"
    study: str | None = None
    storage: str | None = None
    out_dir: str | None = None
    input_shape: tuple[int, int, int, int] = (1, 3, 32, 32)
    seed: int = 0
    space_file: str | None = None
    max_latency_ms: float | None = None
    min_accuracy: float | None = None
    max_params: int | None = None
    size_objective: bool = False  # minimise size_mb as a third objective
    multi_fidelity: bool = True  # skip / cut short fine-tuning of candidates that cannot reach the front
    backend: str = "local"
    workers: int = 1
    ray_address: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    worker_retries: int = 1
    precision: tuple[str, ...] = ("fp32",)  # precisions searched: fp32 and/or int8 (static quantization)
    distill: bool = False  # fine-tune candidates with knowledge distillation from the dense model
    distill_alpha: float = 0.9
    distill_temperature: float = 4.0

    def __post_init__(self) -> None:
        if self.model not in available_models():
            raise unknown_choice("model", self.model, available_models(), "see `autoprune models`")
        if self.trials < 1:
            raise UserError(f"--trials must be at least 1, got {self.trials}")
        if self.finetune_steps < 0:
            raise UserError(f"--finetune-steps must be 0 or more, got {self.finetune_steps}")
        if self.baseline_epochs < 1:
            raise UserError(f"--baseline-epochs must be at least 1, got {self.baseline_epochs}")
        if self.strategy not in STRATEGIES:
            raise unknown_choice("strategy", self.strategy, STRATEGIES)
        from autoprune.pruning.importance import IMPORTANCE_CRITERIA

        if self.importance not in IMPORTANCE_CRITERIA:  # before any training, not at the first trial
            raise unknown_choice("importance criterion", self.importance, IMPORTANCE_CRITERIA)
        if self.backend not in BACKENDS:
            raise unknown_choice("backend", self.backend, BACKENDS)
        if self.backend == "local" and (self.workers != 1 or self.ray_address):
            raise UserError("--workers and --ray-address need --backend ray (the local backend runs one trial at a time)")
        self.constraints  # validates the limits
        object.__setattr__(self, "precision", parse_precisions(self.precision))
        DistillSettings(self.distill_alpha, self.distill_temperature)  # validates the distillation weights
        if self.backend == "ray":
            self.ray_settings

    @property
    def constraints(self) -> Constraints:
        return Constraints(self.max_latency_ms, self.min_accuracy, self.max_params)

    @property
    def ray_settings(self) -> RaySettings:
        return RaySettings(self.workers, self.ray_address, self.cpus_per_trial, self.gpus_per_trial, self.worker_retries)

    @property
    def study_name(self) -> str:
        return self.study or _slug(f"{self.model}-{self.target}-{self.data}")

    @property
    def out_path(self) -> Path:
        # The study name is slugged so that a name like "../x" cannot put files outside autoprune-runs/.
        return Path(self.out_dir) if self.out_dir else Path("autoprune-runs") / _slug(self.study_name)

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{(self.out_path / 'study.db').resolve()}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "input_shape": list(self.input_shape)}


class SearchReporter(Protocol):
    """Progress callbacks; the CLI renders them, the library never prints."""

    def stage(self, text: str) -> None: ...
    def warn(self, text: str) -> None: ...
    def baseline_epoch(self, epoch: int, epochs: int, loss: float) -> None: ...
    def trial_done(self, done: int, total: int, front: list[TrialRecord], failed: str | None) -> None: ...


class SilentReporter:
    def stage(self, text: str) -> None:
        pass

    def warn(self, text: str) -> None:
        pass

    def baseline_epoch(self, epoch: int, epochs: int, loss: float) -> None:
        pass

    def trial_done(self, done: int, total: int, front: list[TrialRecord], failed: str | None) -> None:
        pass


@dataclass(frozen=True)
class SearchResult:
    """Where the run's files are, the dense reference point, and the Pareto-optimal candidates."""

    study_name: str
    storage: str
    out_dir: Path
    baseline: dict[str, Any]
    pareto: list[TrialRecord]
    completed: int
    failed: int
    interrupted: bool = False
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "study": self.study_name,
            "storage": self.storage,
            "out_dir": str(self.out_dir),
            "baseline": self.baseline,
            "pareto": [r.to_dict() for r in self.pareto],
            "completed_trials": self.completed,
            "failed_trials": self.failed,
            "interrupted": self.interrupted,
            "warnings": self.warnings,
        }


def parse_precisions(value) -> tuple[str, ...]:
    """``"fp32,int8"`` (or a sequence) -> ("fp32", "int8"): known precisions, no duplicates, order kept."""
    from autoprune.plan import PRECISIONS

    items = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(dict.fromkeys(str(v).strip().lower() for v in items if str(v).strip()))
    if not names:
        raise UserError("--precision needs at least one of fp32, int8 (e.g. --precision fp32,int8)")
    for name in names:
        if name not in PRECISIONS:
            raise unknown_choice("precision", name, PRECISIONS, "e.g. --precision fp32,int8")
    return names


def run_search(config: SearchConfig, reporter: SearchReporter | None = None) -> SearchResult:
    """Run (or resume) the search described by ``config``; see the module docstring."""
    reporter = reporter or SilentReporter()
    warnings: list[str] = []
    profile = load_profile(config.target)
    if profile.provenance != "measured":
        warnings.append(
            f"target {profile.name!r} is {profile.provenance} ({profile.provenance_source}), not measured on the "
            "device; measure one with `autoprune profile measure` (see README)"
        )
        reporter.warn(warnings[-1])
    if "int8" in config.precision and not CostModel(profile).has_int8:  # fail before training, not after
        raise CostModel(profile).no_int8_error(config.model, config.input_shape)
    study = _open_study(config)  # fail fast on a bad storage URL or a study of another model, before training
    _check_identity(study, config, profile)

    reporter.stage(f"loading data {config.data}")
    data = load_data(config.data, tuple(config.input_shape[2:]), config.seed)
    spec = BaselineSpec(
        config.model, config.data, config.input_shape, data.num_classes, config.seed,
        TrainRecipe(epochs=config.baseline_epochs), config.weights,
    )
    reporter.stage("preparing the dense baseline")
    baseline = get_baseline(
        spec, data, Path(config.checkpoint) if config.checkpoint else None, config.trust_checkpoint,
        on_epoch=reporter.baseline_epoch,
    )
    space = generate_space(baseline.model, config.model, config.input_shape, alignment=profile.alignment)
    if config.space_file:
        space = space.with_overrides(Path(config.space_file))
    cost_model = CostModel(profile)
    dense_latency = cost_model.predict(space, PruningPlan(alignment=space.alignment))
    for precision in config.precision:  # a target that cannot price INT8 fails here, before any trial
        cost_model.predict(space, PruningPlan(alignment=space.alignment, precision=precision))
    dense_eval = evaluate(baseline.model, data.loader("val", 256, config.seed, shuffle=False), data.num_classes)
    dense = {
        "accuracy": dense_eval.accuracy,
        "per_class_accuracy": list(dense_eval.per_class_accuracy),
        "class_names": list(data.class_names),
        "latency_ms": dense_latency.latency_ms,
        "latency_provenance": dense_latency.provenance,
        "latency_source": dense_latency.source,
        "source": baseline.source,
        **model_stats(baseline.model, config.input_shape).to_dict(),
    }
    _claim_study(study, config, profile, dense, space, spec)
    evaluator = Evaluator(
        baseline.model, data, space, cost_model,
        EvaluatorSettings(finetune_steps=config.finetune_steps, seed=config.seed, distill=config.distill,
                          distill_alpha=config.distill_alpha, distill_temperature=config.distill_temperature),
    )
    costs = SpaceCosts(space, cost_model)
    check_budget_reachable(space, costs, config.constraints, config.importance)
    strategy = create_strategy(
        config.strategy, space, config.importance, config.seed, config.trials, config.constraints, costs,
        workers=config.workers,
    )
    strategy.precisions = config.precision
    study.sampler = strategy.sampler()
    _requeue_interrupted(study, reporter)
    if config.backend == "ray":
        reporter.stage(f"starting {config.workers} Ray worker(s) at {config.ray_address or 'a local runtime (127.0.0.1)'}")
    executor = create_executor(config.backend, evaluator, config.ray_settings if config.backend == "ray" else None)
    try:
        interrupted = optimize(
            study, strategy, executor, config.trials, config.constraints, reporter, multi_fidelity=config.multi_fidelity,
        )
    finally:
        executor.close()
    records = completed_records(study)
    result = SearchResult(
        study_name=config.study_name,
        storage=config.storage_url,
        out_dir=config.out_path,
        baseline=dense,
        pareto=pareto_records(records),
        completed=len(records),
        failed=sum(t.state == TrialState.FAIL for t in study.trials),
        interrupted=interrupted,
        warnings=warnings,
    )
    atomic_write_json(config.out_path / "results.json", {**result.to_dict(), "config": config.to_dict()})
    return result


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def _open_study(config: SearchConfig) -> optuna.Study:
    config.out_path.mkdir(parents=True, exist_ok=True)
    atomic_write_json(config.out_path / "config.json", {**config.to_dict(), "command": sys.argv})
    for attempt in range(3):
        try:
            study = optuna.create_study(
                study_name=config.study_name, storage=open_storage(config.storage_url), load_if_exists=True,
                directions=directions(config.size_objective),
            )
            break
        except UserError:
            raise
        except Exception as err:  # noqa: BLE001 - any storage failure is the user's URL or permissions
            if isinstance(err, sqlalchemy.exc.IntegrityError) and attempt < 2:
                # Another process (a second driver, a report) created the same new database at the same
                # moment; the schema is there now, so opening it again succeeds.
                time.sleep(0.5)
                continue
            raise UserError(
                f"cannot open study storage {config.storage_url!r}: {str(err).splitlines()[0]} "
                "(pass an Optuna storage URL such as sqlite:///path/study.db)"
            ) from err
    if len(study.directions) != len(directions(config.size_objective)):
        have = "with" if len(study.directions) == 3 else "without"
        raise UserError(
            f"study {config.study_name!r} was created {have} size as an objective; run it {have} --size-objective, "
            "or pass a new --study name"
        )
    return study


def directions(size_objective: bool) -> list[str]:
    """accuracy ↑, latency ↓ (and size ↓ with ``size_objective``)."""
    return ["maximize", "minimize"] + (["minimize"] if size_objective else [])


def open_storage(url: str) -> optuna.storages.BaseStorage | str:
    """An Optuna storage for ``url``; SQLite gets a long busy timeout so parallel writers wait, not fail."""
    if url.startswith("sqlite"):
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    return url


def _identity(config: SearchConfig, profile) -> dict[str, Any]:
    return {
        "model": config.model, "target": profile.name, "data": config.data,
        "input_shape": list(config.input_shape), "checkpoint": config.checkpoint, "weights": config.weights,
    }


def _check_identity(study: optuna.Study, config: SearchConfig, profile) -> None:
    """Refuse to add trials of another model/target/data to an existing study."""
    existing = study.user_attrs.get(STUDY_ATTR)
    if not existing:
        return
    identity = _identity(config, profile)
    for key in IDENTITY_FIELDS:
        if existing.get(key) != identity.get(key):
            raise UserError(
                f"study {config.study_name!r} holds trials for {key}={existing.get(key)!r}, not {identity.get(key)!r}; "
                "pass a new --study name (or --out) to start a separate search"
            )


def _claim_study(study: optuna.Study, config: SearchConfig, profile, dense: dict, space, baseline_spec) -> None:
    """Record what this study is about (checked by :func:`_check_identity` on every later run)."""
    study.set_user_attr(
        STUDY_ATTR,
        {
            **_identity(config, profile),
            "profile_provenance": profile.provenance,
            "profile_source": profile.provenance_source,
            "alignment": space.alignment,
            "groups": [{"name": g.name, "channels": g.channels} for g in space.groups],
            "baseline": dense,
            "baseline_spec": baseline_spec.to_dict(),
            "config": config.to_dict(),
        },
    )


def _owned_by_live_process(trial: optuna.trial.FrozenTrial) -> bool:
    owner = trial.user_attrs.get("worker") or {}
    if owner.get("host") != socket.gethostname() or not owner.get("pid"):
        return False
    try:
        os.kill(int(owner["pid"]), 0)
    except (ProcessLookupError, PermissionError, ValueError):
        return False
    return int(owner["pid"]) != os.getpid()


RETRY_ATTR_PREFIXES = ("rl_", "uniform_keep")


def _requeue(study: optuna.Study, trial, reason: str) -> None:
    """Fail ``trial`` as interrupted and enqueue its parameters again, with the strategy's own figures."""
    study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
    study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    params = trial.params
    if params:
        attrs = {k: v for k, v in trial.user_attrs.items() if k.startswith(RETRY_ATTR_PREFIXES)}
        study.enqueue_trial(params, user_attrs={**attrs, "retry_of": trial.number}, skip_if_exists=False)


def _requeue_interrupted(study: optuna.Study, reporter: SearchReporter) -> None:
    """Fail trials left RUNNING by a dead process and enqueue their plans again, so they are re-run."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _owned_by_live_process(trial):
            continue
        _requeue(study, trial, "interrupted: the process running it died")
        reporter.warn(f"trial {trial.number} was interrupted by a previous run; it will be re-run")


def _counted(study: optuna.Study, strategy: str) -> int:
    """Trials of ``strategy`` that count toward --trials: completed or failed for a reason of their own."""
    count = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        if t.user_attrs.get("strategy") != strategy:
            continue
        if t.state == TrialState.FAIL and str(t.user_attrs.get("fail_reason", "")).startswith("interrupted"):
            continue
        count += 1
    return count


def guidance(study: optuna.Study, constraints: Constraints) -> Guidance:
    """The feasible front and the largest fine-tuning gain so far, for the multi-fidelity decisions."""
    points, gains = [], []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        a = t.user_attrs
        if "accuracy" not in a:
            continue
        if a.get("feasible", True):
            points.append((float(a["accuracy"]), float(a["latency_ms"])))
        if a.get("fidelity", "finetuned") == "finetuned" and "proxy_accuracy" in a and a.get("finetune_steps", 1):
            gains.append(float(a["accuracy"]) - float(a["proxy_accuracy"]))
    front = tuple(points[i] for i in pareto_front(points))
    return Guidance(front=front, max_gain=max(gains, default=0.0), gains_seen=len(gains), constraints=constraints)


def optimize(
    study: optuna.Study,
    strategy: Strategy,
    executor: Executor,
    trials: int,
    constraints: Constraints | None = None,
    reporter: SearchReporter | None = None,
    multi_fidelity: bool = True,
) -> bool:
    """Ask/evaluate/tell until ``trials`` trials of ``strategy`` count, keeping ``executor.slots`` candidates in
    flight; return True if Ctrl-C stopped it (the trials in flight are then recorded as interrupted and
    enqueued again, so the next run re-runs them)."""
    reporter = reporter or SilentReporter()
    constraints = constraints or Constraints()
    consecutive_failures: list[str] = []
    done = _counted(study, strategy.name)
    live: dict[int, optuna.Trial] = {}
    reporter.trial_done(done, trials, pareto_records(completed_records(study)), None)

    def failed(trial: optuna.Trial, reason: str) -> None:
        nonlocal done
        trial.set_user_attr("fail_reason", reason)
        study.tell(trial, state=TrialState.FAIL)
        consecutive_failures.append(reason)
        done += 1
        reporter.trial_done(done, trials, pareto_records(completed_records(study)), f"trial {trial.number}: {reason}")
        if len(consecutive_failures) >= MAX_CONSECUTIVE_FAILURES:
            common = max(set(consecutive_failures), key=consecutive_failures.count)
            raise UserError(
                f"{len(consecutive_failures)} trials in a row failed, most often with {common!r}; "
                "fix the cause (see the trials' fail_reason in the study) and run the same command to resume"
            )

    asked: optuna.Trial | None = None  # asked but not yet in flight: Ctrl-C there must not leave it RUNNING
    try:
        while done < trials or live:
            while len(live) < executor.slots and done + len(live) < trials:
                strategy.before_ask(study)
                trial = asked = study.ask()
                trial.set_user_attr("strategy", strategy.name)
                trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid()})
                try:
                    plan = strategy.propose(study, trial)
                except (RuntimeError, ValueError, UserError) as err:
                    asked = None
                    failed(trial, _reason(err))
                    continue
                live[trial.number] = trial
                asked = None
                executor.submit(trial.number, plan, guidance(study, constraints) if multi_fidelity else None)
            if not live:
                continue
            for finished in executor.wait():
                trial = live[finished.key]  # stays "live" until told, so Ctrl-C meanwhile re-queues it
                error = finished.error or _non_finite(finished.result)
                if finished.attempts > 1:
                    trial.set_user_attr("attempts", finished.attempts)
                if error:
                    failed(trial, error)
                    live.pop(finished.key)
                    continue
                _tell(study, trial, finished, constraints)
                live.pop(finished.key)
                consecutive_failures.clear()
                done += 1
                reporter.trial_done(done, trials, pareto_records(completed_records(study)), None)
    except KeyboardInterrupt:
        for trial in [*live.values(), *([asked] if asked is not None else [])]:
            frozen = study._storage.get_trial(trial._trial_id)
            if frozen.state == TrialState.RUNNING:
                _requeue(study, frozen, "interrupted: stopped with Ctrl-C")
        return True
    return False


def _tell(study: optuna.Study, trial: optuna.Trial, finished: Finished, constraints: Constraints) -> None:
    result = finished.result
    for key, value in result.attrs().items():
        trial.set_user_attr(key, value)
    trial.set_user_attr("feasible", constraints.feasible(result.accuracy, result.latency_ms, result.params))
    violations = constraints.violations(result.accuracy, result.latency_ms, result.params)
    trial.set_user_attr(CONSTRAINTS_ATTR, violations)
    for name, value in violations.items():
        trial.set_constraint(name, value)
    values = [result.accuracy, result.latency_ms] + ([result.size_mb] if len(study.directions) == 3 else [])
    study.tell(trial, values)


def _reason(err: BaseException) -> str:
    return f"{err.__class__.__name__}: {str(err).splitlines()[0] if str(err) else ''}"


def _non_finite(result) -> str | None:
    values = (result.accuracy, result.latency_ms, result.size_mb)
    if all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        return None
    return f"non-finite objective (accuracy={result.accuracy}, latency_ms={result.latency_ms}, size_mb={result.size_mb})"
