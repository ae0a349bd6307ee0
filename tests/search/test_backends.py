"""The local executor's failure isolation and trial timeout, and the Ray backend's decisions that need no Ray
runtime: which requests can be scheduled, which device a worker trains on, the environment of a private runtime."""

import inspect
import os
import signal
import threading
import time

import optuna
import pytest
from optuna.trial import TrialState

from autoprune.errors import UserError
from autoprune.search import backends
from autoprune.search.backends import (
    LocalExecutor, RaySettings, TrialTimeout, alarm, check_schedulable, connect_ray, create_executor, on_worker_device,
    private_runtime_resources, ray_env_defaults, trials_that_fit, worker_device,
)
from autoprune.search.runner import optimize
from autoprune.search.strategies import Constraints, create_strategy
from autoprune.search.synthetic import SyntheticEvaluator, SyntheticProblem

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.timeout(60)
PROBLEM = SyntheticProblem(groups=3, seed=0)
PLAN = PROBLEM.plan({g.name: 0.5 for g in PROBLEM.space.groups})


class Scripted:
    """Does what the guidance says: hang, spin (pure-Python busy loop), raise, or return its pid."""

    def evaluate(self, plan, guidance):
        if guidance == "hang":
            time.sleep(30)
        elif guidance == "spin":
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                pass
        elif guidance == "oserror":
            raise OSError(5, "Input/output error: image file is truncated")
        elif guidance == "keyerror":
            raise KeyError("conv3")
        elif guidance == "interrupt":
            raise KeyboardInterrupt
        elif isinstance(guidance, float):
            time.sleep(guidance)
        return os.getpid()


class HangsOnCalls(SyntheticEvaluator):
    def __init__(self, problem, hang_calls):
        super().__init__(problem)
        self.hang_calls = hang_calls

    def evaluate(self, plan, guidance=None):
        if self.calls + 1 in self.hang_calls:
            self.calls += 1
            time.sleep(30)
        return super().evaluate(plan, guidance)


def _one(executor, guidance, key=1):
    executor.submit(key, PLAN, guidance)
    (finished,) = executor.wait()
    assert finished.key == key and executor.in_flight() == []
    return finished


def test_create_executor_has_the_signature_the_runner_calls():
    params = list(inspect.signature(create_executor).parameters)
    assert params == ["backend", "evaluator", "ray_settings", "trial_timeout_s"]
    assert isinstance(create_executor("local", Scripted(), None, 2.0), LocalExecutor)
    with pytest.raises(UserError, match="did you mean 'ray'"):
        create_executor("rya", Scripted())
    with pytest.raises(UserError, match="--trial-timeout must be positive"):
        create_executor("local", Scripted(), trial_timeout_s=0)


def test_local_errors_of_any_class_fail_only_their_trial():
    executor = LocalExecutor(Scripted())
    assert _one(executor, "oserror").error == "OSError: [Errno 5] Input/output error: image file is truncated"
    assert _one(executor, "keyerror").error == "KeyError: 'conv3'"
    assert _one(executor, None).result == os.getpid()
    executor.submit(4, PLAN, "interrupt")  # Ctrl-C is not a trial's failure: it stops the search
    with pytest.raises(KeyboardInterrupt):
        executor.wait()
    assert executor.in_flight() == []


def test_local_timeout_interrupts_a_hung_or_spinning_trial_and_restores_the_alarm_handler():
    def previous(signum, frame):  # a handler of the caller's, to be put back
        raise AssertionError("the caller's SIGALRM handler ran")

    old = signal.signal(signal.SIGALRM, previous)
    try:
        executor = LocalExecutor(Scripted(), trial_timeout_s=0.3)
        for guidance in ("hang", "spin"):
            started, outer = time.monotonic(), signal.getitimer(signal.ITIMER_REAL)[0]  # pytest-timeout's, if armed
            finished = _one(executor, guidance)
            elapsed = time.monotonic() - started
            assert finished.error == "timeout: the trial ran longer than 0.3 s (--trial-timeout)"
            assert 0.3 <= elapsed < 2.0 and signal.getsignal(signal.SIGALRM) is previous
            left = signal.getitimer(signal.ITIMER_REAL)[0]
            assert left == outer == 0 or abs(left - (outer - elapsed)) < 0.2  # the other timer runs on
        assert _one(executor, 0.05).result == os.getpid()  # a trial inside the limit is untouched
    finally:
        signal.signal(signal.SIGALRM, old)


def test_local_timeout_off_the_main_thread_is_checked_after_the_trial():
    executor = LocalExecutor(Scripted(), trial_timeout_s=0.1)
    out = {}
    thread = threading.Thread(target=lambda: out.update(f=_one(executor, 0.4)))
    thread.start()
    thread.join(10)
    assert out["f"].error.startswith("timeout:") and out["f"].result is None


def test_alarm_keeps_a_timer_armed_by_someone_else():
    fired = []
    recorder = lambda *_: fired.append(time.monotonic())  # noqa: E731
    old = signal.signal(signal.SIGALRM, recorder)
    try:
        signal.setitimer(signal.ITIMER_REAL, 50)  # due after ours: it keeps the rest of its time
        with pytest.raises(TrialTimeout), alarm(0.05) as preemptive:
            time.sleep(2)
        assert preemptive and 49 < signal.getitimer(signal.ITIMER_REAL)[0] <= 50 and not fired
        assert signal.getsignal(signal.SIGALRM) is recorder
        signal.setitimer(signal.ITIMER_REAL, 0.05)  # due before ours: its handler runs, then ours fires
        started = time.monotonic()
        with pytest.raises(TrialTimeout), alarm(0.3):
            time.sleep(2)
        assert len(fired) == 1 and fired[0] - started < 0.25 and 0.3 <= time.monotonic() - started < 1.5
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_a_local_search_goes_on_past_a_hung_trial():
    problem = SyntheticProblem(groups=4, seed=0)
    executor = LocalExecutor(HangsOnCalls(problem, hang_calls=(2,)), trial_timeout_s=0.5)
    strategy = create_strategy("random", problem.space, "l1", 0, 4, Constraints(), problem)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=strategy.sampler())
    started = time.monotonic()
    assert optimize(study, strategy, executor, 4, multi_fidelity=False) is False
    assert time.monotonic() - started < 10
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert [t.number for t in failed] == [1] and failed[0].user_attrs["fail_reason"].startswith("timeout:")
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 3


def test_trials_that_fit_packs_per_node_and_fractional_gpus():
    nodes = [{"CPU": 4.0, "GPU": 1.0}, {"CPU": 2.0}]
    assert trials_that_fit(nodes, 1.0, 0.0) == 6
    assert trials_that_fit(nodes, 3.0, 0.0) == 1  # a trial never spans nodes
    assert trials_that_fit(nodes, 1.0, 0.5) == 2  # two trials share the one GPU
    assert trials_that_fit(nodes, 0.1, 0.3) == 3  # 0.3 * 3 <= 1 despite float rounding
    assert trials_that_fit(nodes, 1.0, 1.0) == 1


@pytest.mark.parametrize(("settings", "message"), [
    (RaySettings(workers=1, cpus_per_trial=64), "no node of the cluster can run a trial of 64 CPU: the largest has 2 CPU"),
    (RaySettings(workers=1, gpus_per_trial=1), "--gpus-per-trial 1 needs a GPU, but the cluster has none"),
    (RaySettings(workers=3, cpus_per_trial=1), "only 2 of the 3 workers of 1 CPU each fit on the cluster at once; use --workers 2"),
])
def test_unschedulable_requests_are_refused_with_one_line(settings, message):
    with pytest.raises(UserError) as err:
        check_schedulable(settings, [{"CPU": 2.0}], "the cluster")
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_the_private_runtime_is_sized_from_the_request_and_checked_against_the_machine():
    assert private_runtime_resources(RaySettings(workers=3, cpus_per_trial=0.5), 2, 0) == {"CPU": 2.0, "GPU": 0.0}
    assert private_runtime_resources(RaySettings(workers=2, gpus_per_trial=0.5), 2, 1) == {"CPU": 2.0, "GPU": 1.0}
    with pytest.raises(UserError, match="--cpus-per-trial 64 is more than this machine's 2 CPUs"):
        private_runtime_resources(RaySettings(workers=1, cpus_per_trial=64), 2, 0)
    with pytest.raises(UserError, match="needs a GPU, but this machine has none"):
        private_runtime_resources(RaySettings(workers=1, gpus_per_trial=1), 2, 0)
    with pytest.raises(UserError, match="only 2 of the 3 workers of 1 CPU and 0.5 GPU each fit on this machine"):
        private_runtime_resources(RaySettings(workers=3, gpus_per_trial=0.5), 4, 1)
    with pytest.raises(UserError, match="above 1 must be a whole number"):
        RaySettings(gpus_per_trial=1.5)


def test_an_impossible_private_runtime_is_refused_before_ray_starts():
    import ray

    if ray.is_initialized():
        pytest.skip("another test left a Ray runtime up; connect_ray would reuse it")
    started = time.monotonic()
    with pytest.raises(UserError, match="--cpus-per-trial 64 is more than this machine's"):
        connect_ray(RaySettings(workers=1, cpus_per_trial=64))
    assert time.monotonic() - started < 3 and not ray.is_initialized()


class Movable:
    def __init__(self, device="cpu"):
        self.device = device

    def with_device(self, device):
        return Movable(device)


def test_a_worker_trains_on_the_gpu_ray_assigned_it():
    assert worker_device([]) is None and worker_device([0]) == "cuda" and worker_device(["3"]) == "cuda"
    assert on_worker_device(Movable(), [0]).device == "cuda"
    plain, movable = Scripted(), Movable()
    assert on_worker_device(movable, []) is movable  # no GPU: the evaluator stays where it is
    assert on_worker_device(plain, [0]) is plain  # until the trainer's with_device lands


def test_a_private_runtime_gets_a_token_of_this_process_and_never_phones_home(monkeypatch):
    for key in ("RAY_AUTH_TOKEN", "RAY_USAGE_STATS_ENABLED", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"):
        monkeypatch.delenv(key, raising=False)
    ray_env_defaults(local=False)
    assert "RAY_AUTH_TOKEN" not in os.environ and os.environ["RAY_USAGE_STATS_ENABLED"] == "0"
    ray_env_defaults(local=True)
    token = os.environ["RAY_AUTH_TOKEN"]
    assert len(token) == 64 and int(token, 16) and os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    ray_env_defaults(local=True)
    assert os.environ["RAY_AUTH_TOKEN"] == token  # one per process: Ray caches the token it first read
    monkeypatch.setenv("RAY_AUTH_TOKEN", "the-users-own")
    ray_env_defaults(local=True)
    assert os.environ["RAY_AUTH_TOKEN"] == "the-users-own"
    assert backends.RAY_LOCAL_ENV_DEFAULTS.get("RAY_AUTH_MODE") != "disabled"
