"""Where candidates are evaluated: in this process (``local``) or on Ray workers (``ray``).

The driver always does ask/tell against the study storage (the single source of truth); a backend only turns
(trial number, plan, guidance) into a result or an error. Whatever goes wrong inside one evaluation comes back
as that trial's :attr:`Finished.error` and the search goes on:

- any ``Exception`` raised by the evaluator (not ``KeyboardInterrupt``/``SystemExit``) -> ``"Class: first line"``;
- a trial running longer than ``trial_timeout_s`` -> ``"timeout: ..."`` (the local backend interrupts it with
  ``SIGALRM``, the Ray backend kills its worker and starts a new one);
- on Ray, a worker that dies mid-trial (actor died, worker crashed, object lost) is replaced and the trial
  retried up to ``RaySettings.retries`` times, then failed with the reason; any other error from Ray about one
  trial fails that trial.

On Ray each worker is an actor holding its own copy of the evaluator (baseline, data, cost model), so a
candidate ships only its plan. A request that can never be scheduled (more CPUs or GPUs per trial than any node
has, or more workers than the cluster can hold at once) is refused with a :class:`UserError` before any trial.
"""

from __future__ import annotations

import abc
import logging
import math
import os
import secrets
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from autoprune.errors import UserError, unknown_choice
from autoprune.plan import PruningPlan

logger = logging.getLogger(__name__)

BACKENDS = ("local", "ray")
RAY_CONNECT_TIMEOUT_S = 15.0
# Ray must not phone home. A runtime autoprune starts itself binds every server to 127.0.0.1 (Ray's "no
# cluster" mode; read by Ray when it is imported, so it is set before) and authenticates every RPC with a token
# made for this process (see ray_env_defaults). A user's own values always win.
RAY_ENV_DEFAULTS = {"RAY_USAGE_STATS_ENABLED": "0"}
RAY_LOCAL_ENV_DEFAULTS = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
LOOPBACK = "127.0.0.1"
_EPS = 1e-9  # slack on float resource arithmetic (Ray itself counts in units of 1e-4)


@dataclass(frozen=True)
class Finished:
    """One candidate back from a backend: a result, or the reason it failed."""

    key: int
    result: Any = None
    error: str | None = None
    attempts: int = 1


def describe_error(err: BaseException) -> str:
    """``"Class: first line of the message"`` (just the class when the message is empty)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{err.__class__.__name__}: {text}" if text else err.__class__.__name__


def timeout_reason(seconds: float) -> str:
    return f"timeout: the trial ran longer than {seconds:g} s (--trial-timeout)"


class Executor(abc.ABC):
    """Evaluates candidates; ``slots`` of them may be in flight at once.

    The driver calls ``submit`` until ``slots`` candidates are in flight, then ``wait``, which blocks until at
    least one finishes; ``close`` once at the end (also after an error or Ctrl-C; it never raises). An
    evaluation's failure never escapes ``wait``: it comes back as :attr:`Finished.error`.
    """

    slots: int = 1

    @abc.abstractmethod
    def submit(self, key: int, plan: PruningPlan, guidance) -> None: ...

    @abc.abstractmethod
    def wait(self) -> list[Finished]:
        """Block until at least one submitted candidate finishes; return every finished one."""

    @abc.abstractmethod
    def in_flight(self) -> list[int]: ...

    def close(self) -> None:
        """Release workers (and a runtime this executor started)."""


# --- local --------------------------------------------------------------------------------------------------


class TrialTimeout(BaseException):
    """Raised by ``SIGALRM`` in the main thread when a local trial overruns. A ``BaseException`` so that an
    evaluation's own ``except Exception`` cannot swallow it."""


@contextmanager
def alarm(seconds: float | None) -> Iterator[bool]:
    """Raise :class:`TrialTimeout` in the body after ``seconds`` (wall clock); yields whether it can.

    Python runs signal handlers in the main thread only, between bytecodes: a long call into C (one big
    operator) delays the timeout until it returns. Off the main thread, or without ``setitimer`` (Windows), it
    cannot, and the caller checks the elapsed time afterwards instead. A real-time timer someone else armed
    (pytest-timeout, say) is kept: whichever deadline comes first fires first, the other's handler runs at its
    own time, and the previous handler and the rest of the other timer are put back on the way out.
    """
    if seconds is None or not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield False
        return
    outer_left, outer_interval = signal.getitimer(signal.ITIMER_REAL)
    outer_first = 0 < outer_left < seconds
    started = time.monotonic()
    outer_fired = False

    def on_alarm(signum, frame):
        nonlocal outer_fired
        if outer_first and not outer_fired:
            outer_fired = True
            signal.setitimer(signal.ITIMER_REAL, max(seconds - (time.monotonic() - started), 1e-3))
            if callable(previous):
                previous(signum, frame)
            return
        raise TrialTimeout

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, outer_left if outer_first else seconds)
    try:
        yield True
    finally:
        try:  # a one-shot timer: once disarmed it cannot fire while the old handler is put back
            signal.setitimer(signal.ITIMER_REAL, 0)
        finally:
            signal.signal(signal.SIGALRM, previous)
            if outer_left > 0 and not outer_fired:
                left = max(outer_left - (time.monotonic() - started), 1e-3)
                signal.setitimer(signal.ITIMER_REAL, left, outer_interval)


class LocalExecutor(Executor):
    """Evaluates one candidate at a time in this process. A timed-out evaluation is interrupted where it is
    (see :func:`alarm`) and its partial work dropped; the evaluator copies the baseline for every plan, so
    nothing half-done carries over to the next one."""

    slots = 1

    def __init__(self, evaluator, trial_timeout_s: float | None = None) -> None:
        self.evaluator = evaluator
        self.trial_timeout_s = trial_timeout_s
        self._queue: deque = deque()

    def submit(self, key: int, plan: PruningPlan, guidance) -> None:
        self._queue.append((key, plan, guidance))

    def in_flight(self) -> list[int]:
        return [k for k, _, _ in self._queue]

    def wait(self) -> list[Finished]:
        key, plan, guidance = self._queue[0]
        try:
            return [self._evaluate(key, plan, guidance)]
        finally:
            self._queue.popleft()

    def _evaluate(self, key: int, plan: PruningPlan, guidance) -> Finished:
        limit = self.trial_timeout_s
        started = time.monotonic()
        try:
            with alarm(limit):
                result = self.evaluator.evaluate(plan, guidance)
        except TrialTimeout:
            return Finished(key, error=timeout_reason(limit))
        except Exception as err:  # noqa: BLE001 - any failure of one evaluation fails that trial only
            return Finished(key, error=describe_error(err))
        if limit is not None and time.monotonic() - started > limit:  # alarm() could not interrupt it
            return Finished(key, error=timeout_reason(limit))
        return Finished(key, result=result)


# --- Ray: settings, runtime, scheduling checks --------------------------------------------------------------


@dataclass(frozen=True)
class RaySettings:
    """Where and how wide a Ray search runs; validated as the CLI's flags (one line per mistake)."""

    workers: int = 2
    address: str | None = None  # None: start a loopback-only runtime; "auto" | HOST:PORT | ray://HOST:PORT
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0  # a fraction packs several trials on one GPU (0.5: two)
    retries: int = 1  # re-runs of a trial whose worker died

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise UserError(f"--workers must be at least 1, got {self.workers}")
        if self.cpus_per_trial <= 0:
            raise UserError(f"--cpus-per-trial must be positive, got {self.cpus_per_trial}")
        if self.gpus_per_trial < 0:
            raise UserError(f"--gpus-per-trial must be 0 or more, got {self.gpus_per_trial}")
        if self.gpus_per_trial > 1 and not float(self.gpus_per_trial).is_integer():
            raise UserError(f"--gpus-per-trial above 1 must be a whole number (Ray shares only single GPUs), "
                            f"got {self.gpus_per_trial}")
        if self.retries < 0:
            raise UserError(f"--worker-retries must be 0 or more, got {self.retries}")


def ray_env_defaults(local: bool) -> None:
    """Set Ray's environment before it starts. For a runtime of our own, also a token for this process only:
    Ray's servers and workers inherit it from this environment, so it is never written to a file (Ray reads
    ``RAY_AUTH_TOKEN`` before ``~/.ray/auth_token`` and, finding it, creates no file) nor printed."""
    defaults = {**RAY_ENV_DEFAULTS, **(RAY_LOCAL_ENV_DEFAULTS if local else {})}
    if local:
        defaults["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
        # Ray reads the mode once, when imported: set it only before then. Once Ray is imported, leave it unset,
        # and Ray (>= 2.59) turns token mode on by itself for a new local runtime; setting it now would make
        # this process disagree with the servers it starts (they would refuse it).
        if "ray" not in sys.modules:
            defaults["RAY_AUTH_MODE"] = "token"
    for key, value in defaults.items():
        os.environ.setdefault(key, value)


def _check_reachable(address: str, timeout: float) -> None:
    """Fail fast (one line) when HOST:PORT does not accept connections."""
    hostport = address[len("ray://") :] if address.startswith("ray://") else address
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise UserError(f"--ray-address {address!r} is malformed; use auto, HOST:PORT or ray://HOST:PORT")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as err:
        raise UserError(
            f"cannot reach the Ray cluster at {address!r} ({err.__class__.__name__}: {err}); start it with "
            "`ray start --head --port=PORT` on the head node, or check --ray-address"
        ) from None


def machine_gpus() -> int:
    import torch

    return torch.cuda.device_count()


def private_runtime_resources(settings: RaySettings, cpu_count: int | None, gpu_count: int) -> dict[str, float]:
    """The resources a runtime of our own starts with: exactly ``workers`` trials' worth of (logical) CPUs,
    so all workers run at once as today, and the GPUs this machine has. Refuses (one line) a trial asking for
    more CPUs than the machine has, or GPUs it lacks."""
    cpus = cpu_count or 1
    if settings.cpus_per_trial > cpus + _EPS:
        raise UserError(f"--cpus-per-trial {settings.cpus_per_trial:g} is more than this machine's {cpus} CPUs; "
                        f"lower --cpus-per-trial to {cpus} or less")
    resources = {"CPU": float(max(1, math.ceil(settings.workers * settings.cpus_per_trial - _EPS))),
                 "GPU": float(gpu_count)}
    check_schedulable(settings, [resources], "this machine")
    return resources


def trials_that_fit(nodes: list[Mapping[str, float]], cpus: float, gpus: float) -> int:
    """How many trials of ``cpus`` CPUs and ``gpus`` GPUs ``nodes`` (Ray's per-node resource totals) hold at
    once; a trial never spans nodes."""
    total = 0
    for node in nodes:
        fit = math.floor(node.get("CPU", 0.0) / cpus + _EPS)
        if gpus > 0:
            fit = min(fit, math.floor(node.get("GPU", 0.0) / gpus + _EPS))
        total += fit
    return total


def check_schedulable(settings: RaySettings, nodes: list[Mapping[str, float]], where: str) -> None:
    """Refuse (one line) a request Ray could never schedule: every worker holds its CPUs and GPUs for the whole
    search, so a worker that does not fit next to the others would wait forever, and so would its trials."""
    cpus, gpus, workers = settings.cpus_per_trial, settings.gpus_per_trial, settings.workers
    total_gpus = sum(n.get("GPU", 0.0) for n in nodes)
    if gpus > 0 and total_gpus <= 0:
        raise UserError(f"--gpus-per-trial {gpus:g} needs a GPU, but {where} has none; use --gpus-per-trial 0")
    fit = trials_that_fit(nodes, cpus, gpus)
    asked = f"{cpus:g} CPU" + (f" and {gpus:g} GPU" if gpus > 0 else "")
    if fit == 0:
        largest = max(nodes, key=lambda n: (n.get("CPU", 0.0), n.get("GPU", 0.0)), default={})
        raise UserError(
            f"no node of {where} can run a trial of {asked}: the largest has {largest.get('CPU', 0.0):g} CPU and "
            f"{largest.get('GPU', 0.0):g} GPU; lower --cpus-per-trial / --gpus-per-trial"
        )
    if fit < workers:
        raise UserError(f"only {fit} of the {workers} workers of {asked} each fit on {where} at once; "
                        f"use --workers {fit} (or fewer CPUs/GPUs per trial)")


def cluster_nodes() -> list[dict[str, float]]:
    """Resource totals of the live nodes of the Ray cluster this process is connected to."""
    import ray

    return [dict(n.get("Resources", {})) for n in ray.nodes() if n.get("Alive", True)]


def connect_ray(settings: RaySettings, timeout: float = RAY_CONNECT_TIMEOUT_S) -> bool:
    """Connect to Ray (``address``) or start a runtime listening on 127.0.0.1 only; returns True when this call
    initialised Ray (and so must shut it down: that stops a runtime it started, or just disconnects)."""
    local = settings.address is None
    ray_env_defaults(local=local)
    import ray

    if ray.is_initialized():
        return False
    address = settings.address
    if local:  # refused before a runtime starts, in well under a second
        resources = private_runtime_resources(settings, os.cpu_count(), machine_gpus() if settings.gpus_per_trial else 0)
    if address and address != "auto":
        _check_reachable(address, timeout=min(timeout, 5.0))
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
    if address:
        kwargs["address"] = address
    else:
        # "local" starts a runtime of our own even when another Ray cluster runs on this machine (ray.init()
        # would join that one, and refuse the resources we ask for).
        kwargs.update(address="local", num_cpus=resources["CPU"], num_gpus=resources["GPU"],
                      _node_ip_address=LOOPBACK)
    # ray.init runs on the calling thread (it installs signal handlers); an unreachable HOST:PORT was refused
    # above within seconds, and "auto" without a running cluster fails at once.
    try:
        ray.init(**kwargs)
    except Exception as err:  # noqa: BLE001 - any connection failure is the user's address or cluster
        where = address or "a new local runtime"
        raise UserError(f"cannot connect to Ray at {where!r}: {describe_error(err)}; check --ray-address") from None
    if local:
        _require_loopback(ray)
    return True


def _require_loopback(ray) -> None:
    """Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER when imported: imported before autoprune set it, its runtime
    binds every interface. Refuse to run rather than expose the workers."""
    addresses = {n.get("NodeManagerAddress") for n in ray.nodes()}
    if addresses != {LOOPBACK}:
        ray.shutdown()
        raise UserError(f"the local Ray runtime listens on {sorted(addresses)}, not only {LOOPBACK}: Ray was imported "
                        "before autoprune could configure it; set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 in the "
                        "environment, or pass --ray-address")


# --- Ray: workers -------------------------------------------------------------------------------------------


def worker_device(gpu_ids: list) -> str | None:
    """The torch device a worker trains on: ``"cuda"`` when Ray assigned it GPUs (Ray sets
    ``CUDA_VISIBLE_DEVICES`` to them, so its first is ``cuda``; a fractional share shares that GPU), else None
    (stay on the evaluator's own device)."""
    return "cuda" if gpu_ids else None


def on_worker_device(evaluator, gpu_ids: list):
    """``evaluator`` moved to the device of :func:`worker_device`, where the evaluator can move."""
    device = worker_device(gpu_ids)
    # with_device arrives with the shared trainer (issue 14); until then an evaluator stays where it is
    if device is None or not hasattr(evaluator, "with_device"):
        return evaluator
    return evaluator.with_device(device)


def _actor_class():
    import ray

    @ray.remote(max_restarts=0, max_task_retries=0)
    class EvaluatorActor:
        def __init__(self, evaluator, threads: int) -> None:
            # torch is imported by the evaluator's unpickling if it needs it at all (seconds per worker otherwise);
            # one imported later reads OMP_NUM_THREADS, which Ray sets to the actor's CPUs
            torch = sys.modules.get("torch")
            if torch is not None:
                torch.set_num_threads(threads)
            self.evaluator = on_worker_device(evaluator, ray.get_gpu_ids())

        def pid(self) -> int:
            return os.getpid()

        def evaluate(self, plan, guidance):
            try:
                return ("ok", self.evaluator.evaluate(plan, guidance))
            except Exception as err:  # noqa: BLE001 - any failure of one evaluation fails that trial only
                return ("error", describe_error(err))

    return EvaluatorActor


def _worker_death_errors(ray) -> tuple[type[BaseException], ...]:
    """Errors that mean the process running a trial is gone (not that the trial failed): retry elsewhere."""
    ex = ray.exceptions
    return (ex.RayActorError, ex.WorkerCrashedError, ex.ObjectLostError, ex.NodeDiedError, ex.OutOfMemoryError)


class _Worker:
    """One actor and, until it is known to have started, the call that answers once it has."""

    def __init__(self, actor) -> None:
        self.actor = actor
        self.starting = actor.pid.remote()  # None once started


@dataclass
class _Running:
    key: int
    plan: PruningPlan
    guidance: Any
    worker: _Worker
    attempt: int
    submitted: float  # time.monotonic()
    started: float | None = None  # when its worker was seen running (the trial's clock starts there)


class RayExecutor(Executor):
    """``settings.workers`` actors evaluating in parallel; see the module docstring.

    A trial's clock starts when its worker is seen running, so a worker's start-up (a new process importing
    torch and unpickling the evaluator: seconds, more on a loaded machine) never counts against
    ``trial_timeout_s``; with a timeout set, a worker that has not started ``worker_start_timeout_s`` after the
    trial was submitted fails the trial too (a cluster whose resources other jobs hold).
    """

    worker_start_timeout_s = 300.0

    def __init__(self, evaluator, settings: RaySettings, trial_timeout_s: float | None = None) -> None:
        self.settings = settings
        self.slots = settings.workers
        self.trial_timeout_s = trial_timeout_s
        self.deaths = 0
        self._idle: list[_Worker] = []
        self._running: dict[Any, _Running] = {}  # object ref of the result -> trial
        self._started = connect_ray(settings)  # first: it configures Ray before Ray is imported
        import ray

        self._ray = ray
        try:
            check_schedulable(settings, cluster_nodes(), "the Ray cluster")
            self._actor_cls = _actor_class().options(num_cpus=settings.cpus_per_trial, num_gpus=settings.gpus_per_trial)
            self._evaluator_ref = ray.put(evaluator)
            self._idle = [self._new_worker() for _ in range(settings.workers)]
        except BaseException:
            self.close()
            raise

    def _new_worker(self) -> _Worker:
        threads = max(1, int(self.settings.cpus_per_trial))
        return _Worker(self._actor_cls.remote(self._evaluator_ref, threads))

    def worker_pids(self) -> list[int]:
        workers = self._idle + [r.worker for r in self._running.values()]
        pids = self._ray.get([w.actor.pid.remote() for w in workers])
        for worker in workers:
            worker.starting = None
        return pids

    def submit(self, key: int, plan: PruningPlan, guidance, attempt: int = 1) -> None:
        worker = self._idle.pop() if self._idle else self._new_worker()
        ref = worker.actor.evaluate.remote(plan, guidance)
        now = time.monotonic()
        self._running[ref] = _Running(key, plan, guidance, worker, attempt, now, now if worker.starting is None else None)

    def in_flight(self) -> list[int]:
        return [r.key for r in self._running.values()]

    def wait(self) -> list[Finished]:
        ray = self._ray
        while self._running:
            starting = {r.worker.starting: r for r in self._running.values() if r.started is None}
            refs = [*self._running, *starting]
            ready, _ = ray.wait(refs, num_returns=1, timeout=self._until_next_deadline())
            if ready:  # collect every other one that is done too
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            finished = []
            for ref in ready:
                if ref in starting:
                    starting[ref].worker.starting = None  # an actor that died starting fails its trial's ref too
                    starting[ref].started = time.monotonic()
                elif (done := self._collect(ref)) is not None:
                    finished.append(done)
            finished += self._expire()
            if finished:
                return finished
        return []

    def _deadline(self, run: _Running) -> float | None:
        if self.trial_timeout_s is None:
            return None
        if run.started is None:
            return run.submitted + max(self.worker_start_timeout_s, self.trial_timeout_s)
        return run.started + self.trial_timeout_s

    def _until_next_deadline(self) -> float | None:
        deadlines = [d for d in map(self._deadline, self._running.values()) if d is not None]
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def _expire(self) -> list[Finished]:
        """Fail every trial past its deadline, killing its worker (the only way to stop an actor's task) and
        starting a new one in its place."""
        now = time.monotonic()
        late = [ref for ref, r in self._running.items() if (d := self._deadline(r)) is not None and now >= d]
        finished = []
        for ref in late:
            run = self._running.pop(ref)
            self._replace(run.worker)
            reason = timeout_reason(self.trial_timeout_s) if run.started is not None else (
                f"timeout: no Ray worker started within {self._deadline(run) - run.submitted:g} s "
                "(does the cluster have the CPUs/GPUs free?)")
            finished.append(Finished(run.key, error=reason, attempts=run.attempt))
        return finished

    def _replace(self, worker: _Worker) -> None:
        self._kill(worker)
        self._idle.append(self._new_worker())

    def _collect(self, ref) -> Finished | None:
        """The outcome of a finished ref; None when its worker died and the trial was submitted again."""
        ray = self._ray
        run = self._running.pop(ref)
        run.worker.starting = None
        try:
            status, payload = ray.get(ref)
        except _worker_death_errors(ray) as err:
            self.deaths += 1
            self._replace(run.worker)
            if run.attempt <= self.settings.retries:
                self.submit(run.key, run.plan, run.guidance, run.attempt + 1)
                return None
            return Finished(run.key, error=f"worker died: {describe_error(err)} (after {run.attempt} attempts)",
                            attempts=run.attempt)
        except ray.exceptions.RayTaskError as err:  # raised in the task itself (e.g. its result did not pickle)
            self._idle.append(run.worker)
            return Finished(run.key, error=describe_error(getattr(err, "cause", None) or err), attempts=run.attempt)
        except Exception as err:  # noqa: BLE001 - anything else Ray says about one trial fails that trial only
            self._replace(run.worker)  # the worker's state is unknown: do not trust it with the next trial
            return Finished(run.key, error=f"ray: {describe_error(err)}", attempts=run.attempt)
        self._idle.append(run.worker)
        if status == "ok":
            return Finished(run.key, result=payload, attempts=run.attempt)
        return Finished(run.key, error=payload, attempts=run.attempt)

    def _kill(self, worker: _Worker) -> None:
        try:
            self._ray.kill(worker.actor, no_restart=True)
        except Exception as err:  # noqa: BLE001 - already gone, or Ray is going down: nothing left to stop
            logger.debug("could not kill a Ray worker: %s", describe_error(err))

    def close(self) -> None:
        """Kill every worker (a running trial's too: Ray cannot cancel an actor's task, only kill the actor) and
        shut down a runtime this executor started. Never raises: it runs in ``finally`` blocks, where an error
        here would hide the one that is propagating."""
        workers = self._idle + [r.worker for r in self._running.values()]
        self._idle, self._running = [], {}
        for worker in workers:
            self._kill(worker)
        if self._started:
            self._started = False
            try:
                self._ray.shutdown()
            except Exception as err:  # noqa: BLE001 - see the docstring
                logger.warning("could not shut down the local Ray runtime: %s", describe_error(err))


def create_executor(backend: str, evaluator, ray_settings: RaySettings | None = None,
                    trial_timeout_s: float | None = None) -> Executor:
    """The executor of ``backend``; ``trial_timeout_s`` (seconds, None: no limit) bounds every trial."""
    if trial_timeout_s is not None and trial_timeout_s <= 0:
        raise UserError(f"--trial-timeout must be positive (seconds), got {trial_timeout_s:g}")
    if backend == "local":
        return LocalExecutor(evaluator, trial_timeout_s)
    if backend == "ray":
        return RayExecutor(evaluator, ray_settings or RaySettings(), trial_timeout_s)
    raise unknown_choice("backend", backend, BACKENDS)
