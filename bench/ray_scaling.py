"""Ray scaling on this machine: trials per hour of `autoprune search --backend ray` with 1 and 2 workers on a local
loopback Ray runtime (started and stopped by the search itself), efficiency = speedup / workers.

    .venv/bin/python bench/ray_scaling.py [--trials 8] [--finetune-steps 30] [--workers 1 2]

Throughput is counted from the first trial's start to the last trial's end (the study's own timestamps), so
baseline loading and Ray start-up are excluded; both runs use the random strategy, seed 0, no multi-fidelity
skipping (every candidate gets the full fine-tune), so the work per trial is comparable.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

# Nothing here imports Ray before the search does: autoprune.search.backends then sets up its private runtime
# (127.0.0.1 only, token authentication with a token made for this process, no usage stats).


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--finetune-steps", type=int, default=30)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    started = time.time()
    env = _common.environment()
    load = _common.LoadSampler()

    import optuna
    from optuna.trial import TrialState

    from autoprune.search.runner import SearchConfig, run_search

    _common.setup()  # make sure the dense baseline is cached before timing anything
    rows = []
    with tempfile.TemporaryDirectory(prefix="autoprune-ray-bench-") as tmp:
        for workers in args.workers:
            out = Path(tmp) / f"w{workers}"
            config = SearchConfig(model="resnet18", target="cpu", strategy="random", trials=args.trials,
                                  finetune_steps=args.finetune_steps, seed=0, multi_fidelity=False, backend="ray",
                                  workers=workers, out_dir=str(out), study=f"ray-scaling-w{workers}")
            load_before = _common.loadavg()
            t0 = time.time()
            result = run_search(config)
            wall = time.time() - t0
            study = optuna.load_study(study_name=result.study_name, storage=result.storage)
            done = study.get_trials(states=(TrialState.COMPLETE,))
            span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
            rows.append({"workers": workers, "completed": len(done), "failed": result.failed,
                         "trial_span_seconds": round(span, 1), "run_seconds": round(wall, 1),
                         "trials_per_hour": round(len(done) / span * 3600, 1),
                         "loadavg_before": load_before, "loadavg_after": _common.loadavg()})
            print(rows[-1], flush=True)
    base = rows[0]["trials_per_hour"]
    for r in rows:
        r["speedup"] = round(r["trials_per_hour"] / base, 3)
        r["efficiency"] = round(r["speedup"] / (r["workers"] / rows[0]["workers"]), 3)
    data = {"environment": env, "model": "resnet18", "data": "mnist5k", "target": "cpu", "strategy": "random",
            "trials": args.trials, "finetune_steps": args.finetune_steps, "rows": rows,
            "load_average": load.summary(), "wall_seconds": round(time.time() - started, 1)}
    table = "\n".join(f"| {r['workers']} | {r['completed']} | {r['trial_span_seconds']} | {r['trials_per_hour']} | "
                      f"{r['speedup']}× | {r['efficiency']} | {r['loadavg_before'][0]} → {r['loadavg_after'][0]} |"
                      for r in rows)
    md = f"""
`autoprune search --backend ray --workers W` (local Ray runtime on 127.0.0.1, 1 CPU per trial), ResNet-18 / mnist5k,
random strategy, {args.trials} trials of {args.finetune_steps} fine-tune steps each, multi-fidelity off.

| workers | trials | first start → last end (s) | trials / hour | speedup | efficiency | load avg (1 min) before → after |
|---|---|---|---|---|---|---|
{table}

Measured on {_common.load_sentence(data['load_average']['mean'])}. With 2 cores and 2 workers, each worker has one
core and the driver shares them, so efficiency below 1 is the driver's and Ray's overhead plus the other load.
"""
    _common.write("ray_scaling", data, md)


if __name__ == "__main__":
    main()
