"""How well the target's cost model and plain MACs rank a search_proof run's plans by their measured latency.

The FLOPs-guided search (``tpe-macs``) can only lose to the hardware-aware one where MACs mis-rank plans that the
cost model ranks right. This reads ``bench/results/NAME.json`` (a scored ``search_proof.py`` run: every candidate
of every method timed on this machine right after the dense model), prices each distinct plan again with the
host profile prepared as the run prepared it (the cached baseline, the cached calibration) and with MACs scaled
to the dense latency (the FLOPs-guided search's cost), and scores both predicted ratios against the measured
ones: Kendall τ, MAPE and the share within ±5 % / ±10 %, over all plans and over the fast end (≤ 0.5 measured).
No timing is done here unless asked: the measurements are the run's own. ``--repeat-passes N`` also times the
run's picks (the plans its verdicts rest on) N more times here, each pass as the run timed them (every plan right
after the dense model, 3 rounds): how far one plan's measured ratio moves from one pass to the next, i.e. how close
to a budget a pick can sit before the side of the budget it lands on is luck.

    .venv/bin/python bench/latency_vs_macs.py --name search_proof_mnv2_ladder [--repeat-passes 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def scores(pred, meas) -> dict:
    import numpy as np

    from autoprune.hardware.profiling import kendall_tau

    pred, meas = np.asarray(pred, float), np.asarray(meas, float)
    err = np.abs(pred - meas) / meas
    return {"plans": len(meas), "kendall_tau": round(kendall_tau(pred, meas), 4),
            "mape_pct": round(float(err.mean() * 100), 2),
            "within_5_pct": round(float((err <= 0.05).mean() * 100), 1),
            "within_10_pct": round(float((err <= 0.10).mean() * 100), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="a scored search_proof run in bench/results/")
    parser.add_argument("--out", help="results name (default: NAME_latency_vs_macs)")
    parser.add_argument("--repeat-passes", type=int, default=0, help="time the run's picks this many more times")
    parser.add_argument("--repeats", type=int, default=60, help="onnxruntime runs per plan per pass (search_proof's)")
    args = parser.parse_args()
    started, load = time.time(), _common.LoadSampler()
    run = json.loads((_common.RESULTS / f"{args.name}.json").read_text())
    a = run["args"]

    from autoprune.plan import PruningPlan
    from autoprune.search.strategies import SpaceCosts
    from search_proof import MacsCost, prepare_target

    _, _, _, space, cost_model, notes = prepare_target(a["model"], a["data"], a["baseline_epochs"],
                                                       target=run["target"])
    costs, macs = SpaceCosts(space, cost_model), SpaceCosts(space, MacsCost(cost_model, space))
    dense = PruningPlan(alignment=space.alignment)
    dense_ms, dense_macs_ms = costs.latency_ms(dense), macs.latency_ms(dense)

    plans: dict[str, tuple[PruningPlan, float]] = {}
    for r in run["runs"]:
        for c in r["candidates"]:
            if "measured_ratio" in c:
                plans.setdefault(json.dumps(c["plan"], sort_keys=True),
                                 (PruningPlan.from_dict(c["plan"]), c["measured_ratio"]))
    rows = [(costs.latency_ms(p) / dense_ms, macs.latency_ms(p) / dense_macs_ms, m) for p, m in plans.values()]
    out = {"environment": _common.environment(), "source": args.name,
           "source_commit": run["environment"].get("autoprune_commit"), "cost_model_notes": notes,
           "latency_provenance": f"measured: {args.name}'s own onnxruntime timings (ratio to the dense model timed "
                                 "beside each plan); predicted: the host profile prepared on this machine, and MACs",
           "results": {}}
    for part, sel in (("all", rows), ("fast_end", [x for x in rows if x[2] <= 0.5])):
        if len(sel) < 3:
            continue
        out["results"][part] = {"cost_model": scores([x[0] for x in sel], [x[2] for x in sel]),
                                "macs": scores([x[1] for x in sel], [x[2] for x in sel])}
    if args.repeat_passes > 0:
        out["repeat_passes"] = repeat_picks(run, space, dense, args)
        out["latency_provenance"] += ("; repeat_passes: measured here and now (environment.started_utc), onnxruntime "
                                      f"1 thread, each pick right after the dense model, {args.repeats} runs in 3 "
                                      "rounds per pass")
    out["load_average"], out["wall_seconds"] = load.summary(), round(time.time() - started, 1)
    lines = [f"Plans of `{args.name}` ({run['model']}, target `{run['target']}`), each predicted ratio to the dense "
             "model against the ratio that run measured (source commit "
             f"{out['source_commit']}). MACs are scaled so the dense model's latency matches.", "",
             "| plans | predictor | n | Kendall τ | MAPE % | within ±5 % | within ±10 % |",
             "|---|---|---|---|---|---|---|"]
    for part, by in out["results"].items():
        for name, s in by.items():
            lines.append(f"| {part} | {name} | {s['plans']} | {s['kendall_tau']} | {s['mape_pct']} | "
                         f"{s['within_5_pct']} | {s['within_10_pct']} |")
    if out.get("repeat_passes"):
        lines += ["", f"The run's picks timed {args.repeat_passes} more times here (ratio to the dense model beside "
                  "it, one pass after the other):", "",
                  "| plan (method seed@budget, trial) | ratio in the run | ratios here | min–max |",
                  "|---|---|---|---|"]
        for r in out["repeat_passes"]:
            ratios = r["ratios"]
            lines.append(f"| {', '.join(r['picked_as'])} | {r['run_ratio']:.4f} | "
                         f"{' '.join(f'{x:.4f}' for x in ratios)} | {min(ratios):.4f}–{max(ratios):.4f} |")
    _common.write(args.out or f"{args.name}_latency_vs_macs", out, "\n".join(lines))


def repeat_picks(run, space, dense, args) -> list[dict]:
    """Each distinct pick of ``run`` timed ``args.repeat_passes`` more times beside the dense model."""
    from autoprune.hardware.profiling import plan_items
    from autoprune.plan import PruningPlan
    from search_proof import time_passes

    picks: dict[str, dict] = {}
    for method, by in run["picks"].items():
        for b, rows in by.items():
            for r in rows:
                entry = picks.setdefault(json.dumps(r["plan"], sort_keys=True),
                                         {"plan": r["plan"], "run_ratio": r["measured_ratio"], "picked_as": []})
                entry["picked_as"].append(f"{method} {r['seed']}@{b} t{r['trial']}")
    entries = list(picks.values())
    dense_item, *items = plan_items(space, [dense, *[PruningPlan.from_dict(e["plan"]) for e in entries]])
    passes = time_passes(items, dense_item, args.repeat_passes, args.repeats)
    return [{"picked_as": e["picked_as"], "run_ratio": e["run_ratio"],
             "ratios": [round(stats[i]["ratio"], 4) for stats, _ in passes]} for i, e in enumerate(entries)]


if __name__ == "__main__":
    main()
