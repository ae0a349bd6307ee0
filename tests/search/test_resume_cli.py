"""The real `autoprune search` in a subprocess on the real evaluator at tiny size: SIGKILL mid-trial then
resume, and Ctrl-C (SIGINT) recording the running trial as interrupted."""

import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from autoprune.search.store import STALE_REASON, decode_trial

pytestmark = pytest.mark.slow
ARGS = ["--model", "resnet18", "--target", "jetson", "--data", "digits", "--input-shape", "1x3x16x16",
        "--baseline-epochs", "1", "--finetune-steps", "20", "--no-multi-fidelity", "--strategy", "random", "--study", "s",
        "--heartbeat-interval", "1"]  # the killed run's lease expires 3 s after its last heartbeat
# 20 fine-tune steps with multi-fidelity off: every trial lasts about a second, long enough to be caught mid-way.


def _cli(tmp_path, trials, extra=()):
    cmd = [sys.executable, "-c", "from autoprune.cli import run; run()", "search", *ARGS, "--trials", str(trials),
           "--out", str(tmp_path / "run"), *extra]
    return cmd


def _study(tmp_path):
    return optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")


def _freeze_mid_trial(proc, tmp_path, timeout=900):
    """SIGSTOP the search at a moment when one trial has completed and another is running, so the signal
    sent next lands mid-trial however fast trials are on this machine. False on timeout or if it finished."""
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        try:
            study = _study(tmp_path)
            ready = (len(study.get_trials(states=(TrialState.COMPLETE,))) >= 1
                     and study.get_trials(states=(TrialState.RUNNING,)))
        except Exception:  # noqa: BLE001 - storage not created yet
            ready = False
        if ready:
            proc.send_signal(signal.SIGSTOP)
            try:
                if _study(tmp_path).get_trials(states=(TrialState.RUNNING,)):
                    return True  # frozen mid-trial
            except Exception:  # noqa: BLE001 - the frozen process may hold the database lock; try again
                pass
            proc.send_signal(signal.SIGCONT)  # that trial ended before the stop landed
        time.sleep(0.2)
    return False


def test_sigkill_mid_trial_then_resume_keeps_completed_and_reruns_the_interrupted(tmp_path):
    proc = subprocess.Popen(_cli(tmp_path, 4), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert _freeze_mid_trial(proc, tmp_path), "the first run never reached a running trial after a completed one"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = _study(tmp_path)
    completed = {t.number: t.params for t in before.get_trials(states=(TrialState.COMPLETE,))}
    running = before.get_trials(states=(TrialState.RUNNING,))
    assert len(running) == 1
    result = subprocess.run(_cli(tmp_path, 4, ["--json"]), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    after = _study(tmp_path)
    done = {t.number: t.params for t in after.get_trials(states=(TrialState.COMPLETE,))}
    assert all(done[n] == p for n, p in completed.items())  # every completed trial still there
    interrupted = decode_trial(after.trials[running[0].number])
    assert interrupted.state == TrialState.FAIL and interrupted.fail_reason == STALE_REASON
    reruns = [t for t in after.trials if t.user_attrs.get("retry_of") == running[0].number]
    assert reruns and reruns[0].state == TrialState.COMPLETE and reruns[0].params == running[0].params
    assert len(done) == 4  # final count complete
    for t in after.get_trials(states=(TrialState.COMPLETE,)):
        assert 0 <= t.user_attrs["proxy_accuracy"] <= 1 and t.user_attrs["fidelity"] in ("proxy", "cut_short", "finetuned")
        assert 0 <= t.user_attrs["finetune_steps"] <= 20 and isinstance(t.user_attrs["feasible"], bool)


def test_ctrl_c_records_the_running_trial_as_interrupted_and_prints_what_finished(tmp_path):
    proc = subprocess.Popen(_cli(tmp_path, 6), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _freeze_mid_trial(proc, tmp_path)
        proc.send_signal(signal.SIGINT)  # pending until the process runs again, mid-trial
        proc.send_signal(signal.SIGCONT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert "stopped by Ctrl-C" in out and "Pareto-optimal candidates" in out
    study = _study(tmp_path)
    interrupted = [t for t in study.trials if t.user_attrs.get("fail_reason", "").startswith("interrupted: stopped with Ctrl-C")]
    assert len(interrupted) == 1
    assert not study.get_trials(states=(TrialState.RUNNING,))
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert any(t.user_attrs.get("retry_of") == interrupted[0].number for t in waiting)  # re-run on resume
