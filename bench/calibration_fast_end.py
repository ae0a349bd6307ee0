"""The self-calibration at the fast end: which plans it is fitted on, scored on the plans a search proposes.

A self-calibration fits ``measured = a * layer_sum + b [+ memory term]`` on the dense model and a dozen plans
timed on this machine (:func:`autoprune.hardware.local.fit_here`). Design 1 timed uniform plans from keep 0.4 up;
design 2 (:func:`autoprune.hardware.local.calibration_plans`) adds the most pruned uniform plan the space allows.
Both designs' plans, and the held-out plans, are timed in one pass, each right after the dense model, so both fits
see the same measurements; each design is then fitted on its own plans and scored on the held-out ones: the plans
of a ``search_proof.py`` run (``--runs``; what TPE, uniform and Torch-Pruning's global pruning proposed) and the
space's uniform plans, on plan / dense ratios. "Floor" counts held-out plans priced within 1 % of the design's
cheapest prediction: plans the cost model cannot tell apart.

    .venv/bin/python bench/calibration_fast_end.py [--model mobilenet_v2] \
        [--runs bench/results/search_proof_mnv2_globalstart.runs.json] [--name calibration_fast_end]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

from calibration import score  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--runs", default=str(_common.RESULTS / "search_proof_mnv2_globalstart.runs.json"))
    parser.add_argument("--repeats", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--fast", type=float, default=0.45, help="held-out plans measured at most this x dense")
    parser.add_argument("--compare-table", default=None,
                        help="an entries.json an earlier autoprune cached (under $AUTOPRUNE_HOME/latency/...): its "
                             "table is fitted and scored the same way, with this run's calibration plans")
    parser.add_argument("--name", default="calibration_fast_end")
    args = parser.parse_args()
    load = _common.LoadSampler()
    t0 = time.time()

    from autoprune.hardware import CostModel, device_runner, load_profile
    from autoprune.hardware import local
    from autoprune.hardware.cost_model import precision_key
    from autoprune.hardware.profile import LatencyEntry
    from autoprune.hardware.signature import LayerSignature, model_key
    from autoprune.hardware.profiling import fit_calibration, plan_items, plan_point, random_plans
    from autoprune.models import create_model
    from autoprune.plan import PruningPlan
    from autoprune.pruning.space import generate_space

    shipped = load_profile("cpu")
    shape = (1, 3, args.size, args.size)
    space = generate_space(create_model(args.model, 10), args.model, shape, shipped.alignment)
    profile = local.measure_missing(shipped, space, folder=local.cache_dir(shipped))  # the table a search prices
    tables = {"this run's table": profile}
    if args.compare_table:
        from autoprune.hardware.profiling import merge_entries

        old = json.loads(Path(args.compare_table).read_text())
        fields = ("op", "cin", "cout", "kernel", "stride", "padding", "groups", "in_h", "in_w", "dtype")
        entries = tuple(LatencyEntry(LayerSignature(*(e[f] for f in fields)), float(e["mean_ms"]),
                                           float(e["std_ms"]), int(e["n"])) for e in old["entries"])
        base = local._without_families(shipped, space) if not local.table_carries_over(shipped) else shipped
        tables[f"table of {old.get('date')} (overhead {old.get('call_overhead_ms', 0):.4f} ms)"] = replace(
            base, entries=merge_entries(base.entries, entries), call_overhead_ms=old.get("call_overhead_ms", 0.0))
    dense = PruningPlan(alignment=shipped.alignment)
    n = local.CALIBRATION_PLANS
    designs = {
        "design 1 (uniform 0.4-0.85)": random_plans(space, n - 5, 0, shipped.alignment)
        + [PruningPlan.uniform(space.group_names, k, alignment=shipped.alignment) for k in (0.4, 0.55, 0.7, 0.85)],
        f"design {local.CALIBRATION_DESIGN} (calibration_plans)": local.calibration_plans(space, n, shipped.alignment),
    }
    held: dict[str, PruningPlan] = {}
    runs_path = Path(args.runs)
    if runs_path.exists():
        for run in json.loads(runs_path.read_text()):
            for c in run["candidates"]:
                plan = PruningPlan.from_dict(c["plan"])
                held.setdefault(json.dumps(plan.to_dict(), sort_keys=True), plan)
    floor = max(g.min_keep for g in space.groups)
    for k in sorted({floor, 0.3, 0.35, 0.45, 0.6, 0.75}):
        plan = PruningPlan.uniform(space.group_names, k, alignment=shipped.alignment)
        held.setdefault(json.dumps(plan.to_dict(), sort_keys=True), plan)
    everything: dict[str, PruningPlan] = dict(held)
    for plans in designs.values():
        for plan in plans:
            everything.setdefault(json.dumps(plan.to_dict(), sort_keys=True), plan)
    keys = list(everything)
    dense_item, *items = plan_items(space, [dense, *[everything[k] for k in keys]])
    t1 = time.time()
    stats, reference = device_runner.time_ort_paired(items, dense_item, max(shipped.threads, 1), warmup=5,
                                                     repeats=args.repeats, rounds=args.rounds)
    measure_s = time.time() - t1
    ratio = {k: st["ratio"] for k, st in zip(keys, stats)}
    dense_ms = reference["median_ms"]
    key = precision_key(model_key(space.model, space.input_shape), "fp32")
    held_keys = [k for k in held if k in ratio]
    fast = [k for k in held_keys if ratio[k] <= args.fast]
    results = {}
    cases = [(f"{t} / {d}", tables[t], plans) for t in tables for d, plans in designs.items()
             if t == "this run's table" or d.startswith(f"design {local.CALIBRATION_DESIGN}")]
    for name, profile, plans in cases:
        table = CostModel(replace(profile, calibration={}))
        pk = [json.dumps(p.to_dict(), sort_keys=True) for p in plans]
        points = [plan_point(table, space, dense, dense_ms)]
        points += [plan_point(table, space, everything[k], ratio[k] * dense_ms) for k in pk]
        calibration = fit_calibration(points, name, device_runner.last_level_cache_mb(), scaled=True)
        model = CostModel(replace(profile, calibration={**profile.calibration, key: calibration}))
        dense_pred = model.predict(space, dense).latency_ms
        pred = {k: model.predict(space, held[k]).latency_ms / dense_pred for k in held_keys}
        low = min(pred.values())
        results[name] = {
            "calibration": {f: getattr(calibration, f) for f in ("a", "b", "spill_ms_per_mb", "cache_mb", "source")},
            "smallest_calibration_plan_ratio": round(min(ratio[k] for k in pk), 4),
            "all": score([pred[k] for k in held_keys], [ratio[k] for k in held_keys]),
            "fast": score([pred[k] for k in fast], [ratio[k] for k in fast]) if len(fast) >= 2 else None,
            "lowest_predicted_ratio": round(low, 4),
            "at_floor": sum(pred[k] <= low * 1.01 for k in held_keys),
            "fast_at_floor": sum(pred[k] <= low * 1.01 for k in fast),
            "plans": [{"measured_ratio": round(ratio[k], 4), "predicted_ratio": round(pred[k], 4)} for k in held_keys],
        }
    summary = load.summary()
    out = {"environment": _common.environment(), "model": args.model, "input_shape": list(shape),
           "runs": str(runs_path) if runs_path.exists() else None, "held_out": len(held_keys), "fast": len(fast),
           "fast_bound": args.fast, "dense_measured_ms": round(dense_ms, 4), "measure_seconds": round(measure_s, 1),
           "repeats": args.repeats, "rounds": args.rounds, "designs": results, "load_average": summary,
           "load_sentence": _common.load_sentence(summary["mean"], own_threads=1), "wall_seconds": round(time.time() - t0, 1)}
    lines = [f"{args.model} at {args.size}×{args.size} on `cpu` (this machine); {len(held_keys)} held-out plans "
             f"({len(fast)} measured at ≤ {args.fast}× dense), dense {dense_ms:.4f} ms measured; every plan timed "
             f"right after the dense model, {args.repeats} runs in {args.rounds} rounds. Machine: {out['load_sentence']}.",
             "", "| design | smallest plan fitted (× dense) | fit | held-out ratio within ±10 % / MAPE / τ | "
             "fast end within ±10 % / MAPE / τ | lowest predicted ratio | held-out (fast) plans at that floor |",
             "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        c, a, f = r["calibration"], r["all"], r["fast"] or {}
        lines.append(f"| {name} | {r['smallest_calibration_plan_ratio']} | a {c['a']}, b {c['b']} ms, spill "
                     f"{c['spill_ms_per_mb']} ms/MB | {a['within_10_pct']}% / {a['mape_pct']}% / {a['kendall_tau']} | "
                     f"{f.get('within_10_pct')}% / {f.get('mape_pct')}% / {f.get('kendall_tau')} | "
                     f"{r['lowest_predicted_ratio']} | {r['at_floor']} ({r['fast_at_floor']}) |")
    _common.write(args.name, out, "\n".join(lines))


if __name__ == "__main__":
    main()
