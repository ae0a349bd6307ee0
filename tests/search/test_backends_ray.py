"""The Ray executor's failure isolation against one real loopback runtime (4 logical CPUs) shared by this module: errors
of any class, a hung trial killed at its timeout, a worker that keeps dying, Ctrl-C with trials in flight,
requests that can never be scheduled; and, in a process of its own, a private runtime with token auth. (How the
runner records a timed-out trial is the same for both backends: tests/search/test_backends.py runs a search.)"""

import ipaddress
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from autoprune.errors import UserError
from autoprune.search.backends import RayExecutor, RaySettings, connect_ray
from autoprune.search.runner import optimize
from autoprune.search.strategies import Constraints, create_strategy
from autoprune.search.synthetic import SyntheticEvaluator, SyntheticProblem

pytestmark = [pytest.mark.ray, pytest.mark.timeout(120)]
optuna.logging.set_verbosity(optuna.logging.WARNING)
PROBLEM = SyntheticProblem(groups=3, seed=0)
PLAN = PROBLEM.plan({g.name: 0.5 for g in PROBLEM.space.groups})
ROOT = Path(__file__).resolve().parents[2]


class Scripted:
    """Does what the guidance says: hang, die (SIGKILL itself), raise, return something that cannot be pickled,
    report an environment variable or the CUDA device, or return its pid."""

    def evaluate(self, plan, guidance):
        if guidance == "hang":
            time.sleep(60)
        elif guidance == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        elif guidance == "oserror":
            raise OSError(5, "Input/output error: image file is truncated")
        elif guidance == "keyerror":
            raise KeyError("conv3")
        elif guidance == "unpicklable":
            return threading.Lock()
        elif isinstance(guidance, float):
            time.sleep(guidance)
        return os.getpid()


@pytest.fixture(scope="module")
def runtime():
    import ray

    if ray.is_initialized():
        pytest.skip("a Ray runtime from another test is still up")
    # pytest imports test modules by path (--import-mode=importlib): workers cannot import this one by name
    ray.cloudpickle.register_pickle_by_value(sys.modules[Scripted.__module__])
    assert connect_ray(RaySettings(workers=4))  # 4 logical CPUs: the shared executor's 2 workers and 2 more
    yield ray
    ray.shutdown()


def _gone(pid: int, within: float = 15.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def _search(executor, trials, problem):
    strategy = create_strategy("random", problem.space, "l1", 0, trials, Constraints(), problem, workers=executor.slots)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=strategy.sampler())
    return study, optimize(study, strategy, executor, trials, multi_fidelity=False)


@pytest.fixture(scope="module")
def scripted(runtime):
    """Two workers, one retry, a 3 s trial timeout: shared by the tests below (a worker starts in seconds)."""
    executor = RayExecutor(Scripted(), RaySettings(workers=2, retries=1), trial_timeout_s=3.0)
    yield executor
    executor.close()


def _one(executor, guidance, key=1):
    executor.submit(key, PLAN, guidance)
    (finished,) = executor.wait()
    assert finished.key == key and executor.in_flight() == []
    return finished


def test_errors_of_any_class_fail_only_their_trial(scripted):
    deaths = scripted.deaths
    assert _one(scripted, "oserror").error == "OSError: [Errno 5] Input/output error: image file is truncated"
    assert _one(scripted, "keyerror").error == "KeyError: 'conv3'"
    unpicklable = _one(scripted, "unpicklable").error  # raised by Ray as a RayTaskError, in the driver
    assert unpicklable.startswith("TypeError: ") and "pickle" in unpicklable
    finished = _one(scripted, None)
    assert finished.error is None and finished.result in scripted.worker_pids() and finished.result != os.getpid()
    assert scripted.deaths == deaths


def test_a_hung_trial_is_killed_at_its_timeout_and_its_worker_replaced(scripted):
    before = set(scripted.worker_pids())  # both started: from here a trial's clock is its own
    started = time.monotonic()
    scripted.submit(1, PLAN, "hang")
    scripted.submit(2, PLAN, 0.2)
    first = scripted.wait()
    assert [(f.key, f.error) for f in first] == [(2, None)]  # the other trial is not held up
    (second,) = scripted.wait()
    assert second.key == 1 and second.error == "timeout: the trial ran longer than 3 s (--trial-timeout)"
    assert 3.0 <= time.monotonic() - started < 10.0
    (hung,) = before - {first[0].result}
    assert _gone(hung)  # its worker really was killed
    after = set(scripted.worker_pids())
    assert len(after) == 2 and hung not in after
    assert _one(scripted, None, key=3).result in after


def test_a_worker_that_keeps_dying_is_retried_then_failed_with_the_reason(scripted):
    deaths = scripted.deaths
    finished = _one(scripted, "die")
    assert finished.attempts == 2 and scripted.deaths == deaths + 2  # --worker-retries 1: tried twice
    assert finished.error.startswith("worker died: ActorDiedError") and finished.error.endswith("(after 2 attempts)")
    assert _one(scripted, None, key=2).result in scripted.worker_pids()  # fresh workers took over


def test_ctrl_c_with_trials_in_flight_closes_without_a_traceback(runtime, capfd, caplog):
    problem = SyntheticProblem(groups=4, seed=0)
    executor = RayExecutor(SyntheticEvaluator(problem, sleep=30.0), RaySettings(workers=2))
    pids = executor.worker_pids()

    def interrupt_when_busy():
        deadline = time.monotonic() + 30
        while len(executor.in_flight()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, delivered to the driver's main thread

    threading.Thread(target=interrupt_when_busy, daemon=True).start()
    try:
        study, interrupted = _search(executor, 4, problem)
    finally:
        started = time.monotonic()
        executor.close()
        close_seconds = time.monotonic() - started
    assert interrupted and close_seconds < 10 and executor.in_flight() == []
    assert all(_gone(pid) for pid in pids)  # the busy workers were killed, not left computing
    assert [t.state for t in study.trials].count(TrialState.WAITING) == 2  # re-queued for the next run
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err and not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]
    executor.close()  # closing twice is harmless


@pytest.mark.parametrize(("settings", "message"), [
    (RaySettings(workers=1, cpus_per_trial=64), "no node of the Ray cluster can run a trial of 64 CPU: the largest has 4 CPU"),
    (RaySettings(workers=1, gpus_per_trial=1), "--gpus-per-trial 1 needs a GPU, but the Ray cluster has none"),
    (RaySettings(workers=5), "only 4 of the 5 workers of 1 CPU each fit on the Ray cluster at once; use --workers 4"),
])
def test_an_unschedulable_request_is_refused_at_start(runtime, settings, message):
    if settings.gpus_per_trial and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    started = time.monotonic()
    with pytest.raises(UserError) as err:
        RayExecutor(Scripted(), settings)
    assert time.monotonic() - started < 3
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    assert runtime.is_initialized()  # a runtime it did not start is left running


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _listening_addresses(pids: set[int]) -> set[str]:
    """Local addresses of the TCP sockets in LISTEN state that ``pids`` hold (from /proc)."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    addresses = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                raw = bytes.fromhex(fields[1].split(":")[0])
                ip = ipaddress.ip_address(b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4)))
                addresses.add(str(getattr(ip, "ipv4_mapped", None) or ip))
    return addresses


def test_the_private_runtime_listens_on_loopback_only(runtime):
    assert {n["NodeManagerAddress"] for n in runtime.nodes()} == {"127.0.0.1"}
    addresses = _listening_addresses(_descendants(os.getpid()) | {os.getpid()})
    assert addresses == {"127.0.0.1"}  # GCS, raylet, workers and this driver's own servers


PRIVATE_RUN = textwrap.dedent("""
    import json, os, sys
    from autoprune.search.backends import RayExecutor, RaySettings
    from autoprune.search.synthetic import SyntheticEvaluator, SyntheticProblem

    problem = SyntheticProblem(groups=3, seed=0)
    executor = RayExecutor(SyntheticEvaluator(problem), RaySettings(workers=1))
    import ray
    worker_env = ray.get(ray.remote(num_cpus=0)(lambda: os.environ.get("RAY_AUTH_MODE")).remote())
    executor.submit(1, problem.plan({g.name: 0.5 for g in problem.space.groups}), None)
    (finished,) = executor.wait()
    nodes = sorted({n["NodeManagerAddress"] for n in ray.nodes()})
    executor.close()
    print(json.dumps({"mode": os.environ.get("RAY_AUTH_MODE"), "worker_mode": worker_env, "error": finished.error,
                      "nodes": nodes, "stats": os.environ.get("RAY_USAGE_STATS_ENABLED"),
                      "up": ray.is_initialized(), "token": os.environ["RAY_AUTH_TOKEN"]}))
""")


@pytest.mark.timeout(180)
def test_a_private_runtime_binds_loopback_and_authenticates_with_a_token_it_writes_nowhere(tmp_path):
    import json

    # as a user's shell has it: none of the settings conftest.py makes for this process
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(tmp_path), PYTHONPATH=f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}")
    proc = subprocess.run([sys.executable, "-c", PRIVATE_RUN], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=170)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["mode"] == out["worker_mode"] == "token" and out["error"] is None and not out["up"]
    assert out["nodes"] == ["127.0.0.1"] and out["stats"] == "0"
    token = out.pop("token")
    assert len(token) == 64
    assert token not in proc.stderr and token not in proc.stdout.replace(token, "", 1)  # only our own print
    assert not (tmp_path / ".ray" / "auth_token").exists()  # Ray made no token file of its own either
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and token in p.read_text(errors="ignore")]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_two_trials_share_one_gpu_at_half_a_gpu_each(tmp_path):
    import ray

    if ray.is_initialized():
        pytest.skip("a Ray runtime from another test is still up")

    class OnDevice:
        def __init__(self, device="cpu"):
            self.device = device

        def with_device(self, device):
            return OnDevice(device)

        def evaluate(self, plan, guidance):
            x = torch.ones(8, device=self.device)
            time.sleep(1.0)  # both in flight at once
            return (str(x.device), os.environ.get("CUDA_VISIBLE_DEVICES"), os.getpid())

    ray.cloudpickle.register_pickle_by_value(sys.modules[Scripted.__module__])
    executor = RayExecutor(OnDevice(), RaySettings(workers=2, gpus_per_trial=0.5))
    try:
        executor.submit(1, PLAN, None)
        executor.submit(2, PLAN, None)
        results = []
        while len(results) < 2:
            results += [f.result for f in executor.wait()]
    finally:
        executor.close()
    assert {r[0] for r in results} == {"cuda:0"} and len({r[1] for r in results}) == 1
    assert len({r[2] for r in results}) == 2  # two workers, one GPU
