"""``run_search``: validate → space and prices → baseline → Optuna study loop → Pareto front on disk.

Everything that can be refused is checked before the dense baseline trains: the profile, the storage and the
study's identity, the search space (built on an untrained model of the same architecture), the price of the
dense plan at every searched precision, the budget and the strategy. Only then is ``config.json`` written.

The study storage is the single source of truth, written only through :class:`~autoprune.search.store.StudyStore`:
the driver (this process) does every ask and tell (:mod:`autoprune.search.driver`); the backend (in-process or
Ray workers) only evaluates. Every finished trial is committed before the driver moves on, so a killed run loses
at most the trials in flight, whose lease then expires: the next driver on the study fails and re-enqueues them.
A resumed run counts the completed trials toward ``--trials`` and rebuilds strategy state from the recorded trials.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from autoprune.distill import DistillSettings
from autoprune.errors import UserError, unknown_choice
from autoprune.models import available_models
from autoprune.paths import slug
from autoprune.search.backends import BACKENDS, RaySettings
from autoprune.search.driver import guidance, optimize  # noqa: F401 - the loop's home is autoprune.search.driver
from autoprune.search.records import TrialRecord
from autoprune.search.storage import mask_url
from autoprune.search.store import DenseBaseline, ModelFigures, StudyIdentity, StudyRecord, StudyStore
from autoprune.search.strategies import STRATEGIES, Constraints

DEFAULT_HEARTBEAT_S = 10


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
    trial_timeout: float | None = None  # seconds one evaluation may take before its trial is failed
    heartbeat_interval: int = DEFAULT_HEARTBEAT_S  # seconds between lease renewals; stale after 3 intervals
    device: str = "auto"  # where the baseline and candidates train: auto|cpu|cuda|cuda:N (latency is the target's)
    calibrate: bool = True  # on this machine's targets, re-fit the profile's calibration here (cached)
    # Search depth too: a drop/keep choice per droppable block. Off by default: a dropped block costs more accuracy
    # than a short fine-tune recovers, and width-only studies keep their parameters (and resume) as before.
    depth: bool = False

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
        if self.worker_retries < 0:
            raise UserError(f"--worker-retries must be 0 or more, got {self.worker_retries}")
        if self.trial_timeout is not None and not (math.isfinite(self.trial_timeout) and self.trial_timeout > 0):
            raise UserError(f"--trial-timeout must be a positive number of seconds, got {self.trial_timeout}")
        if self.heartbeat_interval < 1:
            raise UserError(f"--heartbeat-interval must be at least 1 second, got {self.heartbeat_interval}")
        from autoprune.devices import resolve_device

        resolve_device(self.device)  # an unavailable GPU fails here, before anything is loaded

    @property
    def constraints(self) -> Constraints:
        return Constraints(self.max_latency_ms, self.min_accuracy, self.max_params)

    @property
    def ray_settings(self) -> RaySettings:
        return RaySettings(self.workers, self.ray_address, self.cpus_per_trial, self.gpus_per_trial, self.worker_retries)

    @property
    def study_name(self) -> str:
        return self.study or slug(f"{self.model}-{self.target}-{self.data}")

    @property
    def out_path(self) -> Path:
        # The study name is slugged so that a name like "../x" cannot put files outside autoprune-runs/.
        return Path(self.out_dir) if self.out_dir else Path("autoprune-runs") / slug(self.study_name)

    @property
    def storage_url(self) -> str:
        """The URL to connect with (it may hold a password: never write or print it; see :meth:`to_dict`)."""
        return self.storage or f"sqlite:///{(self.out_path / 'study.db').resolve()}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings, the storage password masked."""
        return {**asdict(self), "input_shape": list(self.input_shape),
                "storage": mask_url(self.storage) if self.storage else None}


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
    storage: str  # password masked
    out_dir: Path
    baseline: DenseBaseline
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
            "baseline": self.baseline.to_dict(),
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




def directions(size_objective: bool) -> list[str]:
    """accuracy ↑, latency ↓ (and size ↓ with ``size_objective``)."""
    return ["maximize", "minimize"] + (["minimize"] if size_objective else [])


def metric_names(size_objective: bool) -> list[str]:
    """The objectives' names, as optuna-dashboard shows them."""
    return ["accuracy", "latency_ms"] + (["size_mb"] if size_objective else [])


@dataclass(frozen=True)
class _Prepared:
    """What validation built before any training: data, space, prices, strategy, the opened study."""

    profile: Any
    data: Any
    space: Any
    cost_model: Any
    dense_latency: Any
    strategy: Any
    spec: Any
    identity: StudyIdentity


def _prepare(config: SearchConfig, reporter: SearchReporter, warnings: list[str]) -> _Prepared:
    """Every check that can refuse the run, in the order a user would fix them; nothing is written."""
    from autoprune.baseline import BaselineSpec
    from autoprune.data import load_data
    from autoprune.hardware import CostModel, load_profile, prepare_cost_model
    from autoprune.models import create_model, preprocessing
    from autoprune.plan import PruningPlan
    from autoprune.pruning import generate_space
    from autoprune.search.strategies import SpaceCosts, check_budget_reachable, create_strategy
    from autoprune.training import TrainRecipe

    profile = load_profile(config.target)
    if profile.provenance != "measured":
        warnings.append(
            f"target {profile.name!r} is {profile.provenance} ({profile.provenance_source}), not measured on the "
            "device; measure one with `autoprune profile measure` (see README)"
        )
        reporter.warn(warnings[-1])
    if "int8" in config.precision and not (table := CostModel(profile)).has_int8:  # before the data loads
        raise table.no_int8_error(config.model, config.input_shape)
    for path, flag in ((config.checkpoint, "--checkpoint"), (config.space_file, "--space")):
        if path and not Path(path).is_file():
            raise UserError(f"{flag} {path!r} does not exist; pass the path of an existing file")
    reporter.stage(f"loading data {config.data}")
    data = load_data(config.data, tuple(config.input_shape[2:]), config.seed, preprocessing(config.weights))
    # The space depends on the architecture only: an untrained model of it prices every plan before training.
    untrained = create_model(config.model, data.num_classes).eval()
    space = generate_space(untrained, config.model, config.input_shape, alignment=profile.alignment)
    if config.space_file:
        space = space.with_overrides(Path(config.space_file))
    # On this machine's targets, missing table entries are measured and the calibration re-fitted here (cached);
    # any other target that cannot price a layer or a precision is refused here, before training.
    cost_model = prepare_cost_model(profile, space, on_note=reporter.stage, precisions=config.precision,
                                    calibrate=config.calibrate)
    dense_latency = cost_model.predict(space, PruningPlan(alignment=space.alignment))
    costs = SpaceCosts(space, cost_model)
    check_budget_reachable(space, costs, config.constraints, config.importance, config.depth)
    strategy = create_strategy(config.strategy, space, config.importance, config.seed, config.trials,
                               config.constraints, costs, workers=config.workers)
    strategy.precisions = config.precision
    strategy.depth = config.depth
    if config.depth and not space.blocks:
        warnings.append(f"--depth: {config.model} has no droppable block in this space (no residual block whose "
                        "input and output shapes match, or the --space file disables depth); searching width only")
        reporter.warn(warnings[-1])
    recipe = TrainRecipe(epochs=config.baseline_epochs)
    spec = BaselineSpec(config.model, config.data, config.input_shape, data.num_classes, config.seed, recipe,
                        config.weights)
    identity = StudyIdentity.build(config.model, profile, config.data, config.input_shape, config.checkpoint,
                                   config.weights, config.seed, recipe.to_dict(), config.space_file)
    return _Prepared(profile, data, space, cost_model, dense_latency, strategy, spec, identity)


def _open_store(config: SearchConfig, reporter: SearchReporter) -> StudyStore:
    created = not config.out_path.exists()
    config.out_path.mkdir(parents=True, exist_ok=True)
    try:
        store = StudyStore.open(config.storage_url, config.study_name, directions(config.size_objective),
                                metric_names(config.size_objective), config.heartbeat_interval,
                                config.worker_retries, reporter.warn)
    except UserError:
        if created and not any(config.out_path.iterdir()):
            config.out_path.rmdir()  # a refused URL leaves nothing behind
        raise
    if len(store.study.directions) != len(directions(config.size_objective)):
        store.close()
        have = "with" if len(store.study.directions) == 3 else "without"
        raise UserError(
            f"study {config.study_name!r} was created {have} size as an objective; run it {have} --size-objective, "
            "or pass a new --study name"
        )
    return store


def _masked_argv(config: SearchConfig) -> list[str]:
    from autoprune.search.storage import redact

    return [redact(arg, config.storage) if config.storage else arg for arg in sys.argv]


def _dense_record(config: SearchConfig, prepared: _Prepared, baseline) -> DenseBaseline:
    from autoprune.pruning import model_stats
    from autoprune.training import evaluate

    data = prepared.data
    dense_eval = evaluate(baseline.model, data.loader("val", 256, config.seed, shuffle=False), data.num_classes)
    test = None
    if data.test is not None:  # reported beside the validation figure; the search never sees it
        test = evaluate(baseline.model, data.loader("test", 256, config.seed, shuffle=False), data.num_classes).accuracy
    return DenseBaseline(
        accuracy=dense_eval.accuracy, per_class_accuracy=tuple(dense_eval.per_class_accuracy),
        class_names=tuple(str(c) for c in data.class_names), latency_ms=prepared.dense_latency.latency_ms,
        latency_provenance=prepared.dense_latency.provenance, latency_source=prepared.dense_latency.source,
        source=baseline.source, stats=ModelFigures.of(model_stats(baseline.model, config.input_shape)),
        test_accuracy=test, val_size=len(data.val),
    )


def run_search(config: SearchConfig, reporter: SearchReporter | None = None) -> SearchResult:
    """Run (or resume) the search described by ``config``; see the module docstring."""
    from optuna.trial import TrialState

    from autoprune.baseline import get_baseline
    from autoprune.devices import resolve_device
    from autoprune.paths import atomic_write_json
    from autoprune.search.backends import create_executor
    from autoprune.search.driver import IsolatedEvaluator
    from autoprune.search.evaluator import Evaluator, EvaluatorSettings
    from autoprune.search.records import completed_records, pareto_records

    reporter = reporter or SilentReporter()
    warnings: list[str] = []
    prepared = _prepare(config, reporter, warnings)
    store = _open_store(config, reporter)
    try:
        store.check_identity(prepared.identity)
        atomic_write_json(config.out_path / "config.json", {**config.to_dict(), "command": _masked_argv(config)})
        reporter.stage("preparing the dense baseline")
        baseline = get_baseline(prepared.spec, prepared.data, Path(config.checkpoint) if config.checkpoint else None,
                                config.trust_checkpoint, on_epoch=reporter.baseline_epoch,
                                device=resolve_device(config.device))
        dense = _dense_record(config, prepared, baseline)
        space = prepared.space
        store.claim(StudyRecord(prepared.identity, dense, tuple((g.name, g.channels) for g in space.groups),
                                space.alignment, prepared.profile.provenance, prepared.profile.provenance_source,
                                prepared.spec.to_dict()))
        store.set_config(config.to_dict())
        evaluator = Evaluator(
            baseline.model, prepared.data, space, prepared.cost_model,
            EvaluatorSettings(finetune_steps=config.finetune_steps, seed=config.seed, distill=config.distill,
                              distill_alpha=config.distill_alpha, distill_temperature=config.distill_temperature,
                              device=config.device),
        )
        store.study.sampler = prepared.strategy.sampler()
        prepared.strategy.attach_baseline(baseline.model, prepared.data)
        if config.backend == "ray":
            reporter.stage(f"starting {config.workers} Ray worker(s) at "
                           f"{config.ray_address or 'a local runtime (127.0.0.1)'}")
        executor = create_executor(config.backend, IsolatedEvaluator(evaluator),
                                   config.ray_settings if config.backend == "ray" else None,
                                   trial_timeout_s=config.trial_timeout)
        try:
            interrupted = optimize(store, prepared.strategy, executor, config.trials, config.constraints, reporter,
                                   multi_fidelity=config.multi_fidelity)
        finally:
            executor.close()
        records = completed_records(store.study)
        failed = sum(t.state == TrialState.FAIL for t in store.study.get_trials(deepcopy=False))
    finally:
        store.close()
    result = SearchResult(
        study_name=config.study_name, storage=mask_url(config.storage_url), out_dir=config.out_path, baseline=dense,
        pareto=pareto_records(records), completed=len(records), failed=failed, interrupted=interrupted,
        warnings=warnings,
    )
    atomic_write_json(config.out_path / "results.json", {**result.to_dict(), "config": config.to_dict()})
    return result

