"""Evaluation cost: seconds per candidate for the BN-recalibration proxy vs a brief fine-tune, and how well the
proxy ranks candidates (Kendall tau of proxy accuracy vs fine-tuned accuracy) over N random ResNet-18 plans.

    .venv/bin/python bench/eval_cost.py [--plans 20] [--finetune-steps 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", type=int, default=20)
    parser.add_argument("--finetune-steps", type=int, default=30)
    parser.add_argument("--seed", type=int, default=2000)
    args = parser.parse_args()
    started = time.time()
    env = _common.environment()
    load = _common.LoadSampler()

    from autoprune.hardware.profiling import kendall_tau, random_plans
    from autoprune.search.evaluator import Evaluator, EvaluatorSettings

    model, data, space, cost_model, profile, dense_acc, dense_ms = _common.setup()
    proxy_eval = Evaluator(model, data, space, cost_model, EvaluatorSettings(finetune_steps=0))
    full_eval = Evaluator(model, data, space, cost_model, EvaluatorSettings(finetune_steps=args.finetune_steps))
    plans = random_plans(space, args.plans, args.seed, space.alignment)
    rows = []
    for i, plan in enumerate(plans):
        proxy = proxy_eval.evaluate(plan)  # prune + BN recalibration + validation
        full = full_eval.evaluate(plan)  # the same, then fine-tuning (no guidance: never skipped or cut short)
        rows.append({"plan": i, "latency_ms": round(proxy.latency_ms, 4), "proxy_accuracy": proxy.accuracy,
                     "finetuned_accuracy": full.accuracy, "proxy_seconds": round(proxy.seconds, 3),
                     "finetune_seconds": round(full.seconds, 3), "finetune_steps": full.finetune_steps,
                     "loadavg": _common.loadavg()})
        print(f"plan {i}: proxy {proxy.accuracy:.3f} in {proxy.seconds:.1f}s, fine-tuned {full.accuracy:.3f} in "
              f"{full.seconds:.1f}s, load {rows[-1]['loadavg'][0]}", flush=True)
    tau = kendall_tau([r["proxy_accuracy"] for r in rows], [r["finetuned_accuracy"] for r in rows])
    proxy_s = _common.mean_spread(r["proxy_seconds"] for r in rows)
    full_s = _common.mean_spread(r["finetune_seconds"] for r in rows)
    ratio = full_s["mean"] / proxy_s["mean"]
    data_out = {
        "environment": env, "model": "resnet18", "data": "mnist5k", "input_shape": [1, 3, 32, 32],
        "plans": args.plans, "plan_seed": args.seed, "finetune_steps": args.finetune_steps,
        "dense_accuracy": dense_acc, "dense_latency_ms": dense_ms,
        "dense_latency_provenance": f"{profile.provenance} ({profile.name} cost model)",
        "proxy_seconds": proxy_s, "finetune_seconds": full_s, "finetune_over_proxy": round(ratio, 2),
        "kendall_tau_proxy_vs_finetuned": round(tau, 4),
        "mean_gain_from_finetune": round(statistics.mean(r["finetuned_accuracy"] - r["proxy_accuracy"] for r in rows), 4),
        "rows": rows, "load_average": load.summary(), "wall_seconds": round(time.time() - started, 1),
    }
    md = f"""
ResNet-18, mnist5k at 1x3x32x32, {args.plans} random plans (seed {args.seed}); each is evaluated twice by the search's
`Evaluator`: proxy = prune + BatchNorm recalibration (8 batches) + validation; brief fine-tune = the same plus
{args.finetune_steps} SGD steps (batch 64) with the evaluator's periodic checks (never skipped or cut short here).

| | seconds per candidate (mean ± std, min–max) |
|---|---|
| BN-recalibration proxy | {proxy_s['mean']:.2f} ± {proxy_s['std']:.2f} ({proxy_s['min']:.2f}–{proxy_s['max']:.2f}) |
| brief fine-tune ({args.finetune_steps} steps) | {full_s['mean']:.2f} ± {full_s['std']:.2f} ({full_s['min']:.2f}–{full_s['max']:.2f}) |

- fine-tune / proxy time: {ratio:.1f}×
- Kendall tau of proxy accuracy vs fine-tuned accuracy: **{tau:.3f}** (mean gain from fine-tuning
  {data_out['mean_gain_from_finetune'] * 100:.1f} points)
- wall-clock times on {_common.load_sentence(data_out['load_average']['mean'])}; per-plan load averages in the JSON.
"""
    _common.write("eval_cost", data_out, md)


if __name__ == "__main__":
    main()
