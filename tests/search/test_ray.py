"""The Ray backend against a real Ray runtime on 127.0.0.1: parallel trials, a worker killed mid-trial,
a cluster started with `ray start --head` and joined by address, and an unreachable address."""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autoprune.errors import UserError
from autoprune.search.backends import LocalExecutor, RayExecutor, RaySettings, connect_ray
from autoprune.search.runner import optimize
from autoprune.search.strategies import Constraints, create_strategy
from autoprune.search.synthetic import SyntheticEvaluator, SyntheticProblem

pytestmark = pytest.mark.ray
optuna.logging.set_verbosity(optuna.logging.WARNING)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _search(executor, trials, problem, name="nsga2"):
    strategy = create_strategy(name, problem.space, "l1", 0, trials, Constraints(), problem, workers=executor.slots)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=strategy.sampler())
    optimize(study, strategy, executor, trials, multi_fidelity=False)
    return study


def _shape(study):
    return sorted((t.state.name, tuple(sorted(t.params)), tuple(sorted(t.user_attrs))) for t in study.trials)


def test_parallel_trials_and_a_killed_worker_on_a_local_runtime(tmp_path):
    import ray

    problem = SyntheticProblem(groups=4, seed=0)
    marker = tmp_path / "died"
    evaluator = SyntheticEvaluator(problem, die_once_marker=str(marker), sleep=0.5)
    executor = RayExecutor(evaluator, RaySettings(workers=2, retries=1))
    try:
        node_ips = {n["NodeManagerAddress"] for n in ray.nodes()}
        assert node_ips == {"127.0.0.1"}
        started = time.perf_counter()
        study = _search(executor, 6, problem)
        wall = time.perf_counter() - started
        assert executor.deaths == 1 and marker.exists()  # a worker really SIGKILLed itself mid-trial
    finally:
        executor.close()
    assert not ray.is_initialized()
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 6 and not study.get_trials(states=(TrialState.FAIL,))
    assert [t.user_attrs.get("attempts", 1) for t in complete].count(2) == 1  # the retried trial
    pids = {t.user_attrs["eval_pid"] for t in complete}
    assert len(pids) >= 2 and os.getpid() not in pids  # evaluated in worker processes, two at a time
    assert wall < 60  # 6 trials of 0.5 s, two at a time, plus worker start-up; 43 s seen at load 7 on 2 cores
    local = _search(LocalExecutor(SyntheticEvaluator(problem)), 6, problem)
    # Which plans repeat (recorded with reused_from) depends on the order trials finish in: not compared.
    same = lambda records: [(s, p, tuple(a for a in attrs if a not in ("attempts", "reused_from")))  # noqa: E731
                            for s, p, attrs in records]
    assert same(_shape(study)) == same(_shape(local))


def test_worker_that_keeps_dying_fails_the_trial_with_the_reason(tmp_path):
    problem = SyntheticProblem(groups=4, seed=0)

    executor = RayExecutor(SyntheticEvaluator(problem, die_once_marker=str(tmp_path / "m")), RaySettings(workers=1, retries=0))
    try:
        study = _search(executor, 3, problem, name="random")
    finally:
        executor.close()
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert len(failed) == 1 and failed[0].user_attrs["fail_reason"].startswith("worker died")
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 2  # the search went on


def test_unreachable_address_fails_fast_with_one_line():
    port = _free_port()
    started = time.perf_counter()
    with pytest.raises(UserError) as err:
        connect_ray(RaySettings(address=f"127.0.0.1:{port}"), timeout=5)
    assert time.perf_counter() - started < 6
    assert "cannot reach the Ray cluster" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_cluster_started_with_ray_start_head_is_joined_by_address(tmp_path):
    import ray

    ray_bin = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    port = _free_port()
    env = dict(os.environ)
    subprocess.run(
        [ray_bin, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
         "--include-dashboard=false", "--disable-usage-stats"],
        check=True, env=env, capture_output=True, timeout=120,
    )
    try:
        problem = SyntheticProblem(groups=4, seed=0)
        executor = RayExecutor(SyntheticEvaluator(problem, sleep=0.2), RaySettings(workers=2, address=f"127.0.0.1:{port}"))
        try:
            assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
            assert len(set(executor.worker_pids())) == 2
            study = _search(executor, 4, problem)
        finally:
            executor.close()
        assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 4
    finally:
        subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True, timeout=120)
