"""Where candidates are evaluated: in this process (``local``) or on Ray workers (``ray``).

The driver always does ask/tell against the study storage (the single source of truth); a backend only turns
(trial number, plan, guidance) into a result or an error. On Ray each worker is an actor holding its own copy
of the evaluator (baseline, data, cost model), so a candidate ships only its plan. A worker that dies
mid-trial is replaced and the trial retried up to ``retries`` times, then reported as failed with the reason.
"""

from __future__ import annotations

import abc
import os
import socket
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from autoprune.errors import UserError, unknown_choice
from autoprune.plan import PruningPlan

BACKENDS = ("local", "ray")
RAY_CONNECT_TIMEOUT_S = 15.0
# Ray must not phone home; a runtime autoprune starts itself listens on 127.0.0.1 only (Ray's "no cluster"
# mode binds every server to the loopback address) and needs no token. A user's own values always win.
RAY_ENV_DEFAULTS = {"RAY_USAGE_STATS_ENABLED": "0"}
RAY_LOCAL_ENV_DEFAULTS = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}


@dataclass(frozen=True)
class Finished:
    """One candidate back from a backend: a result, or the reason it failed."""

    key: int
    result: Any = None
    error: str | None = None
    attempts: int = 1


def describe_error(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{err.__class__.__name__}: {text}" if text else err.__class__.__name__


class Executor(abc.ABC):
    """Evaluates candidates; ``slots`` of them may be in flight at once."""

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


class LocalExecutor(Executor):
    """Evaluates one candidate at a time in this process."""

    slots = 1

    def __init__(self, evaluator) -> None:
        self.evaluator = evaluator
        self._queue: deque = deque()

    def submit(self, key: int, plan: PruningPlan, guidance) -> None:
        self._queue.append((key, plan, guidance))

    def in_flight(self) -> list[int]:
        return [k for k, _, _ in self._queue]

    def wait(self) -> list[Finished]:
        key, plan, guidance = self._queue[0]
        try:
            result = self.evaluator.evaluate(plan, guidance)
        except (RuntimeError, ValueError, UserError, ArithmeticError) as err:
            self._queue.popleft()
            return [Finished(key, error=describe_error(err))]
        self._queue.popleft()
        return [Finished(key, result=result)]


@dataclass(frozen=True)
class RaySettings:
    workers: int = 2
    address: str | None = None  # None: start a loopback-only runtime; "auto" | HOST:PORT | ray://HOST:PORT
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    retries: int = 1  # re-runs of a trial whose worker died

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise UserError(f"--workers must be at least 1, got {self.workers}")
        if self.cpus_per_trial <= 0:
            raise UserError(f"--cpus-per-trial must be positive, got {self.cpus_per_trial}")
        if self.gpus_per_trial < 0:
            raise UserError(f"--gpus-per-trial must be 0 or more, got {self.gpus_per_trial}")
        if self.retries < 0:
            raise UserError(f"--worker-retries must be 0 or more, got {self.retries}")


def ray_env_defaults(local: bool) -> None:
    for key, value in {**RAY_ENV_DEFAULTS, **(RAY_LOCAL_ENV_DEFAULTS if local else {})}.items():
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


def connect_ray(settings: RaySettings, timeout: float = RAY_CONNECT_TIMEOUT_S) -> bool:
    """Connect to Ray (``address``) or start a runtime listening on 127.0.0.1 only; returns True when this call
    initialised Ray (and so must shut it down: that stops a runtime it started, or just disconnects)."""
    ray_env_defaults(local=settings.address is None)
    import ray

    if ray.is_initialized():
        return False
    address = settings.address
    if address and address != "auto":
        _check_reachable(address, timeout=min(timeout, 5.0))
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
    if address:
        kwargs["address"] = address
    else:
        cpus = max(1, int(round(settings.workers * settings.cpus_per_trial)))
        kwargs.update(num_cpus=cpus, num_gpus=settings.gpus_per_trial * settings.workers or None,
                      _node_ip_address="127.0.0.1")
    # ray.init runs on the calling thread (it installs signal handlers); an unreachable HOST:PORT was refused
    # above within seconds, and "auto" without a running cluster fails at once.
    try:
        ray.init(**kwargs)
    except Exception as err:  # noqa: BLE001 - any connection failure is the user's address or cluster
        where = address or "a new local runtime"
        raise UserError(f"cannot connect to Ray at {where!r}: {describe_error(err)}; check --ray-address") from None
    return True


def _actor_class():
    import ray

    @ray.remote(max_restarts=0, max_task_retries=0)
    class EvaluatorActor:
        def __init__(self, evaluator) -> None:
            import torch

            torch.set_num_threads(1)
            self.evaluator = evaluator

        def pid(self) -> int:
            return os.getpid()

        def evaluate(self, plan, guidance):
            try:
                return ("ok", self.evaluator.evaluate(plan, guidance))
            except (RuntimeError, ValueError, UserError, ArithmeticError) as err:
                return ("error", describe_error(err))

    return EvaluatorActor


class RayExecutor(Executor):
    """``settings.workers`` actors evaluating in parallel; see the module docstring."""

    def __init__(self, evaluator, settings: RaySettings) -> None:
        import ray

        self.settings = settings
        self.slots = settings.workers
        self._started = connect_ray(settings)
        self._ray = ray
        self._actor_cls = _actor_class().options(
            num_cpus=settings.cpus_per_trial, num_gpus=settings.gpus_per_trial,
        )
        self._evaluator_ref = ray.put(evaluator)
        self._idle = [self._new_actor() for _ in range(settings.workers)]
        self._running: dict[Any, tuple[int, PruningPlan, Any, Any, int]] = {}  # ref -> (key, plan, guidance, actor, attempt)
        self.deaths = 0

    def _new_actor(self):
        return self._actor_cls.remote(self._evaluator_ref)

    def worker_pids(self) -> list[int]:
        actors = self._idle + [entry[3] for entry in self._running.values()]
        return self._ray.get([a.pid.remote() for a in actors])

    def submit(self, key: int, plan: PruningPlan, guidance, attempt: int = 1) -> None:
        actor = self._idle.pop() if self._idle else self._new_actor()
        ref = actor.evaluate.remote(plan, guidance)
        self._running[ref] = (key, plan, guidance, actor, attempt)

    def in_flight(self) -> list[int]:
        return [entry[0] for entry in self._running.values()]

    def wait(self) -> list[Finished]:
        ray = self._ray
        ready, _ = ray.wait(list(self._running), num_returns=1)
        finished = []
        for ref in ready:
            key, plan, guidance, actor, attempt = self._running.pop(ref)
            try:
                status, payload = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.ObjectLostError) as err:
                self.deaths += 1
                ray.kill(actor, no_restart=True)
                self._idle.append(self._new_actor())
                if attempt <= self.settings.retries:
                    self.submit(key, plan, guidance, attempt + 1)
                    continue
                finished.append(Finished(key, error=f"worker died: {describe_error(err)} (after {attempt} attempts)", attempts=attempt))
                continue
            self._idle.append(actor)
            if status == "ok":
                finished.append(Finished(key, result=payload, attempts=attempt))
            else:
                finished.append(Finished(key, error=payload, attempts=attempt))
        if not finished and self._running:
            return self.wait()
        return finished

    def close(self) -> None:
        ray = self._ray
        for ref, entry in list(self._running.items()):
            ray.cancel(ref, force=True)
        for actor in self._idle + [entry[3] for entry in self._running.values()]:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self._running.clear()
        self._idle.clear()
        if self._started:
            ray.shutdown()


def create_executor(backend: str, evaluator, ray_settings: RaySettings | None = None, trial_timeout_s: float | None = None) -> Executor:
    if backend == "local":
        return LocalExecutor(evaluator)
    if backend == "ray":
        return RayExecutor(evaluator, ray_settings or RaySettings())
    raise unknown_choice("backend", backend, BACKENDS)
