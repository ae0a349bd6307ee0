"""Shared by the bench scripts: machine and version facts, load-average sampling, writing NAME.json / NAME.md."""

from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent


def command_line() -> str:
    """The exact command that ran this script (from the repository root)."""
    return " ".join(shlex.quote(a) for a in [".venv/bin/python", *sys.argv])


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "autoprune"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.strip()
        return head.stdout.strip() + (" (+ uncommitted changes under autoprune/)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment() -> dict:
    import onnxruntime
    import optuna
    import torch

    from autoprune.hardware.device_runner import machine_description

    return {
        "machine": machine_description(),
        "cpu_cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "optuna": optuna.__version__,
        "onnxruntime": onnxruntime.__version__,
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "autoprune_commit": git_commit(),
        "command": command_line(),
        "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "note": "timings depend on the machine's load; the 1-minute load average is sampled every 5 s during the "
                "run (load_average) and next to each timing",
    }


def load_sentence(mean_load: float, cores: int | None = None, own_threads: int | None = None) -> str:
    """How loaded the machine was, in words, from the mean 1-minute load average of a run. The run's own compute
    threads (``own_threads``; default ``OMP_NUM_THREADS``, else every core) count as its own load, not as others'."""
    cores = cores or os.cpu_count() or 1
    own = min(cores, own_threads or int(os.environ.get("OMP_NUM_THREADS") or 0) or cores)
    others = round(max(0.0, mean_load - own), 2)
    if others <= 0.5:
        return (f"a quiet machine (mean 1-minute load average {mean_load} on {cores} cores, about this run's own "
                f"{own} thread(s))")
    return (f"{cores} cores shared with other jobs (mean 1-minute load average {mean_load}, about {others} beyond "
            f"this run's own {own} thread(s)): timings include their load and are pessimistic")


class LoadSampler:
    """Samples os.getloadavg()[0] every ``every`` seconds in a daemon thread."""

    def __init__(self, every: float = 5.0) -> None:
        self.samples: list[float] = [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            self.samples.append(os.getloadavg()[0])

    def summary(self) -> dict:
        self._stop.set()
        s = self.samples
        return {"min": round(min(s), 2), "mean": round(statistics.mean(s), 2), "max": round(max(s), 2),
                "samples": len(s), "end_loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()]}


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def mean_spread(values) -> dict:
    values = [float(v) for v in values]
    return {"mean": round(statistics.mean(values), 4), "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
            "min": round(min(values), 4), "max": round(max(values), 4), "n": len(values)}


def point_differences(diffs) -> dict:
    """Paired accuracy differences, in points: mean, min, max and how many."""
    diffs = list(diffs)
    return {"mean_points": round(statistics.mean(diffs), 2), "min_points": round(min(diffs), 2),
            "max_points": round(max(diffs), 2), "n": len(diffs)}


def search_goals(vs_uniform: dict | None, vs_tp_global: dict | None) -> dict:
    """Issue 17's goals on paired point differences: >= 1 point over uniform and >= 0.5 over tp-global, in the
    mean and with every seed ahead."""
    return {"vs_uniform": vs_uniform, "vs_tp_global": vs_tp_global,
            "goal_uniform_1pt": bool(vs_uniform and vs_uniform["mean_points"] >= 1.0 and vs_uniform["min_points"] > 0),
            "goal_tp_global_0.5pt": bool(vs_tp_global and vs_tp_global["mean_points"] >= 0.5
                                         and vs_tp_global["min_points"] > 0)}


def goal_line(key: str, verdict: dict) -> str:
    """One Markdown line of a :func:`search_goals` verdict."""
    return (f"- {key}: vs uniform {verdict['vs_uniform']}, goal ≥ 1 pt beyond spread: **{verdict['goal_uniform_1pt']}**; "
            f"vs tp-global {verdict['vs_tp_global']}, goal ≥ 0.5 pt: **{verdict['goal_tp_global_0.5pt']}**")


def write(name: str, data: dict, markdown: str) -> tuple[Path, Path]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    js, md = RESULTS / f"{name}.json", RESULTS / f"{name}.md"
    js.write_text(json.dumps(data, indent=2, default=str) + "\n")
    env = data.get("environment", {})
    head = (f"# {name}\n\n- command: `{env.get('command', '')}`\n- machine: {env.get('machine', '')}, "
            f"load average during the run: {data.get('load_average', '')}\n- versions: torch {env.get('torch')}, "
            f"optuna {env.get('optuna')}, onnxruntime {env.get('onnxruntime')}, autoprune {env.get('autoprune_commit')}\n"
            f"- started {env.get('started_utc')} UTC, took {data.get('wall_seconds', '?')} s\n\n")
    md.write_text(head + markdown.strip() + "\n")
    print(f"wrote {js} and {md}")
    return js, md


def setup(model: str = "resnet18", data_spec: str = "mnist5k", target: str = "cpu", seed: int = 0,
          baseline_epochs: int = 5, input_shape=(1, 3, 32, 32)):
    """What `autoprune search` builds before its first trial (same baseline spec, so the cached baseline is reused):
    returns (baseline model, data, space, cost model, profile, dense accuracy, dense predicted latency ms)."""
    from autoprune.baseline import BaselineSpec, get_baseline
    from autoprune.data import load_data
    from autoprune.hardware import load_profile
    from autoprune.hardware.cost_model import CostModel
    from autoprune.plan import PruningPlan
    from autoprune.pruning.space import generate_space
    from autoprune.training import TrainRecipe, evaluate

    profile = load_profile(target)
    data = load_data(data_spec, tuple(input_shape[2:]), seed)
    spec = BaselineSpec(model, data_spec, tuple(input_shape), data.num_classes, seed, TrainRecipe(epochs=baseline_epochs), None)
    baseline = get_baseline(spec, data)
    space = generate_space(baseline.model, model, tuple(input_shape), alignment=profile.alignment)
    cost_model = CostModel(profile)
    dense_ms = cost_model.predict(space, PruningPlan(alignment=space.alignment)).latency_ms
    dense_acc = evaluate(baseline.model, data.loader("val", 256, seed, shuffle=False), data.num_classes).accuracy
    return baseline.model, data, space, cost_model, profile, dense_acc, dense_ms
