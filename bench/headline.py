"""Headline: the best candidate under 50% of the dense latency on the host CPU, exported with a full fine-tune,
measured speedup on this host (onnxruntime, 1 thread) and accuracy loss vs the dense model.

    .venv/bin/python bench/headline.py [--strategy tpe] [--trials 12] [--finetune-steps 30] [--epochs 3]

1. `autoprune search` (run_search) on ResNet-18 / mnist5k for the `cpu` target with --max-latency-ms = 50% of the
   dense latency predicted by the measured host profile;
2. the most accurate feasible trial is exported with `report.export_trial` (fine-tune `--epochs` passes, ONNX +
   TorchScript + card; the export measures exported and dense model once);
3. dense and pruned (architecture rebuilt from the plan) are re-timed here in `--rounds` interleaved rounds of
   `measure_model_latency` (onnxruntime, 1 thread, 200 runs each), speedup = median dense / median pruned.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", default="tpe")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--finetune-steps", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--fraction", type=float, default=0.5, help="latency budget as a share of dense")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    started = time.time()
    env = _common.environment()
    load = _common.LoadSampler()

    import optuna
    import torch
    from optuna.trial import TrialState

    from autoprune.hardware import measure_model_latency
    from autoprune.plan import PruningPlan
    from autoprune.pruning import prune
    from autoprune.report.export import ExportSettings, export_trial
    from autoprune.search.runner import SearchConfig, run_search

    model, data, space, cost_model, profile, dense_acc, dense_ms = _common.setup()
    budget = args.fraction * dense_ms
    with tempfile.TemporaryDirectory(prefix="autoprune-headline-") as tmp:
        config = SearchConfig(model="resnet18", target="cpu", strategy=args.strategy, trials=args.trials,
                              finetune_steps=args.finetune_steps, seed=0, max_latency_ms=budget,
                              out_dir=str(Path(tmp) / "run"), study="headline")
        t0 = time.time()
        result = run_search(config)
        search_s = time.time() - t0
        study = optuna.load_study(study_name=result.study_name, storage=result.storage)
        feasible = [t for t in study.get_trials(states=(TrialState.COMPLETE,))
                    if t.user_attrs.get("feasible", True) and t.user_attrs["latency_ms"] <= budget]
        best = max(feasible, key=lambda t: t.user_attrs["accuracy"])
        print(f"search {search_s:.0f}s; best trial {best.number}: {best.user_attrs['accuracy']:.4f} @ "
              f"{best.user_attrs['latency_ms']:.4f} ms (predicted)", flush=True)
        t0 = time.time()
        exported = export_trial(study, best.number, Path(tmp) / "export",
                                ExportSettings(finetune_epochs=args.epochs), storage=result.storage)
        export_s = time.time() - t0
        card = exported.card
        plan = PruningPlan.from_dict(best.user_attrs["plan"])
        pruned = prune(copy.deepcopy(model), plan, torch.zeros(space.input_shape)).model.eval()
        dense_runs, pruned_runs = [], []
        for _ in range(args.rounds):  # interleaved, so both see the same load
            dense_runs.append({**measure_model_latency(model.eval(), space.input_shape).to_dict(), "loadavg": _common.loadavg()})
            pruned_runs.append({**measure_model_latency(pruned, space.input_shape).to_dict(), "loadavg": _common.loadavg()})
    dense_med = statistics.median(r["median_ms"] for r in dense_runs)
    pruned_med = statistics.median(r["median_ms"] for r in pruned_runs)
    speedup = dense_med / pruned_med
    loss_points = (dense_acc - card.accuracy) * 100
    out = {
        "environment": env, "model": "resnet18", "data": "mnist5k", "input_shape": list(space.input_shape),
        "target": profile.name, "strategy": args.strategy, "trials": args.trials, "finetune_steps": args.finetune_steps,
        "export_epochs": args.epochs, "budget_fraction": args.fraction,
        "dense_predicted_ms": dense_ms, "budget_ms": budget, "search_seconds": round(search_s, 1),
        "export_seconds": round(export_s, 1), "best_trial": best.number, "plan": best.user_attrs["plan"],
        "search_accuracy": best.user_attrs["accuracy"], "predicted_ms": best.user_attrs["latency_ms"],
        "predicted_speedup": round(dense_ms / best.user_attrs["latency_ms"], 3),
        "dense_accuracy": dense_acc, "exported_accuracy": card.accuracy, "accuracy_loss_points": round(loss_points, 2),
        "params": card.params, "dense_params": card.dense_params, "macs": card.macs,
        "export_host_latency": card.host_latency.to_dict() if card.host_latency else None,
        "export_dense_host_latency": card.dense_host_latency.to_dict() if card.dense_host_latency else None,
        "measured": {"dense_runs": dense_runs, "pruned_runs": pruned_runs, "dense_median_ms": dense_med,
                     "pruned_median_ms": pruned_med, "speedup": round(speedup, 3),
                     "provenance": "measured here: onnxruntime 1 thread, 200 timed runs per round after 20 warm-up, "
                                   f"{args.rounds} interleaved rounds, median of round medians"},
        "goal": {"speedup_at_least_2x": speedup >= 2.0, "loss_at_most_1_point": loss_points <= 1.0},
        "load_average": load.summary(), "wall_seconds": round(time.time() - started, 1),
    }
    md = f"""
ResNet-18 / mnist5k (1x3x32x32), host CPU target `{profile.name}` ({profile.provenance}). Search: {args.strategy},
{args.trials} trials, {args.finetune_steps} fine-tune steps, --max-latency-ms {budget:.4f} (50% of the dense
{dense_ms:.4f} ms predicted). Best feasible trial {best.number} exported with {args.epochs} fine-tune epochs.

| | dense | pruned |
|---|---|---|
| accuracy (validation) | {dense_acc * 100:.2f}% | {card.accuracy * 100:.2f}% (search: {best.user_attrs['accuracy'] * 100:.2f}%) |
| predicted latency (cost model, measured tables) | {dense_ms:.4f} ms | {best.user_attrs['latency_ms']:.4f} ms ({dense_ms / best.user_attrs['latency_ms']:.2f}×) |
| measured latency here (median of {args.rounds} rounds) | {dense_med:.4f} ms | {pruned_med:.4f} ms |
| parameters | {card.dense_params:,} | {card.params:,} |

- **measured speedup {speedup:.2f}×** at **{loss_points:.2f} points** accuracy loss
  (goal ≥ 2× at ≤ 1 point: speedup {'met' if speedup >= 2 else 'NOT met'}, accuracy {'met' if loss_points <= 1 else 'NOT met'}).
- Measured on {_common.load_sentence(out['load_average']['mean'])}; per-round values in the JSON.
"""
    _common.write("headline", out, md)


if __name__ == "__main__":
    main()
